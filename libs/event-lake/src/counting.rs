//! An `ObjectStore` wrapper that counts what a query reads: bytes and requests of every
//! GET (whole objects, ranges, vectored ranges), and the prefixes it listed. Reads of Delta
//! logs (`_delta_log/`: commits, checkpoints) are counted apart from data reads. Queries report
//! these figures, and tests use the recorded paths to prove that partition pruning kept a
//! query inside the partitions it needed.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// What went through a [`CountingStore`].
#[derive(Debug, Default)]
pub struct ReadStats {
    bytes: AtomicU64,
    requests: AtomicU64,
    lists: AtomicU64,
    log_bytes: AtomicU64,
    log_requests: AtomicU64,
    scanned: AtomicU64,
    paths: Mutex<BTreeSet<String>>,
    listed: Mutex<BTreeSet<String>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadSnapshot {
    /// Bytes received from GET requests.
    pub bytes_read: u64,
    /// GET requests (a vectored read counts once).
    pub get_requests: u64,
    /// LIST requests (one per listed prefix; pagination not counted).
    pub list_requests: u64,
    /// Distinct Parquet files read (schema files and other metadata not counted).
    pub files_read: u64,
    /// GET requests to Delta logs (commits, checkpoints, `_last_checkpoint`); not in
    /// `get_requests`.
    #[serde(default)]
    pub log_get_requests: u64,
    /// Bytes received from Delta logs; not in `bytes_read`.
    #[serde(default)]
    pub log_bytes_read: u64,
    /// Bytes of column data the Parquet reader fetched (footers not included), as the query
    /// engine counts them: the same figure whether the query ran here or on a cluster's
    /// executors, where the store's own counters above do not reach.
    #[serde(default)]
    pub scanned_bytes: u64,
}

impl ReadStats {
    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The counters now.
    pub fn snapshot(&self) -> ReadSnapshot {
        ReadSnapshot {
            bytes_read: self.bytes(),
            get_requests: self.requests.load(Ordering::Relaxed),
            list_requests: self.lists.load(Ordering::Relaxed),
            files_read: self.paths.lock().map(|p| p.iter().filter(|p| p.ends_with(".parquet")).count() as u64).unwrap_or(0),
            log_get_requests: self.log_requests.load(Ordering::Relaxed),
            log_bytes_read: self.log_bytes.load(Ordering::Relaxed),
            scanned_bytes: self.scanned.load(Ordering::Relaxed),
        }
    }

    /// Adds column bytes the query engine scanned (see [`ReadSnapshot::scanned_bytes`]).
    pub fn add_scanned(&self, bytes: u64) {
        self.scanned.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records files read elsewhere (by a cluster's executors), so that
    /// [`ReadSnapshot::files_read`] counts them.
    pub fn add_files_read(&self, paths: impl IntoIterator<Item = String>) {
        if let Ok(mut p) = self.paths.lock() {
            p.extend(paths);
        }
    }

    /// Every object read at least once.
    pub fn paths_read(&self) -> BTreeSet<String> {
        self.paths.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Every prefix listed (`""` is the root).
    pub fn prefixes_listed(&self) -> BTreeSet<String> {
        self.listed.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn read(&self, location: &Path, bytes: u64) {
        if is_log(location) {
            self.log_bytes.fetch_add(bytes, Ordering::Relaxed);
            self.log_requests.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut p) = self.paths.lock()
            && !p.contains(location.as_ref())
        {
            p.insert(location.as_ref().to_owned());
        }
    }

    fn list(&self, prefix: Option<&Path>) {
        self.lists.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.listed.lock() {
            l.insert(prefix.map(|p| p.as_ref().to_owned()).unwrap_or_default());
        }
    }
}

/// True for a path inside a Delta log.
pub fn is_log(location: &Path) -> bool {
    let p = location.as_ref();
    p.starts_with("_delta_log/") || p.contains("/_delta_log/")
}

/// Counts reads and lists, passing everything to the inner store.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    stats: Arc<ReadStats>,
    latency: Option<std::time::Duration>,
}

impl CountingStore {
    /// Wraps a store.
    pub fn new(inner: Arc<dyn ObjectStore>, stats: Arc<ReadStats>) -> Self {
        CountingStore { inner, stats, latency: None }
    }

    /// Adds `latency` before each GET (benchmarks: a local lake answering like S3, whose
    /// first byte takes tens of milliseconds).
    pub fn with_get_latency(mut self, latency: std::time::Duration) -> Self {
        self.latency = Some(latency);
        self
    }

    async fn wait(&self) {
        if let Some(l) = self.latency {
            tokio::time::sleep(l).await;
        }
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        self.wait().await;
        let result = self.inner.get_opts(location, options).await?;
        if !head {
            self.stats.read(location, result.range.end.saturating_sub(result.range.start));
        }
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.wait().await;
        let out = self.inner.get_ranges(location, ranges).await?;
        self.stats.read(location, out.iter().map(|b| b.len() as u64).sum());
        Ok(out)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.stats.list(prefix);
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.stats.list(prefix);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.stats.list(prefix);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn counts_bytes_of_gets_ranges_and_lists() {
        let stats = Arc::new(ReadStats::default());
        let store = CountingStore::new(Arc::new(InMemory::new()), stats.clone());
        let p = Path::from("events/type=a/x.parquet");
        let schema = Path::from("_schemas/a/v1.json");
        store.put(&schema, PutPayload::from(vec![1u8; 10])).await.expect("put");
        store.get(&schema).await.expect("get").bytes().await.expect("bytes");
        assert_eq!(stats.bytes(), 10);
        store.put(&p, PutPayload::from(vec![7u8; 1000])).await.expect("put");
        store.get(&p).await.expect("get").bytes().await.expect("bytes");
        store.get_range(&p, 10..110).await.expect("range");
        store.get_ranges(&p, &[0..5, 900..1000]).await.expect("ranges");
        store.head(&p).await.expect("head");
        let _ = futures::StreamExt::collect::<Vec<_>>(store.list(Some(&Path::from("events/type=a")))).await;
        let s = stats.snapshot();
        assert_eq!(s.bytes_read, 10 + 1000 + 100 + 105);
        assert_eq!(s.get_requests, 4);
        assert_eq!(s.files_read, 1);
        assert_eq!(s.list_requests, 1);
        assert_eq!(stats.prefixes_listed().into_iter().collect::<Vec<_>>(), vec!["events/type=a".to_owned()]);

        let log = Path::from("events/type=a/_delta_log/00000000000000000000.json");
        store.put(&log, PutPayload::from(vec![2u8; 50])).await.expect("put");
        store.get(&log).await.expect("get").bytes().await.expect("bytes");
        let s = stats.snapshot();
        assert_eq!((s.log_get_requests, s.log_bytes_read), (1, 50));
        assert_eq!((s.get_requests, s.bytes_read), (4, 10 + 1000 + 100 + 105), "log reads are counted apart");
    }
}
