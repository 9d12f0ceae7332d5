-- kpi: products_contacted
-- title: Products contacted (distinct)
-- tables: product_contacted
SELECT count(DISTINCT product_id) AS value
FROM product_contacted
WHERE date = DATE '{date}' AND product_id IS NOT NULL
