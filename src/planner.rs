//! The planner: what each sink should be told, given the scores and what it already confirmed.
//!
//! Field writes are the difference between the health outputs mapped in the sink's `[fields]` and the last
//! value that sink confirmed per account and field: unchanged values are never planned. Playbooks open a
//! project when the watched score enters their band, at most one open project per (sink, account,
//! playbook) and not again within the cooldown after one was resolved; a project is resolved when the
//! account recovers past the hysteresis margin. Planning reads the store and renders templates; it sends
//! nothing and writes nothing (`enqueue` in `crate::pipeline` does, through the store's outbox).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use minijinja::{context, Environment};
use serde::Serialize;

use crate::config::{Band, ConnectorConfig, FieldMap, ForEach, Model, Playbook, Target};
use crate::scoring::AccountScore;
use crate::store::{ProjectRecord, ProjectState, Store, StoreError};
use crate::vocab::{AccountRef, FieldValue, TaskSpec, WriteOp};

/// One field whose value changes on the platform.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Option<FieldValue>,
    pub new: FieldValue,
}

/// One planned write, ready for the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedWrite {
    pub sink: String,
    /// Idempotency and coalescing key.
    pub key: String,
    pub op: WriteOp,
    /// Field writes: old → new per field, for `healthsync plan`.
    pub changes: Vec<FieldChange>,
    /// Project writes: the marker stored with the outbox entry.
    #[serde(skip)]
    pub project: Option<ProjectRecord>,
}

/// A project whose account recovered; recorded locally (closing it on the platform is not built yet).
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub sink: String,
    pub account_id: String,
    pub playbook: String,
    pub project: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub writes: Vec<PlannedWrite>,
    pub recoveries: Vec<Recovery>,
    /// Template render failures, by account; the account's other writes still go ahead.
    pub errors: Vec<String>,
}

impl Plan {
    pub fn field_writes(&self) -> usize {
        self.writes
            .iter()
            .filter(|w| matches!(w.op, WriteOp::SetFields { .. }))
            .count()
    }

    pub fn projects(&self) -> usize {
        self.writes
            .iter()
            .filter(|w| matches!(w.op, WriteOp::CreateProject { .. }))
            .count()
    }

    pub fn closures(&self) -> usize {
        self.writes
            .iter()
            .filter(|w| matches!(w.op, WriteOp::CloseProject { .. }))
            .count()
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The health outputs a sink's field map asks for, as platform field → value (`computed_at` aside: it
/// rides along with other changes). Scores and the trend are written as whole numbers so that noise below
/// a point does not cause a write. `trend` is the overall score's 30-day change, when known.
pub fn desired_fields(
    map: &FieldMap,
    s: &AccountScore,
    trend: Option<f64>,
) -> BTreeMap<String, FieldValue> {
    let mut out = BTreeMap::new();
    let num = |v: Option<f64>| {
        v.map(|x| FieldValue::Number(x.round()))
            .unwrap_or(FieldValue::Null)
    };
    if let Some(f) = &map.score {
        out.insert(f.clone(), num(s.overall));
    }
    if let Some(f) = &map.band {
        out.insert(
            f.clone(),
            s.band
                .map(|b| FieldValue::Text(b.name().into()))
                .unwrap_or(FieldValue::Null),
        );
    }
    if let Some(f) = &map.coverage {
        out.insert(f.clone(), FieldValue::Number(round1(s.coverage * 100.0)));
    }
    if let Some(f) = &map.top_risk {
        out.insert(
            f.clone(),
            // An active hard or soft risk event outranks the input that costs the most points.
            s.top_risk()
                .map(|r| FieldValue::Text(r.label.clone()))
                .or_else(|| s.top_drag().map(|m| FieldValue::Text(m.label.clone())))
                .unwrap_or(FieldValue::Null),
        );
    }
    for (cat, f) in &map.categories {
        out.insert(f.clone(), num(s.category(cat).and_then(|c| c.score)));
    }
    for (cat, f) in &map.category_bands {
        out.insert(
            f.clone(),
            s.category(cat)
                .and_then(|c| c.band)
                .map(|b| FieldValue::Text(b.name().into()))
                .unwrap_or(FieldValue::Null),
        );
    }
    if let Some(f) = &map.trend {
        out.insert(f.clone(), num(trend));
    }
    out
}

fn account_ref(s: &AccountScore) -> AccountRef {
    AccountRef {
        account_id: s.account.id.clone(),
        external_id: s.account.id.clone(),
        name: s.account.name.clone(),
    }
}

/// Plans every sink's writes for the given scores.
pub fn plan(
    store: &Store,
    model: &Model,
    sinks: &[&ConnectorConfig],
    scores: &[AccountScore],
    now: DateTime<Utc>,
) -> Result<Plan, StoreError> {
    let mut plan = Plan::default();
    let env = Environment::new();
    for sink in sinks {
        for s in scores {
            let trend = match &sink.fields.trend {
                Some(_) => {
                    let history: Vec<(String, AccountScore)> = store.history(&s.account.id)?;
                    crate::scoring::trend(&history, s, 30)
                }
                None => None,
            };
            let desired = desired_fields(&sink.fields, s, trend);
            let mut changes = Vec::new();
            for (field, new) in desired {
                let old = store.written(&sink.id, &s.account.id, &field)?;
                if old.as_ref() != Some(&new) {
                    changes.push(FieldChange { field, old, new });
                }
            }
            if let (Some(field), false) = (&sink.fields.computed_at, changes.is_empty()) {
                changes.push(FieldChange {
                    field: field.clone(),
                    old: store.written(&sink.id, &s.account.id, field)?,
                    new: FieldValue::Text(
                        s.as_of.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    ),
                });
            }
            if !changes.is_empty() {
                let fields = changes
                    .iter()
                    .map(|c| (c.field.clone(), c.new.clone()))
                    .collect();
                plan.writes.push(PlannedWrite {
                    sink: sink.id.clone(),
                    key: format!("fields/{}", s.account.id),
                    op: WriteOp::SetFields {
                        account: account_ref(s),
                        fields,
                    },
                    changes,
                    project: None,
                });
            }
            for pb in &model.playbooks {
                plan_playbook(store, &env, model, sink, pb, s, now, &mut plan)?;
            }
        }
    }
    Ok(plan)
}

fn watched(pb: &Playbook, s: &AccountScore) -> (Option<f64>, Option<Band>, String) {
    match &pb.when {
        Target::Overall => (s.overall, s.band, "Overall".to_string()),
        Target::Category(id) => match s.category(id) {
            Some(c) => (c.score, c.band, c.label.clone()),
            None => (None, None, id.clone()),
        },
        // A risk event reads as red while active and green once it has cleared (its exit condition is
        // the hysteresis), with the overall score for the templates.
        Target::Risk(id) => match s.risks.iter().find(|r| &r.id == id) {
            Some(r) => (s.overall.or(Some(0.0)), Some(Band::Red), r.label.clone()),
            None => (s.overall.or(Some(0.0)), Some(Band::Green), id.clone()),
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_playbook(
    store: &Store,
    env: &Environment<'_>,
    model: &Model,
    sink: &ConnectorConfig,
    pb: &Playbook,
    s: &AccountScore,
    now: DateTime<Utc>,
    plan: &mut Plan,
) -> Result<(), StoreError> {
    let (score, band, target_label) = watched(pb, s);
    let (Some(score), Some(band)) = (score, band) else {
        return Ok(());
    };
    let existing = store.project(&sink.id, &s.account.id, &pb.id)?;
    let (triggered, recovered, out_of) = match (pb.drop, pb.thriving_days) {
        // Thriving: green every day of the window; the advocacy project ends when the account leaves green.
        (_, Some(days)) => {
            let streak = green_for(store, pb, s, days, now)? && band == Band::Green;
            (
                streak,
                band != Band::Green,
                "no longer green, so no longer an advocate candidate".to_string(),
            )
        }
        // The band already applies the hysteresis margin, so leaving the trigger band is a real recovery.
        (None, None) => {
            let t = band <= pb.enters;
            (t, !t, format!("out of the {} band", pb.enters.name()))
        }
        (Some(d), None) => {
            let high = recent_high(store, pb, s, d.days, now)?.max(score);
            let fall = high - score;
            (
                fall >= d.points,
                fall < d.points / 2.0,
                format!(
                    "back within {} points of its {}-day high of {}",
                    d.points / 2.0,
                    d.days,
                    high.round()
                ),
            )
        }
    };
    match (&existing, triggered) {
        (Some(p), _) if p.state == ProjectState::Open && recovered => {
            plan.recoveries.push(Recovery {
                sink: sink.id.clone(),
                account_id: s.account.id.clone(),
                playbook: pb.id.clone(),
                project: p.name.clone(),
            });
            let note = format!(
                "{} recovered: {target_label} is {} ({}), {out_of}; \"{}\" was opened on {}. Closed by healthsync.",
                s.account.name,
                score.round(),
                band.name(),
                p.name,
                p.opened_at.format("%Y-%m-%d")
            );
            plan.writes.push(PlannedWrite {
                sink: sink.id.clone(),
                key: format!("{}/close", p.key),
                op: WriteOp::CloseProject {
                    account: account_ref(s),
                    key: p.key.clone(),
                    playbook: pb.id.clone(),
                    name: p.name.clone(),
                    note,
                },
                changes: Vec::new(),
                project: None,
            });
            return Ok(());
        }
        (Some(p), true) => match p.state {
            ProjectState::Pending | ProjectState::Open => return Ok(()),
            ProjectState::Resolved { at }
                if now - at < Duration::days(i64::from(pb.cooldown_days)) =>
            {
                return Ok(())
            }
            ProjectState::Resolved { .. } => {}
        },
        (_, false) => return Ok(()),
        (None, true) => {}
    }
    // Every earlier opening, this one's predecessor included, counts toward the playbook's limit.
    let mut earlier_openings: Vec<DateTime<Utc>> = existing
        .iter()
        .flat_map(|p| p.earlier_openings.iter().copied().chain([p.opened_at]))
        .filter(|t| {
            pb.limit
                .is_none_or(|l| now - *t < Duration::days(i64::from(l.days)))
        })
        .collect();
    if let Some(l) = pb.limit {
        if earlier_openings.len() >= l.times as usize {
            return Ok(());
        }
    }
    // Without a limit the list only serves reports; keep it short.
    let excess = earlier_openings.len().saturating_sub(50);
    earlier_openings.drain(..excess);

    let account = context! {
        id => s.account.id, name => s.account.name, stage => s.account.stage,
        segment => s.account.segment, owner => s.account.owner,
    };
    let target = context! { id => match &pb.when { Target::Overall => "overall".to_string(), Target::Category(c) | Target::Risk(c) => c.clone() }, label => target_label };
    let base = context! { account => account.clone(), target => target.clone(), score => score.round(), band => band.name() };
    let render = |src: &str, ctx: &minijinja::Value| {
        env.render_str(src, ctx.clone()).map_err(|e| e.to_string())
    };
    let result = (|| -> Result<(String, String, Vec<TaskSpec>), String> {
        let name = render(&pb.project, &base)?;
        let description = render(&pb.description, &base)?;
        let mut tasks = Vec::new();
        for t in &pb.tasks {
            match t.for_each {
                ForEach::Once => tasks.push(TaskSpec {
                    name: render(&t.name, &base)?,
                    description: render(&t.description, &base)?,
                    due_days: t.due_days,
                }),
                ForEach::FailingMetric => {
                    for m in failing_metrics(pb, s) {
                        let ctx = context! {
                            account => account.clone(), target => target.clone(), score => score.round(), band => band.name(),
                            metric => context! { id => m.id, label => m.label, value => m.value, score => m.score.map(f64::round),
                                                 advice => model.metric(&m.id).and_then(|x| x.advice.clone()) },
                        };
                        tasks.push(TaskSpec {
                            name: render(&t.name, &ctx)?,
                            description: render(&t.description, &ctx)?,
                            due_days: t.due_days,
                        });
                    }
                }
            }
        }
        Ok((name, description, tasks))
    })();
    let (name, description, tasks) = match result {
        Ok(r) => r,
        Err(e) => {
            plan.errors
                .push(format!("account {}: playbook {}: {e}", s.account.id, pb.id));
            return Ok(());
        }
    };
    let key = format!(
        "healthsync-{}-{}-{}",
        pb.id,
        s.account.id,
        now.format("%Y%m%d")
    );
    plan.writes.push(PlannedWrite {
        sink: sink.id.clone(),
        key: key.clone(),
        op: WriteOp::CreateProject {
            account: account_ref(s),
            key: key.clone(),
            playbook: pb.id.clone(),
            name: name.clone(),
            description,
            tasks,
            owner: s.account.owner.clone(),
        },
        changes: Vec::new(),
        project: Some(ProjectRecord {
            sink: sink.id.clone(),
            account_id: s.account.id.clone(),
            playbook: pb.id.clone(),
            key,
            name,
            opened_at: now,
            state: ProjectState::Pending,
            earlier_openings,
        }),
    });
    Ok(())
}

/// Whether the watched score was green at every stored point of the last `days` days, with history
/// reaching back that far (a new account is not yet an advocate candidate).
fn green_for(
    store: &Store,
    pb: &Playbook,
    s: &AccountScore,
    days: u32,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let since = now - Duration::days(i64::from(days));
    let history: Vec<(String, AccountScore)> = store.history(&s.account.id)?;
    let covers = history.iter().any(|(_, h)| h.as_of <= since);
    let all_green = history
        .iter()
        .filter(|(_, h)| h.as_of > since && h.as_of <= now)
        .all(|(_, h)| watched(pb, h).1 == Some(Band::Green));
    Ok(covers && all_green)
}

/// The highest watched score in the account's stored history over the last `days` days.
fn recent_high(
    store: &Store,
    pb: &Playbook,
    s: &AccountScore,
    days: u32,
    now: DateTime<Utc>,
) -> Result<f64, StoreError> {
    let since = now - Duration::days(i64::from(days));
    let history: Vec<(String, AccountScore)> = store.history(&s.account.id)?;
    Ok(history
        .iter()
        .filter(|(_, h)| h.as_of >= since && h.as_of <= now)
        .filter_map(|(_, h)| watched(pb, h).0)
        .fold(f64::MIN, f64::max))
}

/// Metrics of the watched target that are in the playbook's band or worse, worst first.
fn failing_metrics<'a>(pb: &Playbook, s: &'a AccountScore) -> Vec<&'a crate::scoring::MetricScore> {
    let mut out: Vec<_> = s
        .drags()
        .into_iter()
        .filter(|m| match &pb.when {
            Target::Overall | Target::Risk(_) => true,
            Target::Category(c) => s
                .category(c)
                .is_some_and(|cat| cat.metrics.iter().any(|x| x.id == m.id)),
        })
        .filter(|m| m.band.is_some_and(|b| b <= pb.enters))
        .collect();
    out.truncate(10);
    out
}

#[cfg(test)]
mod tests;
