//! Judging a mislabel detector: one [`MethodResult`] per method — ROC AUC, the quality of
//! its flagged set, and the share of mislabelled examples found after inspecting the top
//! 5%, 10% and 20% of its ranking. The demo's table and `results.json` are these values;
//! the evaluation harness and the Python bindings reuse them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::metrics;

/// Fractions of the data inspected for [`MethodResult::found_after_inspecting`].
pub const INSPECT: [f64; 3] = [0.05, 0.10, 0.20];

/// The key of an inspected fraction in [`MethodResult::found_after_inspecting`] (`"5%"`).
pub fn inspect_key(fraction: f64) -> String {
    format!("{}%", (fraction * 100.0).round())
}

/// Quality of a method's flagged set.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Flagged {
    /// How the set was chosen.
    pub rule: String,
    /// Number of flagged examples.
    pub count: usize,
    /// Flagged examples that are really mislabelled.
    pub true_positives: usize,
    /// `true_positives / count`.
    pub precision: f64,
    /// `true_positives / mislabelled`.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

/// How well one method finds the mislabelled examples.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct MethodResult {
    /// The method, as shown in tables.
    pub name: String,
    /// ROC AUC of its scores (`None` without positives or negatives).
    pub roc_auc: Option<f64>,
    /// Its flagged set.
    pub flagged: Flagged,
    /// Share of mislabelled examples among the top [`INSPECT`] fractions of its ranking,
    /// keyed by [`inspect_key`].
    pub found_after_inspecting: BTreeMap<String, f64>,
}

/// A method's scores (higher = more suspicious), its flagged set and the rule that chose
/// it.
#[derive(Debug, Clone, Copy)]
pub struct Detection<'a> {
    /// The method, as shown in tables.
    pub name: &'a str,
    /// One score per training example.
    pub scores: &'a [f64],
    /// Indices of the flagged examples.
    pub flagged: &'a [usize],
    /// How the flagged set was chosen.
    pub rule: &'a str,
}

/// Judges `detection` against the truth `mislabelled`.
pub fn evaluate(detection: &Detection<'_>, mislabelled: &[bool]) -> MethodResult {
    let q = metrics::flagged_quality(detection.flagged, mislabelled);
    MethodResult {
        name: detection.name.to_string(),
        roc_auc: metrics::roc_auc(detection.scores, mislabelled),
        flagged: Flagged {
            rule: detection.rule.to_string(),
            count: q.flagged,
            true_positives: q.true_positives,
            precision: q.precision,
            recall: q.recall,
            f1: q.f1,
        },
        found_after_inspecting: INSPECT
            .iter()
            .map(|&f| {
                (
                    inspect_key(f),
                    metrics::found_after_inspecting(detection.scores, mislabelled, f),
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_detector_scores_one() {
        let truth = [
            true, false, false, true, false, false, false, false, false, false,
        ];
        let scores: Vec<f64> = truth.iter().map(|&t| if t { 1.0 } else { 0.0 }).collect();
        let r = evaluate(
            &Detection {
                name: "oracle",
                scores: &scores,
                flagged: &[0, 3],
                rule: "truth",
            },
            &truth,
        );
        assert_eq!(r.roc_auc, Some(1.0));
        assert_eq!((r.flagged.precision, r.flagged.recall), (1.0, 1.0));
        assert_eq!(r.found_after_inspecting["20%"], 1.0);
        assert_eq!(r.found_after_inspecting["10%"], 0.5);
    }
}
