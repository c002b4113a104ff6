-- The email list filtered by status (GET /api/v1/emails?status=...): with only
-- messages_tenant_created, a status few messages have (queued, failed, complained) meant
-- walking the tenant's whole history to fill a page, and one none has read every message
-- (issue 21). Status updates are not HOT updates already (messages_due/messages_leased are
-- partial on status), so this adds one index entry per update, no more.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_tenant_status
    ON messages (tenant_id, status, created_at DESC, id DESC);

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS messages_tenant_status;
