//! One product's window state as the Redis store keeps it (`st:<product>`): its non-empty
//! bucket counts per (window, counter), in a compact binary form the updater reads, changes
//! and writes back in one transaction. The window sums (what reads return, `s:<product>`)
//! are derived from it: every bucket still held is inside its window (a bucket is removed
//! when it leaves), so a sum is the total of the window's buckets for that counter.
//!
//! Encoding: a version byte (1), the number of entries (LEB128), then per entry the window
//! and counter indexes (one byte each), the bucket and the count (zigzag LEB128).

use crate::layout::Layout;

const VERSION: u8 = 1;

/// A stored state that cannot be read (written by something else, or truncated).
#[derive(Debug, thiserror::Error)]
#[error("unreadable product state: {0}")]
pub struct StateError(&'static str);

/// One bucket count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Window index.
    pub window: u8,
    /// Counter index.
    pub counter: u8,
    /// Bucket of that window.
    pub bucket: i64,
    /// Events.
    pub count: i64,
}

/// A product's bucket counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductState {
    entries: Vec<Entry>,
}

impl ProductState {
    /// Reads a stored state.
    pub fn decode(mut bytes: &[u8]) -> Result<ProductState, StateError> {
        let Some((&version, rest)) = bytes.split_first() else {
            return Ok(ProductState::default());
        };
        if version != VERSION {
            return Err(StateError("unknown version"));
        }
        bytes = rest;
        let n = read_varint(&mut bytes)? as usize;
        // Each entry takes at least 4 bytes: a corrupt count cannot make us allocate much.
        if n > bytes.len() / 4 {
            return Err(StateError("entry count beyond the data"));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let [window, counter] = take2(&mut bytes)?;
            let bucket = unzigzag(read_varint(&mut bytes)?);
            let count = unzigzag(read_varint(&mut bytes)?);
            entries.push(Entry { window, counter, bucket, count });
        }
        if !bytes.is_empty() {
            return Err(StateError("trailing bytes"));
        }
        Ok(ProductState { entries })
    }

    /// Writes the state into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(VERSION);
        write_varint(out, self.entries.len() as u64);
        for e in &self.entries {
            out.push(e.window);
            out.push(e.counter);
            write_varint(out, zigzag(e.bucket));
            write_varint(out, zigzag(e.count));
        }
    }

    /// No bucket held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bucket counts.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Adds `delta` to a bucket; true when the bucket (for any counter) was not held before,
    /// i.e. the product must be filed in that bucket's expiry schedule.
    pub fn add(&mut self, window: usize, counter: usize, bucket: i64, delta: i64) -> bool {
        let (w, c) = (window as u8, counter as u8);
        let mut bucket_known = false;
        for e in &mut self.entries {
            if e.window == w && e.bucket == bucket {
                if e.counter == c {
                    e.count += delta;
                    return false;
                }
                bucket_known = true;
            }
        }
        self.entries.push(Entry { window: w, counter: c, bucket, count: delta });
        !bucket_known
    }

    /// Removes every count of `bucket` in `window`; how many were removed.
    pub fn remove_bucket(&mut self, window: usize, bucket: i64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| !(e.window as usize == window && e.bucket == bucket));
        before - self.entries.len()
    }

    /// Removes the buckets that should have left their window already (their due bucket is
    /// at or before the window's processed marker `done[w]`): they are left over when a
    /// schedule was lost (it expired while the updater was down). How many were removed.
    pub fn remove_overdue(&mut self, layout: &Layout, done: &[Option<i64>]) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| {
            let w = e.window as usize;
            match (layout.windows.get(w), done.get(w).copied().flatten()) {
                (Some(win), Some(d)) => win.due(e.bucket) > d,
                (Some(_), None) => true,
                (None, _) => false,
            }
        });
        before - self.entries.len()
    }

    /// The window sums, one per column (counter-major, [`Layout::column`]).
    pub fn sums(&self, layout: &Layout) -> Vec<i64> {
        let mut out = vec![0i64; layout.counters.len() * layout.windows.len()];
        for e in &self.entries {
            if (e.counter as usize) < layout.counters.len() && (e.window as usize) < layout.windows.len() {
                out[layout.column(e.counter as usize, e.window as usize)] += e.count;
            }
        }
        out
    }
}

/// Sums as the read view stores them: decimal, comma-separated, column order (`12,340,0,...`;
/// small, and readable with `redis-cli GET`).
pub fn encode_sums(sums: &[i64], out: &mut Vec<u8>) {
    out.clear();
    for (k, s) in sums.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(s.to_string().as_bytes());
    }
}

/// A product's sums from its read view (none, or a missing or unreadable column, gives
/// zeros).
pub fn decode_sums(value: Option<&[u8]>, cols: usize) -> Vec<i64> {
    let mut out = vec![0i64; cols];
    if let Some(bytes) = value {
        for (slot, part) in out.iter_mut().zip(bytes.split(|&b| b == b',')) {
            *slot = std::str::from_utf8(part).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        }
    }
    out
}

fn take2(bytes: &mut &[u8]) -> Result<[u8; 2], StateError> {
    match bytes {
        [a, b, rest @ ..] => {
            let out = [*a, *b];
            *bytes = rest;
            Ok(out)
        }
        _ => Err(StateError("truncated entry")),
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, StateError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&b, rest)) = bytes.split_first() else {
            return Err(StateError("truncated number"));
        };
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(StateError("number too long"))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_new_buckets() {
        let layout = Layout::default_layout();
        let mut s = ProductState::default();
        assert!(s.add(0, 0, 29_000_000, 3));
        assert!(!s.add(0, 0, 29_000_000, 2), "same bucket and counter");
        assert!(!s.add(0, 1, 29_000_000, 1), "same bucket, other counter: already scheduled");
        assert!(s.add(2, 1, 490_000, 7));
        assert!(s.add(1, 0, -5, 1), "negative buckets survive the encoding");
        let mut buf = Vec::new();
        s.encode(&mut buf);
        let back = ProductState::decode(&buf).unwrap();
        assert_eq!(back, s);
        let sums = back.sums(&layout);
        assert_eq!(sums[layout.column(0, 0)], 5);
        assert_eq!(sums[layout.column(1, 0)], 1);
        assert_eq!(sums[layout.column(1, 2)], 7);
        assert_eq!(sums[layout.column(0, 1)], 1);
        let mut s2 = back.clone();
        assert_eq!(s2.remove_bucket(0, 29_000_000), 2);
        assert_eq!(s2.sums(&layout)[layout.column(0, 0)], 0);
        assert_eq!(ProductState::decode(&[]).unwrap(), ProductState::default());
    }

    #[test]
    fn corrupt_states_are_errors_not_panics() {
        assert!(ProductState::decode(&[9]).is_err());
        assert!(ProductState::decode(&[1, 200]).is_err());
        assert!(ProductState::decode(&[1, 1, 0]).is_err());
        assert!(ProductState::decode(&[1, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut buf = Vec::new();
        let mut s = ProductState::default();
        s.add(0, 0, 1, 1);
        s.encode(&mut buf);
        buf.push(0);
        assert!(ProductState::decode(&buf).is_err());
    }

    #[test]
    fn overdue_buckets_are_dropped() {
        let layout = Layout::default_layout();
        let mut s = ProductState::default();
        let hour = &layout.windows[0];
        s.add(0, 0, 100, 1);
        s.add(0, 0, 200, 1);
        // Window 0's schedules are processed up to due bucket 100 + n: bucket 100 is overdue.
        assert_eq!(s.remove_overdue(&layout, &[Some(hour.due(100)), None, None]), 1);
        assert_eq!(s.entries().len(), 1);
    }

    #[test]
    fn sums_round_trip_through_the_view() {
        let mut v = Vec::new();
        encode_sums(&[5, -2, 0, 1 << 40], &mut v);
        assert_eq!(v, b"5,-2,0,1099511627776");
        assert_eq!(decode_sums(Some(&v), 6), vec![5, -2, 0, 1 << 40, 0, 0]);
        assert_eq!(decode_sums(None, 2), vec![0, 0]);
        assert_eq!(decode_sums(Some(b"7,x,3"), 3), vec![7, 0, 3]);
    }
}
