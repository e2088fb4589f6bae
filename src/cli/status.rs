//! `healthsync status` for people: the [`StatusReport`] as a short, aligned summary. `--json` prints the
//! report itself. The report is built elsewhere (`crate::status`), by this process or by the daemon.

use chrono::{DateTime, Utc};

use crate::status::{ConnectorStatus, StatusReport};
use crate::vocab::Role;

/// "3m", "2h05m", "4d": a duration as a person reads it.
pub fn fmt_age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d", secs / 86_400),
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn connector_line(c: &ConnectorStatus, now: DateTime<Utc>) -> String {
    if c.role == Role::Sink {
        return match &c.build_error {
            Some(e) => format!("sink, cannot run: {e}"),
            None => "sink".into(),
        };
    }
    if !c.enabled {
        return "disabled".into();
    }
    let run = match (&c.build_error, &c.last_run) {
        (Some(e), _) => format!("CANNOT RUN: {e}"),
        (None, None) => "never synced".into(),
        (None, Some(r)) if r.interrupted => format!(
            "interrupted {} after {} records",
            when(r.started_at),
            r.records()
        ),
        (None, Some(r)) if r.ok() => format!(
            "ok {} ({} records in {:.1}s)",
            when(r.started_at),
            r.records(),
            r.duration_ms as f64 / 1000.0
        ),
        (None, Some(r)) => format!(
            "FAILED {}: {}",
            when(r.started_at),
            r.streams
                .iter()
                .find_map(|s| s.error.clone())
                .or_else(|| r.error.clone())
                .unwrap_or_default()
        ),
    };
    let max_age = fmt_age(c.max_age_secs as i64);
    let freshness = match (c.last_success, c.stale) {
        (Some(t), false) => format!(
            "fresh: last success {} ago (max age {max_age})",
            fmt_age((now - t).num_seconds())
        ),
        (Some(t), true) => format!(
            "STALE: last success {} ago (max age {max_age})",
            fmt_age((now - t).num_seconds())
        ),
        (None, _) => "STALE: never succeeded".into(),
    };
    format!("{run}; {freshness}")
}

pub fn print(report: &StatusReport, json: bool) {
    if json {
        super::output::print_json(report);
        return;
    }
    let now = report.generated_at;
    if let Some(d) = &report.daemon {
        println!(
            "daemon: pid {}, up {}, config {}",
            d.pid,
            fmt_age((now - d.started_at).num_seconds()),
            d.config
        );
        if let Some(r) = &d.last_reload {
            if r.applied {
                println!("  last reload {}: applied", when(r.at));
            } else {
                println!(
                    "  last reload {}: REJECTED, still running the previous config",
                    when(r.at)
                );
                for e in &r.errors {
                    println!("    {e}");
                }
            }
        }
    }
    println!("connectors:");
    for c in &report.connectors {
        println!("  {:<16} {:<12} {}", c.id, c.kind, connector_line(c, now));
        if let Some(run) = &c.last_run {
            for s in &run.streams {
                let newest = s
                    .high_water
                    .map(|t| format!(", newest record {}", fmt_age((now - t).num_seconds())))
                    .map(|a| format!("{a} old"))
                    .unwrap_or_default();
                let rejected = if s.rejected > 0 {
                    format!(", {} rejected", s.rejected)
                } else {
                    String::new()
                };
                println!("    {:<20} {} stored{newest}{rejected}", s.stream, s.stored);
            }
        }
    }
    match &report.last_score_run {
        Some(s) => {
            let d = &s.distribution;
            println!(
                "scoring: {} accounts as of {} (model {}): {} red / {} amber / {} green / {} not scored",
                s.accounts,
                s.as_of.format("%Y-%m-%d %H:%M UTC"),
                s.model,
                d.red,
                d.amber,
                d.green,
                d.not_scored
            );
            for (stream, u) in &s.unmatched {
                println!(
                    "  unmatched: {} records in {stream} (e.g. {})",
                    u.count,
                    u.examples.join(", ")
                );
            }
        }
        None => println!("scoring: never run"),
    }
    for e in &report.exports {
        match (&e.build_error, &e.last_run) {
            (Some(err), _) => println!("export {} ({}): not built: {err}", e.id, e.kind),
            (None, None) => println!("export {} ({}): not run yet", e.id, e.kind),
            (None, Some(r)) => match &r.error {
                Some(err) => println!(
                    "export {} ({}): FAILED for the run as of {}: {err}",
                    e.id,
                    e.kind,
                    r.as_of.format("%Y-%m-%d %H:%M UTC")
                ),
                None => println!(
                    "export {} ({}): as of {} wrote {}",
                    e.id,
                    e.kind,
                    r.as_of.format("%Y-%m-%d %H:%M UTC"),
                    r.files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        }
    }
    println!(
        "outbox: {} queued; dead letters: {}; projects: {} open, {} pending, {} resolved",
        report.outbox_depth,
        report.dead_letter_count,
        report.projects_open,
        report.projects_pending,
        report.projects_resolved
    );
    for d in &report.dead_letters {
        println!(
            "  dead letter {} for {} on {} ({} attempts, {}): {}",
            d.key,
            d.account,
            d.sink,
            d.attempts,
            when(d.failed_at),
            d.reason
        );
    }
    let verdict = report.readiness();
    if verdict.ready {
        println!("ready: yes");
    } else {
        println!("ready: NO");
        for p in &verdict.problems {
            println!("  {p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_a_person_writes_them() {
        assert_eq!(fmt_age(-5), "0s");
        assert_eq!(fmt_age(59), "59s");
        assert_eq!(fmt_age(61), "1m");
        assert_eq!(fmt_age(3600 + 5 * 60), "1h05m");
        assert_eq!(fmt_age(3 * 86_400 + 1), "3d");
    }
}
