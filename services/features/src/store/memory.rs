//! The in-memory store (embedded mode): the same model as the Redis store (sums, bucket
//! counts, due schedules, closed/done markers, positions with a set of applied positions)
//! behind one mutex. Bounded: at most `max_products` products (events of further products are
//! not counted, `features_memory_refused_total`, until old ones leave the windows).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{ApplyReport, ExpireReport, StoreError, Sums, WindowStore};
use crate::layout::{Batch, Layout, aggregate};

/// Applied positions remembered per source below the highest one.
const SEEN_SPAN: u64 = 1 << 22;

#[derive(Default)]
struct Product {
    sums: Vec<i64>,
    /// (window, counter, bucket) -> count.
    buckets: HashMap<(usize, usize, i64), i64>,
}

#[derive(Default)]
struct Source {
    pos: u64,
    seen: BTreeSet<u64>,
}

struct State {
    products: HashMap<String, Product>,
    /// (window, due bucket) -> products.
    due: BTreeMap<(usize, i64), HashSet<String>>,
    closed: Vec<Option<i64>>,
    done: Vec<Option<i64>>,
    sources: HashMap<String, Source>,
    as_of_ms: i64,
    handover: Option<super::Handover>,
}

impl State {
    fn empty(windows: usize) -> State {
        State {
            products: HashMap::new(),
            due: BTreeMap::new(),
            closed: vec![None; windows],
            done: vec![None; windows],
            sources: HashMap::new(),
            as_of_ms: 0,
            handover: None,
        }
    }
}

/// Windows in memory.
pub struct MemoryStore {
    layout: Layout,
    max_products: usize,
    budget: usize,
    state: Mutex<State>,
}

impl MemoryStore {
    /// A store for `layout` holding at most `max_products` products; `budget` bounds the
    /// expiry work per call.
    pub fn new(layout: Layout, max_products: usize, budget: usize) -> MemoryStore {
        let nw = layout.windows.len();
        MemoryStore {
            layout,
            max_products,
            budget: budget.max(1),
            state: Mutex::new(State::empty(nw)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Products held (for tests and metrics).
    pub fn products(&self) -> usize {
        self.lock().products.len()
    }

    fn apply_now(&self, batch: &Batch) -> ApplyReport {
        let mut st = self.lock();
        let st = &mut *st;
        // Markers start at the current bucket the first time a window is touched.
        for (wi, w) in self.layout.windows.iter().enumerate() {
            let cur = w.bucket(batch.now_ms);
            st.closed[wi].get_or_insert(cur);
            st.done[wi].get_or_insert(cur);
        }
        let name = |i: usize| batch.sources.get(i).map(String::as_str).unwrap_or("");
        let dup = |st: &State, i: usize, seq: u64| !batch.unmarked && st.sources.get(name(i)).is_some_and(|s| seq <= s.pos && s.seen.contains(&seq));
        let fresh: Vec<_> = batch.hits.iter().filter(|h| !dup(st, h.source, h.seq)).collect();
        let duplicates = batch.hits.len() - fresh.len();
        let incs = aggregate(&self.layout, fresh.iter().copied(), batch.now_ms);
        let cols = self.layout.counters.len() * self.layout.windows.len();
        let mut refused = 0u64;
        for (product, list) in incs {
            if !st.products.contains_key(product) && st.products.len() >= self.max_products {
                // Bounded memory: a new product beyond the bound is not counted (until old
                // ones leave the windows); refusing the whole batch would stall the updater.
                refused += list.iter().map(|i| i.delta as u64).sum::<u64>();
                continue;
            }
            for inc in list {
                let w = &self.layout.windows[inc.window];
                let limit = st.closed[inc.window].unwrap_or(i64::MIN).max(w.bucket(batch.now_ms));
                if w.due(inc.bucket) <= limit {
                    continue;
                }
                let p = st.products.entry(product.to_owned()).or_default();
                if p.sums.is_empty() {
                    p.sums = vec![0; cols];
                }
                p.sums[self.layout.column(inc.counter, inc.window)] += inc.delta;
                *p.buckets.entry((inc.window, inc.counter, inc.bucket)).or_default() += inc.delta;
                st.due.entry((inc.window, w.due(inc.bucket))).or_default().insert(product.to_owned());
            }
        }
        if refused > 0 {
            metrics::counter!("features_memory_refused_total").increment(refused);
            tracing::warn!(max_products = self.max_products, refused, "in-memory windows full: events of new products not counted");
        }
        if !batch.unmarked {
            for (i, seq) in fresh.iter().map(|h| (h.source, h.seq)).chain(batch.marks.iter().copied()) {
                let s = st.sources.entry(name(i).to_owned()).or_default();
                s.seen.insert(seq);
            }
        }
        for &(i, seq) in batch.positions.iter().chain(&batch.marks) {
            let s = st.sources.entry(name(i).to_owned()).or_default();
            s.pos = s.pos.max(seq);
            let floor = s.pos.saturating_sub(SEEN_SPAN);
            while s.seen.first().is_some_and(|&f| f < floor) {
                s.seen.pop_first();
            }
        }
        ApplyReport { applied: fresh.len(), duplicates }
    }

    fn expire_now(&self, now_ms: i64) -> ExpireReport {
        let mut st = self.lock();
        let st = &mut *st;
        let mut budget = self.budget;
        let mut expired = 0;
        let mut complete = true;
        for (wi, w) in self.layout.windows.iter().enumerate() {
            let cur = w.bucket(now_ms);
            let closed = st.closed[wi].map_or(cur, |c| c.max(cur));
            st.closed[wi] = Some(closed);
            let mut done = st.done[wi].unwrap_or(closed);
            while done < closed {
                if budget == 0 {
                    complete = false;
                    break;
                }
                let d = done + 1;
                let bucket = d - w.buckets;
                let mut emptied = true;
                if let Some(set) = st.due.get_mut(&(wi, d)) {
                    let take: Vec<String> = set.iter().take(budget).cloned().collect();
                    for p in &take {
                        set.remove(p);
                    }
                    emptied = set.is_empty();
                    budget -= take.len().min(budget);
                    for p in take {
                        expired += 1;
                        let remove = if let Some(prod) = st.products.get_mut(&p) {
                            for c in 0..self.layout.counters.len() {
                                if let Some(v) = prod.buckets.remove(&(wi, c, bucket)) {
                                    prod.sums[self.layout.column(c, wi)] -= v;
                                }
                            }
                            prod.buckets.is_empty()
                        } else {
                            false
                        };
                        if remove {
                            st.products.remove(&p);
                        }
                    }
                    if emptied {
                        st.due.remove(&(wi, d));
                    }
                } else {
                    budget -= 1;
                }
                if emptied {
                    done = d;
                } else {
                    complete = false;
                    break;
                }
            }
            st.done[wi] = Some(done);
        }
        if complete {
            st.as_of_ms = st.as_of_ms.max(now_ms);
        }
        ExpireReport { expired, complete }
    }
}

impl WindowStore for MemoryStore {
    fn apply<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<ApplyReport, StoreError>> {
        Box::pin(async move { Ok(self.apply_now(batch)) })
    }

    fn expire(&self, now_ms: i64) -> BoxFuture<'_, Result<ExpireReport, StoreError>> {
        Box::pin(async move { Ok(self.expire_now(now_ms)) })
    }

    fn read<'a>(&'a self, products: &'a [String]) -> BoxFuture<'a, Result<Sums, StoreError>> {
        Box::pin(async move {
            let st = self.lock();
            let cols = self.layout.counters.len() * self.layout.windows.len();
            let values = products
                .iter()
                .map(|p| st.products.get(p).map_or_else(|| vec![0; cols], |x| x.sums.clone()))
                .collect();
            Ok(Sums { as_of_ms: st.as_of_ms, values })
        })
    }

    fn position<'a>(&'a self, source: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move { Ok(self.lock().sources.get(source).map_or(0, |s| s.pos)) })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn is_empty(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let st = self.lock();
            Ok(st.products.is_empty() && st.sources.is_empty() && st.handover.is_none() && st.closed.iter().all(Option::is_none))
        })
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut st = self.lock();
            let nw = self.layout.windows.len();
            *st = State::empty(nw);
            Ok(())
        })
    }

    fn handover(&self) -> BoxFuture<'_, Result<Option<super::Handover>, StoreError>> {
        Box::pin(async move { Ok(self.lock().handover.clone()) })
    }

    fn set_handover<'a>(&'a self, handover: &'a super::Handover) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.lock().handover = Some(handover.clone());
            Ok(())
        })
    }
}
