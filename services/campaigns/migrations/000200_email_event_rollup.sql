-- Pre-aggregated analytics (issue 21): the campaign and email analytics read counters per
-- UTC day instead of counting a tenant's email_events (10M rows at 1M contacts: seconds per
-- request). Kept exact by a trigger on email_events, in the transaction that records each
-- event (whatever code inserts it, so consumers of the previous release count too):
-- - events:   events of that type that day;
-- - messages: messages with an event of that type that day (the daily series' unique count);
-- - latest:   messages whose LATEST event of that type falls on that day. A period always
--   runs from a UTC midnight to now, so its unique count (messages with such an event in it)
--   is the sum of `latest` over its days, and a lifetime's is the sum over all days.
-- A message belongs to one campaign step (delivery makes one per recipient step): its
-- counters sit in that (campaign, step); no campaign / no step is stored as the zero uuid / 0.
-- `shard` (a hash of the message id, 0-7) spreads one hot campaign-day over 8 rows, so
-- concurrent consumers rarely wait on the same row lock.

-- migrate:up
CREATE TABLE email_message_types (
    tenant_id  text   NOT NULL,
    mode       text   NOT NULL,
    message_id text   NOT NULL,
    event_type text   NOT NULL,
    days       date[] NOT NULL,  -- the UTC days it had an event of this type
    PRIMARY KEY (tenant_id, mode, message_id, event_type)
);

CREATE TABLE email_event_rollup (
    tenant_id   text     NOT NULL,
    mode        text     NOT NULL,
    campaign_id uuid     NOT NULL,
    step        integer  NOT NULL,
    event_type  text     NOT NULL,
    day         date     NOT NULL,
    shard       smallint NOT NULL,
    events      bigint   NOT NULL DEFAULT 0,
    messages    bigint   NOT NULL DEFAULT 0,
    latest      bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, campaign_id, step, event_type, day, mode, shard)
);
-- The same counters summed over campaigns and steps: what the tenant-wide email analytics
-- read (a few rows per day, however many campaigns the tenant sends).
CREATE TABLE email_event_daily (
    tenant_id  text     NOT NULL,
    mode       text     NOT NULL,
    day        date     NOT NULL,
    event_type text     NOT NULL,
    shard      smallint NOT NULL,
    events     bigint   NOT NULL DEFAULT 0,
    messages   bigint   NOT NULL DEFAULT 0,
    latest     bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, mode, day, event_type, shard)
);

-- Count one newly recorded email event (once per event id, in its transaction).
CREATE FUNCTION record_email_event(
    p_tenant text, p_mode text, p_message text, p_type text, p_campaign uuid, p_step integer,
    p_at timestamptz
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    d          date := (p_at AT TIME ZONE 'UTC')::date;
    seen       date[];
    new_day    boolean := true;
    old_latest date;
    c          uuid := coalesce(p_campaign, '00000000-0000-0000-0000-000000000000');
    s          integer := coalesce(p_step, 0);
    sh         smallint := (hashtext(p_message) & 7)::smallint;
BEGIN
    LOOP
        SELECT days INTO seen FROM email_message_types
        WHERE tenant_id = p_tenant AND mode = p_mode AND message_id = p_message
          AND event_type = p_type
        FOR UPDATE;
        IF FOUND THEN
            new_day := NOT (d = ANY (seen));
            SELECT max(x) INTO old_latest FROM unnest(seen) AS x;
            IF new_day THEN
                UPDATE email_message_types SET days = days || d
                WHERE tenant_id = p_tenant AND mode = p_mode AND message_id = p_message
                  AND event_type = p_type;
            END IF;
            EXIT;
        END IF;
        INSERT INTO email_message_types (tenant_id, mode, message_id, event_type, days)
        VALUES (p_tenant, p_mode, p_message, p_type, ARRAY[d])
        ON CONFLICT DO NOTHING;
        EXIT WHEN FOUND;  -- else a concurrent first event won: read and lock its row
    END LOOP;
    -- Rows in day order: two transactions touching the same two rows lock them alike.
    INSERT INTO email_event_rollup AS r
        (tenant_id, mode, campaign_id, step, event_type, day, shard, events, messages, latest)
    SELECT p_tenant, p_mode, c, s, p_type, v.day, sh, v.events, v.messages, v.latest
    FROM (VALUES
            (d, 1, new_day::integer, CASE WHEN old_latest IS NULL OR d > old_latest THEN 1 ELSE 0 END),
            (old_latest, 0, 0, -1)
         ) AS v (day, events, messages, latest)
    WHERE v.day IS NOT NULL AND (v.events = 1 OR d > old_latest)
    ORDER BY v.day
    ON CONFLICT (tenant_id, campaign_id, step, event_type, day, mode, shard) DO UPDATE SET
        events = r.events + excluded.events,
        messages = r.messages + excluded.messages,
        latest = r.latest + excluded.latest;
    INSERT INTO email_event_daily AS r
        (tenant_id, mode, day, event_type, shard, events, messages, latest)
    SELECT p_tenant, p_mode, v.day, p_type, sh, v.events, v.messages, v.latest
    FROM (VALUES
            (d, 1, new_day::integer, CASE WHEN old_latest IS NULL OR d > old_latest THEN 1 ELSE 0 END),
            (old_latest, 0, 0, -1)
         ) AS v (day, events, messages, latest)
    WHERE v.day IS NOT NULL AND (v.events = 1 OR d > old_latest)
    ORDER BY v.day
    ON CONFLICT (tenant_id, mode, day, event_type, shard) DO UPDATE SET
        events = r.events + excluded.events,
        messages = r.messages + excluded.messages,
        latest = r.latest + excluded.latest;
    RETURN true;
END
$$;

CREATE FUNCTION email_events_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM record_email_event(NEW.tenant_id, NEW.mode, NEW.message_id, NEW.event_type,
                               NEW.campaign_id, NEW.step, NEW.occurred_at);
    RETURN NULL;
END
$$;

-- Rebuild both tables from email_events (this migration on existing data; benchmarks after
-- a bulk load with the trigger disabled).
CREATE FUNCTION rebuild_email_event_rollup() RETURNS void LANGUAGE sql AS $$
    TRUNCATE email_message_types, email_event_rollup, email_event_daily;
    INSERT INTO email_message_types (tenant_id, mode, message_id, event_type, days)
    SELECT tenant_id, mode, message_id, event_type,
           array_agg(DISTINCT (occurred_at AT TIME ZONE 'UTC')::date)
    FROM email_events GROUP BY 1, 2, 3, 4;
    INSERT INTO email_event_rollup
        (tenant_id, mode, campaign_id, step, event_type, day, shard, events, messages, latest)
    SELECT e.tenant_id, e.mode, e.campaign_id, e.step, e.event_type, e.day, e.shard,
           sum(e.n), count(*), count(*) FILTER (WHERE e.day = t.days[array_upper(t.days, 1)])
    FROM (
        SELECT tenant_id, mode, message_id, event_type,
               coalesce(campaign_id, '00000000-0000-0000-0000-000000000000') AS campaign_id,
               coalesce(step, 0) AS step, (occurred_at AT TIME ZONE 'UTC')::date AS day,
               (hashtext(message_id) & 7)::smallint AS shard, count(*) AS n
        FROM email_events GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    ) AS e
    JOIN email_message_types t USING (tenant_id, mode, message_id, event_type)
    GROUP BY 1, 2, 3, 4, 5, 6, 7;
    INSERT INTO email_event_daily
        (tenant_id, mode, day, event_type, shard, events, messages, latest)
    SELECT tenant_id, mode, day, event_type, shard, sum(events), sum(messages), sum(latest)
    FROM email_event_rollup GROUP BY 1, 2, 3, 4, 5;
$$;

-- The trigger first: it locks email_events against inserts until this migration commits,
-- so the backfill below and the trigger never miss or double-count an event. Consumers
-- wait (nothing is lost) while the backfill runs: about a minute per few million events.
CREATE TRIGGER email_events_rollup_trg AFTER INSERT ON email_events
    FOR EACH ROW EXECUTE FUNCTION email_events_rollup();

SELECT rebuild_email_event_rollup();

-- migrate:down
DROP TRIGGER email_events_rollup_trg ON email_events;
DROP FUNCTION email_events_rollup();
DROP FUNCTION rebuild_email_event_rollup();
DROP FUNCTION record_email_event(text, text, text, text, uuid, integer, timestamptz);
DROP TABLE email_event_daily;
DROP TABLE email_event_rollup;
DROP TABLE email_message_types;
