-- migrate:up
-- Billing keeps a light copy of Stripe's state (Stripe is the source of truth): enough to
-- answer the dashboard, attribute Stripe objects to tenants and compute the tenant's plan.

-- The Stripe customer of a tenant, per mode (live and test data never mix, as in Stripe).
CREATE TABLE customers (
    tenant_id text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('live', 'test')),
    stripe_customer_id text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, mode)
);

-- Subscriptions as last read from Stripe. `synced_at` is when that read began (database
-- clock): a state read earlier never overwrites one read later, whatever the event order.
CREATE TABLE subscriptions (
    stripe_subscription_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('live', 'test')),
    stripe_customer_id text NOT NULL,
    plan_id text,
    price_id text,
    status text NOT NULL,
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    canceled_at timestamptz,
    stripe_created_at timestamptz NOT NULL,
    synced_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_tenant ON subscriptions (tenant_id, mode, stripe_created_at DESC);

-- The effective plan of a tenant as billing last published it (`tenant.plan_changed`).
CREATE TABLE tenant_config (
    tenant_id text PRIMARY KEY,
    plan text NOT NULL,
    stripe_subscription_id text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per Stripe invoice of a subscription: paid, failed (open after a failed
-- attempt), void, uncollectible.
CREATE TABLE payments (
    stripe_invoice_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('live', 'test')),
    stripe_customer_id text NOT NULL,
    stripe_subscription_id text,
    status text NOT NULL,
    invoice_status text NOT NULL,
    amount_due bigint NOT NULL,
    amount_paid bigint NOT NULL,
    currency text NOT NULL,
    attempt_count integer NOT NULL DEFAULT 0,
    next_payment_attempt timestamptz,
    hosted_invoice_url text,
    period_start timestamptz,
    period_end timestamptz,
    paid_at timestamptz,
    stripe_created_at timestamptz NOT NULL,
    synced_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_tenant
    ON payments (tenant_id, mode, stripe_created_at DESC, stripe_invoice_id DESC);

-- Every Stripe event received (webhook) or found by the reconciler, stored once.
CREATE TABLE stripe_events (
    id text PRIMARY KEY,
    mode text NOT NULL CHECK (mode IN ('live', 'test')),
    type text NOT NULL,
    object_id text,
    stripe_created_at timestamptz NOT NULL,
    payload jsonb NOT NULL,
    source text NOT NULL CHECK (source IN ('webhook', 'reconciliation')),
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    outcome text
);
CREATE INDEX stripe_events_unprocessed ON stripe_events (received_at) WHERE processed_at IS NULL;
CREATE INDEX stripe_events_created ON stripe_events (mode, stripe_created_at);

-- Where the reconciler's next event listing starts, per mode.
CREATE TABLE reconciliation_cursors (
    mode text PRIMARY KEY CHECK (mode IN ('live', 'test')),
    last_event_created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reconciliation_runs (
    id bigserial PRIMARY KEY,
    mode text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    events_listed integer NOT NULL DEFAULT 0,
    events_applied integer NOT NULL DEFAULT 0,
    subscriptions_checked integer NOT NULL DEFAULT 0,
    drift_corrected integer NOT NULL DEFAULT 0,
    error text
);

-- What a reconciliation run found different from Stripe and corrected.
CREATE TABLE reconciliation_drift (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES reconciliation_runs (id) ON DELETE CASCADE,
    mode text NOT NULL,
    kind text NOT NULL,
    object_id text NOT NULL,
    tenant_id text,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    corrected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reconciliation_drift_run ON reconciliation_drift (run_id);

-- migrate:down
DROP TABLE reconciliation_drift;
DROP TABLE reconciliation_runs;
DROP TABLE reconciliation_cursors;
DROP TABLE stripe_events;
DROP TABLE payments;
DROP TABLE tenant_config;
DROP TABLE subscriptions;
DROP TABLE customers;
