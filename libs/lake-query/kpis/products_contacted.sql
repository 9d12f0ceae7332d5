-- kpi: products_contacted
-- title: Products contacted (distinct)
-- merge: distinct
-- tables: product_contacted
SELECT DISTINCT product_id AS value
FROM product_contacted
WHERE date = DATE '{date}' AND product_id IS NOT NULL
