//! The local store: the only module that imports sled (`outbox.rs` holds the write-back trees).
//!
//! Typed trees hold synced records (a chunk log and an id index per connector and stream, `records.rs`),
//! their cursors, run status, current scores and daily score history, the values each sink last confirmed,
//! the durable outbox with its coalescing index, dead letters, and projects opened by playbooks. Values are
//! JSON so a person can inspect them (records: JSON inside length-prefixed chunks); keys are `\0`-joined strings. This module owns atomicity (which writes share a transaction); it
//! does not decide *what* to write: that is `sync`, `pipeline`, `planner` and `outbox`.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::TransactionError;

use crate::vocab::{Cursor, FieldValue};

mod index;
mod outbox;
mod records;
mod run_file;

pub use outbox::{DeadLetter, OutboxEntry, ProjectRecord, ProjectState, ReplayReport};
pub use records::{StoredRecords, StreamWriter};

/// sled's page cache.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Bumped when the layout of a tree changes incompatibly; `open` refuses a store it cannot read.
/// Version 2 moved records into chunks with an id index (`records.rs`); `open` migrates a version-1 store.
/// Version 3 compresses new chunks; version-2 chunks are read as they are.
/// Version 4 keeps each stream's id index as sorted runs (`index.rs`) instead of one sled entry per id;
/// `open` adopts a version-2 or -3 index tree as a stream's first run, in id order, without rewriting its
/// chunks.
/// Version 5 keeps those runs in files of their own under `record_runs/` in the store's folder, not in
/// sled (`run_file.rs`); `open` moves a version-4 store's runs out of its trees.
pub const SCHEMA_VERSION: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store at {path} is in use by another healthsync process (sled holds a lock on it)"
    )]
    Locked { path: String },
    #[error("the store at {path} has schema version {found}, this healthsync reads version {SCHEMA_VERSION}")]
    Schema { path: String, found: String },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: corrupt value in tree {tree}: {reason}")]
    Corrupt { tree: String, reason: String },
    #[error("store: {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One tree's rows as (key with `\0` shown as `/`, value as JSON), from `Store::dump`.
pub type TreeDump = (String, Vec<(String, serde_json::Value)>);

/// A run-status entry: what the last run of something did. Each has one key in the `runs` tree, built
/// only here, so the writer (`sync`, `pipeline`) and the readers (`status`, `daemon`, `backtest`) cannot
/// disagree on its spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKey<'a> {
    /// A connector's last sync, per stream (`sync::SyncStatus`).
    Sync(&'a str),
    /// When a connector last synced every stream without error or interruption.
    SyncOk(&'a str),
    /// An export's last run (`book::ExportOutcome`).
    Export(&'a str),
    /// The last delivery of the outbox (`outbox::DeliveryReport`).
    Delivery,
}

impl std::fmt::Display for RunKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunKey::Sync(c) => write!(f, "sync/{c}"),
            RunKey::SyncOk(c) => write!(f, "sync_ok/{c}"),
            RunKey::Export(e) => write!(f, "export/{e}"),
            RunKey::Delivery => f.write_str("delivery"),
        }
    }
}

/// A process-wide fact kept in the `meta` tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// The last scoring run's summary (`book::ScoreSummary`).
    LastScoreRun,
}

impl MetaKey {
    fn name(self) -> &'static str {
        match self {
            MetaKey::LastScoreRun => "last_score_run",
        }
    }
}

/// The sled database with its named trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    cursors: sled::Tree,
    runs: sled::Tree,
    scores: sled::Tree,
    history: sled::Tree,
    written: sled::Tree,
    outbox: sled::Tree,
    outbox_keys: sled::Tree,
    dead: sled::Tree,
    projects: sled::Tree,
    meta: sled::Tree,
    stream_locks: records::StreamLocks,
    /// The folder under which each stream's index keeps its run files.
    run_files: std::path::PathBuf,
    /// A temporary store's folder for run files, removed when the last clone is dropped.
    _temporary_dir: Option<std::sync::Arc<tempfile::TempDir>>,
}

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing our own plain data types to JSON cannot fail: no maps with non-string keys, no
    // non-finite floats reach here (FieldValue maps them to null).
    serde_json::to_vec(v).unwrap_or_default()
}

/// Like [`to_json`], appending to a buffer the caller reuses.
fn write_json<T: Serialize>(out: &mut Vec<u8>, v: &T) {
    // Writing into a Vec cannot fail for the same reasons `to_json` cannot; like `to_json`, a failure
    // would leave an empty value, which `from_json` reports as corrupt.
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.clear();
    }
}

/// Turns an I/O error on `path` (a run file or its folder) into a [`StoreError::Io`] naming it.
fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn from_json<T: DeserializeOwned>(tree: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree: tree.to_string(),
        reason: e.to_string(),
    })
}

type TxResult<T> = Result<T, TransactionError<StoreError>>;

fn unwrap_tx<T>(r: TxResult<T>) -> Result<T, StoreError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    })
}

/// Removes the snapshot files sled left half-written (`snap.<lsn>.generating`). sled renames a snapshot
/// into place only once it is whole and fsynced, so such a file is never one to read; but sled 0.34 reads
/// the newest `snap.*` it finds, and a disk that filled while one was being written (a 0-byte file) then
/// made every later open fail with "Read corrupted data" until the file was deleted by hand. This runs
/// only while it holds the store's lock (sled's flock on `<store>/db`), so no other process can be
/// writing the file; when the lock is held elsewhere it does nothing and sled's open reports `Locked`.
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), StoreError> {
    use fs2::FileExt;
    let db = dir.join("db");
    let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(&db) else {
        return Ok(()); // a new store, or one sled will report on itself
    };
    if file.try_lock_exclusive().is_err() {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(io_error(dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            tracing::warn!(path = %path.display(), "removing a snapshot file sled left unfinished");
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    // Dropping `file` releases the lock before sled takes it.
    drop(file);
    Ok(())
}

impl Store {
    /// Opens (or creates) the store in `dir`. A second process on the same directory gets `Locked`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        remove_unfinished_snapshots(dir)?;
        // sled's page cache defaults to 1 GiB, which a long sync fills: a small VM running the daemon
        // should not hold a gigabyte for pages it already wrote. 64 MiB keeps memory flat as stores grow
        // (benches/sources.rs: peak 250 MiB instead of 945 MiB at 1.2 M records).
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| match e {
                // sled reports the flock failure as an Other error; its message is the stable part.
                sled::Error::Io(ref io) if io.to_string().starts_with("could not acquire lock") => {
                    StoreError::Locked {
                        path: dir.display().to_string(),
                    }
                }
                other => StoreError::Sled(other),
            })?;
        Store::from_db(
            db,
            &dir.display().to_string(),
            dir.join("record_runs"),
            None,
        )
    }

    /// An in-memory store for tests and benchmarks.
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        let dir = tempfile::tempdir().map_err(io_error(&std::env::temp_dir()))?;
        Store::from_db(
            db,
            "(temporary)",
            dir.path().to_path_buf(),
            Some(std::sync::Arc::new(dir)),
        )
    }

    fn from_db(
        db: sled::Db,
        path: &str,
        run_files: std::path::PathBuf,
        temporary_dir: Option<std::sync::Arc<tempfile::TempDir>>,
    ) -> Result<Store, StoreError> {
        let meta = db.open_tree("meta")?;
        let found = meta.get("schema_version")?;
        let store = Store {
            cursors: db.open_tree("cursors")?,
            runs: db.open_tree("runs")?,
            scores: db.open_tree("scores")?,
            history: db.open_tree("history")?,
            written: db.open_tree("written")?,
            outbox: db.open_tree("outbox")?,
            outbox_keys: db.open_tree("outbox_keys")?,
            dead: db.open_tree("dead_letters")?,
            projects: db.open_tree("projects")?,
            meta,
            db,
            stream_locks: Default::default(),
            run_files,
            _temporary_dir: temporary_dir,
        };
        match found.as_deref() {
            None => {}
            Some(b"1") => store.migrate_from_schema_1()?,
            Some(b"2") | Some(b"3") => store.adopt_id_index_trees()?,
            Some(b"4") => store.move_runs_to_files()?,
            Some(v) if v == SCHEMA_VERSION.to_string().as_bytes() => return Ok(store),
            Some(v) => {
                return Err(StoreError::Schema {
                    path: path.to_string(),
                    found: String::from_utf8_lossy(v).into_owned(),
                })
            }
        }
        store
            .meta
            .insert("schema_version", SCHEMA_VERSION.to_string().as_bytes())?;
        Ok(store)
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    // --- records and cursors -------------------------------------------------------------------------

    pub fn cursor(&self, connector: &str, stream: &str) -> Result<Option<Cursor>, StoreError> {
        self.cursors
            .get(key(&[connector, stream]))?
            .map(|v| from_json("cursors", &v))
            .transpose()
    }

    /// Forgets a stream's cursor so the next sync is a full refresh. Records stay (they are upserted).
    pub fn reset_cursor(&self, connector: &str, stream: &str) -> Result<(), StoreError> {
        self.cursors.remove(key(&[connector, stream]))?;
        Ok(())
    }

    // --- run status ----------------------------------------------------------------------------------

    pub fn put_status<T: Serialize>(&self, key: RunKey<'_>, status: &T) -> Result<(), StoreError> {
        self.runs.insert(key.to_string(), to_json(status))?;
        Ok(())
    }

    pub fn status<T: DeserializeOwned>(&self, key: RunKey<'_>) -> Result<Option<T>, StoreError> {
        self.runs
            .get(key.to_string())?
            .map(|v| from_json("runs", &v))
            .transpose()
    }

    // --- scores --------------------------------------------------------------------------------------

    /// Replaces the current scores and records each account's score in the daily history (one point per
    /// account per day; a rerun the same day overwrites it, so a retried run leaves the same history).
    pub fn put_scores<T: Serialize>(
        &self,
        day: chrono::NaiveDate,
        scores: &[(String, T)],
    ) -> Result<(), StoreError> {
        let day = day.format("%Y-%m-%d").to_string();
        let mut current = sled::Batch::default();
        for k in self.scores.iter().keys() {
            current.remove(k?);
        }
        let mut history = sled::Batch::default();
        for (account, score) in scores {
            let v = to_json(score);
            current.insert(account.as_bytes(), v.clone());
            history.insert(key(&[account, &day]), v);
        }
        self.scores.apply_batch(current)?;
        self.history.apply_batch(history)?;
        Ok(())
    }

    pub fn scores<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        self.scores
            .iter()
            .values()
            .map(|v| from_json("scores", &v?))
            .collect()
    }

    pub fn score<T: DeserializeOwned>(&self, account: &str) -> Result<Option<T>, StoreError> {
        self.scores
            .get(account)?
            .map(|v| from_json("scores", &v))
            .transpose()
    }

    /// An account's daily history, oldest first, as (YYYY-MM-DD, score).
    pub fn history<T: DeserializeOwned>(
        &self,
        account: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let prefix = key(&[account, ""]);
        self.history
            .scan_prefix(prefix.clone())
            .map(|kv| {
                let (k, v) = kv?;
                let day = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((day, from_json("history", &v)?))
            })
            .collect()
    }

    // --- last confirmed values -----------------------------------------------------------------------

    pub fn written(
        &self,
        sink: &str,
        account: &str,
        field: &str,
    ) -> Result<Option<FieldValue>, StoreError> {
        self.written
            .get(key(&[sink, account, field]))?
            .map(|v| from_json("written", &v))
            .transpose()
    }

    // --- meta ----------------------------------------------------------------------------------------

    pub fn put_meta<T: Serialize>(&self, key: MetaKey, value: &T) -> Result<(), StoreError> {
        self.meta.insert(key.name(), to_json(value))?;
        Ok(())
    }

    pub fn meta<T: DeserializeOwned>(&self, key: MetaKey) -> Result<Option<T>, StoreError> {
        self.meta
            .get(key.name())?
            .map(|v| from_json("meta", &v))
            .transpose()
    }

    /// A canonical dump for comparing two stores (the crash-safety test): every tree except sled's
    /// default one, with each record stream shown as one logical tree `records/<connector>/<stream>` of
    /// (id, record) in id order rather than as its chunks and index, whose layout depends on history.
    pub fn dump(&self) -> Result<Vec<TreeDump>, StoreError> {
        let mut out = Vec::new();
        for (connector, stream) in self.record_streams() {
            let mut rows = Vec::new();
            for r in self.records(&connector, &stream)? {
                let r = r?;
                rows.push((r.id.clone(), serde_json::to_value(&r).unwrap_or_default()));
            }
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            out.push((format!("records/{connector}/{stream}"), rows));
        }
        let mut names: Vec<String> = self
            .db
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .filter(|n| {
                n != "__sled__default"
                    && !n.starts_with("record_index/")
                    && !n.starts_with("record_chunks/")
                    && !n.starts_with("record_runs/")
            })
            .collect();
        names.sort();
        for name in names {
            let tree = self.db.open_tree(&name)?;
            let mut rows = Vec::new();
            for kv in tree.iter() {
                let (k, v) = kv?;
                let value = serde_json::from_slice(&v).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&v).into_owned())
                });
                rows.push((String::from_utf8_lossy(&k).replace('\0', "/"), value));
            }
            out.push((name, rows));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{AccountRef, Record, WriteOp};
    use chrono::{TimeZone, Utc};
    use std::collections::BTreeMap;

    fn rec(id: &str) -> Record {
        Record {
            id: id.into(),
            updated_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            account_keys: BTreeMap::new(),
            fields: serde_json::Map::new(),
        }
    }

    fn set_fields(account: &str, fields: &[(&str, f64)]) -> WriteOp {
        WriteOp::SetFields {
            account: AccountRef {
                account_id: account.into(),
                external_id: account.into(),
                name: account.into(),
            },
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), FieldValue::Number(*v)))
                .collect(),
        }
    }

    #[test]
    fn page_and_cursor_commit_together_and_count_changes() {
        let s = Store::temporary().unwrap();
        let c1 = Cursor(serde_json::json!({"after": "2"}));
        assert_eq!(
            s.commit_page("hs", "companies", &[rec("1"), rec("2")], &c1)
                .unwrap(),
            2
        );
        assert_eq!(s.cursor("hs", "companies").unwrap(), Some(c1.clone()));
        // Re-reading the same page changes nothing.
        assert_eq!(
            s.commit_page("hs", "companies", &[rec("2")], &c1).unwrap(),
            0
        );
        assert_eq!(s.record_count("hs", "companies").unwrap(), 2);
        let ids: Vec<String> = s
            .records("hs", "companies")
            .unwrap()
            .map(|r| r.unwrap().id)
            .collect();
        assert_eq!(ids, ["1", "2"]);
    }

    #[test]
    fn unsent_field_writes_coalesce_newest_wins() {
        let s = Store::temporary().unwrap();
        let now = Utc::now();
        s.enqueue(
            "v",
            "a1/fields",
            set_fields("a1", &[("score", 40.0), ("band", 1.0)]),
            None,
            now,
        )
        .unwrap();
        s.enqueue(
            "v",
            "a1/fields",
            set_fields("a1", &[("score", 55.0)]),
            None,
            now,
        )
        .unwrap();
        let ob = s.outbox(Some("v")).unwrap();
        assert_eq!(ob.len(), 1);
        let WriteOp::SetFields { fields, .. } = &ob[0].op else {
            panic!("not a field write")
        };
        assert_eq!(fields["score"], FieldValue::Number(55.0));
        assert_eq!(fields["band"], FieldValue::Number(1.0));
    }

    #[test]
    fn confirm_removes_entry_and_remembers_values() {
        let s = Store::temporary().unwrap();
        s.enqueue(
            "v",
            "k",
            set_fields("a1", &[("score", 40.0)]),
            None,
            Utc::now(),
        )
        .unwrap();
        let e = s.outbox(None).unwrap().remove(0);
        s.confirm(&e).unwrap();
        assert_eq!(s.outbox_len(), 0);
        assert_eq!(
            s.written("v", "a1", "score").unwrap(),
            Some(FieldValue::Number(40.0))
        );
    }

    #[test]
    fn dead_letter_keeps_reason() {
        let s = Store::temporary().unwrap();
        s.enqueue(
            "v",
            "k",
            set_fields("a1", &[("score", 40.0)]),
            None,
            Utc::now(),
        )
        .unwrap();
        let e = s.outbox(None).unwrap().remove(0);
        s.dead_letter(&e, "404 account not found", Utc::now())
            .unwrap();
        assert_eq!(s.outbox_len(), 0);
        let dl = s.dead_letters().unwrap();
        assert_eq!(dl[0].reason, "404 account not found");
        assert_eq!(dl[0].entry.attempts, 1);
    }

    #[test]
    fn second_open_of_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(StoreError::Locked { .. }) => {}
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("a second open must be refused"),
        }
    }
}
