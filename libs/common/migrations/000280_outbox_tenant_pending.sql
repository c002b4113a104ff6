-- A tenant's pending rows in publishing order: a relay that claimed some of a tenant's rows
-- looks up whether an earlier one of that tenant is still pending but not its own (claimed by
-- another relay, or by the same relay's other batch), and then leaves its later rows for the
-- next claim, so a tenant's events reach the broker in the order they were committed.

-- migrate:up
CREATE INDEX outbox_tenant_pending_idx ON outbox (tenant_id, priority DESC, created_at)
    WHERE published_at IS NULL;

-- migrate:down
DROP INDEX outbox_tenant_pending_idx;
