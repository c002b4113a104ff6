// @penguinmails/sdk-react as seed 004 shows it: a PenguinMailsProvider with an API key and a
// component calling usePenguinMails().createCampaign, against the real stack.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { createElement } from 'react';
import { renderToString } from 'react-dom/server';
import { PenguinMails } from '@penguinmails/sdk';
import { PenguinMailsProvider, usePenguinMails } from '@penguinmails/sdk-react';

test('PenguinMailsProvider and usePenguinMails create a campaign', async () => {
  let hook;
  function CampaignCreator() {
    hook = usePenguinMails();
    return createElement('form', { 'data-loading': String(hook.loading) }, 'Campaign form fields');
  }
  function App() {
    return createElement(
      PenguinMailsProvider,
      { apiKey: process.env.PENGUINMAILS_API_KEY, baseUrl: process.env.PENGUINMAILS_BASE_URL },
      createElement(CampaignCreator),
    );
  }
  const html = renderToString(createElement(App));
  assert.match(html, /<form data-loading="false">Campaign form fields<\/form>/);
  assert.ok(hook.client instanceof PenguinMails);
  assert.equal(hook.campaigns, hook.client.campaigns);

  const campaignData = {
    name: `React ${randomUUID().slice(0, 8)}`,
    subject: 'Hello from React',
    fromEmail: 'hello@example.com',
    content: { html: '<p>Hi</p>' },
    recipients: { tags: ['react'] },
  };
  const campaign = await hook.createCampaign(campaignData);
  console.log('Campaign created:', campaign.id);
  assert.equal(campaign.name, campaignData.name);
  assert.equal(campaign.status, 'draft');
});

test('usePenguinMails outside a provider says so', () => {
  function Orphan() {
    usePenguinMails();
    return null;
  }
  assert.throws(() => renderToString(createElement(Orphan)), /inside <PenguinMailsProvider>/);
});
