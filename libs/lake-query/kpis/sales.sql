-- kpi: sales
-- title: Sales and gross merchandise value (cents)
-- tables: product_sold
-- Money in integer cents: exact, whatever the order in which the engine adds.
SELECT count(*) AS sales,
       coalesce(sum(CAST(round(price * 100) AS BIGINT)), 0) AS gmv_cents
FROM product_sold
WHERE date = DATE '{date}'
