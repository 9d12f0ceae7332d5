-- kpi: daily_active_users
-- title: Daily active users
-- tables: lake.events
-- Distinct users with at least one event of the day, across every type that has a user_id.
-- This is the expensive KPI: it reads the user_id column of every type's partitions of the day.
SELECT count(DISTINCT user_id) AS value
FROM lake.events
WHERE date = DATE '{date}' AND user_id IS NOT NULL
