-- Replaced by contacts_suppressed_idx (000102), which serves every status filter but
-- `active` without an entry per active contact.

-- migrate:up transaction:false
DROP INDEX CONCURRENTLY IF EXISTS contacts_status_idx;

-- migrate:down transaction:false
CREATE INDEX CONCURRENTLY IF NOT EXISTS contacts_status_idx
    ON contacts (tenant_id, mode, status, created_at, id);
