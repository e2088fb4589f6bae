//! Validation of the health model file: stream references, metrics and their scoring functions,
//! category weights, bands and playbook templates. Pure: it reads nothing but the parsed file and the
//! already-validated connectors, and reports into the same `Diagnostics` as the rest of `validate`.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::{join, Diagnostics, SourceFile};
use crate::config::raw::*;
use crate::config::*;
use crate::connector::Role;

fn parse_stream_ref(s: &str) -> Option<StreamRef> {
    let (c, st) = s.split_once('.')?;
    (!c.is_empty() && !st.is_empty()).then(|| StreamRef {
        connector: c.into(),
        stream: st.into(),
    })
}

/// What the model may refer to: valid connectors, and the ids of broken ones (already reported).
#[derive(Clone, Copy)]
struct Refs<'a> {
    connectors: &'a [ConnectorConfig],
    broken: &'a BTreeSet<String>,
}

fn check_stream_ref(
    f: &SourceFile,
    s: &Spanned<String>,
    refs: Refs<'_>,
    out: &mut Diagnostics,
) -> Option<StreamRef> {
    let connectors = refs.connectors;
    let Some(r) = parse_stream_ref(s.get_ref()) else {
        f.err(
            out,
            s.span(),
            format!(
                "`{}` is not a stream reference like hubspot.companies (connector id, dot, stream)",
                s.get_ref()
            ),
        );
        return None;
    };
    let sources: Vec<&ConnectorConfig> = connectors
        .iter()
        .filter(|c| c.role == Role::Source)
        .collect();
    match sources.iter().find(|c| c.id == r.connector) {
        None if refs.broken.contains(&r.connector) => {}
        None => f.err(
            out,
            s.span(),
            format!(
                "no source connector `{}`; configured sources: {}",
                r.connector,
                join(sources.iter().map(|c| c.id.as_str()))
            ),
        ),
        Some(c) if !c.streams.contains(&r.stream) => f.err(
            out,
            s.span(),
            format!(
                "connector {} does not sync stream `{}`; it syncs: {}",
                c.id,
                r.stream,
                join(c.streams.iter().map(String::as_str))
            ),
        ),
        Some(_) => return Some(r),
    }
    None
}

/// FNV-1a: a stable, dependency-free fingerprint of the model text (not a security hash).
fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

const WEIGHT_TOLERANCE: f64 = 0.01;

pub(super) fn check_model(
    f: &SourceFile,
    raw: RawModel,
    connectors: &[ConnectorConfig],
    broken: &BTreeSet<String>,
    out: &mut Diagnostics,
) -> Option<Model> {
    let refs = Refs { connectors, broken };
    let before = out.errors.len();
    if *raw.version.get_ref() != 1 {
        f.err(
            out,
            raw.version.span(),
            format!(
                "unsupported model version {}; this healthsync reads version 1",
                raw.version.get_ref()
            ),
        );
    }
    let acc = raw.accounts.get_ref();
    let accounts_stream = check_stream_ref(f, &acc.stream, refs, out);

    let b = raw.bands.get_ref();
    let (red, green) = (*b.red_below.get_ref(), *b.green_from.get_ref());
    if !(1.0 < red && red < green && green <= 100.0) {
        f.err(out, raw.bands.span(), format!("bands need 1 < red_below < green_from <= 100 (got red_below = {red}, green_from = {green})"));
    }
    let margin = b.margin.as_ref().map(|m| *m.get_ref()).unwrap_or(3.0);
    if !(0.0..=20.0).contains(&margin) {
        f.err(
            out,
            b.margin
                .as_ref()
                .map(|m| m.span())
                .unwrap_or(raw.bands.span()),
            "bands.margin must be between 0 and 20 points",
        );
    }
    let min_coverage = raw
        .min_coverage
        .as_ref()
        .map(|m| *m.get_ref())
        .unwrap_or(0.5);
    if !(0.0..=1.0).contains(&min_coverage) {
        f.err(
            out,
            raw.min_coverage
                .as_ref()
                .map(|m| m.span())
                .unwrap_or_default(),
            "min_coverage is a share between 0 and 1",
        );
    }

    let metric_ids: BTreeSet<&str> = raw.metrics.keys().map(String::as_str).collect();
    let mut metrics = Vec::new();
    for (id, m) in &raw.metrics {
        if let Some(metric) = check_metric(f, id, m, &metric_ids, &raw.metrics, refs, out) {
            metrics.push(metric);
        }
    }

    let mut categories = Vec::new();
    let cats = &raw.categories;
    // Whole-table problems point at the first category (the implicit [categories] table has no span).
    let cats_span = cats
        .values()
        .next()
        .map(|c| c.span())
        .unwrap_or_else(|| raw.name.span());
    if cats.is_empty() {
        f.err(
            out,
            cats_span.clone(),
            "the model needs at least one category",
        );
    }
    let total: f64 = cats.values().map(|c| *c.get_ref().weight.get_ref()).sum();
    if (total - 100.0).abs() > WEIGHT_TOLERANCE && !cats.is_empty() {
        f.err(
            out,
            cats_span.clone(),
            format!("category weights add up to {total}, they must add up to 100"),
        );
    }
    for (id, c) in cats {
        let c_ref = c.get_ref();
        if *c_ref.weight.get_ref() <= 0.0 {
            f.err(
                out,
                c_ref.weight.span(),
                format!("category {id}: weight must be above 0"),
            );
        }
        let mut members = Vec::new();
        let sum: f64 = c_ref.metrics.get_ref().values().map(|w| *w.get_ref()).sum();
        if c_ref.metrics.get_ref().is_empty() {
            f.err(
                out,
                c_ref.metrics.span(),
                format!("category {id} has no metrics"),
            );
        } else if (sum - 100.0).abs() > WEIGHT_TOLERANCE {
            f.err(
                out,
                c_ref.metrics.span(),
                format!("metric weights in category {id} add up to {sum}, they must add up to 100"),
            );
        }
        for (mid, w) in c_ref.metrics.get_ref() {
            match raw.metrics.get(mid) {
                None => f.err(
                    out,
                    w.span(),
                    format!(
                        "category {id} uses unknown metric `{mid}`; known metrics: {}",
                        join(metric_ids.iter().copied())
                    ),
                ),
                Some(m) if m.get_ref().score.is_none() => f.err(
                    out,
                    w.span(),
                    format!("metric {mid} has no [score], so category {id} cannot weigh it"),
                ),
                Some(_) => {}
            }
            if *w.get_ref() <= 0.0 {
                f.err(
                    out,
                    w.span(),
                    format!("weight of {mid} in category {id} must be above 0"),
                );
            }
            members.push((mid.clone(), *w.get_ref() / sum.max(f64::MIN_POSITIVE)));
        }
        categories.push(Category {
            id: id.clone(),
            label: c_ref.label.clone().unwrap_or_else(|| id.clone()),
            weight: *c_ref.weight.get_ref() / total.max(f64::MIN_POSITIVE),
            metrics: members,
        });
    }

    let mut playbooks = Vec::new();
    for (id, p) in &raw.playbooks {
        if let Some(pb) = check_playbook(f, id, p, cats, out) {
            playbooks.push(pb);
        }
    }

    if out.errors.len() > before {
        return None;
    }
    Some(Model {
        name: raw.name.into_inner(),
        description: raw.description.unwrap_or_default(),
        hash: fingerprint(&f.text),
        accounts: AccountsSpec {
            stream: accounts_stream?,
            key: acc.key.get_ref().clone(),
            name_field: acc.name_field.get_ref().clone(),
            stage_field: acc.stage_field.as_ref().map(|s| s.get_ref().clone()),
            segment_field: acc.segment_field.as_ref().map(|s| s.get_ref().clone()),
            owner_field: acc.owner_field.as_ref().map(|s| s.get_ref().clone()),
        },
        bands: Bands {
            red_below: red,
            green_from: green,
            margin,
        },
        min_coverage,
        metrics,
        categories,
        playbooks,
    })
}

fn check_metric(
    f: &SourceFile,
    id: &str,
    m: &Spanned<RawMetric>,
    ids: &BTreeSet<&str>,
    all: &BTreeMap<String, Spanned<RawMetric>>,
    refs: Refs<'_>,
    out: &mut Diagnostics,
) -> Option<Metric> {
    let before = out.errors.len();
    let r = m.get_ref();
    let agg = r.aggregate.get_ref().as_str();
    if !Aggregate::NAMES.contains(&agg) {
        f.err(
            out,
            r.aggregate.span(),
            format!(
                "metric {id}: unknown aggregate `{agg}`; use {}",
                join(Aggregate::NAMES.iter().copied())
            ),
        );
        return None;
    }
    let field = || -> Option<String> { r.field.as_ref().map(|v| v.get_ref().clone()) };
    let need_field = |out: &mut Diagnostics| -> Option<String> {
        let v = field();
        if v.is_none() {
            f.err(
                out,
                m.span(),
                format!("metric {id}: aggregate {agg} needs `field`"),
            );
        }
        v
    };
    let window_days = r.window_days.as_ref().and_then(|w| {
        if (1..=3650).contains(w.get_ref()) {
            Some(*w.get_ref() as u32)
        } else {
            f.err(
                out,
                w.span(),
                format!("metric {id}: window_days must be between 1 and 3650"),
            );
            None
        }
    });
    let input = if agg == "ratio" {
        let mut side = |name: &str, v: &Option<Spanned<String>>| -> Option<String> {
            let Some(v) = v else {
                f.err(
                    out,
                    m.span(),
                    format!("metric {id}: a ratio needs `{name}`, the id of another metric"),
                );
                return None;
            };
            let target = v.get_ref().as_str();
            if !ids.contains(target) {
                f.err(
                    out,
                    v.span(),
                    format!(
                        "metric {id}: {name} names unknown metric `{target}`; known metrics: {}",
                        join(ids.iter().copied())
                    ),
                );
            } else if target == id
                || all
                    .get(target)
                    .is_some_and(|t| t.get_ref().aggregate.get_ref() == "ratio")
            {
                f.err(
                    out,
                    v.span(),
                    format!("metric {id}: {name} must be a metric over records, not a ratio"),
                );
            }
            Some(target.to_string())
        };
        let numerator = side("numerator", &r.numerator);
        let denominator = side("denominator", &r.denominator);
        MetricInput::Ratio {
            numerator: numerator?,
            denominator: denominator?,
        }
    } else {
        let stream = match &r.stream {
            Some(s) => check_stream_ref(f, s, refs, out),
            None => {
                f.err(
                    out,
                    m.span(),
                    format!("metric {id}: needs `stream`, e.g. stripe.invoices"),
                );
                None
            }
        };
        let aggregate = match agg {
            "count" => Some(Aggregate::Count),
            "sum" => need_field(out).map(Aggregate::Sum),
            "avg" => need_field(out).map(Aggregate::Avg),
            "latest" => need_field(out).map(Aggregate::Latest),
            "distinct" => need_field(out).map(Aggregate::Distinct),
            "days_since" => need_field(out).map(Aggregate::DaysSince),
            _ => need_field(out).map(Aggregate::Trend),
        };
        if agg == "trend" && window_days.is_none() {
            f.err(
                out,
                m.span(),
                format!("metric {id}: a trend compares two windows, so it needs window_days"),
            );
        }
        let filter = r.filter.as_ref().map(|fl| {
            fl.get_ref()
                .iter()
                .filter_map(|(k, v)| match serde_json::to_value(v) {
                    Ok(v) => Some((k.clone(), v)),
                    Err(_) => {
                        f.err(out, fl.span(), format!("metric {id}: filter value for `{k}` must be a string, number or boolean"));
                        None
                    }
                })
                .collect()
        }).unwrap_or_default();
        MetricInput::Records {
            stream: stream?,
            aggregate: aggregate?,
            filter,
            window_days,
        }
    };
    let score = r.score.as_ref().and_then(|s| check_score(f, id, s, out));
    let ttl_days = r.ttl_days.as_ref().and_then(|t| {
        if (1..=3650).contains(t.get_ref()) {
            Some(*t.get_ref() as u32)
        } else {
            f.err(
                out,
                t.span(),
                format!("metric {id}: ttl_days must be between 1 and 3650"),
            );
            None
        }
    });
    if out.errors.len() > before {
        return None;
    }
    Some(Metric {
        id: id.to_string(),
        label: r.label.clone().unwrap_or_else(|| id.to_string()),
        input,
        score,
        ttl_days,
        advice: r.advice.clone(),
    })
}

fn check_score(
    f: &SourceFile,
    id: &str,
    s: &Spanned<RawScore>,
    out: &mut Diagnostics,
) -> Option<ScoreFn> {
    let r = s.get_ref();
    let (points, linear) = match (&r.linear, &r.steps) {
        (Some(p), None) => (p, true),
        (None, Some(p)) => (p, false),
        _ => {
            f.err(
                out,
                s.span(),
                format!("metric {id}: [score] needs exactly one of `linear` or `steps`"),
            );
            return None;
        }
    };
    let min = if linear { 2 } else { 1 };
    if points.len() < min {
        f.err(
            out,
            s.span(),
            format!("metric {id}: score needs at least {min} [value, score] point(s)"),
        );
        return None;
    }
    let mut ok = true;
    for w in points.windows(2) {
        if w[1][0] <= w[0][0] {
            ok = false;
        }
    }
    if !ok {
        f.err(
            out,
            s.span(),
            format!("metric {id}: score points must be in strictly increasing order of value"),
        );
    }
    if points
        .iter()
        .any(|p| !(1.0..=100.0).contains(&p[1]) || !p[0].is_finite())
    {
        f.err(
            out,
            s.span(),
            format!("metric {id}: scores must be between 1 and 100"),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let pts = points.iter().map(|p| (p[0], p[1])).collect();
    Some(if linear {
        ScoreFn::Linear(pts)
    } else {
        ScoreFn::Steps(pts)
    })
}

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

fn check_playbook(
    f: &SourceFile,
    id: &str,
    p: &Spanned<RawPlaybook>,
    cats: &BTreeMap<String, Spanned<RawCategory>>,
    out: &mut Diagnostics,
) -> Option<Playbook> {
    let before = out.errors.len();
    let r = p.get_ref();
    let when = match r.when.get_ref().as_str() {
        "overall" => Some(Target::Overall),
        c if cats.contains_key(c) => Some(Target::Category(c.to_string())),
        c => {
            f.err(
                out,
                r.when.span(),
                format!(
                    "playbook {id}: when = `{c}` is neither overall nor a category; categories: {}",
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
        project: r.project.get_ref().clone(),
        description: r
            .description
            .as_ref()
            .map(|d| d.get_ref().clone())
            .unwrap_or_default(),
        tasks,
    })
}
