//! A bounded window of recently accepted message ids, the in-process stand-in for
//! JetStream's duplicate window: an id is remembered for `window` or until `max_ids` newer
//! ids have pushed it out, whichever comes first.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct DedupWindow {
    window: Duration,
    max_ids: usize,
    seen: HashSet<Arc<str>>,
    order: VecDeque<(Instant, Arc<str>)>,
}

impl DedupWindow {
    pub(crate) fn new(window: Duration, max_ids: usize) -> Self {
        Self {
            window,
            max_ids,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// True when `id` was accepted within the window.
    pub(crate) fn contains(&mut self, id: &str, now: Instant) -> bool {
        self.evict(now);
        self.seen.contains(id)
    }

    /// Remembers `id` as accepted at `now`.
    pub(crate) fn insert(&mut self, id: &str, now: Instant) {
        if self.max_ids == 0 || self.window.is_zero() {
            return;
        }
        self.evict(now);
        if self.seen.contains(id) {
            return;
        }
        let id: Arc<str> = Arc::from(id);
        self.seen.insert(id.clone());
        self.order.push_back((now, id));
        while self.order.len() > self.max_ids {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    fn evict(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_bound() {
        let t0 = Instant::now();
        let mut d = DedupWindow::new(Duration::from_secs(10), 3);
        d.insert("a", t0);
        assert!(d.contains("a", t0 + Duration::from_secs(9)));
        assert!(!d.contains("a", t0 + Duration::from_secs(10)));
        d.insert("b", t0);
        d.insert("c", t0);
        d.insert("d", t0);
        d.insert("e", t0);
        assert_eq!(d.len(), 3);
        assert!(!d.contains("b", t0));
        assert!(d.contains("e", t0));
    }
}
