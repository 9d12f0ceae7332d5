//! A session's cache of Delta commit files. A commit (`_delta_log/<version>.json`) is
//! written once, with create-if-absent, and never changes, so one GET per commit is enough.
//! The Delta kernel reads the commits after the last checkpoint twice while it loads a
//! table (once for the protocol and metadata, once for the files); this wrapper answers the
//! second read from memory, halving the requests (and, on S3, the time) of planning a query
//! on a table far from its checkpoint. Everything else passes through.
//!
//! Bounded: at most [`LogCache::MAX_BYTES`] of commits are kept (then further commits are
//! not cached), and only whole-object GETs of a commit file are served from it.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// An immutable commit as read once.
#[derive(Clone)]
struct Cached {
    meta: ObjectMeta,
    attributes: object_store::Attributes,
    data: Bytes,
}

/// Caches whole-object reads of Delta commit files, passing everything to the inner store.
pub struct LogCache {
    inner: Arc<dyn ObjectStore>,
    entries: Mutex<(HashMap<Path, Cached>, usize)>,
}

impl LogCache {
    /// Commits kept per session at most, bytes (a commit of the lake is a few KB).
    pub const MAX_BYTES: usize = 64 << 20;

    /// Wraps a store.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        LogCache { inner, entries: Mutex::new((HashMap::new(), 0)) }
    }

    fn get_cached(&self, location: &Path) -> Option<Cached> {
        self.entries.lock().ok()?.0.get(location).cloned()
    }

    fn keep(&self, location: &Path, entry: Cached) {
        if let Ok(mut e) = self.entries.lock()
            && e.1 + entry.data.len() <= Self::MAX_BYTES
            && !e.0.contains_key(location)
        {
            e.1 += entry.data.len();
            e.0.insert(location.clone(), entry);
        }
    }
}

/// True for a commit file: `_delta_log/` then 20 digits and `.json`.
pub fn is_commit(location: &Path) -> bool {
    let p = location.as_ref();
    let name = p.rsplit('/').next().unwrap_or(p);
    crate::counting::is_log(location) && name.len() == 25 && name.ends_with(".json") && name[..20].bytes().all(|b| b.is_ascii_digit())
}

/// A read that the cache may answer: the whole object, no conditions, no version.
fn plain(options: &GetOptions) -> bool {
    !options.head
        && options.range.is_none()
        && options.version.is_none()
        && options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
}

fn result_of(entry: Cached) -> GetResult {
    let len = entry.data.len() as u64;
    let data = entry.data;
    GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(data) }).boxed()),
        meta: entry.meta,
        range: 0..len,
        attributes: entry.attributes,
    }
}

impl fmt::Debug for LogCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, bytes) = self.entries.lock().map(|e| (e.0.len(), e.1)).unwrap_or_default();
        f.debug_struct("LogCache").field("inner", &self.inner).field("commits", &n).field("bytes", &bytes).finish()
    }
}

impl fmt::Display for LogCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogCache({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for LogCache {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if !(is_commit(location) && plain(&options)) {
            return self.inner.get_opts(location, options).await;
        }
        if let Some(hit) = self.get_cached(location) {
            return Ok(result_of(hit));
        }
        let result = self.inner.get_opts(location, options).await?;
        let (meta, attributes) = (result.meta.clone(), result.attributes.clone());
        let data = result.bytes().await?;
        let entry = Cached { meta, attributes, data };
        self.keep(location, entry.clone());
        Ok(result_of(entry))
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting::{CountingStore, ReadStats};
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn a_commit_is_read_once_other_objects_always() {
        let stats = Arc::new(ReadStats::default());
        let counted: Arc<dyn ObjectStore> = Arc::new(CountingStore::new(Arc::new(InMemory::new()), stats.clone()));
        let store = LogCache::new(counted);
        let commit = Path::from("events/type=a/_delta_log/00000000000000000007.json");
        let last = Path::from("events/type=a/_delta_log/_last_checkpoint");
        store.put(&commit, PutPayload::from(b"{\"add\":{}}".to_vec())).await.expect("put");
        store.put(&last, PutPayload::from(b"{}".to_vec())).await.expect("put");
        for _ in 0..3 {
            let got = store.get(&commit).await.expect("get").bytes().await.expect("bytes");
            assert_eq!(&got[..], b"{\"add\":{}}");
            store.get(&last).await.expect("get").bytes().await.expect("bytes");
        }
        assert_eq!(stats.snapshot().log_get_requests, 1 + 3, "the commit once, _last_checkpoint every time");
        // A range read is not served from the cache.
        assert_eq!(&store.get_range(&commit, 1..4).await.expect("range")[..], b"\"ad");
        assert_eq!(stats.snapshot().log_get_requests, 5);
    }

    #[test]
    fn only_commit_files_are_cached() {
        assert!(is_commit(&Path::from("_delta_log/00000000000000000000.json")));
        assert!(is_commit(&Path::from("lake/events/type=a/_delta_log/00000000000000000123.json")));
        assert!(!is_commit(&Path::from("events/type=a/_delta_log/_last_checkpoint")));
        assert!(!is_commit(&Path::from("events/type=a/_delta_log/00000000000000000100.checkpoint.parquet")));
        assert!(!is_commit(&Path::from("events/type=a/date=2026-01-01/00000000000000000100.json")));
    }
}
