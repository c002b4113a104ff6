-- The plan table grew (libs/common/plans.py): seed 004's free tier, and the internal
-- `unlimited` plan only the admin command sets.

-- migrate:up
ALTER TABLE tenants DROP CONSTRAINT tenants_plan_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_plan_check
    CHECK (plan IN ('free', 'starter', 'pro', 'enterprise', 'unlimited'));

-- migrate:down
ALTER TABLE tenants DROP CONSTRAINT tenants_plan_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_plan_check
    CHECK (plan IN ('starter', 'pro', 'enterprise'));
