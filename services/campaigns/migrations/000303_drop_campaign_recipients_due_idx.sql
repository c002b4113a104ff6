-- Replaced by campaign_recipients_due_order_idx (000302), which has its columns first.

-- migrate:up transaction:false
DROP INDEX CONCURRENTLY IF EXISTS campaign_recipients_due_idx;

-- migrate:down transaction:false
CREATE INDEX CONCURRENTLY IF NOT EXISTS campaign_recipients_due_idx
    ON campaign_recipients (campaign_id, next_due_at) WHERE state = 'pending';
