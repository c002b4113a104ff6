-- migrate:up
-- The event stream's replay store (GET /api/v1/events/stream): every deliverable event of a
-- tenant and mode, numbered per (tenant, mode) in commit order (the head's row lock) so a
-- reader knows whether it has missed one, kept for `PM_EVENTS_STREAM_RETENTION_HOURS` (and at most
-- `PM_EVENTS_STREAM_TENANT_CAP` rows per tenant and mode). Fed by the consumer of queue webhooks.stream.
CREATE TABLE stream_heads (
    tenant_id text NOT NULL,
    mode text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, mode)
);

CREATE TABLE stream_events (
    tenant_id text NOT NULL,
    mode text NOT NULL,
    seq bigint NOT NULL,
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    campaign_id text,
    contact_tags text[] NOT NULL DEFAULT '{}',
    payload text NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, mode, seq)
);
CREATE UNIQUE INDEX stream_events_event ON stream_events (event_id);
CREATE INDEX stream_events_age ON stream_events (stored_at);

-- migrate:down
DROP TABLE stream_events;
DROP TABLE stream_heads;
