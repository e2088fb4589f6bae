//! The id index of one record stream: record id → where its current version sits (chunk, slot) and the
//! fingerprint of its JSON. Owns the index's layout, its recovery and its merges; it does not know what a
//! record is or where chunks come from (`records.rs` owns both and calls in here).
//!
//! Why not one sled entry per id: sled 0.34 keeps at most 16 entries per leaf, copies the leaf on every
//! insert and keeps a page-table entry (with up to ten log locations) per leaf in memory for good. At 2 M
//! records the per-id index took more than half of a first sync's CPU and 200 of its 344 MiB
//! (BENCHMARKS.md, "Index in sorted runs"). So the index is a small log-structured merge tree on top of
//! sled, with far fewer, larger entries:
//!
//! - new entries go to an in-memory **delta** (a sorted map, at most [`DELTA_MAX`] entries);
//! - a full delta is written as a **run**: sorted blocks of up to [`BLOCK_ENTRIES`] entries, keyed
//!   `(run, block)` in the stream's `record_runs/<connector>/<stream>` tree, plus the run's fences (each
//!   block's first id) and a Bloom filter, which stay in memory;
//! - runs have levels; [`MERGE_FAN_IN`] runs of one level merge into one of the next, the newer version of
//!   an id winning, so each entry is rewritten about once per level (log₈ of the stream's size in deltas).
//!
//! Lookups try the delta, then the runs from newest to oldest, skipping any run whose filter rules the id
//! out. The manifest (the runs, and `flushed_through`: every chunk numbered below it has its entries in a
//! run) is the tree's [`MANIFEST_KEY`] entry.
//!
//! The delta is not written anywhere: the chunk log is its write-ahead log. Every entry in the delta points
//! into a chunk numbered `flushed_through` or later, and those chunks hold exactly the records the delta
//! indexes, in order. Opening a stream replays them into a fresh delta, so a crash loses nothing the
//! chunks hold. A run is written before the manifest that names it (sled recovers a prefix of its log), and
//! blocks of runs the manifest does not name are deleted on open.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::records::{chunk_number, fingerprint, load_chunk, ChunkEntries};
use super::{from_json, to_json, StoreError};

/// The most entries the delta holds before it is written as a run: about 1.5 MiB of memory per stream.
pub(super) const DELTA_MAX: usize = 16_384;

/// The most entries in one block of a run.
const BLOCK_ENTRIES: usize = 128;

/// How many runs of one level merge into one run of the next.
pub(super) const MERGE_FAN_IN: usize = 8;

/// Bits of Bloom filter per entry, and probes per lookup: about a 1 % false-positive rate.
const BLOOM_BITS_PER_ENTRY: usize = 10;
const BLOOM_PROBES: usize = 7;

/// Where the manifest sits in the runs tree (block keys are 12 bytes, so they cannot collide with it).
const MANIFEST_KEY: &[u8] = b"manifest";

/// The block number under which a run keeps its fences and filter.
const RUN_META_BLOCK: u32 = u32::MAX;

/// Where a record version sits, and the fingerprint of its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IndexEntry {
    pub chunk: u64,
    pub slot: u32,
    pub fingerprint: u64,
}

impl IndexEntry {
    const LEN: usize = 20;

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.chunk.to_be_bytes());
        out.extend_from_slice(&self.slot.to_be_bytes());
        out.extend_from_slice(&self.fingerprint.to_be_bytes());
    }

    /// Decodes the 20 bytes at the start of `bytes`; `None` if there are fewer.
    fn decode(bytes: &[u8]) -> Option<IndexEntry> {
        let (chunk, rest) = bytes.split_first_chunk::<8>()?;
        let (slot, rest) = rest.split_first_chunk::<4>()?;
        let (fingerprint, _) = rest.split_first_chunk::<8>()?;
        Some(IndexEntry {
            chunk: u64::from_be_bytes(*chunk),
            slot: u32::from_be_bytes(*slot),
            fingerprint: u64::from_be_bytes(*fingerprint),
        })
    }
}

/// The persisted list of runs, oldest first.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    flushed_through: u64,
    next_run: u64,
    runs: Vec<RunHead>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct RunHead {
    id: u64,
    level: u8,
    len: u64,
}

/// A run as kept in memory: its head, each block's first id, and its filter.
struct Run {
    head: RunHead,
    fences: Vec<Box<[u8]>>,
    bloom: Bloom,
}

/// A Bloom filter over ids, by double hashing one stable 64-bit hash.
struct Bloom {
    words: Vec<u64>,
}

impl Bloom {
    fn with_capacity(entries: usize) -> Bloom {
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

    fn insert(&mut self, id: &[u8]) {
        for bit in self.probes(id) {
            self.words[bit / 64] |= 1 << (bit % 64);
        }
    }

    fn may_contain(&self, id: &[u8]) -> bool {
        self.probes(id)
            .iter()
            .all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

fn block_key(run: u64, block: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&run.to_be_bytes());
    k[8..].copy_from_slice(&block.to_be_bytes());
    k
}

/// Reads the length-prefixed byte strings of a run's meta or a block, reporting a short value as corrupt.
struct Reader<'a> {
    tree: &'a str,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn corrupt(&self, what: &str) -> StoreError {
        StoreError::Corrupt {
            tree: self.tree.to_string(),
            reason: format!("an index run cut short in {what}"),
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32, StoreError> {
        let (n, rest) = self
            .bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| self.corrupt(what))?;
        self.bytes = rest;
        Ok(u32::from_le_bytes(*n))
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < len {
            return Err(self.corrupt(what));
        }
        let (part, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(part)
    }
}

/// A block: `[u32 n][n × u32 offset]` then the entries, each `[u32 id length][id][20-byte entry]`, in id
/// order. The offsets make a binary search possible without decoding the block.
struct Block<'a> {
    tree: &'a str,
    offsets: &'a [u8],
    entries: &'a [u8],
}

impl<'a> Block<'a> {
    fn parse(tree: &'a str, bytes: &'a [u8]) -> Result<Block<'a>, StoreError> {
        let mut r = Reader { tree, bytes };
        let n = r.u32("a block header")? as usize;
        let offsets = r.take(n.saturating_mul(4), "a block's offsets")?;
        Ok(Block {
            tree,
            offsets,
            entries: r.bytes,
        })
    }

    fn len(&self) -> usize {
        self.offsets.len() / 4
    }

    fn entry(&self, i: usize) -> Result<(&'a [u8], IndexEntry), StoreError> {
        let corrupt = || StoreError::Corrupt {
            tree: self.tree.to_string(),
            reason: "an index block entry out of bounds".into(),
        };
        let off = self
            .offsets
            .get(i * 4..i * 4 + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(corrupt)? as usize;
        let mut r = Reader {
            tree: self.tree,
            bytes: self.entries.get(off..).ok_or_else(corrupt)?,
        };
        let id_len = r.u32("a block entry")? as usize;
        let id = r.take(id_len, "a block entry's id")?;
        let entry = IndexEntry::decode(r.bytes).ok_or_else(corrupt)?;
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

/// Writes a run block by block, from entries given in id order.
struct RunWriter<'a> {
    tree: &'a sled::Tree,
    id: u64,
    blocks: u32,
    fences: Vec<Box<[u8]>>,
    bloom: Bloom,
    len: u64,
    offsets: Vec<u8>,
    entries: Vec<u8>,
    out: Vec<u8>,
}

impl<'a> RunWriter<'a> {
    fn new(tree: &'a sled::Tree, id: u64, capacity: usize) -> RunWriter<'a> {
        RunWriter {
            tree,
            id,
            blocks: 0,
            fences: Vec::new(),
            bloom: Bloom::with_capacity(capacity),
            len: 0,
            offsets: Vec::new(),
            entries: Vec::new(),
            out: Vec::new(),
        }
    }

    fn push(&mut self, id: &[u8], entry: &IndexEntry) -> Result<(), StoreError> {
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
        self.tree
            .insert(block_key(self.id, self.blocks), self.out.as_slice())?;
        self.blocks += 1;
        self.offsets.clear();
        self.entries.clear();
        Ok(())
    }

    /// Writes the last block and the run's meta (fences, then the filter's words), and returns the run.
    fn finish(mut self, level: u8) -> Result<Run, StoreError> {
        self.flush_block()?;
        let mut meta = Vec::new();
        meta.extend_from_slice(&(self.fences.len() as u32).to_le_bytes());
        for f in &self.fences {
            meta.extend_from_slice(&(f.len() as u32).to_le_bytes());
            meta.extend_from_slice(f);
        }
        meta.extend_from_slice(&(self.bloom.words.len() as u32).to_le_bytes());
        for w in &self.bloom.words {
            meta.extend_from_slice(&w.to_le_bytes());
        }
        self.tree.insert(block_key(self.id, RUN_META_BLOCK), meta)?;
        Ok(Run {
            head: RunHead {
                id: self.id,
                level,
                len: self.len,
            },
            fences: self.fences,
            bloom: self.bloom,
        })
    }
}

fn load_run(tree: &sled::Tree, name: &str, head: RunHead) -> Result<Run, StoreError> {
    let meta = tree
        .get(block_key(head.id, RUN_META_BLOCK))?
        .ok_or_else(|| StoreError::Corrupt {
            tree: name.to_string(),
            reason: format!("run {} has no meta", head.id),
        })?;
    let mut r = Reader {
        tree: name,
        bytes: &meta,
    };
    let n = r.u32("its fences")? as usize;
    let mut fences = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let len = r.u32("a fence")? as usize;
        fences.push(r.take(len, "a fence")?.into());
    }
    let words = r.u32("its filter")? as usize;
    let bytes = r.take(words.saturating_mul(8), "its filter")?;
    let words = bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
        .collect::<Vec<u64>>();
    if words.is_empty() {
        return Err(r.corrupt("its filter"));
    }
    Ok(Run {
        head,
        fences,
        bloom: Bloom { words },
    })
}

/// An id with its entry, as a run hands them out.
type Owned = (Box<[u8]>, IndexEntry);

/// Reads one run's entries in id order, block by block.
struct RunEntries {
    blocks: sled::Iter,
    block: Option<sled::IVec>,
    next: usize,
}

impl RunEntries {
    fn new(tree: &sled::Tree, run: u64) -> RunEntries {
        RunEntries {
            blocks: tree.range(block_key(run, 0)..block_key(run, RUN_META_BLOCK)),
            block: None,
            next: 0,
        }
    }

    fn next(&mut self, name: &str) -> Result<Option<Owned>, StoreError> {
        loop {
            if let Some(bytes) = &self.block {
                let block = Block::parse(name, bytes)?;
                if self.next < block.len() {
                    let (id, entry) = block.entry(self.next)?;
                    self.next += 1;
                    return Ok(Some((id.into(), entry)));
                }
            }
            match self.blocks.next().transpose()? {
                Some((_, v)) => {
                    self.block = Some(v);
                    self.next = 0;
                }
                None => return Ok(None),
            }
        }
    }
}

/// One stream's index, open: the delta, the runs in memory, and the tree they are written to.
pub(super) struct StreamIndex {
    name: String,
    tree: sled::Tree,
    delta: BTreeMap<Box<[u8]>, IndexEntry>,
    /// Oldest first; levels never increase from one run to the next.
    runs: Vec<Run>,
    flushed_through: u64,
    next_run: u64,
}

impl StreamIndex {
    /// Opens the index in `tree` (named `name` in errors), replaying into the delta the entries of every
    /// chunk in `chunks` from the manifest's `flushed_through` on, and deleting runs the manifest does not
    /// name (a crash between writing a run and its manifest). `old`, a schema-3 id index tree with its
    /// name, is adopted as the first run unless the manifest already names runs (a crash after adopting
    /// it, before the caller dropped it). A chunk in the replayed range that does not decode fails the
    /// open (naming its tree), and with it every read and write of the stream: the index cannot be
    /// rebuilt past it, and guessing would serve wrong versions.
    pub(super) fn open(
        tree: sled::Tree,
        name: String,
        chunks: &sled::Tree,
        chunks_name: &str,
        old: Option<(&sled::Tree, &str)>,
    ) -> Result<StreamIndex, StoreError> {
        let manifest: Manifest = tree
            .get(MANIFEST_KEY)?
            .map(|v| from_json(&name, &v))
            .transpose()?
            .unwrap_or_default();
        let mut runs = Vec::with_capacity(manifest.runs.len());
        for head in &manifest.runs {
            runs.push(load_run(&tree, &name, *head)?);
        }
        let named: std::collections::HashSet<u64> = manifest.runs.iter().map(|r| r.id).collect();
        for k in tree.iter().keys() {
            let k = k?;
            if k.len() == 12 {
                let run = u64::from_be_bytes(k[..8].try_into().unwrap_or_default());
                if !named.contains(&run) {
                    tree.remove(k)?;
                }
            }
        }
        let mut index = StreamIndex {
            name,
            tree,
            delta: BTreeMap::new(),
            runs,
            flushed_through: manifest.flushed_through,
            // Never an id a named run has, whatever the manifest says.
            next_run: manifest
                .runs
                .iter()
                .map(|r| r.id.saturating_add(1))
                .fold(manifest.next_run, u64::max),
        };
        if let Some((old, old_name)) = old {
            if index.runs.is_empty() {
                let next_chunk = match chunks.last()? {
                    Some((k, _)) => chunk_number(chunks_name, &k)?.saturating_add(1),
                    None => 0,
                };
                index.adopt(old, old_name, next_chunk)?;
            }
        }
        let mut bytes = Vec::new();
        for kv in chunks.range(index.flushed_through.to_be_bytes()..) {
            let (k, stored) = kv?;
            let number = chunk_number(chunks_name, &k)?;
            load_chunk(chunks_name, &stored, &mut bytes)?;
            let entries = ChunkEntries {
                tree: chunks_name,
                bytes: &bytes,
            };
            for (slot, entry) in (0u32..).zip(entries) {
                let (id, json) = entry?;
                index.delta.insert(
                    id.into(),
                    IndexEntry {
                        chunk: number,
                        slot,
                        fingerprint: fingerprint(json),
                    },
                );
            }
        }
        Ok(index)
    }

    /// The current entry of `id`.
    pub(super) fn get(&self, id: &[u8]) -> Result<Option<IndexEntry>, StoreError> {
        if let Some(e) = self.delta.get(id) {
            return Ok(Some(*e));
        }
        for run in self.runs.iter().rev() {
            if !run.bloom.may_contain(id) {
                continue;
            }
            let Some(block) = run
                .fences
                .partition_point(|f| f.as_ref() <= id)
                .checked_sub(1)
            else {
                continue;
            };
            let Some(bytes) = self.tree.get(block_key(run.head.id, block as u32))? else {
                return Err(StoreError::Corrupt {
                    tree: self.name.clone(),
                    reason: format!("run {} lacks block {block}", run.head.id),
                });
            };
            if let Some(e) = Block::parse(&self.name, &bytes)?.find(id)? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Every chunk numbered below this has its entries in a run.
    pub(super) fn flushed_through(&self) -> u64 {
        self.flushed_through
    }

    /// Points `id` at `entry`. Returns whether the delta already held the id (a repeat within the delta;
    /// the caller's earlier [`StreamIndex::get`] tells it about the runs).
    pub(super) fn insert(&mut self, id: &[u8], entry: IndexEntry) -> bool {
        self.delta.insert(id.into(), entry).is_some()
    }

    /// Writes the delta as a run once it is full. `next_chunk` is the number the stream's next chunk will
    /// get: every entry in the delta points below it.
    pub(super) fn flush_if_full(&mut self, next_chunk: u64) -> Result<(), StoreError> {
        if self.delta.len() >= DELTA_MAX {
            self.flush(next_chunk)?;
        }
        Ok(())
    }

    /// Writes the delta as a run (if it holds anything), records that every chunk below `next_chunk` is
    /// in the runs, and merges levels that have filled.
    pub(super) fn flush(&mut self, next_chunk: u64) -> Result<(), StoreError> {
        if !self.delta.is_empty() {
            let id = self.take_run_id();
            let mut w = RunWriter::new(&self.tree, id, self.delta.len());
            for (k, e) in &self.delta {
                w.push(k, e)?;
            }
            let run = w.finish(0)?;
            self.runs.push(run);
        }
        self.flushed_through = next_chunk;
        self.write_manifest()?;
        self.delta.clear();
        self.merge_full_levels()
    }

    fn take_run_id(&mut self) -> u64 {
        let id = self.next_run;
        self.next_run = self.next_run.saturating_add(1);
        id
    }

    fn write_manifest(&self) -> Result<(), StoreError> {
        let manifest = Manifest {
            flushed_through: self.flushed_through,
            next_run: self.next_run,
            runs: self.runs.iter().map(|r| r.head).collect(),
        };
        self.tree.insert(MANIFEST_KEY, to_json(&manifest))?;
        Ok(())
    }

    /// While some level holds [`MERGE_FAN_IN`] runs (the lowest such level first), merges them into one
    /// run of the next level, in their place: a level's runs sit together, newer than every run of a
    /// higher level and older than every run of a lower one, so the list stays in age order.
    fn merge_full_levels(&mut self) -> Result<(), StoreError> {
        loop {
            let Some(level) = (0..=u8::MAX)
                .find(|l| self.runs.iter().filter(|r| r.head.level == *l).count() >= MERGE_FAN_IN)
            else {
                return Ok(());
            };
            let start = self
                .runs
                .iter()
                .position(|r| r.head.level == level)
                .unwrap_or_default();
            let end = start
                + self.runs[start..]
                    .iter()
                    .take_while(|r| r.head.level == level)
                    .count();
            let inputs: Vec<RunHead> = self.runs[start..end].iter().map(|r| r.head).collect();
            let merged = self.merge(&inputs, level.saturating_add(1))?;
            self.runs.splice(start..end, [merged]);
            self.write_manifest()?;
            for head in inputs {
                for k in self
                    .tree
                    .range(block_key(head.id, 0)..=block_key(head.id, RUN_META_BLOCK))
                    .keys()
                {
                    self.tree.remove(k?)?;
                }
            }
        }
    }

    /// Merges `inputs` (oldest first) into a new run at `level`; an id in several keeps its newest entry.
    fn merge(&mut self, inputs: &[RunHead], level: u8) -> Result<Run, StoreError> {
        let capacity = inputs
            .iter()
            .map(|r| usize::try_from(r.len).unwrap_or(usize::MAX))
            .fold(0usize, usize::saturating_add);
        let id = self.take_run_id();
        let mut w = RunWriter::new(&self.tree, id, capacity);
        let mut readers: Vec<RunEntries> = inputs
            .iter()
            .map(|r| RunEntries::new(&self.tree, r.id))
            .collect();
        let mut heads: Vec<Option<Owned>> = Vec::with_capacity(readers.len());
        for r in &mut readers {
            heads.push(r.next(&self.name)?);
        }
        loop {
            // The smallest id among the heads; among equal ids, the newest input's entry.
            let mut best: Option<usize> = None;
            for (i, h) in heads.iter().enumerate() {
                if let Some((id, _)) = h {
                    best = match best {
                        Some(b) if heads[b].as_ref().is_some_and(|(bid, _)| bid < id) => Some(b),
                        _ => Some(i),
                    };
                }
            }
            let Some(b) = best else { break };
            let Some((id, entry)) = heads[b].clone() else {
                break;
            };
            w.push(&id, &entry)?;
            for (i, h) in heads.iter_mut().enumerate() {
                if h.as_ref().is_some_and(|(hid, _)| *hid == id) {
                    *h = readers[i].next(&self.name)?;
                }
            }
        }
        w.finish(level)
    }

    /// Builds the index from a schema-3 id index tree (one sled entry per id, in id order) as one run
    /// covering every chunk below `next_chunk`.
    fn adopt(
        &mut self,
        old: &sled::Tree,
        old_name: &str,
        next_chunk: u64,
    ) -> Result<(), StoreError> {
        self.flushed_through = self.flushed_through.max(next_chunk);
        if old.is_empty() {
            return self.write_manifest();
        }
        let id = self.take_run_id();
        let mut w = RunWriter::new(&self.tree, id, old.len());
        for kv in old.iter() {
            let (k, v) = kv?;
            let entry = (v.len() == IndexEntry::LEN)
                .then(|| IndexEntry::decode(&v))
                .flatten()
                .ok_or_else(|| StoreError::Corrupt {
                    tree: old_name.to_string(),
                    reason: format!(
                        "an index entry of {} bytes, expected {}",
                        v.len(),
                        IndexEntry::LEN
                    ),
                })?;
            w.push(&k, &entry)?;
        }
        let mut level = 0u8;
        let mut size = DELTA_MAX as u64;
        while w.len >= size.saturating_mul(MERGE_FAN_IN as u64) {
            level += 1;
            size = size.saturating_mul(MERGE_FAN_IN as u64);
        }
        let run = w.finish(level)?;
        // The only run (adopting happens on a stream with none).
        self.runs.insert(0, run);
        self.write_manifest()
    }

    #[cfg(test)]
    pub(super) fn run_levels(&self) -> Vec<u8> {
        self.runs.iter().map(|r| r.head.level).collect()
    }

    #[cfg(test)]
    pub(super) fn delta_len(&self) -> usize {
        self.delta.len()
    }
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

    fn open(db: &sled::Db) -> StreamIndex {
        let chunks = db.open_tree("chunks").unwrap();
        StreamIndex::open(
            db.open_tree("runs").unwrap(),
            "runs".into(),
            &chunks,
            "chunks",
            None,
        )
        .unwrap()
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

    #[test]
    fn entries_survive_flushes_and_merges_and_the_newest_version_wins() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut ix = open(&db);
        // Enough for one merge: each id written twice (the second version later), in a scattered order.
        let n = (DELTA_MAX * (MERGE_FAN_IN + 1) / 2 + 7) as u64;
        let ids: Vec<String> = (0..n).map(|i| format!("{:08}", (i * 7_919) % n)).collect();
        let mut chunk = 0;
        for version in 0..2u64 {
            for id in &ids {
                ix.insert(
                    id.as_bytes(),
                    entry(version * n + id.parse::<u64>().unwrap()),
                );
                chunk += 1;
                ix.flush_if_full(chunk).unwrap();
            }
        }
        assert!(
            ix.run_levels().contains(&1),
            "level-0 runs merged: {:?}",
            ix.run_levels()
        );
        for id in &ids {
            let want = entry(n + id.parse::<u64>().unwrap());
            assert_eq!(ix.get(id.as_bytes()).unwrap(), Some(want), "{id}");
        }
        assert_eq!(ix.get(b"absent").unwrap(), None);
        assert_eq!(ix.get(b"").unwrap(), None);
        assert_eq!(ix.get(b"99999999").unwrap(), None);

        // What the delta held goes into a run; reopened, the runs come back from the manifest alone (there
        // are no chunks here to replay).
        assert!(ix.delta_len() > 0);
        ix.flush(chunk).unwrap();
        drop(ix);
        let ix = open(&db);
        for id in ids.iter().step_by(97) {
            let want = entry(n + id.parse::<u64>().unwrap());
            assert_eq!(ix.get(id.as_bytes()).unwrap(), Some(want), "{id}");
        }
    }

    #[test]
    fn a_corrupt_manifest_or_a_torn_block_is_an_error_naming_the_tree_not_a_panic() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("runs").unwrap();
        tree.insert(MANIFEST_KEY, b"{not json".as_slice()).unwrap();
        let chunks = db.open_tree("chunks").unwrap();
        let err = StreamIndex::open(tree.clone(), "runs".into(), &chunks, "chunks", None)
            .err()
            .expect("a corrupt manifest is refused");
        assert!(
            matches!(&err, StoreError::Corrupt { tree, .. } if tree == "runs"),
            "{err:?}"
        );

        tree.clear().unwrap();
        let mut ix = open(&db);
        for i in 0..300u64 {
            ix.insert(format!("{i:04}").as_bytes(), entry(i));
        }
        ix.flush(1).unwrap();
        // Cut the run's second block short.
        let run = ix.runs[0].head.id;
        let block = tree.get(block_key(run, 1)).unwrap().unwrap();
        tree.insert(block_key(run, 1), &block[..block.len() / 2])
            .unwrap();
        let err = ix.get(b"0200").unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { tree, .. } if tree == "runs"),
            "{err:?}"
        );
        assert_eq!(
            ix.get(b"0001").unwrap(),
            Some(entry(1)),
            "other blocks still read"
        );
    }

    #[test]
    fn blocks_of_a_run_the_manifest_does_not_name_are_removed_on_open() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("runs").unwrap();
        let mut w = RunWriter::new(&tree, 5, 1);
        w.push(b"a", &entry(1)).unwrap();
        w.finish(0).unwrap();
        assert_eq!(tree.len(), 2);
        let ix = open(&db);
        assert_eq!(ix.get(b"a").unwrap(), None);
        assert_eq!(tree.len(), 0);
    }
}
