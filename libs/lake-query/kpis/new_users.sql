-- kpi: new_users
-- title: New users (distinct users created)
-- merge: distinct
-- tables: user_created
SELECT DISTINCT user_id AS value
FROM user_created
WHERE date = DATE '{date}' AND user_id IS NOT NULL
