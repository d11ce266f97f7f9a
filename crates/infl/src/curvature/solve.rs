//! The solvers: how `(H + λI)⁻¹` is applied to test gradients — exact (Cholesky), block
//! CG, LiSSA and Arnoldi — each knob with its default and where the default comes from.

use faer::{Mat, MatMut, MatRef, Side};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{HessianOperator, phase};
use crate::engine::Progress;
use crate::{Error, Result};

/// Right-hand sides solved at a time by [`Inverse::solve_all`] (bounds CG's and LiSSA's
/// state to a few `[64, n]` blocks).
pub const SOLVE_CHUNK: usize = 64;

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
        /// Stop when `‖r‖ ≤ tolerance · ‖b‖` (default 1e-8; SciPy's `cg` `rtol` is 1e-5,
        /// but the solution's error is up to the condition number times the residual: on
        /// the Captum fixture at damping 1e-3, 1e-6 left score errors of 9e-5 relative,
        /// 1e-8 matches Captum to 1e-5).
        tolerance: f64,
        /// At most this many iterations (default 1000); not converging is an error.
        max_iterations: usize,
    },
    /// LiSSA (Agarwal et al. 2017, as Koh & Liang use it): `h ← b + h − (H̃ + λI) h / scale`
    /// for `depth` steps, `x = h / scale`, averaged over `repeats`. `H̃` is `H` itself
    /// (full batch, deterministic: the default) or, with `batch`, `H` estimated at each step
    /// on `batch` examples drawn uniformly with replacement (`N/B · H_S`, Koh & Liang's
    /// stochastic estimator; ChaCha8 keyed by `seed`, one stream per repeat). It converges
    /// when `scale` exceeds half the largest eigenvalue of `H + λI`; growth is detected and
    /// reported with a scale that works.
    Lissa {
        /// Recursion depth (default 5000, dattri's `recursion_depth`).
        depth: usize,
        /// `None` (default): the largest eigenvalue of `H + λI` by 50 power iterations —
        /// dattri's fixed `scaling = 50` assumes a mean Hessian, and infl's is summed.
        scale: Option<f64>,
        /// Examples per step (`None`, the default: all of them, exactly; dattri's
        /// `batch_size` samples its data loader's batches).
        batch: Option<usize>,
        /// Independent estimates averaged (default 1, dattri's `num_repeat`); more than one
        /// needs `batch` (full-batch repeats are identical).
        repeats: usize,
        /// Seed of the minibatch draws (default 0).
        seed: u64,
    },
    /// K-FAC over factor files, layer by layer ([`crate::kfac`], Kronfluence's numerics):
    /// not an inverse of an operator, so only influence functions on `--factors` take it.
    Kfac,
    /// EK-FAC over factor files (K-FAC with Kronfluence's eigenvalue correction).
    Ekfac,
    /// Arnoldi (Schioppa et al. 2022, Captum's `ArnoldiInfluenceFunction`): a Krylov basis
    /// of `dimension` vectors from a seeded random start (re-orthogonalised twice), the
    /// top `eigenpairs` eigenvalues `μ` of `H` restricted to it, and
    /// `x = Σ v (v·b) / (μ + λ)` over those with `μ + λ > 0`: a low-rank inverse.
    Arnoldi {
        /// Krylov dimension (default 200, Captum's `arnoldi_dim`).
        dimension: usize,
        /// Eigenpairs kept (default 50, Captum's `projection_dim`).
        eigenpairs: usize,
        /// Seed of the start vector (default 0).
        seed: u64,
    },
}

impl Solver {
    /// Largest `n` the exact solver assembles (`n²` f64: 3.2 GB at 20,000).
    pub const EXACT_MAX_DIM: usize = 20_000;

    /// CG's default relative residual tolerance (see [`Solver::Cg`]).
    pub const DEFAULT_CG_TOLERANCE: f64 = 1e-8;
    /// CG's default iteration cap.
    pub const DEFAULT_CG_MAX_ITERATIONS: usize = 1000;

    /// CG with its defaults.
    pub fn cg() -> Self {
        Self::Cg {
            tolerance: Self::DEFAULT_CG_TOLERANCE,
            max_iterations: Self::DEFAULT_CG_MAX_ITERATIONS,
        }
    }

    /// LiSSA's default depth (see [`Solver::Lissa`]).
    pub const DEFAULT_LISSA_DEPTH: usize = 5000;
    /// Arnoldi's default Krylov dimension.
    pub const DEFAULT_ARNOLDI_DIMENSION: usize = 200;
    /// Arnoldi's default number of eigenpairs.
    pub const DEFAULT_ARNOLDI_EIGENPAIRS: usize = 50;

    /// LiSSA with its defaults.
    pub fn lissa() -> Self {
        Self::Lissa {
            depth: Self::DEFAULT_LISSA_DEPTH,
            scale: None,
            batch: None,
            repeats: 1,
            seed: 0,
        }
    }

    /// Arnoldi with its defaults.
    pub fn arnoldi() -> Self {
        Self::Arnoldi {
            dimension: Self::DEFAULT_ARNOLDI_DIMENSION,
            eigenpairs: Self::DEFAULT_ARNOLDI_EIGENPAIRS,
            seed: 0,
        }
    }

    /// Every solver with its defaults, in the order of the docs.
    pub fn all() -> [Self; 6] {
        [
            Self::Exact,
            Self::cg(),
            Self::lissa(),
            Self::arnoldi(),
            Self::Kfac,
            Self::Ekfac,
        ]
    }

    /// The default solver's name: EK-FAC on factor files (Kronfluence's), CG there when a
    /// curvature operator is named (`--curvature`), exact on a final layer's features.
    pub fn default_name(factors: bool, curvature: Option<super::Curvature>) -> &'static str {
        match (factors, curvature) {
            (true, None) => "ekfac",
            (true, Some(_)) => "cg",
            (false, _) => "exact",
        }
    }

    /// The solver named `name` (a [`short_name`](Solver::short_name)) with its defaults.
    pub fn named(name: &str) -> Result<Self> {
        let all = Self::all();
        all.iter()
            .find(|s| s.short_name() == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(Self::short_name).collect();
                Error::config(
                    "solver",
                    format!("expected one of {}, found {name:?}", names.join(", ")),
                )
            })
    }

    /// Short name (`exact`, `cg`, `lissa`, `arnoldi`) for metadata and the CLI.
    pub fn short_name(&self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Cg { .. } => "cg",
            Self::Lissa { .. } => "lissa",
            Self::Arnoldi { .. } => "arnoldi",
            Self::Kfac => "kfac",
            Self::Ekfac => "ekfac",
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
    /// LiSSA over the operator.
    Lissa {
        /// The operator.
        op: &'a dyn HessianOperator,
        /// `λ`.
        damping: f64,
        /// The recursion's settings, with the scale resolved.
        lissa: Lissa,
    },
    /// A low-rank inverse: eigenvectors `[r, n]` and `1 / (μ + λ)`.
    LowRank {
        /// One eigenvector per row.
        vectors: Mat<f64>,
        /// `1 / (μ + λ)` per eigenvector.
        inverse: Vec<f64>,
    },
}

impl std::fmt::Debug for Inverse<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cholesky(_) => f.write_str("Inverse::Cholesky"),
            Self::Cg { damping, .. } => write!(f, "Inverse::Cg {{ damping: {damping} }}"),
            Self::Lissa { lissa, .. } => write!(f, "Inverse::Lissa {{ {lissa:?} }}"),
            Self::LowRank { inverse, .. } => {
                write!(f, "Inverse::LowRank {{ rank: {} }}", inverse.len())
            }
        }
    }
}

impl<'a> Inverse<'a> {
    /// Prepares `(op + damping·I)⁻¹` with `solver` (the exact solver assembles and factors
    /// it now, LiSSA estimates its scale, Arnoldi builds its basis), reporting those phases
    /// to `progress`.
    pub fn new(
        op: &'a dyn HessianOperator,
        damping: f64,
        solver: Solver,
        progress: &dyn Progress,
    ) -> Result<Self> {
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
                let mut h = op.assemble(progress)?;
                for i in 0..n {
                    h[(i, i)] += damping;
                }
                progress.start(phase::CHOLESKY, 1);
                let factored = h.llt(Side::Lower);
                progress.advance(1);
                progress.finish();
                match factored {
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
            Solver::Lissa {
                depth,
                scale,
                batch,
                repeats,
                seed,
            } => {
                let settings = LissaSettings {
                    depth,
                    scale,
                    batch,
                    repeats,
                    seed,
                };
                let lissa = Lissa::new(op, damping, settings, progress)?;
                Ok(Self::Lissa { op, damping, lissa })
            }
            Solver::Arnoldi {
                dimension,
                eigenpairs,
                seed,
            } => arnoldi(op, damping, dimension, eigenpairs, seed, progress),
            Solver::Kfac | Solver::Ekfac => {
                let details = format!(
                    "{} preconditions per-layer factor files (--factors DIR), not an assembled \
                     Hessian; use exact, cg, lissa or arnoldi here",
                    solver.short_name()
                );
                Err(Error::config("solver", details))
            }
        }
    }

    /// The name of this inverse's solving phase (one of [`phase`]'s `SOLVE_*`).
    pub fn phase(&self) -> &'static str {
        match self {
            Self::Cholesky(_) => phase::SOLVE_EXACT,
            Self::Cg { .. } => phase::SOLVE_CG,
            Self::Lissa { .. } => phase::SOLVE_LISSA,
            Self::LowRank { .. } => phase::SOLVE_ARNOLDI,
        }
    }

    /// The units of [`phase`](Self::phase) that solving `rows` right-hand sides reports:
    /// vectors, CG's vector-iterations up to its cap, LiSSA's vector-steps.
    pub fn work(&self, rows: usize) -> u64 {
        let per = match self {
            Self::Cholesky(_) | Self::LowRank { .. } => 1,
            Self::Cg { max_iterations, .. } => *max_iterations as u64,
            Self::Lissa { lissa, .. } => lissa.depth as u64 * lissa.repeats as u64,
        };
        rows as u64 * per
    }

    /// `(H + λI)⁻¹ b` for every row of `b`, in place, [`SOLVE_CHUNK`] rows at a time,
    /// reported to `progress` as the phase [`phase`](Self::phase).
    pub fn solve_all(&self, mut b: MatMut<'_, f64>, progress: &dyn Progress) -> Result<()> {
        let m = b.nrows();
        progress.start(self.phase(), self.work(m));
        for start in (0..m).step_by(SOLVE_CHUNK) {
            let rows = SOLVE_CHUNK.min(m - start);
            self.solve_rows(b.as_mut().subrows_mut(start, rows), progress)?;
        }
        progress.finish();
        Ok(())
    }

    /// `(H + λI)⁻¹ b` for every row of `b` (`[m, n]`), in place, advancing `progress` by
    /// [`work`](Self::work)`(m)` as it goes (the caller starts and finishes the phase).
    pub fn solve_rows(&self, b: MatMut<'_, f64>, progress: &dyn Progress) -> Result<()> {
        let m = b.nrows() as u64;
        match self {
            Self::Cholesky(llt) => {
                use faer::linalg::solvers::Solve;
                let mut b = b;
                let mut cols = b.as_ref().transpose().to_owned();
                llt.solve_in_place(cols.as_mut());
                b.copy_from(cols.transpose());
                progress.advance(m);
                Ok(())
            }
            Self::Cg {
                op,
                damping,
                tolerance,
                max_iterations,
            } => {
                let cg = Cg {
                    tolerance: *tolerance,
                    max_iterations: *max_iterations,
                };
                cg.solve(*op, *damping, b, progress)
            }
            Self::Lissa { op, damping, lissa } => lissa.solve(*op, *damping, b, progress),
            Self::LowRank { vectors, inverse } => {
                // x = Σ_i v_i (v_i · b) / (μ_i + λ), for every row b.
                let coef = b.as_ref() * vectors.transpose();
                let scaled =
                    Mat::from_fn(coef.nrows(), coef.ncols(), |r, i| coef[(r, i)] * inverse[i]);
                let mut b = b;
                b.copy_from(&scaled * vectors);
                progress.advance(m);
                Ok(())
            }
        }
    }
}

fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// `(H + λI) v` for one vector.
fn apply_one(op: &dyn HessianOperator, damping: f64, v: &[f64]) -> Result<Vec<f64>> {
    let n = v.len();
    let row = faer::MatRef::from_row_major_slice(v, 1, n);
    let mut out = Mat::zeros(1, n);
    op.apply(row, out.as_mut())?;
    Ok((0..n).map(|j| out[(0, j)] + damping * v[j]).collect())
}

/// Seed of the power iteration's start vector.
const POWER_SEED: u64 = 0x1155A;

/// Power iterations of [`largest_eigenvalue`].
const POWER_ITERATIONS: u64 = 50;

/// The largest eigenvalue of `H + λI` (positive semi-definite `H`), by 50 power iterations
/// from a seeded start: LiSSA's default scale (the phase [`phase::LISSA_SCALE`]).
fn largest_eigenvalue(
    op: &dyn HessianOperator,
    damping: f64,
    progress: &dyn Progress,
) -> Result<f64> {
    let mut v = crate::seeded::standard_normals(POWER_SEED, 0, op.dim());
    let mut estimate = 0.0;
    progress.start(phase::LISSA_SCALE, POWER_ITERATIONS);
    for _ in 0..POWER_ITERATIONS {
        let norm = dot(&v, &v).sqrt();
        if norm == 0.0 || !norm.is_finite() {
            break;
        }
        v.iter_mut().for_each(|x| *x /= norm);
        let hv = apply_one(op, damping, &v)?;
        estimate = dot(&v, &hv);
        v = hv;
        progress.advance(1);
    }
    progress.finish();
    if !(estimate.is_finite() && estimate > 0.0) {
        let details = format!(
            "H + {damping:e} I has no positive curvature along a power iteration ({estimate:e}); give --lissa-scale or raise the damping"
        );
        return Err(Error::config("lissa", details));
    }
    Ok(estimate)
}

/// LiSSA's settings with the scale resolved (see [`Solver::Lissa`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lissa {
    /// Recursion depth.
    pub depth: usize,
    /// The scale (given, or the estimated largest eigenvalue).
    pub scale: f64,
    /// Examples per step, or all.
    pub batch: Option<usize>,
    /// Estimates averaged.
    pub repeats: usize,
    /// Seed of the minibatch draws.
    pub seed: u64,
}

/// [`Solver::Lissa`]'s knobs, before the scale is resolved.
#[derive(Clone, Copy, Debug)]
struct LissaSettings {
    depth: usize,
    scale: Option<f64>,
    batch: Option<usize>,
    repeats: usize,
    seed: u64,
}

impl Lissa {
    /// Checks the settings against `op` and resolves the scale.
    fn new(
        op: &dyn HessianOperator,
        damping: f64,
        settings: LissaSettings,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let LissaSettings {
            depth,
            scale,
            batch,
            repeats,
            seed,
        } = settings;
        if depth == 0 || repeats == 0 || batch == Some(0) {
            let details = format!(
                "depth {depth}, repeats {repeats}, batch {batch:?}; each must be at least 1"
            );
            return Err(Error::config("lissa", details));
        }
        if repeats > 1 && batch.is_none() {
            let details = "repeats average minibatch estimates; full-batch ones are identical \
                           (give a batch size)";
            return Err(Error::config("lissa", details));
        }
        if batch.is_some() && op.examples().is_none() {
            let details = "this curvature (a saved or fitted one) cannot be applied to a sample \
                           of examples; drop the batch size (full-batch LiSSA)";
            return Err(Error::config("lissa", details));
        }
        let scale = match scale {
            Some(s) if s.is_finite() && s > 0.0 => s,
            Some(s) => {
                let details = format!("scale {s}; expected a finite value > 0");
                return Err(Error::config("lissa", details));
            }
            None => largest_eigenvalue(op, damping, progress)?,
        };
        Ok(Self {
            depth,
            scale,
            batch,
            repeats,
            seed,
        })
    }

    /// Every row of `b`, at once, averaged over the repeats; each step advances `progress`
    /// by the rows.
    fn solve(
        &self,
        op: &dyn HessianOperator,
        damping: f64,
        mut b: MatMut<'_, f64>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let rhs = b.to_owned();
        let mut sum = Mat::<f64>::zeros(b.nrows(), b.ncols());
        for repeat in 0..self.repeats {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(repeat as u64);
            sum += self.recursion(op, damping, &rhs, &mut rng, progress)?;
        }
        let scale = 1.0 / (self.scale * self.repeats as f64);
        b.copy_from(&sum * faer::Scale(scale));
        Ok(())
    }

    /// One estimate `h` (before the division by the scale).
    fn recursion(
        &self,
        op: &dyn HessianOperator,
        damping: f64,
        rhs: &Mat<f64>,
        rng: &mut ChaCha8Rng,
        progress: &dyn Progress,
    ) -> Result<Mat<f64>> {
        let (m, n) = (rhs.nrows(), rhs.ncols());
        let bound = 1e12 * rhs.norm_max().max(f64::MIN_POSITIVE);
        let mut h = rhs.clone();
        let mut hh = Mat::zeros(m, n);
        for step in 1..=self.depth {
            self.product(op, rng, h.as_ref(), hh.as_mut())?;
            let mut largest = 0.0f64;
            for j in 0..n {
                for i in 0..m {
                    let next =
                        rhs[(i, j)] + h[(i, j)] - (hh[(i, j)] + damping * h[(i, j)]) / self.scale;
                    largest = largest.max(next.abs());
                    h[(i, j)] = next;
                }
            }
            if !largest.is_finite() || largest > bound {
                let need = largest_eigenvalue(op, damping, &())?;
                let details = format!(
                    "LiSSA diverged at step {step} of {}: the scale {:.3e} is below half the \
                     largest eigenvalue of H + λI (about {need:.3e}; minibatch estimates are \
                     larger); use a scale of at least {need:.3e}",
                    self.depth, self.scale
                );
                return Err(Error::config("lissa", details));
            }
            progress.advance(m as u64);
        }
        Ok(h)
    }

    /// `H̃ h`: the full product, or `N/B · H_S h` on a fresh sample.
    fn product(
        &self,
        op: &dyn HessianOperator,
        rng: &mut ChaCha8Rng,
        h: MatRef<'_, f64>,
        mut out: MatMut<'_, f64>,
    ) -> Result<()> {
        let (Some(batch), Some(n)) = (self.batch, op.examples()) else {
            return op.apply(h, out);
        };
        let rows: Vec<usize> = (0..batch).map(|_| rng.random_range(0..n)).collect();
        op.apply_examples(&rows, h, out.as_mut())?;
        super::scale(out, n as f64 / batch as f64);
        Ok(())
    }
}

/// Arnoldi's low-rank inverse (see [`Solver::Arnoldi`]).
fn arnoldi(
    op: &dyn HessianOperator,
    damping: f64,
    dimension: usize,
    eigenpairs: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<Inverse<'static>> {
    let n = op.dim();
    if dimension == 0 || eigenpairs == 0 {
        let details =
            format!("dimension {dimension}, eigenpairs {eigenpairs}; both must be positive");
        return Err(Error::config("arnoldi", details));
    }
    let mut start = crate::seeded::standard_normals(seed, 0, n);
    let norm = dot(&start, &start).sqrt();
    start.iter_mut().for_each(|x| *x /= norm);
    let mut basis: Vec<Vec<f64>> = vec![start];
    let steps = dimension.min(n);
    let mut t = Mat::<f64>::zeros(steps, steps);
    let mut used = 0;
    progress.start(phase::ARNOLDI, steps as u64);
    while used < steps {
        let k = used;
        let mut v = apply_one(op, 0.0, &basis[k])?;
        let scale = dot(&v, &v).sqrt();
        // Classical Gram–Schmidt, twice ("twice is enough").
        for _ in 0..2 {
            for (i, q) in basis.iter().enumerate() {
                let c = dot(q, &v);
                t[(i, k)] += c;
                v.iter_mut().zip(q).for_each(|(x, y)| *x -= c * y);
            }
        }
        used += 1;
        progress.advance(1);
        let rest = dot(&v, &v).sqrt();
        if used == steps || rest <= 1e-10 * scale.max(f64::MIN_POSITIVE) {
            break; // the Krylov space is full, or invariant
        }
        t[(used, k)] = rest; // the Hessenberg subdiagonal: H q_k has `rest` along q_{k+1}
        v.iter_mut().for_each(|x| *x /= rest);
        basis.push(v);
    }
    progress.finish();
    low_rank(
        &basis[..used],
        t.as_ref().submatrix(0, 0, used, used),
        damping,
        eigenpairs,
    )
}

/// The top `eigenpairs` eigenpairs of the (symmetrised) restriction `t` mapped back through
/// `basis`, kept where `μ + λ > 0`.
fn low_rank(
    basis: &[Vec<f64>],
    t: faer::MatRef<'_, f64>,
    damping: f64,
    eigenpairs: usize,
) -> Result<Inverse<'static>> {
    let k = t.nrows();
    let sym = Mat::from_fn(k, k, |i, j| 0.5 * (t[(i, j)] + t[(j, i)]));
    let eig = sym
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::config("arnoldi", format!("eigendecomposition failed: {e:?}")))?;
    let (values, vectors) = (eig.S(), eig.U());
    let n = basis[0].len();
    let mut rows = Vec::new();
    let mut inverse = Vec::new();
    // Eigenvalues ascending: the top ones are at the end.
    for e in (0..k).rev().take(eigenpairs) {
        let mu = values[e];
        if mu + damping <= 0.0 {
            continue;
        }
        let v: Vec<f64> = (0..n)
            .map(|j| (0..k).map(|i| vectors[(i, e)] * basis[i][j]).sum())
            .collect();
        rows.push(v);
        inverse.push(1.0 / (mu + damping));
    }
    if rows.is_empty() {
        let details =
            "no eigenvalue of H + λI restricted to the Krylov space is positive; raise the damping";
        return Err(Error::config("arnoldi", details));
    }
    let vectors = Mat::from_fn(rows.len(), n, |i, j| rows[i][j]);
    Ok(Inverse::LowRank { vectors, inverse })
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

/// Block CG's stopping rule (see [`Solver::Cg`]).
#[derive(Clone, Copy, Debug)]
struct Cg {
    tolerance: f64,
    max_iterations: usize,
}

impl Cg {
    /// `(H + λI) x = b` per row, in place; converged rows drop out of the block. Every
    /// iteration advances `progress` by the rows still active, and a row that converges
    /// by the iterations it did not need, so each row counts `max_iterations` in all.
    fn solve(
        self,
        op: &dyn HessianOperator,
        damping: f64,
        mut b: MatMut<'_, f64>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (m, n) = (b.nrows(), b.ncols());
        let (tol, max_iter) = (self.tolerance, self.max_iterations);
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
        progress.advance((m - active.len()) as u64 * max_iter as u64);
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
            let before = active.len();
            active.retain(|&i| rr[i].sqrt() > tol * norms[i]);
            let done = (before - active.len()) as u64;
            progress.advance(before as u64 + done * (max_iter - iterations) as u64);
        }
        b.copy_from(x.as_ref());
        Ok(())
    }
}
