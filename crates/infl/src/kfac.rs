//! K-FAC and EK-FAC preconditioning (Martens & Grosse 2015; George et al. 2018) of
//! influence functions over linear layers read from factor files, with Kronfluence
//! 1.0.1's numerics: `score(q, i) = Σ_L ⟨P_L ∇_L ℓ_q, ∇_L ℓ_i⟩`, positive = helpful, summed
//! over the layers (Kronfluence's `all_modules`), each layer `L` preconditioned on its own.
//! File:line references are to the `kronfluence` 1.0.1 package.
//!
//! **Fit** ([`Fit::new`], one checkpoint's training factors; everything in f64). Per layer,
//! with `ã = (a, 1)` when the layer has a bias (the ones column appended last,
//! module/linear.py:39-43, module/conv2d.py:118-125) and the `N·S` rows of `N` examples at
//! `S` positions (`S` also names the gradient covariance below, as in `Q_S`):
//! - covariances `A = Σ ã ãᵀ / (N·S)` `[D', D']` and `S = Σ g gᵀ / (N·S)` `[K, K]`, divided
//!   by their count of *rows* (examples × positions) and symmetrised, `(C + Cᵀ)/2`, before a
//!   symmetric eigendecomposition `A = Q_A diag(λ_A) Q_Aᵀ`, `S = Q_S diag(λ_S) Q_Sᵀ`
//!   (Kronfluence: module/linear.py:45 and module/conv2d.py:126 count rows,
//!   module/tracker/factor.py:57-58 and :89-93 accumulate, factor/eigen.py:199-205
//!   normalise, symmetrise and `eigh` in `eigendecomposition_dtype=float64`,
//!   arguments.py:93);
//! - the eigenvalue matrix `Λ` `[K, D']` in the Kronecker eigenbasis: K-FAC `Λ[k, d] =
//!   λ_S[k] λ_A[d]` (factor/config.py:260-262); EK-FAC `Λ = (1/N) Σ_i (Q_Sᵀ G_i Q_A)²`
//!   elementwise, `G_i = Σ_s g_s ã_sᵀ` the example's gradient summed over its positions,
//!   divided by the count of *examples* (module/linear.py:72 sums positions,
//!   module/tracker/factor.py:203 and :218-226 accumulate per example,
//!   factor/config.py:331-332 divides, in float64: `LAMBDA_DTYPE`, utils/constants.py:82).
//!
//! **Precondition** ([`Fit::precondition`]): `G' = Q_S ((Q_Sᵀ G Q_A) ⊘ (Λ + λ)) Q_Aᵀ`
//! (factor/config.py:282-284 and :350-352), the damping `λ` added to `Λ`, not to the
//! covariances (config.py:263-267, :333-337). [`Damping::Value`] is `λ` itself
//! (`ScoreArguments.damping_factor`, default 1e-8, arguments.py:164; infl's default lives in
//! [`Convention::default_damping`](crate::estimators::Convention::default_damping));
//! [`Damping::Heuristic`] is Kronfluence's `damping_factor=None`, `0.1 × mean(Λ)` per layer
//! (`HEURISTIC_DAMPING_SCALE`, utils/constants.py:22), which is [`Damping::value`] of the
//! layer's curvature `Q diag(Λ) Qᵀ` ([`LayerFit`] is a [`HessianOperator`]).
//!
//! **Score** ([`Fit::terms`]): `⟨G'_q, G_i⟩` with no further factor (module/linear.py:112,
//! module/tracker/pairwise_score.py:86-90), as engine terms: a layer with one position is
//! `K` rank-one terms (+1 for the bias) against its training factors as they are, as
//! influence functions on the final layer do; a layer with `S > 1` positions is one term of
//! the training examples' materialised gradients (TracInCP's form). Gradients are laid out
//! `[K, D']` row-major with the bias as column `D`: in that layout K-FAC's curvature is
//! `S ⊗ A`.
//!
//! **Conventions that differ from Kronfluence's defaults.** The factor files' `g` is the
//! gradient of each example's own *summed* loss, which is what Kronfluence's hooks see
//! when the task's `compute_train_loss` and `compute_measurement` sum over the batch
//! (`reduction="sum"`, as its examples do; a mean would divide the covariances by the
//! squared batch size). The files carry the true labels' gradients, so the fit is
//! Kronfluence's with `use_empirical_fisher=True`; its default, `False`
//! (arguments.py:47), fits on labels sampled from the model (factor/covariance.py:221-225),
//! a random Fisher that no factor file holds. Kronfluence tracks only `nn.Linear` and
//! `nn.Conv2d` (a conv is a linear layer over unfolded patches, `S` = output positions);
//! a dense per-example gradient (`P.grad`) has no Kronecker structure and is refused.
//! Kronfluence fits on the first `covariance_max_examples = lambda_max_examples = 100_000`
//! examples at most (arguments.py:68, :102; computer/factor_computer.py:223-226); a fit
//! here uses every example it is given (select rows with [`SplitFactors::select`] to
//! reproduce the cap). Strategy default: [`Strategy::Ekfac`] (`FactorArguments.strategy`,
//! arguments.py:43).
//!
//! **Saved** ([`SavedFit`], "infl kfac v1", `infl fit --factors`): the fit's eigenvectors
//! and eigenvalues, undamped, with the [`FitIdentity`] it was fitted on; reading it back
//! gives the same f64 numbers, so preconditioning (the heuristic damping included) and the
//! scores are the fresh fit's bit for bit, for any test batch and any shard of the
//! training rows.
//!
//! Measured: on fixtures/captum_tracincp's MLP and CNN, scores through the engine agree
//! with Kronfluence's float64 scores to 1e-7–6e-7 of the largest (fixtures/kronfluence;
//! the f32 factor files set that floor).

use std::path::{Path, PathBuf};

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Side};
use infl_core::{Bias, Matrix, ranges};
use infl_io::LayerFactors;

use crate::curvature::terms::f64_rows;
use crate::curvature::{Damping, HessianOperator, par, phase, terms};
use crate::engine::{FactorTerm, Progress};
use crate::run::{NamedFactors, SplitFactors};
use crate::{Error, Result};

mod saved;

pub use saved::{FORMAT as KFAC_FORMAT, FitIdentity, SavedFit};

/// Factor rows copied to f64 at once while fitting (bounds the memory beyond `A`, `S`, `Λ`).
const CHUNK_ROWS: usize = 4096;

/// Which eigenvalues precondition the Kronecker eigenbasis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// K-FAC: `Λ = λ_S λ_Aᵀ`, the products of the covariances' eigenvalues.
    Kfac,
    /// EK-FAC: `Λ` refitted to the per-example gradients in the eigenbasis (the default,
    /// as Kronfluence's `FactorArguments.strategy="ekfac"`).
    #[default]
    Ekfac,
}

impl Strategy {
    /// `kfac` or `ekfac` (Kronfluence's names).
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Kfac => "kfac",
            Self::Ekfac => "ekfac",
        }
    }
}

/// The shape of a linear layer's factors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    positions: usize,
    inputs: usize,
    outputs: usize,
    bias: Bias,
}

impl Shape {
    /// `D'`: the inputs, plus the ones column with the bias.
    fn width(self) -> usize {
        self.inputs + usize::from(self.bias == Bias::Included)
    }

    fn describe(self) -> String {
        format!(
            "{} position(s), inputs {}, outputs {}, bias {}",
            self.positions,
            self.inputs,
            self.outputs,
            if self.bias == Bias::Included {
                "included"
            } else {
                "excluded"
            }
        )
    }
}

/// A layer's linear factors `(shape, a, g)`, or the error for a dense gradient.
fn linear<'l>(layer: &'l NamedFactors, source: &Path) -> Result<(Shape, &'l Matrix, &'l Matrix)> {
    match &layer.factors {
        LayerFactors::Linear {
            a,
            g,
            positions,
            bias,
        } => {
            let shape = Shape {
                positions: *positions,
                inputs: a.cols(),
                outputs: g.cols(),
                bias: *bias,
            };
            Ok((shape, a, g))
        }
        LayerFactors::Dense { .. } => Err(Error::data(
            source,
            format!("{}.grad", layer.name),
            format!(
                "K-FAC and EK-FAC need a linear layer's factors (`{0}.a`, `{0}.g`); `{0}` has a \
                 dense per-example gradient, which has no Kronecker structure (Kronfluence \
                 tracks only nn.Linear and nn.Conv2d): leave it out of the chosen layers",
                layer.name
            ),
        )),
    }
}

/// One layer's fitted curvature `Q diag(Λ) Qᵀ`, `Q = Q_S ⊗ Q_A` (see the module docs).
#[derive(Clone, Debug)]
pub struct LayerFit {
    name: String,
    shape: Shape,
    activation_eigenvectors: Mat<f64>,
    gradient_eigenvectors: Mat<f64>,
    /// `λ_A`, `λ_S`: the covariances' eigenvalues (ascending).
    activation_eigenvalues: Vec<f64>,
    gradient_eigenvalues: Vec<f64>,
    eigenvalues: Mat<f64>,
}

/// The fitted statistics of one checkpoint's chosen layers.
#[derive(Clone, Debug)]
pub struct Fit {
    strategy: Strategy,
    source: PathBuf,
    layers: Vec<LayerFit>,
}

impl Fit {
    /// Fits the statistics of every layer of one checkpoint's training factors; a dense
    /// gradient (`P.grad`) is refused, naming it. The passes over every layer are reported
    /// to `progress` in turn: [`phase::COVARIANCES`], [`phase::EIGENVECTORS`] and, for
    /// EK-FAC, [`phase::EIGENVALUES`].
    pub fn new(train: &SplitFactors, strategy: Strategy, progress: &dyn Progress) -> Result<Self> {
        if train.layers.is_empty() {
            let details = format!("{}: no layers to fit", train.source.display());
            return Err(Error::config("layers", details));
        }
        let linear: Vec<(&str, Shape, &Matrix, &Matrix)> = (train.layers.iter())
            .map(|l| {
                let (shape, a, g) = linear(l, &train.source)?;
                Ok((l.name.as_str(), shape, a, g))
            })
            .collect::<Result<_>>()?;
        let rows: usize = linear.iter().map(|(_, _, a, _)| a.rows()).sum();
        progress.start(phase::COVARIANCES, rows as u64);
        let covariances: Vec<(Mat<f64>, Mat<f64>)> = (linear.iter())
            .map(|&(_, shape, a, g)| covariances(a, g, shape, progress))
            .collect();
        progress.finish();
        progress.start(phase::EIGENVECTORS, 2 * linear.len() as u64);
        let mut layers = Vec::with_capacity(linear.len());
        for (&(name, shape, ..), (cov_a, cov_s)) in linear.iter().zip(&covariances) {
            let (lambda_a, activation_eigenvectors) = eigen(cov_a, name, "activation")?;
            progress.advance(1);
            let (lambda_s, gradient_eigenvectors) = eigen(cov_s, name, "gradient")?;
            progress.advance(1);
            layers.push(LayerFit {
                name: name.to_string(),
                shape,
                activation_eigenvectors,
                gradient_eigenvectors,
                eigenvalues: kronecker(&lambda_s, &lambda_a),
                activation_eigenvalues: lambda_a,
                gradient_eigenvalues: lambda_s,
            });
        }
        progress.finish();
        if strategy == Strategy::Ekfac {
            let examples: usize = linear
                .iter()
                .map(|(_, s, a, _)| a.rows() / s.positions)
                .sum();
            progress.start(phase::EIGENVALUES, examples as u64);
            for (fit, &(_, shape, a, g)) in layers.iter_mut().zip(&linear) {
                fit.eigenvalues = corrected_eigenvalues(
                    a,
                    g,
                    shape,
                    fit.activation_eigenvectors.as_ref(),
                    fit.gradient_eigenvectors.as_ref(),
                    progress,
                );
            }
            progress.finish();
        }
        Ok(Self {
            strategy,
            source: train.source.clone(),
            layers,
        })
    }

    /// The strategy fitted.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The layers, in the order of the training factors.
    pub fn layers(&self) -> &[LayerFit] {
        &self.layers
    }

    /// The preconditioned test gradients `G'`, per layer (the fit's order): f64 `[T, K·D']`,
    /// row `t` the `[K, D']` row-major `G'_t` (bias as column `D`). `test` must have the
    /// fitted layers with the same shapes.
    pub fn precondition(&self, test: &SplitFactors, damping: Damping) -> Result<Vec<Mat<f64>>> {
        self.check_split(test)?;
        (self.layers.iter().zip(&test.layers))
            .map(|(fit, layer)| {
                let (shape, a, g) = linear(layer, &test.source)?;
                let lambda = fit.damping(damping)?;
                let mut x = terms::gradients(a, g, shape.positions, shape.bias, 0..test.len());
                fit.transform(x.as_mut(), |l| 1.0 / (l + lambda));
                Ok(x)
            })
            .collect()
    }

    /// The engine terms scoring `preconditioned` (from [`precondition`](Self::precondition))
    /// against `train` (the fitted layers, as they are): per layer with one position `K`
    /// rank-one terms (+1 for the bias), per layer with `S > 1` positions one materialised
    /// term; weight 1, labelled `{label}, layer L, ...`.
    pub fn terms(
        &self,
        train: &SplitFactors,
        preconditioned: &[Mat<f64>],
        label: &str,
    ) -> Result<Vec<FactorTerm>> {
        self.check_split(train)?;
        self.check_preconditioned(preconditioned)?;
        terms::layer_terms(train, preconditioned, label)
    }

    /// `split` has the fitted layers, in order, with the same shapes.
    fn check_split(&self, split: &SplitFactors) -> Result<()> {
        let names: Vec<&str> = self.layers.iter().map(|l| l.name.as_str()).collect();
        let found: Vec<&str> = split.layers.iter().map(|l| l.name.as_str()).collect();
        if names != found {
            let details = format!(
                "expected the layers {names:?} fitted on {}, found {found:?}",
                self.source.display()
            );
            return Err(Error::data(&split.source, "(layers)", details));
        }
        for (fit, layer) in self.layers.iter().zip(&split.layers) {
            let (shape, ..) = linear(layer, &split.source)?;
            if shape != fit.shape {
                let details = format!(
                    "expected layer `{}` as fitted on {} ({}), found {}",
                    fit.name,
                    self.source.display(),
                    fit.shape.describe(),
                    shape.describe()
                );
                return Err(Error::data(&split.source, &fit.name, details));
            }
        }
        Ok(())
    }

    /// One `[T, K·D']` block per layer, every block with the same `T`.
    fn check_preconditioned(&self, x: &[Mat<f64>]) -> Result<()> {
        let rows = x.first().map_or(0, Mat::nrows);
        let bad = x.len() != self.layers.len()
            || (x.iter().zip(&self.layers)).any(|(x, l)| x.ncols() != l.dim() || x.nrows() != rows);
        if bad {
            let want: Vec<usize> = self.layers.iter().map(LayerFit::dim).collect();
            let found: Vec<(usize, usize)> = x.iter().map(|x| (x.nrows(), x.ncols())).collect();
            let details = format!(
                "expected one block of test rows per layer, of widths {want:?}; found (rows, \
                 width) {found:?}"
            );
            return Err(Error::config("preconditioned gradients", details));
        }
        Ok(())
    }
}

impl LayerFit {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the bias is part of the gradient (the ones column of `ã`).
    pub fn bias(&self) -> Bias {
        self.shape.bias
    }

    /// Positions per example `S`.
    pub fn positions(&self) -> usize {
        self.shape.positions
    }

    /// Outputs `K`.
    pub fn outputs(&self) -> usize {
        self.shape.outputs
    }

    /// `D'`: inputs `D`, plus one with the bias.
    pub fn width(&self) -> usize {
        self.shape.width()
    }

    /// `Q_A` `[D', D']`: the activation covariance's eigenvectors, as columns.
    pub fn activation_eigenvectors(&self) -> MatRef<'_, f64> {
        self.activation_eigenvectors.as_ref()
    }

    /// `Q_S` `[K, K]`: the gradient covariance's eigenvectors, as columns.
    pub fn gradient_eigenvectors(&self) -> MatRef<'_, f64> {
        self.gradient_eigenvectors.as_ref()
    }

    /// `λ_A` `[D']`: the activation covariance's eigenvalues, ascending.
    pub fn activation_eigenvalues(&self) -> &[f64] {
        &self.activation_eigenvalues
    }

    /// `λ_S` `[K]`: the gradient covariance's eigenvalues, ascending.
    pub fn gradient_eigenvalues(&self) -> &[f64] {
        &self.gradient_eigenvalues
    }

    /// `Λ` `[K, D']`: the eigenvalue of the eigenvector `Q_S[:, k] ⊗ Q_A[:, d]`.
    pub fn eigenvalues(&self) -> MatRef<'_, f64> {
        self.eigenvalues.as_ref()
    }

    /// `λ` for this layer: a value as it is, the heuristic `0.1 × mean(Λ)`. Refused when
    /// negative or not finite (Kronfluence refuses a negative `damping_factor`,
    /// arguments.py:264) or when `Λ + λ` is not positive.
    pub fn damping(&self, damping: Damping) -> Result<f64> {
        let value = damping.value(self)?;
        if !(value.is_finite() && value >= 0.0) {
            let details = format!(
                "layer {}: expected a finite, non-negative damping, found {value:e}",
                self.name
            );
            return Err(Error::config("damping", details));
        }
        let smallest = (0..self.eigenvalues.nrows())
            .flat_map(|k| (0..self.eigenvalues.ncols()).map(move |d| (k, d)))
            .map(|(k, d)| self.eigenvalues[(k, d)])
            .fold(f64::INFINITY, f64::min);
        if smallest + value <= 0.0 {
            let details = format!(
                "layer {}: its smallest eigenvalue is {smallest:.3e}, so Λ + {value:e} is not \
                 positive; raise the damping",
                self.name
            );
            return Err(Error::config("damping", details));
        }
        Ok(value)
    }

    /// Every row `v` of `x` (a `[K, D']` gradient) becomes `Q_S ((Q_Sᵀ V Q_A) ∘ f(Λ)) Q_Aᵀ`.
    fn transform(&self, mut x: MatMut<'_, f64>, f: impl Fn(f64) -> f64) {
        let (k, w) = (self.shape.outputs, self.shape.width());
        let (qa, qs) = (self.activation_eigenvectors(), self.gradient_eigenvectors());
        let (mut left, mut p) = (Mat::zeros(k, w), Mat::zeros(k, w));
        for row in 0..x.nrows() {
            let v = Mat::from_fn(k, w, |r, c| x[(row, r * w + c)]);
            matmul(left.as_mut(), Accum::Replace, v.as_ref(), qa, 1.0, par());
            matmul(
                p.as_mut(),
                Accum::Replace,
                qs.transpose(),
                left.as_ref(),
                1.0,
                par(),
            );
            for c in 0..w {
                for r in 0..k {
                    p[(r, c)] *= f(self.eigenvalues[(r, c)]);
                }
            }
            matmul(
                left.as_mut(),
                Accum::Replace,
                p.as_ref(),
                qa.transpose(),
                1.0,
                par(),
            );
            matmul(p.as_mut(), Accum::Replace, qs, left.as_ref(), 1.0, par());
            for r in 0..k {
                for c in 0..w {
                    x[(row, r * w + c)] = p[(r, c)];
                }
            }
        }
    }
}

/// The layer's curvature `Q diag(Λ) Qᵀ` (Kronfluence's scale: a mean over examples), so
/// that [`Damping::value`] and the solvers apply to it.
impl HessianOperator for LayerFit {
    fn dim(&self) -> usize {
        self.shape.outputs * self.shape.width()
    }

    fn apply(&self, v: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        if v.ncols() != self.dim() || out.nrows() != v.nrows() || out.ncols() != self.dim() {
            let details = format!(
                "layer {}: a block of {} x {}; expected vectors of {}",
                self.name,
                v.nrows(),
                v.ncols(),
                self.dim()
            );
            return Err(Error::config("k-fac", details));
        }
        out.copy_from(v);
        self.transform(out, |l| l);
        Ok(())
    }

    /// `Σ Λ`.
    fn trace(&self) -> Result<f64> {
        let (k, w) = (self.eigenvalues.nrows(), self.eigenvalues.ncols());
        Ok((0..k)
            .map(|r| (0..w).map(|c| self.eigenvalues[(r, c)]).sum::<f64>())
            .sum())
    }
}

/// `A = Σ ã ãᵀ / (N·S)` and `S = Σ g gᵀ / (N·S)`, symmetrised; `progress` advances by
/// the rows.
fn covariances(
    a: &Matrix,
    g: &Matrix,
    shape: Shape,
    progress: &dyn Progress,
) -> (Mat<f64>, Mat<f64>) {
    let rows = a.rows();
    let mut cov_a = Mat::zeros(shape.width(), shape.width());
    let mut cov_s = Mat::zeros(shape.outputs, shape.outputs);
    for chunk in ranges(rows, CHUNK_ROWS) {
        let count = chunk.len() as u64;
        let ac = f64_rows(a, chunk.clone(), shape.bias);
        let gc = f64_rows(g, chunk, Bias::Excluded);
        matmul(
            cov_a.as_mut(),
            Accum::Add,
            ac.transpose(),
            ac.as_ref(),
            1.0,
            par(),
        );
        matmul(
            cov_s.as_mut(),
            Accum::Add,
            gc.transpose(),
            gc.as_ref(),
            1.0,
            par(),
        );
        progress.advance(count);
    }
    (normalised(&cov_a, rows), normalised(&cov_s, rows))
}

/// `(C / count + (C / count)ᵀ) / 2`, as Kronfluence normalises before `eigh`.
fn normalised(c: &Mat<f64>, count: usize) -> Mat<f64> {
    let n = count as f64;
    Mat::from_fn(c.nrows(), c.ncols(), |i, j| {
        0.5 * (c[(i, j)] / n + c[(j, i)] / n)
    })
}

/// K-FAC's `Λ[k, d] = λ_S[k] λ_A[d]` (factor/config.py:260-262).
fn kronecker(lambda_s: &[f64], lambda_a: &[f64]) -> Mat<f64> {
    Mat::from_fn(lambda_s.len(), lambda_a.len(), |k, d| {
        lambda_s[k] * lambda_a[d]
    })
}

/// Eigenvalues (ascending) and eigenvectors (columns) of a symmetric covariance.
fn eigen(c: &Mat<f64>, layer: &str, which: &str) -> Result<(Vec<f64>, Mat<f64>)> {
    let eig = c.self_adjoint_eigen(Side::Lower).map_err(|e| {
        let details = format!("layer {layer}: eigendecomposition of the {which} covariance: {e:?}");
        Error::config("k-fac", details)
    })?;
    let values = eig.S();
    Ok((
        (0..c.nrows()).map(|i| values[i]).collect(),
        eig.U().to_owned(),
    ))
}

/// EK-FAC's `Λ = (1/N) Σ_i (Q_Sᵀ G_i Q_A)²`, `G_i = Σ_s g_s ã_sᵀ`, from the projected
/// factors `g Q_S` and `ã Q_A` (`Q_Sᵀ G_i Q_A = Σ_s (Q_Sᵀ g_s)(Q_Aᵀ ã_s)ᵀ`); `progress`
/// advances by the examples.
fn corrected_eigenvalues(
    a: &Matrix,
    g: &Matrix,
    shape: Shape,
    qa: MatRef<'_, f64>,
    qs: MatRef<'_, f64>,
    progress: &dyn Progress,
) -> Mat<f64> {
    let (s, k, w) = (shape.positions, shape.outputs, shape.width());
    let n = a.rows() / s;
    let mut lambda = Mat::zeros(k, w);
    let mut p = Mat::zeros(k, w);
    for examples in ranges(n, (CHUNK_ROWS / s).max(1)) {
        let rows = examples.start * s..examples.end * s;
        let pa = f64_rows(a, rows.clone(), shape.bias) * qa;
        let pg = f64_rows(g, rows, Bias::Excluded) * qs;
        if s == 1 {
            // Each example's projection is rank one: Σ_i of its squares is (pg²)ᵀ (pa²).
            let square =
                |m: &Mat<f64>| Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)].powi(2));
            let (sa, sg) = (square(&pa), square(&pg));
            matmul(
                lambda.as_mut(),
                Accum::Add,
                sg.transpose(),
                sa.as_ref(),
                1.0,
                par(),
            );
            progress.advance(examples.len() as u64);
            continue;
        }
        for i in 0..examples.len() {
            let (gi, ai) = (pg.subrows(i * s, s), pa.subrows(i * s, s));
            matmul(p.as_mut(), Accum::Replace, gi.transpose(), ai, 1.0, par());
            for c in 0..w {
                for r in 0..k {
                    lambda[(r, c)] += p[(r, c)].powi(2);
                }
            }
        }
        progress.advance(examples.len() as u64);
    }
    let n = n as f64;
    Mat::from_fn(k, w, |r, c| lambda[(r, c)] / n)
}
