//! What the CLI prints about write-back: the plan (field changes old → new, projects to open and close),
//! a shadow model's plan beside the running one, delivery results, dead letters and their replay. Like
//! `output.rs`, it only prints what the pipeline produced; `--json` shows the same data.

use serde_json::json;

use super::output::{distribution_line, print_json};
use crate::book::ScoreRun;
use crate::outbox::DeliveryReport;
use crate::planner::Plan;
use crate::store::{DeadLetter, ReplayReport};
use crate::vocab::WriteOp;

pub fn plan(plan: &Plan, json: bool) {
    if json {
        print_json(&plan);
        return;
    }
    if plan.writes.is_empty() && plan.recoveries.is_empty() {
        println!("nothing to write: every sink already has the current values");
    }
    for w in &plan.writes {
        match &w.op {
            WriteOp::SetFields { account, .. } => {
                println!(
                    "{}: update {} ({})",
                    w.sink, account.name, account.external_id
                );
                for c in &w.changes {
                    let old = c
                        .old
                        .as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "(unset)".into());
                    println!("    {:<24} {old} → {}", c.field, c.new);
                }
            }
            WriteOp::CreateProject {
                account,
                name,
                tasks,
                ..
            } => {
                println!(
                    "{}: create project \"{name}\" for {} with {} task(s)",
                    w.sink,
                    account.name,
                    tasks.len()
                );
                for t in tasks {
                    println!("    - {} (due in {} days)", t.name, t.due_days);
                }
            }
            WriteOp::CloseProject {
                account,
                name,
                note,
                ..
            } => {
                println!(
                    "{}: close project \"{name}\" for {} (recovered)",
                    w.sink, account.name
                );
                println!("    note: {note}");
            }
        }
    }
    for e in &plan.errors {
        println!("error: {e}");
    }
    println!(
        "\n{} field update(s), {} project(s), {} recovery(ies); nothing was sent (dry run)",
        plan.field_writes(),
        plan.projects(),
        plan.recoveries.len()
    );
}

pub fn pushed(plan: &Plan, report: &DeliveryReport, json: bool) {
    if json {
        print_json(&json!({"planned": plan.writes.len(), "delivery": report}));
        return;
    }
    println!(
        "planned {} write(s); delivered {} ({} projects created, {} already present), {} to retry, {} dead-lettered, {} still queued",
        plan.writes.len(),
        report.applied + report.already_present,
        report.projects_created,
        report.already_present,
        report.transient_failures,
        report.dead_lettered,
        report.remaining
    );
}

/// A candidate model's plan: what it would write if it replaced the running model. Nothing was stored.
pub fn shadow_plan(run: &ScoreRun, plan: &Plan, json: bool) {
    if json {
        print_json(&json!({
            "shadow_model": run.model,
            "model_hash": run.model_hash,
            "distribution": run.distribution,
            "plan": plan,
        }));
        return;
    }
    println!(
        "shadow model \"{}\" ({}): nothing is sent or stored",
        run.model,
        &run.model_hash[..run.model_hash.len().min(12)]
    );
    distribution_line(run);
    println!(
        "it would write {} field update(s), open {} project(s) and close {}:",
        plan.field_writes(),
        plan.projects(),
        plan.closures()
    );
    self::plan(plan, false);
}

pub fn dead_letters(dead: &[DeadLetter], json: bool) {
    if json {
        print_json(&dead);
        return;
    }
    if dead.is_empty() {
        println!("no dead letters");
        return;
    }
    println!("{} dead letter(s):", dead.len());
    for d in dead {
        let e = &d.entry;
        let a = e.op.account();
        println!(
            "  {}  {:<8} {:<15} {} ({})  {} attempt(s)",
            d.failed_at.format("%Y-%m-%d %H:%M"),
            e.sink,
            e.op.kind(),
            a.name,
            a.external_id,
            e.attempts
        );
        println!("      key {}", e.key);
        println!("      {}", d.reason);
    }
    println!("resend them with: healthsync deadletters --replay");
}

pub fn replayed(replay: &ReplayReport, report: &DeliveryReport, json: bool) {
    if json {
        print_json(&json!({"replay": replay, "delivery": report}));
        return;
    }
    println!(
        "replayed: {} requeued, {} folded into newer queued writes, {} superseded by a newer project",
        replay.requeued, replay.merged, replay.superseded
    );
    println!(
        "delivered {} ({} projects created, {} already present), {} to retry, {} dead-lettered again, {} still queued",
        report.applied + report.already_present,
        report.projects_created,
        report.already_present,
        report.transient_failures,
        report.dead_lettered,
        report.remaining
    );
}
