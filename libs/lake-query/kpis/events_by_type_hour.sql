-- kpi: events_by_type_hour
-- title: Events per type and hour
-- tables: lake.events
-- Reads no column at all: row counts come from the Parquet footers.
SELECT type, hour, count(*) AS events
FROM lake.events
WHERE date = DATE '{date}'
GROUP BY type, hour
ORDER BY type, hour
