//! The schema registry: each type's current schema, kept in its Delta table's metadata.
//!
//! A type's schema is its table's schema (see [`crate::table`]). A writer that needs new
//! columns reads the table's newest metadata, extends it and commits a metadata-only version;
//! when two writers race, the loser re-reads the winner's schema, merges its own additions and
//! retries. Extensions are additive, so no addition is ever lost. The registry caches the
//! newest schema it saw per type.
//!
//! A writer that commits all its files at once (`eventctl ingest`) stages its extensions
//! instead ([`SchemaRegistry::stage`]): they stay in memory and are committed with the files,
//! in the same commit (the table's creation included), so a load costs one commit per table
//! and a failed load leaves nothing behind, not even an empty table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::schema::{DType, Section, TypeSchema};
use crate::{LakeError, LakeStore};

/// Reads and extends per-type schemas, caching the newest version seen.
pub struct SchemaRegistry {
    root: LakeStore,
    cache: Mutex<HashMap<String, Arc<TypeSchema>>>,
    /// Extensions staged for the next data commit of a type (see [`SchemaRegistry::stage`]).
    staged: Mutex<HashMap<String, Arc<TypeSchema>>>,
    /// Upper bound of typed columns per type; further fields go to `_leftovers`.
    pub max_columns: usize,
}

impl SchemaRegistry {
    /// A registry over a lake root.
    pub fn new(root: LakeStore) -> Self {
        SchemaRegistry { root, cache: Mutex::new(HashMap::new()), staged: Mutex::new(HashMap::new()), max_columns: 2000 }
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

    /// A schema covering `needs` without committing anything: the table's schema (read once)
    /// extended in memory by what this writer has needed so far. Its files are encoded with
    /// it; [`crate::Lake::commit_appends`] then commits the staged schema together with them
    /// (creating the table when it has none), merging what other writers committed meanwhile.
    pub async fn stage(&self, event_type: &str, needs: &[(Section, String, DType)]) -> Result<Arc<TypeSchema>, LakeError> {
        if let Some(s) = self.staged(event_type) {
            let mut next = (*s).clone();
            if !next.extend(needs, self.max_columns) {
                return Ok(s);
            }
        }
        let committed = self.get(event_type).await?;
        let mut staged = self.staged.lock().map_err(|_| LakeError::Internal("schema registry lock poisoned".into()))?;
        let first = !staged.contains_key(event_type);
        let base = staged.get(event_type).cloned().unwrap_or(committed);
        let mut next = (*base).clone();
        // A type without a table stages its schema even when it has no field (its commit
        // creates the table).
        if !next.extend(needs, self.max_columns) && !(first && base.version == 0) {
            return Ok(base);
        }
        // One version past the committed schema, however many extensions were staged.
        next.version = self.cached(event_type).map(|c| c.version).unwrap_or(0) + 1;
        let next = Arc::new(next);
        staged.insert(event_type.to_owned(), next.clone());
        Ok(next)
    }

    /// The schema staged for a type's next data commit, if any.
    pub fn staged(&self, event_type: &str) -> Option<Arc<TypeSchema>> {
        self.staged.lock().ok().and_then(|s| s.get(event_type).cloned())
    }

    /// Records that a type's staged schema was committed as `schema`.
    pub(crate) fn committed_staged(&self, schema: Arc<TypeSchema>) {
        if let Ok(mut s) = self.staged.lock() {
            s.remove(&schema.event_type);
        }
        self.remember(schema);
    }

    /// Every type with a table in the lake.
    pub async fn types(&self) -> Result<Vec<String>, LakeError> {
        self.root.table_types().await
    }
}
