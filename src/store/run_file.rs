//! One run of a stream's id index, as a file of its own: the format (sorted blocks, then a table with
//! each block's end, first id and Bloom filter, then a footer), writing a run from entries in id order
//! with the fsyncs that make it safe to name in a manifest, and reading it back a block at a time. It does
//! not know which runs a stream has or when they merge: `index.rs` owns the manifest and the merges.
//!
//! Why files and not sled: a run is written once, read by block and deleted whole, which a file does
//! well and sled 0.34 does badly. Kept in a sled tree, runs cost about 1.4 KB of log writes per record
//! (sled copies a leaf on every insert) and memory that grew with the blocks ever written (BENCHMARKS.md,
//! "Runs in files").
//!
//! Why the table is mapped and not loaded: the filters and first ids come to about 1.6 bytes a record,
//! which held on the heap made the process grow with the stream (13 MiB at 8.7 M records) and a merge
//! build a second copy. Mapped read-only, they are file pages: the kernel keeps the hot ones and can drop
//! any of them, and the process's own memory stays the same whatever the stream's size. Blocks are read
//! with `pread`, through the page cache, one per lookup that gets past a filter. Writing keeps one block
//! in memory: the table is built at the end by reading the blocks back.
//!
//! Layout, integers little-endian: `[block]… [table] [footer]`. A block is `[u32 byte length]`, then
//! `[u32 n][n × u32 offset]` and its entries, each `[u32 id length][id][20-byte IndexEntry]`, in id
//! order; the offsets allow a binary search without decoding the block. The table is `[u32 blocks][u32
//! fence bytes]`, one row per block (`[u64 end][u32 fence offset][u32 fence length][filter]`, fixed
//! width so it can be searched in place), then the fences (each block's first id) end to end. A block's
//! filter is a Bloom filter of its ids, [`FILTER_BYTES`] long. The footer is `[u64 table offset][u64
//! FNV-1a of the table][8-byte magic]`.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use serde::{Deserialize, Serialize};

use super::index::IndexEntry;
use super::records::fingerprint;
use super::{io_error, StoreError};

/// The most entries in one block of a run: a block is about 7 KiB for 30-byte ids, one `pread`.
pub(super) const BLOCK_ENTRIES: usize = 128;

/// Bits of Bloom filter per entry, and probes per lookup: about a 1 % false-positive rate.
const BLOOM_BITS_PER_ENTRY: usize = 10;
const BLOOM_PROBES: usize = 7;
/// One block's filter: room for a full block at [`BLOOM_BITS_PER_ENTRY`].
const FILTER_BYTES: usize = BLOCK_ENTRIES * BLOOM_BITS_PER_ENTRY / 8;
/// A table row: block end, fence offset and length, filter.
const ROW_BYTES: usize = 8 + 4 + 4 + FILTER_BYTES;
/// The table's own header: block count and fence bytes.
const TABLE_HEADER: usize = 8;

const MAGIC: [u8; 8] = *b"hsrun\0\0\x02";
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

fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The bits of a block's filter that `id` sets: double hashing of FNV-1a, with splitmix64's finaliser
/// giving the second hash its own bits.
fn filter_bits(id: &[u8]) -> [usize; BLOOM_PROBES] {
    let h = fingerprint(id);
    let mut h2 = h ^ (h >> 30);
    h2 = h2.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h2 ^= h2 >> 27;
    h2 = h2.wrapping_mul(0x94d0_49bb_1331_11eb);
    h2 ^= h2 >> 31;
    let bits = (FILTER_BYTES * 8) as u64;
    let mut out = [0; BLOOM_PROBES];
    for (i, bit) in (0u64..).zip(out.iter_mut()) {
        *bit = (h.wrapping_add(i.wrapping_mul(h2 | 1)) % bits) as usize;
    }
    out
}

fn filter_insert(filter: &mut [u8; FILTER_BYTES], id: &[u8]) {
    for bit in filter_bits(id) {
        filter[bit / 8] |= 1 << (bit % 8);
    }
}

/// Whether `filter` (a block's, [`FILTER_BYTES`] long) may hold `id`; a short slice holds nothing.
fn filter_may_contain(filter: &[u8], id: &[u8]) -> bool {
    filter.len() == FILTER_BYTES
        && filter_bits(id)
            .iter()
            .all(|bit| filter[bit / 8] & (1 << (bit % 8)) != 0)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at.checked_add(4)?)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at.checked_add(8)?)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
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

/// One row of a run's table, as read from the mapping.
struct Row<'a> {
    /// Where the block ends in the file; it starts where the previous one ends (the first at 0).
    end: u64,
    /// Where the block's first id sits among the fences, and its length.
    fence_at: usize,
    fence_len: usize,
    /// The Bloom filter of the block's ids.
    filter: &'a [u8],
}

/// Maps `len` bytes of `file` from `at`, read-only: a run's table.
fn map_table(file: &File, path: &Path, at: u64, len: usize) -> Result<Mmap, StoreError> {
    // SAFETY: the file is a finished run: written, fsynced and never written again (runs are
    // immutable; a merge writes a new file and deletes old ones, and a mapping outlives an unlink). It
    // lives in the store's own folder, which sled's lock on the store keeps to one process. Only another
    // process truncating the file could invalidate the mapping, which no path of this program does.
    unsafe { MmapOptions::new().offset(at).len(len).map(file) }.map_err(io_error(path))
}

/// A run, open for reading: the file for its blocks and its table, mapped.
pub(super) struct Run {
    pub(super) head: RunHead,
    path: PathBuf,
    file: File,
    table: Mmap,
    blocks: usize,
    /// Where the fences start in `table`.
    fences_at: usize,
}

impl Run {
    /// Opens run `head` in `dir`, checking its footer and its table (checksum, block ends in order and
    /// inside the file, fences inside the table), so that lookups can trust the table's shape.
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
        let table_at = r.u64("its footer")?;
        let table_sum = r.u64("its footer")?;
        if r.bytes != MAGIC {
            return Err(corrupt(&path, "not an index run (its footer has no magic)"));
        }
        let table_len = footer_at
            .checked_sub(table_at)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n >= TABLE_HEADER)
            .ok_or_else(|| corrupt(&path, "its table starts past its footer"))?;
        let table = map_table(&file, &path, table_at, table_len)?;
        if fingerprint(&table) != table_sum {
            return Err(corrupt(&path, "its table does not match its checksum"));
        }
        Run::from_table(head, path, file, table, table_at)
    }

    /// The run whose table, mapped, is `table`, starting at `table_at` in `file`: checks the table's
    /// shape (its size, block ends in order and inside the file, fences inside the table), so that
    /// lookups can trust it.
    fn from_table(
        head: RunHead,
        path: PathBuf,
        file: File,
        table: Mmap,
        table_at: u64,
    ) -> Result<Run, StoreError> {
        let blocks = u32_at(&table, 0).unwrap_or_default() as usize;
        let fence_bytes = u32_at(&table, 4).unwrap_or_default() as usize;
        let fences_at = TABLE_HEADER + blocks * ROW_BYTES;
        if fences_at.checked_add(fence_bytes) != Some(table.len()) {
            return Err(corrupt(
                &path,
                format!(
                    "a table of {} bytes for {blocks} blocks and {fence_bytes} bytes of fences",
                    table.len()
                ),
            ));
        }
        let run = Run {
            head,
            path,
            file,
            table,
            blocks,
            fences_at,
        };
        let mut last_end = 0;
        for i in 0..blocks {
            let row = run.row(i);
            if row.end <= last_end || row.end > table_at {
                return Err(corrupt(&run.path, "its block ends are out of order"));
            }
            last_end = row.end;
            if row
                .fence_at
                .checked_add(row.fence_len)
                .is_none_or(|end| end > fence_bytes)
            {
                return Err(corrupt(&run.path, "a fence outside its table"));
            }
        }
        Ok(run)
    }

    /// Row `i` of the table; a row past the table reads as zeros (rows were checked on open).
    fn row(&self, i: usize) -> Row<'_> {
        let at = TABLE_HEADER + i * ROW_BYTES;
        Row {
            end: u64_at(&self.table, at).unwrap_or_default(),
            fence_at: u32_at(&self.table, at + 8).unwrap_or_default() as usize,
            fence_len: u32_at(&self.table, at + 12).unwrap_or_default() as usize,
            filter: self
                .table
                .get(at + 16..at + 16 + FILTER_BYTES)
                .unwrap_or_default(),
        }
    }

    /// Block `i`'s first id; a missing one reads as empty.
    fn fence(&self, i: usize) -> &[u8] {
        let row = self.row(i);
        let start = self.fences_at + row.fence_at;
        self.table
            .get(start..start + row.fence_len)
            .unwrap_or_default()
    }

    /// Reads block `i` into `buf` and returns its bytes without their length prefix.
    fn read_block<'b>(&self, i: usize, buf: &'b mut Vec<u8>) -> Result<&'b [u8], StoreError> {
        let start = match i {
            0 => 0,
            _ => self.row(i - 1).end,
        };
        let end = self.row(i).end;
        buf.clear();
        buf.resize((end - start) as usize, 0);
        self.file
            .read_exact_at(buf, start)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => corrupt(&self.path, "a block past its end"),
                _ => io_error(&self.path)(e),
            })?;
        match buf.split_first_chunk::<4>() {
            Some((len, block)) if u32::from_le_bytes(*len) as usize == block.len() => Ok(block),
            _ => Err(corrupt(&self.path, "a block whose length is not its own")),
        }
    }

    /// The entry of `id` in this run, if the run has one.
    pub(super) fn get(&self, id: &[u8]) -> Result<Option<IndexEntry>, StoreError> {
        // The last block whose first id is at most `id`.
        let (mut lo, mut hi) = (0, self.blocks);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.fence(mid) <= id {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let Some(block) = lo.checked_sub(1) else {
            return Ok(None);
        };
        if !filter_may_contain(self.row(block).filter, id) {
            return Ok(None);
        }
        let mut buf = Vec::new();
        let bytes = self.read_block(block, &mut buf)?;
        Block::parse(&self.path, bytes)?.find(id)
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
                let block = Block::parse(&self.run.path, self.buf.get(4..).unwrap_or_default())?;
                if self.next < block.len() {
                    let (id, entry) = block.entry(self.next)?;
                    self.next += 1;
                    return Ok(Some((id.into(), entry)));
                }
                self.block += 1;
            }
            if self.block >= self.run.blocks {
                return Ok(None);
            }
            self.run.read_block(self.block, &mut self.buf)?;
            self.loaded = true;
            self.next = 0;
        }
    }
}

/// Writes a run block by block, from entries given in id order. Holds one block; the table is built by
/// [`RunWriter::finish`] from the blocks as written.
pub(super) struct RunWriter {
    path: PathBuf,
    dir: PathBuf,
    id: u64,
    file: File,
    written: u64,
    blocks: u32,
    fence_bytes: u64,
    len: u64,
    offsets: Vec<u8>,
    entries: Vec<u8>,
    out: Vec<u8>,
}

impl RunWriter {
    /// Creates run `id` in `dir`, replacing a file of that name: only a run no manifest names can have
    /// it.
    pub(super) fn create(dir: &Path, id: u64) -> Result<RunWriter, StoreError> {
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
            blocks: 0,
            fence_bytes: 0,
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
            self.fence_bytes += id.len() as u64;
        }
        // Ids are at most `MAX_ID_BYTES` (records.rs) and a block at most `BLOCK_ENTRIES` of them.
        self.offsets
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        self.entries
            .extend_from_slice(&(id.len() as u32).to_le_bytes());
        self.entries.extend_from_slice(id);
        entry.encode_into(&mut self.entries);
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
        let len = 4 + self.offsets.len() + self.entries.len();
        self.out.clear();
        self.out.extend_from_slice(&(len as u32).to_le_bytes());
        self.out
            .extend_from_slice(&((self.offsets.len() / 4) as u32).to_le_bytes());
        self.out.extend_from_slice(&self.offsets);
        self.out.extend_from_slice(&self.entries);
        self.written += write_all(&self.file, &self.path, &self.out)?;
        self.blocks += 1;
        self.offsets.clear();
        self.entries.clear();
        Ok(())
    }

    /// Writes the last block, the table and the footer, and makes the file and its name durable (file,
    /// then folder fsync) before opening the run: a manifest may name it from then on.
    pub(super) fn finish(mut self, level: u8) -> Result<Run, StoreError> {
        self.flush_block()?;
        let fence_bytes = u32::try_from(self.fence_bytes)
            .map_err(|_| corrupt(&self.path, "more than 4 GiB of fences in one run"))?;
        let table_at = self.written;
        let mut table = TableWriter {
            file: &self.file,
            path: &self.path,
            buf: std::mem::take(&mut self.out),
            sum: fnv::FnvHasher::default(),
        };
        table.buf.clear();
        table.put(&self.blocks.to_le_bytes())?;
        table.put(&fence_bytes.to_le_bytes())?;
        // Two passes over the blocks as written (they are in the page cache): the rows, then the fences.
        let mut fence_at = 0u32;
        for_each_block(&self.path, table_at, |end, block| {
            let mut filter = [0u8; FILTER_BYTES];
            let mut fence_len = 0;
            for i in 0..block.len() {
                let (id, _) = block.entry(i)?;
                if i == 0 {
                    fence_len = id.len() as u32;
                }
                filter_insert(&mut filter, id);
            }
            table.put(&end.to_le_bytes())?;
            table.put(&fence_at.to_le_bytes())?;
            table.put(&fence_len.to_le_bytes())?;
            table.put(&filter)?;
            fence_at += fence_len;
            Ok(())
        })?;
        for_each_block(&self.path, table_at, |_, block| match block.len() {
            0 => Ok(()),
            _ => table.put(block.entry(0)?.0),
        })?;
        let sum = table.finish()?;
        let mut footer = [0u8; FOOTER_LEN as usize];
        footer[..8].copy_from_slice(&table_at.to_le_bytes());
        footer[8..16].copy_from_slice(&sum.to_le_bytes());
        footer[16..].copy_from_slice(&MAGIC);
        write_all(&self.file, &self.path, &footer)?;
        self.file.sync_all().map_err(io_error(&self.path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&self.dir))?;
        let table_len = TABLE_HEADER + self.blocks as usize * ROW_BYTES + fence_bytes as usize;
        let table = map_table(&self.file, &self.path, table_at, table_len)?;
        let head = RunHead {
            id: self.id,
            level,
            len: self.len,
        };
        Run::from_table(head, self.path, self.file, table, table_at)
    }
}

/// Reads the blocks of the run file at `path`, which end where its table starts, in order, giving
/// `each` every block with where it ends.
fn for_each_block(
    path: &Path,
    table_at: u64,
    mut each: impl FnMut(u64, &Block<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut buf = Vec::new();
    let mut at = 0u64;
    while at < table_at {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).map_err(io_error(path))?;
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        reader.read_exact(&mut buf).map_err(io_error(path))?;
        at += 4 + buf.len() as u64;
        each(at, &Block::parse(path, &buf)?)?;
    }
    Ok(())
}

/// A run's table on its way to the file: bytes gather in `buf` and go out, and into the checksum, a
/// buffer at a time. FNV-1a is byte by byte, so the sum is that of the whole table.
struct TableWriter<'a> {
    file: &'a File,
    path: &'a Path,
    buf: Vec<u8>,
    sum: fnv::FnvHasher,
}

impl TableWriter<'_> {
    const BUF_BYTES: usize = 64 * 1024;

    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= Self::BUF_BYTES {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), StoreError> {
        std::hash::Hasher::write(&mut self.sum, &self.buf);
        write_all(self.file, self.path, &self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is left and returns the table's checksum.
    fn finish(mut self) -> Result<u64, StoreError> {
        self.drain()?;
        Ok(std::hash::Hasher::finish(&self.sum))
    }
}

/// Writes `bytes` at the file's end and returns how many that was.
fn write_all(mut file: &File, path: &Path, bytes: &[u8]) -> Result<u64, StoreError> {
    file.write_all(bytes).map_err(io_error(path))?;
    Ok(bytes.len() as u64)
}

/// Encodes entries (in id order) as one block, as schema 4 kept it in sled, which is what its migration
/// reads (a run file puts the block's length before it).
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
        IndexEntry::numbered(n)
    }

    #[test]
    fn a_full_blocks_filter_has_no_false_negatives_and_few_false_positives() {
        let mut filter = [0u8; FILTER_BYTES];
        for i in 0..BLOCK_ENTRIES {
            filter_insert(&mut filter, format!("id-{i}").as_bytes());
        }
        assert!(
            (0..BLOCK_ENTRIES).all(|i| filter_may_contain(&filter, format!("id-{i}").as_bytes()))
        );
        let false_positives = (0..100_000u32)
            .filter(|i| filter_may_contain(&filter, format!("other-{i}").as_bytes()))
            .count();
        // 10 bits an entry and 7 probes: 0.8 % in theory.
        assert!(false_positives < 2_000, "{false_positives} of 100,000");
        assert!(
            !filter_may_contain(&filter[1..], b"id-0"),
            "a short filter holds nothing"
        );
    }

    fn write_run(dir: &Path, id: u64, n: u64) -> Run {
        let mut w = RunWriter::create(dir, id).unwrap();
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
        assert_eq!(run.blocks, 4);
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

        // A table that passes its checksum but whose shape is wrong (here the first row's fence runs past
        // the fences) is refused on open, not trusted by lookups.
        let mut bad_row = bytes.clone();
        let footer_at = bytes.len() - FOOTER_LEN as usize;
        let table_at =
            u64::from_le_bytes(bytes[footer_at..footer_at + 8].try_into().unwrap()) as usize;
        let fence_len_at = table_at + TABLE_HEADER + 12;
        bad_row[fence_len_at..fence_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let sum = fingerprint(&bad_row[table_at..footer_at]);
        bad_row[footer_at + 8..footer_at + 16].copy_from_slice(&sum.to_le_bytes());
        std::fs::write(&path, &bad_row).unwrap();
        let reason = names_file(Run::open(dir.path(), head).err().expect("refused"));
        assert!(reason.contains("fence outside"), "{reason}");

        // A missing file is an I/O error that names it.
        std::fs::remove_file(&path).unwrap();
        match Run::open(dir.path(), head).err().expect("refused") {
            StoreError::Io { path: p, .. } => assert_eq!(p, path.display().to_string()),
            other => panic!("{other:?}"),
        }
    }
}
