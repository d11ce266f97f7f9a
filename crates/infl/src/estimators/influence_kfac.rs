//! Influence functions over factor files (`--method influence --factors DIR --solver
//! kfac|ekfac`): the last checkpoint's chosen layers preconditioned by [`crate::kfac`]
//! (Kronfluence's numerics and scale), scored by the one engine; self-influence
//! `∇ℓ_iᵀ P ∇ℓ_i` in chunks of training examples, summed over the layers.

use infl_io::LayerFactors;

use super::influence::{push_self_values, row_dots, self_result};
use super::{Attributed, Estimator, InfluenceFunction};
use crate::curvature::Solver;
use crate::curvature::terms::gradients;
use crate::engine::TermSet;
use crate::estimators::Convention;
use crate::kfac::{Fit, Strategy};
use crate::run::{FactorCheckpoint, Prepared, Run, SplitFactors};
use crate::{Error, Result};

/// Training examples preconditioned at a time for self-influence.
const CHUNK: usize = 256;

/// The strategy the solver names, or why factor files need another one.
fn strategy(est: &InfluenceFunction) -> Result<Strategy> {
    if est.convention != Convention::Kronfluence {
        let details = "K-FAC and EK-FAC follow Kronfluence's scaling (the mean Fisher): drop \
                       --convention captum";
        return Err(Error::config("convention", details));
    }
    match est.solver {
        Solver::Kfac => Ok(Strategy::Kfac),
        Solver::Ekfac => Ok(Strategy::Ekfac),
        other => Err(Error::config(
            "solver",
            format!(
                "factor files are preconditioned layer by layer with --solver kfac or ekfac, \
                 not {} (which inverts the final layer's exact Hessian from --run)",
                other.short_name()
            ),
        )),
    }
}

/// The last checkpoint and its fit (after the run's own consistency checks).
fn fit<'r>(est: &InfluenceFunction, run: &'r Run) -> Result<(&'r FactorCheckpoint, Fit)> {
    let strategy = strategy(est)?;
    let ckpts = run.factors(est.label())?;
    let last = ckpts
        .last()
        .ok_or_else(|| Error::config("checkpoints", "at least one checkpoint is needed"))?;
    Ok((last, Fit::new(&last.train, strategy)?))
}

/// The engine terms of the preconditioned test factors against the training factors.
pub(super) fn prepare(est: &InfluenceFunction, run: &Run) -> Result<Prepared> {
    let (last, fit) = fit(est, run)?;
    let label = format!("checkpoint {}", last.name);
    let terms = match &last.test {
        Some(test) => {
            let x = fit.precondition(test, est.damping())?;
            fit.terms(&last.train, &x, &label)?
        }
        None => Vec::new(),
    };
    Ok(Prepared {
        set: TermSet { terms },
        learning_rates: vec![1.0],
        checkpoints: vec![last.name.clone()],
        train: last.train.info(),
        test: last.test.as_ref().map(SplitFactors::info),
    })
}

/// `∇ℓ_iᵀ P ∇ℓ_i` per training example, summed over the layers.
pub(super) fn self_influence(est: &InfluenceFunction, run: &Run) -> Result<Attributed<Vec<f32>>> {
    let (last, fit) = fit(est, run)?;
    let n = last.train.len();
    let mut values = Vec::with_capacity(n);
    for start in (0..n).step_by(CHUNK) {
        let rows: Vec<usize> = (start..(start + CHUNK).min(n)).collect();
        let chunk = last.train.select(&rows);
        let pre = fit.precondition(&chunk, est.damping())?;
        let mut sums = vec![0.0f64; rows.len()];
        for (layer, x) in chunk.layers.iter().zip(&pre) {
            let LayerFactors::Linear {
                a,
                g,
                positions,
                bias,
            } = &layer.factors
            else {
                continue; // refused by the fit already
            };
            let raw = gradients(a, g, *positions, *bias, 0..rows.len());
            sums.iter_mut()
                .zip(row_dots(&raw, x))
                .for_each(|(s, d)| *s += d);
        }
        push_self_values(&mut values, &sums, |i| chunk.ids[i], &last.train.source)?;
    }
    Ok(self_result(&last.name, last.train.info(), values))
}
