-- The status filter's index covers only suppressed contacts (unsubscribed, bounced,
-- complained): active ones, the bulk of every import, no longer pay for an entry in it.
-- `status = 'active'` lists walk contacts_created_idx instead (most rows match, so a LIMIT
-- page stops early). CONCURRENTLY: no write lock on a large live table; one statement per
-- file, as Postgres refuses CONCURRENTLY inside a multi-statement batch.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY IF NOT EXISTS contacts_suppressed_idx
    ON contacts (tenant_id, mode, status, created_at, id) WHERE status <> 'active';

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS contacts_suppressed_idx;
