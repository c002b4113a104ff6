-- Commands through the outbox: a work item a service sends itself (delivery's send batches)
-- is not a public fact. Its row names its own exchange (`''`, the default exchange: the
-- routing key is the service's private command queue, never `pm.events`), and may be
-- scheduled: the relay publishes it once `not_before` has passed (a delayed bulk chunk, a
-- provider retry), so delayed work takes the same send path as immediate work.

-- migrate:up
ALTER TABLE outbox ADD COLUMN exchange text;
ALTER TABLE outbox ADD COLUMN not_before timestamptz;

-- migrate:down
ALTER TABLE outbox DROP COLUMN not_before;
ALTER TABLE outbox DROP COLUMN exchange;
