-- The delivery log filtered by status (GET /api/v1/webhooks/{id}/deliveries?status=...):
-- with only deliveries_log, a status few deliveries have (paused, failed, retrying) meant
-- walking the endpoint's whole history to fill a page, and one none has read every delivery
-- (a sequential scan at 1M deliveries, issue 21). The index serves every status in the log's
-- order, and the failed-replay query (endpoint, status = 'failed', created_at >= ...) that
-- deliveries_failed served, which 000271 drops. Status updates are not HOT updates already
-- (deliveries_due and deliveries_leased are partial on status), so this adds one index entry
-- per update, and dropping deliveries_failed takes one away for failures.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_status_log
    ON deliveries (endpoint_id, status, created_at DESC, id DESC);

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS deliveries_status_log;
