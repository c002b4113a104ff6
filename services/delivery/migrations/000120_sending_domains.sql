-- migrate:up
-- Sending domains: a tenant's proof that it may send live mail From a domain. DKIM private
-- keys live in Vault (`<domain_keys_path>/<tenant>/<domain id>/<selector>`), never here.
CREATE TABLE sending_domains (
    id                   text PRIMARY KEY,
    tenant_id            text NOT NULL,
    name                 text NOT NULL,  -- ASCII (punycode), lower-case
    status               text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'verified', 'failed')),
    dkim_selector        text NOT NULL,
    dkim_public_key      text NOT NULL,
    -- A rotation publishes the next selector beside the current one until it verifies.
    dkim_next_selector   text,
    dkim_next_public_key text,
    -- purpose → pending | verified | failed, as of the last check
    record_status        jsonb NOT NULL DEFAULT '{}',
    default_from         text,
    default_from_name    text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    verified_at          timestamptz,
    last_checked_at      timestamptz,
    next_check_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
-- A name can be verified by one tenant only: whoever proves it first holds it.
CREATE UNIQUE INDEX sending_domains_verified_name ON sending_domains (name)
    WHERE status = 'verified';
CREATE INDEX sending_domains_due ON sending_domains (next_check_at);
CREATE INDEX sending_domains_tenant_list ON sending_domains (tenant_id, created_at, id);

-- migrate:down
DROP TABLE sending_domains;
