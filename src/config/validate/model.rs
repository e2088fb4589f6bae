//! Validation of the health model file: accounts, bands, metrics with their filters (equality or CEL),
//! maps and scoring functions, and the shared helpers for bands and CEL expressions. Categories and
//! overrides are checked in `categories.rs`, risk rules and playbooks in `rules.rs`. Pure: it reads
//! nothing but the parsed file and the already-validated connectors, and reports into the same
//! `Diagnostics` as the rest of `validate`.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::categories::{check_categories, check_override};
use super::rules::{check_outcomes, check_playbook, check_risk};
use super::{join, Diagnostics, SourceFile};
use crate::config::raw::*;
use crate::config::*;
use crate::vocab::Role;

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

pub(super) const WEIGHT_TOLERANCE: f64 = 0.01;

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

    let bands = check_bands(f, &raw.bands, 3.0, "bands", out);
    let margin = bands.map(|b| b.margin).unwrap_or(3.0);
    let stages = acc
        .stages
        .as_ref()
        .map(|s| s.get_ref().clone())
        .unwrap_or_default();
    let segments = acc
        .segments
        .as_ref()
        .map(|s| s.get_ref().clone())
        .unwrap_or_default();
    let segment_bands = acc
        .segment_bands
        .as_ref()
        .map(|b| {
            let bands = b.get_ref().clone();
            let ascending = bands.windows(2).all(|w| w[1].0 > w[0].0);
            if bands.is_empty()
                || !ascending
                || bands.iter().any(|(t, l)| !t.is_finite() || l.is_empty())
            {
                f.err(
                    out,
                    b.span(),
                    "accounts.segment_bands must be [[threshold, \"label\"], …] with thresholds ascending and labels not empty",
                );
            }
            if acc.segment_field.is_none() {
                f.err(
                    out,
                    b.span(),
                    "accounts.segment_bands needs accounts.segment_field, the numeric field it bands",
                );
            }
            bands
        })
        .unwrap_or_default();
    let mut links = Vec::new();
    if let Some(l) = &acc.links {
        for (from, to) in l.get_ref() {
            match from.split_once(':') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() && !to.is_empty() => {
                    links.push((k.to_string(), v.to_string(), to.clone()))
                }
                _ => f.err(
                    out,
                    l.span(),
                    format!("accounts.links: `{from}` = `{to}` must be \"key:value\" = \"account id\", e.g. \"domain:acme.co.uk\" = \"123\""),
                ),
            }
        }
    }
    if !stages.is_empty() && acc.stage_field.is_none() {
        f.err(
            out,
            acc.stages.as_ref().map(|s| s.span()).unwrap_or_default(),
            "accounts.stages needs accounts.stage_field, the account field that holds the stage",
        );
    }
    if !segments.is_empty() && acc.segment_field.is_none() {
        f.err(
            out,
            acc.segments.as_ref().map(|s| s.span()).unwrap_or_default(),
            "accounts.segments needs accounts.segment_field, the account field that holds the segment",
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
        if let Some(metric) = check_metric(f, id, m, &metric_ids, &raw.metrics, refs, margin, out) {
            metrics.push(metric);
        }
    }

    let cats = &raw.categories;
    let categories = check_categories(f, &raw, margin, out);
    let overrides = raw
        .overrides
        .iter()
        .filter_map(|(id, o)| check_override(f, id, o, &raw, &stages, &segments, margin, out))
        .collect();
    let risks = raw
        .risks
        .iter()
        .filter_map(|(id, r)| check_risk(f, id, r, &metric_ids, out))
        .collect();

    let mut playbooks = Vec::new();
    for (id, p) in &raw.playbooks {
        if let Some(pb) = check_playbook(f, id, p, cats, &raw.risks, out) {
            playbooks.push(pb);
        }
    }

    let outcomes = raw.outcomes.as_ref().and_then(|o| {
        let stream = check_stream_ref(f, &o.get_ref().subscriptions, refs, out);
        check_outcomes(f, o, stream, out)
    });

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
            stages,
            segments,
            segment_bands,
            links,
        },
        bands: bands?,
        min_coverage,
        metrics,
        categories,
        overrides,
        risks,
        playbooks,
        outcomes,
    })
}

#[allow(clippy::too_many_arguments)]
fn check_metric(
    f: &SourceFile,
    id: &str,
    m: &Spanned<RawMetric>,
    ids: &BTreeSet<&str>,
    all: &BTreeMap<String, Spanned<RawMetric>>,
    refs: Refs<'_>,
    margin: f64,
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
    let not_here = |out: &mut Diagnostics, key: &str, span: std::ops::Range<usize>| {
        f.err(
            out,
            span,
            format!("metric {id}: `{key}` does not apply to aggregate {agg}"),
        )
    };
    if agg != "expr" {
        if let Some(e) = &r.expr {
            not_here(out, "expr", e.span());
        }
    }
    if matches!(agg, "ratio" | "expr") {
        if let Some(x) = &r.filter {
            not_here(out, "filter", x.span());
        }
        if let Some(x) = &r.map {
            not_here(out, "map", x.span());
        }
        if let Some(x) = &r.stream {
            not_here(out, "stream", x.span());
        }
    } else if let (Some(x), false) = (&r.map, agg == "latest") {
        not_here(out, "map", x.span());
    }
    let input = match agg {
        "expr" => check_derived(f, id, m, ids, all, out),
        "ratio" => check_ratio(f, id, m, ids, all, out),
        _ => check_records_input(f, id, m, agg, window_days, refs, out),
    }?;
    let score = r.score.as_ref().and_then(|s| check_score(f, id, s, out));
    let bands = r
        .bands
        .as_ref()
        .and_then(|b| check_bands(f, b, margin, &format!("metric {id}: bands"), out));
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
        bands,
        ttl_days,
        advice: r.advice.clone(),
    })
}

/// An `expr` metric's input: CEL over other metrics, each of which must exist and not be an `expr`.
fn check_derived(
    f: &SourceFile,
    id: &str,
    m: &Spanned<RawMetric>,
    ids: &BTreeSet<&str>,
    all: &BTreeMap<String, Spanned<RawMetric>>,
    out: &mut Diagnostics,
) -> Option<MetricInput> {
    let r = m.get_ref();
    let Some(src) = &r.expr else {
        f.err(
            out,
            m.span(),
            format!("metric {id}: aggregate expr needs `expr`, CEL over other metrics such as \"m.active_users / m.seats\""),
        );
        return None;
    };
    let expr = check_cel(f, out, &format!("metric {id}: expr"), src, RULE_VARIABLES)?;
    let mut uses = Vec::new();
    for used in expr.members_of("m") {
        let derived = all
            .get(&used)
            .is_some_and(|t| t.get_ref().aggregate.get_ref() == "expr");
        if !ids.contains(used.as_str()) {
            f.err(
                out,
                src.span(),
                format!(
                    "metric {id}: expr uses unknown metric `m.{used}`; known metrics: {}",
                    join(ids.iter().copied())
                ),
            );
        } else if derived {
            f.err(
                out,
                src.span(),
                format!("metric {id}: expr may use metrics over records and ratios, not another expr (`m.{used}`)"),
            );
        } else if !uses.contains(&used) {
            uses.push(used);
        }
    }
    Some(MetricInput::Derived { expr, uses })
}

/// A `ratio` metric's input: a numerator and a denominator, each another metric over records.
fn check_ratio(
    f: &SourceFile,
    id: &str,
    m: &Spanned<RawMetric>,
    ids: &BTreeSet<&str>,
    all: &BTreeMap<String, Spanned<RawMetric>>,
    out: &mut Diagnostics,
) -> Option<MetricInput> {
    let r = m.get_ref();
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
            || all.get(target).is_some_and(|t| {
                matches!(t.get_ref().aggregate.get_ref().as_str(), "ratio" | "expr")
            })
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
    Some(MetricInput::Ratio {
        numerator: numerator?,
        denominator: denominator?,
    })
}

/// An aggregate over records: the stream, the aggregate and its field, the filter (equality or CEL),
/// the window and the text → number map.
fn check_records_input(
    f: &SourceFile,
    id: &str,
    m: &Spanned<RawMetric>,
    agg: &str,
    window_days: Option<u32>,
    refs: Refs<'_>,
    out: &mut Diagnostics,
) -> Option<MetricInput> {
    let r = m.get_ref();
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
    let filter = match r.filter.as_ref() {
        None => Filter::Equals(Vec::new()),
        Some(fl) => match fl.get_ref() {
            RawFilter::Cel(src) => {
                let spanned = Spanned::new(fl.span(), src.clone());
                check_cel(
                    f,
                    out,
                    &format!("metric {id}: filter"),
                    &spanned,
                    FILTER_VARIABLES,
                )
                .map(Filter::Cel)
                .unwrap_or(Filter::Equals(Vec::new()))
            }
            RawFilter::Equals(map) => Filter::Equals(
                map.iter()
                    .filter_map(|(k, v)| match serde_json::to_value(v) {
                        Ok(v) => Some((k.clone(), v)),
                        Err(_) => {
                            f.err(out, fl.span(), format!("metric {id}: filter value for `{k}` must be a string, number or boolean"));
                            None
                        }
                    })
                    .collect(),
            ),
        },
    };
    let map = r.map.as_ref().map(|mp| {
        if mp.get_ref().values().any(|v| !v.is_finite()) {
            f.err(
                out,
                mp.span(),
                format!("metric {id}: map values must be numbers"),
            );
        }
        mp.get_ref()
            .iter()
            .map(|(k, v)| (k.to_lowercase(), *v))
            .collect()
    });
    Some(MetricInput::Records {
        stream: stream?,
        aggregate: aggregate?,
        filter,
        window_days,
        map,
    })
}

pub(super) fn check_score(
    f: &SourceFile,
    id: &str,
    s: &Spanned<RawScore>,
    out: &mut Diagnostics,
) -> Option<ScoreFn> {
    let r = s.get_ref();
    let (points, linear) = match (&r.linear, &r.steps, &r.percentile) {
        (Some(p), None, None) => (p, true),
        (None, Some(p), None) => (p, false),
        (None, None, Some(p)) => {
            return match p.get_ref().as_str() {
                "higher" => Some(ScoreFn::Percentile {
                    higher_is_better: true,
                }),
                "lower" => Some(ScoreFn::Percentile {
                    higher_is_better: false,
                }),
                other => {
                    f.err(
                        out,
                        p.span(),
                        format!("metric {id}: percentile = `{other}`; use higher or lower (which values are better)"),
                    );
                    None
                }
            };
        }
        _ => {
            f.err(
                out,
                s.span(),
                format!(
                    "metric {id}: score needs exactly one of `linear`, `steps` or `percentile`"
                ),
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

/// `{ red_below, green_from, margin }`; the margin defaults to `default_margin` (the model's).
pub(super) fn check_bands(
    f: &SourceFile,
    b: &Spanned<RawBands>,
    default_margin: f64,
    what: &str,
    out: &mut Diagnostics,
) -> Option<Bands> {
    let r = b.get_ref();
    let (red, green) = (*r.red_below.get_ref(), *r.green_from.get_ref());
    let mut ok = true;
    if !(1.0 < red && red < green && green <= 100.0) {
        f.err(out, b.span(), format!("{what} need 1 < red_below < green_from <= 100 (got red_below = {red}, green_from = {green})"));
        ok = false;
    }
    let margin = r
        .margin
        .as_ref()
        .map(|m| *m.get_ref())
        .unwrap_or(default_margin);
    if !(0.0..=20.0).contains(&margin) {
        f.err(
            out,
            r.margin.as_ref().map(|m| m.span()).unwrap_or(b.span()),
            format!("{what}: margin must be between 0 and 20 points"),
        );
        ok = false;
    }
    ok.then_some(Bands {
        red_below: red,
        green_from: green,
        margin,
    })
}

/// Compiles a CEL expression and checks it only uses the given top-level variables.
pub(super) fn check_cel(
    f: &SourceFile,
    out: &mut Diagnostics,
    what: &str,
    src: &Spanned<String>,
    allowed: &[&str],
) -> Option<Expr> {
    match Expr::compile(src.get_ref()) {
        Err(e) => {
            f.err(out, src.span(), format!("{what}: {e}"));
            None
        }
        Ok(expr) => {
            let unknown: Vec<String> = expr
                .variables()
                .into_iter()
                .filter(|v| !allowed.contains(&v.as_str()))
                .collect();
            if unknown.is_empty() {
                Some(expr)
            } else {
                f.err(
                    out,
                    src.span(),
                    format!(
                        "{what}: unknown variable(s) {}; this expression can use {}",
                        join(unknown.iter().map(String::as_str)),
                        join(allowed.iter().copied())
                    ),
                );
                None
            }
        }
    }
}
