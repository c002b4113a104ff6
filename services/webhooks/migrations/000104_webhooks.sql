-- migrate:up
-- Customer endpoints. The signing secret itself lives in Vault
-- (secret/webhooks/endpoints/<id>); `secret_version` tells workers when to re-read it.
CREATE TABLE endpoints (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    mode text NOT NULL DEFAULT 'live',
    url text NOT NULL,
    description text,
    event_types text[] NOT NULL,
    filter_campaign_ids text[] NOT NULL DEFAULT '{}',
    filter_contact_tags text[] NOT NULL DEFAULT '{}',
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    disabled_at timestamptz,
    retry_schedule_ms integer[],
    secret_version integer NOT NULL DEFAULT 1,
    previous_secret_expires_at timestamptz,
    failing_since timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoints_tenant ON endpoints (tenant_id, created_at DESC, id DESC);

-- One row per (endpoint, event): its id is the webhook-id and the payload id, so the same
-- event reaches the same endpoint under one id however often it is attempted.
CREATE TABLE deliveries (
    id text PRIMARY KEY,
    endpoint_id text NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    event_id uuid,
    event_type text NOT NULL,
    payload text NOT NULL,
    status text NOT NULL
        CHECK (status IN ('pending', 'sending', 'retrying', 'succeeded', 'failed', 'paused')),
    is_test boolean NOT NULL DEFAULT false,
    trigger text NOT NULL DEFAULT 'event',
    attempts integer NOT NULL DEFAULT 0,
    cycle_attempts integer NOT NULL DEFAULT 0,
    seq integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    lease_until timestamptz,
    last_status_code integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at timestamptz,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX deliveries_log ON deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX deliveries_due ON deliveries (endpoint_id, next_attempt_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX deliveries_failed ON deliveries (endpoint_id, created_at) WHERE status = 'failed';

-- Every HTTP attempt, for the delivery log, stats and health.
CREATE TABLE attempts (
    id bigserial PRIMARY KEY,
    delivery_id text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    endpoint_id text NOT NULL,
    tenant_id text NOT NULL,
    attempt integer NOT NULL,
    trigger text NOT NULL,
    attempted_at timestamptz NOT NULL,
    succeeded boolean NOT NULL,
    status_code integer,
    response_ms double precision,
    response_body text,
    error text
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, attempt);
CREATE INDEX attempts_endpoint_time ON attempts (endpoint_id, attempted_at);

-- migrate:down
DROP TABLE attempts;
DROP TABLE deliveries;
DROP TABLE endpoints;
