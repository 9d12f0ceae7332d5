//! Opening a lake root: a local folder or `s3://bucket/prefix`, as an `object_store`.
//!
//! S3 uses the standard environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, web identity and instance metadata) and
//! `AWS_ENDPOINT_URL` for an S3-compatible store (path-style addressing, HTTP allowed for
//! loopback endpoints). Conditional writes (`If-None-Match`) guard schema updates.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;

use crate::LakeError;

/// An opened lake root.
#[derive(Clone, Debug)]
pub struct LakeStore {
    /// The store, rooted at the lake's prefix.
    pub store: Arc<dyn ObjectStore>,
    /// The URL as given, for messages.
    pub url: String,
    /// The folder of a local lake (its files are committed durably by
    /// [`put_whole`](crate::writer::put_whole): written, fsynced, renamed, folder fsynced).
    pub local_dir: Option<std::path::PathBuf>,
    /// The same store unprefixed (bucket root, or `/` for a local folder): Delta's log store
    /// resolves absolute table URLs against it.
    pub root_store: Arc<dyn ObjectStore>,
    /// The canonical URL of the lake root, with a trailing `/` (`s3://bucket/prefix/` or
    /// `file:///abs/path/`).
    pub base_url: url::Url,
    /// Snapshots kept between commits (shared by clones).
    pub snapshots: crate::table::SnapshotCache,
}

impl LakeStore {
    /// Opens `s3://bucket/prefix`, `file:///path` or a plain path (created if missing).
    pub fn open(url: &str) -> Result<LakeStore, LakeError> {
        let invalid = |reason: &str| LakeError::InvalidLocation { url: url.to_owned(), reason: reason.to_owned() };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket name after s3://"));
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                if endpoint.starts_with("http://") {
                    builder = builder.with_allow_http(true);
                }
                builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
            }
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
                builder = builder.with_region("us-east-1");
            }
            let s3: Arc<dyn ObjectStore> = Arc::new(builder.build().map_err(|e| invalid(&e.to_string()))?);
            let prefix = prefix.trim_matches('/');
            let store: Arc<dyn ObjectStore> =
                if prefix.is_empty() { s3.clone() } else { Arc::new(PrefixStore::new(s3.clone(), prefix)) };
            let base = if prefix.is_empty() { format!("s3://{bucket}/") } else { format!("s3://{bucket}/{prefix}/") };
            let base_url = url::Url::parse(&base).map_err(|e| invalid(&e.to_string()))?;
            return Ok(LakeStore { store, url: url.to_owned(), root_store: s3, base_url, local_dir: None, snapshots: Default::default() });
        }
        if url.contains("://") && !url.starts_with("file://") {
            return Err(invalid("use a local folder or s3://bucket/prefix"));
        }
        let path = std::path::PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
        std::fs::create_dir_all(&path)?;
        let path = path.canonicalize()?;
        let fs = LocalFileSystem::new_with_prefix(&path).map_err(|e| invalid(&e.to_string()))?;
        let base_url = url::Url::from_directory_path(&path).map_err(|()| invalid("not an absolute path"))?;
        Ok(LakeStore { store: Arc::new(fs), url: url.to_owned(), root_store: Arc::new(LocalFileSystem::new()), base_url, local_dir: Some(path), snapshots: Default::default() })
    }
}
