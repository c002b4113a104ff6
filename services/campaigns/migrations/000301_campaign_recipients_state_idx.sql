-- Recipients' state counts of one campaign from the index alone (000300 explains why).

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY IF NOT EXISTS campaign_recipients_state_idx
    ON campaign_recipients (campaign_id, state);

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS campaign_recipients_state_idx;
