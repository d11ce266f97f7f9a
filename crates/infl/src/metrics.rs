//! How well a score finds mislabelled examples: ROC AUC, precision/recall/F1 of a flagged
//! set, and the fraction found after inspecting the top of a ranking.
//!
//! Also the correlations of counterfactual evaluation ([`pearson`], [`spearman`]) and a
//! seeded percentile bootstrap of a mean ([`bootstrap_mean`]).
//!
//! Conventions: a higher score means more suspicious. `positives[i]` says whether example
//! `i` is really mislabelled. Rankings sort by score descending, ties by lower index
//! (deterministic); the AUC instead gives tied scores their average rank (the
//! Mann–Whitney statistic), so it does not depend on the order of ties.

/// ROC AUC of `scores` for the labels `positives` (ties get their average rank); `None`
/// when there are no positives or no negatives, or the lengths differ.
pub fn roc_auc(scores: &[f64], positives: &[bool]) -> Option<f64> {
    if scores.len() != positives.len() {
        return None;
    }
    let p = positives.iter().filter(|&&b| b).count();
    let n = positives.len() - p;
    if p == 0 || n == 0 {
        return None;
    }
    let ranks = average_ranks(scores);
    let rank_sum: f64 = ranks
        .iter()
        .zip(positives)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    let (p, n) = (p as f64, n as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// 1-based ranks of `values` ascending, tied values sharing their average rank (the
/// ranks of the Mann–Whitney statistic and of Spearman's correlation, as SciPy's
/// `rankdata(method="average")`).
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]].total_cmp(&values[order[i]]).is_eq() {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let avg = (i + j + 2) as f64 / 2.0;
        for &k in &order[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    ranks
}

/// Pearson's correlation of `x` and `y` (centred in f64); `None` when the lengths differ,
/// there are fewer than 2 points, a value is not finite or either side is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    if n != y.len() || n < 2 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

/// Spearman's rank correlation: [`pearson`] of the [`average_ranks`] (SciPy's
/// `spearmanr`); `None` as for [`pearson`].
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

/// A mean with a bootstrap confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    /// The mean of the values.
    pub mean: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
    /// How many values it summarises.
    pub count: usize,
}

/// The mean of `values` with a percentile bootstrap interval at `level` (e.g. 0.95) from
/// `resamples` resamples drawn by a ChaCha8 generator seeded by `seed`; `None` when there
/// are no values.
pub fn bootstrap_mean(values: &[f64], resamples: usize, level: f64, seed: u64) -> Option<Interval> {
    use rand::{RngExt, SeedableRng};
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    Some(Interval {
        mean,
        low: at(tail),
        high: at(1.0 - tail),
        count: n,
    })
}

/// Points `(false positive rate, true positive rate)` of the ROC curve, from (0, 0) to
/// (1, 1), one per distinct score (tied scores move both rates at once). Empty when
/// [`roc_auc`] would be `None`.
pub fn roc_curve(scores: &[f64], positives: &[bool]) -> Vec<(f64, f64)> {
    if roc_auc(scores, positives).is_none() {
        return Vec::new();
    }
    let p = positives.iter().filter(|&&b| b).count() as f64;
    let n = positives.len() as f64 - p;
    let order = ranking(scores);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut out = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]].total_cmp(&scores[order[i]]).is_eq() {
            if positives[order[j]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        out.push((fp / n, tp / p));
        i = j;
    }
    out
}

/// Indices sorted by score descending, ties by lower index (infl's one ranking order,
/// [`infl_core::order`]).
pub fn ranking(scores: &[f64]) -> Vec<usize> {
    infl_core::rank_descending(scores)
}

/// Precision, recall and F1 of a flagged set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlaggedQuality {
    /// Number of (distinct) flagged examples.
    pub flagged: usize,
    /// Flagged examples that are positives.
    pub true_positives: usize,
    /// Number of positives.
    pub positives: usize,
    /// `true_positives / flagged` (0 when nothing is flagged).
    pub precision: f64,
    /// `true_positives / positives` (0 when there are no positives).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
}

/// Precision, recall and F1 of the examples `flagged` (indices into `positives`;
/// duplicates count once, out-of-range indices are ignored).
pub fn flagged_quality(flagged: &[usize], positives: &[bool]) -> FlaggedQuality {
    let mut seen = vec![false; positives.len()];
    let (mut count, mut tp) = (0usize, 0usize);
    for &i in flagged {
        if i < positives.len() && !seen[i] {
            seen[i] = true;
            count += 1;
            tp += usize::from(positives[i]);
        }
    }
    let pos = positives.iter().filter(|&&b| b).count();
    let precision = if count == 0 {
        0.0
    } else {
        tp as f64 / count as f64
    };
    let recall = if pos == 0 {
        0.0
    } else {
        tp as f64 / pos as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    FlaggedQuality {
        flagged: count,
        true_positives: tp,
        positives: pos,
        precision,
        recall,
        f1,
    }
}

/// Fraction of all positives among the top `round(fraction · N)` examples of the ranking
/// by score (0 when there are no positives).
pub fn found_after_inspecting(scores: &[f64], positives: &[bool], fraction: f64) -> f64 {
    let pos = positives.iter().filter(|&&b| b).count();
    if pos == 0 || scores.len() != positives.len() {
        return 0.0;
    }
    let k = ((fraction.clamp(0.0, 1.0) * scores.len() as f64).round() as usize).min(scores.len());
    let found = ranking(scores)[..k]
        .iter()
        .filter(|&&i| positives[i])
        .count();
    found as f64 / pos as f64
}

/// The found-vs-inspected curve: `(fraction inspected, fraction of positives found)` after
/// each of the first `round(max_fraction · N)` examples of the ranking, starting at (0, 0).
pub fn found_curve(scores: &[f64], positives: &[bool], max_fraction: f64) -> Vec<(f64, f64)> {
    let pos = positives.iter().filter(|&&b| b).count();
    if pos == 0 || scores.len() != positives.len() {
        return Vec::new();
    }
    let n = scores.len();
    let k = ((max_fraction.clamp(0.0, 1.0) * n as f64).round() as usize).min(n);
    let mut out = Vec::with_capacity(k + 1);
    out.push((0.0, 0.0));
    let mut found = 0usize;
    for (r, &i) in ranking(scores)[..k].iter().enumerate() {
        found += usize::from(positives[i]);
        out.push(((r + 1) as f64 / n as f64, found as f64 / pos as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand() {
        // Positives at scores 0.9 and 0.4; negatives 0.8, 0.3, 0.2: of the 6 pairs, the
        // positive wins 5 (0.4 loses to 0.8) → 5/6.
        let s = [0.9, 0.8, 0.4, 0.3, 0.2];
        let y = [true, false, true, false, false];
        assert!((roc_auc(&s, &y).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        // Perfect and reversed.
        assert_eq!(roc_auc(&[3.0, 2.0, 1.0], &[true, false, false]), Some(1.0));
        assert_eq!(roc_auc(&[1.0, 2.0, 3.0], &[true, false, false]), Some(0.0));
        // All tied: 0.5. A tie between a positive and a negative counts half:
        // pos {2, 1}, neg {1, 0}: pairs (2>1) (2>0) (1=1: ½) (1>0) → 3.5/4.
        assert_eq!(roc_auc(&[1.0; 4], &[true, false, true, false]), Some(0.5));
        assert_eq!(
            roc_auc(&[2.0, 1.0, 1.0, 0.0], &[true, true, false, false]),
            Some(0.875)
        );
        assert_eq!(roc_auc(&[1.0, 2.0], &[true, true]), None);
        assert_eq!(roc_auc(&[1.0], &[true, false]), None);
    }

    #[test]
    fn correlations_by_hand() {
        // SciPy: pearsonr([1,2,3,4,5],[2,4,5,4,5]) = 0.7745966692414834,
        // spearmanr(...) = 0.7378647873726218 (SciPy 1.17; ties in y share ranks).
        let (x, y) = ([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 5.0, 4.0, 5.0]);
        assert!((pearson(&x, &y).unwrap() - 0.774_596_669_241_483_4).abs() < 1e-12);
        assert!((spearman(&x, &y).unwrap() - 0.737_864_787_372_621_8).abs() < 1e-12);
        assert_eq!(average_ranks(&y), vec![1.0, 2.5, 4.5, 2.5, 4.5]);
        // Monotone but not linear: Spearman 1, Pearson below.
        let cube: Vec<f64> = x.iter().map(|v| v * v * v).collect();
        assert!((spearman(&x, &cube).unwrap() - 1.0).abs() < 1e-12);
        assert!(pearson(&x, &cube).unwrap() < 0.99);
        let neg: Vec<f64> = x.iter().map(|v| -v).collect();
        assert!((pearson(&x, &neg).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(pearson(&x, &[1.0; 5]), None);
        assert_eq!(pearson(&[1.0], &[2.0]), None);
        assert_eq!(spearman(&x, &[1.0, 2.0]), None);
    }

    #[test]
    fn bootstrap_interval_covers_the_mean_and_narrows_with_data() {
        let few: Vec<f64> = (0..20).map(|i| (i % 5) as f64).collect();
        let many: Vec<f64> = (0..2000).map(|i| (i % 5) as f64).collect();
        let a = bootstrap_mean(&few, 1000, 0.95, 1).unwrap();
        let b = bootstrap_mean(&many, 1000, 0.95, 1).unwrap();
        assert_eq!((a.mean, b.mean), (2.0, 2.0));
        assert!(
            a.low < 2.0 && a.high > 2.0 && a.low > 0.5 && a.high < 3.5,
            "{a:?}"
        );
        assert!(b.high - b.low < (a.high - a.low) / 5.0, "{a:?} {b:?}");
        assert_eq!(bootstrap_mean(&few, 1000, 0.95, 1), Some(a));
        assert_eq!(bootstrap_mean(&[], 10, 0.95, 1), None);
        let one = bootstrap_mean(&[3.0], 10, 0.95, 1).unwrap();
        assert_eq!((one.low, one.high), (3.0, 3.0));
    }

    #[test]
    fn roc_curve_by_hand() {
        let c = roc_curve(&[2.0, 1.0, 1.0, 0.0], &[true, true, false, false]);
        assert_eq!(c, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        // The trapezoid area under the curve is the AUC.
        let area: f64 = c
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum();
        assert_eq!(area, 0.875);
    }

    #[test]
    fn precision_recall_f1_by_hand() {
        let y = [true, true, true, false, false, false];
        let q = flagged_quality(&[0, 3, 1, 1, 99], &y);
        assert_eq!((q.flagged, q.true_positives, q.positives), (3, 2, 3));
        assert!((q.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((q.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((q.f1 - 2.0 / 3.0).abs() < 1e-12);
        let q = flagged_quality(&[0], &y);
        assert_eq!((q.precision, q.recall), (1.0, 1.0 / 3.0));
        assert!((q.f1 - 0.5).abs() < 1e-12);
        let q = flagged_quality(&[], &y);
        assert_eq!((q.precision, q.recall, q.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn found_after_inspecting_by_hand() {
        // 10 examples, positives 0, 5, 9; ranking: 9, 0, 3, 5, ... (ties by index)
        let s = [0.9, 0.1, 0.1, 0.5, 0.1, 0.4, 0.1, 0.1, 0.1, 1.0];
        let mut y = [false; 10];
        for i in [0, 5, 9] {
            y[i] = true;
        }
        assert_eq!(ranking(&s)[..4], [9, 0, 3, 5]);
        assert!((found_after_inspecting(&s, &y, 0.2) - 2.0 / 3.0).abs() < 1e-12);
        assert!((found_after_inspecting(&s, &y, 0.3) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(found_after_inspecting(&s, &y, 0.4), 1.0);
        assert_eq!(found_after_inspecting(&s, &y, 0.0), 0.0);
        let c = found_curve(&s, &y, 0.4);
        assert_eq!(c.len(), 5);
        assert_eq!(c[4], (0.4, 1.0));
    }
}
