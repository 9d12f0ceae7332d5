-- kpi: median_order_value
-- title: Median order value (cents)
-- tables: product_sold
-- The exact median of the day's sale prices (the mean of the two middle ones for an even
-- count). No sum or union of per-shard results gives it: the engine needs every price.
SELECT median(CAST(round(price * 100) AS DOUBLE)) AS median_cents
FROM product_sold
WHERE date = DATE '{date}'
