//! Input sources for `eventctl ingest`: files, folders, globs or stdin, with `.gz` and
//! `.zst` decoded on the fly, cut into chunks of whole lines.
//!
//! Memory stays bounded whatever the input: chunks are a few MiB, and a line longer than the
//! hard limit is not kept whole: its first bytes are kept for the quarantine and the rest is
//! skipped up to the next newline.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where lines come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Standard input.
    Stdin,
    /// A file.
    File(PathBuf),
}

impl Source {
    /// Display name (stored as the quarantine's `source`).
    pub fn name(&self) -> String {
        match self {
            Source::Stdin => "-".to_owned(),
            Source::File(p) => p.display().to_string(),
        }
    }

    /// Opens the source, decoding `.gz` / `.zst` by file extension.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            Source::Stdin => Ok(Box::new(io::stdin())),
            Source::File(p) => {
                let f = File::open(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                let name = p.to_string_lossy();
                if name.ends_with(".gz") {
                    Ok(Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, f))))
                } else if name.ends_with(".zst") || name.ends_with(".zstd") {
                    Ok(Box::new(zstd::Decoder::new(f)?))
                } else {
                    Ok(Box::new(f))
                }
            }
        }
    }
}

/// Expands the command-line inputs: `-` or nothing for stdin, folders (recursively, sorted),
/// globs, files. A missing input is an error before anything is read.
pub fn expand(inputs: &[String]) -> Result<Vec<Source>, String> {
    if inputs.is_empty() {
        return Ok(vec![Source::Stdin]);
    }
    let mut out = Vec::new();
    for input in inputs {
        if input == "-" {
            out.push(Source::Stdin);
        } else if input.contains(['*', '?', '[']) {
            let paths = glob::glob(input).map_err(|e| format!("bad glob {input:?}: {e}"))?;
            let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
            if found.is_empty() {
                return Err(format!("{input}: no file matches"));
            }
            found.sort();
            out.extend(found.into_iter().map(Source::File));
        } else {
            let p = Path::new(input);
            if p.is_dir() {
                let mut found = Vec::new();
                walk(p, &mut found).map_err(|e| format!("{input}: {e}"))?;
                found.sort();
                out.extend(found.into_iter().map(Source::File));
            } else if p.is_file() {
                out.push(Source::File(p.to_path_buf()));
            } else {
                return Err(format!("{input}: no such file or folder"));
            }
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// A run of whole lines from one source.
pub struct Chunk {
    /// The source's name.
    pub source: Arc<str>,
    /// Line number of the first line (1-based).
    pub first_line: u64,
    /// The lines, each ended by `\n` (the last one may lack it at end of input).
    pub data: Vec<u8>,
}

/// A line too long to keep whole.
pub struct LongLine {
    /// The source's name.
    pub source: Arc<str>,
    /// Its line number.
    pub line: u64,
    /// Its first bytes.
    pub head: Vec<u8>,
    /// Its full length.
    pub len: u64,
}

/// What the reader produces.
pub enum Piece {
    /// Whole lines.
    Lines(Chunk),
    /// A line over the hard limit.
    Long(LongLine),
}

/// Cuts a reader into pieces of about `chunk_bytes`. Lines longer than `max_line` are
/// reported as [`LongLine`] with their first `max_line` bytes.
pub fn read_pieces(
    source: Arc<str>,
    reader: Box<dyn Read + Send>,
    chunk_bytes: usize,
    max_line: usize,
    mut emit: impl FnMut(Piece) -> bool,
    mut on_bytes: impl FnMut(u64),
) -> io::Result<()> {
    let mut r = BufReader::with_capacity(1 << 20, reader);
    let mut line_no: u64 = 1;
    let fresh = |first_line| Chunk { source: source.clone(), first_line, data: Vec::with_capacity(chunk_bytes + 4096) };
    let mut chunk = fresh(1);
    let mut lines_in_chunk = 0u64;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        // Bytes of the current (unfinished) line already in the chunk.
        let line_start = memchr::memrchr(b'\n', &chunk.data).map_or(0, |p| p + 1);
        let partial = chunk.data.len() - line_start;
        match memchr::memchr(b'\n', buf) {
            Some(pos) if partial + pos <= max_line => {
                chunk.data.extend_from_slice(&buf[..=pos]);
                r.consume(pos + 1);
                on_bytes(pos as u64 + 1);
                lines_in_chunk += 1;
                line_no += 1;
                // Take more whole lines from the buffer at once.
                if chunk.data.len() >= chunk_bytes {
                    lines_in_chunk = 0;
                    if !emit(Piece::Lines(std::mem::replace(&mut chunk, fresh(line_no)))) {
                        return Ok(());
                    }
                }
            }
            Some(_) | None if partial + buf.len().min(max_line + 1) > max_line => {
                // A line over the limit: keep its head, skip the rest.
                let mut head = chunk.data.split_off(line_start);
                let mut len = head.len() as u64;
                loop {
                    let buf = r.fill_buf()?;
                    if buf.is_empty() {
                        break;
                    }
                    let (take, done) = match memchr::memchr(b'\n', buf) {
                        Some(p) => (p, true),
                        None => (buf.len(), false),
                    };
                    let room = max_line.saturating_sub(head.len()).min(take);
                    head.extend_from_slice(&buf[..room]);
                    len += take as u64;
                    let consumed = take + usize::from(done);
                    r.consume(consumed);
                    on_bytes(consumed as u64);
                    if done {
                        break;
                    }
                }
                if !emit(Piece::Long(LongLine { source: source.clone(), line: line_no, head, len })) {
                    return Ok(());
                }
                line_no += 1;
                if lines_in_chunk == 0 {
                    chunk.first_line = line_no;
                } else {
                    // Lines already in the chunk keep their numbers; send them now so the
                    // next line's number starts a new chunk.
                    lines_in_chunk = 0;
                    if !emit(Piece::Lines(std::mem::replace(&mut chunk, fresh(line_no)))) {
                        return Ok(());
                    }
                }
            }
            _ => {
                // No newline yet and still under the limit: take the whole buffer.
                let n = buf.len();
                chunk.data.extend_from_slice(buf);
                r.consume(n);
                on_bytes(n as u64);
            }
        }
    }
    if !chunk.data.is_empty() {
        emit(Piece::Lines(chunk));
    }
    Ok(())
}

/// Splits a chunk into its lines (without `\n`, without a trailing `\r`), as `split` on
/// `\n` would, with a SIMD search for the line ends.
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    let mut ends = memchr::memchr_iter(b'\n', data);
    let mut start = Some(0);
    std::iter::from_fn(move || {
        let from = start?;
        let end = ends.next();
        start = end.map(|e| e + 1);
        let line = &data[from..end.unwrap_or(data.len())];
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks as (first line, lines) and long lines as (line, bytes kept, length).
    type Read = (Vec<(u64, Vec<Vec<u8>>)>, Vec<(u64, usize, u64)>);

    fn run(input: &[u8], chunk: usize, max_line: usize) -> Read {
        let mut chunks = Vec::new();
        let mut longs = Vec::new();
        read_pieces(Arc::from("t"), Box::new(io::Cursor::new(input.to_vec())), chunk, max_line, |p| {
            match p {
                Piece::Lines(c) => chunks.push((c.first_line, lines(&c.data).map(<[u8]>::to_vec).collect())),
                Piece::Long(l) => longs.push((l.line, l.head.len(), l.len)),
            }
            true
        }, |_| {})
        .unwrap();
        (chunks, longs)
    }

    #[test]
    fn keeps_line_numbers_and_cuts_long_lines() {
        let mut input = b"a\nbb\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend(b"\nccc\r\nlast");
        let (chunks, longs) = run(&input, 4, 10);
        let all: Vec<(u64, Vec<u8>)> = chunks
            .iter()
            .flat_map(|(first, ls)| ls.iter().enumerate().map(move |(i, l)| (first + i as u64, l.clone())))
            .collect();
        assert_eq!(all, vec![(1, b"a".to_vec()), (2, b"bb".to_vec()), (4, b"ccc".to_vec()), (5, b"last".to_vec())]);
        assert_eq!(longs, vec![(3, 10, 100)]);
    }

    #[test]
    fn empty_lines_are_lines() {
        let (chunks, _) = run(b"a\n\nb\n", 1 << 20, 100);
        assert_eq!(chunks[0].1.len(), 3);
    }

    #[test]
    fn lines_split_as_newlines_do_whatever_the_chunk_looks_like() {
        let cases: [&[u8]; 9] = [b"", b"\n", b"\n\n", b"a", b"a\n", b"a\r\n\nb", b"a\nb\r\n", b"\r\n\r", b"x\ny\nz\n\n"];
        for data in cases {
            let want: Vec<&[u8]> = data
                .strip_suffix(b"\n")
                .unwrap_or(data)
                .split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .collect();
            assert_eq!(lines(data).collect::<Vec<_>>(), want, "{:?}", String::from_utf8_lossy(data));
        }
    }
}
