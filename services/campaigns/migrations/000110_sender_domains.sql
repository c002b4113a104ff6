-- migrate:up
-- Read model of delivery's domain.* events: which sending domains each tenant has verified.
-- A live campaign starts only when its sender's domain (or a parent of it) is verified here.
CREATE TABLE sender_domains (
    tenant_id  text        NOT NULL,
    name       text        NOT NULL,  -- ASCII (punycode), lower-case
    verified   boolean     NOT NULL,
    event_time timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- migrate:down
DROP TABLE sender_domains;
