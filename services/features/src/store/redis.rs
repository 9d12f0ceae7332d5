//! The Redis store. Key layout (every key starts with the configured prefix):
//!
//! - `p:<product>`: a hash per product: window sums `<counter>:<window>` and bucket counts
//!   `<counter>:<window>:<bucket>`; expires `longest window + margin` after its last new
//!   bucket; emptied fields are deleted, an empty hash disappears.
//! - `s:<product>`: the read view: the product's window sums in column order joined by
//!   commas, rewritten by every script that changes them (deleted when all are zero), so a
//!   batch read is one `MGET`.
//! - `due:<window>:<bucket>`: the set of products whose bucket `bucket - n` leaves the window
//!   at `bucket` (the expiry schedule); expires `window + margin` after its last addition.
//! - `meta`: a hash with `closed:<window>`, `done:<window>` (expiry markers), `pos:<source>`
//!   (highest applied bus position per source) and `as_of` (last complete expiry pass).
//! - `seen:<source>:<position / 65536>`: bitmaps of applied positions (exactly-once across
//!   redeliveries), 8 KiB each, expiring `dedup_ttl` after their last write.
//!
//! Writes are two Lua scripts (`apply.lua`, `expire.lua`), each atomic, so a crash at any
//! point leaves either all or none of a batch; a read is one `MGET` (one round trip per
//! batch).

use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::Script;

use super::{ApplyReport, ExpireReport, StoreError, Sums, WindowStore};
use std::collections::HashSet;

use crate::layout::{Batch, Hit, Layout, aggregate};

/// A script call takes whole products (all their hits of the batch, so each product is
/// aggregated over the whole batch and touched once) until it holds this many products ...
const APPLY_CHUNK_PRODUCTS: usize = 3000;
/// ... or this many hits: bounds how long one call blocks Redis (tens of ms).
const APPLY_CHUNK_HITS: usize = 10_000;

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisStoreOptions {
    /// Redis URL.
    pub url: String,
    /// Key prefix.
    pub prefix: String,
    /// Retention margin beyond the windows, seconds.
    pub retention_margin_secs: u64,
    /// Dedup memory, seconds.
    pub dedup_ttl_secs: u64,
    /// Expiry work per call.
    pub expire_budget: usize,
    /// Response timeout.
    pub timeout: Duration,
    /// Connections used for reads (reads are spread over them).
    pub read_connections: usize,
}

/// Windows in Redis.
pub struct RedisStore {
    layout: Layout,
    opts: RedisStoreOptions,
    writer: ConnectionManager,
    readers: Vec<ConnectionManager>,
    next_reader: std::sync::atomic::AtomicUsize,
    apply_script: Script,
    expire_script: Script,
    /// `counters x windows` sum field names, column order.
    sum_fields: Vec<String>,
    key_ttl: u64,
    due_ttl: u64,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Connects (fails if Redis does not answer).
    pub async fn connect(layout: Layout, opts: RedisStoreOptions) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(opts.url.as_str()).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(opts.timeout))
            .set_connection_timeout(Some(opts.timeout))
            .set_number_of_retries(2);
        let writer = client.get_connection_manager_with_config(config.clone()).await.map_err(unavailable)?;
        let mut readers = Vec::new();
        for _ in 0..opts.read_connections.max(1) {
            readers.push(client.get_connection_manager_with_config(config.clone()).await.map_err(unavailable)?);
        }
        let sum_fields = layout
            .counters
            .iter()
            .flat_map(|c| layout.windows.iter().map(move |w| format!("{c}:{}", w.name)))
            .collect();
        let longest_secs = (layout.longest_ms() / 1000).max(1) as u64;
        let max_bucket_secs = layout.windows.iter().map(|w| w.bucket_ms / 1000).max().unwrap_or(0) as u64;
        let key_ttl = longest_secs + max_bucket_secs + opts.retention_margin_secs;
        Ok(RedisStore {
            sum_fields,
            key_ttl,
            due_ttl: key_ttl,
            layout,
            opts,
            writer,
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            apply_script: Script::new(include_str!("apply.lua")),
            expire_script: Script::new(include_str!("expire.lua")),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.opts.prefix
    }

    fn windows_args(&self, inv: &mut redis::ScriptInvocation<'_>, now_ms: i64) {
        inv.arg(self.layout.counters.len());
        for c in &self.layout.counters {
            inv.arg(c);
        }
        inv.arg(self.layout.windows.len());
        for w in &self.layout.windows {
            inv.arg(&w.name).arg(w.buckets).arg(w.bucket(now_ms));
        }
    }

    /// Applies the batch aggregated per product over the whole batch (a product is touched
    /// once per batch, however many of its hits it holds), in chunks of whole products (one
    /// script call each, so Redis is never blocked long: [`APPLY_CHUNK_PRODUCTS`],
    /// [`APPLY_CHUNK_HITS`]). Each chunk carries the marks (source, position) of its own
    /// hits and stores the highest position it applied, so "above the stored position means
    /// new" stays true between chunks (a later chunk's positions at or below it are looked
    /// up in the bitmap, which is the truth); the batch's positions of uncounted deliveries
    /// go with the last chunk.
    async fn apply_now(&self, batch: &Batch) -> Result<ApplyReport, StoreError> {
        // Sources sharing a name share positions (e.g. consumers of one JetStream stream).
        let mut names: Vec<&str> = Vec::new();
        let mut index_of = Vec::with_capacity(batch.sources.len());
        for s in &batch.sources {
            let i = names.iter().position(|n| *n == s.as_str()).unwrap_or_else(|| {
                names.push(s);
                names.len() - 1
            });
            index_of.push(i);
        }
        let name_of = |source: usize| index_of.get(source).copied().unwrap_or(0);
        let mut hits: Vec<&Hit> = batch.hits.iter().collect();
        hits.sort_unstable_by(|a, b| a.product.cmp(&b.product).then(a.seq.cmp(&b.seq)));
        let mut chunks: Vec<&[&Hit]> = Vec::new();
        let (mut from, mut products) = (0, 0);
        for k in 0..hits.len() {
            let ends_product = hits.get(k + 1).is_none_or(|next| next.product != hits[k].product);
            if ends_product {
                products += 1;
                if products >= APPLY_CHUNK_PRODUCTS || k + 1 - from >= APPLY_CHUNK_HITS {
                    chunks.push(&hits[from..=k]);
                    (from, products) = (k + 1, 0);
                }
            }
        }
        if from < hits.len() || chunks.is_empty() {
            chunks.push(&hits[from..]);
        }
        let mut report = ApplyReport::default();
        let last = chunks.len() - 1;
        for (k, chunk) in chunks.into_iter().enumerate() {
            let mut max = vec![0u64; names.len()];
            for h in chunk {
                max[name_of(h.source)] = max[name_of(h.source)].max(h.seq);
            }
            if k == last {
                for &(si, q) in &batch.positions {
                    max[name_of(si)] = max[name_of(si)].max(q);
                }
            }
            let r = self.apply_chunk(batch.now_ms, &names, &max, chunk, &name_of).await?;
            report.applied += r.applied;
            report.duplicates += r.duplicates;
        }
        Ok(report)
    }

    async fn apply_chunk(
        &self,
        now_ms: i64,
        names: &[&str],
        max: &[u64],
        chunk: &[&Hit],
        name_of: &(dyn Fn(usize) -> usize + Sync),
    ) -> Result<ApplyReport, StoreError> {
        let mut skip: HashSet<(usize, u64)> = HashSet::new();
        loop {
            let hits: Vec<&Hit> = chunk.iter().copied().filter(|h| !skip.contains(&(name_of(h.source), h.seq))).collect();
            let incs = aggregate(&self.layout, hits.iter().copied(), now_ms);
            let mut inv = self.apply_script.prepare_invoke();
            inv.arg(&self.opts.prefix).arg(self.key_ttl).arg(self.due_ttl).arg(self.opts.dedup_ttl_secs);
            self.windows_args(&mut inv, now_ms);
            inv.arg(names.len());
            for (n, m) in names.iter().zip(max) {
                inv.arg(*n).arg(*m);
            }
            // Marks in (source, position) order: consecutive ones share a bitmap key.
            let mut marks: Vec<(usize, u64)> = hits.iter().map(|h| (name_of(h.source), h.seq)).collect();
            marks.sort_unstable();
            inv.arg(marks.len());
            for (s, q) in &marks {
                inv.arg(*s).arg(*q);
            }
            inv.arg(incs.len());
            for (product, list) in &incs {
                inv.arg(product).arg(list.len());
                for i in list {
                    inv.arg(i.window).arg(i.counter).arg(i.bucket).arg(i.delta);
                }
            }
            let mut conn = self.writer.clone();
            let dups: Vec<u64> = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
            if dups.is_empty() {
                return Ok(ApplyReport { applied: hits.len(), duplicates: chunk.len() - hits.len() });
            }
            for pair in dups.chunks(2) {
                if let [s, q] = pair {
                    skip.insert((*s as usize, *q));
                }
            }
        }
    }

    async fn expire_now(&self, now_ms: i64) -> Result<ExpireReport, StoreError> {
        let mut inv = self.expire_script.prepare_invoke();
        inv.arg(&self.opts.prefix).arg(self.opts.expire_budget).arg(now_ms);
        self.windows_args(&mut inv, now_ms);
        let mut conn = self.writer.clone();
        let (expired, complete): (usize, i64) = inv.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(ExpireReport { expired, complete: complete == 1 })
    }

    async fn read_now(&self, products: &[String]) -> Result<Sums, StoreError> {
        // One MGET of the products' read views (`s:<product>`, the sums joined by commas).
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(format!("{}meta", self.opts.prefix)).arg("as_of");
        let mut mget = redis::cmd("MGET");
        let mut key = String::with_capacity(self.opts.prefix.len() + 40);
        for p in products {
            key.clear();
            key.push_str(&self.opts.prefix);
            key.push_str("s:");
            key.push_str(p);
            mget.arg(&key);
        }
        pipe.add_command(mget);
        let n = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.readers.len();
        let mut conn = self.readers[n].clone();
        let (as_of, views): (Option<i64>, Vec<Option<Vec<u8>>>) = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let cols = self.sum_fields.len();
        let values = views
            .into_iter()
            .map(|v| {
                let mut out = vec![0i64; cols];
                if let Some(bytes) = v {
                    for (slot, part) in out.iter_mut().zip(bytes.split(|&b| b == b',')) {
                        *slot = std::str::from_utf8(part).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                    }
                }
                out
            })
            .collect();
        Ok(Sums { as_of_ms: as_of.unwrap_or(0), values })
    }
}

impl WindowStore for RedisStore {
    fn apply<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<ApplyReport, StoreError>> {
        Box::pin(self.apply_now(batch))
    }

    fn expire(&self, now_ms: i64) -> BoxFuture<'_, Result<ExpireReport, StoreError>> {
        Box::pin(self.expire_now(now_ms))
    }

    fn read<'a>(&'a self, products: &'a [String]) -> BoxFuture<'a, Result<Sums, StoreError>> {
        Box::pin(self.read_now(products))
    }

    fn position<'a>(&'a self, source: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut conn = self.writer.clone();
            let v: Option<u64> = redis::cmd("HGET")
                .arg(format!("{}meta", self.opts.prefix))
                .arg(format!("pos:{source}"))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(v.unwrap_or(0))
        })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.writer.clone();
            let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(unavailable)?;
            Ok(())
        })
    }
}
