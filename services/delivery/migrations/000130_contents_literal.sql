-- migrate:up
-- Content the producer already personalised (the campaign runner's `email.requested` with
-- `prerendered`): sent verbatim, never evaluated as a template.
ALTER TABLE contents ADD COLUMN literal boolean NOT NULL DEFAULT false;

-- migrate:down
ALTER TABLE contents DROP COLUMN literal;
