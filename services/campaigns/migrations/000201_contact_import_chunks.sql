-- migrate:up
-- Import jobs store their rows as JSON chunks (issue 15 §3 benchmark): one row per chunk
-- the worker imports in one transaction, so reading chunk k no longer parses and slices the
-- whole job's jsonb (50,000 rows: ~0.3 s a chunk), and submitting no longer builds a jsonb
-- value of every row. A chunk is deleted in the transaction that imports it. Jobs submitted
-- before this migration keep their rows in contact_imports.rows (still read).
CREATE TABLE contact_import_chunks (
    import_id uuid    NOT NULL REFERENCES contact_imports (id) ON DELETE CASCADE,
    first_row integer NOT NULL,  -- 0-based index of its first row in the job
    rows      bytea   NOT NULL,  -- a JSON array (UTF-8), as the parser left it
    PRIMARY KEY (import_id, first_row)
);
-- Stored out of line without compression: written once, read once, deleted.
ALTER TABLE contact_import_chunks ALTER COLUMN rows SET STORAGE EXTERNAL;

-- migrate:down
DROP TABLE contact_import_chunks;
