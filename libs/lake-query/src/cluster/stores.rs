//! The object stores of the cluster's processes: scans name their files by full URL, and
//! `file://` resolves to the local file system as DataFusion has it, `s3://bucket` to one S3
//! client per bucket, made on first use as the lake library makes it (credentials from this
//! machine's AWS environment variables, web identity or instance metadata; `AWS_ENDPOINT_URL`
//! for an S3-compatible store).

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::ObjectStore;
use url::Url;

/// The executor's object stores: `file://` as DataFusion has it, one S3 client per bucket
/// made on first use.
#[derive(Debug, Default)]
pub(crate) struct LakeStores {
    inner: DefaultObjectStoreRegistry,
}

impl ObjectStoreRegistry for LakeStores {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.inner.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.inner.get_store(url) {
            return Ok(store);
        }
        match (url.scheme(), url.host_str()) {
            ("s3", Some(bucket)) if !bucket.is_empty() => {
                let lake = event_lake::LakeStore::open(&format!("s3://{bucket}")).map_err(|e| DataFusionError::External(Box::new(e)))?;
                self.inner.register_store(url, lake.root_store.clone());
                Ok(lake.root_store)
            }
            _ => Err(DataFusionError::Configuration(format!("no object store for {url}: the lake must be s3://bucket/... or a local path"))),
        }
    }
}
