//! Per-partition buffers of validated events, bounded in memory.
//!
//! Events wait here until their partition is flushed as one file. Each partition keeps an
//! open chunk in memory. Once the buffers are past half their memory budget, full chunks
//! leave memory: appended to a spill file on local disk when the buffers have one
//! ([`SpillLimits`]), zstd-compressed in memory otherwise (JSON compresses 3-10x). Either way
//! the budget holds several times more events than raw buffering would, so fewer, larger
//! files come out. Spilling costs a buffered write and a read of the page cache; compressing
//! costs a core (a fifth of a whole `eventctl ingest`), so batch ingest spills and the lake
//! writer, whose buffers are small and short-lived, compresses.
//!
//! Callers flush a partition when it is full (`push` returns it), the largest one when the
//! buffers are over budget (memory or spill disk), old ones by age, and all of them at the end.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};

use crate::LakeError;
use crate::layout::PartitionKey;

/// Limits of the buffers.
#[derive(Debug, Clone)]
pub struct BufferLimits {
    /// Memory for buffered events (compressed chunks plus open chunks), in bytes.
    pub max_bytes: usize,
    /// A partition is handed out for flushing once it holds this many raw bytes.
    pub max_partition_raw_bytes: usize,
    /// Size at which an open chunk is spilled or compressed.
    pub chunk_bytes: usize,
    /// zstd level of compressed chunks.
    pub level: i32,
    /// Spill full chunks to local disk instead of compressing them.
    pub spill: Option<SpillLimits>,
}

impl Default for BufferLimits {
    fn default() -> Self {
        BufferLimits {
            max_bytes: 512 << 20,
            max_partition_raw_bytes: 64 << 20,
            chunk_bytes: 64 << 10,
            level: 1,
            spill: None,
        }
    }
}

/// Where and how much to spill.
#[derive(Debug, Clone)]
pub struct SpillLimits {
    /// Folder of the spill files. They are unlinked as soon as they are created, so nothing
    /// is left behind, even after a crash.
    pub dir: PathBuf,
    /// Disk for spilled chunks, in bytes (the largest spilled partition is handed out past it).
    pub max_bytes: u64,
    /// Size of one spill file. A file's space returns once every chunk in it was flushed.
    pub file_bytes: u64,
}

impl SpillLimits {
    /// Spill into `dir`, at most `max_bytes` of it, in files of 64 MiB.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        SpillLimits { dir: dir.into(), max_bytes, file_bytes: 64 << 20 }
    }
}

/// A chunk that left memory.
#[derive(Debug)]
enum Frame {
    /// zstd-compressed in memory.
    Compressed { raw_len: usize, data: Vec<u8> },
    /// Written to a spill file (unlinked; it stays open while any chunk in it is buffered).
    Spilled { file: Arc<File>, offset: u64, len: usize },
}

impl Frame {
    /// Memory the frame holds: its compressed bytes, or its place in the frame list.
    fn mem_bytes(&self) -> usize {
        match self {
            Frame::Compressed { data, .. } => data.len(),
            Frame::Spilled { .. } => std::mem::size_of::<Frame>(),
        }
    }

    /// Bytes of events the frame keeps on disk.
    fn spilled_bytes(&self) -> u64 {
        match self {
            Frame::Compressed { .. } => 0,
            Frame::Spilled { len, .. } => *len as u64,
        }
    }
}

/// The buffered events of one partition.
#[derive(Debug)]
pub struct PartitionBuffer {
    frames: Vec<Frame>,
    open: Vec<u8>,
    rows: usize,
    raw_bytes: usize,
    mem_bytes: usize,
    spilled_bytes: u64,
    opened_at: Instant,
}

impl PartitionBuffer {
    fn new() -> Self {
        PartitionBuffer {
            frames: Vec::new(),
            open: Vec::new(),
            rows: 0,
            raw_bytes: 0,
            mem_bytes: 0,
            spilled_bytes: 0,
            opened_at: Instant::now(),
        }
    }

    /// Number of events.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Raw bytes of the events.
    pub fn raw_bytes(&self) -> usize {
        self.raw_bytes
    }

    /// When the first event arrived.
    pub fn opened_at(&self) -> Instant {
        self.opened_at
    }

    /// The events, read back and decompressed, as length-prefixed records; iterate with
    /// [`Records`].
    pub fn into_records(self) -> Result<Records, LakeError> {
        self.into_records_in(Vec::new())
    }

    /// [`into_records`](Self::into_records) into a reused buffer (see [`Records::into_buffer`]):
    /// a flush thread that keeps one avoids faulting in fresh pages for every partition.
    pub fn into_records_in(self, mut data: Vec<u8>) -> Result<Records, LakeError> {
        data.clear();
        data.reserve(self.raw_bytes + 4 * self.rows);
        let mut decompressor = None;
        for frame in &self.frames {
            let start = data.len();
            match frame {
                Frame::Compressed { raw_len, data: frame } => {
                    let d = match &mut decompressor {
                        Some(d) => d,
                        None => decompressor.insert(
                            zstd::bulk::Decompressor::new()
                                .map_err(|e| LakeError::Internal(format!("zstd decompressor: {e}")))?,
                        ),
                    };
                    data.resize(start + raw_len, 0);
                    let n = d
                        .decompress_to_buffer(frame, &mut data[start..])
                        .map_err(|e| LakeError::Internal(format!("buffer chunk does not decompress: {e}")))?;
                    data.truncate(start + n);
                }
                Frame::Spilled { file, offset, len } => {
                    data.resize(start + len, 0);
                    file.read_exact_at(&mut data[start..], *offset).map_err(|e| {
                        LakeError::Internal(format!("reading back {len} spilled bytes at offset {offset}: {e}"))
                    })?;
                }
            }
        }
        data.extend_from_slice(&self.open);
        Ok(Records { data })
    }
}

/// Decompressed events of a partition.
pub struct Records {
    data: Vec<u8>,
}

impl Records {
    /// The emptied buffer, for the next [`PartitionBuffer::into_records_in`].
    pub fn into_buffer(self) -> Vec<u8> {
        let mut data = self.data;
        data.clear();
        data
    }

    /// The events, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest: &[u8] = &self.data;
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let (line, tail) = tail.split_at_checked(len)?;
            rest = tail;
            Some(line)
        })
    }
}

/// A reused zstd context (creating one per chunk costs more than compressing small chunks).
struct Compressor {
    level: i32,
    inner: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compressor(level {})", self.level)
    }
}

impl Compressor {
    fn new(level: i32) -> Self {
        Compressor { level, inner: None, scratch: Vec::new() }
    }
    fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>, LakeError> {
        let err = |e: std::io::Error| LakeError::Internal(format!("buffer compression: {e}"));
        let c = match &mut self.inner {
            Some(c) => c,
            None => self.inner.insert(zstd::bulk::Compressor::new(self.level).map_err(err)?),
        };
        // Compress into a reused scratch buffer sized for the worst case, then keep an
        // exact-size copy: the buffers hold what they account for, without fragmenting the heap
        // with shrunk worst-case allocations.
        self.scratch.clear();
        self.scratch.reserve(zstd::zstd_safe::compress_bound(data.len()));
        c.compress_to_buffer(data, &mut self.scratch).map_err(err)?;
        Ok(self.scratch.clone())
    }
}

/// The writing end of the spill files.
#[derive(Debug)]
struct Spiller {
    limits: SpillLimits,
    current: Option<(Arc<File>, u64)>,
}

impl Spiller {
    /// Appends `data` to the current spill file (a new one when it is full).
    fn write(&mut self, data: &[u8]) -> std::io::Result<Frame> {
        let (file, offset) = match &mut self.current {
            Some((file, offset)) if *offset < self.limits.file_bytes => (file, offset),
            current => {
                std::fs::create_dir_all(&self.limits.dir)?;
                let file = Arc::new(tempfile::tempfile_in(&self.limits.dir)?);
                let (file, offset) = current.insert((file, 0));
                (file, offset)
            }
        };
        file.write_all_at(data, *offset)?;
        let frame = Frame::Spilled { file: file.clone(), offset: *offset, len: data.len() };
        *offset += data.len() as u64;
        Ok(frame)
    }
}

/// Moves a full chunk out of memory: into the spill file, or compressed when there is none
/// (a spill file that cannot be written turns spilling off for good).
fn park(spiller: &mut Option<Spiller>, compressor: &mut Compressor, chunk: &[u8]) -> Result<Frame, LakeError> {
    if let Some(s) = spiller {
        match s.write(chunk) {
            Ok(frame) => return Ok(frame),
            Err(e) => {
                tracing::warn!(dir = %s.limits.dir.display(), error = %e,
                    "cannot spill buffered events to disk; compressing them in memory instead");
                *spiller = None;
            }
        }
    }
    Ok(Frame::Compressed { raw_len: chunk.len(), data: compressor.compress(chunk)? })
}

/// Buffers of all open partitions.
#[derive(Debug)]
pub struct PartitionBuffers {
    parts: HashMap<PartitionKey, PartitionBuffer>,
    compressor: Compressor,
    spiller: Option<Spiller>,
    mem_bytes: usize,
    spilled_bytes: u64,
    spilled_total: u64,
    limits: BufferLimits,
}

impl PartitionBuffers {
    /// Empty buffers.
    pub fn new(limits: BufferLimits) -> Self {
        PartitionBuffers {
            parts: HashMap::new(),
            compressor: Compressor::new(limits.level),
            spiller: limits.spill.clone().map(|limits| Spiller { limits, current: None }),
            mem_bytes: 0,
            spilled_bytes: 0,
            spilled_total: 0,
            limits,
        }
    }

    /// Memory held, in bytes.
    pub fn mem_bytes(&self) -> usize {
        self.mem_bytes
    }

    /// Bytes of events in spill files now.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    /// Bytes of events spilled since the buffers were made.
    pub fn spilled_total(&self) -> u64 {
        self.spilled_total
    }

    /// Open partitions.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// True when over the memory or spill budget: flush [`take_largest`](Self::take_largest).
    pub fn over_budget(&self) -> bool {
        self.mem_bytes > self.limits.max_bytes || self.spill_over_budget()
    }

    fn spill_over_budget(&self) -> bool {
        self.spiller.as_ref().is_some_and(|s| self.spilled_bytes > s.limits.max_bytes)
    }

    /// Buffers one event. Returns its partition when that partition is full.
    pub fn push(&mut self, key: &PartitionKey, line: &[u8]) -> Result<Option<(PartitionKey, PartitionBuffer)>, LakeError> {
        let len = u32::try_from(line.len())
            .map_err(|_| LakeError::Internal(format!("event of {} bytes is too large to buffer", line.len())))?;
        let pressure = self.mem_bytes > self.limits.max_bytes / 2;
        let part = match self.parts.get_mut(key) {
            Some(p) => p,
            None => self.parts.entry(key.clone()).or_insert_with(PartitionBuffer::new),
        };
        let before = part.open.capacity();
        part.open.extend_from_slice(&len.to_le_bytes());
        part.open.extend_from_slice(line);
        part.rows += 1;
        part.raw_bytes += line.len();
        let mut mem = part.mem_bytes - before + part.open.capacity();
        // Chunks leave memory only once the buffers are past half their budget (or a chunk
        // grew very large), so small ingests never pay for it.
        let chunk = self.limits.chunk_bytes;
        if part.open.len() >= chunk && pressure || part.open.len() >= 16 * chunk {
            let frame = park(&mut self.spiller, &mut self.compressor, &part.open)?;
            let spilled = frame.spilled_bytes();
            part.spilled_bytes += spilled;
            self.spilled_bytes += spilled;
            self.spilled_total += spilled;
            mem = mem + frame.mem_bytes() - part.open.capacity();
            part.frames.push(frame);
            part.open = Vec::new();
        }
        self.mem_bytes = self.mem_bytes - part.mem_bytes + mem;
        part.mem_bytes = mem;
        if part.raw_bytes >= self.limits.max_partition_raw_bytes {
            return Ok(self.remove(key));
        }
        Ok(None)
    }

    fn remove(&mut self, key: &PartitionKey) -> Option<(PartitionKey, PartitionBuffer)> {
        let (k, p) = self.parts.remove_entry(key)?;
        self.mem_bytes -= p.mem_bytes;
        self.spilled_bytes -= p.spilled_bytes;
        Some((k, p))
    }

    /// Takes the partition holding the most memory, or, when the spill files are over their
    /// budget, the one with the most spilled bytes.
    pub fn take_largest(&mut self) -> Option<(PartitionKey, PartitionBuffer)> {
        let by_spill = self.mem_bytes <= self.limits.max_bytes && self.spill_over_budget();
        let key = self
            .parts
            .iter()
            .max_by_key(|(_, p)| if by_spill { p.spilled_bytes } else { p.mem_bytes as u64 })
            .map(|(k, _)| k.clone())?;
        self.remove(&key)
    }

    /// Takes the partitions whose first event is older than `age`.
    pub fn take_older_than(&mut self, age: Duration) -> Vec<(PartitionKey, PartitionBuffer)> {
        let old: Vec<PartitionKey> =
            self.parts.iter().filter(|(_, p)| p.opened_at.elapsed() >= age).map(|(k, _)| k.clone()).collect();
        old.iter().filter_map(|k| self.remove(k)).collect()
    }

    /// Takes every partition.
    pub fn take_all(&mut self) -> Vec<(PartitionKey, PartitionBuffer)> {
        self.mem_bytes = 0;
        self.spilled_bytes = 0;
        let mut all: Vec<_> = self.parts.drain().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn buffers_compress_under_pressure_and_give_back_every_event() {
        let lines: Vec<String> = (0..1000).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(50))).collect();
        let raw: usize = lines.iter().map(String::len).sum();
        let key = PartitionKey { event_type: Arc::from("t"), hour: 1 };
        // A roomy budget: nothing is compressed (no CPU spent).
        let roomy = BufferLimits { max_bytes: 1 << 20, max_partition_raw_bytes: 1 << 30, chunk_bytes: 64 << 10, level: 1, spill: None };
        let mut b = PartitionBuffers::new(roomy);
        for l in &lines {
            assert!(b.push(&key, l.as_bytes()).unwrap().is_none());
        }
        assert!(b.mem_bytes() >= raw, "uncompressed {} < raw {raw}", b.mem_bytes());
        // A tight budget: past half of it, chunks are compressed and memory stays under it.
        let tight = BufferLimits { max_bytes: 40_000, max_partition_raw_bytes: 1 << 30, chunk_bytes: 1024, level: 1, spill: None };
        let mut b = PartitionBuffers::new(tight);
        for l in &lines {
            assert!(b.push(&key, l.as_bytes()).unwrap().is_none());
        }
        assert!(!b.over_budget(), "compressed {} for {raw} raw", b.mem_bytes());
        let (_, part) = b.take_largest().unwrap();
        assert_eq!(b.mem_bytes(), 0);
        let recs = part.into_records().unwrap();
        let back: Vec<&[u8]> = recs.iter().collect();
        assert_eq!(back.len(), 1000);
        assert!(back.iter().zip(&lines).all(|(a, b)| *a == b.as_bytes()));
    }

    #[test]
    fn a_full_partition_is_handed_out() {
        let limits = BufferLimits { max_bytes: 1 << 20, max_partition_raw_bytes: 100, chunk_bytes: 1024, level: 1, spill: None };
        let mut b = PartitionBuffers::new(limits);
        let key = PartitionKey { event_type: Arc::from("t"), hour: 1 };
        assert!(b.push(&key, &[b'x'; 60]).unwrap().is_none());
        let (_, full) = b.push(&key, &[b'x'; 60]).unwrap().unwrap();
        assert_eq!(full.rows(), 2);
        assert!(b.is_empty());
    }

    #[test]
    fn a_reused_buffer_gives_back_only_the_events_of_its_partition() {
        let limits = BufferLimits { max_bytes: 1 << 20, max_partition_raw_bytes: 1 << 30, chunk_bytes: 1024, level: 1, spill: None };
        let mut b = PartitionBuffers::new(limits);
        let big = PartitionKey { event_type: Arc::from("big"), hour: 1 };
        let small = PartitionKey { event_type: Arc::from("small"), hour: 1 };
        for i in 0..500 {
            b.push(&big, format!("big-{i}").as_bytes()).unwrap();
        }
        b.push(&small, b"small-0").unwrap();
        let mut scratch = Vec::new();
        let mut capacity = 0;
        for (k, part) in b.take_all() {
            let recs = part.into_records_in(scratch).unwrap();
            let back: Vec<&[u8]> = recs.iter().collect();
            let want: Vec<String> = match k.event_type.as_ref() {
                "big" => (0..500).map(|i| format!("big-{i}")).collect(),
                _ => vec!["small-0".to_owned()],
            };
            assert!(back.iter().copied().eq(want.iter().map(|w| w.as_bytes())), "{}", k.event_type);
            scratch = recs.into_buffer();
            assert!(scratch.is_empty() && scratch.capacity() >= capacity);
            capacity = scratch.capacity();
        }
    }

    fn sample_lines() -> Vec<String> {
        (0..1000).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(50))).collect()
    }

    #[test]
    fn under_pressure_chunks_spill_to_unlinked_files_and_come_back_in_order() {
        let lines = sample_lines();
        let raw: usize = lines.iter().map(String::len).sum();
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillLimits { dir: dir.path().join("spill"), max_bytes: 1 << 30, file_bytes: 8 << 10 };
        let limits = BufferLimits { max_bytes: 20_000, max_partition_raw_bytes: 1 << 30, chunk_bytes: 1024, level: 1, spill: Some(spill) };
        let mut b = PartitionBuffers::new(limits);
        let keys: Vec<PartitionKey> = (0..3).map(|h| PartitionKey { event_type: Arc::from("t"), hour: h }).collect();
        for (i, l) in lines.iter().enumerate() {
            assert!(b.push(&keys[i % 3], l.as_bytes()).unwrap().is_none());
        }
        // Memory holds the open chunks only; most bytes went to disk, in several files.
        assert!(!b.over_budget(), "{} bytes in memory", b.mem_bytes());
        assert!(b.spilled_bytes() as usize > raw / 2, "{} of {raw} bytes spilled", b.spilled_bytes());
        // The files are unlinked at once: a crash leaves nothing behind.
        assert_eq!(std::fs::read_dir(dir.path().join("spill")).unwrap().count(), 0);
        for (h, part) in b.take_all() {
            let recs = part.into_records().unwrap();
            let back: Vec<&[u8]> = recs.iter().collect();
            let want: Vec<&[u8]> = lines.iter().skip(h.hour as usize).step_by(3).map(|l| l.as_bytes()).collect();
            assert_eq!(back, want);
        }
        assert_eq!(b.spilled_bytes(), 0);
    }

    #[test]
    fn past_the_spill_budget_the_partition_with_most_on_disk_is_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillLimits::new(dir.path(), 10_000);
        let limits = BufferLimits { max_bytes: 4000, max_partition_raw_bytes: 1 << 30, chunk_bytes: 256, level: 1, spill: Some(spill) };
        let mut b = PartitionBuffers::new(limits);
        let big = PartitionKey { event_type: Arc::from("big"), hour: 1 };
        let small = PartitionKey { event_type: Arc::from("small"), hour: 1 };
        for _ in 0..4 {
            b.push(&small, &[b's'; 300]).unwrap();
        }
        for _ in 0..1000 {
            if b.over_budget() {
                break;
            }
            b.push(&big, &[b'b'; 300]).unwrap();
        }
        assert!(b.over_budget() && b.spilled_bytes() > 10_000, "{} bytes spilled", b.spilled_bytes());
        assert!(b.mem_bytes() <= 4000);
        let (k, p) = b.take_largest().unwrap();
        assert_eq!(k, big);
        assert!(p.into_records().unwrap().iter().all(|l| l == [b'b'; 300]));
        assert!(!b.over_budget());
    }

    #[test]
    fn when_the_spill_folder_is_unusable_chunks_are_compressed_instead() {
        let lines = sample_lines();
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let spill = SpillLimits::new(not_a_dir.join("spill"), 1 << 30);
        let limits = BufferLimits { max_bytes: 40_000, max_partition_raw_bytes: 1 << 30, chunk_bytes: 1024, level: 1, spill: Some(spill) };
        let mut b = PartitionBuffers::new(limits);
        let key = PartitionKey { event_type: Arc::from("t"), hour: 1 };
        for l in &lines {
            assert!(b.push(&key, l.as_bytes()).unwrap().is_none());
        }
        assert_eq!(b.spilled_bytes(), 0);
        assert!(!b.over_budget(), "{} bytes in memory", b.mem_bytes());
        let (_, part) = b.take_largest().unwrap();
        let recs = part.into_records().unwrap();
        assert!(recs.iter().eq(lines.iter().map(|l| l.as_bytes())));
    }
}
