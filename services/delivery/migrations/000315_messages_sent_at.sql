-- When the provider accepted the message (the `email.sent` fact's `occurred_at`), kept on the
-- message row: the timeline's `sent` entry is read from it (with `provider` and
-- `provider_message_id`), as `queued` is from `created_at`, so a provider call of 1,000
-- messages no longer writes 1,000 `message_events` rows (each with its foreign-key check and
-- lock on the message). Messages sent before this keep their `sent` row in message_events.
-- Nullable without default: no table rewrite.

-- migrate:up
ALTER TABLE messages ADD COLUMN sent_at timestamptz;

-- migrate:down
-- Back to one `sent` row per sent message, so going down loses no timeline entry.
INSERT INTO message_events (message_id, tenant_id, status, provider, provider_message_id, occurred_at)
SELECT id, tenant_id, 'sent', provider, provider_message_id, sent_at
FROM messages WHERE sent_at IS NOT NULL ORDER BY sent_at, id;
ALTER TABLE messages DROP COLUMN sent_at;
