-- migrate:up
-- Goals reached by contacts (POST /api/v1/conversions), attributed to a campaign.
CREATE TABLE conversions (
    id          uuid        PRIMARY KEY,
    tenant_id   text        NOT NULL,
    mode        text        NOT NULL CHECK (mode IN ('live', 'test')),
    contact_id  uuid        NOT NULL,
    goal        text        NOT NULL,
    value       numeric(18, 2),
    currency    text,
    campaign_id uuid,
    occurred_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The same goal of the same contact at the same instant is one conversion (idempotent).
CREATE UNIQUE INDEX conversions_natural_key ON conversions (tenant_id, mode, contact_id, goal, occurred_at);
CREATE INDEX conversions_campaign_idx ON conversions (campaign_id, occurred_at) WHERE campaign_id IS NOT NULL;

-- analytics.updated is published at most once a minute per campaign.
ALTER TABLE campaigns ADD COLUMN analytics_notified_at timestamptz;

-- migrate:down
ALTER TABLE campaigns DROP COLUMN analytics_notified_at;
DROP TABLE conversions;
