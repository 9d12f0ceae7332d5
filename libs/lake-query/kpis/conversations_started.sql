-- kpi: conversations_started
-- title: Conversations started
-- tables: conversation_started
SELECT count(*) AS conversations
FROM conversation_started
WHERE date = DATE '{date}'
