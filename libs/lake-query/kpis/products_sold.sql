-- kpi: products_sold
-- title: Products sold (distinct)
-- merge: distinct
-- tables: product_sold
SELECT DISTINCT product_id AS value
FROM product_sold
WHERE date = DATE '{date}' AND product_id IS NOT NULL
