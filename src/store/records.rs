//! Synced records: how a stream's records sit in sled so that storing them stays fast as a stream grows,
//! and how they are read back. Owns the record layout, its crash-safety order, compaction and the
//! migration from the schema-1 layout; it does not decide which records to store (`sync`) or what they
//! mean (`metrics`, `identity`).
//!
//! A stream has a chunk log and an id index. `record_chunks/<connector>/<stream>` is the log: each value
//! is a chunk of up to [`CHUNK_BYTES`] of encoded records, keyed by a big-endian sequence number, so new
//! chunks always land at the right edge of the tree. The index (`index.rs`, in
//! `record_runs/<connector>/<stream>`) maps each record id to where its current version sits (chunk,
//! slot) and a fingerprint of its JSON. The split exists because sled 0.34 rewrites a whole leaf (16
//! entries) for every insert: keyed by id, a 1 M-record stream synced in timestamp order hits a random
//! leaf of ~6 KB each time, and storing fell to a quarter of the rate the same bytes reach when appended
//! (BENCHMARKS.md, "Record layout"). The index in turn keeps its entries in sorted runs rather than one
//! sled entry per id, for the same reason and for memory (see `index.rs`); it treats the chunk log as its
//! write-ahead log.
//!
//! Chunks are stored LZ4-compressed ([`LZ4_CHUNK_TAG`]): records of one stream repeat their keys, so a
//! chunk shrinks several times over, and since sled rewrites whole leaves when it consolidates or splits
//! them, each byte saved is saved again on every rewrite. Chunks written by schema 2, uncompressed, are
//! still read as they are.
//!
//! A record whose JSON has the fingerprint already indexed is not written at all, so the lookback window
//! and full refreshes cost a read, not a write. A changed record leaves its old version behind as a stale
//! entry; reads skip entries the index no longer points to, and a stream whose stale entries outnumber its
//! live ones is compacted after the page that tipped it.
//!
//! Writers and readers of one stream exclude each other through a per-stream lock, which guards the
//! stream's open index and which a reader holds for the life of its iterator: a read sees one consistent
//! version of the stream, and compaction never removes a chunk under a reader.

use std::collections::HashMap;
use std::hash::Hasher as _;
use std::sync::{Arc, Mutex};

use parking_lot::lock_api::ArcRwLockReadGuard;
use parking_lot::{RawRwLock, RwLock};
use serde::{Deserialize, Serialize};

use super::index::{IndexEntry, StreamIndex};
#[cfg(test)]
use super::SCHEMA_VERSION;
use super::{from_json, key, to_json, write_json, Store, StoreError};
use crate::vocab::{Cursor, Record};

/// The most bytes of encoded records in one chunk before compression, give or take its last record (a
/// chunk holds at least one). Compressed (JSON records shrink 3-6x), a sled leaf of 16 chunks stays under
/// sled's blob threshold (a quarter of its 512 KiB segment; a larger leaf goes to a file of its own each
/// time it is rewritten, which costs time, not correctness).
const CHUNK_BYTES: usize = 16 * 1024;

/// How a compressed chunk starts; then the entries' length (u32 LE) and the LZ4 block. A schema-2 chunk
/// starts with its first id's length as a u32 LE, whose fourth byte is zero for any id under 16 MiB, so
/// the two cannot be mistaken for each other (`commit_page` refuses ids that long).
const LZ4_CHUNK_TAG: [u8; 4] = *b"LZ4\x01";

/// The longest record id `commit_page` accepts: far above any vendor's, and below the 16 MiB that would
/// make a schema-2 chunk look compressed.
const MAX_ID_BYTES: usize = 1 << 20;

/// A stream is compacted once it holds at least this many stale entries and more stale than live ones.
const COMPACT_MIN_STALE: u64 = 10_000;

/// Per-stream locks, each guarding the stream's open index, shared by every clone of a [`Store`].
pub(super) type StreamLocks = Arc<Mutex<HashMap<String, Arc<RwLock<StreamIndex>>>>>;

fn index_tree_name(connector: &str, stream: &str) -> String {
    format!("record_index/{connector}/{stream}")
}

fn chunk_tree_name(connector: &str, stream: &str) -> String {
    format!("record_chunks/{connector}/{stream}")
}

fn runs_tree_name(connector: &str, stream: &str) -> String {
    format!("record_runs/{connector}/{stream}")
}

/// A connector id or stream name as one file name: ASCII letters, digits, `-` and `_` as they are, every
/// other byte as `%XX`, so no name can climb out of its folder or collide with another.
fn file_name_part(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Whether the index entry of `id` points at (chunk, slot): whether that chunk entry is live.
fn is_live(index: &StreamIndex, id: &[u8], chunk: u64, slot: u32) -> Result<bool, StoreError> {
    Ok(index
        .get(id)?
        .is_some_and(|e| e.chunk == chunk && e.slot == slot))
}

/// FNV-1a over a record's JSON: stable across builds and platforms (unlike std's hasher), which matters
/// because fingerprints are stored.
pub(super) fn fingerprint(json: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(json);
    h.finish()
}

/// Live and stale entry counts of a stream: they time compaction and are what `record_count` reports. A
/// crash or an error between a page's chunks and its stats leaves them that page off, and such drift
/// adds up until a compaction (or an adoption of a schema-3 index) counts afresh; nothing reads records
/// by them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StreamStats {
    live: u64,
    stale: u64,
}

/// A chunk being filled: entries are `[u32 LE id length][id][u32 LE JSON length][JSON]`, one after another,
/// compressed as a whole when the chunk is written.
struct ChunkWriter {
    number: u64,
    bytes: Vec<u8>,
    slots: u32,
    /// The compressed chunk, reused from one flush to the next.
    packed: Vec<u8>,
}

impl ChunkWriter {
    fn new(number: u64) -> ChunkWriter {
        ChunkWriter {
            number,
            bytes: Vec::with_capacity(CHUNK_BYTES + 4096),
            slots: 0,
            packed: Vec::new(),
        }
    }

    /// Appends an entry and returns its slot. Lengths fit in u32: one record's JSON is far below 4 GiB
    /// (a vendor page is a few MB), and `commit_page` refuses a record that is not.
    fn push(&mut self, id: &[u8], json: &[u8]) -> u32 {
        for part in [id, json] {
            self.bytes
                .extend_from_slice(&(part.len() as u32).to_le_bytes());
            self.bytes.extend_from_slice(part);
        }
        self.slots += 1;
        self.slots - 1
    }

    fn is_full(&self) -> bool {
        self.bytes.len() >= CHUNK_BYTES
    }

    /// Writes the chunk, compressed (if it holds anything), and starts the next one.
    fn flush(&mut self, trees: &StreamTrees) -> Result<(), StoreError> {
        if self.slots == 0 {
            return Ok(());
        }
        let corrupt = |reason: String| StoreError::Corrupt {
            tree: trees.chunks_name.clone(),
            reason,
        };
        let len = u32::try_from(self.bytes.len())
            .map_err(|_| corrupt(format!("a chunk of {} bytes", self.bytes.len())))?;
        let header = LZ4_CHUNK_TAG.len() + 4;
        self.packed.clear();
        self.packed.extend_from_slice(&LZ4_CHUNK_TAG);
        self.packed.extend_from_slice(&len.to_le_bytes());
        self.packed.resize(
            header + lz4_flex::block::get_maximum_output_size(self.bytes.len()),
            0,
        );
        // Cannot fail: the output has the room LZ4 needs for any input of this length.
        let n = lz4_flex::block::compress_into(&self.bytes, &mut self.packed[header..])
            .map_err(|e| corrupt(format!("compressing a chunk: {e}")))?;
        self.packed.truncate(header + n);
        trees
            .chunks
            .insert(self.number.to_be_bytes(), self.packed.as_slice())?;
        self.number += 1;
        self.bytes.clear();
        self.slots = 0;
        Ok(())
    }
}

/// Puts a stored chunk's entries into `out`: decompressed, or copied if the chunk is a schema-2 one.
pub(super) fn load_chunk(tree: &str, stored: &[u8], out: &mut Vec<u8>) -> Result<(), StoreError> {
    out.clear();
    let Some(rest) = stored.strip_prefix(&LZ4_CHUNK_TAG) else {
        out.extend_from_slice(stored);
        return Ok(());
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        tree: tree.to_string(),
        reason,
    };
    let (len, block) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("a compressed chunk cut short in its header".into()))?;
    let len = u32::from_le_bytes(*len) as usize;
    // LZ4 expands at most 255-fold: a larger length is a corrupt header, not a reason to allocate it.
    if len > block.len().saturating_mul(255) {
        return Err(corrupt(format!(
            "a compressed chunk of {} bytes claiming {len}",
            block.len()
        )));
    }
    out.resize(len, 0);
    match lz4_flex::block::decompress_into(block, out) {
        Ok(n) if n == len => Ok(()),
        Ok(n) => Err(corrupt(format!(
            "a compressed chunk of {n} bytes, its header says {len}"
        ))),
        Err(e) => Err(corrupt(format!("a chunk that does not decompress: {e}"))),
    }
}

/// Reads the entries of one chunk in slot order.
pub(super) struct ChunkEntries<'a> {
    pub tree: &'a str,
    pub bytes: &'a [u8],
}

impl<'a> Iterator for ChunkEntries<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() {
            return None;
        }
        let mut take = || -> Option<&'a [u8]> {
            let (len, rest) = self.bytes.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let (part, rest) = (rest.get(..len)?, rest.get(len..)?);
            self.bytes = rest;
            Some(part)
        };
        match (take(), take()) {
            (Some(id), Some(json)) => Some(Ok((id, json))),
            _ => {
                self.bytes = &[];
                Some(Err(StoreError::Corrupt {
                    tree: self.tree.to_string(),
                    reason: "a chunk ends inside an entry".into(),
                }))
            }
        }
    }
}

pub(super) fn chunk_number(tree: &str, key: &[u8]) -> Result<u64, StoreError> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            tree: tree.to_string(),
            reason: format!("a chunk key of {} bytes, expected 8", key.len()),
        })
}

/// The chunk tree of one stream, with its name for error messages, and the name its stats go by.
struct StreamTrees {
    /// `record_index/<connector>/<stream>`: the stream's name in the meta tree's stats (kept from the
    /// schema-3 layout, whose id index tree had this name).
    index_name: String,
    chunks: sled::Tree,
    chunks_name: String,
}

impl StreamTrees {
    fn next_chunk(&self) -> Result<u64, StoreError> {
        match self.chunks.last()? {
            Some((k, _)) => Ok(chunk_number(&self.chunks_name, &k)?.saturating_add(1)),
            None => Ok(0),
        }
    }
}

impl Store {
    fn stream_trees(&self, connector: &str, stream: &str) -> Result<StreamTrees, StoreError> {
        let (index_name, chunks_name) = (
            index_tree_name(connector, stream),
            chunk_tree_name(connector, stream),
        );
        Ok(StreamTrees {
            chunks: self.db.open_tree(&chunks_name)?,
            index_name,
            chunks_name,
        })
    }

    /// The folder of a stream's index run files.
    fn run_folder(&self, connector: &str, stream: &str) -> std::path::PathBuf {
        self.run_files
            .join(file_name_part(connector))
            .join(file_name_part(stream))
    }

    /// The lock of a stream, with its index open behind it: opened (and its delta replayed from the
    /// chunks) the first time this process touches the stream. A schema-3 id index tree is adopted into
    /// the new index here, then dropped.
    fn stream_lock(
        &self,
        connector: &str,
        stream: &str,
    ) -> Result<Arc<RwLock<StreamIndex>>, StoreError> {
        let mut locks = self
            .stream_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let name = index_tree_name(connector, stream);
        if let Some(lock) = locks.get(&name) {
            return Ok(lock.clone());
        }
        let trees = self.stream_trees(connector, stream)?;
        let old = match self.db.tree_names().iter().any(|n| n == name.as_bytes()) {
            true => Some(self.db.open_tree(&name)?),
            false => None,
        };
        let index = StreamIndex::open(
            self.db.open_tree(runs_tree_name(connector, stream))?,
            runs_tree_name(connector, stream),
            self.run_folder(connector, stream),
            &trees.chunks,
            &trees.chunks_name,
            old.as_ref().map(|t| (t, name.as_str())),
        )?;
        if let Some(old) = old {
            // The old tree held one entry per id: an exact count to start from.
            let mut stats = self.stream_stats(&name)?;
            stats.live = old.len() as u64;
            self.meta.insert(stats_key(&name), to_json(&stats))?;
            // Dropping a tree while a handle to it was open made a later reopen of the store fail as
            // locked now and then (seen in this module's tests); let go first.
            drop(old);
            self.db.drop_tree(name.as_bytes())?;
        }
        let lock = Arc::new(RwLock::new(index));
        locks.insert(name, lock.clone());
        Ok(lock)
    }

    /// Stores one page through a one-page [`StreamWriter`]; see [`StreamWriter::commit_page`].
    pub fn commit_page(
        &self,
        connector: &str,
        stream: &str,
        records: &[Record],
        cursor: &Cursor,
    ) -> Result<usize, StoreError> {
        self.stream_writer(connector, stream)?
            .commit_page(records, cursor)
    }

    /// A writer for one run of one stream.
    pub fn stream_writer(&self, connector: &str, stream: &str) -> Result<StreamWriter, StoreError> {
        Ok(StreamWriter {
            store: self.clone(),
            lock: self.stream_lock(connector, stream)?,
            connector: connector.to_string(),
            stream: stream.to_string(),
            trees: self.stream_trees(connector, stream)?,
        })
    }

    fn stream_stats(&self, index_name: &str) -> Result<StreamStats, StoreError> {
        Ok(self
            .meta
            .get(stats_key(index_name))?
            .map(|v| from_json("meta", &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Every stored record of a stream, each once in its current version, in the order they were stored.
    /// Streams chunk by chunk from sled; never loads the stream at once. Holds the stream's lock until the
    /// iterator is dropped, so a page committed meanwhile waits: read and drop promptly.
    pub fn records(&self, connector: &str, stream: &str) -> Result<StoredRecords, StoreError> {
        let trees = self.stream_trees(connector, stream)?;
        // Recursive: a thread already reading this stream must not deadlock behind a waiting writer.
        let reading = self.stream_lock(connector, stream)?.read_arc_recursive();
        Ok(StoredRecords {
            chunk_iter: trees.chunks.iter(),
            trees,
            current: None,
            chunk: Vec::new(),
            index: reading,
        })
    }

    /// How many records a stream holds (one per id), as counted when they were stored ([`StreamStats`]:
    /// a crash midway through a page can leave the count that page off).
    pub fn record_count(&self, connector: &str, stream: &str) -> Result<usize, StoreError> {
        let live = self.stream_stats(&index_tree_name(connector, stream))?.live;
        Ok(usize::try_from(live).unwrap_or(usize::MAX))
    }

    /// Every record stream in the store, as (connector, stream), from the chunk trees' names.
    pub(super) fn record_streams(&self) -> Vec<(String, String)> {
        self.db
            .tree_names()
            .iter()
            .filter_map(|n| {
                let name = std::str::from_utf8(n).ok()?;
                let (connector, stream) = name.strip_prefix("record_chunks/")?.split_once('/')?;
                Some((connector.to_string(), stream.to_string()))
            })
            .collect()
    }

    /// Opens every record stream, which adopts its schema-2/3 id index tree into the run-based index
    /// ([`Store::stream_lock`]). A crash midway leaves the streams not yet opened with their old trees, to
    /// be adopted on the next open.
    pub(super) fn adopt_id_index_trees(&self) -> Result<(), StoreError> {
        for (connector, stream) in self.record_streams() {
            self.stream_lock(&connector, &stream)?;
        }
        Ok(())
    }

    /// Moves each stream's index runs out of its sled tree into files (schema 4 → 5), before any stream
    /// is opened. A crash midway moves what is left on the next open (`index::move_runs_to_files`).
    pub(super) fn move_runs_to_files(&self) -> Result<(), StoreError> {
        let trees: std::collections::HashSet<Vec<u8>> =
            self.db.tree_names().iter().map(|n| n.to_vec()).collect();
        for (connector, stream) in self.record_streams() {
            let name = runs_tree_name(&connector, &stream);
            if !trees.contains(name.as_bytes()) {
                continue;
            }
            super::index::move_runs_to_files(
                &self.db.open_tree(&name)?,
                &name,
                &self.run_folder(&connector, &stream),
            )?;
        }
        Ok(())
    }

    /// Moves schema-1 records (`records/<connector>/<stream>`, one JSON value per id) into the chunked
    /// layout, one stream at a time, dropping each old tree once its records are all in the new one. A
    /// crash midway repeats the unfinished stream on the next open; records already moved are found
    /// unchanged only in that they are stored again, as stale copies. Cursors stay as they are.
    pub(super) fn migrate_from_schema_1(&self) -> Result<(), StoreError> {
        let old_trees: Vec<String> = self
            .db
            .tree_names()
            .iter()
            .filter_map(|n| std::str::from_utf8(n).ok().map(str::to_string))
            .filter(|n| n.starts_with("records/"))
            .collect();
        for name in old_trees {
            let Some((connector, stream)) = name["records/".len()..].split_once('/') else {
                continue;
            };
            let old = self.db.open_tree(&name)?;
            let trees = self.stream_trees(connector, stream)?;
            let lock = self.stream_lock(connector, stream)?;
            let mut index = lock.write();
            let mut chunk = ChunkWriter::new(trees.next_chunk()?);
            let mut pending = Vec::new();
            let mut live = 0;
            for kv in old.iter() {
                let (id, json) = kv?;
                let fingerprint = fingerprint(&json);
                if chunk.is_full() {
                    flush_with_index(&trees, &mut index, &mut chunk, &mut pending)?;
                }
                let slot = chunk.push(&id, &json);
                pending.push((
                    id,
                    IndexEntry {
                        chunk: chunk.number,
                        slot,
                        fingerprint,
                    },
                ));
                live += 1;
            }
            flush_with_index(&trees, &mut index, &mut chunk, &mut pending)?;
            self.meta.insert(
                stats_key(&trees.index_name),
                to_json(&StreamStats { live, stale: 0 }),
            )?;
            self.db.drop_tree(name.as_bytes())?;
        }
        Ok(())
    }
}

/// Writes the pages of one stream's run; from [`Store::stream_writer`].
pub struct StreamWriter {
    store: Store,
    trees: StreamTrees,
    lock: Arc<RwLock<StreamIndex>>,
    connector: String,
    stream: String,
}

impl StreamWriter {
    /// Stores a page of records, then the cursor that covers them. Returns how many records were new or
    /// changed; a record whose JSON is already stored is not written again.
    ///
    /// Crash safety ("a cursor never advances without its records") rests on order, not on a transaction:
    /// sled appends every write to one log and, after a crash, recovers a contiguous prefix of that log (it
    /// stops at the first write that did not fully reach the disk; see `check_contiguity_in_unstable_tail`
    /// in sled's recovery). The chunks are written first, then the cursor; the index entries pointing into
    /// the chunks go to the index's delta, which is rebuilt from the chunks after a crash (`index.rs`), so a
    /// recovered cursor implies its chunks, which imply their index entries. A crash
    /// midway leaves some of the page stored without the cursor; the next run re-reads the page from the
    /// old cursor and finds those records unchanged. `tests/it/crash.rs` kills a writer with SIGKILL and
    /// checks every recovered cursor against its records.
    pub fn commit_page(&self, records: &[Record], cursor: &Cursor) -> Result<usize, StoreError> {
        let (trees, store) = (&self.trees, &self.store);
        let mut index = self.lock.write();
        if let Some(r) = records.iter().find(|r| r.id.len() > MAX_ID_BYTES) {
            return Err(StoreError::Corrupt {
                tree: trees.chunks_name.clone(),
                reason: format!(
                    "a record id of {} bytes, the most is {MAX_ID_BYTES}",
                    r.id.len()
                ),
            });
        }
        // Never below what the runs already cover, even if the chunk tree were emptied.
        let mut chunk = ChunkWriter::new(trees.next_chunk()?.max(index.flushed_through()));
        let mut stats = store.stream_stats(&trees.index_name)?;
        // The current chunk's new versions, each with whether its id already had one (before this page).
        // They go into the index as soon as their chunk is written, so that whatever error ends the page,
        // the index in memory is the one replaying the chunks would rebuild.
        let mut pending: Vec<(&str, IndexEntry, bool)> = Vec::new();
        let mut written = 0;
        let mut json = Vec::with_capacity(1024);
        for r in records {
            json.clear();
            write_json(&mut json, r);
            if u32::try_from(json.len()).is_err() {
                chunk.flush(trees)?;
                index_chunk(&mut index, &mut pending, &mut stats);
                return Err(StoreError::Corrupt {
                    tree: trees.chunks_name.clone(),
                    reason: format!("record {} is over 4 GiB", r.id),
                });
            }
            let fingerprint = fingerprint(&json);
            let old = index.get(r.id.as_bytes())?;
            if old.is_some_and(|o| o.fingerprint == fingerprint) {
                continue;
            }
            if chunk.is_full() {
                chunk.flush(trees)?;
                index_chunk(&mut index, &mut pending, &mut stats);
            }
            let slot = chunk.push(r.id.as_bytes(), &json);
            pending.push((
                &r.id,
                IndexEntry {
                    chunk: chunk.number,
                    slot,
                    fingerprint,
                },
                old.is_some(),
            ));
            written += 1;
        }
        chunk.flush(trees)?;
        index_chunk(&mut index, &mut pending, &mut stats);
        index.flush_if_full(chunk.number)?;
        store
            .cursors
            .insert(key(&[&self.connector, &self.stream]), to_json(cursor))?;
        if stats.stale >= COMPACT_MIN_STALE && stats.stale > stats.live {
            stats = compact(trees, &mut index)?;
        }
        store
            .meta
            .insert(stats_key(&trees.index_name), to_json(&stats))?;
        Ok(written)
    }
}

/// Points the index at a written chunk's new versions and counts them.
fn index_chunk(
    index: &mut StreamIndex,
    pending: &mut Vec<(&str, IndexEntry, bool)>,
    stats: &mut StreamStats,
) {
    for (id, entry, existed) in pending.drain(..) {
        // An id seen earlier in this page is in the delta by now, so `insert` reports it.
        if index.insert(id.as_bytes(), entry) || existed {
            stats.stale += 1;
        } else {
            stats.live += 1;
        }
    }
}

fn stats_key(index_name: &str) -> Vec<u8> {
    key(&["record_stats", index_name])
}

/// Writes the chunk, then points the index at its entries (the crash-safety order).
fn flush_with_index(
    trees: &StreamTrees,
    index: &mut StreamIndex,
    chunk: &mut ChunkWriter,
    pending: &mut Vec<(sled::IVec, IndexEntry)>,
) -> Result<(), StoreError> {
    chunk.flush(trees)?;
    for (id, entry) in pending.drain(..) {
        index.insert(&id, entry);
    }
    index.flush_if_full(chunk.number)
}

/// Rewrites a stream's live entries into new chunks and removes the old ones. Runs under the stream's
/// write lock. Order: the index's delta is written out first, so the delta then indexes only the new
/// chunks (which a crash replays); then each new chunk, then the index entries pointing into it, and only
/// after every live entry has moved, the old chunks. A crash at any point leaves every index entry
/// pointing at a chunk that exists.
fn compact(trees: &StreamTrees, index: &mut StreamIndex) -> Result<StreamStats, StoreError> {
    let end = trees.next_chunk()?.max(index.flushed_through());
    index.flush(end)?;
    let mut chunk = ChunkWriter::new(end);
    let mut pending = Vec::new();
    let mut live = 0;
    let mut bytes = Vec::new();
    for kv in trees.chunks.range(..end.to_be_bytes()) {
        let (k, stored) = kv?;
        let number = chunk_number(&trees.chunks_name, &k)?;
        load_chunk(&trees.chunks_name, &stored, &mut bytes)?;
        let entries = ChunkEntries {
            tree: &trees.chunks_name,
            bytes: &bytes,
        };
        for (slot, entry) in (0u32..).zip(entries) {
            let (id, json) = entry?;
            let Some(current) = index.get(id)? else {
                continue;
            };
            if current.chunk != number || current.slot != slot {
                continue;
            }
            if chunk.is_full() {
                flush_with_index(trees, index, &mut chunk, &mut pending)?;
            }
            let slot = chunk.push(id, json);
            pending.push((
                sled::IVec::from(id),
                IndexEntry {
                    chunk: chunk.number,
                    slot,
                    fingerprint: current.fingerprint,
                },
            ));
            live += 1;
        }
    }
    flush_with_index(trees, index, &mut chunk, &mut pending)?;
    for k in trees.chunks.range(..end.to_be_bytes()).keys() {
        trees.chunks.remove(k?)?;
    }
    tracing::info!(tree = %trees.chunks_name, live, "compacted records");
    Ok(StreamStats { live, stale: 0 })
}

/// The iterator [`Store::records`] returns.
pub struct StoredRecords {
    trees: StreamTrees,
    chunk_iter: sled::Iter,
    /// The chunk being read: its number, read offset into `chunk` and next slot.
    current: Option<(u64, usize, u32)>,
    /// The entries of the chunk being read, decompressed.
    chunk: Vec<u8>,
    /// The stream's lock, held for reading, and the index it guards.
    index: ArcRwLockReadGuard<RawRwLock, StreamIndex>,
}

impl StoredRecords {
    /// The next live record, or None at the end of the stream.
    fn next_live(&mut self) -> Result<Option<Record>, StoreError> {
        loop {
            let Some((number, offset, slot)) = &mut self.current else {
                match self.chunk_iter.next().transpose()? {
                    Some((k, v)) => {
                        let number = chunk_number(&self.trees.chunks_name, &k)?;
                        load_chunk(&self.trees.chunks_name, &v, &mut self.chunk)?;
                        self.current = Some((number, 0, 0));
                        continue;
                    }
                    None => return Ok(None),
                }
            };
            let bytes = &self.chunk;
            let mut entries = ChunkEntries {
                tree: &self.trees.chunks_name,
                bytes: &bytes[*offset..],
            };
            let Some(entry) = entries.next() else {
                self.current = None;
                continue;
            };
            let (id, json) = entry?;
            *offset = bytes.len() - entries.bytes.len();
            let this_slot = *slot;
            *slot += 1;
            if is_live(&self.index, id, *number, this_slot)? {
                return from_json(&self.trees.chunks_name, json).map(Some);
            }
        }
    }
}

impl Iterator for StoredRecords {
    type Item = Result<Record, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_live() {
            Ok(record) => record.map(Ok),
            Err(e) => {
                // A corrupt chunk ends the stream after its error rather than repeating it forever.
                self.current = None;
                self.chunk_iter = self.trees.chunks.range(u64::MAX.to_be_bytes()..);
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use std::collections::BTreeMap;

    fn rec(id: &str, version: i64, padding: usize) -> Record {
        let mut fields = serde_json::Map::new();
        fields.insert("version".into(), version.into());
        fields.insert("padding".into(), "x".repeat(padding).into());
        Record {
            id: id.into(),
            updated_at: Utc.timestamp_opt(1_700_000_000 + version, 0).unwrap(),
            account_keys: BTreeMap::new(),
            fields,
        }
    }

    /// Opens a store this test process has just closed. The directory's lock can outlive the dropped
    /// `Store` for a moment (seen now and then in these tests; sled's background threads are the likely
    /// holder, not confirmed). A new process never sees this, since exiting releases the lock, so
    /// `Locked` is retried briefly here only.
    fn reopen(dir: &std::path::Path) -> Store {
        for _ in 0..200 {
            match Store::open(dir) {
                Err(StoreError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                other => return other.unwrap(),
            }
        }
        panic!("the store at {} stayed locked for 2 s", dir.display())
    }

    fn cursor(n: u64) -> Cursor {
        Cursor(serde_json::json!({ "page": n }))
    }

    fn stored(s: &Store) -> Vec<Record> {
        s.records("c", "s").unwrap().map(Result::unwrap).collect()
    }

    fn chunk_count(s: &Store) -> usize {
        s.stream_trees("c", "s").unwrap().chunks.len()
    }

    #[test]
    fn an_unchanged_record_is_not_written_again_and_a_changed_one_is_read_once_in_its_new_version()
    {
        let s = Store::temporary().unwrap();
        let page: Vec<Record> = (0..5).map(|i| rec(&format!("r{i}"), 1, 10)).collect();
        assert_eq!(s.commit_page("c", "s", &page, &cursor(1)).unwrap(), 5);
        assert_eq!(s.commit_page("c", "s", &page, &cursor(2)).unwrap(), 0);
        assert_eq!(chunk_count(&s), 1, "an unchanged page wrote a chunk");
        assert_eq!(s.cursor("c", "s").unwrap(), Some(cursor(2)));

        assert_eq!(
            s.commit_page("c", "s", &[rec("r3", 2, 10)], &cursor(3))
                .unwrap(),
            1
        );
        let got = stored(&s);
        assert_eq!(got.len(), 5);
        assert_eq!(s.record_count("c", "s").unwrap(), 5);
        let r3: Vec<&Record> = got.iter().filter(|r| r.id == "r3").collect();
        assert_eq!(r3, [&rec("r3", 2, 10)]);
    }

    #[test]
    fn the_last_copy_of_an_id_repeated_in_one_page_wins() {
        let s = Store::temporary().unwrap();
        let page = [rec("a", 1, 0), rec("b", 1, 0), rec("a", 2, 0)];
        s.commit_page("c", "s", &page, &cursor(1)).unwrap();
        assert_eq!(stored(&s), [rec("b", 1, 0), rec("a", 2, 0)]);
    }

    #[test]
    fn a_first_load_stores_ids_repeated_across_its_pages_once() {
        let s = Store::temporary().unwrap();
        let writer = s.stream_writer("c", "s").unwrap();
        writer
            .commit_page(&[rec("a", 1, 0), rec("b", 1, 0)], &cursor(1))
            .unwrap();
        // A lookback window re-reads "b", unchanged, and brings a new version of "a".
        let written = writer
            .commit_page(
                &[rec("b", 1, 0), rec("a", 2, 0), rec("c", 1, 0)],
                &cursor(2),
            )
            .unwrap();
        assert_eq!(written, 2, "the unchanged b is not written again");
        assert_eq!(stored(&s), [rec("b", 1, 0), rec("a", 2, 0), rec("c", 1, 0)]);
        assert_eq!(s.record_count("c", "s").unwrap(), 3);
    }

    /// Pages of 500 records `0..n` at `version`, committed one by one.
    fn load(s: &Store, n: usize, version: i64) -> usize {
        let ids: Vec<Record> = (0..n)
            .map(|i| rec(&format!("{:07}", (i * 7_919) % n), version, 0))
            .collect();
        let w = s.stream_writer("c", "s").unwrap();
        ids.chunks(500)
            .enumerate()
            .map(|(p, page)| w.commit_page(page, &cursor(p as u64)).unwrap())
            .sum()
    }

    #[test]
    fn a_stream_past_several_deltas_reads_back_once_each_and_survives_a_reopen_unflushed() {
        let dir = tempfile::tempdir().unwrap();
        // Enough deltas for one merge.
        let n = super::super::index::DELTA_MAX * (super::super::index::MERGE_FAN_IN + 1) + 123;
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(load(&s, n, 1), n);
            assert_eq!(load(&s, n, 1), 0, "a refresh finds every record unchanged");
            assert_eq!(s.record_count("c", "s").unwrap(), n);
            let lock = s.stream_lock("c", "s").unwrap();
            let index = lock.read();
            assert!(index.delta_len() > 0, "the last part is only in the delta");
            assert!(index.run_levels().contains(&1), "{:?}", index.run_levels());
        }
        // Reopened: the delta is gone from memory and replayed from the chunks it indexed.
        let s = reopen(dir.path());
        assert_eq!(load(&s, n, 1), 0, "still unchanged after the reopen");
        let got = stored(&s);
        assert_eq!(got.len(), n);
        let ids: std::collections::BTreeSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), n);
        // A new version of every record: all stale, compacted, and read back in the new version.
        assert_eq!(load(&s, n, 2), n);
        let got = stored(&s);
        assert_eq!(got.len(), n);
        assert!(got.iter().all(|r| r.fields["version"] == 2));
        assert_eq!(s.record_count("c", "s").unwrap(), n);
    }

    #[test]
    fn a_schema_3_id_index_tree_is_adopted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<Record> = (0..300).map(|i| rec(&format!("{i:03}"), 1, 20)).collect();
        {
            let s = Store::open(dir.path()).unwrap();
            s.commit_page("c", "s", &old, &cursor(1)).unwrap();
            // Turn the index into what schema 3 kept: one sled entry per id, and no runs.
            let lock = s.stream_lock("c", "s").unwrap();
            let index = lock.read();
            let tree = s.db.open_tree("record_index/c/s").unwrap();
            for r in &old {
                let e = index.get(r.id.as_bytes()).unwrap().unwrap();
                let mut v = Vec::new();
                v.extend_from_slice(&e.chunk.to_be_bytes());
                v.extend_from_slice(&e.slot.to_be_bytes());
                v.extend_from_slice(&e.fingerprint.to_be_bytes());
                tree.insert(r.id.as_bytes(), v).unwrap();
            }
            // Emptied rather than dropped: this store's open index still holds the tree.
            s.db.open_tree("record_runs/c/s").unwrap().clear().unwrap();
            s.meta.insert("schema_version", "3").unwrap();
            // Counts that drifted under schema 3; the adopted tree's length is exact.
            s.meta
                .insert(
                    stats_key("record_index/c/s"),
                    to_json(&StreamStats { live: 7, stale: 0 }),
                )
                .unwrap();
            s.flush().unwrap();
        }
        let s = reopen(dir.path());
        assert!(!s
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == b"record_index/c/s"));
        assert_eq!(
            s.meta.get("schema_version").unwrap().as_deref(),
            Some(SCHEMA_VERSION.to_string().as_bytes())
        );
        assert_eq!(s.stream_lock("c", "s").unwrap().read().delta_len(), 0);
        assert_eq!(s.record_count("c", "s").unwrap(), 300);
        assert_eq!(stored(&s), old);
        assert_eq!(s.commit_page("c", "s", &old, &cursor(2)).unwrap(), 0);
        assert_eq!(
            s.commit_page("c", "s", &[rec("007", 2, 20)], &cursor(3))
                .unwrap(),
            1
        );
        assert_eq!(stored(&s).len(), 300);
    }

    #[test]
    fn a_large_page_spans_chunks_and_reads_back_whole_in_order() {
        let s = Store::temporary().unwrap();
        // 300 records of about 1 KB: about ten chunks.
        let page: Vec<Record> = (0..300).map(|i| rec(&format!("{i:04}"), 1, 1000)).collect();
        s.commit_page("c", "s", &page, &cursor(1)).unwrap();
        assert!(chunk_count(&s) >= 9, "{} chunks", chunk_count(&s));
        assert_eq!(stored(&s), page);
    }

    #[test]
    fn compaction_keeps_every_live_record_and_drops_the_stale_chunks() {
        let s = Store::temporary().unwrap();
        let n = 4_000usize;
        let mut last = Vec::new();
        // Rewrite every record until the stale entries pass both the floor and the live count: the
        // fourth version brings 12,000 stale entries against 4,000 live ones.
        for version in 0..4 {
            last = (0..n)
                .map(|i| rec(&format!("{i:05}"), version, 50))
                .collect();
            s.commit_page("c", "s", &last, &cursor(version as u64))
                .unwrap();
        }
        let stats = s.stream_stats(&index_tree_name("c", "s")).unwrap();
        assert_eq!((stats.live, stats.stale), (4_000, 0), "no compaction ran");
        assert_eq!(stored(&s), last);
        // Only the live versions' chunks remain, not four versions' worth.
        let mut entries = Vec::new();
        let bytes: usize = s
            .stream_trees("c", "s")
            .unwrap()
            .chunks
            .iter()
            .values()
            .map(|v| {
                load_chunk("t", &v.unwrap(), &mut entries).unwrap();
                entries.len()
            })
            .sum();
        let live_bytes: usize = last
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap().len() + r.id.len() + 8)
            .sum();
        assert_eq!(
            bytes, live_bytes,
            "{bytes} bytes of chunks for {live_bytes} live"
        );
    }

    #[test]
    fn a_reader_sees_one_version_while_a_writer_waits_for_it() {
        let s = Store::temporary().unwrap();
        let v1: Vec<Record> = (0..100).map(|i| rec(&format!("{i:03}"), 1, 0)).collect();
        s.commit_page("c", "s", &v1, &cursor(1)).unwrap();
        let mut reader = s.records("c", "s").unwrap();
        let first = reader.next().unwrap().unwrap();
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || {
                let v2: Vec<Record> = (0..100).map(|i| rec(&format!("{i:03}"), 2, 0)).collect();
                s.commit_page("c", "s", &v2, &cursor(2)).unwrap()
            })
        };
        let rest: Vec<Record> = reader.map(Result::unwrap).collect();
        assert_eq!(rest.len(), 99);
        assert!(
            std::iter::once(&first)
                .chain(&rest)
                .all(|r| r.fields["version"] == 1),
            "the reader saw a version written after it started"
        );
        assert_eq!(writer.join().unwrap(), 100);
        assert!(stored(&s).iter().all(|r| r.fields["version"] == 2));
    }

    #[test]
    fn a_schema_1_store_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Record> = (0..50).map(|i| rec(&format!("{i:02}"), 1, 20)).collect();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert("schema_version", "1")
                .unwrap();
            let old = db.open_tree("records/c/s").unwrap();
            for r in &records {
                old.insert(r.id.as_bytes(), serde_json::to_vec(r).unwrap())
                    .unwrap();
            }
            db.open_tree("cursors")
                .unwrap()
                .insert(key(&["c", "s"]), to_json(&cursor(7)))
                .unwrap();
            db.flush().unwrap();
        }
        let s = reopen(dir.path());
        assert_eq!(stored(&s), records);
        assert_eq!(s.cursor("c", "s").unwrap(), Some(cursor(7)));
        assert!(!s.db.tree_names().iter().any(|n| n.starts_with(b"records/")));
        let raw = s.meta.get("schema_version").unwrap().unwrap();
        assert!(
            serde_json::from_slice::<String>(&raw).is_err(),
            "schema_version is stored as bare text, not JSON"
        );
        assert_eq!(
            s.meta.get("schema_version").unwrap().as_deref(),
            Some(SCHEMA_VERSION.to_string().as_bytes())
        );
        // The migrated records are recognised as unchanged.
        assert_eq!(s.commit_page("c", "s", &records, &cursor(8)).unwrap(), 0);
    }

    #[test]
    fn chunks_are_stored_compressed_and_read_back_whole() {
        let s = Store::temporary().unwrap();
        let page: Vec<Record> = (0..100).map(|i| rec(&format!("{i:03}"), 1, 100)).collect();
        s.commit_page("c", "s", &page, &cursor(1)).unwrap();
        let trees = s.stream_trees("c", "s").unwrap();
        let (mut stored_bytes, mut entry_bytes, mut entries) = (0, 0, Vec::new());
        for v in trees.chunks.iter().values() {
            let v = v.unwrap();
            assert!(v.starts_with(&LZ4_CHUNK_TAG), "a chunk stored uncompressed");
            load_chunk("t", &v, &mut entries).unwrap();
            stored_bytes += v.len();
            entry_bytes += entries.len();
        }
        assert!(
            stored_bytes * 3 < entry_bytes,
            "{stored_bytes} bytes stored for {entry_bytes} bytes of entries"
        );
        assert_eq!(stored(&s), page);
    }

    #[test]
    fn a_schema_2_store_with_uncompressed_chunks_reads_as_before_and_takes_new_pages() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<Record> = (0..40).map(|i| rec(&format!("{i:02}"), 1, 20)).collect();
        {
            let s = Store::open(dir.path()).unwrap();
            s.commit_page("c", "s", &old, &cursor(1)).unwrap();
            // Turn the store into what schema 2 wrote: the same entries, uncompressed.
            let trees = s.stream_trees("c", "s").unwrap();
            let mut entries = Vec::new();
            for kv in trees.chunks.iter() {
                let (k, v) = kv.unwrap();
                load_chunk("t", &v, &mut entries).unwrap();
                trees.chunks.insert(k, entries.as_slice()).unwrap();
            }
            s.meta.insert("schema_version", "2").unwrap();
            s.flush().unwrap();
        }
        let s = reopen(dir.path());
        let trees = s.stream_trees("c", "s").unwrap();
        assert!(trees
            .chunks
            .iter()
            .values()
            .all(|v| !v.unwrap().starts_with(&LZ4_CHUNK_TAG)));
        assert_eq!(stored(&s), old);
        assert_eq!(
            s.meta.get("schema_version").unwrap().as_deref(),
            Some(SCHEMA_VERSION.to_string().as_bytes())
        );
        // Unchanged records are recognised; a changed one lands in a compressed chunk and wins.
        assert_eq!(s.commit_page("c", "s", &old, &cursor(2)).unwrap(), 0);
        assert_eq!(
            s.commit_page("c", "s", &[rec("07", 2, 20)], &cursor(3))
                .unwrap(),
            1
        );
        let got = stored(&s);
        assert_eq!(got.len(), 40);
        assert_eq!(got.last(), Some(&rec("07", 2, 20)));
    }

    #[test]
    fn a_record_id_over_the_limit_is_refused_naming_the_tree() {
        let s = Store::temporary().unwrap();
        let err = s
            .commit_page(
                "c",
                "s",
                &[rec(&"x".repeat(MAX_ID_BYTES + 1), 1, 0)],
                &cursor(1),
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record_chunks/c/s") && err.contains("record id"),
            "{err}"
        );
        assert_eq!(s.cursor("c", "s").unwrap(), None);
    }

    #[test]
    fn a_compressed_chunk_that_does_not_decompress_is_an_error_naming_its_tree() {
        let s = Store::temporary().unwrap();
        s.commit_page("c", "s", &[rec("a", 1, 0)], &cursor(1))
            .unwrap();
        let trees = s.stream_trees("c", "s").unwrap();
        for bad in [
            [&LZ4_CHUNK_TAG[..], &[0x10, 0, 0, 0], &[0xff; 3]].concat(),
            [&LZ4_CHUNK_TAG[..], &[0xff, 0xff, 0xff, 0x7f], &[0; 4]].concat(),
            LZ4_CHUNK_TAG[..2].to_vec(),
            LZ4_CHUNK_TAG.to_vec(),
        ] {
            trees
                .chunks
                .insert(0u64.to_be_bytes(), bad.as_slice())
                .unwrap();
            let got: Vec<_> = s.records("c", "s").unwrap().collect();
            assert_eq!(got.len(), 1, "{bad:?}");
            let err = got[0].as_ref().unwrap_err().to_string();
            assert!(err.contains("record_chunks/c/s"), "{err}");
        }
    }

    #[test]
    fn a_torn_chunk_is_an_error_naming_its_tree_not_a_panic() {
        let s = Store::temporary().unwrap();
        s.commit_page("c", "s", &[rec("a", 1, 0)], &cursor(1))
            .unwrap();
        let trees = s.stream_trees("c", "s").unwrap();
        trees
            .chunks
            .insert(0u64.to_be_bytes(), &[9u8, 0, 0, 0, b'a'][..])
            .unwrap();
        let got: Vec<_> = s.records("c", "s").unwrap().collect();
        assert_eq!(got.len(), 1);
        let err = got[0].as_ref().unwrap_err().to_string();
        assert!(err.contains("record_chunks/c/s"), "{err}");
    }

    #[test]
    fn a_snapshot_left_unfinished_by_a_full_disk_does_not_make_the_store_unopenable() {
        // Issue 25, case 1: a 0-byte `snap.*.generating` (the disk filled while sled wrote a snapshot)
        // made every open fail with "Read corrupted data" until it was deleted by hand.
        let dir = tempfile::tempdir().unwrap();
        let records = vec![rec("a", 1, 10)];
        {
            let s = reopen(dir.path());
            s.commit_page("c", "s", &records, &cursor(1)).unwrap();
            s.db.flush().unwrap();
        }
        let unfinished = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
        std::fs::write(&unfinished, b"").unwrap();
        let s = reopen(dir.path());
        assert_eq!(stored(&s), records);
        assert_eq!(s.cursor("c", "s").unwrap(), Some(cursor(1)));
        assert!(!unfinished.exists(), "the unfinished snapshot is removed");
    }
}
