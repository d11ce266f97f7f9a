//! Counterfactual evaluation: do an estimator's scores predict what happens when the
//! training data change? The ground truth the field uses, as a harness any model and any
//! estimator plug into.
//!
//! - **Leave-one-out** (Koh & Liang 2017, Fig. 2): remove one training example at a time
//!   ([`loo_removals`]: the highest-|score| examples for an anchor test example plus
//!   random ones), retrain, and compare the actual change of every evaluated test
//!   example's loss with the prediction `score / N` ([`loo`]); positive scores mean
//!   helpful (infl's, Captum's and Kronfluence's convention), so removing a helpful
//!   example raises the loss: `Δloss ≈ +score / N` to first order.
//! - **Linear datamodeling score** (Park et al. 2023, as dattri's `lds` computes it): `M`
//!   random subsets of a fraction `α` of the training set ([`lds_subsets`]); the actual
//!   value of a test example under subset `S` is its `−loss` (or margin: [`Target`]) under
//!   the model trained on `S`, averaged over seeds when training is stochastic; the
//!   prediction is `Σ_{i∈S} score_i`; LDS is Spearman's correlation over the `M` subsets
//!   per test example ([`lds`]), averaged over test examples with a bootstrap interval.
//!
//! A model is a [`Retrainer`] (train on a [`TrainSet`] with a seed, report per-test loss
//! and margin); [`retrain_all`] runs the jobs in parallel (rayon; memory is one model per
//! worker), caching each result on disk ([`Cache`]) so that an interrupted run resumes
//! and gives the same results. Estimators are scored by [`methods`], which adds the two
//! baselines that give the numbers meaning (random scores; the plain gradient dot product
//! at the last checkpoint).

mod cache;
mod judge;
pub mod methods;
mod plan;

pub use cache::{Cache, retrain_all};
pub use judge::{Correlations, lds, lds_predictions, loo, loo_effects};
pub use plan::{lds_subsets, loo_removals};

use serde::{Deserialize, Serialize};

use crate::Result;

/// What a retrained model is judged by, per test example; higher means the training data
/// helped more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `−loss` (cross-entropy of the test example's label).
    #[default]
    Loss,
    /// The margin `z_y − max_{k≠y} z_k`.
    Margin,
}

impl Target {
    /// The target's value per test example of an outcome (`−loss` or the margin).
    pub fn values(self, outcome: &Outcome) -> Vec<f64> {
        match self {
            Self::Loss => outcome.loss.iter().map(|l| -l).collect(),
            Self::Margin => outcome.margin.clone(),
        }
    }

    /// `loss` or `margin`.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Margin => "margin",
        }
    }
}

/// Per-test-example results of one trained model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Cross-entropy loss of every evaluated test example.
    pub loss: Vec<f64>,
    /// Margin of every evaluated test example.
    pub margin: Vec<f64>,
}

impl Outcome {
    /// The mean of several outcomes (of seeds), example by example.
    pub fn mean(outcomes: &[Outcome]) -> Outcome {
        let n = outcomes.len().max(1) as f64;
        let t = outcomes.first().map_or(0, |o| o.loss.len());
        let avg = |f: fn(&Outcome) -> &Vec<f64>| -> Vec<f64> {
            (0..t)
                .map(|j| outcomes.iter().map(|o| f(o)[j]).sum::<f64>() / n)
                .collect()
        };
        Outcome {
            loss: avg(|o| &o.loss),
            margin: avg(|o| &o.margin),
        }
    }
}

/// Which training examples a retraining uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrainSet {
    /// Every training example (the reference model).
    Full,
    /// Every example but one (leave-one-out).
    Without(usize),
    /// These examples (sorted row indices; LDS).
    Subset(Vec<usize>),
}

impl TrainSet {
    /// Whether example `i` of `n` is trained on.
    pub fn mask(&self, n: usize) -> Vec<bool> {
        match self {
            Self::Full => vec![true; n],
            Self::Without(r) => (0..n).map(|i| i != *r).collect(),
            Self::Subset(rows) => {
                let mut m = vec![false; n];
                for &i in rows {
                    if i < n {
                        m[i] = true;
                    }
                }
                m
            }
        }
    }
}

/// One retraining: the examples and the seed of a stochastic trainer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// File stem of its cached result (unique within a cache).
    pub key: String,
    /// The examples trained on.
    pub set: TrainSet,
    /// The trainer's seed.
    pub seed: u64,
}

/// A model that can be retrained on part of its training set and evaluated on the test
/// examples of an evaluation.
pub trait Retrainer: Sync {
    /// Trains on `set` with `seed` and evaluates the test examples. Must be deterministic
    /// in `(set, seed)` and independent of the thread count.
    fn retrain(&self, set: &TrainSet, seed: u64) -> Result<Outcome>;
}
