//! Single flight: concurrent calls with one key share one computation, run as its own task so
//! a caller that goes away does not cancel it for the others.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Flight<V> = Shared<BoxFuture<'static, Result<V, Arc<str>>>>;

/// Concurrent calls with one key share one computation (run as its own task, so a caller
/// that goes away does not cancel it for the others).
pub struct SingleFlight<V> {
    inflight: Mutex<HashMap<String, (u64, Flight<V>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl<V> Default for SingleFlight<V> {
    fn default() -> Self {
        SingleFlight { inflight: Mutex::new(HashMap::new()), next: std::sync::atomic::AtomicU64::new(0) }
    }
}

impl<V: Clone + Send + Sync + 'static> SingleFlight<V> {
    /// Runs `make()` unless a computation of `key` is running; either way, its result.
    pub async fn run<F>(self: &Arc<Self>, key: String, make: impl FnOnce() -> F) -> Result<V, Arc<str>>
    where
        F: Future<Output = Result<V, Arc<str>>> + Send + 'static,
    {
        let flight = {
            let mut map = lock(&self.inflight);
            if let Some((_, f)) = map.get(&key) {
                metrics::counter!("stats_single_flight_joined_total").increment(1);
                f.clone()
            } else {
                let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let this = self.clone();
                let k = key.clone();
                let work = make();
                // Spawned while the map is locked: the task's removal waits for our insert.
                let handle = tokio::spawn(async move {
                    let r = work.await;
                    let mut map = lock(&this.inflight);
                    if map.get(&k).is_some_and(|(i, _)| *i == id) {
                        map.remove(&k);
                    }
                    r
                });
                let flight: Flight<V> = async move {
                    match handle.await {
                        Ok(r) => r,
                        Err(e) => Err(Arc::from(format!("computation failed: {e}"))),
                    }
                }
                .boxed()
                .shared();
                map.insert(key, (id, flight.clone()));
                flight
            }
        };
        flight.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn single_flight_runs_once_for_concurrent_callers() {
        let sf: Arc<SingleFlight<u64>> = Arc::new(SingleFlight::default());
        let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let sf = sf.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                sf.run("k".into(), move || async move {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(7)
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 7);
        }
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Finished flights are forgotten: the next call runs again.
        let r = sf.run("k".into(), || async { Ok(8) }).await.unwrap();
        assert_eq!(r, 8);
    }
}
