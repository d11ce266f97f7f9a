//! Curvature as an operator, and the solvers that apply its damped inverse: the
//! preconditioning step of influence functions (Koh & Liang 2017).
//!
//! A [`HessianOperator`] applies `H` to a block of vectors and reports its size; everything
//! else is provided on top of that (ripgrep's `Matcher` shape): [`assemble`](HessianOperator::assemble)
//! builds the dense matrix by applying it to identity blocks, for operators that have no
//! cheaper way. Solvers work in f64, as Kronfluence and Captum do for their
//! decompositions, and never see how `H` is computed: a Rust user's autodiff HVP plugs in
//! by implementing the two required methods.
//!
//! **Conventions** (MEASURED.md, "Peers' defaults"): `H` is the Hessian of the *summed*
//! training loss (Captum's `NaiveInfluenceFunction`; Kronfluence divides by the example
//! count, which scales every score by `N`), and `damping` `λ` is added as `H + λI`.
//!
//! [`FinalLayer`] is the exact Hessian of the final linear layer's loss with respect to its
//! weights (and bias, as a ones column): `Σ_n (ã_n ã_nᵀ) ⊗ C_n` with `C_n = diag p_n − p_n
//! p_nᵀ` for softmax cross-entropy and `2I` for squared error, never assembled unless asked.
//! Parameters are ordered as the weight matrix `[K, D]` row-major with the bias as column
//! `D` of each row (`[K, D + 1]`).
//!
//! **Progress.** Fitting and solving report their phases through the engine's
//! [`Progress`] (the CLI draws them as bars with an ETA): assembling `H`, factoring it,
//! LiSSA's scale, Arnoldi's Krylov steps, K-FAC's passes ([`crate::kfac`]) and the solves
//! themselves, each under one of the names in [`phase`].

mod layers;
mod saved;
mod solve;
pub(crate) mod terms;

use std::sync::Arc;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use infl_core::{Bias, Matrix};

pub use layers::{Block, FactorFisher, NetworkHessian, layout, with_sampled_gradients};
pub use saved::{FORMAT as HESSIAN_FORMAT, Identity, SavedCurvature, SavedHessian};
pub(crate) use saved::{Header, check_identity, crc_f32s, data_crc, file_metadata, row_major};
pub use solve::{Inverse, Lissa, SOLVE_CHUNK, Solver};

use crate::engine::Progress;
use crate::run::Loss;
use crate::{Error, Result};

/// The names of the phases that fits and solves report through [`Progress`], with their
/// units (what a test or a front end can match on).
pub mod phase {
    /// Assembling the dense `H` ([`HessianOperator::assemble`](super::HessianOperator::assemble)):
    /// columns of `H`, blocks of the final layer's outputs, or examples.
    pub const HESSIAN: &str = "Hessian";
    /// The exact solver's Cholesky factorisation (one unit).
    pub const CHOLESKY: &str = "Cholesky";
    /// LiSSA's default scale: power iterations.
    pub const LISSA_SCALE: &str = "LiSSA scale";
    /// Arnoldi's Krylov basis: vectors.
    pub const ARNOLDI: &str = "Arnoldi";
    /// K-FAC's covariances: factor rows, over every layer.
    pub const COVARIANCES: &str = "covariances";
    /// K-FAC's eigendecompositions: two per layer.
    pub const EIGENVECTORS: &str = "eigenvectors";
    /// EK-FAC's corrected eigenvalues: examples, over every layer.
    pub const EIGENVALUES: &str = "eigenvalues";
    /// K-FAC preconditioning of gradients (self-influence): examples.
    pub const PRECONDITION: &str = "precondition";
    /// Solving with the exact solver's factor: vectors.
    pub const SOLVE_EXACT: &str = "solve (exact)";
    /// Solving by CG: vector-iterations, up to the iteration cap per vector (a vector
    /// that converges earlier counts the rest at once).
    pub const SOLVE_CG: &str = "solve (cg)";
    /// Solving by LiSSA: vector-steps (depth × repeats per vector).
    pub const SOLVE_LISSA: &str = "solve (lissa)";
    /// Solving with Arnoldi's low-rank inverse: vectors.
    pub const SOLVE_ARNOLDI: &str = "solve (arnoldi)";
}

/// `H`, applied to blocks of vectors.
pub trait HessianOperator: Send + Sync {
    /// Number of parameters `n` (`H` is `[n, n]`).
    fn dim(&self) -> usize;

    /// `out = H v` for every row of `v` (`[m, n]` row-major; `out` the same shape).
    fn apply(&self, v: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()>;

    /// `trace(H)` (by [`assemble`](Self::assemble); override when there is a cheaper way).
    fn trace(&self) -> Result<f64> {
        let h = self.assemble(&())?;
        Ok((0..h.nrows()).map(|i| h[(i, i)]).sum())
    }

    /// The examples `H` sums over, when [`apply_examples`](Self::apply_examples) can apply
    /// it to a sample of them (LiSSA's minibatches); `None` (the default) when it cannot.
    fn examples(&self) -> Option<usize> {
        None
    }

    /// `out = H_S v` for every row of `v`: the curvature summed over the examples `rows`
    /// only (indices below [`examples`](Self::examples), repeats allowed). Refused by
    /// default.
    fn apply_examples(
        &self,
        _rows: &[usize],
        _v: MatRef<'_, f64>,
        _out: MatMut<'_, f64>,
    ) -> Result<()> {
        let details = "this curvature cannot be applied to a sample of examples (a saved or \
                       fitted one); run LiSSA on the full batch";
        Err(Error::config("lissa", details))
    }

    /// The dense `[n, n]` matrix, by applying `H` to blocks of the identity (override when
    /// there is a cheaper way), reported to `progress` as the phase [`phase::HESSIAN`].
    fn assemble(&self, progress: &dyn Progress) -> Result<Mat<f64>> {
        let n = self.dim();
        let mut h = Mat::zeros(n, n);
        let block = 256.min(n.max(1));
        progress.start(phase::HESSIAN, n as u64);
        for start in (0..n).step_by(block) {
            let m = block.min(n - start);
            let eye = Mat::from_fn(m, n, |i, j| if start + i == j { 1.0 } else { 0.0 });
            self.apply(eye.as_ref(), h.as_mut().subrows_mut(start, m))?;
            progress.advance(m as u64);
        }
        progress.finish();
        Ok(h)
    }
}

/// An operator behind a pointer is the operator (a `Box<dyn …>` chosen at run time, an
/// `Arc` shared with a cache).
macro_rules! delegate {
    ($($ptr:ident),*) => {$(
        impl<O: HessianOperator + ?Sized> HessianOperator for $ptr<O> {
            fn dim(&self) -> usize {
                (**self).dim()
            }
            fn apply(&self, v: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
                (**self).apply(v, out)
            }
            fn trace(&self) -> Result<f64> {
                (**self).trace()
            }
            fn assemble(&self, progress: &dyn Progress) -> Result<Mat<f64>> {
                (**self).assemble(progress)
            }
            fn examples(&self) -> Option<usize> {
                (**self).examples()
            }
            fn apply_examples(
                &self,
                rows: &[usize],
                v: MatRef<'_, f64>,
                out: MatMut<'_, f64>,
            ) -> Result<()> {
                (**self).apply_examples(rows, v, out)
            }
        }
    )*};
}

delegate!(Box, Arc);

/// `factor · H`: the summed Hessian as the mean one (`1 / N`) or as it is.
#[derive(Clone, Debug)]
pub struct Scaled<O> {
    /// The operator.
    pub op: O,
    /// The factor.
    pub factor: f64,
}

impl<O: HessianOperator> HessianOperator for Scaled<O> {
    fn dim(&self) -> usize {
        self.op.dim()
    }

    fn apply(&self, v: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        self.op.apply(v, out.as_mut())?;
        scale(out, self.factor);
        Ok(())
    }

    fn assemble(&self, progress: &dyn Progress) -> Result<Mat<f64>> {
        let mut h = self.op.assemble(progress)?;
        scale(h.as_mut(), self.factor);
        Ok(h)
    }

    fn trace(&self) -> Result<f64> {
        Ok(self.factor * self.op.trace()?)
    }

    fn examples(&self) -> Option<usize> {
        self.op.examples()
    }

    fn apply_examples(
        &self,
        rows: &[usize],
        v: MatRef<'_, f64>,
        mut out: MatMut<'_, f64>,
    ) -> Result<()> {
        self.op.apply_examples(rows, v, out.as_mut())?;
        scale(out, self.factor);
        Ok(())
    }
}

/// A block of vectors' `[K, D']` gradients at `offset` stacked as `[m·K, D']` (row `j·K +
/// k` is output `k` of vector `j`): the shape GEMMs over every vector at once want.
pub(crate) fn stacked(v: MatRef<'_, f64>, offset: usize, k: usize, w: usize) -> Mat<f64> {
    Mat::from_fn(v.nrows() * k, w, |r, c| {
        v[(r / k, offset + (r % k) * w + c)]
    })
}

/// [`stacked`]'s inverse: a `[m·K, D']` block written back into rows of `out` at `offset`.
pub(crate) fn unstack(sum: &Mat<f64>, offset: usize, k: usize, mut out: MatMut<'_, f64>) {
    let w = sum.ncols();
    for r in 0..sum.nrows() {
        for c in 0..w {
            out[(r / k, offset + (r % k) * w + c)] = sum[(r, c)];
        }
    }
}

/// `v` and `out` are blocks of vectors of `dim` (`[m, dim]`, the same `m`).
pub(crate) fn check_block(
    dim: usize,
    v: MatRef<'_, f64>,
    out: MatRef<'_, f64>,
    what: &str,
) -> Result<()> {
    if v.ncols() != dim || out.nrows() != v.nrows() || out.ncols() != dim {
        let details = format!(
            "a block of {} x {} into {} x {}; expected vectors of {dim}",
            v.nrows(),
            v.ncols(),
            out.nrows(),
            out.ncols()
        );
        return Err(Error::config(what, details));
    }
    Ok(())
}

/// `m *= factor`, in place.
fn scale(mut m: MatMut<'_, f64>, factor: f64) {
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            m[(i, j)] *= factor;
        }
    }
}

/// Which curvature the operator solvers (exact, CG, LiSSA, Arnoldi) invert on factor files
/// (`--curvature`; on a final layer's features the exact Hessian is the only one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Curvature {
    /// The empirical Fisher `Σ_i ∇_i∇_iᵀ` of the files' gradients, cross-layer blocks
    /// included ([`FactorFisher::empirical`]; any model; the default; K-FAC and EK-FAC
    /// approximate it).
    #[default]
    Fisher,
    /// The true Fisher, from the files' `L.g_sampled` ([`FactorFisher::sampled`]); with
    /// K-FAC and EK-FAC, their fit on those gradients (Kronfluence's default,
    /// `use_empirical_fisher=False`).
    TrueFisher,
    /// The Gauss–Newton matrix of the infl-nn MLP whose checkpoint lies beside the
    /// factor files ([`NetworkHessian`] with [`infl_nn::Product::GaussNewton`]).
    GaussNewton,
    /// The exact Hessian of that MLP over the chosen layers, by R-operator products.
    Hessian,
}

impl Curvature {
    /// Every curvature.
    pub const ALL: [Self; 4] = [
        Self::Fisher,
        Self::TrueFisher,
        Self::GaussNewton,
        Self::Hessian,
    ];

    /// The curvature named `name` (a [`short_name`](Curvature::short_name)).
    pub fn named(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.short_name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|c| c.short_name()).collect();
                Error::config(
                    "curvature",
                    format!("expected one of {}, found {name:?}", names.join(", ")),
                )
            })
    }

    /// `fisher`, `true-fisher`, `gauss-newton` or `hessian`.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Fisher => "fisher",
            Self::TrueFisher => "true-fisher",
            Self::GaussNewton => "gauss-newton",
            Self::Hessian => "hessian",
        }
    }
}

/// The damping `λ` of `H + λI`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Damping {
    /// A fixed value.
    Value(f64),
    /// Kronfluence's `damping_factor=None`: 0.1 × the mean eigenvalue of `H`
    /// (`0.1 · trace(H) / n`).
    Heuristic,
}

impl Damping {
    /// `λ` for the operator `op`.
    pub fn value(self, op: &dyn HessianOperator) -> Result<f64> {
        match self {
            Self::Value(v) => Ok(v),
            Self::Heuristic => Ok(0.1 * op.trace()? / op.dim().max(1) as f64),
        }
    }

    /// `heuristic` or the value, for metadata.
    pub fn describe(self) -> String {
        match self {
            Self::Value(v) => format!("{v:e}"),
            Self::Heuristic => "heuristic".into(),
        }
    }
}

/// The parallelism of faer calls: the current rayon pool's threads.
pub(crate) fn par() -> Par {
    match rayon::current_num_threads() {
        0 | 1 => Par::Seq,
        t => Par::rayon(t),
    }
}

/// The exact Hessian of a final linear layer's summed loss (see the module docs).
#[derive(Clone, Debug)]
pub struct FinalLayer {
    /// Inputs with the ones column when the bias is included, `[N, D']`.
    inputs: Mat<f64>,
    /// Per-example softmax probabilities `[N, K]` (cross-entropy), unused for squared error.
    probs: Mat<f64>,
    loss: Loss,
    outputs: usize,
}

impl FinalLayer {
    /// From the layer inputs `[N, D]`, its logits `[N, K]` (row-major) and the loss.
    pub fn new(
        features: &Matrix,
        logits: &[f32],
        outputs: usize,
        loss: Loss,
        bias: Bias,
    ) -> Result<Self> {
        let (n, d) = (features.rows(), features.cols());
        if outputs == 0 || logits.len() != n * outputs {
            let details = format!(
                "{} logits for {n} examples of {outputs} outputs",
                logits.len()
            );
            return Err(Error::config("hessian", details));
        }
        let width = d + usize::from(bias == Bias::Included);
        let x = features.view();
        let inputs = Mat::from_fn(
            n,
            width,
            |i, j| if j < d { f64::from(x.row(i)[j]) } else { 1.0 },
        );
        let probs = match loss {
            Loss::CrossEntropy => softmax(logits, n, outputs),
            Loss::MeanSquaredError => Mat::zeros(0, 0),
        };
        Ok(Self {
            inputs,
            probs,
            loss,
            outputs,
        })
    }

    /// Columns `D'` of the per-output parameter block (`D`, or `D + 1` with the bias).
    pub fn width(&self) -> usize {
        self.inputs.ncols()
    }

    /// The layer on the examples `rows` only.
    fn select(&self, rows: &[usize]) -> Result<Self> {
        check_rows(rows, self.inputs.nrows())?;
        let pick = |m: &Mat<f64>| Mat::from_fn(rows.len(), m.ncols(), |i, j| m[(rows[i], j)]);
        let probs = match self.loss {
            Loss::CrossEntropy => pick(&self.probs),
            Loss::MeanSquaredError => Mat::zeros(0, 0),
        };
        Ok(Self {
            inputs: pick(&self.inputs),
            probs,
            loss: self.loss,
            outputs: self.outputs,
        })
    }

    /// `C_n u` for every example `n` and every block `u` (`U` `[N, m·K]`, in place).
    fn output_curvature(&self, mut u: MatMut<'_, f64>) {
        let k = self.outputs;
        match self.loss {
            Loss::MeanSquaredError => {
                for j in 0..u.ncols() {
                    for i in 0..u.nrows() {
                        u[(i, j)] *= 2.0;
                    }
                }
            }
            Loss::CrossEntropy => {
                for n in 0..u.nrows() {
                    for b in 0..u.ncols() / k {
                        let dot: f64 = (0..k).map(|j| self.probs[(n, j)] * u[(n, b * k + j)]).sum();
                        for j in 0..k {
                            let p = self.probs[(n, j)];
                            u[(n, b * k + j)] = p * (u[(n, b * k + j)] - dot);
                        }
                    }
                }
            }
        }
    }
}

/// Every row of a sample is below `n`.
pub(crate) fn check_rows(rows: &[usize], n: usize) -> Result<()> {
    match rows.iter().find(|&&r| r >= n) {
        Some(bad) => Err(Error::config("rows", format!("example {bad} of {n}"))),
        None => Ok(()),
    }
}

/// Row-wise max-shifted softmax in f64.
fn softmax(logits: &[f32], n: usize, k: usize) -> Mat<f64> {
    let mut p = Mat::zeros(n, k);
    for (i, z) in logits.chunks_exact(k).enumerate() {
        let max = z.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let e: Vec<f64> = z.iter().map(|&x| f64::from(x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (j, x) in e.iter().enumerate() {
            p[(i, j)] = x / sum;
        }
    }
    p
}

impl HessianOperator for FinalLayer {
    fn dim(&self) -> usize {
        self.outputs * self.width()
    }

    /// Per vector `V` `[K, D']`: `U = Ã Vᵀ`, `W_n = C_n U_n`, `H V = Wᵀ Ã` — two GEMMs
    /// over all vectors of the block at once.
    fn apply(&self, v: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        let (m, k, w) = (v.nrows(), self.outputs, self.width());
        check_block(self.dim(), v, out.as_ref(), "hessian")?;
        let stacked = stacked(v, 0, k, w);
        let mut u = Mat::zeros(self.inputs.nrows(), m * k);
        matmul(
            u.as_mut(),
            Accum::Replace,
            self.inputs.as_ref(),
            stacked.transpose(),
            1.0,
            par(),
        );
        self.output_curvature(u.as_mut());
        let mut hv = Mat::zeros(m * k, w);
        matmul(
            hv.as_mut(),
            Accum::Replace,
            u.transpose(),
            self.inputs.as_ref(),
            1.0,
            par(),
        );
        unstack(&hv, 0, k, out);
        Ok(())
    }

    fn examples(&self) -> Option<usize> {
        Some(self.inputs.nrows())
    }

    fn apply_examples(
        &self,
        rows: &[usize],
        v: MatRef<'_, f64>,
        out: MatMut<'_, f64>,
    ) -> Result<()> {
        self.select(rows)?.apply(v, out)
    }

    /// `Σ_n ‖ã_n‖² Σ_k C_n[k, k]`.
    fn trace(&self) -> Result<f64> {
        let (n, k, w) = (self.inputs.nrows(), self.outputs, self.width());
        Ok((0..n)
            .map(|i| {
                let norm: f64 = (0..w).map(|j| self.inputs[(i, j)].powi(2)).sum();
                let diag: f64 = match self.loss {
                    Loss::MeanSquaredError => 2.0 * k as f64,
                    Loss::CrossEntropy => (0..k)
                        .map(|r| self.probs[(i, r)] * (1.0 - self.probs[(i, r)]))
                        .sum(),
                };
                norm * diag
            })
            .sum())
    }

    /// Block `(k, l)` is `Ãᵀ diag(C_n[k, l]) Ã`: one GEMM per pair `k ≤ l` (the phase's
    /// units).
    fn assemble(&self, progress: &dyn Progress) -> Result<Mat<f64>> {
        let (k, w, n) = (self.outputs, self.width(), self.inputs.nrows());
        let mut h = Mat::zeros(k * w, k * w);
        let mut scaled = Mat::zeros(n, w);
        progress.start(phase::HESSIAN, (k * (k + 1) / 2) as u64);
        for a in 0..k {
            for b in a..k {
                let c = |i: usize| match self.loss {
                    Loss::MeanSquaredError => {
                        if a == b {
                            2.0
                        } else {
                            0.0
                        }
                    }
                    Loss::CrossEntropy => {
                        let (pa, pb) = (self.probs[(i, a)], self.probs[(i, b)]);
                        if a == b { pa - pa * pb } else { -pa * pb }
                    }
                };
                for i in 0..n {
                    let ci = c(i);
                    for j in 0..w {
                        scaled[(i, j)] = ci * self.inputs[(i, j)];
                    }
                }
                let block = h.as_mut().submatrix_mut(a * w, b * w, w, w);
                matmul(
                    block,
                    Accum::Replace,
                    self.inputs.transpose(),
                    scaled.as_ref(),
                    1.0,
                    par(),
                );
                if a != b {
                    let upper = h.as_ref().submatrix(a * w, b * w, w, w).to_owned();
                    h.as_mut()
                        .submatrix_mut(b * w, a * w, w, w)
                        .copy_from(upper.transpose());
                }
                progress.advance(1);
            }
        }
        progress.finish();
        Ok(h)
    }
}
