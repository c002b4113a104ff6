-- migrate:up
-- The inbox ("unibox"): replies and other inbound mail, threaded against the messages the
-- platform sent. Every row carries tenant_id (NULL only in the operator quarantine) and mode;
-- every query filters by them.

-- Read model of delivery's sent messages (email.queued / email.sent): what a reply threads
-- against, and what a reply through the API is sent from.
CREATE TABLE sent_messages (
    message_id text PRIMARY KEY,               -- delivery's msg_ id
    tenant_id text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('live', 'test')),
    header_message_id text,                    -- RFC 5322 Message-ID, with angle brackets
    from_email text,
    to_email text NOT NULL,
    subject text,
    campaign_id text,
    contact_id text,
    step integer,
    request_id text,                           -- set for messages this service asked for
    thread_id text,
    sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sent_messages_header ON sent_messages (header_message_id);
CREATE INDEX sent_messages_tenant_from ON sent_messages (lower(from_email), tenant_id);
CREATE INDEX sent_messages_request ON sent_messages (request_id);

-- One conversation with one contact. `folder` is 'inbox' or 'unmatched' (mail the tenant
-- owns that maps to no message of ours).
CREATE TABLE threads (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('live', 'test')),
    folder text NOT NULL DEFAULT 'inbox' CHECK (folder IN ('inbox', 'unmatched')),
    subject text NOT NULL DEFAULT '',
    contact_email text,
    contact_id text,
    campaign_id text,
    origin_message_id text,                    -- the sent message the thread started from
    classification text,                       -- of the latest inbound message
    unread boolean NOT NULL DEFAULT true,
    archived boolean NOT NULL DEFAULT false,
    labels text[] NOT NULL DEFAULT '{}',
    message_count integer NOT NULL DEFAULT 0,
    last_message_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX threads_tenant_last ON threads (tenant_id, mode, last_message_at DESC, id DESC);
CREATE INDEX threads_tenant_created ON threads (tenant_id, mode, created_at DESC, id DESC);
CREATE UNIQUE INDEX threads_origin ON threads (tenant_id, origin_message_id);

-- Raw MIME as received, kept for reprocessing (expires_at: 30 days, swept by the worker).
CREATE TABLE raw_messages (
    id text PRIMARY KEY,
    tenant_id text,
    source text NOT NULL,                      -- postmark | mailgun | sendgrid | ses | smtp
    dedup_key text NOT NULL UNIQUE,            -- provider's id of the delivery (retries)
    raw bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL DEFAULT now() + interval '30 days'
);
CREATE INDEX raw_messages_expiry ON raw_messages (expires_at);

-- Messages of a thread, ours (outbound: replies sent through the API, and the original
-- sends) and theirs (inbound).
CREATE TABLE messages (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('live', 'test')),
    thread_id text NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    classification text CHECK (classification IN
        ('human_reply', 'auto_reply', 'bounce', 'unsubscribe_request')),
    header_message_id text,
    in_reply_to text,
    references_header text,
    from_email text,
    from_name text,
    to_email text,
    subject text NOT NULL DEFAULT '',
    text_body text,
    html_body text,                            -- sanitized (nh3)
    headers jsonb NOT NULL DEFAULT '[]',
    attachments jsonb NOT NULL DEFAULT '[]',   -- metadata: filename, content_type, size
    parse_error text,
    raw_id text REFERENCES raw_messages (id) ON DELETE SET NULL,
    sent_message_id text,                      -- delivery's msg_ id (outbound)
    status text,                               -- outbound: requested | sent | failed
    source text,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_thread ON messages (thread_id, occurred_at, id);
CREATE INDEX messages_tenant_created ON messages (tenant_id, mode, created_at DESC, id DESC);
CREATE INDEX messages_header ON messages (tenant_id, header_message_id);

-- Mail no tenant owns (no token, no header, no known recipient): operators only.
CREATE TABLE quarantine (
    id text PRIMARY KEY,
    raw_id text REFERENCES raw_messages (id) ON DELETE SET NULL,
    recipient text,
    sender text,
    subject text,
    reason text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Mailgun signs only timestamp + token: a token is good once (with one body).
CREATE TABLE hook_tokens (
    provider text NOT NULL,
    token text NOT NULL,
    body_hash text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, token)
);

-- migrate:down
DROP TABLE hook_tokens;
DROP TABLE quarantine;
DROP TABLE messages;
DROP TABLE raw_messages;
DROP TABLE threads;
DROP TABLE sent_messages;
