//! Scoring functions: a raw metric value → 1–100 (linear between points, steps, percentile within the
//! account's segment), and score → red/amber/green with hysteresis.
//!
//! Pure arithmetic over validated model types; no I/O. The roll-up over categories is in `mod.rs`.

use std::collections::BTreeMap;

use crate::config::{Band, Bands, ScoreFn};

/// Maps a raw value onto 1–100 with a linear or steps function. Percentile functions need the population
/// (`Population::rank`) and give `None` here.
pub fn apply(f: &ScoreFn, x: f64) -> Option<f64> {
    let s = match f {
        ScoreFn::Linear(points) => {
            let (first, last) = (points[0], points[points.len() - 1]);
            if x <= first.0 {
                first.1
            } else if x >= last.0 {
                last.1
            } else {
                points
                    .windows(2)
                    .find(|w| x <= w[1].0)
                    .map(|w| w[0].1 + (x - w[0].0) * (w[1].1 - w[0].1) / (w[1].0 - w[0].0))
                    .unwrap_or(last.1)
            }
        }
        ScoreFn::Steps(points) => {
            points
                .iter()
                .rev()
                .find(|(at, _)| x >= *at)
                .unwrap_or(&points[0])
                .1
        }
        ScoreFn::Percentile { .. } => return None,
    };
    Some(s.clamp(1.0, 100.0))
}

/// The band a score falls in, with no history.
pub fn band_of(score: f64, bands: &Bands) -> Band {
    if score < bands.red_below {
        Band::Red
    } else if score < bands.green_from {
        Band::Amber
    } else {
        Band::Green
    }
}

/// The band with hysteresis: leaving `previous` needs the score to clear the threshold by `margin`.
pub fn band_with_hysteresis(score: f64, previous: Option<Band>, bands: &Bands) -> Band {
    let raw = band_of(score, bands);
    match previous {
        None => raw,
        Some(prev) if raw > prev => prev.max(band_of(score - bands.margin, bands)),
        Some(prev) if raw < prev => prev.min(band_of(score + bands.margin, bands)),
        Some(prev) => prev,
    }
}

/// Segments smaller than this are ranked against every account instead: a percentile among three peers
/// says little.
pub const MIN_PEERS: usize = 5;

/// Every account's value of each percentile-scored metric, sorted, per segment and overall.
#[derive(Debug, Clone, Default)]
pub struct Population {
    /// metric id → segment (None: accounts without one) → sorted values.
    by_segment: BTreeMap<String, BTreeMap<Option<String>, Vec<f64>>>,
    all: BTreeMap<String, Vec<f64>>,
}

impl Population {
    /// `accounts` yields (segment, metric id, value) for every present value of a percentile metric.
    pub fn build<'a>(
        values: impl IntoIterator<Item = (Option<&'a str>, &'a str, f64)>,
    ) -> Population {
        let mut p = Population::default();
        for (segment, metric, v) in values {
            if !v.is_finite() {
                continue;
            }
            p.by_segment
                .entry(metric.to_string())
                .or_default()
                .entry(segment.map(str::to_lowercase))
                .or_default()
                .push(v);
            p.all.entry(metric.to_string()).or_default().push(v);
        }
        for segs in p.by_segment.values_mut() {
            for xs in segs.values_mut() {
                xs.sort_by(f64::total_cmp);
            }
        }
        for xs in p.all.values_mut() {
            xs.sort_by(f64::total_cmp);
        }
        p
    }

    /// The 1–100 percentile score of `x` among the peers of `segment` (mid-rank for ties), or among all
    /// accounts when the segment has fewer than `MIN_PEERS`. `None` when nobody has a value.
    pub fn rank(
        &self,
        metric: &str,
        segment: Option<&str>,
        x: f64,
        higher_is_better: bool,
    ) -> Option<f64> {
        let seg = segment.map(str::to_lowercase);
        let peers = self
            .by_segment
            .get(metric)
            .and_then(|s| s.get(&seg))
            .filter(|xs| xs.len() >= MIN_PEERS)
            .or_else(|| self.all.get(metric))?;
        Some(percentile_score(peers, x, higher_is_better))
    }
}

/// Mid-rank percentile of `x` in sorted `peers`, mapped onto 1–100.
pub fn percentile_score(peers: &[f64], x: f64, higher_is_better: bool) -> f64 {
    if peers.is_empty() {
        return 50.5;
    }
    let below = peers.partition_point(|p| *p < x);
    let not_above = peers.partition_point(|p| *p <= x);
    let equal = not_above - below;
    let share = (below as f64 + 0.5 * equal as f64) / peers.len() as f64;
    let share = if higher_is_better { share } else { 1.0 - share };
    (1.0 + 99.0 * share).clamp(1.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANDS: Bands = Bands {
        red_below: 40.0,
        green_from: 70.0,
        margin: 5.0,
    };

    #[test]
    fn linear_and_steps_stay_in_range() {
        let lin = ScoreFn::Linear(vec![(0.0, 1.0), (10.0, 100.0)]);
        for (x, want) in [
            (-5.0, 1.0),
            (0.0, 1.0),
            (5.0, 50.5),
            (10.0, 100.0),
            (99.0, 100.0),
        ] {
            assert_eq!(apply(&lin, x), Some(want), "linear at {x}");
        }
        let down = ScoreFn::Linear(vec![(0.0, 100.0), (30.0, 50.0), (90.0, 1.0)]);
        for (x, want) in [(15.0, 75.0), (60.0, 25.5), (200.0, 1.0)] {
            assert_eq!(apply(&down, x), Some(want), "descending linear at {x}");
        }
        let steps = ScoreFn::Steps(vec![(0.0, 10.0), (3.0, 60.0), (10.0, 100.0)]);
        for (x, want) in [(-1.0, 10.0), (2.9, 10.0), (3.0, 60.0), (50.0, 100.0)] {
            assert_eq!(apply(&steps, x), Some(want), "steps at {x}");
        }
        assert_eq!(
            apply(
                &ScoreFn::Percentile {
                    higher_is_better: true
                },
                1.0
            ),
            None
        );
    }

    #[test]
    fn hysteresis_needs_the_margin_to_change_band() {
        // (score, previous, expected)
        let cases = [
            (38.0, None, Band::Red),
            (41.0, Some(Band::Red), Band::Red), // above 40 but not by 5
            (45.0, Some(Band::Red), Band::Amber), // cleared the margin
            (37.0, Some(Band::Amber), Band::Amber),
            (34.9, Some(Band::Amber), Band::Red),
            (90.0, Some(Band::Red), Band::Green), // a big jump crosses two bands
            (66.0, Some(Band::Green), Band::Green),
            (64.0, Some(Band::Green), Band::Amber),
            (72.0, Some(Band::Amber), Band::Amber), // green from 70, but 72 < 75
        ];
        for (score, prev, want) in cases {
            assert_eq!(
                band_with_hysteresis(score, prev, &BANDS),
                want,
                "score {score} from {prev:?}"
            );
        }
    }

    #[test]
    fn percentile_ranks_within_segment_and_falls_back_to_everyone() {
        // (x, higher_is_better, expected) over peers 10, 20, 20, 30.
        let peers = [10.0, 20.0, 20.0, 30.0];
        for (x, hib, want) in [
            (5.0, true, 1.0),
            (10.0, true, 1.0 + 99.0 * 0.125),
            (20.0, true, 1.0 + 99.0 * 0.5),
            (35.0, true, 100.0),
            (35.0, false, 1.0),
            (10.0, false, 1.0 + 99.0 * 0.875),
        ] {
            assert_eq!(percentile_score(&peers, x, hib), want, "{x} {hib}");
        }
        let mut rows: Vec<(Option<&str>, &str, f64)> = (1..=5)
            .map(|i| (Some("Enterprise"), "m", f64::from(i * 100)))
            .collect();
        rows.extend([(Some("smb"), "m", 1.0), (Some("smb"), "m", 2.0)]);
        let p = Population::build(rows);
        // 300 is the median of the five enterprise accounts (case-insensitive segment).
        assert_eq!(p.rank("m", Some("enterprise"), 300.0, true), Some(50.5));
        // smb has two accounts, below MIN_PEERS: ranked among all seven, 2.0 is second lowest.
        assert_eq!(
            p.rank("m", Some("smb"), 2.0, true),
            Some(1.0 + 99.0 * (1.5 / 7.0))
        );
        assert_eq!(p.rank("other", None, 1.0, true), None);
    }
}
