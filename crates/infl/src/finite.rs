//! The one rule for values that f32 arithmetic cannot hold (issue: hardening, class 1).
//!
//! Scores are sums over terms of `w (g_i·g_j)(a_i·a_j + bias)`. By Cauchy–Schwarz every
//! intermediate of that sum is bounded by the per-example quantities `‖a‖²`, `‖g‖²`,
//! `‖g‖²(‖a‖² + bias)` and their weighted sum over terms (the self-influence). So the engine
//! checks those, in f64, once per term set before any kernel runs: when all of them are
//! finite and at most [`LIMIT`], every score, top-k entry and self-influence is finite on
//! every backend, CPU and GPU alike; otherwise it refuses with an error naming the
//! checkpoint, the split and the example (values printed to 4 significant digits, so that
//! the CPU's and the GPU's last-bit differences in the gradients give the same message).
//! The check is `O((train + test) × width)`, small
//! next to scoring.

use crate::engine::{FactorMatrices, TermSet};
use crate::run::Splits;
use crate::{Error, Result};

/// The largest per-example quantity accepted: f32's largest value over 16, leaving room
/// for the rounding of f32 sums.
pub const LIMIT: f64 = f32::MAX as f64 / 16.0;

/// Checks that scoring `set` stays within f32 (see the module docs).
/// `splits` says which examples: the training ones (self-influence) or both (scores, top-k).
pub fn check(set: &TermSet, splits: Splits) -> Result<()> {
    checked_norms(set, splits).map(drop)
}

/// Per term, per example, the gradient norm the check bounds: `‖g‖ √(‖a‖² + bias)`, for a
/// ghost term `Σ_s ‖g_s‖ √(‖a_s‖² + bias)` (see [`example_bound`]); `test` is empty
/// without [`Splits::TrainAndTest`] or for a term without test factors.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExampleNorms {
    /// `[term][training example]`.
    pub train: Vec<Vec<f64>>,
    /// `[term][test example]`.
    pub test: Vec<Vec<f64>>,
}

/// [`check`], keeping the norms it computed (bound pruning reuses them).
pub(crate) fn checked_norms(set: &TermSet, splits: Splits) -> Result<ExampleNorms> {
    let train = check_split(set, "train", |t| Some(&t.train))?;
    let test = if splits == Splits::TrainAndTest {
        check_split(set, "test", |t| t.test.as_ref())?
    } else {
        Vec::new()
    };
    Ok(ExampleNorms { train, test })
}

fn check_split(
    set: &TermSet,
    split: &'static str,
    factors: impl Fn(&crate::FactorTerm) -> Option<&FactorMatrices>,
) -> Result<Vec<Vec<f64>>> {
    let mut total: Vec<f64> = Vec::new();
    let mut norms = Vec::with_capacity(set.terms.len());
    for term in &set.terms {
        let Some(f) = factors(term) else {
            norms.push(Vec::new());
            continue;
        };
        let n = f.rows() / term.positions.max(1);
        total.resize(n, 0.0);
        let mut own = Vec::with_capacity(n);
        for (i, sum) in total.iter_mut().enumerate() {
            let unweighted = example_bound(term, f, i, split)?;
            *sum += f64::from(term.weight).abs() * unweighted;
            own.push(unweighted.sqrt());
        }
        norms.push(own);
    }
    match total.iter().position(|s| !(s.is_finite() && *s <= LIMIT)) {
        None => Ok(norms),
        Some(i) => Err(Error::NonFinite {
            checkpoint: "all checkpoints".into(),
            split,
            example: i,
            details: format!(
                "the learning-rate-weighted sum of its squared gradient norms is {:.4e}, above \
                 the largest accepted {LIMIT:.4e}: its scores would overflow f32",
                total[i]
            ),
        }),
    }
}

/// Example `i`'s bound in one term: `‖g‖²(‖a‖² + bias)`, or for a ghost term over
/// positions `s` the bound `(Σ_s ‖g_s‖ √(‖a_s‖² + bias))²` of every partial sum of its
/// position pairs; an error when a position's norms do not fit.
fn example_bound(
    term: &crate::FactorTerm,
    f: &FactorMatrices,
    i: usize,
    split: &'static str,
) -> Result<f64> {
    let bias = f64::from(term.bias.input_dot());
    let fits = |x: f64| x.is_finite() && x <= LIMIT;
    let mut root_sum = 0.0;
    let mut plain = 0.0;
    for row in term.rows_of(i) {
        let na = squared_norm(f.a.view().row(row));
        let ng = squared_norm(f.g.view().row(row));
        plain = ng * (na + bias);
        if !(fits(na) && fits(ng) && fits(plain)) {
            return Err(Error::NonFinite {
                checkpoint: term.label.clone(),
                split,
                example: i,
                details: format!(
                    "‖a‖² = {na:.4e}, ‖g‖² = {ng:.4e}: its gradient does not fit in f32 \
                     (largest accepted {LIMIT:.4e}); rescale the features or the model"
                ),
            });
        }
        root_sum += plain.sqrt();
    }
    Ok(if term.is_ghost() {
        root_sum * root_sum
    } else {
        plain
    })
}

fn squared_norm(row: &[f32]) -> f64 {
    row.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
}
