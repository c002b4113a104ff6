-- migrate:up
-- The payload shape an endpoint receives. Endpoints that existed before payload versions keep
-- the flat `2026-11-21` payload; new endpoints get the newest version (set by the service,
-- the column default only covers rows written before this migration).
ALTER TABLE endpoints
    ADD COLUMN payload_version text NOT NULL DEFAULT '2026-11-21'
        CHECK (payload_version IN ('2026-11-21', '2026-12-01'));

-- migrate:down
ALTER TABLE endpoints DROP COLUMN payload_version;
