-- A bulk send's messages in list order (GET /api/v1/emails?batch_id=...): the list walked
-- the tenant's whole history (messages_tenant_created) until it reached the batch, a cost
-- growing with the tenant's size (issue 21). Replaces messages_batch (000203 drops it),
-- which the batch report's count by status uses just as well. CONCURRENTLY: no write lock
-- on a large live table; one statement per file.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_batch_created
    ON messages (batch_id, created_at DESC, id DESC) WHERE batch_id IS NOT NULL;

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS messages_batch_created;
