//! Per-partition buffers of validated events, bounded in memory.
//!
//! Events wait here until their partition is flushed as one file. Each partition keeps an
//! open chunk and, once the buffers are past half their budget, zstd-compressed closed chunks
//! (JSON compresses 4-10x), so the memory budget holds several times more events than raw
//! buffering would, and fewer, larger files come out. Callers flush a partition when it is full (`push` returns it), the largest one
//! when the whole buffer is over budget, old ones by age, and all of them at the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::LakeError;
use crate::layout::PartitionKey;

/// Limits of the buffers.
#[derive(Debug, Clone)]
pub struct BufferLimits {
    /// Memory for buffered events (compressed chunks plus open chunks), in bytes.
    pub max_bytes: usize,
    /// A partition is handed out for flushing once it holds this many raw bytes.
    pub max_partition_raw_bytes: usize,
    /// Size at which an open chunk is compressed.
    pub chunk_bytes: usize,
    /// zstd level of chunks.
    pub level: i32,
}

impl Default for BufferLimits {
    fn default() -> Self {
        BufferLimits { max_bytes: 512 << 20, max_partition_raw_bytes: 64 << 20, chunk_bytes: 64 << 10, level: 1 }
    }
}

/// The buffered events of one partition.
#[derive(Debug)]
pub struct PartitionBuffer {
    frames: Vec<(usize, Vec<u8>)>,
    open: Vec<u8>,
    rows: usize,
    raw_bytes: usize,
    mem_bytes: usize,
    opened_at: Instant,
}

impl PartitionBuffer {
    fn new() -> Self {
        PartitionBuffer { frames: Vec::new(), open: Vec::new(), rows: 0, raw_bytes: 0, mem_bytes: 0, opened_at: Instant::now() }
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

    /// The events, decompressed, as length-prefixed records; iterate with [`Records`].
    pub fn into_records(self) -> Result<Records, LakeError> {
        let mut data = Vec::with_capacity(self.raw_bytes + 4 * self.rows);
        if !self.frames.is_empty() {
            let mut d = zstd::bulk::Decompressor::new()
                .map_err(|e| LakeError::Internal(format!("zstd decompressor: {e}")))?;
            for (raw_len, frame) in &self.frames {
                let start = data.len();
                data.resize(start + raw_len, 0);
                let n = d
                    .decompress_to_buffer(frame, &mut data[start..])
                    .map_err(|e| LakeError::Internal(format!("buffer chunk does not decompress: {e}")))?;
                data.truncate(start + n);
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

/// Buffers of all open partitions.
#[derive(Debug)]
pub struct PartitionBuffers {
    parts: HashMap<PartitionKey, PartitionBuffer>,
    compressor: Compressor,
    mem_bytes: usize,
    limits: BufferLimits,
}

impl PartitionBuffers {
    /// Empty buffers.
    pub fn new(limits: BufferLimits) -> Self {
        PartitionBuffers { parts: HashMap::new(), compressor: Compressor::new(limits.level), mem_bytes: 0, limits }
    }

    /// Memory held, in bytes.
    pub fn mem_bytes(&self) -> usize {
        self.mem_bytes
    }

    /// Open partitions.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// True when over the memory budget: flush [`take_largest`](Self::take_largest).
    pub fn over_budget(&self) -> bool {
        self.mem_bytes > self.limits.max_bytes
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
        // Compression costs CPU: chunks are compressed only once the buffers are past half
        // their budget (or a chunk grew very large), so small ingests never pay for it.
        let chunk = self.limits.chunk_bytes;
        if part.open.len() >= chunk && pressure || part.open.len() >= 16 * chunk {
            let frame = self.compressor.compress(&part.open)?;
            mem = mem - part.open.capacity() + frame.len();
            part.frames.push((part.open.len(), frame));
            part.open = Vec::new();
        }
        let frames_mem: usize = mem;
        self.mem_bytes = self.mem_bytes - part.mem_bytes + frames_mem;
        part.mem_bytes = frames_mem;
        if part.raw_bytes >= self.limits.max_partition_raw_bytes {
            return Ok(self.remove(key));
        }
        Ok(None)
    }

    fn remove(&mut self, key: &PartitionKey) -> Option<(PartitionKey, PartitionBuffer)> {
        let (k, p) = self.parts.remove_entry(key)?;
        self.mem_bytes -= p.mem_bytes;
        Some((k, p))
    }

    /// Takes the partition holding the most memory.
    pub fn take_largest(&mut self) -> Option<(PartitionKey, PartitionBuffer)> {
        let key = self.parts.iter().max_by_key(|(_, p)| p.mem_bytes).map(|(k, _)| k.clone())?;
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
        let roomy = BufferLimits { max_bytes: 1 << 20, max_partition_raw_bytes: 1 << 30, chunk_bytes: 64 << 10, level: 1 };
        let mut b = PartitionBuffers::new(roomy);
        for l in &lines {
            assert!(b.push(&key, l.as_bytes()).unwrap().is_none());
        }
        assert!(b.mem_bytes() >= raw, "uncompressed {} < raw {raw}", b.mem_bytes());
        // A tight budget: past half of it, chunks are compressed and memory stays under it.
        let tight = BufferLimits { max_bytes: 40_000, max_partition_raw_bytes: 1 << 30, chunk_bytes: 1024, level: 1 };
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
        let limits = BufferLimits { max_bytes: 1 << 20, max_partition_raw_bytes: 100, chunk_bytes: 1024, level: 1 };
        let mut b = PartitionBuffers::new(limits);
        let key = PartitionKey { event_type: Arc::from("t"), hour: 1 };
        assert!(b.push(&key, &[b'x'; 60]).unwrap().is_none());
        let (_, full) = b.push(&key, &[b'x'; 60]).unwrap().unwrap();
        assert_eq!(full.rows(), 2);
        assert!(b.is_empty());
    }
}
