//! Validation of the model's structure: categories nested through `parent` with their weights, and the
//! stage/segment overrides of weights, scoring functions, bands and benchmarks. Pure, like the rest of
//! `validate`; metric and top-level checks are in `model.rs`.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::model::{check_bands, check_score, WEIGHT_TOLERANCE};
use super::{join, Diagnostics, SourceFile};
use crate::config::raw::*;
use crate::config::*;

/// Categories nest through `parent`; each category's metrics and sub-categories weigh 100 together, and
/// top-level categories weigh 100 together. Returned depth first, a parent before its children.
pub(super) fn check_categories(
    f: &SourceFile,
    raw: &RawModel,
    margin: f64,
    out: &mut Diagnostics,
) -> Vec<Category> {
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
        return Vec::new();
    }
    let metric_ids: BTreeSet<&str> = raw.metrics.keys().map(String::as_str).collect();
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (id, c) in cats {
        let c_ref = c.get_ref();
        if *c_ref.weight.get_ref() <= 0.0 {
            f.err(
                out,
                c_ref.weight.span(),
                format!("category {id}: weight must be above 0"),
            );
        }
        match &c_ref.parent {
            None => roots.push(id.as_str()),
            Some(p) if p.get_ref() == id => f.err(
                out,
                p.span(),
                format!("category {id} cannot be its own parent"),
            ),
            Some(p) if !cats.contains_key(p.get_ref()) => f.err(
                out,
                p.span(),
                format!(
                    "category {id}: parent `{}` is not a category; categories: {}",
                    p.get_ref(),
                    join(cats.keys().map(String::as_str))
                ),
            ),
            Some(p) => children.entry(p.get_ref().as_str()).or_default().push(id),
        }
    }
    // Reachability from the roots finds cycles (a → b → a): such categories are never reached.
    let mut order: Vec<(&str, usize)> = Vec::new();
    let mut stack: Vec<(&str, usize)> = roots.iter().rev().map(|r| (*r, 0)).collect();
    while let Some((id, depth)) = stack.pop() {
        order.push((id, depth));
        if let Some(kids) = children.get(id) {
            for k in kids.iter().rev() {
                stack.push((k, depth + 1));
            }
        }
    }
    let reached: BTreeSet<&str> = order.iter().map(|(id, _)| *id).collect();
    for (id, c) in cats {
        if !reached.contains(id.as_str())
            && c.get_ref()
                .parent
                .as_ref()
                .is_some_and(|p| cats.contains_key(p.get_ref()) && p.get_ref() != id)
        {
            f.err(
                out,
                c.span(),
                format!("category {id} is part of a parent cycle; every chain of parents must end at a top-level category"),
            );
        }
    }
    let root_total: f64 = roots
        .iter()
        .map(|r| *cats[*r].get_ref().weight.get_ref())
        .sum();
    if (root_total - 100.0).abs() > WEIGHT_TOLERANCE && !roots.is_empty() {
        f.err(
            out,
            cats_span.clone(),
            format!("top-level category weights add up to {root_total}, they must add up to 100"),
        );
    }
    let mut result = Vec::new();
    for (id, depth) in order {
        let c = &cats[id];
        let c_ref = c.get_ref();
        let empty = BTreeMap::new();
        let metrics = c_ref
            .metrics
            .as_ref()
            .map(|m| m.get_ref())
            .unwrap_or(&empty);
        let kids = children.get(id).cloned().unwrap_or_default();
        let mut members: Vec<(Node, f64)> = Vec::new();
        for (mid, w) in metrics {
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
                    format!("metric {mid} has no score, so category {id} cannot weigh it"),
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
            members.push((Node::Metric(mid.clone()), *w.get_ref()));
        }
        for k in &kids {
            members.push((
                Node::Category(k.to_string()),
                *cats[*k].get_ref().weight.get_ref(),
            ));
        }
        let sum: f64 = members.iter().map(|(_, w)| w).sum();
        let span = c_ref.metrics.as_ref().map(|m| m.span()).unwrap_or(c.span());
        if members.is_empty() {
            f.err(
                out,
                span,
                format!("category {id} has no metrics and no sub-categories"),
            );
        } else if (sum - 100.0).abs() > WEIGHT_TOLERANCE {
            let what = if kids.is_empty() {
                "metric weights".to_string()
            } else {
                format!(
                    "weights of metrics and sub-categories ({})",
                    kids.join(", ")
                )
            };
            f.err(
                out,
                span,
                format!("{what} in category {id} add up to {sum}, they must add up to 100"),
            );
        }
        for m in &mut members {
            m.1 /= sum.max(f64::MIN_POSITIVE);
        }
        let parent_total = if c_ref.parent.is_none() {
            root_total
        } else {
            100.0
        };
        result.push(Category {
            id: id.to_string(),
            label: c_ref.label.clone().unwrap_or_else(|| id.to_string()),
            weight: *c_ref.weight.get_ref() / parent_total.max(f64::MIN_POSITIVE),
            parent: c_ref.parent.as_ref().map(|p| p.get_ref().clone()),
            depth,
            children: members,
            bands: c_ref
                .bands
                .as_ref()
                .and_then(|b| check_bands(f, b, margin, &format!("category {id}: bands"), out)),
        });
    }
    result
}

#[allow(clippy::too_many_arguments)]
pub(super) fn check_override(
    f: &SourceFile,
    id: &str,
    o: &Spanned<RawOverride>,
    raw: &RawModel,
    stages: &[String],
    segments: &[String],
    margin: f64,
    out: &mut Diagnostics,
) -> Option<Override> {
    let before = out.errors.len();
    let r = o.get_ref();
    if r.stage.is_none() && r.segment.is_none() {
        f.err(
            out,
            o.span(),
            format!("override {id} needs `stage`, `segment` or both, to say which accounts it applies to"),
        );
    }
    let acc = raw.accounts.get_ref();
    for (what, value, known, field) in [
        ("stage", &r.stage, stages, &acc.stage_field),
        ("segment", &r.segment, segments, &acc.segment_field),
    ] {
        let Some(v) = value else { continue };
        if field.is_none() {
            f.err(
                out,
                v.span(),
                format!("override {id}: {what} needs accounts.{what}_field, the account field that holds it"),
            );
        } else if !known.is_empty() && !known.iter().any(|k| k.eq_ignore_ascii_case(v.get_ref())) {
            f.err(
                out,
                v.span(),
                format!(
                    "override {id}: {what} `{}` is not one of accounts.{what}s: {}",
                    v.get_ref(),
                    join(known.iter().map(String::as_str))
                ),
            );
        }
    }
    let mut weights = BTreeMap::new();
    if let Some(w) = &r.weights {
        for (node, value) in w.get_ref() {
            if !raw.categories.contains_key(node) && !raw.metrics.contains_key(node) {
                f.err(
                    out,
                    value.span(),
                    format!("override {id}: weights name `{node}`, which is neither a category nor a metric"),
                );
            } else if raw.metrics.contains_key(node)
                && !raw.categories.values().any(|c| {
                    c.get_ref()
                        .metrics
                        .as_ref()
                        .is_some_and(|m| m.get_ref().contains_key(node))
                })
            {
                f.err(
                    out,
                    value.span(),
                    format!("override {id}: metric {node} is in no category, so it has no weight to override"),
                );
            }
            if !(*value.get_ref() >= 0.0 && value.get_ref().is_finite()) {
                f.err(
                    out,
                    value.span(),
                    format!("override {id}: weight of {node} must be 0 or more (0 leaves it out)"),
                );
            }
            weights.insert(node.clone(), *value.get_ref());
        }
    }
    let mut scores = BTreeMap::new();
    for (mid, s) in &r.scores {
        if !raw.metrics.contains_key(mid) {
            f.err(
                out,
                s.span(),
                format!("override {id}: scores names unknown metric `{mid}`"),
            );
            continue;
        }
        if let Some(sf) = check_score(f, &format!("{mid} (override {id})"), s, out) {
            scores.insert(mid.clone(), sf);
        }
    }
    let bands = r
        .bands
        .as_ref()
        .and_then(|b| check_bands(f, b, margin, &format!("override {id}: bands"), out));
    let benchmark = r.benchmark.as_ref().map(|b| {
        if !(1.0..=100.0).contains(b.get_ref()) {
            f.err(
                out,
                b.span(),
                format!("override {id}: benchmark is a score between 1 and 100"),
            );
        }
        *b.get_ref()
    });
    if out.errors.len() > before {
        return None;
    }
    Some(Override {
        id: id.to_string(),
        stage: r.stage.as_ref().map(|s| s.get_ref().clone()),
        segment: r.segment.as_ref().map(|s| s.get_ref().clone()),
        weights,
        scores,
        bands,
        benchmark,
    })
}
