-- kpi: new_users
-- title: New users (distinct users created)
-- tables: user_created
SELECT count(DISTINCT user_id) AS value
FROM user_created
WHERE date = DATE '{date}' AND user_id IS NOT NULL
