-- Replaced by deliveries_status_log (000270), which leads with the same (endpoint_id,
-- status) and orders by created_at.

-- migrate:up transaction:false
DROP INDEX CONCURRENTLY IF EXISTS deliveries_failed;

-- migrate:down transaction:false
CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_failed ON deliveries (endpoint_id, created_at)
    WHERE status = 'failed';
