//! Influence functions over factor files (`--method influence --factors DIR`): the last
//! checkpoint's chosen layers preconditioned either layer by layer by K-FAC or EK-FAC
//! ([`crate::kfac`], Kronfluence's numerics and scale), or jointly by an operator solver
//! (exact, CG, LiSSA, Arnoldi) over a [`Curvature`] of the layers — the empirical or true
//! Fisher of the files' gradients, or the Gauss–Newton matrix or exact Hessian of an
//! infl-nn MLP (whole-network influence, as the InfluenceCalculations tool computes it) —
//! in the convention's scale. Either way the preconditioned test gradients become engine
//! terms against the training factors as they are ([`terms::layer_terms`]); self-influence
//! `∇ℓ_iᵀ P ∇ℓ_i` runs in chunks of training examples. A K-FAC fit saved by `infl fit`
//! (`InfluenceFunction::hessian`) replaces the fit once its identity is the run's; it is
//! what lets a shard, which holds only its training rows, score with K-FAC.

use std::borrow::Cow;
use std::path::PathBuf;

use faer::Mat;
use infl_io::{FactorFile, LayerFactors};

use super::influence::{push_self_values, row_dots, self_result, solver_memory};
use super::{Attributed, Estimator, InfluenceFunction, MemoryNeed};
use crate::curvature::terms::{self, gradients};
use crate::curvature::{
    Block, Curvature, FactorFisher, HessianOperator, Inverse, NetworkHessian, SOLVE_CHUNK,
    SavedCurvature, Scaled, Solver, layout, phase, with_sampled_gradients,
};
use crate::engine::{Progress, TermSet};
use crate::estimators::Convention;
use crate::kfac::{Fit, FitIdentity, SavedFit, Strategy};
use crate::run::{FactorCheckpoint, Prepared, Run, SplitFactors};
use crate::{Error, Result};

/// Training examples preconditioned at a time by K-FAC for self-influence.
const CHUNK: usize = 256;

/// The K-FAC strategy the solver names, or `None` for an operator solver.
fn strategy(est: &InfluenceFunction) -> Result<Option<Strategy>> {
    let kfac = match est.solver {
        Solver::Kfac => Strategy::Kfac,
        Solver::Ekfac => Strategy::Ekfac,
        Solver::Exact | Solver::Cg { .. } | Solver::Lissa { .. } | Solver::Arnoldi { .. } => {
            return Ok(None);
        }
    };
    if est.convention != Convention::Kronfluence {
        let details = "K-FAC and EK-FAC follow Kronfluence's scaling (the mean Fisher): drop \
                       --convention captum";
        return Err(Error::config("convention", details));
    }
    if let Some(c @ (Curvature::GaussNewton | Curvature::Hessian)) = est.curvature {
        let details = format!(
            "{} fits a Kronecker-factored Fisher (empirical, or true with --curvature \
             true-fisher); --curvature {} is for the exact, cg, lissa and arnoldi solvers",
            kfac.short_name(),
            c.short_name()
        );
        return Err(Error::config("curvature", details));
    }
    Ok(Some(kfac))
}

/// The training factors a K-FAC fit reads: their gradients, or the sampled-label ones for
/// the true Fisher (the scores still use the true labels' gradients, as Kronfluence's).
fn fitted_factors<'t>(
    est: &InfluenceFunction,
    train: &'t SplitFactors,
) -> Result<Cow<'t, SplitFactors>> {
    Ok(match fitted_curvature(est) {
        Curvature::TrueFisher => Cow::Owned(with_sampled_gradients(train)?),
        _ => Cow::Borrowed(train),
    })
}

/// The Fisher a K-FAC fit approximates: the empirical one unless `--curvature true-fisher`
/// (`strategy` refused the others).
fn fitted_curvature(est: &InfluenceFunction) -> Curvature {
    est.curvature.unwrap_or_default()
}

/// The K-FAC fit of the last checkpoint's training factors: the saved one (`--hessian`)
/// once its identity is the run's, or fitted now. On a shard only the saved one exists; a
/// shard cannot hash rows it does not read, so its fit is checked on everything else
/// (parts record the fit's CRC for `infl merge`).
fn kfac_fit<'e>(
    est: &'e InfluenceFunction,
    last: &FactorCheckpoint,
    strategy: Strategy,
    progress: &dyn Progress,
) -> Result<Cow<'e, Fit>> {
    let curvature = fitted_curvature(est);
    let identity = |train: &SplitFactors| FitIdentity::of(train, &last.name, strategy, curvature);
    let saved = match &est.hessian {
        None => None,
        Some(SavedCurvature::Kfac(saved)) => Some(saved),
        Some(other) => {
            let name = strategy.short_name();
            return Err(other.wrong_kind(&format!(
                "--factors with --solver {name} needs their fit: `infl fit --factors DIR \
                 --layers ... --solver {name}` (or drop --hessian)"
            )));
        }
    };
    match (saved, &est.shard) {
        (Some(saved), Some(rows)) => {
            let mut want = identity(&last.train)?;
            want.examples = rows.examples;
            want.crc32 = saved.identity.crc32;
            saved.check(&last.train.source, &want)?;
            Ok(Cow::Borrowed(&saved.fit))
        }
        (Some(saved), None) => {
            let want = identity(&*fitted_factors(est, &last.train)?)?;
            saved.check(&last.train.source, &want)?;
            Ok(Cow::Borrowed(&saved.fit))
        }
        (None, _) => {
            let train = fitted_factors(est, &last.train)?;
            Ok(Cow::Owned(Fit::new(&train, strategy, progress)?))
        }
    }
}

/// The K-FAC or EK-FAC fit of the run's last checkpoint with its identity, for `infl fit`;
/// the operator solvers' curvatures are not saved (refused).
pub(super) fn fit(est: &InfluenceFunction, run: &Run, progress: &dyn Progress) -> Result<SavedFit> {
    let Some(strategy) = strategy(est)? else {
        let details = format!(
            "`infl fit` on factor files saves K-FAC and EK-FAC fits (--solver kfac|ekfac); \
             --solver {} over factor files fits nothing to save: run it without --hessian",
            est.solver.short_name()
        );
        return Err(Error::config("solver", details));
    };
    let last = last(est, run)?;
    let train = fitted_factors(est, &last.train)?;
    let identity = FitIdentity::of(&train, &last.name, strategy, fitted_curvature(est))?;
    Ok(SavedFit {
        fit: Fit::new(&train, strategy, progress)?,
        identity,
        source: PathBuf::new(),
    })
}

/// Refuses a saved curvature with an operator solver (only K-FAC fits of factor files are
/// saved).
fn check_unsaved(est: &InfluenceFunction) -> Result<()> {
    match &est.hessian {
        None => Ok(()),
        Some(saved) => Err(saved.wrong_kind(&format!(
            "--factors with --solver {} takes no saved curvature (`infl fit` saves K-FAC and \
             EK-FAC fits of factor files: --solver kfac|ekfac): drop --hessian",
            est.solver.short_name()
        ))),
    }
}

/// The last checkpoint of a factor run.
fn last<'r>(est: &InfluenceFunction, run: &'r Run) -> Result<&'r FactorCheckpoint> {
    run.factors(est.label())?
        .last()
        .ok_or_else(|| Error::config("checkpoints", "at least one checkpoint is needed"))
}

/// The curvature operator of the training factors, in the convention's scale.
fn operator<'r>(
    est: &InfluenceFunction,
    last: &'r FactorCheckpoint,
) -> Result<Scaled<Box<dyn HessianOperator + 'r>>> {
    let train = &last.train;
    let op: Box<dyn HessianOperator + 'r> = match est.curvature.unwrap_or_default() {
        Curvature::Fisher => Box::new(FactorFisher::empirical(train)?),
        Curvature::TrueFisher => Box::new(FactorFisher::sampled(train)?),
        Curvature::GaussNewton => Box::new(network(last, infl_nn::Product::GaussNewton)?),
        Curvature::Hessian => Box::new(network(last, infl_nn::Product::Hessian)?),
    };
    let factor = match est.convention {
        Convention::Kronfluence => 1.0 / train.len() as f64,
        Convention::Captum => 1.0,
    };
    Ok(Scaled { op, factor })
}

/// The infl-nn MLP of `last`'s checkpoint (`NAME.safetensors` beside the factor files or in
/// their parent folder, as `infl demo --export-factors` lays a run out) on the training
/// examples (`fc1.a`, the labels).
fn network(last: &FactorCheckpoint, product: infl_nn::Product) -> Result<NetworkHessian> {
    let source = &last.train.source;
    let dir = source.parent().map(PathBuf::from).unwrap_or_default();
    let file_name = format!("{}.safetensors", last.name);
    let candidates = [dir.join(&file_name), dir.join("..").join(&file_name)];
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let details = format!(
            "the Gauss-Newton matrix and the Hessian need the infl-nn checkpoint of `{}`: \
             expected {} or {} (infl demo --export-factors writes run/NAME.safetensors beside \
             run/factors/); use --curvature fisher for any other model",
            last.name,
            candidates[0].display(),
            candidates[1].display()
        );
        return Err(Error::config("curvature", details));
    };
    let format = infl_io::TensorFile::open(path)?
        .metadata()
        .get("format")
        .cloned();
    if format.as_deref() != Some(infl_nn::export::MLP_FORMAT) {
        let details = format!(
            "expected an infl-nn MLP (metadata format {:?}), found {format:?}: the Hessian \
             products know only infl-nn's architecture (linear layers with ReLU between); use \
             --curvature fisher for any other model",
            infl_nn::export::MLP_FORMAT
        );
        return Err(Error::data(path, "__metadata__.format", details));
    }
    let (model, _) = infl_nn::load_checkpoint(path)?;
    let inputs = match FactorFile::open(source)?.layer("fc1")? {
        LayerFactors::Linear {
            a, positions: 1, ..
        } => a,
        _ => {
            let details = "expected the first layer's inputs `fc1.a` [N, inputs] (the network's \
                           inputs)";
            return Err(Error::data(source, "fc1.a", details));
        }
    };
    let labels = last.train.labels.clone().ok_or_else(|| {
        Error::data(
            source,
            "labels",
            "expected the training labels of the Hessian's loss",
        )
    })?;
    NetworkHessian::new(product, model, inputs, labels, layout(&last.train)?)
}

/// The chosen layers' gradients of `rows` of `split`, concatenated: f64 `[rows, P]`.
fn flat(split: &SplitFactors, blocks: &[Block], rows: std::ops::Range<usize>) -> Mat<f64> {
    let dim = blocks.iter().map(Block::len).sum();
    let mut out = Mat::zeros(rows.len(), dim);
    for (layer, b) in split.layers.iter().zip(blocks) {
        if let LayerFactors::Linear { a, g, .. } = &layer.factors {
            let x = gradients(a, g, b.positions, b.bias, rows.clone());
            out.as_mut()
                .submatrix_mut(0, b.offset, rows.len(), b.len())
                .copy_from(&x);
        }
    }
    out
}

/// `x` `[T, P]` split into the layers' `[T, K·D']` blocks.
fn split_blocks(x: &Mat<f64>, blocks: &[Block]) -> Vec<Mat<f64>> {
    (blocks.iter())
        .map(|b| {
            x.as_ref()
                .submatrix(0, b.offset, x.nrows(), b.len())
                .to_owned()
        })
        .collect()
}

/// `split`'s layers have the training layers' names and shapes.
fn check_layers(train: &[Block], split: &SplitFactors) -> Result<Vec<Block>> {
    let found = layout(split)?;
    if found != train {
        let want: Vec<String> = train.iter().map(describe).collect();
        let got: Vec<String> = found.iter().map(describe).collect();
        let details = format!("expected the training factors' layers {want:?}, found {got:?}");
        return Err(Error::data(&split.source, "(layers)", details));
    }
    Ok(found)
}

fn describe(b: &Block) -> String {
    format!("{} [{} x {}]", b.name, b.outputs, b.width())
}

/// `(H + λI)⁻¹` applied to the chosen layers' gradients of every example of `split`, in
/// chunks: f64 `[N, P]`.
fn solve(
    inverse: &Inverse<'_>,
    split: &SplitFactors,
    blocks: &[Block],
    progress: &dyn Progress,
) -> Result<Mat<f64>> {
    let mut x = flat(split, blocks, 0..split.len());
    inverse.solve_all(x.as_mut(), progress)?;
    Ok(x)
}

/// The engine terms of the preconditioned test factors against the training factors.
pub(super) fn prepare(
    est: &InfluenceFunction,
    run: &Run,
    progress: &dyn Progress,
) -> Result<Prepared> {
    let last = last(est, run)?;
    let label = format!("checkpoint {}", last.name);
    let terms = match (&last.test, strategy(est)?) {
        (None, _) => Vec::new(),
        (Some(test), Some(strategy)) => {
            let fit = kfac_fit(est, last, strategy, progress)?;
            let x = fit.precondition(test, est.damping())?;
            fit.terms(&last.train, &x, &label)?
        }
        (Some(test), None) => {
            check_unsaved(est)?;
            let blocks = layout(&last.train)?;
            check_layers(&blocks, test)?;
            let op = operator(est, last)?;
            let inverse = Inverse::new(&op, est.damping().value(&op)?, est.solver, progress)?;
            let x = solve(&inverse, test, &blocks, progress)?;
            terms::layer_terms(&last.train, &split_blocks(&x, &blocks), &label)?
        }
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
pub(super) fn self_influence(
    est: &InfluenceFunction,
    run: &Run,
    progress: &dyn Progress,
) -> Result<Attributed<Vec<f32>>> {
    let last = last(est, run)?;
    let values = match strategy(est)? {
        Some(strategy) => kfac_self_influence(est, last, strategy, progress)?,
        None => {
            check_unsaved(est)?;
            operator_self_influence(est, last, progress)?
        }
    };
    Ok(self_result(&last.name, last.train.info(), values))
}

fn kfac_self_influence(
    est: &InfluenceFunction,
    last: &FactorCheckpoint,
    strategy: Strategy,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    let fit = kfac_fit(est, last, strategy, progress)?;
    let blocks = layout(&last.train)?;
    let n = last.train.len();
    let mut values = Vec::with_capacity(n);
    progress.start(phase::PRECONDITION, n as u64);
    for start in (0..n).step_by(CHUNK) {
        let rows: Vec<usize> = (start..(start + CHUNK).min(n)).collect();
        let chunk = last.train.select(&rows);
        let pre = fit.precondition(&chunk, est.damping())?;
        let raw = split_blocks(&flat(&chunk, &blocks, 0..rows.len()), &blocks);
        let mut sums = vec![0.0f64; rows.len()];
        for (raw, x) in raw.iter().zip(&pre) {
            sums.iter_mut()
                .zip(row_dots(raw, x))
                .for_each(|(s, d)| *s += d);
        }
        push_self_values(&mut values, &sums, |i| chunk.ids[i], &last.train.source)?;
        progress.advance(rows.len() as u64);
    }
    progress.finish();
    Ok(values)
}

fn operator_self_influence(
    est: &InfluenceFunction,
    last: &FactorCheckpoint,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    let blocks = layout(&last.train)?;
    let op = operator(est, last)?;
    let inverse = Inverse::new(&op, est.damping().value(&op)?, est.solver, progress)?;
    let n = last.train.len();
    let mut values = Vec::with_capacity(n);
    progress.start(inverse.phase(), inverse.work(n));
    for start in (0..n).step_by(SOLVE_CHUNK) {
        let rows = start..(start + SOLVE_CHUNK).min(n);
        let raw = flat(&last.train, &blocks, rows.clone());
        let mut x = raw.clone();
        inverse.solve_rows(x.as_mut(), progress)?;
        let id = |i: usize| last.train.ids[start + i];
        push_self_values(&mut values, &row_dots(&x, &raw), id, &last.train.source)?;
    }
    progress.finish();
    Ok(values)
}

/// [`Estimator::memory`](super::Estimator::memory) on factor files: K-FAC's per-layer
/// factors (covariances and their eigenvectors, `D'² + K²` f64 each, and `Λ`), or the
/// operator solver's needs ([`solver_memory`]) with, for the network's curvatures, its
/// passes over the training examples (inputs and output gradients of the chosen layers in
/// f64, forward and backward: a lower bound when layers above them were left out).
pub(super) fn memory(est: &InfluenceFunction, run: &Run) -> Option<Vec<MemoryNeed>> {
    let last = last(est, run).ok()?;
    let blocks = layout(&last.train).ok()?;
    let p: usize = blocks.iter().map(Block::len).sum();
    let t = last.test.as_ref().map_or(0, SplitFactors::len);
    let f = |x: usize| x as f64 * 8.0;
    if strategy(est).ok()?.is_some() {
        let factors: usize = (blocks.iter())
            .map(|b| 2 * (b.width().pow(2) + b.outputs.pow(2)) + b.len())
            .sum();
        return Some(vec![
            MemoryNeed {
                what: "K-FAC's covariances, eigenvectors and eigenvalues (inputs² + outputs² f64 \
                       per layer)",
                flag: "--layers",
                bytes: f(factors),
            },
            MemoryNeed {
                what: "the preconditioned test gradients in f64 (test examples x p)",
                flag: "test examples",
                bytes: f(t * p),
            },
        ]);
    }
    let mut needs = solver_memory(est.solver, p, t);
    if let Some(Curvature::GaussNewton | Curvature::Hessian) = est.curvature {
        let width: usize = blocks.iter().map(|b| b.inputs + b.outputs).sum();
        needs.push(MemoryNeed {
            what: "the network's passes over the training examples (f64)",
            flag: "training examples",
            bytes: f(2 * last.train.len() * width),
        });
    }
    Some(needs)
}
