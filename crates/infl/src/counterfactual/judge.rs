//! Predicted against actual effects: LDS (Spearman per test example over subsets) and
//! leave-one-out (Pearson per test example over removals), as dattri's `lds` and
//! `loo_corr` compute them, summarised with a bootstrap interval over test examples.

use serde::{Deserialize, Serialize};

use super::{Outcome, Target};
use crate::metrics::{Interval, bootstrap_mean, pearson, spearman};

/// Bootstrap resamples of every summary.
const RESAMPLES: usize = 2_000;

/// Confidence level of every summary.
const LEVEL: f64 = 0.95;

/// Per-test-example correlations and their mean with a 95% bootstrap interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Correlations {
    /// One per evaluated test example; `None` where a side is constant (e.g. every score
    /// zero), as SciPy's NaN, left out of the summary (dattri drops NaNs too).
    pub per_test: Vec<Option<f64>>,
    /// Mean over the defined values with its interval (`None` when none is defined).
    pub summary: Option<Interval>,
    /// Pearson's correlation over every (test example, retraining) pair pooled (LOO only:
    /// Koh & Liang's Fig. 2 pools one test example's removals).
    pub pooled: Option<f64>,
}

impl Correlations {
    fn new(per_test: Vec<Option<f64>>, pooled: Option<f64>, seed: u64) -> Self {
        let defined: Vec<f64> = per_test.iter().flatten().copied().collect();
        Self {
            summary: bootstrap_mean(&defined, RESAMPLES, LEVEL, seed),
            per_test,
            pooled,
        }
    }
}

/// `Σ_{i∈S_m} score[t, i]` for every subset `m` and test example `t` (`scores` row-major
/// `[T, N]`), summed in f64: `[M][T]`.
pub fn lds_predictions(scores: &[f32], n_train: usize, subsets: &[Vec<usize>]) -> Vec<Vec<f64>> {
    let tests = scores.len() / n_train.max(1);
    subsets
        .iter()
        .map(|s| {
            (0..tests)
                .map(|t| {
                    let row = &scores[t * n_train..(t + 1) * n_train];
                    s.iter().map(|&i| f64::from(row[i])).sum()
                })
                .collect()
        })
        .collect()
}

/// The column `t` of a `[M][T]` table.
fn column(table: &[Vec<f64>], t: usize) -> Vec<f64> {
    table.iter().map(|row| row[t]).collect()
}

/// LDS: per test example, Spearman's correlation of the predictions (`[M][T]`,
/// [`lds_predictions`]) with the actual target values of the subsets' models.
pub fn lds(predicted: &[Vec<f64>], actual: &[Outcome], target: Target, seed: u64) -> Correlations {
    let actual: Vec<Vec<f64>> = actual.iter().map(|o| target.values(o)).collect();
    let tests = actual.first().map_or(0, Vec::len);
    let per_test = (0..tests)
        .map(|t| spearman(&column(predicted, t), &column(&actual, t)))
        .collect();
    Correlations::new(per_test, None, seed)
}

/// Actual leave-one-out effects `[R][T]`: how much each removed example helped each test
/// example, `value(full) − value(without it)` (for [`Target::Loss`]: the rise of the loss).
pub fn loo_effects(full: &Outcome, without: &[Outcome], target: Target) -> Vec<Vec<f64>> {
    let base = target.values(full);
    without
        .iter()
        .map(|o| {
            base.iter()
                .zip(target.values(o))
                .map(|(b, v)| b - v)
                .collect()
        })
        .collect()
}

/// LOO: per test example, Pearson's correlation of the predicted effects `score[t, r] / N`
/// with the actual ones (`effects` `[R][T]`, [`loo_effects`]), and the pooled correlation.
pub fn loo(
    scores: &[f32],
    n_train: usize,
    removals: &[usize],
    effects: &[Vec<f64>],
    seed: u64,
) -> Correlations {
    let tests = effects.first().map_or(0, Vec::len);
    let predicted: Vec<Vec<f64>> = removals
        .iter()
        .map(|&r| {
            (0..tests)
                .map(|t| f64::from(scores[t * n_train + r]) / n_train as f64)
                .collect()
        })
        .collect();
    let per_test = (0..tests)
        .map(|t| pearson(&column(&predicted, t), &column(effects, t)))
        .collect();
    let flat = |table: &[Vec<f64>]| -> Vec<f64> { table.iter().flatten().copied().collect() };
    Correlations::new(per_test, pearson(&flat(&predicted), &flat(effects)), seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lds_of_exact_linear_scores_is_one_and_of_reversed_scores_minus_one() {
        // Two test examples, 4 training examples; actual = −loss = Σ_{i∈S} s_i (exactly
        // linear), so Spearman is 1; negated scores give −1.
        let scores = [1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5, 2.0, 0.0];
        let subsets = vec![vec![0, 1], vec![1, 3], vec![2, 3], vec![0, 2]];
        let pred = lds_predictions(&scores, 4, &subsets);
        assert_eq!(pred[1], vec![6.0, 0.5]);
        let actual: Vec<Outcome> = pred
            .iter()
            .map(|p| Outcome {
                loss: p.iter().map(|v| -v).collect(),
                margin: vec![0.0; 2],
            })
            .collect();
        let c = lds(&pred, &actual, Target::Loss, 0);
        assert!(
            c.per_test.iter().all(|r| (r.unwrap() - 1.0).abs() < 1e-12),
            "{c:?}"
        );
        let neg: Vec<Vec<f64>> = pred
            .iter()
            .map(|p| p.iter().map(|v| -v).collect())
            .collect();
        let reversed = lds(&neg, &actual, Target::Loss, 0).summary.unwrap().mean;
        assert!((reversed + 1.0).abs() < 1e-12, "{reversed}");
        // A constant margin is undefined, not a number.
        let m = lds(&pred, &actual, Target::Margin, 0);
        assert_eq!(m.per_test, vec![None, None]);
        assert!(m.summary.is_none());
    }

    #[test]
    fn loo_predicts_score_over_n_against_the_loss_rise() {
        let scores = [4.0f32, -2.0, 1.0, 0.0];
        let full = Outcome {
            loss: vec![1.0],
            margin: vec![0.0],
        };
        // Removing example r raises the loss by score / N (helpful = positive).
        let without: Vec<Outcome> = [0usize, 1, 2]
            .iter()
            .map(|&r| Outcome {
                loss: vec![1.0 + f64::from(scores[r]) / 4.0],
                margin: vec![0.0],
            })
            .collect();
        let effects = loo_effects(&full, &without, Target::Loss);
        assert_eq!(effects, vec![vec![1.0], vec![-0.5], vec![0.25]]);
        let c = loo(&scores, 4, &[0, 1, 2], &effects, 0);
        assert!((c.per_test[0].unwrap() - 1.0).abs() < 1e-12);
        assert!((c.pooled.unwrap() - 1.0).abs() < 1e-12);
    }
}
