-- migrate:up
-- Content shared by the messages of one send (one row per single send, one per bulk send).
CREATE TABLE contents (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL,
    from_email  text NOT NULL,
    subject     text NOT NULL,
    html        text,
    text_body   text,
    template_id text,
    reply_to    text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE batches (
    id                    text PRIMARY KEY,
    tenant_id             text NOT NULL,
    mode                  text NOT NULL,
    campaign_id           text,
    total                 integer NOT NULL,
    batch_size            integer NOT NULL,
    delay_between_batches integer NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    id                  text PRIMARY KEY,
    tenant_id           text NOT NULL,
    mode                text NOT NULL CHECK (mode IN ('live', 'test')),
    content_id          text NOT NULL REFERENCES contents (id),
    batch_id            text REFERENCES batches (id),
    request_id          text,
    campaign_id         text,
    contact_id          text,
    step                integer,
    to_email            text NOT NULL,
    variables           jsonb NOT NULL DEFAULT '{}',
    category            text NOT NULL,
    tags                text[] NOT NULL DEFAULT '{}',
    metadata            jsonb NOT NULL DEFAULT '{}',
    track_opens         boolean NOT NULL DEFAULT true,
    track_clicks        boolean NOT NULL DEFAULT true,
    status              text NOT NULL,
    provider            text,
    provider_message_id text,
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease_until         timestamptz,
    -- Set (committed) just before the provider call: a claim without it was never sent.
    call_started_at     timestamptz,
    last_error          text,
    open_count          integer NOT NULL DEFAULT 0,
    click_count         integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX messages_request ON messages (tenant_id, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX messages_tenant_created ON messages (tenant_id, created_at DESC, id DESC);
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status = 'queued';
CREATE INDEX messages_leased ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_batch ON messages (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX messages_provider_id ON messages (provider_message_id) WHERE provider_message_id IS NOT NULL;

-- The status timeline: one row per lifecycle event (opens and clicks: one per occurrence).
CREATE TABLE message_events (
    id          bigserial PRIMARY KEY,
    message_id  text NOT NULL REFERENCES messages (id),
    tenant_id   text NOT NULL,
    status      text NOT NULL,
    provider    text,
    provider_message_id text,
    detail      jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_events_message ON message_events (message_id, id);

CREATE TABLE suppressions (
    tenant_id  text NOT NULL,
    email      text NOT NULL,
    reason     text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe', 'manual')),
    message_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, email)
);

CREATE TABLE routing_rules (
    id                 text PRIMARY KEY,
    tenant_id          text NOT NULL,
    category           text,
    sending_domain     text,
    primary_provider   text NOT NULL,
    secondary_provider text,
    priority           integer NOT NULL DEFAULT 100,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routing_rules_tenant ON routing_rules (tenant_id, priority);

CREATE TABLE sending_caps (
    tenant_id   text NOT NULL,
    scope       text NOT NULL CHECK (scope IN ('mailbox', 'domain')),
    value       text NOT NULL,
    daily_limit integer NOT NULL CHECK (daily_limit >= 0),
    PRIMARY KEY (tenant_id, scope, value)
);

-- ESP webhook deliveries already applied (providers retry their webhooks).
CREATE TABLE provider_events (
    provider    text NOT NULL,
    event_key   text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_key)
);

-- migrate:down
DROP TABLE provider_events;
DROP TABLE sending_caps;
DROP TABLE routing_rules;
DROP TABLE suppressions;
DROP TABLE message_events;
DROP TABLE messages;
DROP TABLE batches;
DROP TABLE contents;
