-- The runner claims a campaign's due recipients `ORDER BY next_due_at, contact_id LIMIT n`:
-- campaign_recipients_due_idx (campaign_id, next_due_at) gave only the first key, and a
-- campaign's first step is due at one instant for every recipient, so each batch of 500
-- joined every pending recipient with its contact and sorted them all (EXPLAIN ANALYZE at
-- 20,000 pending: 20,000 contact look-ups, an external merge sort, 73 ms per batch; the work
-- grew with the campaign). With contact_id in the index the claim walks it in order and
-- stops after the batch. Replaces campaign_recipients_due_idx (000303), whose queries
-- (next due, first steps pending) use this one's leading columns.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY IF NOT EXISTS campaign_recipients_due_order_idx
    ON campaign_recipients (campaign_id, next_due_at, contact_id) WHERE state = 'pending';

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS campaign_recipients_due_order_idx;
