-- kpi: products_listed
-- title: Products listed (distinct)
-- tables: product_listed
SELECT count(DISTINCT product_id) AS value
FROM product_listed
WHERE date = DATE '{date}' AND product_id IS NOT NULL
