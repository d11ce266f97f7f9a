//! How well a score finds mislabelled examples: ROC AUC, precision/recall/F1 of a flagged
//! set, and the fraction found after inspecting the top of a ranking.
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
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]].total_cmp(&scores[order[i]]).is_eq() {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let avg = (i + j + 2) as f64 / 2.0;
        rank_sum += avg * order[i..=j].iter().filter(|&&k| positives[k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (p as f64, n as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
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
