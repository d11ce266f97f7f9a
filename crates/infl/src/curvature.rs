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

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use infl_core::{Bias, Matrix};

use crate::run::Loss;
use crate::{Error, Result};

/// `H`, applied to blocks of vectors.
pub trait HessianOperator: Send + Sync {
    /// Number of parameters `n` (`H` is `[n, n]`).
    fn dim(&self) -> usize;

    /// `out = H v` for every row of `v` (`[m, n]` row-major; `out` the same shape).
    fn apply(&self, v: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()>;

    /// The dense `[n, n]` matrix, by applying `H` to blocks of the identity (override when
    /// there is a cheaper way).
    fn assemble(&self) -> Result<Mat<f64>> {
        let n = self.dim();
        let mut h = Mat::zeros(n, n);
        let block = 256.min(n.max(1));
        for start in (0..n).step_by(block) {
            let m = block.min(n - start);
            let eye = Mat::from_fn(m, n, |i, j| if start + i == j { 1.0 } else { 0.0 });
            self.apply(eye.as_ref(), h.as_mut().subrows_mut(start, m))?;
        }
        Ok(h)
    }
}

/// The parallelism of faer calls: the current rayon pool's threads.
fn par() -> Par {
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
        if v.ncols() != k * w || out.nrows() != m || out.ncols() != k * w {
            let details = format!(
                "a block of {} x {}; expected vectors of {}",
                v.nrows(),
                v.ncols(),
                k * w
            );
            return Err(Error::config("hessian", details));
        }
        // Stack the m vectors as m·K rows of D'.
        let stacked = Mat::from_fn(m * k, w, |r, c| v[(r / k, (r % k) * w + c)]);
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
        let mut out = out;
        for r in 0..m * k {
            for c in 0..w {
                out[(r / k, (r % k) * w + c)] = hv[(r, c)];
            }
        }
        Ok(())
    }

    /// Block `(k, l)` is `Ãᵀ diag(C_n[k, l]) Ã`: one GEMM per pair `k ≤ l`.
    fn assemble(&self) -> Result<Mat<f64>> {
        let (k, w, n) = (self.outputs, self.width(), self.inputs.nrows());
        let mut h = Mat::zeros(k * w, k * w);
        let mut scaled = Mat::zeros(n, w);
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
            }
        }
        Ok(h)
    }
}

/// How `(H + λI)⁻¹` is applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Solver {
    /// Assemble `H` (f64), add `λI`, Cholesky (faer). Up to [`Solver::EXACT_MAX_DIM`]
    /// parameters; a matrix that is not positive definite is an error giving the
    /// smallest damping that works.
    Exact,
    /// Conjugate gradients, one per right-hand side, run as a block (every iteration
    /// applies `H` once to the unconverged vectors).
    Cg {
        /// Stop when `‖r‖ ≤ tolerance · ‖b‖` (default 1e-6, SciPy's `cg` `rtol` is 1e-5;
        /// one decade tighter since scores are differences of such solutions).
        tolerance: f64,
        /// At most this many iterations (default 1000); not converging is an error.
        max_iterations: usize,
    },
}

impl Solver {
    /// Largest `n` the exact solver assembles (`n²` f64: 3.2 GB at 20,000).
    pub const EXACT_MAX_DIM: usize = 20_000;

    /// CG's default relative residual tolerance (see [`Solver::Cg`]).
    pub const DEFAULT_CG_TOLERANCE: f64 = 1e-6;
    /// CG's default iteration cap.
    pub const DEFAULT_CG_MAX_ITERATIONS: usize = 1000;

    /// CG with its defaults.
    pub fn cg() -> Self {
        Self::Cg {
            tolerance: Self::DEFAULT_CG_TOLERANCE,
            max_iterations: Self::DEFAULT_CG_MAX_ITERATIONS,
        }
    }

    /// Short name (`exact`, `cg`) for metadata and the CLI.
    pub fn short_name(&self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Cg { .. } => "cg",
        }
    }
}

/// `(H + λI)⁻¹` ready to apply: a Cholesky factor, or CG over the operator.
pub enum Inverse<'a> {
    /// The exact solver's factor.
    Cholesky(faer::linalg::solvers::Llt<f64>),
    /// CG over the operator.
    Cg {
        /// The operator.
        op: &'a dyn HessianOperator,
        /// `λ`.
        damping: f64,
        /// Relative residual tolerance.
        tolerance: f64,
        /// Iteration cap.
        max_iterations: usize,
    },
}

impl std::fmt::Debug for Inverse<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cholesky(_) => f.write_str("Inverse::Cholesky"),
            Self::Cg { damping, .. } => write!(f, "Inverse::Cg {{ damping: {damping} }}"),
        }
    }
}

impl<'a> Inverse<'a> {
    /// Prepares `(op + damping·I)⁻¹` with `solver` (the exact solver factors it now).
    pub fn new(op: &'a dyn HessianOperator, damping: f64, solver: Solver) -> Result<Self> {
        if !damping.is_finite() || damping < 0.0 {
            let details = format!("{damping}; expected a finite value >= 0");
            return Err(Error::config("damping", details));
        }
        match solver {
            Solver::Exact => {
                let n = op.dim();
                if n > Solver::EXACT_MAX_DIM {
                    let details = format!(
                        "{n} parameters; the exact solver assembles at most {} (use --solver cg)",
                        Solver::EXACT_MAX_DIM
                    );
                    return Err(Error::config("solver", details));
                }
                let mut h = op.assemble()?;
                for i in 0..n {
                    h[(i, i)] += damping;
                }
                match h.llt(Side::Lower) {
                    Ok(llt) => Ok(Self::Cholesky(llt)),
                    Err(_) => Err(not_positive_definite(&h, damping)),
                }
            }
            Solver::Cg {
                tolerance,
                max_iterations,
            } => {
                if !tolerance.is_finite() || tolerance <= 0.0 || max_iterations == 0 {
                    let details = format!(
                        "tolerance {tolerance}, max iterations {max_iterations}; both must be positive"
                    );
                    return Err(Error::config("cg", details));
                }
                Ok(Self::Cg {
                    op,
                    damping,
                    tolerance,
                    max_iterations,
                })
            }
        }
    }

    /// `(H + λI)⁻¹ b` for every row of `b` (`[m, n]`), in place.
    pub fn solve_rows(&self, b: MatMut<'_, f64>) -> Result<()> {
        match self {
            Self::Cholesky(llt) => {
                use faer::linalg::solvers::Solve;
                let mut b = b;
                let mut cols = b.as_ref().transpose().to_owned();
                llt.solve_in_place(cols.as_mut());
                b.copy_from(cols.transpose());
                Ok(())
            }
            Self::Cg {
                op,
                damping,
                tolerance,
                max_iterations,
            } => block_cg(*op, *damping, *tolerance, *max_iterations, b),
        }
    }
}

/// The error for `H + λI` without a Cholesky factor: its smallest eigenvalue and the
/// smallest damping that makes it positive definite (with a margin).
fn not_positive_definite(damped: &Mat<f64>, damping: f64) -> Error {
    let smallest = damped
        .self_adjoint_eigenvalues(Side::Lower)
        .ok()
        .and_then(|e| e.first().copied());
    let details = match smallest {
        Some(mu) => {
            let scale = damped.norm_max().max(1.0);
            let need = damping - mu + 1e-10 * scale;
            format!(
                "H + {damping:e} I is not positive definite (smallest eigenvalue {mu:.3e}); use a \
                 damping of at least {need:.3e}"
            )
        }
        None => format!("H + {damping:e} I is not positive definite; raise the damping"),
    };
    Error::config("damping", details)
}

/// Block CG: `(H + λI) x = b` per row, in place; converged rows drop out of the block.
fn block_cg(
    op: &dyn HessianOperator,
    damping: f64,
    tol: f64,
    max_iter: usize,
    mut b: MatMut<'_, f64>,
) -> Result<()> {
    let (m, n) = (b.nrows(), b.ncols());
    let dot = |x: &[f64], y: &[f64]| -> f64 { x.iter().zip(y).map(|(a, b)| a * b).sum() };
    let row = |mat: &Mat<f64>, i: usize| -> Vec<f64> { (0..n).map(|j| mat[(i, j)]).collect() };
    let rhs = b.to_owned();
    let mut x = Mat::<f64>::zeros(m, n);
    let mut r = rhs.clone();
    let mut p = rhs.clone();
    let norms: Vec<f64> = (0..m)
        .map(|i| dot(&row(&rhs, i), &row(&rhs, i)).sqrt())
        .collect();
    let mut rr: Vec<f64> = (0..m).map(|i| dot(&row(&r, i), &row(&r, i))).collect();
    let mut active: Vec<usize> = (0..m).filter(|&i| rr[i].sqrt() > tol * norms[i]).collect();
    let mut iterations = 0;
    while !active.is_empty() {
        if iterations == max_iter {
            let worst = active
                .iter()
                .map(|&i| rr[i].sqrt() / norms[i])
                .fold(0.0, f64::max);
            let details = format!(
                "CG did not reach the relative residual {tol:e} in {max_iter} iterations for {} of \
                 {m} vectors (worst {worst:.3e}); raise the iterations or the damping",
                active.len()
            );
            return Err(Error::config("cg", details));
        }
        iterations += 1;
        let block = Mat::from_fn(active.len(), n, |a, j| p[(active[a], j)]);
        let mut hp = Mat::zeros(active.len(), n);
        op.apply(block.as_ref(), hp.as_mut())?;
        for (a, &i) in active.iter().enumerate() {
            let pi = row(&p, i);
            let hpi: Vec<f64> = (0..n).map(|j| hp[(a, j)] + damping * pi[j]).collect();
            let curvature = dot(&pi, &hpi);
            if curvature.is_nan() || curvature <= 0.0 {
                let details = format!(
                    "H + {damping:e} I is not positive definite along a CG direction (pᵀ(H + λI)p = \
                     {curvature:.3e}); raise the damping"
                );
                return Err(Error::config("damping", details));
            }
            let alpha = rr[i] / curvature;
            for j in 0..n {
                x[(i, j)] += alpha * pi[j];
                r[(i, j)] -= alpha * hpi[j];
            }
            let next = dot(&row(&r, i), &row(&r, i));
            let beta = next / rr[i];
            rr[i] = next;
            for j in 0..n {
                p[(i, j)] = r[(i, j)] + beta * p[(i, j)];
            }
        }
        active.retain(|&i| rr[i].sqrt() > tol * norms[i]);
    }
    b.copy_from(x.as_ref());
    Ok(())
}
