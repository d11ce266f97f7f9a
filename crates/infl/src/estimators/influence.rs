//! Influence functions (Koh & Liang 2017) on the final linear layer: `score(q, i) =
//! ∇ℓ_qᵀ (H + λI)⁻¹ ∇ℓ_i`, positive = helpful (as Captum, Kronfluence and dattri report
//! it: no Koh–Liang minus sign), with `H` the exact Hessian of the summed training loss
//! with respect to the layer's weights (and bias, when included) at the **last checkpoint**
//! (influence functions explain one model; earlier checkpoints are not read).
//!
//! **One scoring path.** The solver preconditions the test gradients once (`x_q = (H +
//! λI)⁻¹ ∇ℓ_q`, `[K, D']` per query); the score against a training example is then
//! `Σ_r g_ir (X_q[r]·a_i) (+ X_q[r, D] g_ir for the bias)`, which is a sum of `K` rank-one
//! terms in the engine's own form: term `r` has the training factors unchanged (`g`, `a`,
//! memory-mapped) and test factors `e_r` and `X_q[r, :D]`; the bias adds one term with
//! training factors `(g, 1)` and test factors `(X_q[:, D], 1)`. So scores and streamed
//! top-k run through the [`Engine`](crate::Engine) on any backend and no training gradient
//! is materialised. Self-influence (`∇ℓ_iᵀ (H + λI)⁻¹ ∇ℓ_i`) needs every training
//! gradient preconditioned; it is solved in chunks on the host.

use std::sync::Arc;

use faer::Mat;
use infl_core::{Backend, Bias, Matrix};

use super::{
    Attributed, Audience, Estimator, Indexing, Input, MemoryNeed, MemoryPlan, Options, Registration,
};
use crate::curvature::{
    Curvature, Damping, FinalLayer, HessianOperator, Identity, Inverse, SOLVE_CHUNK,
    SavedCurvature, SavedHessian, Scaled, Solver, terms,
};
use crate::engine::{FactorTerm, Progress, TermSet};
use crate::head::{LossHead, logits};
use crate::run::{CheckpointData, Loss, Prepared, Reduction, Run, SplitInfo, check_test_sets};
use crate::shard::ShardRows;
use crate::{Error, Result};

/// Training examples whose gradients self-influence solves at a time.
const SELF_CHUNK: usize = 1024;

pub(super) const REGISTRATION: Registration = Registration {
    name: "influence",
    label: "Influence functions",
    about: "influence functions on the final layer (Koh & Liang 2017; exact Hessian of the \
            last checkpoint, --solver exact|cg|lissa|arnoldi, --damping)",
    build: |o| Box::new(InfluenceFunction::from(o)),
    input: Input::Either,
    audience: Audience::Users,
    indexing: Indexing::Unsupported,
};

/// Influence-function settings.
#[derive(Clone, Debug)]
pub struct InfluenceFunction {
    /// Loss head.
    pub loss: Loss,
    /// Loss reduction in training (the Hessian and gradients are of the summed loss
    /// either way, as Captum's).
    pub reduction: Reduction,
    /// Whether the bias is a parameter (a ones column of the inputs).
    pub bias: Bias,
    /// How `(H + λI)⁻¹` is applied.
    pub solver: Solver,
    /// Whose scaling: Kronfluence's mean Hessian (the default) or Captum's summed one.
    pub convention: Convention,
    /// `λ`, added to the convention's Hessian; `None`: the convention's default
    /// ([`Convention::default_damping`]).
    pub damping: Option<Damping>,
    /// On factor files, the curvature that exact, CG, LiSSA and Arnoldi invert (`None`:
    /// [`Curvature::Fisher`]; K-FAC and EK-FAC fit their own; refused on features, whose
    /// final layer has its exact Hessian).
    pub curvature: Option<Curvature>,
    /// A curvature fitted before (`infl fit`: a final layer's Hessian, or a K-FAC/EK-FAC
    /// fit of factor files), used instead of fitting one when its identity is the run's
    /// last checkpoint's (refused otherwise, and when it is of the other kind).
    pub hessian: Option<SavedCurvature>,
    /// The shard whose training rows the run holds (set by
    /// [`for_shard`](Estimator::for_shard), with a saved curvature): its fit is checked
    /// against the whole training set's size, and the mean Hessian divides by that size.
    pub shard: Option<ShardRows>,
}

/// Whose sign and scale the scores follow (both report positive = helpful).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Convention {
    /// Kronfluence: `∇ℓ_qᵀ (H/N + λI)⁻¹ ∇ℓ_i` with `H/N` the *mean* Hessian (scores ~`N`×
    /// Captum's).
    #[default]
    Kronfluence,
    /// Captum (`NaiveInfluenceFunction`, `ArnoldiInfluenceFunction`): the summed Hessian,
    /// `∇ℓ_qᵀ (H + λI)⁻¹ ∇ℓ_i`.
    Captum,
}

impl Convention {
    /// Both conventions.
    pub const ALL: [Self; 2] = [Self::Kronfluence, Self::Captum];

    /// The convention named `name` (a [`short_name`](Convention::short_name)).
    pub fn named(name: &str) -> crate::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.short_name() == name)
            .ok_or_else(|| {
                crate::Error::config(
                    "convention",
                    format!("expected \"kronfluence\" or \"captum\", found {name:?}"),
                )
            })
    }

    /// The default damping: Kronfluence's `damping_factor` (1e-8) or Captum's
    /// `hessian_reg` (1e-6).
    pub fn default_damping(self) -> Damping {
        match self {
            Self::Kronfluence => Damping::Value(1e-8),
            Self::Captum => Damping::Value(1e-6),
        }
    }

    /// `kronfluence` or `captum`.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Kronfluence => "kronfluence",
            Self::Captum => "captum",
        }
    }
}

impl Default for InfluenceFunction {
    fn default() -> Self {
        Self::from(&Options::default())
    }
}

impl From<&Options> for InfluenceFunction {
    fn from(o: &Options) -> Self {
        Self {
            loss: o.loss,
            reduction: o.reduction,
            bias: o.bias,
            solver: o.solver,
            convention: o.convention,
            damping: o.damping,
            curvature: o.curvature,
            hessian: None,
            shard: None,
        }
    }
}

/// The fitted curvature of a run's last checkpoint with its heads.
struct Fit<'r> {
    checkpoint: &'r CheckpointData,
    /// `H` in the convention's scale (summed, or over `N`).
    /// (The training data's operator, or a saved fit.)
    hessian: Scaled<Box<dyn HessianOperator>>,
    /// Training output gradients `J` `[N, K]` and predictions.
    train: crate::head::Head,
}

impl InfluenceFunction {
    fn head(&self) -> LossHead {
        LossHead {
            loss: self.loss,
            reduction: self.reduction,
        }
    }

    /// The last checkpoint's Hessian and training heads.
    fn fit<'r>(&self, backend: &dyn Backend, run: &'r Run) -> Result<Fit<'r>> {
        let run = run.features(self.label())?;
        if let Some(c) = self.curvature {
            let details = format!(
                "{} is chosen among factor files' curvatures (--factors); the final layer's \
                 features give its exact Hessian",
                c.short_name()
            );
            return Err(Error::config("curvature", details));
        }
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Err(Error::config(
                "checkpoints",
                "at least one checkpoint is needed",
            ));
        };
        check_test_sets(run)?;
        // Every checkpoint is checked as every estimator checks a run (shapes, the same
        // examples, labels, logits that fit in f32), in order, though only the last is used.
        for d in &run[..run.len() - 1] {
            self.head()
                .compute(backend, &d.checkpoint, &d.train, &first.train)?;
            if let (Some(t), Some(f)) = (&d.test, &first.test) {
                self.head().compute(backend, &d.checkpoint, t, f)?;
            }
        }
        let train = self
            .head()
            .compute(backend, &last.checkpoint, &last.train, &first.train)?;
        let hessian = match &self.hessian {
            Some(SavedCurvature::Hessian(saved)) => {
                let mut identity = Identity::of(last, self.loss, self.bias);
                if let Some(rows) = &self.shard {
                    // A shard cannot hash rows it does not read: its fit is checked on
                    // everything else, and parts record the fit's CRC for `infl merge`.
                    identity.examples = rows.examples;
                    identity.crc32 = saved.identity.crc32;
                }
                saved.check(&last.train.source, &identity)?;
                Box::new(Arc::clone(saved)) as Box<dyn HessianOperator>
            }
            Some(other) => {
                return Err(other.wrong_kind(
                    "--run needs the final layer's Hessian: `infl fit --run DIR --layer L` (or \
                     drop --hessian)",
                ));
            }
            None => Box::new(self.final_layer(backend, last)?),
        };
        let examples = self.shard.as_ref().map_or(last.train.len(), |r| r.examples);
        let factor = match self.convention {
            Convention::Kronfluence => 1.0 / examples as f64,
            Convention::Captum => 1.0,
        };
        Ok(Fit {
            checkpoint: last,
            hessian: Scaled {
                op: hessian,
                factor,
            },
            train,
        })
    }

    /// The damping, or the convention's default.
    pub fn damping(&self) -> Damping {
        self.damping.unwrap_or(self.convention.default_damping())
    }

    /// `(H_c + λI)⁻¹` with `H_c` the fit's Hessian in the convention's scale.
    fn inverse<'f>(&self, fit: &'f Fit<'_>, progress: &dyn Progress) -> Result<Inverse<'f>> {
        let damping = self.damping().value(&fit.hessian)?;
        Inverse::new(&fit.hessian, damping, self.solver, progress)
    }

    /// The exact Hessian operator of a checkpoint's final layer.
    fn final_layer(&self, backend: &dyn Backend, d: &CheckpointData) -> Result<FinalLayer> {
        let z = logits(backend, &d.checkpoint, &d.train)?;
        let k = d.checkpoint.weight.rows();
        FinalLayer::new(&d.train.features, &z, k, self.loss, self.bias)
    }

    /// [`Estimator::memory`] on a final layer's features.
    fn final_layer_memory(&self, run: &Run) -> Option<Vec<MemoryNeed>> {
        let data = run.features(self.label()).ok()?;
        let last = data.last()?;
        let (k, d, n) = (
            last.checkpoint.weight.rows() as f64,
            last.checkpoint.weight.cols() as f64 + 1.0,
            last.train.len() as f64,
        );
        let t = last.test.as_ref().map_or(0, |t| t.len());
        let mut needs = vec![MemoryNeed {
            what: "the training inputs in f64",
            flag: "training examples",
            bytes: n * d * 8.0,
        }];
        if let Solver::Cg { .. } | Solver::Lissa { .. } = self.solver {
            needs.push(MemoryNeed {
                what: "the Hessian's product with a block of vectors (examples x block x outputs)",
                flag: "training examples",
                bytes: n * SOLVE_CHUNK as f64 * k * 8.0,
            });
        }
        needs.extend(solver_memory(self.solver, (k * d) as usize, t));
        Some(needs)
    }

    /// Fits the curvature of the run's last checkpoint for `infl fit`, undamped, reporting
    /// to `progress`: on features the final layer's Hessian, assembled (after checking the
    /// whole run as scoring would); on factor files the K-FAC or EK-FAC fit of the chosen
    /// layers (the other solvers over factor files are not saved: refused).
    pub fn fit_curvature(
        &self,
        backend: &dyn Backend,
        run: &Run,
        progress: &dyn Progress,
    ) -> Result<SavedCurvature> {
        let plain = Self {
            hessian: None,
            ..self.clone()
        };
        if let Run::Factors(_) = run {
            let fit = super::influence_layers::fit(&plain, run, progress)?;
            return Ok(SavedCurvature::Kfac(Arc::new(fit)));
        }
        let fit = plain.fit(backend, run)?;
        Ok(SavedCurvature::Hessian(Arc::new(SavedHessian {
            hessian: fit.hessian.op.assemble(progress)?, // summed: the convention applies on use
            identity: Identity::of(fit.checkpoint, self.loss, self.bias),
            source: Default::default(),
        })))
    }

    /// These settings with the curvature saved in `path` by `infl fit` (either format;
    /// checked against the run when used).
    pub fn with_saved_curvature(self, path: impl AsRef<std::path::Path>) -> Result<Self> {
        Ok(Self {
            hessian: Some(SavedCurvature::open(path)?),
            ..self
        })
    }

    /// Flattened gradients `J_n ⊗ ã_n` of `rows` as f64 `[rows, K·D']`.
    fn gradients(&self, g: &Matrix, a: &Matrix, rows: std::ops::Range<usize>) -> Mat<f64> {
        terms::gradients(a, g, 1, self.bias, rows)
    }
}

impl Estimator for InfluenceFunction {
    fn registration(&self) -> &'static Registration {
        &REGISTRATION
    }

    fn for_shard(&self, rows: &ShardRows) -> Result<Option<Box<dyn Estimator>>> {
        if self.hessian.is_none() {
            let details = format!(
                "{}: influence functions fit their curvature on the whole training set, which \
                 a shard does not hold: fit it once with `infl fit` (the same --run/--layer or \
                 --factors/--layers, --solver and --curvature) and give every shard \
                 --hessian FILE (saved: the final layer's Hessian, and K-FAC/EK-FAC on factor \
                 files; the other solvers over factor files run unsharded)",
                rows.shard
            );
            return Err(Error::config("shard", details));
        }
        let shard = Some(rows.clone());
        Ok(Some(Box::new(Self {
            shard,
            ..self.clone()
        })))
    }

    fn settings(&self) -> Vec<(String, String)> {
        let mut s = vec![
            ("loss".into(), self.loss.short_name().into()),
            ("reduction".into(), self.reduction.short_name().into()),
            (
                "include_bias".into(),
                (self.bias == Bias::Included).to_string(),
            ),
            ("solver".into(), self.solver.short_name().into()),
            ("convention".into(), self.convention.short_name().into()),
            ("damping".into(), self.damping().describe()),
        ];
        if let Some(c) = self.curvature {
            s.push(("curvature".into(), c.short_name().into()));
        }
        if let Some(saved) = &self.hessian {
            let crc = format!("{:08x}", saved.crc32());
            s.push(("hessian_crc32".into(), crc));
        }
        match self.solver {
            Solver::Exact | Solver::Kfac | Solver::Ekfac => {}
            Solver::Cg {
                tolerance,
                max_iterations,
            } => {
                s.push(("cg_tolerance".into(), format!("{tolerance:e}")));
                s.push(("cg_max_iterations".into(), max_iterations.to_string()));
            }
            Solver::Lissa {
                depth,
                scale,
                batch,
                repeats,
                seed,
            } => {
                s.push(("lissa_depth".into(), depth.to_string()));
                let scale = scale.map_or("auto".into(), |x| format!("{x:e}"));
                s.push(("lissa_scale".into(), scale));
                if let Some(batch) = batch {
                    s.push(("lissa_batch".into(), batch.to_string()));
                    s.push(("lissa_repeats".into(), repeats.to_string()));
                    s.push(("seed".into(), seed.to_string()));
                }
            }
            Solver::Arnoldi {
                dimension,
                eigenpairs,
                seed,
            } => {
                s.push(("arnoldi_dim".into(), dimension.to_string()));
                s.push(("arnoldi_eigenpairs".into(), eigenpairs.to_string()));
                s.push(("seed".into(), seed.to_string()));
            }
        }
        s
    }

    /// What the fit and the solves hold (see `solver_memory`): on features the f64 copy
    /// of the training inputs and the operator's products of a block of vectors; on factor
    /// files K-FAC's factors or the network's passes (`influence_layers::memory`).
    fn memory(&self, run: &Run) -> Option<MemoryPlan> {
        let needs = match run {
            Run::Factors(_) => super::influence_layers::memory(self, run)?,
            Run::Features(_) => self.final_layer_memory(run)?,
        };
        Some(MemoryPlan {
            job: "the influence-function fit",
            needs,
            instead: match self.solver {
                Solver::Exact => "use --solver cg (no assembled Hessian) or smaller layers",
                Solver::Arnoldi { .. } => "use a smaller --arnoldi-dim or smaller layers",
                Solver::Kfac | Solver::Ekfac => "use fewer or smaller --layers",
                Solver::Cg { .. } | Solver::Lissa { .. } => {
                    "use fewer training or test examples, or smaller layers"
                }
            },
        })
    }
    /// `K` (+1 with the bias) terms of preconditioned test factors (see the module docs).
    fn prepare(
        &self,
        backend: &dyn Backend,
        run: &Run,
        progress: &dyn Progress,
    ) -> Result<Prepared> {
        if let Run::Factors(_) = run {
            return super::influence_layers::prepare(self, run, progress);
        }
        let fit = self.fit(backend, run)?;
        let first = &run.features(self.label())?[0];
        let d = fit.checkpoint;
        let test = match (&d.test, &first.test) {
            (Some(t), Some(f)) => {
                let head = self.head().compute(backend, &d.checkpoint, t, f)?;
                let mut x = self.gradients(&head.gradients, &t.features, 0..t.len());
                let inverse = self.inverse(&fit, progress)?;
                inverse.solve_all(x.as_mut(), progress)?;
                Some((x, head.predicted))
            }
            _ => None,
        };
        let terms = self.terms(&fit, test.as_ref().map(|(x, _)| x))?;
        Ok(Prepared {
            set: TermSet { terms },
            learning_rates: vec![1.0],
            checkpoints: vec![d.checkpoint.name.clone()],
            train: SplitInfo::of(&first.train, fit.train.predicted.clone()),
            test: (first.test.as_ref())
                .zip(test)
                .map(|(t, (_, predicted))| SplitInfo::of(t, predicted)),
        })
    }

    /// `∇ℓ_iᵀ (H + λI)⁻¹ ∇ℓ_i` per training example, in chunks of `SELF_CHUNK` rows.
    fn self_influence_with_progress(
        &self,
        backend: &dyn Backend,
        run: &Run,
        progress: &dyn Progress,
    ) -> Result<Attributed<Vec<f32>>> {
        if let Run::Factors(_) = run {
            return super::influence_layers::self_influence(self, run, progress);
        }
        let fit = self.fit(backend, run)?;
        let inverse = self.inverse(&fit, progress)?;
        let (g, a) = (&fit.train.gradients, &fit.checkpoint.train.features);
        let n = a.rows();
        let mut values = Vec::with_capacity(n);
        progress.start(inverse.phase(), inverse.work(n));
        for start in (0..n).step_by(SELF_CHUNK) {
            let rows = start..(start + SELF_CHUNK).min(n);
            let grads = self.gradients(g, a, rows.clone());
            let mut x = grads.clone();
            inverse.solve_rows(x.as_mut(), progress)?;
            let train = &fit.checkpoint.train;
            let id = |i: usize| train.id(rows.start + i);
            push_self_values(&mut values, &row_dots(&x, &grads), id, &train.source)?;
        }
        progress.finish();
        let first = &run.features(self.label())?[0];
        let info = SplitInfo::of(&first.train, fit.train.predicted.clone());
        Ok(self_result(&fit.checkpoint.checkpoint.name, info, values))
    }
}

/// What an operator solver over `p` parameters holds beyond its operator, for `t` test
/// examples: the exact solver's assembled `H` three times at the peak (the matrix, its
/// damped copy, the factor), Arnoldi's Krylov basis and eigenvectors, CG's and LiSSA's
/// blocks of vectors, and the test gradients in f64 (none for K-FAC, whose factors the
/// caller counts).
pub(super) fn solver_memory(solver: Solver, p: usize, t: usize) -> Vec<MemoryNeed> {
    let (p, f) = (p as f64, |x: f64| x * 8.0);
    let chunk = SOLVE_CHUNK as f64;
    let mut needs = Vec::new();
    match solver {
        Solver::Exact => needs.push(MemoryNeed {
            what: "the assembled Hessian (p x p f64), its damped copy and factor",
            flag: "--solver (cg, lissa, arnoldi never assemble it)",
            bytes: f(3.0 * p * p),
        }),
        Solver::Arnoldi {
            dimension,
            eigenpairs,
            ..
        } => needs.push(MemoryNeed {
            what: "the Krylov basis (dimension x p f64) and the eigenvectors kept",
            flag: "--arnoldi-dim",
            bytes: f((dimension as f64).min(p) * (p + dimension as f64) + eigenpairs as f64 * p),
        }),
        Solver::Cg { .. } => needs.push(MemoryNeed {
            what: "CG's vectors (6 blocks of 64 x p f64)",
            flag: "parameters",
            bytes: f(6.0 * chunk * p),
        }),
        Solver::Lissa { .. } => needs.push(MemoryNeed {
            what: "LiSSA's vectors (4 blocks of 64 x p f64)",
            flag: "parameters",
            bytes: f(4.0 * chunk * p),
        }),
        Solver::Kfac | Solver::Ekfac => {}
    }
    needs.push(MemoryNeed {
        what: "the test gradients in f64 (test examples x p)",
        flag: "test examples",
        bytes: f(t as f64 * p),
    });
    needs
}

/// `x_i · y_i` per row.
pub(super) fn row_dots(x: &Mat<f64>, y: &Mat<f64>) -> Vec<f64> {
    (0..x.nrows())
        .map(|i| (0..x.ncols()).map(|c| x[(i, c)] * y[(i, c)]).sum())
        .collect()
}

/// Appends self-influence values as f32, refusing one f32 cannot hold (naming the
/// example by `id(row of sums)` and its file).
pub(super) fn push_self_values(
    values: &mut Vec<f32>,
    sums: &[f64],
    id: impl Fn(usize) -> i64,
    source: &std::path::Path,
) -> Result<()> {
    for (i, &v) in sums.iter().enumerate() {
        if !(v as f32).is_finite() {
            let details = format!(
                "training example {} ({}): {v:e} does not fit in f32; raise the damping",
                id(i),
                source.display()
            );
            return Err(Error::config("self-influence", details));
        }
        values.push(v as f32);
    }
    Ok(())
}

/// A self-influence result of one checkpoint (no terms, no test set).
pub(super) fn self_result(
    checkpoint: &str,
    train: SplitInfo,
    values: Vec<f32>,
) -> Attributed<Vec<f32>> {
    Attributed {
        prepared: Prepared {
            set: TermSet::default(),
            learning_rates: vec![1.0],
            checkpoints: vec![checkpoint.to_string()],
            train,
            test: None,
        },
        values,
    }
}

impl InfluenceFunction {
    /// The engine terms: training factors as they are, test factors preconditioned.
    fn terms(&self, fit: &Fit<'_>, x: Option<&Mat<f64>>) -> Result<Vec<FactorTerm>> {
        let (g, a) = (&fit.train.gradients, &fit.checkpoint.train.features);
        let label = format!("checkpoint {}", fit.checkpoint.checkpoint.name);
        Ok(terms::rank_one_terms(&label, a, g, self.bias, x))
    }
}
