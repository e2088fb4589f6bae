//! One run of a stream's id index, as a file of its own: the format (sorted blocks, then each block's
//! end and first id and the run's Bloom filter, then a footer), writing a run from entries in id order
//! with the fsyncs that make it safe to name in a manifest, and reading it back a block at a time. It does
//! not know which runs a stream has or when they merge: `index.rs` owns the manifest and the merges.
//!
//! Why files and not sled: a run is written once, read by block and deleted whole, which a file does
//! well and sled 0.34 does badly. Kept in a sled tree, runs cost about 1.4 KB of log writes per record
//! (sled copies a leaf on every insert) and memory that grew with the blocks ever written, about 11 bytes
//! per record beyond the index's own filters and fences (BENCHMARKS.md, "Runs in files"). A file read with
//! `pread` goes through the kernel's page cache, which is not the process's memory and is given back
//! under pressure; the process keeps only each run's fences, block ends and filter.
//!
//! Layout, integers little-endian: `[block]… [meta] [footer]`. A block is `[u32 n][n × u32 offset]`
//! then its entries, each `[u32 id length][id][20-byte IndexEntry]`, in id order; the offsets allow a
//! binary search without decoding the block. The meta is `[u32 blocks]`, then per block `[u64 end]`
//! `[u32 fence length][fence]` (the fence is the block's first id), then `[u32 words][words × u64]`, the
//! filter. The footer is `[u64 meta offset][u64 FNV-1a of the meta][8-byte magic]`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::index::IndexEntry;
use super::records::fingerprint;
use super::StoreError;

/// The most entries in one block of a run: a block is about 7 KiB for 30-byte ids, one `pread`.
pub(super) const BLOCK_ENTRIES: usize = 128;

/// Bits of Bloom filter per entry, and probes per lookup: about a 1 % false-positive rate.
const BLOOM_BITS_PER_ENTRY: usize = 10;
const BLOOM_PROBES: usize = 7;

const MAGIC: [u8; 8] = *b"hsrun\0\0\x01";
const FOOTER_LEN: u64 = 24;

/// A run as the manifest names it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct RunHead {
    pub id: u64,
    pub level: u8,
    pub len: u64,
}

/// Where run `id` of a stream lives in the stream's folder.
pub(super) fn run_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.run"))
}

/// The run id a file name in a stream's folder stands for, if it is a run's.
pub(super) fn run_id_of(file_name: &str) -> Option<u64> {
    let hex = file_name.strip_suffix(".run")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree: path.display().to_string(),
        reason: reason.into(),
    }
}

/// A Bloom filter over ids, by double hashing one stable 64-bit hash.
pub(super) struct Bloom {
    words: Vec<u64>,
}

impl Bloom {
    pub(super) fn with_capacity(entries: usize) -> Bloom {
        // Capped so that a corrupt run length cannot ask for more than about 320 MiB.
        let bits = entries
            .clamp(1, 1 << 28)
            .saturating_mul(BLOOM_BITS_PER_ENTRY)
            .next_multiple_of(64);
        Bloom {
            words: vec![0; bits / 64],
        }
    }

    /// The bits `id` sets: double hashing of FNV-1a, with splitmix64's finaliser giving the second hash
    /// its own bits.
    fn probes(&self, id: &[u8]) -> [usize; BLOOM_PROBES] {
        let h = fingerprint(id);
        let mut h2 = h ^ (h >> 30);
        h2 = h2.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h2 ^= h2 >> 27;
        h2 = h2.wrapping_mul(0x94d0_49bb_1331_11eb);
        h2 ^= h2 >> 31;
        let bits = (self.words.len() * 64) as u64;
        let mut out = [0; BLOOM_PROBES];
        for (i, bit) in (0u64..).zip(out.iter_mut()) {
            *bit = (h.wrapping_add(i.wrapping_mul(h2 | 1)) % bits) as usize;
        }
        out
    }

    pub(super) fn insert(&mut self, id: &[u8]) {
        for bit in self.probes(id) {
            self.words[bit / 64] |= 1 << (bit % 64);
        }
    }

    pub(super) fn may_contain(&self, id: &[u8]) -> bool {
        self.probes(id)
            .iter()
            .all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

/// Reads the length-prefixed parts of a meta or a block, reporting a short value as corrupt.
pub(super) struct Reader<'a> {
    pub(super) path: &'a Path,
    pub(super) bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn short(&self, what: &str) -> StoreError {
        corrupt(self.path, format!("an index run cut short in {what}"))
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], StoreError> {
        let (n, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or_else(|| self.short(what))?;
        self.bytes = rest;
        Ok(*n)
    }

    fn u32(&mut self, what: &str) -> Result<u32, StoreError> {
        self.array::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, StoreError> {
        self.array::<8>(what).map(u64::from_le_bytes)
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < len {
            return Err(self.short(what));
        }
        let (part, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(part)
    }
}

/// A block, parsed only as far as its offsets.
pub(super) struct Block<'a> {
    path: &'a Path,
    offsets: &'a [u8],
    entries: &'a [u8],
}

impl<'a> Block<'a> {
    pub(super) fn parse(path: &'a Path, bytes: &'a [u8]) -> Result<Block<'a>, StoreError> {
        let mut r = Reader { path, bytes };
        let n = r.u32("a block header")? as usize;
        let offsets = r.take(n.saturating_mul(4), "a block's offsets")?;
        Ok(Block {
            path,
            offsets,
            entries: r.bytes,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.offsets.len() / 4
    }

    pub(super) fn entry(&self, i: usize) -> Result<(&'a [u8], IndexEntry), StoreError> {
        let out_of_bounds = || corrupt(self.path, "an index block entry out of bounds");
        let off = self
            .offsets
            .get(i * 4..i * 4 + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(out_of_bounds)? as usize;
        let mut r = Reader {
            path: self.path,
            bytes: self.entries.get(off..).ok_or_else(out_of_bounds)?,
        };
        let id_len = r.u32("a block entry")? as usize;
        let id = r.take(id_len, "a block entry's id")?;
        let entry = IndexEntry::decode(r.bytes).ok_or_else(out_of_bounds)?;
        Ok((id, entry))
    }

    fn find(&self, id: &[u8]) -> Result<Option<IndexEntry>, StoreError> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (key, entry) = self.entry(mid)?;
            match key.cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(entry)),
            }
        }
        Ok(None)
    }
}

/// A run, open for reading: the file, each block's end and first id, and the filter.
pub(super) struct Run {
    pub(super) head: RunHead,
    path: PathBuf,
    file: File,
    /// Where each block ends; block `i` starts where block `i - 1` ends (the first at 0).
    block_ends: Vec<u64>,
    fences: Vec<Box<[u8]>>,
    bloom: Bloom,
}

impl Run {
    /// Opens run `head` in `dir`, checking its footer and meta.
    pub(super) fn open(dir: &Path, head: RunHead) -> Result<Run, StoreError> {
        let path = run_path(dir, head.id);
        let file = File::open(&path).map_err(io_error(&path))?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        let footer_at = len
            .checked_sub(FOOTER_LEN)
            .ok_or_else(|| corrupt(&path, format!("{len} bytes, shorter than a footer")))?;
        let mut footer = [0u8; FOOTER_LEN as usize];
        file.read_exact_at(&mut footer, footer_at)
            .map_err(io_error(&path))?;
        let mut r = Reader {
            path: &path,
            bytes: &footer,
        };
        let meta_at = r.u64("its footer")?;
        let meta_sum = r.u64("its footer")?;
        if r.bytes != MAGIC {
            return Err(corrupt(&path, "not an index run (its footer has no magic)"));
        }
        if meta_at > footer_at {
            return Err(corrupt(&path, "its meta starts past its footer"));
        }
        let mut meta = vec![0u8; (footer_at - meta_at) as usize];
        file.read_exact_at(&mut meta, meta_at)
            .map_err(io_error(&path))?;
        if fingerprint(&meta) != meta_sum {
            return Err(corrupt(&path, "its meta does not match its checksum"));
        }
        let mut r = Reader {
            path: &path,
            bytes: &meta,
        };
        let blocks = r.u32("its block count")? as usize;
        let mut block_ends = Vec::with_capacity(blocks.min(1 << 20));
        let mut fences = Vec::with_capacity(blocks.min(1 << 20));
        for _ in 0..blocks {
            let end = r.u64("a block end")?;
            if end > meta_at || block_ends.last().is_some_and(|&last| end <= last) {
                return Err(corrupt(&path, "its block ends are out of order"));
            }
            block_ends.push(end);
            let fence_len = r.u32("a fence")? as usize;
            fences.push(r.take(fence_len, "a fence")?.into());
        }
        let words = r.u32("its filter")? as usize;
        let words = r
            .take(words.saturating_mul(8), "its filter")?
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
            .collect::<Vec<u64>>();
        if words.is_empty() {
            return Err(corrupt(&path, "its filter is empty"));
        }
        Ok(Run {
            head,
            path,
            file,
            block_ends,
            fences,
            bloom: Bloom { words },
        })
    }

    /// Reads block `i` into `buf`.
    fn read_block(&self, i: usize, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        let start = match i {
            0 => 0,
            _ => self.block_ends[i - 1],
        };
        let end = self.block_ends[i];
        buf.clear();
        buf.resize((end - start) as usize, 0);
        self.file
            .read_exact_at(buf, start)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => corrupt(&self.path, "a block past its end"),
                _ => io_error(&self.path)(e),
            })
    }

    /// The entry of `id` in this run, if the run has one.
    pub(super) fn get(&self, id: &[u8]) -> Result<Option<IndexEntry>, StoreError> {
        if !self.bloom.may_contain(id) {
            return Ok(None);
        }
        let Some(block) = self
            .fences
            .partition_point(|f| f.as_ref() <= id)
            .checked_sub(1)
        else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        self.read_block(block, &mut buf)?;
        Block::parse(&self.path, &buf)?.find(id)
    }

    /// The run's entries in id order.
    pub(super) fn entries(&self) -> RunEntries<'_> {
        RunEntries {
            run: self,
            block: 0,
            buf: Vec::new(),
            next: 0,
            loaded: false,
        }
    }

    /// Deletes the run's file; a run already gone is not an error.
    pub(super) fn delete(self) -> Result<(), StoreError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&self.path)(e)),
            _ => Ok(()),
        }
    }

    #[cfg(test)]
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// An id with its entry, as a run hands them out.
pub(super) type Owned = (Box<[u8]>, IndexEntry);

/// Reads one run's entries in id order, block by block.
pub(super) struct RunEntries<'a> {
    run: &'a Run,
    block: usize,
    buf: Vec<u8>,
    next: usize,
    loaded: bool,
}

impl RunEntries<'_> {
    pub(super) fn next_entry(&mut self) -> Result<Option<Owned>, StoreError> {
        loop {
            if self.loaded {
                let block = Block::parse(&self.run.path, &self.buf)?;
                if self.next < block.len() {
                    let (id, entry) = block.entry(self.next)?;
                    self.next += 1;
                    return Ok(Some((id.into(), entry)));
                }
                self.block += 1;
            }
            if self.block >= self.run.block_ends.len() {
                return Ok(None);
            }
            self.run.read_block(self.block, &mut self.buf)?;
            self.loaded = true;
            self.next = 0;
        }
    }
}

/// Writes a run block by block, from entries given in id order.
pub(super) struct RunWriter {
    path: PathBuf,
    dir: PathBuf,
    id: u64,
    file: File,
    written: u64,
    block_ends: Vec<u64>,
    fences: Vec<Box<[u8]>>,
    bloom: Bloom,
    len: u64,
    offsets: Vec<u8>,
    entries: Vec<u8>,
    out: Vec<u8>,
}

impl RunWriter {
    /// Creates run `id` in `dir` (replacing a file of that name: only a run no manifest names can have
    /// it), sizing its filter for `capacity` entries.
    pub(super) fn create(dir: &Path, id: u64, capacity: usize) -> Result<RunWriter, StoreError> {
        let path = run_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_error(&path))?;
        Ok(RunWriter {
            path,
            dir: dir.to_path_buf(),
            id,
            file,
            written: 0,
            block_ends: Vec::new(),
            fences: Vec::new(),
            bloom: Bloom::with_capacity(capacity),
            len: 0,
            offsets: Vec::new(),
            entries: Vec::new(),
            out: Vec::new(),
        })
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn push(&mut self, id: &[u8], entry: &IndexEntry) -> Result<(), StoreError> {
        if self.offsets.is_empty() {
            self.fences.push(id.into());
        }
        // Ids are at most `MAX_ID_BYTES` (records.rs) and a block at most `BLOCK_ENTRIES` of them.
        self.offsets
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        self.entries
            .extend_from_slice(&(id.len() as u32).to_le_bytes());
        self.entries.extend_from_slice(id);
        entry.encode_into(&mut self.entries);
        self.bloom.insert(id);
        self.len += 1;
        if self.offsets.len() / 4 >= BLOCK_ENTRIES {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<(), StoreError> {
        if self.offsets.is_empty() {
            return Ok(());
        }
        self.out.clear();
        self.out
            .extend_from_slice(&((self.offsets.len() / 4) as u32).to_le_bytes());
        self.out.extend_from_slice(&self.offsets);
        self.out.extend_from_slice(&self.entries);
        self.written += write_all(&self.file, &self.path, &self.out)?;
        self.block_ends.push(self.written);
        self.offsets.clear();
        self.entries.clear();
        Ok(())
    }

    /// Writes the last block, the meta and the footer, and makes the file and its name durable (file,
    /// then folder fsync) before returning the run: a manifest may name it from then on.
    pub(super) fn finish(mut self, level: u8) -> Result<Run, StoreError> {
        self.flush_block()?;
        let meta_at = self.written;
        self.out.clear();
        self.out
            .extend_from_slice(&(self.block_ends.len() as u32).to_le_bytes());
        for (end, fence) in self.block_ends.iter().zip(&self.fences) {
            self.out.extend_from_slice(&end.to_le_bytes());
            self.out
                .extend_from_slice(&(fence.len() as u32).to_le_bytes());
            self.out.extend_from_slice(fence);
        }
        self.out
            .extend_from_slice(&(self.bloom.words.len() as u32).to_le_bytes());
        for w in &self.bloom.words {
            self.out.extend_from_slice(&w.to_le_bytes());
        }
        let sum = fingerprint(&self.out);
        self.out.extend_from_slice(&meta_at.to_le_bytes());
        self.out.extend_from_slice(&sum.to_le_bytes());
        self.out.extend_from_slice(&MAGIC);
        write_all(&self.file, &self.path, &self.out)?;
        self.file.sync_all().map_err(io_error(&self.path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&self.dir))?;
        Ok(Run {
            head: RunHead {
                id: self.id,
                level,
                len: self.len,
            },
            path: self.path,
            file: self.file,
            block_ends: self.block_ends,
            fences: self.fences,
            bloom: self.bloom,
        })
    }
}

/// Writes `bytes` at the file's end and returns how many that was.
fn write_all(mut file: &File, path: &Path, bytes: &[u8]) -> Result<u64, StoreError> {
    file.write_all(bytes).map_err(io_error(path))?;
    Ok(bytes.len() as u64)
}

/// Encodes entries (in id order) as one block, as a run file holds it; schema 4 kept the same bytes in
/// sled, which is what its migration reads.
#[cfg(test)]
pub(super) fn encode_block(entries: &[(&[u8], IndexEntry)]) -> Vec<u8> {
    let mut offsets = Vec::new();
    let mut body = Vec::new();
    for (id, entry) in entries {
        offsets.extend_from_slice(&(body.len() as u32).to_le_bytes());
        body.extend_from_slice(&(id.len() as u32).to_le_bytes());
        body.extend_from_slice(id);
        entry.encode_into(&mut body);
    }
    let mut out = (entries.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&offsets);
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> IndexEntry {
        IndexEntry {
            chunk: n,
            slot: (n % 7) as u32,
            fingerprint: n * 31,
        }
    }

    #[test]
    fn a_bloom_filter_has_no_false_negatives_and_few_false_positives() {
        let mut b = Bloom::with_capacity(10_000);
        for i in 0..10_000u32 {
            b.insert(format!("id-{i}").as_bytes());
        }
        assert!((0..10_000u32).all(|i| b.may_contain(format!("id-{i}").as_bytes())));
        let false_positives = (0..10_000u32)
            .filter(|i| b.may_contain(format!("other-{i}").as_bytes()))
            .count();
        assert!(false_positives < 300, "{false_positives} of 10,000");
    }

    fn write_run(dir: &Path, id: u64, n: u64) -> Run {
        let mut w = RunWriter::create(dir, id, n as usize).unwrap();
        for i in 0..n {
            w.push(format!("{i:05}").as_bytes(), &entry(i)).unwrap();
        }
        w.finish(2).unwrap()
    }

    #[test]
    fn a_run_reads_back_every_entry_by_id_and_in_order_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let n = (BLOCK_ENTRIES * 3 + 5) as u64;
        let run = write_run(dir.path(), 9, n);
        assert_eq!(run.head.len, n);
        assert_eq!(run.head.level, 2);
        drop(run);
        let run = Run::open(
            dir.path(),
            RunHead {
                id: 9,
                level: 2,
                len: n,
            },
        )
        .unwrap();
        assert_eq!(run.block_ends.len(), 4);
        for i in 0..n {
            assert_eq!(
                run.get(format!("{i:05}").as_bytes()).unwrap(),
                Some(entry(i))
            );
        }
        assert_eq!(run.get(b"").unwrap(), None);
        assert_eq!(run.get(b"00003x").unwrap(), None);
        assert_eq!(run.get(b"99999").unwrap(), None);
        let mut all = Vec::new();
        let mut entries = run.entries();
        while let Some((id, e)) = entries.next_entry().unwrap() {
            all.push((String::from_utf8(id.into()).unwrap(), e));
        }
        let want: Vec<_> = (0..n).map(|i| (format!("{i:05}"), entry(i))).collect();
        assert_eq!(all, want);
        assert_eq!(run_id_of("0000000000000009.run"), Some(9));
        assert_eq!(run_id_of("9.run"), None);
        assert_eq!(run_id_of("0000000000000009.run.tmp"), None);
    }

    #[test]
    fn a_damaged_run_is_an_error_naming_its_file_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let head = RunHead {
            id: 1,
            level: 0,
            len: 300,
        };
        let path = write_run(dir.path(), 1, 300).path().to_path_buf();
        let bytes = std::fs::read(&path).unwrap();
        let names_file = |e: StoreError| match e {
            StoreError::Corrupt { tree, reason } => {
                assert_eq!(tree, path.display().to_string(), "{reason}");
                reason
            }
            other => panic!("{other:?}"),
        };

        // Cut off inside the footer, and inside the meta.
        for keep in [bytes.len() - 3, bytes.len() - 40, 10] {
            std::fs::write(&path, &bytes[..keep]).unwrap();
            let reason = names_file(Run::open(dir.path(), head).err().expect("refused"));
            assert!(!reason.is_empty());
        }
        // A flipped bit in the meta fails its checksum.
        let mut flipped = bytes.clone();
        let at = bytes.len() - FOOTER_LEN as usize - 5;
        flipped[at] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let reason = names_file(Run::open(dir.path(), head).err().expect("refused"));
        assert!(reason.contains("checksum"), "{reason}");

        // A block torn inside (its offsets point past its end) fails the reads that touch it only.
        let mut torn = bytes.clone();
        torn[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &torn).unwrap();
        let run = Run::open(dir.path(), head).unwrap();
        names_file(run.get(b"00000").unwrap_err());
        assert_eq!(
            run.get(b"00200").unwrap(),
            Some(entry(200)),
            "other blocks still read"
        );

        // A missing file is an I/O error that names it.
        std::fs::remove_file(&path).unwrap();
        match Run::open(dir.path(), head).err().expect("refused") {
            StoreError::Io { path: p, .. } => assert_eq!(p, path.display().to_string()),
            other => panic!("{other:?}"),
        }
    }
}
