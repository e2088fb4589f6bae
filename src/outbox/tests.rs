//! Delivery against fake sinks: batching with per-item results, backoff between cycles, dead-lettering,
//! sinks draining concurrently, and dead-letter replay through the store.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::TimeZone as _;
use tokio::sync::Notify;

use super::*;
use crate::store::{ProjectRecord, ProjectState};
use crate::vocab::{AccountRef, BoxFuture, FieldValue, TaskSpec};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn account(id: &str) -> AccountRef {
    AccountRef {
        account_id: id.into(),
        external_id: format!("ext-{id}"),
        name: format!("Account {id}"),
    }
}

fn fields(id: &str, score: f64) -> WriteOp {
    let mut f = BTreeMap::new();
    f.insert("health".to_string(), FieldValue::Number(score));
    WriteOp::SetFields {
        account: account(id),
        fields: f,
    }
}

fn project(id: &str, key: &str) -> (WriteOp, ProjectRecord) {
    let op = WriteOp::CreateProject {
        account: account(id),
        key: key.into(),
        playbook: "poor".into(),
        name: "Poor Health".into(),
        description: "d".into(),
        tasks: vec![TaskSpec {
            name: "call".into(),
            description: "c".into(),
            due_days: 3,
        }],
        owner: None,
    };
    let record = ProjectRecord {
        sink: "crm".into(),
        account_id: id.into(),
        playbook: "poor".into(),
        key: key.into(),
        name: "Poor Health".into(),
        opened_at: t0(),
        state: ProjectState::Pending,
        earlier_openings: Vec::new(),
    };
    (op, record)
}

/// Answers per account id from a script (default: applied); records each call's account ids.
#[derive(Default)]
struct FakeSink {
    batch: usize,
    script: Mutex<BTreeMap<String, Vec<&'static str>>>,
    calls: Mutex<Vec<Vec<String>>>,
    /// When set, every call waits for this before answering.
    gate: Option<std::sync::Arc<Notify>>,
    /// When set, every call releases this after answering.
    release: Option<std::sync::Arc<Notify>>,
}

impl FakeSink {
    fn batched(n: usize) -> FakeSink {
        FakeSink {
            batch: n,
            ..FakeSink::default()
        }
    }

    fn answer(self, account: &str, outcomes: &[&'static str]) -> FakeSink {
        self.script
            .lock()
            .unwrap()
            .insert(account.into(), outcomes.to_vec());
        self
    }

    fn outcome(&self, op: &WriteOp) -> Result<Delivered, DeliveryError> {
        let id = op.account().account_id.clone();
        let mut script = self.script.lock().unwrap();
        let next = script
            .get_mut(&id)
            .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
            .unwrap_or("ok");
        match next {
            "ok" => Ok(Delivered::Applied),
            "present" => Ok(Delivered::AlreadyPresent),
            "transient" => Err(DeliveryError::Transient("http 503".into())),
            "invalid" => Err(DeliveryError::Invalid("unknown field health".into())),
            other => Err(DeliveryError::Rejected(other.into())),
        }
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

impl Sink for FakeSink {
    fn deliver<'a>(&'a self, op: &'a WriteOp) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            if let Some(g) = &self.gate {
                g.notified().await;
            }
            self.calls
                .lock()
                .unwrap()
                .push(vec![op.account().account_id.clone()]);
            let r = self.outcome(op);
            if let Some(r) = &self.release {
                r.notify_one();
            }
            r
        })
    }

    fn batch_size(&self) -> usize {
        self.batch.max(1)
    }

    fn deliver_batch<'a>(
        &'a self,
        ops: &'a [WriteOp],
    ) -> BoxFuture<'a, Vec<Result<Delivered, DeliveryError>>> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push(ops.iter().map(|o| o.account().account_id.clone()).collect());
            ops.iter().map(|o| self.outcome(o)).collect()
        })
    }
}

fn sinks(list: Vec<(&str, FakeSink)>) -> BTreeMap<String, Box<dyn Sink>> {
    list.into_iter()
        .map(|(id, s)| (id.to_string(), Box::new(s) as Box<dyn Sink>))
        .collect()
}

async fn run(
    store: &Store,
    sinks: &BTreeMap<String, Box<dyn Sink>>,
    now: DateTime<Utc>,
) -> DeliveryReport {
    let (_tx, rx) = watch::channel(false);
    deliver(store, sinks, &rx, now, &|_, _| {}).await.unwrap()
}

#[tokio::test]
async fn batches_consecutive_field_writes_and_lands_the_good_items_of_a_batch() {
    let store = Store::temporary().unwrap();
    for id in ["a", "b", "c", "d", "e"] {
        store
            .enqueue("crm", &format!("fields/{id}"), fields(id, 50.0), None, t0())
            .unwrap();
    }
    let sink = std::sync::Arc::new(FakeSink::batched(3).answer("b", &["invalid"]));
    let shared: BTreeMap<String, Box<dyn Sink>> = BTreeMap::from([(
        "crm".to_string(),
        Box::new(ArcSink(sink.clone())) as Box<dyn Sink>,
    )]);
    let report = run(&store, &shared, t0()).await;
    assert_eq!(
        sink.calls(),
        vec![
            vec!["a".to_string(), "b".into(), "c".into()],
            vec!["d".to_string(), "e".into()]
        ]
    );
    assert_eq!(
        (report.calls, report.applied, report.dead_lettered),
        (2, 4, 1)
    );
    assert_eq!(report.remaining, 0);
    let dead = store.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].entry.key, "fields/b");
    assert!(
        dead[0].reason.contains("invalid: unknown field health"),
        "{}",
        dead[0].reason
    );
    // Confirmed values are recorded for the good items only.
    assert_eq!(
        store.written("crm", "a", "health").unwrap(),
        Some(FieldValue::Number(50.0))
    );
    assert_eq!(store.written("crm", "b", "health").unwrap(), None);
}

/// Shares a fake sink between the map the outbox reads and the test that inspects it.
struct ArcSink(std::sync::Arc<FakeSink>);

impl Sink for ArcSink {
    fn deliver<'a>(&'a self, op: &'a WriteOp) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        self.0.deliver(op)
    }
    fn batch_size(&self) -> usize {
        self.0.batch_size()
    }
    fn deliver_batch<'a>(
        &'a self,
        ops: &'a [WriteOp],
    ) -> BoxFuture<'a, Vec<Result<Delivered, DeliveryError>>> {
        self.0.deliver_batch(ops)
    }
}

#[tokio::test]
async fn a_project_is_never_batched_with_field_writes() {
    let store = Store::temporary().unwrap();
    store
        .enqueue("crm", "fields/a", fields("a", 40.0), None, t0())
        .unwrap();
    let (op, rec) = project("p", "proj-p");
    store
        .enqueue("crm", "proj-p", op, Some(&rec), t0())
        .unwrap();
    store
        .enqueue("crm", "fields/b", fields("b", 40.0), None, t0())
        .unwrap();
    let sink = std::sync::Arc::new(FakeSink::batched(10));
    let map = BTreeMap::from([(
        "crm".to_string(),
        Box::new(ArcSink(sink.clone())) as Box<dyn Sink>,
    )]);
    let report = run(&store, &map, t0()).await;
    assert_eq!(
        sink.calls(),
        vec![
            vec!["a".to_string()],
            vec!["p".to_string()],
            vec!["b".to_string()]
        ]
    );
    assert_eq!(report.projects_created, 1);
    assert_eq!(
        store.project("crm", "p", "poor").unwrap().map(|p| p.state),
        Some(ProjectState::Open)
    );
}

#[tokio::test]
async fn transient_failures_back_off_between_cycles_then_dead_letter() {
    let store = Store::temporary().unwrap();
    store
        .enqueue("crm", "fields/a", fields("a", 30.0), None, t0())
        .unwrap();
    let sink = std::sync::Arc::new(FakeSink::default().answer("a", &["transient"; 10]));
    let map = BTreeMap::from([(
        "crm".to_string(),
        Box::new(ArcSink(sink.clone())) as Box<dyn Sink>,
    )]);

    let r = run(&store, &map, t0()).await;
    assert_eq!((r.transient_failures, r.remaining), (1, 1));
    let queued = store.outbox(None).unwrap();
    assert_eq!(queued[0].attempts, 1);
    assert_eq!(
        queued[0].not_before,
        Some(t0() + chrono::Duration::minutes(1))
    );

    // Thirty seconds later the entry is still waiting out its backoff: no call is made.
    let r = run(&store, &map, t0() + chrono::Duration::seconds(30)).await;
    assert_eq!((r.deferred, r.calls), (1, 0));
    assert_eq!(sink.calls().len(), 1);

    // Each further cycle past the backoff is one more attempt, with the delay doubling; the tenth fails for good.
    let mut now = t0();
    for attempt in 2..=MAX_ATTEMPTS {
        now += retry_delay(attempt - 1) + chrono::Duration::seconds(1);
        let r = run(&store, &map, now).await;
        assert_eq!(r.calls, 1, "attempt {attempt}");
    }
    assert_eq!(store.outbox_len(), 0);
    let dead = store.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].entry.attempts, MAX_ATTEMPTS);
    assert!(dead[0].reason.contains("http 503"));
}

#[test]
fn retry_delay_doubles_and_is_capped() {
    let mins: Vec<i64> = (1..=10).map(|a| retry_delay(a).num_minutes()).collect();
    assert_eq!(mins, vec![1, 2, 4, 8, 16, 32, 64, 128, 240, 240]);
}

#[tokio::test(start_paused = true)]
async fn sinks_drain_concurrently() {
    // Sink `slow` answers only after sink `fast` has answered: sequential delivery would never finish.
    let store = Store::temporary().unwrap();
    store
        .enqueue("slow", "fields/a", fields("a", 30.0), None, t0())
        .unwrap();
    store
        .enqueue("fast", "fields/b", fields("b", 30.0), None, t0())
        .unwrap();
    let signal = std::sync::Arc::new(Notify::new());
    let slow = FakeSink {
        gate: Some(signal.clone()),
        ..FakeSink::default()
    };
    let fast = FakeSink {
        release: Some(signal),
        ..FakeSink::default()
    };
    let map = sinks(vec![("slow", slow), ("fast", fast)]);
    let r = tokio::time::timeout(Duration::from_secs(60), run(&store, &map, t0()))
        .await
        .expect("delivery to one sink waited for another");
    assert_eq!(r.applied, 2);
}

#[tokio::test]
async fn a_sink_answering_the_wrong_number_of_results_keeps_the_batch_queued() {
    struct Short;
    impl Sink for Short {
        fn deliver<'a>(
            &'a self,
            _: &'a WriteOp,
        ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
            Box::pin(async { Ok(Delivered::Applied) })
        }
        fn batch_size(&self) -> usize {
            5
        }
        fn deliver_batch<'a>(
            &'a self,
            _: &'a [WriteOp],
        ) -> BoxFuture<'a, Vec<Result<Delivered, DeliveryError>>> {
            Box::pin(async { vec![Ok(Delivered::Applied)] })
        }
    }
    let store = Store::temporary().unwrap();
    for id in ["a", "b"] {
        store
            .enqueue("crm", &format!("fields/{id}"), fields(id, 30.0), None, t0())
            .unwrap();
    }
    let map = BTreeMap::from([("crm".to_string(), Box::new(Short) as Box<dyn Sink>)]);
    let r = run(&store, &map, t0()).await;
    assert_eq!((r.applied, r.transient_failures, r.remaining), (0, 2, 2));
}

#[tokio::test]
async fn a_dead_project_releases_its_playbook_and_replay_restores_it_once() {
    let store = Store::temporary().unwrap();
    let (op, rec) = project("p", "proj-p");
    store
        .enqueue("crm", "proj-p", op, Some(&rec), t0())
        .unwrap();
    let map = sinks(vec![(
        "crm",
        FakeSink::default().answer("p", &["account archived"]),
    )]);
    let r = run(&store, &map, t0()).await;
    assert_eq!(r.dead_lettered, 1);
    // The pending marker is gone, so the planner may open the project again.
    assert_eq!(store.project("crm", "p", "poor").unwrap(), None);

    let replay = store.replay_dead_letters(None, t0()).unwrap();
    assert_eq!(replay.requeued, 1);
    assert_eq!(store.dead_letter_len(), 0);
    assert_eq!(
        store.project("crm", "p", "poor").unwrap().map(|p| p.state),
        Some(ProjectState::Pending)
    );
    let map = sinks(vec![("crm", FakeSink::default())]);
    let r = run(&store, &map, t0()).await;
    assert_eq!((r.projects_created, r.remaining), (1, 0));
    // Replaying again finds nothing.
    assert_eq!(
        store.replay_dead_letters(None, t0()).unwrap(),
        crate::store::ReplayReport::default()
    );
}

#[tokio::test]
async fn replaying_a_dead_field_write_keeps_newer_queued_values() {
    let store = Store::temporary().unwrap();
    let mut old = BTreeMap::new();
    old.insert("health".to_string(), FieldValue::Number(20.0));
    old.insert("band".to_string(), FieldValue::Text("red".into()));
    store
        .enqueue(
            "crm",
            "fields/a",
            WriteOp::SetFields {
                account: account("a"),
                fields: old,
            },
            None,
            t0(),
        )
        .unwrap();
    let map = sinks(vec![("crm", FakeSink::default().answer("a", &["invalid"]))]);
    run(&store, &map, t0()).await;
    assert_eq!(store.dead_letter_len(), 1);
    // A newer write for the same account is queued before the replay.
    store
        .enqueue("crm", "fields/a", fields("a", 70.0), None, t0())
        .unwrap();
    let replay = store.replay_dead_letters(Some("crm"), t0()).unwrap();
    assert_eq!(replay.merged, 1);
    let queued = store.outbox(None).unwrap();
    assert_eq!(queued.len(), 1);
    let WriteOp::SetFields { fields, .. } = &queued[0].op else {
        panic!("expected a field write");
    };
    assert_eq!(fields.get("health"), Some(&FieldValue::Number(70.0)));
    assert_eq!(fields.get("band"), Some(&FieldValue::Text("red".into())));
}
