-- Contacts, templates, campaigns (with frozen recipients and their sequence state), the
-- send log the runner writes, and the email-event read model behind analytics.
-- Every row carries tenant_id and mode (live | test): sandbox data never mixes with live.

-- migrate:up
CREATE TABLE contacts (
    id            uuid        PRIMARY KEY,
    tenant_id     text        NOT NULL,
    mode          text        NOT NULL CHECK (mode IN ('live', 'test')),
    email         text        NOT NULL,
    -- Uniqueness and equality filters are case-insensitive on the whole address.
    email_key     text        GENERATED ALWAYS AS (lower(email)) STORED,
    first_name    text,
    last_name     text,
    company       text,
    tags          text[]      NOT NULL DEFAULT '{}',
    custom_fields jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status        text        NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'unsubscribed', 'bounced', 'complained')),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE UNIQUE INDEX contacts_email_uq ON contacts (tenant_id, mode, email_key);
-- Keyset pagination per sort key: (tenant, mode, key, id) serves both orders.
CREATE INDEX contacts_created_idx ON contacts (tenant_id, mode, created_at, id);
CREATE INDEX contacts_updated_idx ON contacts (tenant_id, mode, updated_at, id);
CREATE INDEX contacts_status_idx ON contacts (tenant_id, mode, status, created_at, id);
CREATE INDEX contacts_tags_idx ON contacts USING gin (tags);
CREATE INDEX contacts_custom_fields_idx ON contacts USING gin (custom_fields jsonb_path_ops);

CREATE TABLE templates (
    id         uuid        PRIMARY KEY,
    tenant_id  text        NOT NULL,
    mode       text        NOT NULL CHECK (mode IN ('live', 'test')),
    name       text        NOT NULL,
    subject    text        NOT NULL,
    html       text,
    text       text,
    variables  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX templates_tenant_idx ON templates (tenant_id, mode, created_at, id);

CREATE TABLE campaigns (
    id              uuid        PRIMARY KEY,
    tenant_id       text        NOT NULL,
    mode            text        NOT NULL CHECK (mode IN ('live', 'test')),
    name            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'draft'
                    CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'completed',
                                      'cancelled')),
    from_email      text        NOT NULL,
    from_name       text,
    reply_to        text,
    -- Step 1 and the follow-ups: [{step, delay_days, subject, html, text, template_id}].
    steps           jsonb       NOT NULL,
    recipients      jsonb       NOT NULL,   -- {"contact_ids": [...]} or {"tags": [...], "match"}
    settings        jsonb       NOT NULL,   -- track_opens, track_clicks, category
    schedule        jsonb,                  -- {timezone, days, start_hour, end_hour}
    daily_cap       integer,
    spacing_min_seconds integer NOT NULL DEFAULT 0,
    spacing_max_seconds integer NOT NULL DEFAULT 0,
    scheduled_at    timestamptz,
    -- Runner bookkeeping: when this campaign may send next (schedule, spacing, due steps).
    next_run_at     timestamptz,
    recipient_count integer     NOT NULL DEFAULT 0,
    started_at      timestamptz,
    completed_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX campaigns_tenant_idx ON campaigns (tenant_id, mode, created_at, id);
-- What the runner scans: only campaigns that can send.
CREATE INDEX campaigns_runnable_idx ON campaigns (next_run_at)
    WHERE status IN ('scheduled', 'running');

-- One row per frozen recipient: where it stands in the sequence.
CREATE TABLE campaign_recipients (
    campaign_id  uuid        NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id   uuid        NOT NULL,
    tenant_id    text        NOT NULL,
    next_step    integer     NOT NULL DEFAULT 1,
    next_due_at  timestamptz NOT NULL,
    state        text        NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'done', 'replied', 'stopped', 'failed')),
    stop_reason  text,
    last_sent_at timestamptz,
    replied_at   timestamptz,
    PRIMARY KEY (campaign_id, contact_id)
);

CREATE INDEX campaign_recipients_due_idx ON campaign_recipients (campaign_id, next_due_at)
    WHERE state = 'pending';
CREATE INDEX campaign_recipients_contact_idx ON campaign_recipients (contact_id)
    WHERE state = 'pending';

-- The send log: the primary key is what makes each recipient step happen at most once.
CREATE TABLE campaign_sends (
    campaign_id  uuid        NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id   uuid        NOT NULL,
    step         integer     NOT NULL,
    request_id   text        NOT NULL,
    event_id     uuid        NOT NULL,
    email        text        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (campaign_id, contact_id, step)
);

-- Sends per campaign per local day (campaign timezone): the daily cap.
CREATE TABLE campaign_daily_sends (
    campaign_id uuid    NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    day         date    NOT NULL,
    sent        integer NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, day)
);

-- Read model of email.* facts from delivery; one row per event id (duplicates collapse).
CREATE TABLE email_events (
    event_id    uuid        PRIMARY KEY,
    tenant_id   text        NOT NULL,
    mode        text        NOT NULL DEFAULT 'live',
    event_type  text        NOT NULL,
    message_id  text        NOT NULL,
    campaign_id uuid,
    contact_id  uuid,
    step        integer,
    recipient   text,
    occurred_at timestamptz NOT NULL,
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX email_events_tenant_idx ON email_events (tenant_id, mode, occurred_at);
CREATE INDEX email_events_campaign_idx ON email_events (campaign_id, event_type)
    WHERE campaign_id IS NOT NULL;
CREATE INDEX email_events_contact_idx ON email_events (contact_id, occurred_at, event_id)
    WHERE contact_id IS NOT NULL;

-- migrate:down
DROP TABLE email_events;
DROP TABLE campaign_daily_sends;
DROP TABLE campaign_sends;
DROP TABLE campaign_recipients;
DROP TABLE campaigns;
DROP TABLE templates;
DROP TABLE contacts;
