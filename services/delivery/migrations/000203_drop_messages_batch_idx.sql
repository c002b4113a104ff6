-- Replaced by messages_batch_created (000202).

-- migrate:up transaction:false
DROP INDEX CONCURRENTLY IF EXISTS messages_batch;

-- migrate:down transaction:false
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_batch ON messages (batch_id)
    WHERE batch_id IS NOT NULL;
