//! The [`Backend`] trait: the few bulk kernels every estimator is built from.

use std::fmt;

use crate::{Error, MatRef, Matrix, Result, TopK, ranges};

/// Per-example factors of one linear layer: layer inputs `a` `[n, da]` and output
/// gradients `g` `[n, dg]`. The example's weight gradient is `g ⊗ a`.
#[derive(Clone, Copy, Debug)]
pub struct Factors<'a> {
    /// Layer inputs, one row per example.
    pub a: MatRef<'a>,
    /// Gradients of the loss with respect to the layer outputs, one row per example.
    pub g: MatRef<'a>,
}

impl<'a> Factors<'a> {
    /// Checks that `a` and `g` have the same number of rows.
    pub fn new(a: MatRef<'a>, g: MatRef<'a>) -> Result<Self> {
        if a.rows() != g.rows() {
            return Err(Error::shape(
                "Factors::new",
                format!("a has {} rows but g has {}", a.rows(), g.rows()),
            ));
        }
        Ok(Self { a, g })
    }

    /// Number of examples.
    pub fn rows(&self) -> usize {
        self.a.rows()
    }

    /// The examples `start..end`.
    pub fn slice_rows(&self, start: usize, end: usize) -> Self {
        Self {
            a: self.a.slice_rows(start, end),
            g: self.g.slice_rows(start, end),
        }
    }
}

/// Whether a layer's bias gradient is part of the gradient: its "input" is the constant 1,
/// so including it adds 1 to every input dot product `a_i·a_j` (Captum leaves it out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Bias {
    /// Weight gradient only (Captum's `TracInCPFast`).
    #[default]
    Excluded,
    /// Weight and bias gradient (Captum's `TracInCP` over a layer with a bias).
    Included,
}

impl Bias {
    /// What the bias adds to an input dot product: 1 when included, else 0.
    #[inline]
    pub fn input_dot(self) -> f32 {
        match self {
            Bias::Excluded => 0.0,
            Bias::Included => 1.0,
        }
    }
}

/// How [`Backend::gemm`] reads its right operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rhs {
    /// `out = a · b` with `b` `[k, n]`.
    AsIs,
    /// `out = a · bᵀ` with `b` `[n, k]` (e.g. logits from features and an `nn.Linear`
    /// weight `[out, in]`).
    Transposed,
}

/// One (checkpoint, layer) contribution to a score block:
/// `weight · (G_q G_tᵀ) ⊙ (A_q A_tᵀ + bias)` where `bias` is 1 when the layer's bias
/// gradient is included (its "input" is the constant 1) and 0 otherwise.
#[derive(Clone, Copy, Debug)]
pub struct Term<'a> {
    /// Weight of the term (the learning rate of its checkpoint).
    pub weight: f32,
    /// Query (test) factors.
    pub query: Factors<'a>,
    /// Training factors.
    pub train: Factors<'a>,
    /// Whether the bias gradient is part of the dot product.
    pub bias: Bias,
}

impl Term<'_> {
    /// What the bias adds to every input dot product (see [`Bias::input_dot`]).
    #[inline]
    pub fn bias_dot(&self) -> f32 {
        self.bias.input_dot()
    }
}

/// One (checkpoint, layer) contribution to self-influence:
/// `weight · ‖g‖² (‖a‖² + bias)` per example.
#[derive(Clone, Copy, Debug)]
pub struct SelfTerm<'a> {
    /// Weight of the term (the learning rate of its checkpoint).
    pub weight: f32,
    /// The examples' factors.
    pub factors: Factors<'a>,
    /// Whether the bias gradient is part of the norm.
    pub bias: Bias,
}

impl SelfTerm<'_> {
    /// What the bias adds to every squared input norm (see [`Bias::input_dot`]).
    #[inline]
    pub fn bias_dot(&self) -> f32 {
        self.bias.input_dot()
    }
}

/// Checks that all terms agree in shape; returns `(queries, train)` row counts.
pub fn check_terms(terms: &[Term<'_>]) -> Result<(usize, usize)> {
    let first = terms
        .first()
        .ok_or_else(|| Error::invalid("terms", "at least one term is needed"))?;
    let (nq, nt) = (first.query.rows(), first.train.rows());
    for (i, t) in terms.iter().enumerate() {
        if t.query.rows() != nq || t.train.rows() != nt {
            return Err(Error::shape(
                "check_terms",
                format!(
                    "term {i} has {} x {} rows, term 0 has {nq} x {nt}",
                    t.query.rows(),
                    t.train.rows()
                ),
            ));
        }
        if t.query.a.cols() != t.train.a.cols() || t.query.g.cols() != t.train.g.cols() {
            return Err(Error::shape(
                "check_terms",
                format!(
                    "term {i}: query factors are {}/{} wide, train factors {}/{}",
                    t.query.a.cols(),
                    t.query.g.cols(),
                    t.train.a.cols(),
                    t.train.g.cols()
                ),
            ));
        }
    }
    Ok((nq, nt))
}

/// Checks that all self terms have the same rows; returns that count.
pub fn check_self_terms(terms: &[SelfTerm<'_>]) -> Result<usize> {
    let first = terms
        .first()
        .ok_or_else(|| Error::invalid("terms", "at least one term is needed"))?;
    let n = first.factors.rows();
    if let Some((i, t)) = terms
        .iter()
        .enumerate()
        .find(|(_, t)| t.factors.rows() != n)
    {
        return Err(Error::shape(
            "check_self_terms",
            format!("term {i} has {} rows, term 0 has {n}", t.factors.rows()),
        ));
    }
    Ok(n)
}

/// [`check_terms`] plus the output length of [`Backend::scores`]; returns `(queries, train)`.
pub fn check_scores(terms: &[Term<'_>], out_len: usize) -> Result<(usize, usize)> {
    let (nq, nt) = check_terms(terms)?;
    if out_len != nq * nt {
        return Err(Error::shape(
            "scores",
            format!("out has {out_len} elements, expected {nq} x {nt}"),
        ));
    }
    Ok((nq, nt))
}

/// [`check_terms`] plus the accumulator of [`Backend::topk`]; returns `(queries, train)`.
pub fn check_topk(terms: &[Term<'_>], acc: &TopK) -> Result<(usize, usize)> {
    let (nq, nt) = check_terms(terms)?;
    if acc.queries() != nq {
        return Err(Error::shape(
            "topk",
            format!("accumulator has {} rows, terms have {nq}", acc.queries()),
        ));
    }
    Ok((nq, nt))
}

/// [`check_self_terms`] plus the output length of [`Backend::self_influence`]; returns
/// the number of examples.
pub fn check_self_influence(terms: &[SelfTerm<'_>], out_len: usize) -> Result<usize> {
    let n = check_self_terms(terms)?;
    if out_len != n {
        return Err(Error::shape(
            "self_influence",
            format!("out has {out_len} elements, expected {n}"),
        ));
    }
    Ok(n)
}

/// A compute backend: CPU (infl-cpu) or GPU (infl-wgpu).
///
/// Three methods are required ([`name`](Backend::name), [`scores`](Backend::scores),
/// [`gemm`](Backend::gemm)); everything else is provided on top of them, as ripgrep's
/// `Matcher` provides its searches on top of `find_at`. A new primitive that a solver needs
/// is added here as a provided method with a plain default, so every backend runs it at
/// once; a backend overrides it only to be faster (both backends override
/// [`topk`](Backend::topk) and [`self_influence`](Backend::self_influence)).
///
/// All methods take host views and write host buffers. Implementations block over rows
/// internally and must not allocate anything proportional to `queries × train` except the
/// caller's `out` of [`Backend::scores`].
pub trait Backend: Send + Sync + fmt::Debug {
    /// A human-readable name, e.g. `cpu (2 threads)` or the GPU adapter's name.
    fn name(&self) -> String;

    /// Full score block: `out[q, t] = Σ_terms w (g_q·g_t)(a_q·a_t + bias)`,
    /// row-major `[queries, train]`, overwritten.
    fn scores(&self, terms: &[Term<'_>], out: &mut [f32]) -> Result<()>;

    /// General matrix product `out = a · b` or `a · bᵀ` (see [`Rhs`]), row-major,
    /// overwritten.
    fn gemm(&self, a: MatRef<'_>, b: MatRef<'_>, rhs: Rhs, out: &mut [f32]) -> Result<()>;

    /// Streams the same scores into `acc`; score column `t` is training index
    /// `train_offset + t`. Rows of `acc` are the query rows.
    ///
    /// Default: [`scores`](Backend::scores) over blocks of training rows of at most
    /// [`DEFAULT_BLOCK_ELEMENTS`] scores each, offered row by row.
    fn topk(&self, terms: &[Term<'_>], train_offset: usize, acc: &mut TopK) -> Result<()> {
        let (nq, nt) = check_topk(terms, acc)?;
        if nq == 0 || nt == 0 {
            return Ok(());
        }
        let mut block = Vec::new();
        for cols in ranges(nt, (DEFAULT_BLOCK_ELEMENTS / nq).max(1)) {
            let part: Vec<Term<'_>> = terms
                .iter()
                .map(|t| Term {
                    train: t.train.slice_rows(cols.start, cols.end),
                    ..*t
                })
                .collect();
            block.resize(nq * cols.len(), 0.0);
            self.scores(&part, &mut block)?;
            for (q, row) in block.chunks_exact(cols.len()).enumerate() {
                acc.offer_row(q, train_offset + cols.start, row);
            }
        }
        Ok(())
    }

    /// Self-influence: `out[n] = Σ_terms w ‖g_n‖² (‖a_n‖² + bias)`, overwritten.
    ///
    /// Default: a single-threaded host loop accumulating in f64 ([`reference::self_influence`]).
    fn self_influence(&self, terms: &[SelfTerm<'_>], out: &mut [f32]) -> Result<()> {
        check_self_influence(terms, out.len())?;
        out.copy_from_slice(&reference::self_influence(terms)?);
        Ok(())
    }

    /// Summed outer products `out = aᵀ · b` (`a` `[n, p]`, `b` `[n, q]`, `out` `[p, q]`):
    /// the uncentred covariance of K-FAC-style curvature estimates.
    ///
    /// Default: transposes `a` on the host and calls [`gemm`](Backend::gemm).
    fn sum_outer(&self, a: MatRef<'_>, b: MatRef<'_>, out: &mut [f32]) -> Result<()> {
        check_sum_outer(a, b, out.len())?;
        let (n, p) = (a.rows(), a.cols());
        let mut at = vec![0.0f32; p * n];
        for i in 0..n {
            for (j, &v) in a.row(i).iter().enumerate() {
                at[j * n + i] = v;
            }
        }
        let at = Matrix::from_vec(p, n, at)?;
        self.gemm(at.view(), b, Rhs::AsIs, out)
    }
}

/// Scores per block of the default [`Backend::topk`] (4 Mi `f32`, 16 MiB).
pub const DEFAULT_BLOCK_ELEMENTS: usize = 1 << 22;

/// Checks the operands of [`Backend::sum_outer`]: `a` `[n, p]`, `b` `[n, q]`, `out` `p·q`.
pub fn check_sum_outer(a: MatRef<'_>, b: MatRef<'_>, out_len: usize) -> Result<()> {
    if a.rows() != b.rows() || out_len != a.cols() * b.cols() {
        return Err(Error::shape(
            "sum_outer",
            format!(
                "a is {}x{}, b is {}x{}, out has {out_len} elements",
                a.rows(),
                a.cols(),
                b.rows(),
                b.cols(),
            ),
        ));
    }
    Ok(())
}

/// Checks GEMM operand shapes; returns `(m, n, k)`.
pub fn check_gemm(
    a: MatRef<'_>,
    b: MatRef<'_>,
    rhs: Rhs,
    out_len: usize,
) -> Result<(usize, usize, usize)> {
    let (bk, n) = match rhs {
        Rhs::Transposed => (b.cols(), b.rows()),
        Rhs::AsIs => (b.rows(), b.cols()),
    };
    if a.cols() != bk || out_len != a.rows() * n {
        return Err(Error::shape(
            "gemm",
            format!(
                "a is {}x{}, b is {}x{} ({rhs:?}), out has {out_len} elements",
                a.rows(),
                a.cols(),
                b.rows(),
                b.cols()
            ),
        ));
    }
    Ok((a.rows(), n, a.cols()))
}

/// A straightforward reference implementation of the kernels (f64 accumulation),
/// used by tests of every backend.
pub mod reference {
    use super::*;

    fn dot(x: &[f32], y: &[f32]) -> f64 {
        x.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    /// Reference for [`Backend::scores`].
    pub fn scores(terms: &[Term<'_>]) -> Result<Vec<f32>> {
        let (nq, nt) = check_terms(terms)?;
        let mut out = vec![0.0f32; nq * nt];
        for q in 0..nq {
            for t in 0..nt {
                let mut s = 0.0f64;
                for term in terms {
                    let ga =
                        dot(term.query.a.row(q), term.train.a.row(t)) + f64::from(term.bias_dot());
                    let gg = dot(term.query.g.row(q), term.train.g.row(t));
                    s += term.weight as f64 * ga * gg;
                }
                out[q * nt + t] = s as f32;
            }
        }
        Ok(out)
    }

    /// Reference for [`Backend::self_influence`].
    pub fn self_influence(terms: &[SelfTerm<'_>]) -> Result<Vec<f32>> {
        let n = check_self_terms(terms)?;
        Ok((0..n)
            .map(|i| {
                terms
                    .iter()
                    .map(|t| {
                        let a = t.factors.a.row(i);
                        let g = t.factors.g.row(i);
                        t.weight as f64 * dot(g, g) * (dot(a, a) + f64::from(t.bias_dot()))
                    })
                    .sum::<f64>() as f32
            })
            .collect())
    }

    /// Reference for [`Backend::gemm`].
    pub fn gemm(a: MatRef<'_>, b: MatRef<'_>, rhs: Rhs) -> Result<Vec<f32>> {
        let n = match rhs {
            Rhs::Transposed => b.rows(),
            Rhs::AsIs => b.cols(),
        };
        let (m, n, k) = check_gemm(a, b, rhs, a.rows() * n)?;
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for l in 0..k {
                    let bv = match rhs {
                        Rhs::Transposed => b.row(j)[l],
                        Rhs::AsIs => b.row(l)[j],
                    };
                    s += a.row(i)[l] as f64 * bv as f64;
                }
                out[i * n + j] = s as f32;
            }
        }
        Ok(out)
    }
}

/// Forwards every method, provided ones included, so that a wrapped backend's overrides
/// are kept.
macro_rules! forward_backend {
    ($($wrapper:ty),*) => {$(
        impl<B: Backend + ?Sized> Backend for $wrapper {
            fn name(&self) -> String {
                (**self).name()
            }
            fn scores(&self, terms: &[Term<'_>], out: &mut [f32]) -> Result<()> {
                (**self).scores(terms, out)
            }
            fn gemm(&self, a: MatRef<'_>, b: MatRef<'_>, rhs: Rhs, out: &mut [f32]) -> Result<()> {
                (**self).gemm(a, b, rhs, out)
            }
            fn topk(&self, terms: &[Term<'_>], train_offset: usize, acc: &mut TopK) -> Result<()> {
                (**self).topk(terms, train_offset, acc)
            }
            fn self_influence(&self, terms: &[SelfTerm<'_>], out: &mut [f32]) -> Result<()> {
                (**self).self_influence(terms, out)
            }
            fn sum_outer(&self, a: MatRef<'_>, b: MatRef<'_>, out: &mut [f32]) -> Result<()> {
                (**self).sum_outer(a, b, out)
            }
        }
    )*};
}

// A backend chosen at run time (`Box<dyn Backend>`) or borrowed (`&dyn Backend`) drives the
// estimators like the backend itself.
forward_backend!(Box<B>, &B);
