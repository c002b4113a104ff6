-- migrate:up
-- Import jobs (POST /api/v1/contacts/imports): the parsed rows wait here; the worker imports
-- them in chunks, each chunk committed with its progress, so a restarted job resumes.
CREATE TABLE contact_imports (
    id           uuid        PRIMARY KEY,
    tenant_id    text        NOT NULL,
    mode         text        NOT NULL CHECK (mode IN ('live', 'test')),
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'completed')),
    rows         jsonb,                       -- dropped once completed
    total        integer     NOT NULL,
    processed    integer     NOT NULL DEFAULT 0,
    created      integer     NOT NULL DEFAULT 0,
    updated      integer     NOT NULL DEFAULT 0,
    failed       integer     NOT NULL DEFAULT 0,
    errors       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    heartbeat_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at timestamptz
);
CREATE INDEX contact_imports_tenant_idx ON contact_imports (tenant_id, mode, created_at);

-- migrate:down
DROP TABLE contact_imports;
