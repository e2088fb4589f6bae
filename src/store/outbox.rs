//! The write-back trees of the store: the outbox with its coalescing index, dead letters, and the projects
//! playbooks opened. Which writes share a transaction is decided here (enqueue with its pending project,
//! confirm with the confirmed values and the opened project, dead-lettering with releasing a pending
//! project, replay); what to write and when to send it is `planner` and `outbox`.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::{from_json, key, to_json, unwrap_tx, Store, StoreError};
use crate::vocab::WriteOp;

/// A write waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Monotonic; delivery goes in this order.
    pub seq: u64,
    pub sink: String,
    /// Idempotency key: what the platform sees as external id, and what coalesces newer writes with older.
    pub key: String,
    pub op: WriteOp,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub enqueued_at: chrono::DateTime<chrono::Utc>,
    /// After a transient failure: not sent again before this time (backoff between delivery cycles).
    /// Skipped when unset so entries written before the field existed compare equal byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// What `Store::replay_dead_letters` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// Dead letters put back in the outbox as new entries.
    pub requeued: usize,
    /// Dead field writes folded into a newer queued write for the same account (the newer values win).
    pub merged: usize,
    /// Dead project writes dropped because a newer project for the same playbook exists.
    pub superseded: usize,
}

/// A write the platform refused for good, kept with its reason for `healthsync status` and replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub entry: OutboxEntry,
    pub reason: String,
    pub failed_at: chrono::DateTime<chrono::Utc>,
}

/// A project a playbook opened (or is opening) for an account on a sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectRecord {
    pub sink: String,
    pub account_id: String,
    pub playbook: String,
    pub key: String,
    pub name: String,
    pub opened_at: chrono::DateTime<chrono::Utc>,
    pub state: ProjectState,
    /// When earlier projects of this playbook were opened for this account (newest last), for the
    /// playbook's "at most N times in D days" limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_openings: Vec<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectState {
    /// Enqueued, not yet confirmed by the platform.
    Pending,
    Open,
    /// The account recovered (past the hysteresis margin); kept for cooldown and impact tracking.
    Resolved {
        at: chrono::DateTime<chrono::Utc>,
    },
}

/// Inside a transaction: removes outbox entry `seq`, and its coalescing index key if the index still points
/// at it (a newer write for the same key may have replaced it meanwhile).
fn take_entry(
    outbox: &TransactionalTree,
    keys: &TransactionalTree,
    seq: &[u8; 8],
    index_key: &[u8],
) -> Result<(), ConflictableTransactionError<StoreError>> {
    outbox.remove(&seq[..])?;
    if keys.get(index_key)?.as_deref() == Some(&seq[..]) {
        keys.remove(index_key)?;
    }
    Ok(())
}

enum Replayed {
    Requeued,
    Merged,
    Superseded,
}

impl Store {
    // --- outbox --------------------------------------------------------------------------------------

    /// Puts a write in the outbox. An unsent write with the same key is replaced: field updates merge (the
    /// newer value of a field wins), anything else is superseded. A pending project is recorded in the same
    /// transaction, so a crash can never leave a planned project without its marker or the reverse.
    pub fn enqueue(
        &self,
        sink: &str,
        key_str: &str,
        op: WriteOp,
        project: Option<&ProjectRecord>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        let seq = self.db.generate_id()?;
        let index_key = key(&[sink, key_str]);
        let project_kv = project.map(|p| (key(&[&p.sink, &p.account_id, &p.playbook]), to_json(p)));
        unwrap_tx(
            (&self.outbox, &self.outbox_keys, &self.projects).transaction(
                |(ob, keys, projects)| {
                    let mut op = op.clone();
                    if let Some(old_seq) = keys.get(index_key.as_slice())? {
                        if let Some(old) = ob.remove(old_seq.as_ref())? {
                            let old: OutboxEntry = from_json("outbox", &old)
                                .map_err(ConflictableTransactionError::Abort)?;
                            if let (
                                WriteOp::SetFields {
                                    fields: old_fields, ..
                                },
                                WriteOp::SetFields { fields, .. },
                            ) = (&old.op, &mut op)
                            {
                                for (k, v) in old_fields {
                                    fields.entry(k.clone()).or_insert_with(|| v.clone());
                                }
                            }
                        }
                    }
                    let entry = OutboxEntry {
                        seq,
                        sink: sink.to_string(),
                        key: key_str.to_string(),
                        op,
                        attempts: 0,
                        last_error: None,
                        enqueued_at: now,
                        not_before: None,
                    };
                    ob.insert(&seq.to_be_bytes(), to_json(&entry))?;
                    keys.insert(index_key.as_slice(), &seq.to_be_bytes())?;
                    if let Some((k, v)) = &project_kv {
                        projects.insert(k.as_slice(), v.as_slice())?;
                    }
                    Ok(())
                },
            ),
        )?;
        Ok(seq)
    }

    /// Outbox entries in delivery order, optionally for one sink.
    pub fn outbox(&self, sink: Option<&str>) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut out = Vec::new();
        for v in self.outbox.iter().values() {
            let e: OutboxEntry = from_json("outbox", &v?)?;
            if sink.is_none_or(|s| s == e.sink) {
                out.push(e);
            }
        }
        Ok(out)
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// The platform confirmed `entry`: remove it, remember the values it set, and mark its project open,
    /// all in one transaction (a crash before this resends; after it, nothing is resent).
    pub fn confirm(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        let seq = entry.seq.to_be_bytes();
        let index_key = key(&[&entry.sink, &entry.key]);
        let mut written = Vec::new();
        let mut project_key = None;
        match &entry.op {
            WriteOp::SetFields { account, fields } => {
                for (f, v) in fields {
                    written.push((key(&[&entry.sink, &account.account_id, f]), to_json(v)));
                }
            }
            WriteOp::CreateProject {
                account, playbook, ..
            } => {
                project_key = Some(key(&[&entry.sink, &account.account_id, playbook]));
            }
            // The project was marked resolved when the recovery was planned; nothing more to record.
            WriteOp::CloseProject { .. } => {}
        }
        unwrap_tx(
            (
                &self.outbox,
                &self.outbox_keys,
                &self.written,
                &self.projects,
            )
                .transaction(|(ob, keys, w, projects)| {
                    take_entry(ob, keys, &seq, &index_key)?;
                    for (k, v) in &written {
                        w.insert(k.as_slice(), v.as_slice())?;
                    }
                    if let Some(pk) = &project_key {
                        if let Some(p) = projects.get(pk.as_slice())? {
                            let mut p: ProjectRecord = from_json("projects", &p)
                                .map_err(ConflictableTransactionError::Abort)?;
                            if p.state == ProjectState::Pending {
                                p.state = ProjectState::Open;
                                projects.insert(pk.as_slice(), to_json(&p))?;
                            }
                        }
                    }
                    Ok(())
                }),
        )
    }

    /// Records a failed attempt that will be retried, not before `retry_at`.
    pub fn record_attempt(
        &self,
        entry: &OutboxEntry,
        error: &str,
        retry_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let mut e = entry.clone();
        e.attempts += 1;
        e.last_error = Some(error.to_string());
        e.not_before = Some(retry_at);
        // Only rewrite the entry if it is still there: a newer write may have coalesced it away meanwhile.
        let seq = entry.seq.to_be_bytes();
        let _ = self
            .outbox
            .compare_and_swap(seq, Some(to_json(entry)), Some(to_json(&e)))?;
        Ok(())
    }

    /// Moves an entry to the dead letters with the platform's reason.
    pub fn dead_letter(
        &self,
        entry: &OutboxEntry,
        reason: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let seq = entry.seq.to_be_bytes();
        let index_key = key(&[&entry.sink, &entry.key]);
        let mut e = entry.clone();
        e.attempts += 1;
        let dl = to_json(&DeadLetter {
            entry: e,
            reason: reason.to_string(),
            failed_at: now,
        });
        // A project that will not be created must not block its playbook: release the pending marker, so
        // the planner can open it again (or a replay restores it).
        let pending = match &entry.op {
            WriteOp::CreateProject {
                account, playbook, ..
            } => Some(key(&[&entry.sink, &account.account_id, playbook])),
            _ => None,
        };
        unwrap_tx(
            (&self.outbox, &self.outbox_keys, &self.dead, &self.projects).transaction(
                |(ob, keys, dead, projects)| {
                    take_entry(ob, keys, &seq, &index_key)?;
                    dead.insert(&seq, dl.as_slice())?;
                    if let Some(pk) = &pending {
                        if let Some(p) = projects.get(pk.as_slice())? {
                            let p: ProjectRecord = from_json("projects", &p)
                                .map_err(ConflictableTransactionError::Abort)?;
                            if p.state == ProjectState::Pending && p.key == entry.key {
                                projects.remove(pk.as_slice())?;
                            }
                        }
                    }
                    Ok(())
                },
            ),
        )
    }

    /// Puts dead letters (all, or one sink's) back in the outbox to be sent again, each in one
    /// transaction with its removal from the dead letters. Sinks look writes up by their key before
    /// creating anything, so a replay is idempotent. A dead field write whose account already has a newer
    /// queued write is folded into it (fields the newer one sets keep the newer values); a dead project
    /// whose playbook has opened a newer project since is dropped.
    pub fn replay_dead_letters(
        &self,
        sink: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ReplayReport, StoreError> {
        let mut report = ReplayReport::default();
        for (dead_key, dl) in self.dead_letters_with_keys()? {
            if sink.is_some_and(|s| s != dl.entry.sink) {
                continue;
            }
            let seq = self.db.generate_id()?;
            let e = &dl.entry;
            let index_key = key(&[&e.sink, &e.key]);
            let project = match &e.op {
                WriteOp::CreateProject {
                    account,
                    playbook,
                    name,
                    ..
                } => Some((
                    key(&[&e.sink, &account.account_id, playbook]),
                    ProjectRecord {
                        sink: e.sink.clone(),
                        account_id: account.account_id.clone(),
                        playbook: playbook.clone(),
                        key: e.key.clone(),
                        name: name.clone(),
                        opened_at: now,
                        state: ProjectState::Pending,
                        earlier_openings: Vec::new(),
                    },
                )),
                _ => None,
            };
            let outcome = (&self.outbox, &self.outbox_keys, &self.dead, &self.projects)
                .transaction(|(ob, keys, dead, projects)| {
                    dead.remove(dead_key.as_slice())?;
                    if let Some((pk, record)) = &project {
                        if let Some(p) = projects.get(pk.as_slice())? {
                            let p: ProjectRecord = from_json("projects", &p)
                                .map_err(ConflictableTransactionError::Abort)?;
                            if p.key != record.key {
                                return Ok(Replayed::Superseded);
                            }
                        }
                        projects.insert(pk.as_slice(), to_json(record))?;
                    }
                    if let Some(queued_seq) = keys.get(index_key.as_slice())? {
                        if let Some(queued) = ob.get(queued_seq.as_ref())? {
                            let mut queued: OutboxEntry = from_json("outbox", &queued)
                                .map_err(ConflictableTransactionError::Abort)?;
                            if let (
                                WriteOp::SetFields { fields, .. },
                                WriteOp::SetFields { fields: dead, .. },
                            ) = (&mut queued.op, &e.op)
                            {
                                for (k, v) in dead {
                                    fields.entry(k.clone()).or_insert_with(|| v.clone());
                                }
                            }
                            ob.insert(queued_seq.as_ref(), to_json(&queued))?;
                            return Ok(Replayed::Merged);
                        }
                    }
                    let entry = OutboxEntry {
                        seq,
                        attempts: 0,
                        last_error: None,
                        enqueued_at: now,
                        not_before: None,
                        ..e.clone()
                    };
                    ob.insert(&seq.to_be_bytes(), to_json(&entry))?;
                    keys.insert(index_key.as_slice(), &seq.to_be_bytes())?;
                    Ok(Replayed::Requeued)
                });
            match unwrap_tx(outcome)? {
                Replayed::Requeued => report.requeued += 1,
                Replayed::Merged => report.merged += 1,
                Replayed::Superseded => report.superseded += 1,
            }
        }
        Ok(report)
    }

    fn dead_letters_with_keys(&self) -> Result<Vec<(Vec<u8>, DeadLetter)>, StoreError> {
        self.dead
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k.to_vec(), from_json("dead_letters", &v)?))
            })
            .collect()
    }

    pub fn dead_letter_len(&self) -> usize {
        self.dead.len()
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead
            .iter()
            .values()
            .map(|v| from_json("dead_letters", &v?))
            .collect()
    }

    // --- projects ------------------------------------------------------------------------------------

    pub fn project(
        &self,
        sink: &str,
        account: &str,
        playbook: &str,
    ) -> Result<Option<ProjectRecord>, StoreError> {
        self.projects
            .get(key(&[sink, account, playbook]))?
            .map(|v| from_json("projects", &v))
            .transpose()
    }

    pub fn put_project(&self, p: &ProjectRecord) -> Result<(), StoreError> {
        self.projects
            .insert(key(&[&p.sink, &p.account_id, &p.playbook]), to_json(p))?;
        Ok(())
    }

    pub fn projects(&self) -> Result<Vec<ProjectRecord>, StoreError> {
        self.projects
            .iter()
            .values()
            .map(|v| from_json("projects", &v?))
            .collect()
    }
}
