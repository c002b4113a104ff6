-- The express claim (repository.claim_express): the tenants with queued express messages and
-- each one's due messages in order, without reading any tenant's bulk backlog (a
-- 100,000-message bulk stays out of this index). Empty most of the time.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_queued_express
    ON messages (tenant_id, next_attempt_at, id) WHERE status = 'queued' AND lane = 'express';

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS messages_queued_express;
