-- The send lane of a message (services/delivery/express.py, docs/sending.md "Send lanes"):
-- 'express' for a small send from a tenant with a small backlog, claimed at once by the
-- express process (woken by NOTIFY), never behind another tenant's bulk batch; 'bulk' for
-- everything else, claimed by the workers' fair claim. A constant default: no table rewrite.

-- migrate:up
ALTER TABLE messages ADD COLUMN lane text NOT NULL DEFAULT 'bulk';

-- migrate:down
ALTER TABLE messages DROP COLUMN lane;
