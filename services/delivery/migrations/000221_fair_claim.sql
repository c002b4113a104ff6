-- migrate:up
-- Fair claiming (repository.claim_fair): the tenants with queued work, found by a skip scan,
-- and each tenant's due messages in order, without reading another tenant's backlog.
CREATE INDEX messages_queued_tenant ON messages (tenant_id, next_attempt_at, id)
    WHERE status = 'queued';

-- migrate:down
DROP INDEX messages_queued_tenant;
