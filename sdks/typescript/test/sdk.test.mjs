// @penguinmails/sdk against a real PenguinMails stack (tests/sdks/test_sdk_suites.py starts it
// and sets PENGUINMAILS_BASE_URL, PENGUINMAILS_API_KEY, PENGUINMAILS_ACCESS_TOKEN and the
// PM_SDK_TEST_* fixtures). Seed 004's JavaScript examples are adapted: base URL and key from
// the environment, ids created here, fields the API does not take dropped (see docs/sdks.md).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import crypto, { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';

import {
  APIConnectionError,
  AuthenticationError,
  NotFoundError,
  PenguinMails,
  PenguinMailsError,
  RateLimitError,
  ValidationError,
  WebhookVerificationError,
  signWebhook,
  verifyWebhook,
} from '@penguinmails/sdk';

const env = process.env;
for (const name of ['PENGUINMAILS_BASE_URL', 'PENGUINMAILS_API_KEY', 'PM_SDK_TEST_PROXY_URL']) {
  assert.ok(env[name], `${name} must be set (run through tests/sdks/test_sdk_suites.py)`);
}
const PROXY = env.PM_SDK_TEST_PROXY_URL;
const unique = () => randomUUID().slice(0, 8);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function control(path, body) {
  const r = await fetch(PROXY + path, body ? { method: 'POST', body: JSON.stringify(body) } : {});
  return r.json();
}

async function eventually(check, what, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

describe('seed 004: JavaScript SDK basic usage', () => {
  test('the client reads its key and base URL from the environment', () => {
    const client = new PenguinMails();
    assert.equal(client.core.baseUrl, env.PENGUINMAILS_BASE_URL.replace(/\/+$/, ''));
    assert.equal(client.core.apiKey, env.PENGUINMAILS_API_KEY);
    const explicit = new PenguinMails({ apiKey: 'pm_test_x', baseUrl: 'http://example.test/' });
    assert.equal(explicit.core.baseUrl, 'http://example.test');
  });

  test('create a campaign, then send an email with tracking', async () => {
    // Initialize client (seed: `new PenguinMails({ apiKey: 'pk_live_…' })`)
    const client = new PenguinMails({ apiKey: env.PENGUINMAILS_API_KEY, baseUrl: env.PENGUINMAILS_BASE_URL });

    // Create campaign. Adapted: the API also needs a sender and an audience (tags or contact ids).
    const campaign = await client.campaigns.create({
      name: 'Welcome Series',
      subject: 'Welcome to PenguinMails!',
      fromEmail: 'hello@example.com',
      content: {
        html: '<h1>Welcome!</h1><p>Thank you for joining us.</p>',
        text: 'Welcome! Thank you for joining us.',
      },
      recipients: { tags: [`welcome-${unique()}`] },
    });
    console.log(`Campaign created: ${campaign.id}`);
    assert.match(campaign.id, /^[0-9a-f-]{36}$/);
    assert.equal(campaign.name, 'Welcome Series');
    assert.equal(campaign.status, 'draft');
    assert.equal(campaign.from_email, 'hello@example.com');

    // Send email with tracking. Adapted: `content` is an object, and a sender is required.
    const email = {
      from: 'hello@example.com',
      to: 'user@example.com',
      subject: 'Test Email',
      content: { html: '<p>Hello from PenguinMails!</p>' },
      tracking: { track_opens: true, track_clicks: true },
    };
    const result = await client.emails.send(email);
    console.log(`Email sent: ${result.message_id}`);
    assert.ok(result.message_id);
    assert.equal(result.status, 'queued');

    // The campaign's analytics (seed: GET /api/v1/analytics/campaigns/{campaign_id}).
    const analytics = await client.analytics.campaign(campaign.id);
    assert.ok(analytics && typeof analytics === 'object');
  });

  test('bulk send with personalization kept verbatim', async () => {
    const client = new PenguinMails();
    const result = await client.emails.sendBulk({
      from: 'hello@example.com',
      subject: 'Hello {{firstName}}',
      text: 'Hi {{firstName}}',
      recipients: [
        { email: 'user1@example.com', personalization: { firstName: 'John', companyName: 'Acme' } },
        { email: 'user2@example.com', personalization: { firstName: 'Jane' } },
      ],
      batchSize: 100,
      delayBetweenBatches: 0,
    });
    assert.equal(result.accepted, 2);
    assert.equal(result.status, 'queued');
  });

  test('contacts accept camelCase fields; custom_fields keys are kept as given', async () => {
    const client = new PenguinMails();
    const address = `hubspot-${unique()}@example.com`;
    const contact = await client.contacts.create({
      email: address,
      firstName: 'Ada',
      lastName: 'Lovelace',
      company: 'Analytical Engines',
      customFields: { hubspotContactId: '42', lifecycleStage: 'lead' },
      tags: ['hubspot_sync', 'crm_integration'],
    });
    assert.equal(contact.email, address);
    assert.equal(contact.first_name, 'Ada');
    assert.equal(contact.last_name, 'Lovelace');
    assert.deepEqual(contact.custom_fields, { hubspotContactId: '42', lifecycleStage: 'lead' });
    const fetched = await client.contacts.get(contact.id);
    assert.equal(fetched.id, contact.id);
    await client.contacts.delete(contact.id);
    await assert.rejects(client.contacts.get(contact.id), NotFoundError);
  });
});

describe('seed 004: error handling best practices', () => {
  // The seed's sendCampaignWithRetry, unchanged but for its logging.
  async function sendCampaignWithRetry(client, campaignData, maxRetries = 3) {
    for (let attempt = 0; attempt < maxRetries; attempt++) {
      try {
        return await client.campaigns.create(campaignData);
      } catch (error) {
        if (error instanceof ValidationError) {
          console.error('Validation failed:', error.details);
          return null; // Don't retry validation errors
        }
        if (error instanceof RateLimitError) {
          if (attempt === maxRetries - 1) {
            throw error;
          }
          const waitTime = error.retryAfter || Math.pow(2, attempt) * 1000;
          console.log(`Rate limited. Retrying in ${waitTime}ms...`);
          await new Promise((resolve) => setTimeout(resolve, waitTime));
          continue;
        }
        if (error instanceof AuthenticationError) {
          console.error('Authentication failed:', error.message);
          return null;
        }
        throw error; // Re-throw unexpected errors
      }
    }
  }

  test('a valid campaign is created; an invalid one returns null', async () => {
    const client = new PenguinMails();
    const good = {
      name: 'Retry Example',
      subject: 'Retry example',
      fromEmail: 'hello@example.com',
      content: { text: 'Hi' },
      recipients: { tags: ['retry-example'] },
    };
    const campaign = await sendCampaignWithRetry(client, good);
    assert.ok(campaign.id);
    assert.equal(await sendCampaignWithRetry(client, { ...good, name: '' }), null);
    assert.equal(await sendCampaignWithRetry(new PenguinMails({ apiKey: 'pm_test_invalid' }), good), null);
  });

  test('ValidationError carries field details, code and request id', async () => {
    const client = new PenguinMails();
    const error = await client.campaigns
      .create({ name: '', fromEmail: 'hello@example.com', content: { text: 'x' }, recipients: {} })
      .catch((e) => e);
    assert.ok(error instanceof ValidationError);
    assert.ok(error instanceof PenguinMailsError);
    assert.equal(error.status, 422);
    assert.ok(error.code);
    assert.ok(error.requestId);
    assert.ok(error.details.some((d) => String(d.field).includes('name')), JSON.stringify(error.details));
  });

  test('AuthenticationError for a bad key', async () => {
    const error = await new PenguinMails({ apiKey: 'pm_test_nope' }).contacts.list().catch((e) => e);
    assert.ok(error instanceof AuthenticationError, String(error));
    assert.equal(error.status, 401);
    assert.ok(error.code);
    assert.ok(error.requestId);
  });

  test('a 429 surfaces as RateLimitError after the retries', async () => {
    let calls = 0;
    const client = new PenguinMails({
      apiKey: env.PM_SDK_TEST_LIMITED_KEY,
      maxRetries: 2,
      fetch: (url, init) => {
        calls += 1;
        return fetch(url, init);
      },
    });
    const error = await client.contacts.list({ limit: 1 }).catch((e) => e);
    assert.ok(error instanceof RateLimitError, String(error));
    assert.equal(error.status, 429);
    assert.equal(calls, 3); // the first try and 2 retries
    assert.ok(error.retryAfter > 0, `retryAfter ${error.retryAfter}`);
    assert.ok(error.requestId);
  });

  test('connection errors are retried, then surface as APIConnectionError', async () => {
    let calls = 0;
    const client = new PenguinMails({
      baseUrl: 'http://127.0.0.1:9', // discard port: nothing listens
      maxRetries: 1,
      fetch: (url, init) => {
        calls += 1;
        return fetch(url, init);
      },
    });
    await assert.rejects(client.contacts.list(), APIConnectionError);
    assert.equal(calls, 2);
  });
});

describe('seed 004: testing & development tools', () => {
  // The seed's PenguinMailsTestDataGenerator. Adapted: a campaign's audience is a tag (the API
  // has no per-campaign recipient list); the personalized recipients go out with sendBulk.
  class PenguinMailsTestDataGenerator {
    constructor(client) {
      this.client = client;
    }

    async generateTestCampaigns(count = 5) {
      const campaigns = [];
      for (let i = 0; i < count; i++) {
        const campaignData = {
          name: `Test Campaign ${i + 1}`,
          subject: `Test Subject ${i + 1}`,
          fromEmail: 'hello@example.com',
          content: {
            html: `<h1>Test Email ${i + 1}</h1><p>This is test content.</p>`,
            text: `Test Email ${i + 1} - This is test content.`,
          },
          recipients: { tags: [`test-campaign-${i + 1}`] },
          settings: { trackOpens: true, trackClicks: true },
        };
        const campaign = await this.client.campaigns.create(campaignData);
        await this.client.emails.sendBulk({
          campaignId: campaign.id,
          from: 'hello@example.com',
          subject: campaignData.subject,
          text: 'Hi {{name}} of {{company}}',
          recipients: this.generateTestRecipients(50),
        });
        campaigns.push(campaign);
      }
      return campaigns;
    }

    generateTestRecipients(count) {
      const recipients = [];
      for (let i = 0; i < count; i++) {
        recipients.push({
          email: `test${i}@example.com`,
          personalization: { name: `Test User ${i}`, company: `Test Company ${i}` },
        });
      }
      return recipients;
    }
  }

  test('the test data generator creates campaigns and sends to their recipients', async () => {
    const campaigns = await new PenguinMailsTestDataGenerator(new PenguinMails()).generateTestCampaigns(2);
    assert.deepEqual(campaigns.map((c) => c.name), ['Test Campaign 1', 'Test Campaign 2']);
    assert.ok(campaigns.every((c) => c.settings.track_opens === true));
  });

  // The seed's "API Testing Framework" (jest), on node's test runner.
  describe('PenguinMails API', () => {
    let client;
    const fresh = () => (client = new PenguinMails({ apiKey: env.PENGUINMAILS_API_KEY }));

    test('should create campaign successfully', async () => {
      fresh();
      const campaignData = {
        name: 'Test Campaign',
        subject: 'Test Subject',
        fromEmail: 'hello@example.com',
        content: { html: '<h1>Test</h1>', text: 'Test' },
        recipients: { tags: ['test'] },
      };
      const campaign = await client.campaigns.create(campaignData);
      assert.ok(campaign.id);
      assert.equal(campaign.name, campaignData.name);
      assert.equal(campaign.status, 'draft');
    });

    test('should handle validation errors', async () => {
      fresh();
      const invalidCampaignData = {
        name: '', // Invalid: empty name
        subject: 'Test Subject',
        fromEmail: 'hello@example.com',
        content: { html: '<h1>Test</h1>', text: 'Test' },
        recipients: [],
      };
      await assert.rejects(client.campaigns.create(invalidCampaignData), ValidationError);
    });
  });
});

describe('idempotent retries', () => {
  test('a POST whose answer was lost is retried with the same key and creates one object', async () => {
    const address = `retried-${unique()}@example.com`;
    await control('/__sdk_test/drop', { method: 'POST', path: '/api/v1/contacts', count: 1 });
    const client = new PenguinMails({ baseUrl: PROXY });
    const contact = await client.contacts.create({ email: address, firstName: 'Once' });
    assert.equal(contact.email, address);

    const log = (await control('/__sdk_test/log')).filter((r) => r.method === 'POST' && r.path === '/api/v1/contacts');
    const lost = log.filter((r) => r.dropped).at(-1);
    assert.ok(lost);
    assert.equal(lost.status, 201); // the lost answer: the contact was created then
    assert.ok(lost.idempotency_key);
    // Every try carried the same key; a try answered 429 or 503 (nothing done, the free plan's
    // 20 requests a minute) may come before or after the lost one; the last is the replay.
    const tries = log.filter((r) => r.idempotency_key === lost.idempotency_key);
    assert.deepEqual(tries.filter((r) => r.dropped), [lost]);
    assert.equal(tries.at(-1).replayed, true);
    const others = tries.filter((r) => r !== lost && r !== tries.at(-1));
    assert.deepEqual(others.filter((r) => ![429, 503].includes(r.status)), []);

    const page = await new PenguinMails().contacts.list({ email: address });
    assert.equal(page.data.length, 1);
    assert.equal(page.data[0].id, contact.id);
  });

  test('a POST without an idempotency key is not retried', async () => {
    // auth/login takes no Idempotency-Key: a lost answer is an error, not a silent second login.
    await control('/__sdk_test/drop', { method: 'POST', path: '/api/v1/auth/login', count: 1 });
    const client = new PenguinMails({ baseUrl: PROXY });
    await assert.rejects(client.auth.login({ email: 'nobody@example.com', password: 'x' }), APIConnectionError);
  });
});

describe('pagination', () => {
  test('auto-paging walks three pages', async () => {
    const client = new PenguinMails();
    const tag = `paged-${unique()}`;
    const created = [];
    for (let i = 0; i < 3; i++) {
      created.push(await client.contacts.create({ email: `page${i}-${tag}@example.com`, tags: [tag] }));
    }
    const first = await client.contacts.list({ tag: [tag], limit: 1 });
    assert.equal(first.data.length, 1);
    assert.equal(first.hasMore, true);
    let pages = 0;
    for (let page = first; page; page = await page.nextPage()) pages += 1;
    assert.equal(pages, 3);

    const seen = [];
    for await (const contact of client.contacts.list({ tag: [tag], limit: 1 })) seen.push(contact.id);
    assert.deepEqual(seen.sort(), created.map((c) => c.id).sort());
  });
});

describe('webhooks', () => {
  test('webhooks.verify accepts a real delivery and rejects a tampered one', async () => {
    const client = new PenguinMails();
    const path = `/hooks/node-${unique()}`;
    const receiver = new URL(env.PM_SDK_TEST_RECEIVER_URL);
    const endpoint = await client.webhooks.create({
      url: `${receiver.origin}${path}`,
      events: ['email.opened', 'contact.created'],
    });
    assert.ok(endpoint.secret.startsWith('whsec_'));
    await client.webhooks.sendTest(endpoint.id, { eventType: 'email.opened' });
    const [delivery] = await eventually(async () => {
      const got = await control(`/__sdk_test/webhooks?path=${encodeURIComponent(path)}`);
      return got.length ? got : null;
    }, 'the test delivery');
    const payload = await client.webhooks.verify(delivery.body, delivery.headers, endpoint.secret);
    assert.equal(payload.type, 'email.opened');
    await assert.rejects(
      client.webhooks.verify(delivery.body.replace('email.opened', 'email.clicked'), delivery.headers, endpoint.secret),
      WebhookVerificationError,
    );
    await assert.rejects(
      client.webhooks.verify(delivery.body, { ...delivery.headers, 'webhook-timestamp': '1000' }, endpoint.secret),
      WebhookVerificationError,
    );
  });

  // Seed 004's verifyWebhookSignature, unchanged: it checks the legacy
  // `X-PenguinMails-Signature: sha256=<hex HMAC of the body, keyed with the secret string>`
  // that deliveries carry beside the Standard Webhooks headers.
  function verifyWebhookSignature(payload, signature, secret) {
    const expectedSignature = crypto
      .createHmac('sha256', secret)
      .update(payload, 'utf8')
      .digest('hex');

    const expectedHeader = `sha256=${expectedSignature}`;
    return crypto.timingSafeEqual(
      Buffer.from(expectedHeader),
      Buffer.from(signature)
    );
  }

  test("seed 004's signature check and webhooks.verify agree on a delivery signed with your own secret", async () => {
    const client = new PenguinMails();
    const path = `/hooks/node-own-${unique()}`;
    const receiver = new URL(env.PM_SDK_TEST_RECEIVER_URL);
    const secret = 'whsec_' + crypto.randomBytes(32).toString('base64');
    const endpoint = await client.webhooks.create({ url: `${receiver.origin}${path}`, events: ['email.opened'], secret });
    await client.webhooks.sendTest(endpoint.id, { eventType: 'email.opened' });
    const [delivery] = await eventually(async () => {
      const got = await control(`/__sdk_test/webhooks?path=${encodeURIComponent(path)}`);
      return got.length ? got : null;
    }, 'the test delivery');
    assert.equal(verifyWebhookSignature(delivery.body, delivery.headers['x-penguinmails-signature'], secret), true);
    const payload = await client.webhooks.verify(delivery.body, delivery.headers, secret);
    assert.equal(payload.type, 'email.opened');
  });

  test('raw printable secrets are used as UTF-8 bytes; whsec_ ones base64-decoded', async () => {
    const raw = 'my-own-secret-0123456789';
    const body = JSON.stringify({ type: 'email.sent' });
    const now = Math.floor(Date.now() / 1000);
    const headers = { 'webhook-id': 'msg_1', 'webhook-timestamp': String(now) };
    headers['webhook-signature'] = await signWebhook('msg_1', now, body, raw);
    assert.deepEqual(await verifyWebhook(body, headers, raw), { type: 'email.sent' });
    // The same bytes as a whsec_ secret verify the same signature.
    const whsec = 'whsec_' + Buffer.from(raw).toString('base64');
    assert.deepEqual(await verifyWebhook(body, headers, whsec), { type: 'email.sent' });
    await assert.rejects(verifyWebhook(body, headers, 'short'), WebhookVerificationError);
  });
});

describe('account routes with an access token', () => {
  test('apiKeys: list, create and revoke', async () => {
    assert.ok(env.PENGUINMAILS_ACCESS_TOKEN);
    const account = new PenguinMails({ accessToken: env.PENGUINMAILS_ACCESS_TOKEN, apiKey: null });
    const created = await account.apiKeys.create({ name: `node-${unique()}`, scopes: ['send_email'], mode: 'test' });
    assert.ok(created.key.startsWith('pm_test_'));
    const listed = [];
    for await (const key of account.apiKeys.list()) listed.push(key.id);
    assert.ok(listed.includes(created.id));
    await account.apiKeys.revoke(created.id);
    const error = await new PenguinMails({ apiKey: created.key }).emails
      .send({ from: 'a@example.com', to: 'b@example.com', subject: 'x', text: 'x' })
      .catch((e) => e);
    assert.ok(error instanceof AuthenticationError, String(error));
  });
});

describe('packaging', () => {
  test('the CommonJS build exports the same API', () => {
    const require = createRequire(import.meta.url);
    const cjs = require('@penguinmails/sdk');
    assert.equal(typeof cjs.PenguinMails, 'function');
    assert.equal(typeof cjs.RateLimitError, 'function');
    assert.equal(typeof new cjs.PenguinMails({ apiKey: 'x' }).emails.sendBulk, 'function');
  });
});
