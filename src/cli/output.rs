//! What the CLI prints: tables and summaries for people, JSON for machines, progress bars on a terminal.
//!
//! Every function takes data the pipeline already produced and prints it; none computes anything that
//! `--json` would not also show. Progress goes to stderr and only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::book::ScoreRun;
use crate::config::{Config, ConfigErrors, Model};
use crate::outbox::DeliveryReport;
use crate::planner::Plan;
use crate::scoring::AccountScore;
use crate::sync::SyncStatus;

pub(super) fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode output as JSON: {e}"),
    }
}

pub fn fmt_score(v: Option<f64>) -> String {
    v.map(|x| format!("{:.0}", x))
        .unwrap_or_else(|| "N/A".into())
}

fn fmt_band(b: Option<crate::config::Band>) -> &'static str {
    b.map(|b| b.name()).unwrap_or("-")
}

pub(super) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Progress on stderr: one bar per stream while syncing, one for delivery. Hidden when not a terminal,
/// under systemd, or when JSON was asked for.
pub struct Progress {
    multi: Option<MultiProgress>,
    bars: std::sync::Mutex<std::collections::BTreeMap<String, ProgressBar>>,
}

impl Progress {
    pub fn new(json: bool) -> Progress {
        let visible =
            !json && std::io::stderr().is_terminal() && std::env::var_os("INVOCATION_ID").is_none();
        Progress {
            multi: visible.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            bars: Default::default(),
        }
    }

    fn bar(&self, key: &str, template: &str) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let mut bars = self.bars.lock().ok()?;
        Some(
            bars.entry(key.to_string())
                .or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    if let Ok(style) = ProgressStyle::with_template(template) {
                        b.set_style(style);
                    }
                    b.set_prefix(key.to_string());
                    b
                })
                .clone(),
        )
    }

    pub fn records(&self, connector: &str, stream: &str, n: usize) {
        if let Some(b) = self.bar(
            &format!("{connector}.{stream}"),
            "{spinner} {prefix:<28} {pos:>8} records  {per_sec}",
        ) {
            b.set_position(n as u64);
        }
    }

    pub fn deliveries(&self, done: usize, total: usize) {
        if let Some(b) = self.bar("delivery", "{prefix:<28} [{bar:30}] {pos}/{len} writes") {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    }

    /// A fixed number of steps of one kind of work (`backfill` 3/16 weeks).
    pub fn steps(&self, key: &str, done: usize, total: usize, unit: &str) {
        let template = format!("{{prefix:<28}} [{{bar:30}}] {{pos}}/{{len}} {unit}");
        if let Some(b) = self.bar(key, &template) {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    }

    pub fn finish(&self) {
        if let Ok(bars) = self.bars.lock() {
            for b in bars.values() {
                b.finish();
            }
        }
    }
}

pub fn validated(config: &Config, json: bool) -> Result<(), super::CliError> {
    let sources = config.sources().count();
    let sinks = config.sinks().count();
    let m = &config.model;
    if json {
        print_json(&json!({
            "valid": true,
            "connectors": config.connectors.iter().map(|c| json!({"id": c.id, "kind": c.kind, "role": c.role, "enabled": c.enabled, "schedule": c.schedule})).collect::<Vec<_>>(),
            "model": {"name": m.name, "hash": m.hash, "metrics": m.metrics.len(), "categories": m.categories.len(), "playbooks": m.playbooks.len()},
            "warnings": config.warnings,
            "exports": config.exports.iter().map(|e| json!({"id": e.id, "kind": e.kind, "enabled": e.enabled, "directory": e.directory})).collect::<Vec<_>>(),
            "sink_limitations": config.sinks().map(|c| json!({"connector": c.id, "kind": c.kind, "limitations": limitations(&c.kind)})).collect::<Vec<_>>(),
        }));
    } else {
        for w in &config.warnings {
            println!("warning: {w}");
        }
        println!(
            "config is valid: {} connectors ({sources} sources, {sinks} sinks), model \"{}\" with {} metrics in {} categories and {} playbooks",
            config.connectors.len(),
            m.name,
            m.metrics.len(),
            m.categories.len(),
            m.playbooks.len()
        );
        for c in config.sinks() {
            for l in limitations(&c.kind) {
                println!("note: sink {} ({}): {l}", c.id, c.kind);
            }
        }
        for e in config.exports.iter().filter(|e| e.enabled) {
            println!(
                "note: export {} ({}) writes into {} after each scoring run",
                e.id,
                e.kind,
                e.directory.display()
            );
        }
    }
    Ok(())
}

pub fn invalid(errors: &ConfigErrors, json: bool) {
    if json {
        print_json(&json!({"valid": false, "errors": errors.0}));
    } else {
        for d in &errors.0 {
            eprintln!("error: {d}");
        }
        eprintln!("{} problem(s) found; nothing was started", errors.0.len());
    }
}

pub fn synced(statuses: &[SyncStatus], json: bool) {
    if json {
        print_json(&statuses);
        return;
    }
    for s in statuses {
        let mark = if s.ok() { "ok " } else { "ERR" };
        println!(
            "{mark} {:<16} {:<12} {:>8} records in {:.1}s",
            s.connector,
            s.kind,
            s.records(),
            s.duration_ms as f64 / 1000.0
        );
        for st in &s.streams {
            println!(
                "      {:<20} {:>8} fetched {:>8} changed {:>8} stored{}",
                st.stream,
                st.records,
                st.changed,
                st.stored,
                if st.rejected > 0 {
                    format!("  {} rejected", st.rejected)
                } else {
                    String::new()
                }
            );
            if let Some(e) = &st.error {
                println!("      error: {e}");
            }
            for r in &st.rejections {
                println!(
                    "      rejected {}: {}",
                    r.id.as_deref().unwrap_or("(no id)"),
                    r.reason
                );
            }
        }
        if let (Some(e), true) = (&s.error, s.streams.is_empty()) {
            println!("      error: {e}");
        }
        if s.interrupted {
            println!("      interrupted by a stop request; the next run resumes from the last stored page");
        }
    }
}

fn score_rows(scores: &[AccountScore], limit: usize) -> Vec<&AccountScore> {
    let mut rows: Vec<&AccountScore> = scores.iter().collect();
    // Worst first; N/A last; ties by account id so the table is stable.
    rows.sort_by(|a, b| match (a.overall, b.overall) {
        (Some(x), Some(y)) => x
            .total_cmp(&y)
            .then_with(|| a.account.id.cmp(&b.account.id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.account.id.cmp(&b.account.id),
    });
    if limit > 0 {
        rows.truncate(limit);
    }
    rows
}

pub fn scores(run: &ScoreRun, model: &Model, limit: usize, json: bool) {
    if json {
        print_json(&run);
        return;
    }
    // Top-level categories only: sub-categories are in `explain`.
    let cats: Vec<&str> = model.roots().map(|c| c.label.as_str()).collect();
    print!(
        "{:<30} {:>7} {:<6} {:>5}",
        "account", "overall", "band", "cov%"
    );
    for c in &cats {
        print!(" {:>12}", truncate(c, 12));
    }
    println!("  top risk or most costly input");
    for s in score_rows(&run.scores, limit) {
        print!(
            "{:<30} {:>7} {:<6} {:>5.0}",
            truncate(&s.account.name, 30),
            fmt_score(s.overall),
            fmt_band(s.band),
            s.coverage * 100.0
        );
        for c in s.categories.iter().filter(|c| c.parent.is_none()) {
            print!(
                " {:>12}",
                format!(
                    "{} {}",
                    fmt_score(c.score),
                    c.band.map(|b| &b.name()[..1]).unwrap_or("-")
                )
            );
        }
        println!(
            "  {}",
            s.top_risk()
                .map(|r| format!("risk: {}", r.label))
                .or_else(|| s
                    .top_drag()
                    .map(|m| format!("{} (-{:.0})", m.label, m.points_lost)))
                .unwrap_or_default()
        );
    }
    if limit > 0 && run.scores.len() > limit {
        println!(
            "… {} more accounts (--limit 0 shows all)",
            run.scores.len() - limit
        );
    }
    distribution_line(run);
}

pub(super) fn distribution_line(run: &ScoreRun) {
    let d = &run.distribution;
    println!(
        "\n{} accounts scored as of {} with model \"{}\": {} red, {} amber, {} green, {} not scored",
        run.scores.len(),
        run.as_of.format("%Y-%m-%d %H:%M UTC"),
        run.model,
        d.red,
        d.amber,
        d.green,
        d.not_scored
    );
    if let Some((band, share)) = d.lopsided() {
        println!("warning: {:.0}% of scored accounts are {band}; a score is most actionable when the bands are roughly even, so consider adjusting thresholds", share * 100.0);
    }
    // A rule that fails for a reason other than a missing input is a mistake in the model: say so once.
    let mut rule_errors: std::collections::BTreeMap<&str, usize> = Default::default();
    for e in run.scores.iter().flat_map(|s| &s.rule_errors) {
        *rule_errors.entry(e.as_str()).or_default() += 1;
    }
    for (e, n) in rule_errors.iter().take(5) {
        println!("warning: {e} ({n} account(s))");
    }
    for (stream, u) in &run.unmatched {
        println!(
            "warning: {} records in {stream} match no account (e.g. {})",
            u.count,
            u.examples.join(", ")
        );
    }
}

pub fn once(
    statuses: &[SyncStatus],
    run: &ScoreRun,
    p: &Plan,
    report: &DeliveryReport,
    json: bool,
) {
    if json {
        print_json(
            &json!({"sync": statuses, "distribution": run.distribution, "accounts": run.scores.len(), "planned": p.writes.len(), "delivery": report}),
        );
        return;
    }
    synced(statuses, false);
    distribution_line(run);
    super::writeback::pushed(p, report, false);
}

pub fn explain(s: &AccountScore, history: &[(String, AccountScore)], model: &Model, json: bool) {
    let previous = history
        .iter()
        .rev()
        .find(|(_, h)| h.as_of < s.as_of)
        .map(|(_, h)| h);
    let change = previous.map(|p| crate::scoring::changes(p, s));
    let trends: Vec<(i64, Option<f64>)> = [7, 30, 90]
        .into_iter()
        .map(|d| (d, crate::scoring::trend(history, s, d)))
        .collect();
    if json {
        let trend_json: serde_json::Map<String, serde_json::Value> = trends
            .iter()
            .map(|(d, t)| (format!("{d}d"), json!(t)))
            .collect();
        print_json(&json!({
            "score": s, "previous": previous, "model": model.name, "model_hash": model.hash,
            "drags": s.drags().into_iter().take(5).collect::<Vec<_>>(),
            "changes": change, "trend": trend_json,
        }));
        return;
    }
    let a = &s.account;
    println!("{} ({})", a.name, a.id);
    println!(
        "stage {}, segment {}, owner {}",
        a.stage.as_deref().unwrap_or("-"),
        a.segment.as_deref().unwrap_or("-"),
        a.owner.as_deref().unwrap_or("-")
    );
    println!(
        "overall {} ({}), coverage {:.0}%, as of {}, model \"{}\" ({})",
        fmt_score(s.overall),
        fmt_band(s.band),
        s.coverage * 100.0,
        s.as_of.format("%Y-%m-%d %H:%M UTC"),
        model.name,
        s.model_hash
    );
    if let Some(b) = s.benchmark {
        let gap = s
            .overall
            .map(|o| format!(" ({:+.0} against it)", o - b))
            .unwrap_or_default();
        println!(
            "benchmark for this stage/segment: {b:.0}{gap}; overrides applied: {}",
            s.overrides.join(", ")
        );
    } else if !s.overrides.is_empty() {
        println!("overrides applied: {}", s.overrides.join(", "));
    }
    println!(
        "\n{:<34} {:>10} {:>6} {:<6} {:>7} {:>8}",
        "category / metric", "value", "score", "band", "weight", "points"
    );
    for c in &s.categories {
        let indent = "  ".repeat(c.depth);
        println!(
            "{:<34} {:>10} {:>6} {:<6} {:>6.0}% {:>8}",
            truncate(&format!("{indent}{}", c.label), 34),
            "",
            fmt_score(c.score),
            fmt_band(c.band),
            c.weight * 100.0,
            c.score
                .map(|_| format!("+{:.1}", c.contribution))
                .unwrap_or_else(|| format!("cov {:.0}%", c.coverage * 100.0))
        );
        for m in &c.metrics {
            let value = m
                .value
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into());
            let points = if m.score.is_some() {
                format!("+{:.1}", m.contribution)
            } else {
                m.missing.clone().unwrap_or_default()
            };
            println!(
                "{:<34} {:>10} {:>6} {:<6} {:>6.0}% {:>8}",
                truncate(&format!("{indent}  {}", m.label), 34),
                value,
                fmt_score(m.score),
                fmt_band(m.band),
                m.weight * 100.0,
                points
            );
        }
    }
    let drags: Vec<_> = s
        .drags()
        .into_iter()
        .filter(|m| m.points_lost >= 0.5)
        .take(3)
        .collect();
    if !drags.is_empty() {
        println!("\nwhat costs the most points:");
        for m in drags {
            let advice = model
                .metric(&m.id)
                .and_then(|x| x.advice.clone())
                .map(|a| format!(" — {a}"))
                .unwrap_or_default();
            println!("  {:<32} -{:.1} points{advice}", m.label, m.points_lost);
        }
    }
    if !s.risks.is_empty() {
        println!("\nactive risk events and signals:");
        for r in &s.risks {
            println!(
                "  [{}] {} since {}; comes off when {}{}",
                r.kind.name(),
                r.label,
                r.since.format("%Y-%m-%d"),
                r.clears_when,
                r.advice
                    .as_ref()
                    .map(|a| format!(" — {a}"))
                    .unwrap_or_default()
            );
        }
    }
    for e in &s.rule_errors {
        println!("warning: {e}");
    }
    let trend_text: Vec<String> = trends
        .iter()
        .map(|(d, t)| {
            format!(
                "{d}d {}",
                t.map(|x| format!("{x:+.0}"))
                    .unwrap_or_else(|| "n/a".into())
            )
        })
        .collect();
    println!("\ntrend: {}", trend_text.join(", "));
    match (previous, change) {
        (Some(p), Some(crate::scoring::Change::ModelChanged { old_hash, new_hash })) => println!(
            "since {}: the health model changed ({old_hash} → {new_hash}), so the score moved for that reason, not because of the account",
            p.as_of.format("%Y-%m-%d")
        ),
        (
            Some(p),
            Some(crate::scoring::Change::Inputs {
                inputs,
                risks_started,
                risks_ended,
                ..
            }),
        ) => {
            println!(
                "since {} (same model): overall {} → {}",
                p.as_of.format("%Y-%m-%d"),
                fmt_score(p.overall),
                fmt_score(s.overall)
            );
            // Points are each input's change in contribution, so an input that appears or goes missing
            // also moves the others (its weight is redistributed).
            for i in inputs.iter().take(8) {
                let v = |x: Option<f64>| x.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
                let note = match (i.old_value, i.new_value) {
                    (None, Some(_)) => ", now present: weight taken back from the others",
                    (Some(_), None) => ", now missing: weight spread over the others",
                    _ => "",
                };
                println!(
                    "  {:<32} value {} → {}, score {} → {} ({:+.1} points{note})",
                    truncate(&i.label, 32),
                    v(i.old_value),
                    v(i.new_value),
                    fmt_score(i.old_score),
                    fmt_score(i.new_score),
                    i.points
                );
            }
            if inputs.is_empty() {
                println!("  no input moved");
            }
            for r in risks_started {
                println!("  risk started: {r}");
            }
            for r in risks_ended {
                println!("  risk ended: {r}");
            }
        }
        _ => println!("no earlier score to compare with"),
    }
}

/// What a sink kind's platform cannot do, from its catalog entry.
fn limitations(kind: &str) -> &'static [&'static str] {
    crate::connector::kind(kind).map_or(&[], |k| k.spec.limitations)
}
