-- Transactional outbox and idempotent inbox, created in every service's own schema
-- (dbmate runs with search_path = <service schema>).

-- migrate:up
CREATE TABLE outbox (
    id           uuid PRIMARY KEY,               -- the event id (UUIDv7, time-ordered)
    event_type   text        NOT NULL,
    routing_key  text        NOT NULL,
    tenant_id    text        NOT NULL,
    payload      jsonb       NOT NULL,           -- the whole CloudEvents envelope
    headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- traceparent, ...
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text
);

-- The relay only ever scans unpublished rows, oldest first.
CREATE INDEX outbox_pending_idx ON outbox (created_at) WHERE published_at IS NULL;
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- One NOTIFY per inserting statement wakes the relays; polling covers a missed one.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify_trg
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX inbox_processed_idx ON inbox (processed_at);

-- migrate:down
DROP TABLE inbox;
DROP TRIGGER outbox_notify_trg ON outbox;
DROP FUNCTION outbox_notify();
DROP TABLE outbox;
