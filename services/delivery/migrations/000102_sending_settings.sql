-- migrate:up
-- The tenant's default sender (per mode: a pm_test_ key has its own), used by sends without
-- `from` and published to campaigns as sending_settings.updated.
CREATE TABLE sending_settings (
    tenant_id         text NOT NULL,
    mode              text NOT NULL CHECK (mode IN ('live', 'test')),
    default_from      text,
    default_from_name text,
    default_reply_to  text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, mode)
);

-- migrate:down
DROP TABLE sending_settings;
