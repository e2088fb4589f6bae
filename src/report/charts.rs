//! Inline SVG charts for the report: stacked and grouped columns, lines over dates, a ROC curve and a heat
//! map, each one `<svg id=…>` element with a `<title>`, axes, a legend and a `<title>` tooltip per mark.
//!
//! Written directly rather than with plotters: plotters needs a font backend to lay out any axis label
//! (`ttf` pulls font-kit and a system font lookup; `ab_glyph` needs a font file compiled in), which would
//! add several crates and a font to draw a handful of bars and lines. The browser lays out SVG `<text>`
//! itself, so none of that is needed here. This file owns drawing only: what to draw comes from
//! `report/mod.rs`; every piece of text passes through [`esc`] here, so callers hand over raw strings.

use std::fmt::Write as _;

use chrono::NaiveDate;

use crate::config::Band;

/// The band colours used everywhere in the report (the CSS uses the same).
pub fn band_color(band: Band) -> &'static str {
    match band {
        Band::Red => "#d64545",
        Band::Amber => "#e3a33b",
        Band::Green => "#3f9b5f",
    }
}

/// Colours for series that are not bands (categories, project states), in order.
pub const PALETTE: [&str; 8] = [
    "#2f5d8c", "#8c4f9e", "#2a9d8f", "#e76f51", "#6c757d", "#b5838d", "#577590", "#bc6c25",
];

/// Escapes text for HTML and SVG, both in element content and in quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One named series of values (`None`: no value at that position).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: String,
    pub values: Vec<Option<f64>>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 48.0;

/// The plotting area of a chart and its y scale, from `y_min` (usually 0) to `y_max`.
struct Frame {
    w: f64,
    h: f64,
    y_min: f64,
    y_max: f64,
}

impl Frame {
    fn new(y_min: f64, y_max: f64) -> Frame {
        Frame {
            w: WIDTH,
            h: HEIGHT,
            y_min,
            y_max: if y_max > y_min { y_max } else { y_min + 1.0 },
        }
    }

    fn plot_w(&self) -> f64 {
        self.w - LEFT - RIGHT
    }

    fn plot_h(&self) -> f64 {
        self.h - TOP - BOTTOM
    }

    fn y(&self, v: f64) -> f64 {
        let t = ((v - self.y_min) / (self.y_max - self.y_min)).clamp(0.0, 1.0);
        TOP + self.plot_h() * (1.0 - t)
    }
}

fn open(out: &mut String, id: &str, title: &str, w: f64, h: f64) {
    let _ = write!(
        out,
        r#"<svg id="{id}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" aria-labelledby="{id}-title"><title id="{id}-title">{title}</title>"#,
        id = esc(id),
        title = esc(title),
    );
}

/// Round tick values from 0 to at least `max`, about five of them.
fn ticks(max: f64) -> Vec<f64> {
    if max.is_nan() || max <= 0.0 || max.is_infinite() {
        return vec![0.0, 1.0];
    }
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(magnitude * 10.0);
    let n = (max / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// Round ticks covering `lo..=hi` (lo ≤ 0 ≤ hi), with zero among them.
fn ticks_between(lo: f64, hi: f64) -> Vec<f64> {
    let up = ticks(hi.max(-lo));
    let step = up.get(1).copied().unwrap_or(1.0);
    let below = if lo < 0.0 {
        (-lo / step).ceil() as i64
    } else {
        0
    };
    let above = (hi.max(0.0) / step).ceil().max(1.0) as i64;
    (-below..=above).map(|i| i as f64 * step).collect()
}

/// The y axis with grid lines (a darker line at zero when the scale goes below it); returns the frame.
fn y_axis(out: &mut String, lo: f64, hi: f64, fmt: &dyn Fn(f64) -> String) -> Frame {
    let t = if lo < 0.0 {
        ticks_between(lo, hi)
    } else {
        ticks(hi)
    };
    let f = Frame::new(
        t.first().copied().unwrap_or(0.0),
        t.last().copied().unwrap_or(1.0),
    );
    for v in &t {
        let y = f.y(*v);
        let stroke = if *v == 0.0 && f.y_min < 0.0 {
            "#888"
        } else {
            "#e4e4e4"
        };
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="{stroke}"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="tick">{label}</text>"##,
            x2 = f.w - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            label = esc(&fmt(*v)),
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{y2}" stroke="#999"/>"##,
        y2 = TOP + f.plot_h()
    );
    f
}

/// A legend across the top of the chart.
fn legend(out: &mut String, items: &[(&str, &str)]) {
    let mut x = LEFT;
    for (name, color) in items {
        let _ = write!(
            out,
            r#"<rect x="{x}" y="10" width="12" height="12" fill="{color}"/><text x="{tx}" y="20" class="legend">{name}</text>"#,
            tx = x + 16.0,
            color = esc(color),
            name = esc(name),
        );
        x += 28.0 + 7.0 * name.chars().count() as f64;
    }
}

/// X labels under evenly spaced slots, thinned so they do not overlap.
fn x_labels(out: &mut String, labels: &[String], slot: f64, f: &Frame) {
    let every = ((labels.len() as f64 * 70.0) / f.plot_w()).ceil().max(1.0) as usize;
    for (i, l) in labels.iter().enumerate().filter(|(i, _)| i % every == 0) {
        let x = LEFT + slot * (i as f64 + 0.5);
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y}" text-anchor="middle" class="tick">{l}</text>"#,
            y = f.h - BOTTOM + 16.0,
            l = esc(l)
        );
    }
}

fn axis_title(out: &mut String, f: &Frame, text: &str) {
    let _ = write!(
        out,
        r#"<text x="{x}" y="{y}" text-anchor="middle" class="axis">{t}</text>"#,
        x = LEFT + f.plot_w() / 2.0,
        y = f.h - 8.0,
        t = esc(text)
    );
}

/// Columns stacked per label (e.g. accounts per band per day).
pub fn stacked_columns(
    id: &str,
    title: &str,
    labels: &[String],
    series: &[Series],
    x_title: &str,
) -> String {
    let mut out = String::new();
    open(&mut out, id, title, WIDTH, HEIGHT);
    let totals: Vec<f64> = (0..labels.len())
        .map(|i| {
            series
                .iter()
                .filter_map(|s| s.values.get(i).copied().flatten())
                .sum()
        })
        .collect();
    let max = totals.iter().copied().fold(0.0, f64::max);
    let f = y_axis(&mut out, 0.0, max, &|v| format!("{v:.0}"));
    let slot = f.plot_w() / labels.len().max(1) as f64;
    let bar = (slot * 0.7).min(60.0);
    for (i, label) in labels.iter().enumerate() {
        let mut base = 0.0;
        let x = LEFT + slot * (i as f64 + 0.5) - bar / 2.0;
        for s in series {
            let v = s.values.get(i).copied().flatten().unwrap_or(0.0);
            if v <= 0.0 {
                continue;
            }
            let (y0, y1) = (f.y(base), f.y(base + v));
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y1:.1}" width="{bar:.1}" height="{h:.1}" fill="{c}"><title>{label}: {name} {v}</title></rect>"#,
                h = (y0 - y1).max(0.0),
                c = esc(&s.color),
                label = esc(label),
                name = esc(&s.name),
            );
            base += v;
        }
    }
    x_labels(&mut out, labels, slot, &f);
    axis_title(&mut out, &f, x_title);
    let items: Vec<(&str, &str)> = series
        .iter()
        .map(|s| (s.name.as_str(), s.color.as_str()))
        .collect();
    legend(&mut out, &items);
    out.push_str("</svg>");
    out
}

/// Columns side by side per group (e.g. per tier, one column per band), on a scale from `range.0` (0, or
/// below for changes that can be negative; columns then grow down from zero) to `range.1`.
pub fn grouped_columns(
    id: &str,
    title: &str,
    groups: &[String],
    series: &[Series],
    range: (f64, f64),
    x_title: &str,
) -> String {
    let mut out = String::new();
    open(&mut out, id, title, WIDTH, HEIGHT);
    let signed = range.0 < 0.0;
    let f = y_axis(&mut out, range.0, range.1, &|v| {
        if signed && v > 0.0 {
            format!("+{v:.0}")
        } else {
            format!("{v:.0}")
        }
    });
    let slot = f.plot_w() / groups.len().max(1) as f64;
    let bar = (slot * 0.8 / series.len().max(1) as f64).min(40.0);
    for (g, group) in groups.iter().enumerate() {
        let start = LEFT + slot * (g as f64 + 0.5) - bar * series.len() as f64 / 2.0;
        for (k, s) in series.iter().enumerate() {
            let Some(v) = s.values.get(g).copied().flatten() else {
                continue;
            };
            let (top, bottom) = if v >= 0.0 {
                (f.y(v), f.y(0.0))
            } else {
                (f.y(0.0), f.y(v))
            };
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"><title>{group}, {name}: {v:.1}</title></rect>"#,
                x = start + bar * k as f64,
                w = bar - 2.0,
                h = (bottom - top).max(0.0),
                c = esc(&s.color),
                group = esc(group),
                name = esc(&s.name),
            );
        }
    }
    x_labels(&mut out, groups, slot, &f);
    axis_title(&mut out, &f, x_title);
    let items: Vec<(&str, &str)> = series
        .iter()
        .map(|s| (s.name.as_str(), s.color.as_str()))
        .collect();
    legend(&mut out, &items);
    out.push_str("</svg>");
    out
}

/// One column per label, each with its own colour, and an optional dashed reference line.
pub struct Columns<'a> {
    pub labels: &'a [String],
    pub values: &'a [Option<f64>],
    pub colors: &'a [String],
    pub format: &'a dyn Fn(f64) -> String,
    pub reference: Option<(f64, &'a str)>,
    pub x_title: &'a str,
}

pub fn columns(id: &str, title: &str, c: &Columns) -> String {
    let mut out = String::new();
    open(&mut out, id, title, WIDTH, HEIGHT);
    let max = c
        .values
        .iter()
        .flatten()
        .copied()
        .chain(c.reference.map(|r| r.0))
        .fold(0.0, f64::max);
    let f = y_axis(&mut out, 0.0, max, c.format);
    let slot = f.plot_w() / c.labels.len().max(1) as f64;
    let bar = (slot * 0.7).min(80.0);
    for (i, label) in c.labels.iter().enumerate() {
        let x = LEFT + slot * (i as f64 + 0.5) - bar / 2.0;
        let color = c.colors.get(i).map(String::as_str).unwrap_or(PALETTE[0]);
        match c.values.get(i).copied().flatten() {
            Some(v) => {
                let y = f.y(v);
                let _ = write!(
                    out,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{color}"><title>{label}: {val}</title></rect><text x="{tx:.1}" y="{ty:.1}" text-anchor="middle" class="value">{val}</text>"#,
                    h = (f.y(0.0) - y).max(0.0),
                    color = esc(color),
                    label = esc(label),
                    val = esc(&(c.format)(v)),
                    tx = x + bar / 2.0,
                    ty = y - 4.0,
                );
            }
            None => {
                let _ = write!(
                    out,
                    r#"<text x="{tx:.1}" y="{ty:.1}" text-anchor="middle" class="value">n/a</text>"#,
                    tx = x + bar / 2.0,
                    ty = f.y(0.0) - 4.0,
                );
            }
        }
    }
    if let Some((v, label)) = c.reference {
        let y = f.y(v);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#333" stroke-dasharray="5 4"/><text x="{x2}" y="{ty:.1}" text-anchor="end" class="tick">{l}</text>"##,
            x2 = f.w - RIGHT,
            ty = y - 5.0,
            l = esc(label)
        );
    }
    x_labels(&mut out, c.labels, slot, &f);
    axis_title(&mut out, &f, c.x_title);
    out.push_str("</svg>");
    out
}

/// Lines over dates (placed by date, so gaps between runs show as gaps in time), on a 0–100 scale.
pub fn lines(id: &str, title: &str, days: &[NaiveDate], series: &[Series]) -> String {
    let mut out = String::new();
    open(&mut out, id, title, WIDTH, HEIGHT);
    let f = y_axis(&mut out, 0.0, 100.0, &|v| format!("{v:.0}"));
    let (first, last) = match (days.first(), days.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => {
            out.push_str("</svg>");
            return out;
        }
    };
    let span = (last - first).num_days().max(1) as f64;
    let x = |d: NaiveDate| LEFT + f.plot_w() * ((d - first).num_days() as f64 / span);
    for s in series {
        let mut path = String::new();
        let mut pen_down = false;
        for (d, v) in days.iter().zip(&s.values) {
            match v {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x(*d),
                        f.y(*v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = write!(
            out,
            r#"<path d="{path}" fill="none" stroke="{c}" stroke-width="2"><title>{name}</title></path>"#,
            c = esc(&s.color),
            name = esc(&s.name)
        );
        for (d, v) in days.iter().zip(&s.values) {
            if let Some(v) = v {
                let _ = write!(
                    out,
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="2.5" fill="{c}"><title>{name} {d}: {v:.1}</title></circle>"#,
                    cx = x(*d),
                    cy = f.y(*v),
                    c = esc(&s.color),
                    name = esc(&s.name),
                );
            }
        }
    }
    let labels: Vec<(f64, String)> = {
        let n = 6.min(days.len());
        (0..n)
            .map(|i| {
                let d = if n == 1 {
                    first
                } else {
                    first + chrono::Duration::days(((span * i as f64) / (n - 1) as f64).round() as i64)
                };
                (x(d), d.format("%b %d").to_string())
            })
            .collect()
    };
    for (lx, l) in labels {
        let _ = write!(
            out,
            r#"<text x="{lx:.1}" y="{y}" text-anchor="middle" class="tick">{l}</text>"#,
            y = f.h - BOTTOM + 16.0,
            l = esc(&l)
        );
    }
    let items: Vec<(&str, &str)> = series
        .iter()
        .map(|s| (s.name.as_str(), s.color.as_str()))
        .collect();
    legend(&mut out, &items);
    out.push_str("</svg>");
    out
}

/// A ROC curve (false positive rate → true positive rate) with the chance diagonal.
pub fn roc(id: &str, title: &str, points: &[(f64, f64)], label: &str) -> String {
    let size = 340.0;
    let (l, t, r, b) = (52.0, 20.0, 16.0, 44.0);
    let pw = size - l - r;
    let ph = size - t - b;
    let px = |v: f64| l + pw * v.clamp(0.0, 1.0);
    let py = |v: f64| t + ph * (1.0 - v.clamp(0.0, 1.0));
    let mut out = String::new();
    open(&mut out, id, title, size, size);
    for v in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = write!(
            out,
            r##"<line x1="{l}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="tick">{v}</text><text x="{x:.1}" y="{by}" text-anchor="middle" class="tick">{v}</text>"##,
            x2 = l + pw,
            y = py(v),
            tx = l - 6.0,
            ty = py(v) + 4.0,
            x = px(v),
            by = t + ph + 16.0,
        );
    }
    let _ = write!(
        out,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#999"/><line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#999" stroke-dasharray="4 4"><title>chance (AUC 0.5)</title></line>"##,
        x0 = px(0.0),
        y0 = py(0.0),
        x1 = px(1.0),
        y1 = py(1.0),
    );
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (x, y))| {
            format!(
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { "L" },
                px(*x),
                py(*y)
            )
        })
        .collect();
    let _ = write!(
        out,
        r#"<path d="{p}" fill="none" stroke="{c}" stroke-width="2.5"><title>{label}</title></path>"#,
        p = path.join(" "),
        c = PALETTE[0],
        label = esc(label)
    );
    let _ = write!(
        out,
        r#"<text x="{x}" y="{y}" text-anchor="middle" class="axis">false positive rate</text><text x="14" y="{my}" text-anchor="middle" class="axis" transform="rotate(-90 14 {my})">true positive rate</text>"#,
        x = l + pw / 2.0,
        y = size - 8.0,
        my = t + ph / 2.0,
    );
    out.push_str("</svg>");
    out
}

/// A heat map of 0–100 values: rows × columns, red (low) through amber to green (high), the value written
/// in each cell. `groups` splits the columns into labelled runs (e.g. tiers, then bands).
pub struct Heatmap<'a> {
    pub rows: &'a [String],
    pub columns: &'a [String],
    pub groups: &'a [(String, usize)],
    /// `cells[row][column]`.
    pub cells: &'a [Vec<Option<f64>>],
}

/// `s` cut to at most `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Red → amber → green for a 0–100 score.
pub fn score_color(v: f64) -> String {
    let lerp = |a: (f64, f64, f64), b: (f64, f64, f64), t: f64| {
        (
            a.0 + (b.0 - a.0) * t,
            a.1 + (b.1 - a.1) * t,
            a.2 + (b.2 - a.2) * t,
        )
    };
    let (red, amber, green) = (
        (242.0, 153.0, 143.0),
        (250.0, 220.0, 140.0),
        (150.0, 210.0, 160.0),
    );
    let t = (v / 100.0).clamp(0.0, 1.0);
    let (r, g, b) = if t < 0.5 {
        lerp(red, amber, t * 2.0)
    } else {
        lerp(amber, green, (t - 0.5) * 2.0)
    };
    format!("rgb({:.0},{:.0},{:.0})", r, g, b)
}

pub fn heatmap(id: &str, title: &str, m: &Heatmap) -> String {
    let label_w = 250.0;
    let cell_w = ((WIDTH - label_w - RIGHT) / m.columns.len().max(1) as f64).clamp(34.0, 90.0);
    let cell_h = 24.0;
    let top = 52.0;
    let w = label_w + cell_w * m.columns.len() as f64 + RIGHT;
    let h = top + cell_h * m.rows.len() as f64 + 10.0;
    let mut out = String::new();
    open(&mut out, id, title, w.max(WIDTH), h);
    let mut col = 0usize;
    for (name, span) in m.groups {
        let x = label_w + cell_w * col as f64;
        let _ = write!(
            out,
            r##"<text x="{tx:.1}" y="16" text-anchor="middle" class="axis">{n}</text><line x1="{x1:.1}" x2="{x2:.1}" y1="22" y2="22" stroke="#999"/>"##,
            tx = x + cell_w * *span as f64 / 2.0,
            n = esc(name),
            x1 = x + 3.0,
            x2 = x + cell_w * *span as f64 - 3.0,
        );
        col += span;
    }
    for (c, name) in m.columns.iter().enumerate() {
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="40" text-anchor="middle" class="tick">{n}</text>"#,
            x = label_w + cell_w * (c as f64 + 0.5),
            n = esc(name)
        );
    }
    for (r, row) in m.rows.iter().enumerate() {
        let y = top + cell_h * r as f64;
        let _ = write!(
            out,
            r#"<text x="{x}" y="{ty:.1}" text-anchor="end" class="tick">{n}<title>{full}</title></text>"#,
            x = label_w - 8.0,
            ty = y + cell_h / 2.0 + 4.0,
            n = esc(&shorten(row, 40)),
            full = esc(row),
        );
        for (c, name) in m.columns.iter().enumerate() {
            let x = label_w + cell_w * c as f64;
            let v = m
                .cells
                .get(r)
                .and_then(|cells| cells.get(c))
                .copied()
                .flatten();
            let (fill, text) = match v {
                Some(v) => (score_color(v), format!("{v:.0}")),
                None => ("#f2f2f2".to_string(), "–".to_string()),
            };
            let _ = write!(
                out,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{cw:.1}" height="{ch:.1}" fill="{fill}" stroke="#fff"><title>{row}, {col}: {text}</title></rect><text x="{tx:.1}" y="{ty:.1}" text-anchor="middle" class="cell">{text}</text>"##,
                cw = cell_w,
                ch = cell_h,
                row = esc(row),
                col = esc(name),
                tx = x + cell_w / 2.0,
                ty = y + cell_h / 2.0 + 4.0,
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_in_content_and_attributes() {
        assert_eq!(
            esc(r#"<a href="x">O'Neil & Co</a>"#),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Neil &amp; Co&lt;/a&gt;"
        );
        let svg = grouped_columns(
            "g",
            "t",
            &["<script>".to_string()],
            &[Series {
                name: "\"><img>".into(),
                color: "red".into(),
                values: vec![Some(1.0)],
            }],
            (0.0, 100.0),
            "x",
        );
        assert!(!svg.contains("<script>") && !svg.contains("<img>"), "{svg}");
    }

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(100.0), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(ticks(7.0), [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(0.0), [0.0, 1.0]);
        assert_eq!(ticks(f64::NAN), [0.0, 1.0]);
        assert_eq!(*ticks(0.37).last().unwrap(), 0.4);
        assert_eq!(
            ticks_between(-7.0, 15.0),
            [-10.0, -5.0, 0.0, 5.0, 10.0, 15.0]
        );
    }

    #[test]
    fn negative_columns_grow_down_from_zero() {
        let series = [Series {
            name: "change".into(),
            color: "#c".into(),
            values: vec![Some(-10.0), Some(10.0)],
        }];
        let svg = grouped_columns(
            "d",
            "t",
            &["a".into(), "b".into()],
            &series,
            (-10.0, 10.0),
            "x",
        );
        // Zero is mid-height; both columns are half the plot tall, one above and one below it.
        let mid = TOP + (HEIGHT - TOP - BOTTOM) / 2.0;
        let half = (HEIGHT - TOP - BOTTOM) / 2.0;
        assert!(svg.contains(&format!(r#"y="{mid:.1}" width"#)), "{svg}");
        assert!(svg.contains(&format!(r#"y="{TOP:.1}" width"#)), "{svg}");
        assert_eq!(
            svg.matches(&format!(r#"height="{half:.1}""#)).count(),
            2,
            "{svg}"
        );
        assert!(
            svg.contains(">+10<") && svg.contains(">-10<"),
            "signed tick labels: {svg}"
        );
    }

    #[test]
    fn stacked_columns_stack_each_series_on_the_one_before() {
        let svg = stacked_columns(
            "s",
            "t",
            &["d1".to_string()],
            &[
                Series {
                    name: "red".into(),
                    color: "#r".into(),
                    values: vec![Some(50.0)],
                },
                Series {
                    name: "green".into(),
                    color: "#g".into(),
                    values: vec![Some(50.0)],
                },
            ],
            "day",
        );
        // Scale 0–100 over the plot height: red fills the bottom half, green sits on top of it.
        let plot_h = HEIGHT - TOP - BOTTOM;
        let half = format!(r##"height="{:.1}" fill="#r""##, plot_h / 2.0);
        assert!(svg.contains(&half), "{svg}");
        let green_top = format!(r#"y="{TOP:.1}" width"#);
        assert!(svg.contains(&green_top), "{svg}");
    }

    #[test]
    fn score_colors_run_from_red_to_green() {
        assert_eq!(score_color(0.0), "rgb(242,153,143)");
        assert_eq!(score_color(50.0), "rgb(250,220,140)");
        assert_eq!(score_color(100.0), "rgb(150,210,160)");
        assert_eq!(score_color(250.0), score_color(100.0));
    }
}
