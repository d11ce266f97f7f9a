//! Preconditioned test gradients as engine terms: how influence functions and K-FAC hand
//! `x_q = (H + λI)⁻¹ ∇ℓ_q` to the one scoring [`Engine`](crate::Engine).
//!
//! Layout shared by both: a linear layer's gradient is `[K, D']` row-major (output `k`,
//! input `d` at `k·D' + d`), `D' = D + 1` with the bias as column `D` of each row, and a
//! block of gradients is `[examples, K·D']` f64.

use std::ops::Range;

use faer::Mat;
use infl_core::{Bias, Matrix};

use infl_io::LayerFactors;

use crate::engine::{FactorMatrices, FactorTerm};
use crate::estimators::{against_one, materialise};
use crate::run::SplitFactors;
use crate::{Error, Result};

/// Per-example gradients `vec(Σ_s g_s ⊗ ã_s)` of `examples` (rows `i·S .. (i+1)·S` of
/// `a` `[N·S, D]` and `g` `[N·S, K]`), `ã = (a, 1)` with the bias: f64 `[examples, K·D']`.
pub(crate) fn gradients(
    a: &Matrix,
    g: &Matrix,
    positions: usize,
    bias: Bias,
    examples: Range<usize>,
) -> Mat<f64> {
    let (k, d) = (g.cols(), a.cols());
    let w = d + usize::from(bias == Bias::Included);
    let (av, gv) = (a.view(), g.view());
    let mut out = Mat::zeros(examples.len(), k * w);
    for (row, i) in examples.enumerate() {
        for s in i * positions..(i + 1) * positions {
            let (ar, gr) = (av.row(s), gv.row(s));
            for (kk, &gk) in gr.iter().enumerate() {
                let gk = f64::from(gk);
                for (j, &x) in ar.iter().enumerate() {
                    out[(row, kk * w + j)] += gk * f64::from(x);
                }
                if bias == Bias::Included {
                    out[(row, kk * w + d)] += gk;
                }
            }
        }
    }
    out
}

/// A layer with one position per example: `K` rank-one terms (+1 for the bias) whose
/// training factors are `(a, g)` unchanged and whose test factors are `e_r` and
/// `X_q[r, :D]` (the bias term: training `(1, g)`, test `(1, X_q[:, D])`), so that their
/// sum is `⟨X_q, g_i ⊗ ã_i⟩`. Labels are `{label}, output {r}` and `{label}, bias`;
/// `x = None` leaves the terms without test factors.
pub(crate) fn rank_one_terms(
    label: &str,
    a: &Matrix,
    g: &Matrix,
    bias: Bias,
    x: Option<&Mat<f64>>,
) -> Vec<FactorTerm> {
    let (k, d) = (g.cols(), a.cols());
    let w = d + usize::from(bias == Bias::Included);
    let f32s = |rows: usize, cols: usize, f: &dyn Fn(usize, usize) -> f64| {
        Matrix::from_fn(rows, cols, |i, j| f(i, j) as f32)
    };
    let term = |label: String, train: FactorMatrices, test: Option<FactorMatrices>| FactorTerm {
        label,
        weight: 1.0,
        bias: Bias::Excluded,
        positions: 1,
        train,
        test,
    };
    let mut terms = Vec::with_capacity(k + 1);
    for r in 0..k {
        let test = x.map(|x| FactorMatrices {
            g: f32s(x.nrows(), k, &|_, j| if j == r { 1.0 } else { 0.0 }),
            a: f32s(x.nrows(), d, &|i, j| x[(i, r * w + j)]),
        });
        let train = FactorMatrices {
            a: a.clone(),
            g: g.clone(),
        };
        terms.push(term(format!("{label}, output {r}"), train, test));
    }
    if bias == Bias::Included {
        let ones = |n: usize| Matrix::from_fn(n, 1, |_, _| 1.0);
        let train = FactorMatrices {
            a: ones(a.rows()),
            g: g.clone(),
        };
        let test = x.map(|x| FactorMatrices {
            g: f32s(x.nrows(), k, &|i, r| x[(i, r * w + d)]),
            a: ones(x.nrows()),
        });
        terms.push(term(format!("{label}, bias"), train, test));
    }
    terms
}

/// The terms of every chosen layer of `train` against its preconditioned test gradients
/// (`preconditioned[l]` `[T, K·D']` for layer `l`): a layer with one position gives
/// [`rank_one_terms`], one with `S > 1` a [`materialised_term`]; weight 1, labelled
/// `{label}, layer L, ...`. Dense gradients are refused.
pub(crate) fn layer_terms(
    train: &SplitFactors,
    preconditioned: &[Mat<f64>],
    label: &str,
) -> Result<Vec<FactorTerm>> {
    let mut out = Vec::new();
    for (layer, x) in train.layers.iter().zip(preconditioned) {
        let LayerFactors::Linear {
            a,
            g,
            positions,
            bias,
        } = &layer.factors
        else {
            let details = format!(
                "layer {}: a dense gradient has no preconditioned factors",
                layer.name
            );
            return Err(Error::config("layers", details));
        };
        let label = format!("{label}, layer {}", layer.name);
        if *positions == 1 {
            out.extend(rank_one_terms(&label, a, g, *bias, Some(x)));
        } else {
            out.push(materialised_term(&label, a, g, *positions, *bias, x)?);
        }
    }
    Ok(out)
}

/// A layer with `S > 1` positions per example: one plain term of the training examples'
/// materialised gradients (TracInCP's [`materialise`], `[N, K·D (+K)]`) against the
/// preconditioned test gradients `x` in the same layout, both against a constant 1.
pub(crate) fn materialised_term(
    label: &str,
    a: &Matrix,
    g: &Matrix,
    positions: usize,
    bias: Bias,
    x: &Mat<f64>,
) -> Result<FactorTerm> {
    Ok(FactorTerm {
        label: label.to_string(),
        weight: 1.0,
        bias: Bias::Excluded,
        positions: 1,
        train: against_one(materialise(a, g, positions, bias)?)?,
        test: Some(against_one(weight_then_bias(x, g.cols(), a.cols(), bias))?),
    })
}

/// `[T, K·D']` (bias as column `D` of each row) reordered as [`materialise`] lays a
/// gradient out: the weight `[K, D]` row-major, then the `K` bias entries.
fn weight_then_bias(x: &Mat<f64>, k: usize, d: usize, bias: Bias) -> Matrix {
    let w = d + usize::from(bias == Bias::Included);
    Matrix::from_fn(x.nrows(), x.ncols(), |i, c| {
        let source = if c < k * d {
            (c / d) * w + c % d
        } else {
            (c - k * d) * w + d
        };
        x[(i, source)] as f32
    })
}

/// Rows `rows` of `m` in f64, with a ones column when `bias` is included.
pub(crate) fn f64_rows(m: &Matrix, rows: std::ops::Range<usize>, bias: Bias) -> Mat<f64> {
    let (view, cols) = (m.view(), m.cols());
    let width = cols + usize::from(bias == Bias::Included);
    Mat::from_fn(rows.len(), width, |i, j| {
        if j < cols {
            f64::from(view.row(rows.start + i)[j])
        } else {
            1.0
        }
    })
}
