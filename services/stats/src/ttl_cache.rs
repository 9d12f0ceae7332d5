//! A bounded in-process cache whose entries expire, for the cached request path (verified
//! tokens, users' versions, finished responses): `quick_cache` (sharded locks, S3-FIFO
//! eviction, a lookup of tens of nanoseconds) with each entry's deadline checked when it is
//! read. It replaced moka on that path, where moka's bookkeeping (access-order deques, pending
//! maintenance run inline, a timer wheel for per-entry expiry) took about 10 % of the server's
//! CPU for three lookups a request (perf, `scripts/bench-stats.sh` with `BENCH_PERF`).
//!
//! Expired entries are dropped when read and otherwise age out through eviction: memory is
//! bounded by the capacity either way.

use std::hash::Hash;
use std::time::{Duration, Instant};

use quick_cache::Equivalent;

/// The cache: at most about `capacity` entries, each valid until its deadline.
pub struct TtlCache<K, V> {
    inner: quick_cache::sync::Cache<K, (Instant, V)>,
    ttl: Duration,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache of about `capacity` entries living `ttl` each (unless inserted with their own).
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        TtlCache { inner: quick_cache::sync::Cache::new(usize::try_from(capacity).unwrap_or(usize::MAX).max(1)), ttl }
    }

    /// The value of `key`, if present and not expired.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let (deadline, value) = self.inner.get(key)?;
        if Instant::now() >= deadline {
            self.inner.remove(key);
            return None;
        }
        Some(value)
    }

    /// Keeps `value` under `key` for the cache's time to live.
    pub fn insert(&self, key: K, value: V) {
        self.insert_for(key, value, self.ttl);
    }

    /// Keeps `value` under `key` for `ttl` at most (never longer than the cache's).
    pub fn insert_for(&self, key: K, value: V, ttl: Duration) {
        self.inner.insert(key, (Instant::now() + ttl.min(self.ttl), value));
    }

    /// The value of `key`, or `make()` kept under it. Two callers missing at once may both
    /// make a value; the last one kept wins (callers must tolerate that, as versions do: a
    /// value that lost only makes what was stored under it a miss).
    pub fn get_or_insert_with<Q>(&self, key: &Q, make: impl FnOnce() -> V) -> V
    where
        Q: Hash + Equivalent<K> + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(v) = self.get(key) {
            return v;
        }
        let v = make();
        self.insert(key.to_owned(), v.clone());
        v
    }

    /// Forgets `key`.
    pub fn remove<Q>(&self, key: &Q)
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.inner.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_capacity_bounds_them() {
        let c: TtlCache<String, u64> = TtlCache::new(100, Duration::from_millis(50));
        c.insert("a".into(), 1);
        c.insert_for("b".into(), 2, Duration::from_millis(1));
        assert_eq!(c.get("a"), Some(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get("b"), None, "b's own, shorter time to live");
        assert_eq!(c.get_or_insert_with("c", || 3), 3);
        assert_eq!(c.get_or_insert_with("c", || 4), 3);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get("a"), None);
        assert_eq!(c.get_or_insert_with("c", || 5), 5, "an expired entry is made again");
        for i in 0..10_000 {
            c.insert(format!("k{i}"), i);
        }
        let kept = (0..10_000).filter(|i| c.get(&format!("k{i}")).is_some()).count();
        assert!(kept <= 200, "bounded by the capacity: {kept}");
        c.remove("c");
        assert_eq!(c.get("c"), None);
    }
}
