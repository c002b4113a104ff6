-- migrate:up
-- The per-tenant daily send quota of the plan table (libs/common/plans.py): emails counted
-- per tenant, mode and UTC day, in the transaction that accepts them (docs/rate-limits.md).
CREATE TABLE daily_sends (
    tenant_id text NOT NULL,
    mode      text NOT NULL CHECK (mode IN ('live', 'test')),
    day       date NOT NULL,
    sends     integer NOT NULL CHECK (sends >= 0),
    PRIMARY KEY (tenant_id, mode, day)
);

-- Read model of each tenant's plan (`tenant.created`, `tenant.plan_changed` from keys or
-- billing; an API send's principal fills in a tenant not seen yet): the quota of campaign
-- sends, which arrive as events without a principal.
CREATE TABLE tenant_plans (
    tenant_id  text PRIMARY KEY,
    plan       text NOT NULL,
    event_time timestamptz NOT NULL
);

-- migrate:down
DROP TABLE tenant_plans;
DROP TABLE daily_sends;
