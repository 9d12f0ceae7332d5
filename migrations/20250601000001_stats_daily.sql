-- Per-user daily statistics (services/stats): counts per (user, metric, UTC day), partitioned
-- by day (one partition per day, created ahead by the service and by `eventctl stats
-- backfill` through stats_ensure_partition; the service drops partitions past the
-- retention), and the bus position each aggregator (consumer) has applied.

CREATE TABLE IF NOT EXISTS daily_stats (
    user_id text   NOT NULL,
    day     date   NOT NULL,
    metric  text   NOT NULL,
    count   bigint NOT NULL,
    PRIMARY KEY (user_id, metric, day)
) PARTITION BY RANGE (day);

-- The last bus sequence whose counts are in daily_stats, per aggregator (one per shard).
-- Updated in the same transaction as the counts it covers.
CREATE TABLE IF NOT EXISTS consumer_positions (
    consumer   text        PRIMARY KEY,
    seq        bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Creates the partition of one day (daily_stats_YYYYMMDD) if missing; safe to race.
CREATE OR REPLACE FUNCTION stats_ensure_partition(d date) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF daily_stats FOR VALUES FROM (%L) TO (%L)',
                   'daily_stats_' || to_char(d, 'YYYYMMDD'), d, d + 1);
EXCEPTION WHEN duplicate_table OR unique_violation THEN
    NULL; -- created concurrently by another process
END
$$;
