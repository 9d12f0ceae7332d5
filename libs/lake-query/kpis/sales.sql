-- kpi: sales
-- title: Sales and gross merchandise value (cents)
-- merge: sum
-- tables: product_sold
-- Money is summed in integer cents so that shards add up exactly.
SELECT count(*) AS sales,
       coalesce(sum(CAST(round(price * 100) AS BIGINT)), 0) AS gmv_cents
FROM product_sold
WHERE date = DATE '{date}'
