-- Distinct metrics (services/stats): the distinct values counted per (user, metric, UTC day),
-- e.g. the products of a seller that were contacted that day. The day's count in daily_stats
-- is the number of these rows (kept in the same transaction); an N-day total is
-- count(DISTINCT value) over the N days. Partitioned by day like daily_stats, with the same
-- partition function and retention.

CREATE TABLE IF NOT EXISTS daily_distinct (
    user_id text NOT NULL,
    metric  text NOT NULL,
    day     date NOT NULL,
    value   text NOT NULL,
    PRIMARY KEY (user_id, metric, day, value)
) PARTITION BY RANGE (day);

-- Creates the partitions of one day (daily_stats_YYYYMMDD, daily_distinct_YYYYMMDD) if
-- missing; safe to race.
CREATE OR REPLACE FUNCTION stats_ensure_partition(d date) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF daily_stats FOR VALUES FROM (%L) TO (%L)',
                       'daily_stats_' || to_char(d, 'YYYYMMDD'), d, d + 1);
    EXCEPTION WHEN duplicate_table OR unique_violation THEN
        NULL; -- created concurrently by another process
    END;
    BEGIN
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF daily_distinct FOR VALUES FROM (%L) TO (%L)',
                       'daily_distinct_' || to_char(d, 'YYYYMMDD'), d, d + 1);
    EXCEPTION WHEN duplicate_table OR unique_violation THEN
        NULL;
    END;
END
$$;

-- Every day that has a daily_stats partition gets its daily_distinct partition.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'daily_stats'::regclass LOOP
        IF r.name ~ '^daily_stats_[0-9]{8}$' THEN
            PERFORM stats_ensure_partition(to_date(substr(r.name, 13), 'YYYYMMDD'));
        END IF;
    END LOOP;
END
$$;
