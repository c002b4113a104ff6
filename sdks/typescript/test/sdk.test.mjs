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
  APITimeoutError,
  AuthenticationError,
  ConflictError,
  NotFoundError,
  PenguinMails,
  PenguinMailsError,
  RateLimitError,
  SSEDecoder,
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
    // Every try carried the same key; a try answered 429 or 503 (nothing done: rate limited, or
    // a dependency down) may come before or after the lost one; the last is the replay.
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

describe('live event stream: SSE framing', () => {
  const bytes = (text) => new TextEncoder().encode(text);
  // Every block the decoder completes, the body fed in the given pieces, then ended.
  const decodeAll = (pieces) => {
    const decoder = new SSEDecoder();
    const out = [];
    for (const piece of pieces) out.push(...decoder.decode(piece));
    out.push(...decoder.end());
    return out;
  };
  const BODY = bytes(
    '\uFEFFretry: 2000\r\nid: head\r\n: connected\r\n\r\n' + // the opening frame, CRLF
      ': heartbeat\n\n' + // a comment alone: nothing
      'id: e1\nevent: email.opened\ndata: {"name": "Zoë 🐧"}\ndata:second line\ndata\n\n' +
      'event: email.clicked\rdata:  two spaces keep one\r\r' + // CR only; id persists
      'id: bad\u0000id\nretry: soon\nfoo: bar\ndata: x\n\n' + // NUL id, bad retry, unknown field
      'id: e3\nevent: email.sent\ndata: unfinished', // the body ends mid-block: dropped
  );
  const EXPECTED = [
    { id: 'head', event: '', data: '', retry: 2000 },
    { id: 'e1', event: 'email.opened', data: '{"name": "Zoë 🐧"}\nsecond line\n' },
    { id: 'e1', event: 'email.clicked', data: ' two spaces keep one' },
    { id: 'e1', event: '', data: 'x' },
  ];

  test('blocks, comments, multi-line data, CRLF / LF / CR, BOM, id and retry rules', () => {
    assert.deepEqual(decodeAll([BODY]), EXPECTED);
  });

  test('the same blocks whatever the chunking: mid-line, mid-CRLF and mid-UTF-8 splits', () => {
    assert.deepEqual(decodeAll(Array.from(BODY, (b) => Uint8Array.of(b))), EXPECTED); // byte by byte
    for (let i = 1; i < BODY.length; i++) {
      assert.deepEqual(decodeAll([BODY.slice(0, i), BODY.slice(i)]), EXPECTED, `split at byte ${i}`);
    }
    // A CR ending one chunk and the LF starting the next are one line end, not two (which
    // would end the block early).
    assert.deepEqual(decodeAll([bytes('data: a\r'), bytes('\ndata: b\r'), bytes('\n\r\n')]), [
      { id: '', event: '', data: 'a\nb' },
    ]);
    // A 4-byte character split over three chunks.
    const penguin = bytes('data: 🐧\n\n');
    assert.deepEqual(decodeAll([penguin.slice(0, 7), penguin.slice(7, 8), penguin.slice(8)]), [
      { id: '', event: '', data: '🐧' },
    ]);
  });
});

describe('live event stream: client.events.stream()', () => {
  const client = new PenguinMails();
  const trigger = async (type) => (await client.events.trigger({ type })).id;
  // A stream that waits out a short 429 (it reconnects after its Retry-After, as the server
  // asked) has not reconnected on its own: a test result for none of these.
  const rateLimited = (reason) => reason.startsWith('Rate limit');

  test('a triggered event arrives; types filters; lastEventId resumes, none missed, none repeated', async () => {
    const ids = [];
    let triggering = null;
    const first = client.events.stream({
      types: ['email.clicked'],
      onConnect: () => {
        // The stream is open: what is emitted now reaches it.
        triggering ??= (async () => {
          for (const type of ['email.clicked', 'email.opened', 'email.clicked']) ids.push(await trigger(type));
        })();
      },
      signal: AbortSignal.timeout(60_000),
    });
    const events = first[Symbol.asyncIterator]();
    const ours = async () => {
      for (;;) {
        const { value: event, done } = await events.next();
        assert.ok(!done, 'the stream ended');
        assert.equal(event.type, 'email.clicked'); // never the email.opened between them
        await triggering;
        if (ids.includes(event.id)) return event;
      }
    };
    const one = await ours();
    assert.equal(one.id, ids[0]);
    assert.equal(one.json().id, ids[0]);
    assert.equal(one.json().type, 'email.clicked');
    assert.ok(one.json().data.email, one.data);
    // Not finished with it until the loop asks for the next one: the resume point is still
    // the stream head the server named on connect (none while the store was empty).
    assert.notEqual(first.lastEventId, one.id);
    const two = await ours();
    assert.equal(two.id, ids[2]);
    assert.equal(first.lastEventId, one.id); // done with the first; the second is in hand
    await events.return();
    assert.equal(first.connections, 1);

    const meanwhile = await trigger('email.clicked'); // while no stream is open
    const resumed = client.events.stream({
      types: 'email.clicked',
      lastEventId: first.lastEventId,
      signal: AbortSignal.timeout(60_000),
    });
    const seen = [];
    for await (const event of resumed) {
      seen.push(event.id);
      if (event.id === meanwhile) break;
    }
    // Everything after the resume point, in order: the unfinished second one, then the one
    // emitted while disconnected; nothing before it, nothing twice.
    assert.deepEqual(seen.filter((id) => [...ids, meanwhile].includes(id)), [two.id, meanwhile]);
    assert.equal(new Set(seen).size, seen.length);
    assert.equal(resumed.lastEventId, two.id); // the loop broke on the last one: not done
  });

  test('a 503 is waited out (its Retry-After); after the server ends the stream it reconnects with Last-Event-ID', async () => {
    // The test stack ends streams after 4 s (PM_EVENTS_STREAM_MAX_SECONDS).
    const requests = [];
    let stream = null;
    let second = null;
    const watched = new PenguinMails({
      fetch: async (url, init) => {
        requests.push({ url, lastEventId: init.headers['Last-Event-ID'] });
        if (requests.length === 1) {
          const body = { success: false, error: { code: 'service_unavailable', message: 'Upstream down' } };
          return new Response(JSON.stringify(body), { status: 503, headers: { 'Retry-After': '1' } });
        }
        if (stream.connections > 0 && !second) {
          // Emitted and stored before the reconnection: only the resume replays it.
          second = await trigger('email.opened');
          await sleep(1500);
        }
        return fetch(url, init);
      },
    });
    let first = null;
    const reasons = [];
    stream = watched.events.stream({
      types: 'email.opened',
      onConnect: () => {
        first ??= trigger('email.opened');
      },
      onReconnect: (reason, delay) => rateLimited(reason) || reasons.push([reason, delay]),
      signal: AbortSignal.timeout(60_000),
    });
    const seen = [];
    for await (const event of stream) {
      seen.push(event.id);
      if (second && event.id === second) break;
    }
    const firstId = await first;
    assert.deepEqual(seen.filter((id) => id === firstId || id === second), [firstId, second]);
    assert.equal(requests[0].lastEventId, undefined);
    assert.equal(requests.at(-1).lastEventId, firstId); // the connection that brought the second
    assert.match(requests.at(-1).url, /types=email\.opened/);
    assert.deepEqual(reasons.slice(0, 2), [
      ['Upstream down', 1000],
      ['the server ended the stream', 0],
    ]);
    assert.ok(stream.connections >= 2);
  });

  test('reconnect: false ends the iteration when the server ends the stream', async () => {
    const stream = client.events.stream({ types: 'email.bounced', reconnect: false });
    const started = Date.now();
    for await (const event of stream) assert.equal(event.type, 'email.bounced');
    assert.equal(stream.connections, 1);
    assert.ok(Date.now() - started < 30_000);
    // No event, yet a resume point: the head the server named on connect (the events of the
    // tests above are stored).
    assert.match(stream.lastEventId, /^[0-9a-f-]{36}$/);
  });

  test('a silent connection is replaced after readTimeout; the signal ends the iteration', async () => {
    // Heartbeats come every second in the test stack: 300 ms of silence times out.
    const controller = new AbortController();
    const reasons = [];
    const stream = client.events.stream({
      types: 'email.bounced',
      readTimeout: 300,
      signal: controller.signal,
      onReconnect: (reason, delay) => {
        if (rateLimited(reason)) return;
        reasons.push(reason);
        assert.ok(delay > 0);
        controller.abort();
      },
    });
    for await (const event of stream) assert.fail(`no event expected, got ${event.type}`);
    assert.deepEqual(reasons, ['connection lost (read timed out after 300 ms)']);
    const once = client.events.stream({ types: 'email.bounced', readTimeout: 300, reconnect: false });
    await assert.rejects(async () => {
      for await (const event of once) assert.fail(`no event expected, got ${event.type}`);
    }, APITimeoutError);
  });

  test('refusals surface as the mapped errors, without reconnecting', async () => {
    const noReconnect = (reason) => rateLimited(reason) || assert.fail(`reconnected: ${reason}`);
    const first = (options) => client.events.stream({ onReconnect: noReconnect, ...options })[Symbol.asyncIterator]().next();
    await assert.rejects(first({ types: 'email.teleported' }), ValidationError);
    await assert.rejects(first({ lastEventId: 'not-an-event-id' }), ValidationError);
    const expired = await first({ lastEventId: randomUUID() }).catch((e) => e);
    assert.ok(expired instanceof ConflictError, String(expired));
    assert.equal(expired.status, 409);
    assert.equal(expired.code, 'event_stream_cursor_expired');
    // A 429: a reconnecting stream waits the server's Retry-After, however long (here about
    // two hours: a key whose bucket the stack left in debt); a reconnect: false one is opened
    // as any call, which does not wait more than a minute.
    const limited = new PenguinMails({ apiKey: env.PM_SDK_TEST_LIMITED_KEY });
    const controller = new AbortController();
    const waits = [];
    const patient = limited.events.stream({
      signal: controller.signal,
      onReconnect: (reason, delay) => {
        waits.push([reason, delay]);
        controller.abort(); // rather than wait that long
      },
    });
    for await (const event of patient) assert.fail(`no event expected, got ${event.type}`);
    assert.equal(waits.length, 1);
    assert.ok(rateLimited(waits[0][0]), waits[0][0]);
    assert.ok(waits[0][1] > 60_000, `waits ${waits[0][1]} ms`);
    const error = await limited.events
      .stream({ reconnect: false, onReconnect: (reason) => assert.fail(`retried: ${reason}`) })
      [Symbol.asyncIterator]()
      .next()
      .catch((e) => e);
    assert.ok(error instanceof RateLimitError, String(error));
    assert.ok(error.retryAfter > 60_000);
  });
});

describe('packaging', () => {
  test("the global fetch is called as browsers require (a this of globalThis, or none)", async () => {
    const real = globalThis.fetch;
    let calls = 0;
    globalThis.fetch = function (url, init) {
      calls += 1;
      if (this !== undefined && this !== globalThis) throw new TypeError('Illegal invocation');
      return real(url, init);
    };
    try {
      const client = new PenguinMails();
      assert.ok((await client.events.listTypes()).length > 0);
      assert.ok(calls >= 1); // more when a 429 was retried
    } finally {
      globalThis.fetch = real;
    }
  });

  test('the CommonJS build exports the same API', () => {
    const require = createRequire(import.meta.url);
    const cjs = require('@penguinmails/sdk');
    assert.equal(typeof cjs.PenguinMails, 'function');
    assert.equal(typeof cjs.RateLimitError, 'function');
    assert.equal(typeof new cjs.PenguinMails({ apiKey: 'x' }).emails.sendBulk, 'function');
    assert.equal(typeof new cjs.PenguinMails({ apiKey: 'x' }).events.stream, 'function');
    assert.equal(typeof cjs.SSEDecoder, 'function');
  });
});
