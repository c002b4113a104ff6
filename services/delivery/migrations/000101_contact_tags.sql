-- migrate:up
-- Read model of the tenant's contacts' tags, fed by campaigns' contact.* events: every
-- email.* event carries its recipient's tags (webhook endpoints filter on them).
CREATE TABLE contact_tags (
    tenant_id  text NOT NULL,
    mode       text NOT NULL,
    email_key  text NOT NULL,
    contact_id text,
    tags       text[] NOT NULL DEFAULT '{}',
    -- The envelope time of the last event applied: an older event never overwrites it.
    event_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, mode, email_key)
);

-- The recipient's tags when the send was accepted.
ALTER TABLE messages ADD COLUMN contact_tags text[] NOT NULL DEFAULT '{}';

-- migrate:down
ALTER TABLE messages DROP COLUMN contact_tags;
DROP TABLE contact_tags;
