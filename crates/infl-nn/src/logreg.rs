//! Multinomial logistic regression trained to convergence in f64, for counterfactual
//! evaluation (leave-one-out and LDS retraining), where the difference between two models
//! must be the data's effect and not optimiser noise.
//!
//! The model is one linear layer with bias, `z = W x + b` (`W` `[K, D]`), softmax
//! cross-entropy. Parameters are kept as `θ` `[K, D + 1]` with the bias as the last column
//! (the inputs get a ones column), so `θ` is the weight of infl's final-layer estimators
//! with the bias included. The objective over example weights `w_i` is
//!
//! `f(θ) = Σ_i w_i ℓ_i(θ) + (λ/2) ‖θ‖²`
//!
//! with the bias penalised too (a choice: the Hessian is then `Σ w_i H_i + λI`, exactly the
//! matrix influence functions invert with damping `λ` in Kronfluence's convention when
//! `w_i = 1/N`, and it is positive definite, so the softmax's shift direction needs no
//! pseudo-inverse). Leave-one-out uses Koh & Liang's weights (`1/N` for the kept examples,
//! the full set's `N`), LDS subsets the subset's mean (`1/|S|`).
//!
//! **Solver.** Newton's method with the Newton system solved by conjugate gradients on
//! exact Hessian-vector products (`Σ w_i (diag p_i − p_i p_iᵀ) V x̃_i ⊗ x̃_i + λV`),
//! optionally preconditioned by the Cholesky factor of an assembled Hessian
//! ([`Preconditioner`]: of the reference model, reused by every retraining, which then
//! needs a handful of CG steps per Newton step). Inexact Newton with forcing term
//! `min(0.1, √‖g‖)`, backtracking while far from the optimum, full steps near it (where
//! the objective's decrease is below f64's resolution), until `‖∇f‖₂ ≤ tolerance`
//! (default 1e-12: actual leave-one-out changes of a test loss go down to ~1e-8 on MNIST,
//! see MEASURED.md). Every reduction over examples runs over fixed row chunks summed in
//! order, so results are bit-identical for any thread count.

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, s};
use rayon::prelude::*;

use crate::{Error, Linear, Mlp, Result};

/// Rows per parallel task of a reduction over examples (fixed: thread-count independence).
const ROW_CHUNK: usize = 512;

/// Largest parameter count whose Hessian [`Preconditioner::fit`] assembles (2 GiB of f64).
pub const PRECONDITIONER_MAX_DIM: usize = 16_384;

/// Inputs with a ones column appended and class labels.
#[derive(Clone, Debug)]
pub struct LogRegData {
    /// `[N, D + 1]`, last column 1.
    x: Array2<f64>,
    labels: Vec<usize>,
    classes: usize,
}

impl LogRegData {
    /// Data from inputs `[N, D]` and labels in `[0, classes)`.
    pub fn new(x: ArrayView2<'_, f32>, labels: &[i64], classes: usize) -> Result<Self> {
        if labels.len() != x.nrows() {
            return Err(Error::shape(
                "LogRegData::new",
                format!("expected {} labels, found {}", x.nrows(), labels.len()),
            ));
        }
        if classes < 2 {
            return Err(Error::config(
                "classes",
                format!("expected >= 2, found {classes}"),
            ));
        }
        let labels = labels
            .iter()
            .enumerate()
            .map(|(i, &y)| {
                usize::try_from(y)
                    .ok()
                    .filter(|&y| y < classes)
                    .ok_or_else(|| {
                        Error::config(
                            "labels",
                            format!("expected class labels in [0, {classes}), found {y} at [{i}]"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let (n, d) = x.dim();
        let mut aug = Array2::<f64>::ones((n, d + 1));
        aug.slice_mut(s![.., ..d])
            .zip_mut_with(&x, |a, &v| *a = f64::from(v));
        Ok(Self {
            x: aug,
            labels,
            classes,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of parameters `K (D + 1)`.
    pub fn dim(&self) -> usize {
        self.classes * self.x.ncols()
    }
}

/// Settings of [`LogReg::fit`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitConfig {
    /// `λ` of the L2 penalty `(λ/2)‖θ‖²` (bias included).
    pub l2: f64,
    /// Stop when `‖∇f‖₂` is at most this.
    pub tolerance: f64,
    /// At most this many Newton steps (not converging is an error).
    pub max_newton_steps: usize,
    /// At most this many CG steps per Newton step.
    pub max_cg_steps: usize,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            l2: 1e-3,
            tolerance: 1e-12,
            max_newton_steps: 100,
            max_cg_steps: 2_000,
        }
    }
}

/// How a fit went.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitReport {
    /// Newton steps taken.
    pub newton_steps: usize,
    /// CG steps (Hessian-vector products) over all Newton steps.
    pub cg_steps: usize,
    /// `‖∇f‖₂` at the returned parameters.
    pub gradient_norm: f64,
}

/// Per-example outputs of a model on a set of examples.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Cross-entropy loss `−log softmax(z)[y]`.
    pub loss: Vec<f64>,
    /// Margin `z_y − max_{k≠y} z_k`.
    pub margin: Vec<f64>,
}

/// A fitted multinomial logistic regression.
#[derive(Clone, Debug, PartialEq)]
pub struct LogReg {
    /// `[K, D + 1]`, bias last.
    theta: Array2<f64>,
}

/// The Cholesky factor of an assembled Hessian, used to precondition CG.
#[derive(Debug)]
pub struct Preconditioner {
    llt: faer::linalg::solvers::Llt<f64>,
}

impl Preconditioner {
    /// Assembles the Hessian of `f` at `model` for example weights `weights` and factors it.
    pub fn fit(model: &LogReg, data: &LogRegData, weights: &[f64], l2: f64) -> Result<Self> {
        let n = data.dim();
        if n > PRECONDITIONER_MAX_DIM {
            return Err(Error::config(
                "preconditioner",
                format!(
                    "{n} parameters; at most {PRECONDITIONER_MAX_DIM} are assembled (fit without one)"
                ),
            ));
        }
        let h = model.hessian(data, weights, l2)?;
        let llt = h
            .llt(Side::Lower)
            .map_err(|_| Error::config("preconditioner", "the Hessian is not positive definite"))?;
        Ok(Self { llt })
    }

    fn apply(&self, r: &Array1<f64>) -> Array1<f64> {
        let mut col = Mat::from_fn(r.len(), 1, |i, _| r[i]);
        self.llt.solve_in_place(col.as_mut());
        Array1::from_shape_fn(r.len(), |i| col[(i, 0)])
    }
}

/// Softmax probabilities `[N, K]` of logits `x̃ θᵀ`.
fn probabilities(theta: &Array2<f64>, x: &Array2<f64>) -> Array2<f64> {
    let mut p = x.dot(&theta.t());
    for mut row in p.rows_mut() {
        let max = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
    p
}

/// `Σ_chunks f(rows of the chunk)`, in parallel over fixed chunks, summed in chunk order.
fn chunked_sum(
    n: usize,
    shape: (usize, usize),
    f: impl Fn(std::ops::Range<usize>) -> Array2<f64> + Sync,
) -> Array2<f64> {
    let chunks: Vec<_> = (0..n.div_ceil(ROW_CHUNK))
        .into_par_iter()
        .map(|c| f(c * ROW_CHUNK..((c + 1) * ROW_CHUNK).min(n)))
        .collect();
    chunks
        .into_iter()
        .fold(Array2::zeros(shape), |acc, c| acc + c)
}

impl LogReg {
    /// All-zero parameters for `data`.
    pub fn zeros(data: &LogRegData) -> Self {
        Self {
            theta: Array2::zeros((data.classes, data.x.ncols())),
        }
    }

    /// Parameters `[K, D + 1]`, bias last.
    pub fn theta(&self) -> ArrayView2<'_, f64> {
        self.theta.view()
    }

    /// The model as a one-layer [`Mlp`] (f32), for checkpoints and feature files.
    pub fn to_mlp(&self) -> Result<Mlp> {
        let d = self.theta.ncols() - 1;
        let weight = self.theta.slice(s![.., ..d]).mapv(|v| v as f32);
        let bias = self.theta.column(d).mapv(|v| v as f32);
        Mlp::from_layers(vec![Linear { weight, bias }])
    }

    fn check(&self, data: &LogRegData, weights: &[f64]) -> Result<()> {
        if self.theta.dim() != (data.classes, data.x.ncols()) || weights.len() != data.len() {
            return Err(Error::shape(
                "LogReg",
                format!(
                    "model [{}, {}], {} weights; data [{}, {}] with {} examples",
                    self.theta.nrows(),
                    self.theta.ncols(),
                    weights.len(),
                    data.classes,
                    data.x.ncols(),
                    data.len()
                ),
            ));
        }
        Ok(())
    }

    /// `f(θ)` and `∇f` `[K, D + 1]`.
    pub fn objective(&self, data: &LogRegData, weights: &[f64], l2: f64) -> (f64, Array2<f64>) {
        let k = data.classes;
        let parts: Vec<(f64, Array2<f64>)> = (0..data.len().div_ceil(ROW_CHUNK))
            .into_par_iter()
            .map(|c| {
                let rows = c * ROW_CHUNK..((c + 1) * ROW_CHUNK).min(data.len());
                let x = data.x.slice(s![rows.clone(), ..]).to_owned();
                let mut p = probabilities(&self.theta, &x);
                let mut value = 0.0;
                for (i, mut row) in p.rows_mut().into_iter().enumerate() {
                    let (w, y) = (weights[rows.start + i], data.labels[rows.start + i]);
                    value += w * -row[y].max(f64::MIN_POSITIVE).ln();
                    row[y] -= 1.0;
                    row.mapv_inplace(|v| v * w);
                }
                (value, p.t().dot(&x))
            })
            .collect();
        let mut value = 0.5 * l2 * self.theta.iter().map(|v| v * v).sum::<f64>();
        let mut grad = &self.theta * l2;
        for (v, g) in parts {
            value += v;
            grad += &g;
        }
        debug_assert_eq!(grad.nrows(), k);
        (value, grad)
    }

    /// `(Σ w_i H_i + λI) v` for a direction `v` `[K, D + 1]`, with the probabilities `p`
    /// of [`probabilities`] at `θ`.
    fn hvp(
        data: &LogRegData,
        p: &Array2<f64>,
        weights: &[f64],
        l2: f64,
        v: ArrayView2<'_, f64>,
    ) -> Array2<f64> {
        let sum = chunked_sum(data.len(), v.dim(), |rows| {
            let x = data.x.slice(s![rows.clone(), ..]);
            let mut u = x.dot(&v.t());
            for (i, mut row) in u.rows_mut().into_iter().enumerate() {
                let pi = p.row(rows.start + i);
                let pu = pi.dot(&row);
                let w = weights[rows.start + i];
                row.zip_mut_with(&pi, |r, &q| *r = w * q * (*r - pu));
            }
            u.t().dot(&x)
        });
        sum + &v * l2
    }

    /// The Hessian `Σ w_i (diag p_i − p_i p_iᵀ) ⊗ x̃_i x̃_iᵀ + λI` as a dense matrix (index
    /// `k (D + 1) + a`), assembled block by block of class pairs in parallel.
    pub fn hessian(&self, data: &LogRegData, weights: &[f64], l2: f64) -> Result<Mat<f64>> {
        self.check(data, weights)?;
        let (k, d1) = (data.classes, data.x.ncols());
        let p = probabilities(&self.theta, &data.x);
        let pairs: Vec<(usize, usize)> = (0..k).flat_map(|a| (a..k).map(move |b| (a, b))).collect();
        let blocks: Vec<Array2<f64>> = pairs
            .par_iter()
            .map(|&(a, b)| {
                let mut block = Array2::<f64>::zeros((d1, d1));
                for c in 0..data.len().div_ceil(ROW_CHUNK * 8) {
                    let rows = c * ROW_CHUNK * 8..((c + 1) * ROW_CHUNK * 8).min(data.len());
                    let x = data.x.slice(s![rows.clone(), ..]);
                    let mut y = x.to_owned();
                    for (i, mut row) in y.rows_mut().into_iter().enumerate() {
                        let pi = p.row(rows.start + i);
                        let c = (if a == b { pi[a] } else { 0.0 }) - pi[a] * pi[b];
                        row *= weights[rows.start + i] * c;
                    }
                    ndarray::linalg::general_mat_mul(1.0, &x.t(), &y, 1.0, &mut block);
                }
                block
            })
            .collect();
        let n = k * d1;
        let mut h = Mat::<f64>::zeros(n, n);
        for (&(a, b), block) in pairs.iter().zip(&blocks) {
            for i in 0..d1 {
                for j in 0..d1 {
                    h[(a * d1 + i, b * d1 + j)] = block[[i, j]];
                    h[(b * d1 + j, a * d1 + i)] = block[[i, j]];
                }
            }
        }
        for i in 0..n {
            h[(i, i)] += l2;
        }
        Ok(h)
    }

    /// Minimises `f` from `start` (zeros when `None`) by preconditioned Newton-CG.
    pub fn fit(
        data: &LogRegData,
        weights: &[f64],
        config: &FitConfig,
        start: Option<&LogReg>,
        preconditioner: Option<&Preconditioner>,
    ) -> Result<(Self, FitReport)> {
        check_config(config, weights)?;
        let mut model = start.cloned().unwrap_or_else(|| Self::zeros(data));
        model.check(data, weights)?;
        let mut report = FitReport {
            newton_steps: 0,
            cg_steps: 0,
            gradient_norm: f64::INFINITY,
        };
        loop {
            let (value, grad) = model.objective(data, weights, config.l2);
            report.gradient_norm = norm(grad.view());
            if report.gradient_norm <= config.tolerance {
                return Ok((model, report));
            }
            if report.newton_steps == config.max_newton_steps || !report.gradient_norm.is_finite() {
                return Err(Error::NotConverged {
                    steps: report.newton_steps,
                    gradient_norm: report.gradient_norm,
                    tolerance: config.tolerance,
                });
            }
            let p = probabilities(&model.theta, &data.x);
            let forcing = report.gradient_norm.sqrt().min(0.1);
            let (step, cg) = pcg(
                |v| Self::hvp(data, &p, weights, config.l2, v),
                grad.mapv(|g| -g),
                forcing * report.gradient_norm,
                config.max_cg_steps,
                preconditioner,
            );
            report.cg_steps += cg;
            report.newton_steps += 1;
            model = model.line_search(data, weights, config.l2, value, &grad, &step);
        }
    }

    /// `θ + t d` with `t` halved from 1 until the objective decreases enough (Armijo),
    /// while the decrease is resolvable in f64; the full step otherwise.
    fn line_search(
        &self,
        data: &LogRegData,
        weights: &[f64],
        l2: f64,
        value: f64,
        grad: &Array2<f64>,
        step: &Array2<f64>,
    ) -> Self {
        let slope = (grad * step).sum();
        let mut t = 1.0;
        // Near the optimum the predicted decrease is below f64's resolution of `value`.
        if -slope > 1e-12 * value.abs().max(1.0) {
            for _ in 0..40 {
                let trial = Self {
                    theta: &self.theta + &(step * t),
                };
                if trial.objective(data, weights, l2).0 <= value + 1e-4 * t * slope {
                    return trial;
                }
                t *= 0.5;
            }
        }
        Self {
            theta: &self.theta + &(step * t),
        }
    }

    /// Loss and margin of every example of `data` (whose labels are read).
    pub fn evaluate(&self, data: &LogRegData) -> Evaluation {
        let logits = data.x.dot(&self.theta.t());
        let mut out = Evaluation {
            loss: Vec::with_capacity(data.len()),
            margin: Vec::with_capacity(data.len()),
        };
        for (row, &y) in logits.axis_iter(Axis(0)).zip(&data.labels) {
            let (loss, margin) = loss_and_margin(row, y);
            out.loss.push(loss);
            out.margin.push(margin);
        }
        out
    }
}

/// Cross-entropy and margin of one row of logits for class `y`.
pub fn loss_and_margin(z: ArrayView1<'_, f64>, y: usize) -> (f64, f64) {
    let max = z.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    let other = z
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != y)
        .fold(f64::NEG_INFINITY, |m, (_, &v)| m.max(v));
    (lse - z[y], z[y] - other)
}

fn check_config(config: &FitConfig, weights: &[f64]) -> Result<()> {
    let ok = config.l2.is_finite()
        && config.l2 > 0.0
        && config.tolerance.is_finite()
        && config.tolerance > 0.0
        && config.max_cg_steps > 0;
    if !ok {
        return Err(Error::config(
            "logistic regression",
            format!(
                "expected l2 > 0, tolerance > 0 and max CG steps >= 1, found {config:?} \
                 (the penalty keeps the problem strictly convex)"
            ),
        ));
    }
    if let Some((i, w)) = weights
        .iter()
        .enumerate()
        .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
    {
        return Err(Error::config(
            "example weights",
            format!("expected finite values >= 0, found {w} at [{i}]"),
        ));
    }
    Ok(())
}

fn norm(v: ArrayView2<'_, f64>) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Solves `A x = b` by (preconditioned) conjugate gradients until `‖r‖ ≤ tolerance`;
/// returns `x` and the steps taken.
fn pcg(
    apply: impl Fn(ArrayView2<'_, f64>) -> Array2<f64>,
    b: Array2<f64>,
    tolerance: f64,
    max_steps: usize,
    preconditioner: Option<&Preconditioner>,
) -> (Array2<f64>, usize) {
    let shape = b.dim();
    let precondition = |r: &Array2<f64>| -> Array2<f64> {
        match preconditioner {
            Some(m) => {
                let flat = Array1::from_iter(r.iter().copied());
                m.apply(&flat)
                    .into_shape_with_order(shape)
                    .expect("the preconditioner keeps the length")
            }
            None => r.clone(),
        }
    };
    let mut x = Array2::<f64>::zeros(shape);
    let mut r = b;
    let mut z = precondition(&r);
    let mut d = z.clone();
    let mut rz = (&r * &z).sum();
    for step in 0..max_steps {
        if norm(r.view()) <= tolerance {
            return (x, step);
        }
        let ad = apply(d.view());
        let alpha = rz / (&d * &ad).sum();
        x.scaled_add(alpha, &d);
        r.scaled_add(-alpha, &ad);
        z = precondition(&r);
        let rz_next = (&r * &z).sum();
        d = &z + &(d * (rz_next / rz));
        rz = rz_next;
    }
    (x, max_steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize, d: usize, k: usize) -> LogRegData {
        let x = Array2::from_shape_fn((n, d), |(i, j)| ((i * 31 + j * 17) % 13) as f32 / 6.0 - 1.0);
        let labels: Vec<i64> = (0..n).map(|i| ((i * 7) % k) as i64).collect();
        LogRegData::new(x.view(), &labels, k).unwrap()
    }

    #[test]
    fn gradient_and_hessian_match_finite_differences() {
        let data = toy(40, 3, 3);
        let w = vec![1.0 / 40.0; 40];
        let model = LogReg {
            theta: Array2::from_shape_fn((3, 4), |(a, b)| 0.1 * a as f64 - 0.2 * b as f64),
        };
        let (_, g) = model.objective(&data, &w, 0.01);
        let h = model.hessian(&data, &w, 0.01).unwrap();
        let eps = 1e-6;
        for idx in 0..12 {
            let (a, b) = (idx / 4, idx % 4);
            let mut plus = model.clone();
            plus.theta[[a, b]] += eps;
            let mut minus = model.clone();
            minus.theta[[a, b]] -= eps;
            let (fp, gp) = plus.objective(&data, &w, 0.01);
            let (fm, gm) = minus.objective(&data, &w, 0.01);
            assert!(((fp - fm) / (2.0 * eps) - g[[a, b]]).abs() < 1e-8);
            for jdx in 0..12 {
                let fd = (gp[[jdx / 4, jdx % 4]] - gm[[jdx / 4, jdx % 4]]) / (2.0 * eps);
                assert!(
                    (fd - h[(jdx, idx)]).abs() < 1e-7,
                    "{fd} vs {}",
                    h[(jdx, idx)]
                );
            }
        }
    }

    #[test]
    fn converges_with_and_without_a_preconditioner_to_the_same_optimum() {
        let data = toy(200, 5, 4);
        let w = vec![1.0 / 200.0; 200];
        let config = FitConfig {
            l2: 1e-3,
            ..Default::default()
        };
        let (plain, report) = LogReg::fit(&data, &w, &config, None, None).unwrap();
        assert!(report.gradient_norm <= 1e-12, "{report:?}");
        let pre = Preconditioner::fit(&plain, &data, &w, config.l2).unwrap();
        let mut w2 = w.clone();
        w2[3] = 0.0;
        let (a, ra) = LogReg::fit(&data, &w2, &config, Some(&plain), Some(&pre)).unwrap();
        let (b, _) = LogReg::fit(&data, &w2, &config, None, None).unwrap();
        assert!(ra.cg_steps < report.cg_steps, "{ra:?} vs {report:?}");
        let diff = (&a.theta - &b.theta)
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(diff < 1e-8, "{diff}");
        assert_ne!(a, plain);
    }

    #[test]
    fn identical_for_any_thread_count() {
        let data = toy(1500, 6, 3);
        let w = vec![1.0 / 1500.0; 1500];
        let fit = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| LogReg::fit(&data, &w, &FitConfig::default(), None, None).unwrap())
        };
        assert_eq!(fit(1).0, fit(3).0);
    }

    #[test]
    fn bad_settings_are_refused() {
        let data = toy(10, 2, 2);
        let w = vec![0.1; 10];
        let zero_l2 = FitConfig {
            l2: 0.0,
            ..Default::default()
        };
        assert!(LogReg::fit(&data, &w, &zero_l2, None, None).is_err());
        let mut bad = w.clone();
        bad[2] = f64::NAN;
        assert!(LogReg::fit(&data, &bad, &FitConfig::default(), None, None).is_err());
        assert!(LogRegData::new(Array2::zeros((2, 2)).view(), &[0, 5], 2).is_err());
    }
}
