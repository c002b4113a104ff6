-- bench/scale.py: everything of one tenant but its contacts, derived server-side.
-- Markers replaced per tenant: @TN@ (number, high bits of its uuids), @TID@ (id),
-- @N@ (contacts), @C@ (campaigns), @E@ (email events), @BATCH@, @NOW@.
-- Messages: @E@ / 4, four events each (sent, delivered|bounced, opened, opened|clicked|...);
-- message m goes to contact (m * 48271) % N in campaign m % C at step 1 + m / N.

INSERT INTO campaigns.campaigns (id, tenant_id, mode, name, status, from_email, steps,
    recipients, settings, recipient_count, started_at, completed_at, sent_at, created_at,
    updated_at)
SELECT (lpad(to_hex(@TN@), 16, '0') || 'c' || lpad(to_hex(c), 15, '0'))::uuid, @TID@, 'live',
    'Campaign ' || c, 'completed', 'news@bench.example.com',
    '[{"step": 1, "delay_days": 0, "subject": "Hi {{ first_name }}", "html": "<p>Hello</p>", "text": "Hello"}, {"step": 2, "delay_days": 3, "subject": "Again", "html": "<p>Again</p>", "text": "Again"}]'::jsonb,
    '{"tags": ["newsletter"], "match": "any"}'::jsonb,
    '{"track_opens": true, "track_clicks": true}'::jsonb,
    @N@ / @C@, s.at, s.at + interval '3 days', s.at, s.at - interval '1 day', s.at
FROM generate_series(0, @C@ - 1) AS c,
    LATERAL (SELECT @NOW@ - interval '180 days' + (interval '180 days' * c / @C@) AS at) AS s;

CREATE TEMPORARY TABLE seed_messages ON COMMIT DROP AS
SELECT m, (m * 48271::bigint) % @N@ AS ci, m % @C@ AS c, 1 + m / @N@ AS step,
    (m * 2654435761::bigint) % 100 AS h,
    @NOW@ - interval '180 days' + (interval '180 days' * (m % @C@) / @C@)
        + interval '1 second' * ((m * 37) % 86400) AS sent_at
FROM generate_series(0, @E@ / 4 - 1) AS m;

INSERT INTO campaigns.email_events (event_id, tenant_id, mode, event_type, message_id,
    campaign_id, contact_id, step, recipient, occurred_at, detail)
SELECT (lpad(to_hex(@TN@), 16, '0') || 'e' || lpad(to_hex(m * 4 + k), 15, '0'))::uuid, @TID@,
    'live',
    CASE k WHEN 0 THEN 'email.sent'
           WHEN 1 THEN CASE WHEN h < 3 THEN 'email.bounced' ELSE 'email.delivered' END
           WHEN 2 THEN 'email.opened'
           ELSE CASE WHEN h % 10 = 0 THEN 'email.clicked' WHEN h % 50 = 1 THEN 'email.replied'
                     WHEN h = 2 THEN 'email.unsubscribed' ELSE 'email.opened' END END,
    'msg_@TN@_' || m,
    (lpad(to_hex(@TN@), 16, '0') || 'c' || lpad(to_hex(c), 15, '0'))::uuid,
    (lpad(to_hex(@TN@), 16, '0') || lpad(to_hex(ci), 16, '0'))::uuid,
    step, 'user' || ci || '@d' || (ci % 5000) || '.example.com',
    least(@NOW@, sent_at + CASE k WHEN 0 THEN interval '0' WHEN 1 THEN interval '30 seconds'
        WHEN 2 THEN interval '1 hour' * (1 + h % 48)
        ELSE interval '1 hour' * (2 + h % 120) END),
    '{}'::jsonb
FROM seed_messages, generate_series(0, 3) AS k;

INSERT INTO campaigns.campaign_sends (campaign_id, contact_id, step, request_id, event_id,
    email, requested_at)
SELECT (lpad(to_hex(@TN@), 16, '0') || 'c' || lpad(to_hex(c), 15, '0'))::uuid,
    (lpad(to_hex(@TN@), 16, '0') || lpad(to_hex(ci), 16, '0'))::uuid, step,
    'cmp_@TN@_' || m, (lpad(to_hex(@TN@), 16, '0') || 'a' || lpad(to_hex(m), 15, '0'))::uuid,
    'user' || ci || '@d' || (ci % 5000) || '.example.com', sent_at
FROM seed_messages;

INSERT INTO campaigns.campaign_recipients (campaign_id, contact_id, tenant_id, next_step,
    next_due_at, state, last_sent_at)
SELECT (lpad(to_hex(@TN@), 16, '0') || 'c' || lpad(to_hex(c), 15, '0'))::uuid,
    (lpad(to_hex(@TN@), 16, '0') || lpad(to_hex(ci), 16, '0'))::uuid, @TID@, 3,
    sent_at + interval '3 days', CASE WHEN h % 50 = 1 THEN 'replied' ELSE 'done' END, sent_at
FROM seed_messages WHERE step = 1;

-- delivery: one message per contact (its first campaign message), bulk batches of @BATCH@.
INSERT INTO delivery.contents (id, tenant_id, from_email, subject, html, text_body, created_at)
SELECT 'cnt_@TN@_' || b, @TID@, 'news@bench.example.com', 'Hi there', '<p>Hello</p>', 'Hello',
    @NOW@ - interval '180 days' + (interval '180 days' * b * @BATCH@ / @N@)
FROM generate_series(0, (@N@ - 1) / @BATCH@) AS b;

INSERT INTO delivery.batches (id, tenant_id, mode, total, batch_size, created_at)
SELECT 'bat_@TN@_' || b, @TID@, 'live', @BATCH@, 500,
    @NOW@ - interval '180 days' + (interval '180 days' * b * @BATCH@ / @N@)
FROM generate_series(0, (@N@ - 1) / @BATCH@) AS b;

INSERT INTO delivery.messages (id, tenant_id, mode, content_id, batch_id, request_id,
    campaign_id, contact_id, step, to_email, category, status, provider, provider_message_id,
    attempts, open_count, click_count, created_at, updated_at)
SELECT 'msg_@TN@_' || m, @TID@, 'live', 'cnt_@TN@_' || (m / @BATCH@), 'bat_@TN@_' || (m / @BATCH@),
    'req_@TN@_' || m,
    (lpad(to_hex(@TN@), 16, '0') || 'c' || lpad(to_hex(c), 15, '0'))::uuid::text,
    (lpad(to_hex(@TN@), 16, '0') || lpad(to_hex(ci), 16, '0'))::uuid::text, step,
    'user' || ci || '@d' || (ci % 5000) || '.example.com', 'marketing',
    CASE WHEN h < 60 THEN 'delivered' WHEN h < 80 THEN 'opened' WHEN h < 88 THEN 'clicked'
         WHEN h < 93 THEN 'sent' WHEN h < 96 THEN 'bounced' WHEN h < 97 THEN 'failed'
         WHEN h < 98 THEN 'complained' WHEN h < 99 THEN 'unsubscribed' ELSE 'replied' END,
    'mailgun', 'mg-@TN@-' || m, 1, (h % 3)::int, (h % 2)::int,
    @NOW@ - interval '180 days' + (interval '180 days' * m / @N@),
    @NOW@ - interval '180 days' + (interval '180 days' * m / @N@) + interval '1 hour'
FROM seed_messages WHERE m < @N@;

-- webhooks: one endpoint, one logged delivery per contact.
INSERT INTO webhooks.endpoints (id, tenant_id, mode, url, event_types, created_at)
VALUES ('ep_@TN@', @TID@, 'live', 'https://hooks.bench.example.com/@TN@', '{email.*}',
    @NOW@ - interval '200 days');

INSERT INTO webhooks.deliveries (id, endpoint_id, tenant_id, event_id, event_type, payload,
    status, attempts, last_status_code, created_at, updated_at, completed_at, next_attempt_at)
SELECT 'dlv_@TN@_' || m, 'ep_@TN@', @TID@,
    (lpad(to_hex(@TN@), 16, '0') || 'd' || lpad(to_hex(m), 15, '0'))::uuid,
    (ARRAY['email.sent', 'email.delivered', 'email.opened', 'email.clicked'])[1 + m % 4],
    '{"id":"dlv_@TN@_' || m || '","type":"email.delivered","data":{"email_id":"msg_@TN@_' || m
        || '","to":"user' || ci || '@example.com"}}',
    CASE WHEN h < 95 THEN 'succeeded' WHEN h < 98 THEN 'failed' WHEN h < 99 THEN 'retrying'
         ELSE 'pending' END,
    CASE WHEN h < 95 THEN 1 ELSE 5 END, CASE WHEN h < 95 THEN 200 ELSE 500 END,
    @NOW@ - interval '180 days' + (interval '180 days' * m / @N@),
    @NOW@ - interval '180 days' + (interval '180 days' * m / @N@),
    CASE WHEN h < 98 THEN @NOW@ - interval '180 days' + (interval '180 days' * m / @N@) END,
    CASE WHEN h >= 98 THEN @NOW@ END
FROM seed_messages WHERE m < @N@;
