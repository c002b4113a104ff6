-- Urgent outbox rows (work items that drive a pipeline, cache invalidations with a deadline:
-- the catalog's `urgent` event types) are published ahead of routine facts already waiting,
-- so a bulk write's 10,000 facts do not hold up the next request's work items.
-- Order within one priority stays creation order.

-- migrate:up
ALTER TABLE outbox ADD COLUMN priority smallint NOT NULL DEFAULT 0;
DROP INDEX outbox_pending_idx;
CREATE INDEX outbox_pending_idx ON outbox (priority DESC, created_at) WHERE published_at IS NULL;

-- migrate:down
DROP INDEX outbox_pending_idx;
ALTER TABLE outbox DROP COLUMN priority;
CREATE INDEX outbox_pending_idx ON outbox (created_at) WHERE published_at IS NULL;
