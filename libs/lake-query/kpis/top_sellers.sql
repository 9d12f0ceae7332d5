-- kpi: top_sellers
-- title: Top 10 sellers by GMV (cents)
-- tables: product_sold
-- The 10 sellers (owners of the products sold) with the largest GMV; equal GMVs are ordered
-- by seller id, so the list is the same on every run and engine. Not mergeable from shards:
-- a seller's sales fall in every shard.
SELECT owner_id AS seller_id,
       sum(CAST(round(price * 100) AS BIGINT)) AS gmv_cents,
       count(*) AS sales
FROM product_sold
WHERE date = DATE '{date}' AND owner_id IS NOT NULL
GROUP BY owner_id
ORDER BY gmv_cents DESC, seller_id ASC
LIMIT 10
