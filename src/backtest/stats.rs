//! The statistics a backtest reports, as pure functions over (score, churned) pairs: AUC with ties,
//! the ROC curve, score deciles, and the regularised logistic regression behind suggested weights
//! (linfa-logistic).
//!
//! Scores are "higher is healthier", so a good signal ranks churners low: AUC here is the probability
//! that a random account that stayed scores above a random churner (ties count half).

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};

/// AUC of `score` as a predictor of *not* churning; `None` without both outcomes or without variance.
pub fn auc(pairs: &[(f64, bool)]) -> Option<f64> {
    let positives = pairs.iter().filter(|p| p.1).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let first = pairs.first()?.0;
    if pairs.iter().all(|p| p.0 == first) {
        return None;
    }
    // Mann–Whitney U over ranks, ties given their average rank.
    let mut sorted: Vec<(f64, bool)> = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_stayed = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum_stayed += avg_rank * sorted[i..j].iter().filter(|p| !p.1).count() as f64;
        i = j;
    }
    let (n1, n0) = (negatives as f64, positives as f64);
    Some((rank_sum_stayed - n1 * (n1 + 1.0) / 2.0) / (n1 * n0))
}

/// ROC curve of "score below t" as a churn flag, over every threshold: (false positive rate, true
/// positive rate) from (0, 0) to (1, 1). Empty without both outcomes.
pub fn roc(pairs: &[(f64, bool)]) -> Vec<(f64, f64)> {
    let positives = pairs.iter().filter(|p| p.1).count() as f64;
    let negatives = pairs.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return Vec::new();
    }
    let mut sorted: Vec<(f64, bool)> = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            if sorted[j].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        points.push((fp / negatives, tp / positives));
        i = j;
    }
    points
}

/// Splits pairs into ten groups of (nearly) equal size by score, lowest first: (min, max, count, churned).
pub fn deciles(pairs: &[(f64, bool)]) -> Vec<(f64, f64, usize, usize)> {
    let mut sorted: Vec<(f64, bool)> = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = sorted.len();
    (0..10)
        .filter_map(|d| {
            let part = &sorted[d * n / 10..(d + 1) * n / 10];
            let (first, last) = (part.first()?, part.last()?);
            let churned = part.iter().filter(|p| p.1).count();
            Some((first.0, last.0, part.len(), churned))
        })
        .collect()
}

/// A fitted churn model over standardised features: churn probability = σ(b + Σ βᵢ (xᵢ − μᵢ)/σᵢ).
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnFit {
    pub coefficients: Vec<f64>,
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
}

impl ChurnFit {
    /// The effect of one point of feature `i` on the log-odds of churn.
    pub fn per_point(&self, i: usize) -> f64 {
        self.coefficients[i] / self.scales[i]
    }
}

/// L2-regularised logistic regression of `churned` on the rows of `x` (every row the same length, no
/// missing values). `None` when it cannot be fitted: one outcome only, or the solver fails.
pub fn fit_churn(x: &[Vec<f64>], churned: &[bool], alpha: f64) -> Option<ChurnFit> {
    let cols = x.first()?.len();
    if cols == 0
        || x.len() != churned.len()
        || !churned.contains(&true)
        || !churned.contains(&false)
    {
        return None;
    }
    let n = x.len() as f64;
    let means: Vec<f64> = (0..cols)
        .map(|c| x.iter().map(|r| r[c]).sum::<f64>() / n)
        .collect();
    let scales: Vec<f64> = (0..cols)
        .map(|c| {
            let var = x.iter().map(|r| (r[c] - means[c]).powi(2)).sum::<f64>() / n;
            if var > 0.0 {
                var.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    let flat: Vec<f64> = x
        .iter()
        .flat_map(|r| (0..cols).map(|c| (r[c] - means[c]) / scales[c]))
        .collect();
    let records = Array2::from_shape_vec((x.len(), cols), flat).ok()?;
    let targets = Array1::from_vec(churned.to_vec());
    let fitted = LogisticRegression::default()
        .alpha(alpha)
        .with_intercept(true)
        .max_iterations(200)
        .fit(&Dataset::new(records, targets))
        .ok()?;
    // linfa models the probability of its "positive" class, which is whichever label is more common;
    // the coefficients are turned to speak of churn.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    let coefficients: Vec<f64> = fitted.params().iter().map(|b| sign * b).collect();
    coefficients
        .iter()
        .all(|c| c.is_finite())
        .then_some(ChurnFit {
            coefficients,
            means,
            scales,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_inverted_rankings() {
        let perfect = [(10.0, true), (20.0, true), (80.0, false), (90.0, false)];
        assert_eq!(auc(&perfect), Some(1.0));
        let inverted = [(10.0, false), (20.0, false), (80.0, true), (90.0, true)];
        assert_eq!(auc(&inverted), Some(0.0));
        let ties = [(50.0, true), (50.0, false), (50.0, true), (60.0, false)];
        // Pairs (stayed, churned): (50,50)×2 ties = 1, (60,50)×2 wins = 2 → 3/4.
        assert_eq!(auc(&ties), Some(0.75));
        assert_eq!(auc(&[(1.0, true), (2.0, true)]), None, "no one stayed");
        assert_eq!(auc(&[(5.0, true), (5.0, false)]), None, "no variance");
    }

    #[test]
    fn roc_runs_from_origin_to_one_and_its_area_is_the_auc() {
        let pairs = [
            (10.0, true),
            (30.0, false),
            (40.0, true),
            (70.0, false),
            (90.0, false),
        ];
        let curve = roc(&pairs);
        assert_eq!(curve.first(), Some(&(0.0, 0.0)));
        assert_eq!(curve.last(), Some(&(1.0, 1.0)));
        let area: f64 = curve
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum();
        let expected = auc(&pairs).expect("both outcomes");
        assert!((area - expected).abs() < 1e-12, "{area} vs {expected}");
    }

    #[test]
    fn deciles_cover_every_pair_lowest_first() {
        let pairs: Vec<(f64, bool)> = (0..95).map(|i| (f64::from(i), i < 10)).collect();
        let d = deciles(&pairs);
        assert_eq!(d.len(), 10);
        assert_eq!(d.iter().map(|x| x.2).sum::<usize>(), 95);
        assert_eq!(d[0].0, 0.0);
        assert_eq!(d[0].3, 9, "the lowest decile holds the churners");
        assert!(d.windows(2).all(|w| w[0].1 <= w[1].0));
    }

    #[test]
    fn logistic_fit_finds_the_feature_that_predicts_churn() {
        // Feature 0 separates churners (low) from the rest; feature 1 is noise.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..200 {
            let churned = i % 4 == 0;
            let signal = if churned { 20.0 } else { 70.0 } + f64::from(i % 7);
            let noise = f64::from((i * 37) % 100);
            x.push(vec![signal, noise]);
            y.push(churned);
        }
        let fit = fit_churn(&x, &y, 1.0).expect("fits");
        assert!(fit.per_point(0) < 0.0, "higher score, less churn: {fit:?}");
        assert!(
            fit.per_point(0).abs() > 10.0 * fit.per_point(1).abs(),
            "{fit:?}"
        );
        assert!(fit_churn(&x, &[false; 200], 1.0).is_none());
        // The same when churners are the majority (linfa's "positive" class flips with the counts).
        let x_flipped: Vec<Vec<f64>> = (x.iter().zip(&y))
            .map(|(r, c)| vec![if *c { 70.0 } else { 20.0 } + r[0] % 1.0, r[1]])
            .collect();
        let y_flipped: Vec<bool> = y.iter().map(|c| !c).collect();
        let fit = fit_churn(&x_flipped, &y_flipped, 1.0).expect("fits");
        assert!(fit.per_point(0) < 0.0, "churners are the majority: {fit:?}");
    }
}
