//! `include=payload`: the full events of a page, read back from the lake. Each item names
//! its lake partition (`events/type=<t>/date=<d>/hour=<h>`); the files of each partition the
//! page touches are read (a few partitions at once) until every wanted id is found. An event
//! the lake writer has not committed yet (it buffers up to its `max_age`) is reported missing.

use std::collections::{HashMap, HashSet};

use event_lake::reader::DataFile;
use event_lake::{Lake, PartitionKey};
use futures::{StreamExt, TryStreamExt};
use serde_json::value::RawValue;

use crate::item::Item;

/// Partitions read at once.
const CONCURRENT_PARTITIONS: usize = 4;

/// The full events of `items` found in the lake, by event id, as the lake rebuilds them
/// (`eventctl cat`'s text: every number with its digits).
pub async fn fetch(lake: &Lake, items: &[Item]) -> Result<HashMap<String, Box<RawValue>>, event_lake::LakeError> {
    let wanted: Vec<(String, i64, String)> = items.iter().map(|it| (it.id().to_owned(), it.created_at(), it.lake.clone())).collect();
    fetch_events(lake, &wanted).await
}

/// [`fetch`] of events given as (id, created_at, lake partition).
pub async fn fetch_events(lake: &Lake, events: &[(String, i64, String)]) -> Result<HashMap<String, Box<RawValue>>, event_lake::LakeError> {
    // Owned keys: the stream's futures must not borrow from `events` (the handler is Send).
    let mut wanted: HashMap<String, HashSet<String>> = HashMap::new();
    for (id, _, partition) in events {
        wanted.entry(partition.clone()).or_default().insert(id.clone());
    }
    let found: Vec<Vec<(String, Box<RawValue>)>> = futures::stream::iter(wanted)
        .map(|(dir, ids)| read_partition(lake, dir, ids))
        .buffer_unordered(CONCURRENT_PARTITIONS)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

/// Only the id of a rebuilt event (the rest is skipped, not parsed into values).
#[derive(serde::Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    data: DataId<'a>,
}

#[derive(serde::Deserialize)]
struct DataId<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

async fn read_partition(lake: &Lake, dir: String, mut ids: HashSet<String>) -> Result<Vec<(String, Box<RawValue>)>, event_lake::LakeError> {
    let Some(partition) = PartitionKey::parse(&dir) else {
        return Ok(Vec::new());
    };
    // The partition's committed files, from its table's log (never a listing).
    let mut files: Vec<DataFile> =
        lake.data_files(Some(&*partition.event_type), Some((partition.hour, partition.hour + 1))).await?;
    // Newest files first: fresh events are the ones most asked for.
    files.sort_by(|a, b| b.meta.location.cmp(&a.meta.location));
    let mut out = Vec::new();
    for file in files {
        if ids.is_empty() {
            break;
        }
        for text in lake.read_events_json(&file).await? {
            let Ok(IdOnly { data: DataId { id } }) = serde_json::from_str::<IdOnly<'_>>(&text) else { continue };
            if ids.remove(id.as_ref()) {
                let id = id.into_owned();
                if let Ok(raw) = RawValue::from_string(text) {
                    out.push((id, raw));
                }
            }
        }
    }
    Ok(out)
}
