//! Validation of what the model fires: risk and advocacy rules (CEL compiled, metric references checked)
//! and playbooks with their minijinja templates. Pure, like the rest of `validate`.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::model::check_cel;
use super::{join, Diagnostics, SourceFile};
use crate::config::raw::*;
use crate::config::*;

fn check_template(f: &SourceFile, out: &mut Diagnostics, what: &str, src: &Spanned<String>) {
    let env = minijinja::Environment::new();
    match env.template_from_str(src.get_ref()) {
        Ok(t) => {
            let unknown: BTreeSet<String> = t
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| !TEMPLATE_VARIABLES.contains(&v.as_str()))
                .collect();
            if !unknown.is_empty() {
                f.err(
                    out,
                    src.span(),
                    format!(
                        "{what}: unknown template variable(s) {}; templates can use {}",
                        join(unknown.iter().map(String::as_str)),
                        join(TEMPLATE_VARIABLES.iter().copied())
                    ),
                );
            }
        }
        Err(e) => f.err(
            out,
            src.span(),
            format!("{what}: template does not compile: {e}"),
        ),
    }
}

pub(super) fn check_playbook(
    f: &SourceFile,
    id: &str,
    p: &Spanned<RawPlaybook>,
    cats: &BTreeMap<String, Spanned<RawCategory>>,
    risks: &BTreeMap<String, Spanned<RawRisk>>,
    out: &mut Diagnostics,
) -> Option<Playbook> {
    let before = out.errors.len();
    let r = p.get_ref();
    let when = match r.when.get_ref().as_str() {
        "overall" => Some(Target::Overall),
        c if cats.contains_key(c) => Some(Target::Category(c.to_string())),
        c if c.starts_with("risk:") => {
            let rid = &c["risk:".len()..];
            if risks.contains_key(rid) {
                Some(Target::Risk(rid.to_string()))
            } else {
                f.err(
                    out,
                    r.when.span(),
                    if risks.is_empty() {
                        format!("playbook {id}: when = `{c}`, but the model has no [risks]")
                    } else {
                        format!(
                            "playbook {id}: when = `{c}` names no risk rule; risks: {}",
                            join(risks.keys().map(String::as_str))
                        )
                    },
                );
                None
            }
        }
        c => {
            f.err(
                out,
                r.when.span(),
                format!(
                    "playbook {id}: when = `{c}` is neither overall, a category nor risk:<id>; categories: {}",
                    join(cats.keys().map(String::as_str))
                ),
            );
            None
        }
    };
    let enters = match r.enters.as_ref().map(|e| e.get_ref().as_str()) {
        None | Some("red") => Some(Band::Red),
        Some("amber") => Some(Band::Amber),
        Some(other) => {
            f.err(
                out,
                r.enters.as_ref().map(|e| e.span()).unwrap_or_default(),
                format!("playbook {id}: enters = `{other}`; use red or amber"),
            );
            None
        }
    };
    let drop = r.drop.as_ref().and_then(|d| {
        let (points, days) = (d.get_ref().points, d.get_ref().days);
        let mut ok = true;
        if !(1.0..=99.0).contains(&points) || !(1..=365).contains(&days) {
            f.err(
                out,
                d.span(),
                format!("playbook {id}: drop needs points between 1 and 99 and days between 1 and 365"),
            );
            ok = false;
        }
        if matches!(when, Some(Target::Risk(_))) {
            f.err(
                out,
                d.span(),
                format!("playbook {id}: drop watches a score; a risk playbook opens while its risk is active"),
            );
            ok = false;
        }
        if let Some(e) = &r.enters {
            f.err(
                out,
                e.span(),
                format!("playbook {id}: enters and drop exclude each other (drop triggers on the fall, whatever the band)"),
            );
            ok = false;
        }
        ok.then_some(ScoreDrop {
            points,
            days: days as u32,
        })
    });
    let thriving_days = r.thriving_days.as_ref().and_then(|t| {
        let mut ok = true;
        if !(1..=730).contains(t.get_ref()) {
            f.err(out, t.span(), format!("playbook {id}: thriving_days must be between 1 and 730"));
            ok = false;
        }
        if r.enters.is_some() || r.drop.is_some() || matches!(when, Some(Target::Risk(_))) {
            f.err(
                out,
                t.span(),
                format!("playbook {id}: thriving_days watches a score staying green; it excludes enters, drop and risk playbooks"),
            );
            ok = false;
        }
        ok.then_some(*t.get_ref() as u32)
    });
    let cooldown_days = match &r.cooldown_days {
        Some(c) if !(0..=3650).contains(c.get_ref()) => {
            f.err(
                out,
                c.span(),
                format!("playbook {id}: cooldown_days must be between 0 and 3650"),
            );
            0
        }
        Some(c) => *c.get_ref() as u32,
        None => 30,
    };
    let limit = r.limit.as_ref().and_then(|l| {
        let (times, days) = (l.get_ref().times, l.get_ref().days);
        if !(1..=100).contains(&times) || !(1..=3650).contains(&days) {
            f.err(
                out,
                l.span(),
                format!("playbook {id}: limit needs times between 1 and 100 and days between 1 and 3650"),
            );
            return None;
        }
        Some(OpenLimit {
            times: times as u32,
            days: days as u32,
        })
    });
    check_template(f, out, &format!("playbook {id} project"), &r.project);
    if let Some(d) = &r.description {
        check_template(f, out, &format!("playbook {id} description"), d);
    }
    let mut tasks = Vec::new();
    for (i, t) in r.tasks.iter().enumerate() {
        let t = t.get_ref();
        let what = format!("playbook {id} task {}", i + 1);
        check_template(f, out, &what, &t.name);
        if let Some(d) = &t.description {
            check_template(f, out, &what, d);
        }
        let for_each = match t.for_each.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("once") => ForEach::Once,
            Some("failing_metric") => ForEach::FailingMetric,
            Some(other) => {
                f.err(
                    out,
                    t.for_each.as_ref().map(|s| s.span()).unwrap_or_default(),
                    format!("{what}: for_each = `{other}`; use once or failing_metric"),
                );
                ForEach::Once
            }
        };
        let due_days = match &t.due_days {
            Some(d) if !(0..=365).contains(d.get_ref()) => {
                f.err(
                    out,
                    d.span(),
                    format!("{what}: due_days must be between 0 and 365"),
                );
                0
            }
            Some(d) => *d.get_ref() as u32,
            None => 7,
        };
        tasks.push(TaskTemplate {
            name: t.name.get_ref().clone(),
            description: t
                .description
                .as_ref()
                .map(|d| d.get_ref().clone())
                .unwrap_or_default(),
            for_each,
            due_days,
        });
    }
    if out.errors.len() > before {
        return None;
    }
    Some(Playbook {
        id: id.to_string(),
        when: when?,
        enters: enters?,
        cooldown_days,
        limit,
        drop,
        thriving_days,
        project: r.project.get_ref().clone(),
        description: r
            .description
            .as_ref()
            .map(|d| d.get_ref().clone())
            .unwrap_or_default(),
        tasks,
    })
}

pub(super) fn check_risk(
    f: &SourceFile,
    id: &str,
    r: &Spanned<RawRisk>,
    metric_ids: &BTreeSet<&str>,
    out: &mut Diagnostics,
) -> Option<RiskRule> {
    let raw = r.get_ref();
    let kind = match raw.kind.get_ref().as_str() {
        "hard" => Some(RiskKind::Hard),
        "soft" => Some(RiskKind::Soft),
        "advocacy" => Some(RiskKind::Advocacy),
        other => {
            f.err(
                out,
                raw.kind.span(),
                format!(
                    "risk {id}: kind `{other}`; use {}",
                    join(RiskKind::NAMES.iter().copied())
                ),
            );
            None
        }
    };
    let mut check = |what: &str, src: &Spanned<String>| -> Option<Expr> {
        let e = check_cel(f, out, &format!("risk {id}: {what}"), src, RULE_VARIABLES)?;
        let unknown: Vec<String> = e
            .members_of("m")
            .into_iter()
            .filter(|m| !metric_ids.contains(m.as_str()))
            .collect();
        if !unknown.is_empty() {
            f.err(
                out,
                src.span(),
                format!(
                    "risk {id}: {what} uses unknown metric(s) {}; known metrics: {}",
                    join(unknown.iter().map(String::as_str)),
                    join(metric_ids.iter().copied())
                ),
            );
            return None;
        }
        Some(e)
    };
    let when = check("when", &raw.when);
    let clear_when = match &raw.clear_when {
        Some(c) => Some(check("clear_when", c)?),
        None => None,
    };
    Some(RiskRule {
        id: id.to_string(),
        label: raw.label.clone().unwrap_or_else(|| id.to_string()),
        kind: kind?,
        when: when?,
        clear_when,
        advice: raw.advice.clone(),
    })
}

/// Checks `[outcomes]`: a source stream, two field names, a CEL expression over `r`, a grace period.
pub(super) fn check_outcomes(
    f: &SourceFile,
    raw: &Spanned<RawOutcomes>,
    subscriptions: Option<StreamRef>,
    out: &mut Diagnostics,
) -> Option<OutcomesSpec> {
    let o = raw.get_ref();
    let mrr = check_cel(f, out, "outcomes.mrr", &o.mrr, &["r"]);
    for field in [&o.start_field, &o.end_field] {
        if field.get_ref().trim().is_empty() {
            f.err(out, field.span(), "outcomes: a field name cannot be empty");
        }
    }
    let grace = match &o.renewal_grace_days {
        None => Some(30),
        Some(g) => match u32::try_from(*g.get_ref()) {
            Ok(d) if d <= 3650 => Some(d),
            _ => {
                f.err(
                    out,
                    g.span(),
                    format!(
                        "outcomes.renewal_grace_days must be between 0 and 3650 days, not {}",
                        g.get_ref()
                    ),
                );
                None
            }
        },
    };
    Some(OutcomesSpec {
        subscriptions: subscriptions?,
        start_field: o.start_field.get_ref().clone(),
        end_field: o.end_field.get_ref().clone(),
        mrr: mrr?,
        renewal_grace_days: grace?,
    })
}
