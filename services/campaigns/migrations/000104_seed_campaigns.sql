-- migrate:up
-- Issue 15 §1: seed 004's campaign body.

-- A tenant-chosen key naming a template (`content.template_id: "welcome_template"`).
ALTER TABLE templates ADD COLUMN key text;
CREATE UNIQUE INDEX templates_key_idx ON templates (tenant_id, mode, key) WHERE key IS NOT NULL;

-- `from_email` is optional: a campaign without one takes the tenant's default sender at start.
ALTER TABLE campaigns ALTER COLUMN from_email DROP NOT NULL;
-- When every recipient's first step was handed to delivery (campaign.sent published).
ALTER TABLE campaigns ADD COLUMN sent_at timestamptz;

-- Per-recipient personalization of inline `recipients` ([{email, personalization}]).
CREATE TABLE campaign_personalization (
    campaign_id uuid  NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id  uuid  NOT NULL,
    data        jsonb NOT NULL,
    PRIMARY KEY (campaign_id, contact_id)
);

-- Read model of delivery's sending_settings.updated: the tenant's default sender.
CREATE TABLE sender_defaults (
    tenant_id         text        NOT NULL,
    mode              text        NOT NULL,
    default_from      text,
    default_from_name text,
    default_reply_to  text,
    event_time        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, mode)
);

-- migrate:down
DROP TABLE sender_defaults;
DROP TABLE campaign_personalization;
ALTER TABLE campaigns DROP COLUMN sent_at;
ALTER TABLE campaigns ALTER COLUMN from_email SET NOT NULL;
DROP INDEX templates_key_idx;
ALTER TABLE templates DROP COLUMN key;
