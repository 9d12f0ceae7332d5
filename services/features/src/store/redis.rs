//! The Redis store. Key layout (every key starts with the configured prefix):
//!
//! - `st:<product>`: the product's state, its non-empty bucket counts per window and
//!   counter ([`ProductState`], a few bytes per bucket).
//! - `s:<product>`: the read view, the product's window sums in column order (`counters x
//!   windows`, counter-major) joined by commas, written with the state; deleted with it
//!   when no bucket is left.
//! - `due:<window>:<bucket>`: the expiry schedule, the set of products with a bucket
//!   `bucket - n` (which leaves the window at `bucket`).
//!
//! Only the bitmaps expire by time: states, views and schedules are removed by the expiry
//! pass, so an updater that was down for days catches up (bounded work per call) instead of
//! leaving sums wrong; Redis must therefore not evict keys (`maxmemory-policy noeviction`,
//! its default).
//! - `meta`: a hash with `closed:<window>`, `done:<window>` (expiry markers), `pos:<source>`
//!   (highest applied bus position per source), `as_of` (last complete expiry pass) and
//!   `version` (incremented by every write: the optimistic lock).
//! - `seen:<source>:<position / 65536>`: bitmaps of applied positions (exactly-once across
//!   redeliveries), 8 KiB each, expiring `dedup_ttl` after their last write.
//!
//! Every write (apply and expiry) is the same optimistic transaction: `WATCH meta`, read
//! what it needs (markers, positions, the states of the products it changes), compute the
//! new states here, then `MULTI` ... `EXEC` of plain `SET`s, `SADD`s and `BITFIELD`s that
//! also increments `meta.version`. Another writer's transaction in between changes `meta`,
//! so the `EXEC` is refused and the step is computed again from fresh data: all or nothing,
//! never on stale state, whatever the number of writers. Redis does plain key writes only
//! (two `SET`s per product touched, instead of a field update per window, counter and
//! bucket); a read is one `MGET` of the views (one round trip per batch). The counter and
//! window order is part of the layout: reordering them in the configuration needs a new
//! prefix.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::ConnectionManager;

use super::product_state::{ProductState, decode_sums, encode_sums};
use super::{ApplyReport, ExpireReport, StoreError, Sums, WindowStore};
use crate::layout::{Batch, Hit, Layout, aggregate};

/// A transaction takes whole messages (all the hits of a message: one product, or each
/// product of a list) until it holds this many products ...
const APPLY_CHUNK_PRODUCTS: usize = 3000;
/// ... or this many hits: bounds how long one transaction blocks Redis (a few ms).
const APPLY_CHUNK_HITS: usize = 10_000;
/// Positions per bitmap key of applied positions.
const SEEN_BITS: u64 = 65_536;
/// Transactions of one step refused because another writer changed `meta` meanwhile
/// before the step reports a failure (the updater retries it later).
const MAX_TRANSACTION_ATTEMPTS: usize = 16;

/// What `meta` holds, read at the start of a transaction.
struct Markers {
    closed: Vec<Option<i64>>,
    done: Vec<Option<i64>>,
    as_of: i64,
    /// Incremented by every write transaction.
    version: i64,
    /// Stored position per source name asked for.
    pos: Vec<u64>,
}

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisStoreOptions {
    /// Redis URL.
    pub url: String,
    /// Key prefix.
    pub prefix: String,
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
    /// `counters x windows`.
    columns: usize,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Refuses a server whose `maxmemory-policy` may evict keys: an evicted state, view,
/// schedule or dedup bitmap (they carry TTLs, so even the `volatile-*` policies take them)
/// silently breaks exact, exactly-once counts. A server that does not answer `CONFIG GET`
/// (managed Redis often disables it) is let through with a warning.
async fn check_eviction_policy(conn: &mut ConnectionManager) -> Result<(), StoreError> {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(conn).await;
    match reply {
        Ok(pair) => match pair.get(1).map(String::as_str) {
            Some("noeviction") => Ok(()),
            Some(policy) => Err(StoreError::Misconfigured(format!(
                "Redis maxmemory-policy is {policy:?}: it may evict the counters' state and dedup bitmaps; set it to noeviction"
            ))),
            None => Ok(()),
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read Redis maxmemory-policy (CONFIG GET refused); it must be noeviction");
            Ok(())
        }
    }
}

impl RedisStore {
    /// Connects (fails if Redis does not answer, or when its eviction policy is not
    /// `noeviction`).
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
        check_eviction_policy(&mut writer.clone()).await?;
        let columns = layout.counters.len() * layout.windows.len();
        Ok(RedisStore {
            columns,
            layout,
            opts,
            writer,
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.opts.prefix
    }

    /// Applies the batch in chunks of whole messages, in position order, aggregated per
    /// product within each chunk (one transaction each, so Redis is never blocked long:
    /// [`APPLY_CHUNK_PRODUCTS`], [`APPLY_CHUNK_HITS`]; a batch of single-product events under
    /// those bounds is one chunk, each product touched once). Each chunk carries the marks (source, position) of its own
    /// hits and stores the highest position it applied, so "above the stored position means
    /// new" stays true whenever a batch is cut short; the batch's positions of uncounted
    /// deliveries go with the last chunk. Positions of one batch interleave across its
    /// chunks: a later chunk compares its marks with the positions stored when the batch
    /// began, as long as no other writer committed in between (`meta.version` is the one
    /// its previous chunk left), so only marks at or below those are looked up in the
    /// bitmaps (normally none).
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
        // Messages of one product (most) go in chunks of whole products, so each product is
        // aggregated over them and touched once; messages that list several products go
        // after, in chunks of whole messages (see `message_chunks`).
        let mut hits: Vec<&Hit> = batch.hits.iter().collect();
        hits.sort_by_key(|h| (name_of(h.source), h.seq));
        let (mut singles, mut listed): (Vec<&Hit>, Vec<&Hit>) = (Vec::with_capacity(hits.len()), Vec::new());
        let mut k = 0;
        while k < hits.len() {
            let message = (name_of(hits[k].source), hits[k].seq);
            let end = k + hits[k..].iter().take_while(|h| (name_of(h.source), h.seq) == message).count();
            if end - k == 1 { singles.push(hits[k]) } else { listed.extend_from_slice(&hits[k..end]) }
            k = end;
        }
        singles.sort_unstable_by(|a, b| a.product.cmp(&b.product).then(a.seq.cmp(&b.seq)));
        let mut chunks = product_chunks(&singles);
        chunks.extend(message_chunks(&listed, &name_of).into_iter().filter(|c| !c.is_empty()));
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let mut report = ApplyReport::default();
        let mut own = None;
        let last = chunks.len() - 1;
        for (k, chunk) in chunks.into_iter().enumerate() {
            let mut max = vec![0u64; names.len()];
            for h in chunk {
                max[name_of(h.source)] = max[name_of(h.source)].max(h.seq);
            }
            if k == last {
                for &(si, q) in batch.positions.iter().chain(&batch.marks) {
                    max[name_of(si)] = max[name_of(si)].max(q);
                }
            }
            if batch.unmarked {
                // Running numbers of a rebuild, not bus positions: nothing to store.
                max.iter_mut().for_each(|m| *m = 0);
            }
            let extra: &[(usize, u64)] = if k == last { &batch.marks } else { &[] };
            let r = self.apply_chunk(batch.now_ms, &names, &max, chunk, extra, batch.unmarked, &name_of, &mut own).await?;
            report.applied += r.applied;
            report.duplicates += r.duplicates;
        }
        Ok(report)
    }

    /// One chunk as one optimistic transaction (see the module doc): reads the positions and
    /// markers, drops the hits whose (source, position) the bitmaps say were applied, reads
    /// the states of the chunk's products, adds the increments that are still inside their
    /// windows, then writes the marks, the new states and views, the schedule additions
    /// for new buckets and the positions at once.
    #[allow(clippy::too_many_arguments)]
    async fn apply_chunk(
        &self,
        now_ms: i64,
        names: &[&str],
        max: &[u64],
        chunk: &[&Hit],
        extra_marks: &[(usize, u64)],
        unmarked: bool,
        name_of: &(dyn Fn(usize) -> usize + Sync),
        own: &mut Option<(i64, Vec<u64>)>,
    ) -> Result<ApplyReport, StoreError> {
        let meta = self.key("meta");
        let mut conn = self.writer.clone();
        // Marks in (source, position) order: consecutive ones share a bitmap key.
        let hit_marks = chunk.iter().filter(|_| !unmarked).map(|h| (name_of(h.source), h.seq));
        let mut all_marks: Vec<(usize, u64)> = hit_marks.chain(extra_marks.iter().map(|&(s, q)| (name_of(s), q))).collect();
        all_marks.sort_unstable();
        all_marks.dedup();
        for _attempt in 0..MAX_TRANSACTION_ATTEMPTS {
            redis::cmd("WATCH").arg(&meta).exec_async(&mut conn).await.map_err(unavailable)?;
            let markers = self.markers(&mut conn, names).await?;
            // Positions above `threshold` were never applied (see `apply_now`).
            let threshold = match own {
                Some((version, t)) if *version == markers.version => t.clone(),
                _ => markers.pos.clone(),
            };
            let seen = self.applied_before(&mut conn, names, &threshold, &all_marks).await?;
            let hits: Vec<&Hit> = chunk.iter().copied().filter(|h| unmarked || !seen.contains(&(name_of(h.source), h.seq))).collect();
            let incs = aggregate(&self.layout, hits.iter().copied(), now_ms);
            let products: Vec<&str> = incs.iter().map(|(p, _)| *p).collect();
            let mut states = self.states(&mut conn, &products).await?;

            let mut tx = redis::pipe();
            tx.atomic();
            tx.cmd("HINCRBY").arg(&meta).arg("version").arg(1);
            for (w, win) in self.layout.windows.iter().enumerate() {
                if markers.closed[w].is_none() {
                    let cur = win.bucket(now_ms);
                    tx.cmd("HSET").arg(&meta).arg(format!("closed:{}", win.name)).arg(cur).arg(format!("done:{}", win.name)).arg(cur).ignore();
                }
            }
            let marks: Vec<(usize, u64)> = all_marks.iter().copied().filter(|m| !seen.contains(m)).collect();
            for group in marks.chunk_by(|a, b| a.0 == b.0 && a.1 / SEEN_BITS == b.1 / SEEN_BITS) {
                let key = self.seen_key(names[group[0].0], group[0].1);
                let mut bf = redis::cmd("BITFIELD");
                bf.arg(&key);
                for (_, q) in group {
                    bf.arg("SET").arg("u1").arg(q % SEEN_BITS).arg(1);
                }
                tx.add_command(bf).ignore();
                tx.cmd("EXPIRE").arg(&key).arg(self.opts.dedup_ttl_secs).ignore();
            }
            // A window takes an increment only while its bucket's due is above
            // max(closed, current bucket): the expiry never subtracts what was not added.
            let limit: Vec<i64> = self.layout.windows.iter().enumerate().map(|(w, win)| markers.closed[w].map_or(i64::MIN, |c| c).max(win.bucket(now_ms))).collect();
            let mut due: HashMap<(usize, i64), Vec<&str>> = HashMap::new();
            for ((product, list), state) in incs.iter().zip(states.iter_mut()) {
                state.remove_overdue(&self.layout, &markers.done);
                for i in list {
                    let d = self.layout.windows[i.window].due(i.bucket);
                    if d > limit[i.window] && state.add(i.window, i.counter, i.bucket, i.delta) {
                        due.entry((i.window, d)).or_default().push(*product);
                    }
                }
            }
            self.write_states(&mut tx, &products, &states);
            for ((w, d), members) in &due {
                let dk = self.due_key(*w, *d);
                for part in members.chunks(5000) {
                    tx.cmd("SADD").arg(&dk).arg(part).ignore();
                }
            }
            let moved: Vec<(String, u64)> = names
                .iter()
                .zip(max)
                .zip(&markers.pos)
                .filter(|((_, m), p)| *m > *p)
                .map(|((n, m), _)| (format!("pos:{n}"), *m))
                .collect();
            if !moved.is_empty() {
                tx.cmd("HSET").arg(&meta).arg(moved).ignore();
            }
            let done: Option<(i64,)> = tx.query_async(&mut conn).await.map_err(unavailable)?;
            if let Some((version,)) = done {
                *own = Some((version, threshold));
                return Ok(ApplyReport { applied: hits.len(), duplicates: chunk.len() - hits.len() });
            }
            tracing::debug!("meta changed under the transaction (another writer); computing the chunk again");
        }
        Err(StoreError::Unavailable(format!("{MAX_TRANSACTION_ATTEMPTS} transactions in a row were refused (other writers)")))
    }

    /// One bounded expiry step as one optimistic transaction: moves each window's `closed`
    /// marker to the current bucket, then takes up to `expire_budget` scheduled products of
    /// the due buckets not processed yet (in order), removes those buckets from their states
    /// and advances `done` past every schedule it emptied.
    async fn expire_now(&self, now_ms: i64) -> Result<ExpireReport, StoreError> {
        let meta = self.key("meta");
        let mut conn = self.writer.clone();
        for _attempt in 0..MAX_TRANSACTION_ATTEMPTS {
            redis::cmd("WATCH").arg(&meta).exec_async(&mut conn).await.map_err(unavailable)?;
            let markers = self.markers(&mut conn, &[]).await?;
            let mut budget = self.opts.expire_budget.max(1);
            let mut complete = true;
            // (window, due bucket, products taken, whether that empties the schedule)
            let mut taken: Vec<(usize, i64, Vec<String>, bool)> = Vec::new();
            let mut closed = Vec::with_capacity(self.layout.windows.len());
            let mut done = Vec::with_capacity(self.layout.windows.len());
            for (w, win) in self.layout.windows.iter().enumerate() {
                let cur = win.bucket(now_ms);
                let c = markers.closed[w].map_or(cur, |c| c.max(cur));
                let mut d = markers.done[w].unwrap_or(c);
                closed.push(c);
                while d < c {
                    if budget == 0 {
                        complete = false;
                        break;
                    }
                    let dk = self.due_key(w, d + 1);
                    let (card, members): (usize, Vec<String>) = redis::pipe()
                        .cmd("SCARD")
                        .arg(&dk)
                        .cmd("SRANDMEMBER")
                        .arg(&dk)
                        .arg(budget)
                        .query_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    let empties = members.len() >= card;
                    budget = budget.saturating_sub(members.len().max(1));
                    taken.push((w, d + 1, members, empties));
                    if !empties {
                        complete = false;
                        break;
                    }
                    d += 1;
                }
                done.push(d);
            }
            let mut products: Vec<&str> = taken.iter().flat_map(|(_, _, m, _)| m.iter().map(String::as_str)).collect();
            products.sort_unstable();
            products.dedup();
            let mut states = self.states(&mut conn, &products).await?;
            let mut expired = 0;
            for (w, d, members, _) in &taken {
                let bucket = d - self.layout.windows[*w].buckets;
                for m in members {
                    if let Ok(k) = products.binary_search(&m.as_str()) {
                        states[k].remove_bucket(*w, bucket);
                        expired += 1;
                    }
                }
            }
            let mut tx = redis::pipe();
            tx.atomic();
            tx.cmd("HINCRBY").arg(&meta).arg("version").arg(1).ignore();
            let mut fields: Vec<(String, i64)> = Vec::new();
            for (w, win) in self.layout.windows.iter().enumerate() {
                fields.push((format!("closed:{}", win.name), closed[w]));
                fields.push((format!("done:{}", win.name), done[w]));
            }
            if complete && now_ms > markers.as_of {
                fields.push(("as_of".to_string(), now_ms));
            }
            tx.cmd("HSET").arg(&meta).arg(fields).ignore();
            self.write_states(&mut tx, &products, &states);
            for (w, d, members, empties) in &taken {
                let dk = self.due_key(*w, *d);
                if *empties {
                    tx.cmd("DEL").arg(&dk).ignore();
                } else {
                    tx.cmd("SREM").arg(&dk).arg(members).ignore();
                }
            }
            let ok: Option<Vec<redis::Value>> = tx.query_async(&mut conn).await.map_err(unavailable)?;
            if ok.is_some() {
                return Ok(ExpireReport { expired, complete });
            }
            tracing::debug!("meta changed under the expiry step (another writer); computing it again");
        }
        Err(StoreError::Unavailable(format!("{MAX_TRANSACTION_ATTEMPTS} expiry steps in a row were refused (other writers)")))
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.opts.prefix)
    }

    fn due_key(&self, window: usize, due: i64) -> String {
        format!("{}due:{}:{due}", self.opts.prefix, self.layout.windows[window].name)
    }

    fn seen_key(&self, source: &str, position: u64) -> String {
        format!("{}seen:{source}:{}", self.opts.prefix, position / SEEN_BITS)
    }

    /// The markers and positions in `meta` (call under `WATCH meta`).
    async fn markers(&self, conn: &mut ConnectionManager, names: &[&str]) -> Result<Markers, StoreError> {
        let nw = self.layout.windows.len();
        let mut fields: Vec<String> = Vec::with_capacity(2 * nw + names.len() + 1);
        fields.extend(self.layout.windows.iter().map(|w| format!("closed:{}", w.name)));
        fields.extend(self.layout.windows.iter().map(|w| format!("done:{}", w.name)));
        fields.push("as_of".into());
        fields.push("version".into());
        fields.extend(names.iter().map(|n| format!("pos:{n}")));
        let v: Vec<Option<i64>> = redis::cmd("HMGET").arg(self.key("meta")).arg(&fields).query_async(conn).await.map_err(unavailable)?;
        let at = |k: usize| v.get(k).copied().flatten();
        Ok(Markers {
            closed: (0..nw).map(at).collect(),
            done: (nw..2 * nw).map(at).collect(),
            as_of: at(2 * nw).unwrap_or(0),
            version: at(2 * nw + 1).unwrap_or(0),
            pos: (0..names.len()).map(|k| at(2 * nw + 2 + k).unwrap_or(0).max(0) as u64).collect(),
        })
    }

    /// The stored states of these products, in order (one `MGET`). A state that cannot be
    /// read is counted (`features_state_unreadable_total`) and started afresh: refusing it
    /// would stop the updater for good.
    async fn states(&self, conn: &mut ConnectionManager, products: &[&str]) -> Result<Vec<ProductState>, StoreError> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let mut mget = redis::cmd("MGET");
        for p in products {
            mget.arg(format!("{}st:{p}", self.opts.prefix));
        }
        let raw: Vec<Option<Vec<u8>>> = mget.query_async(conn).await.map_err(unavailable)?;
        Ok(raw
            .iter()
            .zip(products)
            .map(|(v, p)| match v.as_deref().map(ProductState::decode) {
                None => ProductState::default(),
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    tracing::error!(product = %p, error = %e, "product state unreadable; starting it afresh");
                    metrics::counter!("features_state_unreadable_total").increment(1);
                    ProductState::default()
                }
            })
            .collect())
    }

    /// Queues the writes of these states and their views (deleted when no bucket is left):
    /// one `MSET` and one `UNLINK` for all of them.
    fn write_states(&self, tx: &mut redis::Pipeline, products: &[&str], states: &[ProductState]) {
        let (mut blob, mut view) = (Vec::new(), Vec::new());
        let mut mset = redis::cmd("MSET");
        let mut unlink = redis::cmd("UNLINK");
        let (mut sets, mut unlinks) = (0, 0);
        for (p, state) in products.iter().zip(states) {
            let (st, s) = (format!("{}st:{p}", self.opts.prefix), format!("{}s:{p}", self.opts.prefix));
            if state.is_empty() {
                unlink.arg(&st).arg(&s);
                unlinks += 1;
            } else {
                state.encode(&mut blob);
                encode_sums(&state.sums(&self.layout), &mut view);
                mset.arg(&st).arg(&blob).arg(&s).arg(&view);
                sets += 1;
            }
        }
        if sets > 0 {
            tx.add_command(mset).ignore();
        }
        if unlinks > 0 {
            tx.add_command(unlink).ignore();
        }
    }

    /// The marks (source, position) at or below their source's stored position that the
    /// bitmaps say were applied (one `BITFIELD_RO` per bitmap, in one pipeline).
    async fn applied_before(
        &self,
        conn: &mut ConnectionManager,
        names: &[&str],
        pos: &[u64],
        marks: &[(usize, u64)],
    ) -> Result<HashSet<(usize, u64)>, StoreError> {
        let old: Vec<(usize, u64)> = marks.iter().copied().filter(|(s, q)| *q <= pos.get(*s).copied().unwrap_or(0)).collect();
        let mut seen = HashSet::new();
        if old.is_empty() {
            return Ok(seen);
        }
        let mut pipe = redis::pipe();
        for group in old.chunk_by(|a, b| a.0 == b.0 && a.1 / SEEN_BITS == b.1 / SEEN_BITS) {
            let mut bf = redis::cmd("BITFIELD_RO");
            bf.arg(self.seen_key(names[group[0].0], group[0].1));
            for (_, q) in group {
                bf.arg("GET").arg("u1").arg(q % SEEN_BITS);
            }
            pipe.add_command(bf);
        }
        let bits: Vec<Vec<u8>> = pipe.query_async(conn).await.map_err(unavailable)?;
        for (m, b) in old.iter().zip(bits.iter().flatten()) {
            if *b == 1 {
                seen.insert(*m);
            }
        }
        Ok(seen)
    }

    async fn read_now(&self, products: &[String]) -> Result<Sums, StoreError> {
        // One MGET of the products' read views (`s:<product>`).
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(self.key("meta")).arg("as_of");
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
        let values = views.into_iter().map(|v| decode_sums(v.as_deref(), self.columns)).collect();
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
                .arg(self.key("meta"))
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

    /// Empty when neither `meta` (written by every apply) nor the rebuild record exists.
    fn is_empty(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut conn = self.writer.clone();
            let n: u64 = redis::cmd("EXISTS").arg(self.key("meta")).arg(self.key("handover")).query_async(&mut conn).await.map_err(unavailable)?;
            Ok(n == 0)
        })
    }

    /// Unlinks every key under the prefix (`SCAN` in steps of 1,000: Redis is never blocked
    /// long).
    fn clear(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.writer.clone();
            let pattern = format!("{}*", glob_escape(&self.opts.prefix));
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) =
                    redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query_async(&mut conn).await.map_err(unavailable)?;
                if !keys.is_empty() {
                    let _: u64 = redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await.map_err(unavailable)?;
                }
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        })
    }

    fn handover(&self) -> BoxFuture<'_, Result<Option<super::Handover>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.writer.clone();
            let raw: Option<String> = redis::cmd("GET").arg(self.key("handover")).query_async(&mut conn).await.map_err(unavailable)?;
            match raw {
                None => Ok(None),
                Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| StoreError::Misconfigured(format!("the rebuild record {} is unreadable: {e}", self.key("handover")))),
            }
        })
    }

    fn set_handover<'a>(&'a self, handover: &'a super::Handover) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.writer.clone();
            let text = serde_json::to_string(handover).map_err(|e| StoreError::Misconfigured(e.to_string()))?;
            let _: () = redis::cmd("SET").arg(self.key("handover")).arg(text).query_async(&mut conn).await.map_err(unavailable)?;
            Ok(())
        })
    }
}

/// A key prefix as a `SCAN MATCH` pattern that matches it literally.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 4);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Cuts the hits of single-product messages, sorted by product, into transactions of whole
/// products (all their hits of the batch, so each product is aggregated over the batch and
/// touched once), closing a chunk once it holds [`APPLY_CHUNK_PRODUCTS`] products or
/// [`APPLY_CHUNK_HITS`] hits.
fn product_chunks<'h>(hits: &'h [&'h Hit]) -> Vec<&'h [&'h Hit]> {
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
    if from < hits.len() {
        chunks.push(&hits[from..]);
    }
    chunks
}

/// Cuts hits sorted by (source, position) into transactions of whole messages: every hit of
/// one message (a list of products) is applied in the transaction that marks its position,
/// or none is, so a crash between two transactions of a batch never leaves a message half
/// counted and marked. A chunk closes at a message boundary once it holds
/// [`APPLY_CHUNK_PRODUCTS`] products or [`APPLY_CHUNK_HITS`] hits.
fn message_chunks<'h>(hits: &'h [&'h Hit], name_of: &dyn Fn(usize) -> usize) -> Vec<&'h [&'h Hit]> {
    let mut chunks: Vec<&[&Hit]> = Vec::new();
    let mut from = 0;
    let mut products: HashSet<&str> = HashSet::new();
    for k in 0..hits.len() {
        products.insert(hits[k].product.as_str());
        let message = |h: &Hit| (name_of(h.source), h.seq);
        let ends_message = hits.get(k + 1).is_none_or(|next| message(next) != message(hits[k]));
        if ends_message && (products.len() >= APPLY_CHUNK_PRODUCTS || k + 1 - from >= APPLY_CHUNK_HITS) {
            chunks.push(&hits[from..=k]);
            from = k + 1;
            products.clear();
        }
    }
    if from < hits.len() || chunks.is_empty() {
        chunks.push(&hits[from..]);
    }
    chunks
}

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn no_message_spans_two_transactions() {
        // 700 results pages of 30 products each (21,000 hits: three transactions or more).
        let hits: Vec<Hit> = (1..=700u64)
            .flat_map(|seq| (0..30u64).map(move |k| Hit { product: format!("p{}", (seq * 7 + k * 13) % 5000), counter: 0, t_ms: 1, source: 0, seq }))
            .collect();
        let refs: Vec<&Hit> = hits.iter().collect();
        let chunks = message_chunks(&refs, &|s| s);
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), hits.len());
        for pair in chunks.windows(2) {
            let (last, first) = (pair[0][pair[0].len() - 1].seq, pair[1][0].seq);
            assert!(last < first, "message {last} / {first} split across transactions");
        }
        for c in &chunks {
            assert!(c.len() <= APPLY_CHUNK_HITS + 29, "bounded: {}", c.len());
        }
    }
}
