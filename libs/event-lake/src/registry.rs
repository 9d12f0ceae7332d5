//! The schema registry: each type's current schema, kept in its Delta table's metadata.
//!
//! A type's schema is its table's schema (see [`crate::table`]). A writer that needs new
//! columns reads the table's newest metadata, extends it and commits a metadata-only version;
//! when two writers race, the loser re-reads the winner's schema, merges its own additions and
//! retries. Extensions are additive, so no addition is ever lost. The registry caches the
//! newest schema it saw per type.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::schema::{DType, Section, TypeSchema};
use crate::{LakeError, LakeStore};

/// Reads and extends per-type schemas, caching the newest version seen.
pub struct SchemaRegistry {
    root: LakeStore,
    cache: Mutex<HashMap<String, Arc<TypeSchema>>>,
    /// Upper bound of typed columns per type; further fields go to `_leftovers`.
    pub max_columns: usize,
}

impl SchemaRegistry {
    /// A registry over a lake root.
    pub fn new(root: LakeStore) -> Self {
        SchemaRegistry { root, cache: Mutex::new(HashMap::new()), max_columns: 2000 }
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

    /// The newest version in the table's log (empty version 0 for a type without a table).
    pub async fn load(&self, event_type: &str) -> Result<Arc<TypeSchema>, LakeError> {
        let schema = match self.root.open_table(event_type).await? {
            Some(t) => Arc::new(t.type_schema()?),
            None => Arc::new(TypeSchema::empty(event_type)),
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

    /// A schema covering `needs`: the cached one when it does, else the table's, extended by
    /// a metadata commit when needed (creating the table on first use).
    pub async fn ensure(
        &self,
        event_type: &str,
        needs: &[(Section, String, DType)],
    ) -> Result<Arc<TypeSchema>, LakeError> {
        if let Some(current) = self.cached(event_type).filter(|s| s.version > 0) {
            let mut next = (*current).clone();
            if !next.extend(needs, self.max_columns) {
                return Ok(current);
            }
        }
        let schema = self.root.ensure_schema(event_type, needs, self.max_columns).await?;
        self.remember(schema.clone());
        Ok(schema)
    }

    /// Every type with a table in the lake.
    pub async fn types(&self) -> Result<Vec<String>, LakeError> {
        self.root.table_types().await
    }
}
