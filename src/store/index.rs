//! The id index of one record stream: record id → where its current version sits (chunk, slot) and the
//! fingerprint of its JSON. Owns the index's layout, its recovery and its merges; it does not know what a
//! record is or where chunks come from (`records.rs` owns both and calls in here), nor how a run is laid
//! out in its file (`run_file.rs`).
//!
//! Why not one sled entry per id: sled 0.34 keeps at most 16 entries per leaf, copies the leaf on every
//! insert and keeps a page-table entry (with up to ten log locations) per leaf in memory for good. At 2 M
//! records the per-id index took more than half of a first sync's CPU and 200 of its 344 MiB
//! (BENCHMARKS.md, "Index in sorted runs"). So the index is a small log-structured merge tree:
//!
//! - new entries go to an in-memory **delta** (a sorted map, at most [`DELTA_MAX`] entries);
//! - a full delta is written as a **run**: a file of sorted blocks in the stream's folder, with a table of
//!   each block's first id and Bloom filter that is mapped, not loaded (`run_file.rs`);
//! - runs have levels; [`MERGE_FAN_IN`] runs of one level merge into one of the next, the newer version of
//!   an id winning, so each entry is rewritten about once per level (log₈ of the stream's size in deltas).
//!
//! Lookups try the delta, then the runs from newest to oldest, skipping any run whose filter rules the id
//! out. The manifest (the runs, and `flushed_through`: every chunk numbered below it has its entries in a
//! run) is the [`MANIFEST_KEY`] entry of the stream's `record_runs/<connector>/<stream>` sled tree, so it
//! shares sled's log with the chunks it speaks of.
//!
//! The delta is not written anywhere: the chunk log is its write-ahead log. Every entry in the delta points
//! into a chunk numbered `flushed_through` or later, and those chunks hold exactly the records the delta
//! indexes, in order. Opening a stream replays them into a fresh delta, so a crash loses nothing the
//! chunks hold. A run's file is fsynced (with its folder) before the manifest that names it is written,
//! and the files a merge replaced are deleted only once the manifest without them is flushed: sled
//! recovers a prefix of its log, and a manifest may only ever name files that are whole. Files no manifest
//! names are deleted on open.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::{chunk_number, fingerprint, load_chunk, ChunkEntries};
use super::run_file::{run_id_of, Block, Owned, Run, RunHead, RunWriter};
use super::{from_json, io_error, to_json, StoreError};

/// The most entries the delta holds before it is written as a run: about 1.5 MiB of memory per stream.
pub(super) const DELTA_MAX: usize = 16_384;

/// How many runs of one level merge into one run of the next.
pub(super) const MERGE_FAN_IN: usize = 8;

/// Where the manifest sits in the runs tree.
const MANIFEST_KEY: &[u8] = b"manifest";

/// Schema 4 kept runs in the runs tree itself: block `b` of run `r` under the 12-byte key `(r, b)`, and the
/// run's meta under block number `u32::MAX`. Only [`move_runs_to_files`] reads them now.
const SCHEMA_4_META_BLOCK: u32 = u32::MAX;

/// Where a record version sits, and the fingerprint of its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IndexEntry {
    pub chunk: u64,
    pub slot: u32,
    pub fingerprint: u64,
}

impl IndexEntry {
    const LEN: usize = 20;

    /// A distinct entry for each `n`, for tests of the index and its files.
    #[cfg(test)]
    pub(super) fn numbered(n: u64) -> IndexEntry {
        IndexEntry {
            chunk: n,
            slot: (n % 7) as u32,
            fingerprint: n * 31,
        }
    }

    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.chunk.to_be_bytes());
        out.extend_from_slice(&self.slot.to_be_bytes());
        out.extend_from_slice(&self.fingerprint.to_be_bytes());
    }

    /// Decodes the 20 bytes at the start of `bytes`; `None` if there are fewer.
    pub(super) fn decode(bytes: &[u8]) -> Option<IndexEntry> {
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

fn read_manifest(tree: &sled::Tree, name: &str) -> Result<Manifest, StoreError> {
    Ok(tree
        .get(MANIFEST_KEY)?
        .map(|v| from_json(name, &v))
        .transpose()?
        .unwrap_or_default())
}

fn schema_4_key(run: u64, block: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&run.to_be_bytes());
    k[8..].copy_from_slice(&block.to_be_bytes());
    k
}

/// Moves the runs a schema-4 store kept in the runs tree `tree` (named `name`) into files in `dir`, then
/// removes them from the tree; the manifest stays as it is. Each run's file is written whole (and
/// fsynced) before anything is removed, and the runs' metas go before their blocks, so a crash midway
/// leaves each run either still in the tree (moved again on the next open) or in its file.
pub(super) fn move_runs_to_files(
    tree: &sled::Tree,
    name: &str,
    dir: &Path,
) -> Result<(), StoreError> {
    let manifest = read_manifest(tree, name)?;
    create_dir(dir)?;
    let path = Path::new(name);
    for head in &manifest.runs {
        let meta = schema_4_key(head.id, SCHEMA_4_META_BLOCK);
        if !tree.contains_key(meta)? {
            continue;
        }
        let mut w = RunWriter::create(dir, head.id)?;
        for kv in tree.range(schema_4_key(head.id, 0)..meta) {
            let (_, bytes) = kv?;
            let block = Block::parse(path, &bytes)?;
            for i in 0..block.len() {
                let (id, entry) = block.entry(i)?;
                w.push(id, &entry)?;
            }
        }
        w.finish(head.level)?;
    }
    for head in &manifest.runs {
        tree.remove(schema_4_key(head.id, SCHEMA_4_META_BLOCK))?;
    }
    for k in tree.iter().keys() {
        let k = k?;
        if k.len() == 12 {
            tree.remove(k)?;
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))
}

/// One stream's index, open: the delta, the runs, the tree that holds the manifest and the folder that
/// holds the runs' files.
pub(super) struct StreamIndex {
    tree: sled::Tree,
    dir: PathBuf,
    delta: BTreeMap<Box<[u8]>, IndexEntry>,
    /// Oldest first; levels never increase from one run to the next.
    runs: Vec<Run>,
    flushed_through: u64,
    next_run: u64,
}

impl StreamIndex {
    /// Opens the index whose manifest is in `tree` (named `name` in errors) and whose runs are files in
    /// `dir`, replaying into the delta the entries of every chunk in `chunks` from the manifest's
    /// `flushed_through` on, and deleting run files the manifest does not name (a crash between writing a
    /// run and its manifest, or between a merge's manifest and its deletions). `old`, a schema-3 id index
    /// tree with its name, is adopted as the first run unless the manifest already names runs (a crash
    /// after adopting it, before the caller dropped it). A chunk in the replayed range that does not
    /// decode fails the open (naming its tree), and with it every read and write of the stream: the index
    /// cannot be rebuilt past it, and guessing would serve wrong versions. So does a run file that is
    /// missing or damaged.
    pub(super) fn open(
        tree: sled::Tree,
        name: String,
        dir: PathBuf,
        chunks: &sled::Tree,
        chunks_name: &str,
        old: Option<(&sled::Tree, &str)>,
    ) -> Result<StreamIndex, StoreError> {
        let manifest = read_manifest(&tree, &name)?;
        create_dir(&dir)?;
        let mut runs = Vec::with_capacity(manifest.runs.len());
        for head in &manifest.runs {
            runs.push(Run::open(&dir, *head)?);
        }
        let named: HashSet<u64> = manifest.runs.iter().map(|r| r.id).collect();
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let path = entry.map_err(io_error(&dir))?.path();
            let id = path
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(run_id_of);
            if id.is_some_and(|id| !named.contains(&id)) {
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        let mut index = StreamIndex {
            tree,
            dir,
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
            if let Some(e) = run.get(id)? {
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
            let mut w = RunWriter::create(&self.dir, id)?;
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
            let id = self.take_run_id();
            let merged = merge(
                &self.runs[start..end],
                &self.dir,
                id,
                level.saturating_add(1),
            )?;
            let inputs: Vec<Run> = self.runs.splice(start..end, [merged]).collect();
            self.write_manifest()?;
            // The inputs' files may go only once no manifest sled could recover names them.
            self.tree.flush()?;
            for run in inputs {
                run.delete()?;
            }
        }
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
        let mut w = RunWriter::create(&self.dir, id)?;
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
        while w.len() >= size.saturating_mul(MERGE_FAN_IN as u64) {
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

/// Merges `inputs` (oldest first) into run `id` at `level` in `dir`; an id in several keeps its newest
/// entry.
fn merge(inputs: &[Run], dir: &Path, id: u64, level: u8) -> Result<Run, StoreError> {
    let mut w = RunWriter::create(dir, id)?;
    let mut readers: Vec<_> = inputs.iter().map(Run::entries).collect();
    let mut heads: Vec<Option<Owned>> = Vec::with_capacity(readers.len());
    for r in &mut readers {
        heads.push(r.next_entry()?);
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
                *h = readers[i].next_entry()?;
            }
        }
    }
    w.finish(level)
}

#[cfg(test)]
mod tests {
    use super::super::run_file::{encode_block, run_path};
    use super::*;

    fn entry(n: u64) -> IndexEntry {
        IndexEntry::numbered(n)
    }

    fn try_open(db: &sled::Db, dir: &Path) -> Result<StreamIndex, StoreError> {
        let chunks = db.open_tree("chunks").unwrap();
        StreamIndex::open(
            db.open_tree("runs").unwrap(),
            "runs".into(),
            dir.to_path_buf(),
            &chunks,
            "chunks",
            None,
        )
    }

    fn open(db: &sled::Db, dir: &Path) -> StreamIndex {
        try_open(db, dir).unwrap()
    }

    /// The run files in `dir`, by id.
    fn files(dir: &Path) -> Vec<u64> {
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| run_id_of(e.unwrap().file_name().to_str()?))
            .collect();
        ids.sort();
        ids
    }

    fn named(ix: &StreamIndex) -> Vec<u64> {
        let mut ids: Vec<u64> = ix.runs.iter().map(|r| r.head.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn entries_survive_flushes_and_merges_and_the_newest_version_wins() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut ix = open(&db, dir.path());
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
        // The merged runs' files are gone; only the runs the manifest names have one.
        assert_eq!(files(dir.path()), named(&ix));
        for id in &ids {
            let want = entry(n + id.parse::<u64>().unwrap());
            assert_eq!(ix.get(id.as_bytes()).unwrap(), Some(want), "{id}");
        }
        assert_eq!(ix.get(b"absent").unwrap(), None);
        assert_eq!(ix.get(b"").unwrap(), None);
        assert_eq!(ix.get(b"99999999").unwrap(), None);

        // What the delta held goes into a run; reopened, the runs come back from the manifest and their
        // files alone (there are no chunks here to replay).
        assert!(ix.delta_len() > 0);
        ix.flush(chunk).unwrap();
        drop(ix);
        let ix = open(&db, dir.path());
        for id in ids.iter().step_by(97) {
            let want = entry(n + id.parse::<u64>().unwrap());
            assert_eq!(ix.get(id.as_bytes()).unwrap(), Some(want), "{id}");
        }
    }

    #[test]
    fn a_corrupt_manifest_or_a_missing_run_is_an_error_naming_where_not_a_panic() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = db.open_tree("runs").unwrap();
        tree.insert(MANIFEST_KEY, b"{not json".as_slice()).unwrap();
        let err = try_open(&db, dir.path())
            .err()
            .expect("a corrupt manifest is refused");
        assert!(
            matches!(&err, StoreError::Corrupt { tree, .. } if tree == "runs"),
            "{err:?}"
        );

        tree.clear().unwrap();
        let mut ix = open(&db, dir.path());
        for i in 0..300u64 {
            ix.insert(format!("{i:04}").as_bytes(), entry(i));
        }
        ix.flush(1).unwrap();
        let path = run_path(dir.path(), ix.runs[0].head.id);
        drop(ix);
        std::fs::remove_file(&path).unwrap();
        let err = try_open(&db, dir.path())
            .err()
            .expect("a missing run is refused");
        assert!(
            matches!(&err, StoreError::Io { path: p, .. } if *p == path.display().to_string()),
            "{err:?}"
        );
    }

    #[test]
    fn run_files_the_manifest_does_not_name_are_removed_on_open() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut ix = open(&db, dir.path());
        ix.insert(b"kept", entry(1));
        ix.flush(1).unwrap();
        drop(ix);
        // A run written but never named (a crash before its manifest), and a file that is not a run.
        let mut w = RunWriter::create(dir.path(), 5).unwrap();
        w.push(b"a", &entry(2)).unwrap();
        w.finish(0).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a run").unwrap();
        assert_eq!(files(dir.path()), vec![0, 5]);

        let ix = open(&db, dir.path());
        assert_eq!(ix.get(b"a").unwrap(), None);
        assert_eq!(ix.get(b"kept").unwrap(), Some(entry(1)));
        assert_eq!(files(dir.path()), vec![0]);
        assert!(dir.path().join("notes.txt").exists());
    }

    #[test]
    fn schema_4_runs_in_the_tree_move_to_files_once_and_read_back() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = db.open_tree("runs").unwrap();
        // Two runs as schema 4 wrote them: "0001" is in both, and the newer run (id 7) wins.
        let ids: Vec<String> = (0..300u64).map(|i| format!("{i:04}")).collect();
        for (block, part) in ids.chunks(128).enumerate() {
            let entries: Vec<(&[u8], IndexEntry)> = part
                .iter()
                .map(|id| (id.as_bytes(), entry(id.parse().unwrap())))
                .collect();
            tree.insert(schema_4_key(3, block as u32), encode_block(&entries))
                .unwrap();
        }
        tree.insert(schema_4_key(3, SCHEMA_4_META_BLOCK), b"old meta".as_slice())
            .unwrap();
        let newer: Vec<(&[u8], IndexEntry)> = vec![(b"0001", entry(999))];
        tree.insert(schema_4_key(7, 0), encode_block(&newer))
            .unwrap();
        tree.insert(schema_4_key(7, SCHEMA_4_META_BLOCK), b"old meta".as_slice())
            .unwrap();
        // An orphan from a crash before its manifest.
        tree.insert(schema_4_key(9, 0), encode_block(&newer))
            .unwrap();
        let manifest = Manifest {
            flushed_through: 4,
            next_run: 10,
            runs: vec![
                RunHead {
                    id: 3,
                    level: 1,
                    len: 300,
                },
                RunHead {
                    id: 7,
                    level: 0,
                    len: 1,
                },
            ],
        };
        tree.insert(MANIFEST_KEY, to_json(&manifest)).unwrap();

        move_runs_to_files(&tree, "runs", dir.path()).unwrap();
        // Only the manifest is left in the tree; a second move (a crash before the schema bump) is a no-op.
        assert_eq!(tree.len(), 1);
        move_runs_to_files(&tree, "runs", dir.path()).unwrap();
        assert_eq!(files(dir.path()), vec![3, 7]);

        let ix = open(&db, dir.path());
        assert_eq!(ix.run_levels(), vec![1, 0]);
        assert_eq!(ix.flushed_through(), 4);
        for id in &ids {
            let want = match id.as_str() {
                "0001" => entry(999),
                _ => entry(id.parse().unwrap()),
            };
            assert_eq!(ix.get(id.as_bytes()).unwrap(), Some(want), "{id}");
        }
    }
}
