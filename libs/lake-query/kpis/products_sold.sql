-- kpi: products_sold
-- title: Products sold (distinct)
-- tables: product_sold
SELECT count(DISTINCT product_id) AS value
FROM product_sold
WHERE date = DATE '{date}' AND product_id IS NOT NULL
