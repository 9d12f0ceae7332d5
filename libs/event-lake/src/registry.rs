//! The schema registry: each type's current schema, kept in the lake itself.
//!
//! Versions are immutable objects `_schemas/<type>/v<N>.json`. A writer that needs new
//! columns reads the newest version, extends it, and creates version N+1 with a
//! create-if-absent write (`If-None-Match: *` on S3, an atomic hard link on a local folder).
//! When two writers race, one create wins; the other re-reads the winner's version, merges its
//! own additions into it and tries N+2. Extensions are additive, so no addition is ever lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::LakeError;
use crate::layout::{schema_dir, schema_path};
use crate::schema::{DType, Section, TypeSchema};

/// How often a writer retries after losing a race on a schema version.
const MAX_ATTEMPTS: usize = 64;

/// Reads and extends per-type schemas, caching the newest version seen.
pub struct SchemaRegistry {
    store: Arc<dyn ObjectStore>,
    cache: Mutex<HashMap<String, Arc<TypeSchema>>>,
    /// Upper bound of typed columns per type; further fields go to `_leftovers`.
    pub max_columns: usize,
}

impl SchemaRegistry {
    /// A registry over a lake store.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        SchemaRegistry { store, cache: Mutex::new(HashMap::new()), max_columns: 2000 }
    }

    fn cached(&self, event_type: &str) -> Option<Arc<TypeSchema>> {
        self.cache.lock().ok().and_then(|c| c.get(event_type).cloned())
    }

    fn remember(&self, schema: Arc<TypeSchema>) {
        if let Ok(mut c) = self.cache.lock() {
            let newer = c.get(&schema.event_type).is_none_or(|old| old.version < schema.version);
            if newer {
                c.insert(schema.event_type.clone(), schema);
            }
        }
    }

    /// The newest version in the lake (empty version 0 for a type never written).
    pub async fn load(&self, event_type: &str) -> Result<Arc<TypeSchema>, LakeError> {
        let dir = schema_dir(event_type);
        let metas: Vec<_> = self.store.list(Some(&dir)).try_collect().await?;
        let newest = metas
            .iter()
            .filter_map(|m| {
                let name = m.location.filename()?;
                let v = name.strip_prefix('v')?.strip_suffix(".json")?.parse::<u64>().ok()?;
                Some((v, m.location.clone()))
            })
            .max_by_key(|(v, _)| *v);
        let schema = match newest {
            None => Arc::new(TypeSchema::empty(event_type)),
            Some((_, path)) => {
                let bytes = self.store.get(&path).await?.bytes().await?;
                let schema: TypeSchema = serde_json::from_slice(&bytes)
                    .map_err(|e| LakeError::Corrupt(format!("schema {path}: {e}")))?;
                Arc::new(schema)
            }
        };
        self.remember(schema.clone());
        Ok(schema)
    }

    /// The cached schema, loading it the first time.
    pub async fn get(&self, event_type: &str) -> Result<Arc<TypeSchema>, LakeError> {
        match self.cached(event_type) {
            Some(s) => Ok(s),
            None => self.load(event_type).await,
        }
    }

    /// A schema covering `needs`: the cached one when it does, else a new version.
    pub async fn ensure(
        &self,
        event_type: &str,
        needs: &[(Section, String, DType)],
    ) -> Result<Arc<TypeSchema>, LakeError> {
        let mut current = self.get(event_type).await?;
        let mut reloaded = false;
        for _ in 0..MAX_ATTEMPTS {
            let mut next = (*current).clone();
            if !next.extend(needs, self.max_columns) {
                return Ok(current);
            }
            if !reloaded {
                // The cache may be behind another writer's version: start from the newest.
                current = self.load(event_type).await?;
                reloaded = true;
                continue;
            }
            next.version = current.version + 1;
            let body = serde_json::to_vec_pretty(&next)
                .map_err(|e| LakeError::Internal(format!("schema serialization: {e}")))?;
            let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match self.store.put_opts(&schema_path(event_type, next.version), PutPayload::from(body), opts).await {
                Ok(_) => {
                    let next = Arc::new(next);
                    self.remember(next.clone());
                    tracing::info!(event_type, version = next.version, columns = next.columns.len(), "schema extended");
                    return Ok(next);
                }
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                    current = self.load(event_type).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(LakeError::SchemaContended(event_type.to_owned()))
    }

    /// Every type with a schema in the lake.
    pub async fn types(&self) -> Result<Vec<String>, LakeError> {
        let listed = self.store.list_with_delimiter(Some(&object_store::path::Path::from("_schemas"))).await?;
        let mut types: Vec<String> =
            listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned)).collect();
        types.sort();
        Ok(types)
    }
}
