-- Campaigns' queries are planned with their actual parameters (plan_cache_mode =
-- force_custom_plan, for the campaigns role in this database: asyncpg prepares every
-- statement, and after five executions Postgres may switch a prepared statement to a generic
-- plan, chosen without the values). Tenants are skewed (one with 1M contacts beside
-- thousands with a few hundred), and a generic plan is the one for no tenant in particular:
-- `make bench-scale` found the contacts list filtered by a tag at 0.49 ms with a custom plan
-- and 1,398 ms with the generic one (a bitmap scan over 580k rows, then a sort), p95 11 s
-- through the gateway at 1M contacts. Planning each execution costs tens of microseconds;
-- only campaigns (contacts, lists with tag and custom-field filters) needs it: the other
-- services' list probes kept index plans at 1M, and delivery's hot path (bench/delivery.py)
-- spent about 1.6 s more Postgres CPU per 20,000 sends with custom plans forced.
-- A role default, not a connection startup parameter: PgBouncer passes it through unchanged
-- (the server applies it when the pooled connection opens).

-- migrate:up
DO $$ BEGIN
    EXECUTE format('ALTER ROLE %I IN DATABASE %I SET plan_cache_mode = force_custom_plan',
                   current_user, current_database());
END $$;

-- migrate:down
DO $$ BEGIN
    EXECUTE format('ALTER ROLE %I IN DATABASE %I RESET plan_cache_mode',
                   current_user, current_database());
END $$;
