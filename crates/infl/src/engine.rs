//! Scoring a [`TermSet`] with a backend: full scores, streamed top-k, self-influence.

use infl_core::{Backend, Bias, Factors, Matrix, SelfTerm, Term, TopK, TopKRows, ranges};
use infl_cpu::CpuBackend;

use std::ops::Range;

use crate::finite;
use crate::run::Splits;
use crate::{Error, Result};

/// Reports progress of long computations (the CLI draws bars; the default does nothing).
pub trait Progress: Sync {
    /// A new phase of `total` units starts.
    fn start(&self, _what: &str, _total: u64) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// The phase is over.
    fn finish(&self) {}
}

impl Progress for () {}

/// Owned factors of one set of examples: layer inputs `a` `[n, Da]` and output gradients
/// `g` `[n, Dg]`, one row per example.
#[derive(Clone, Debug)]
pub struct FactorMatrices {
    /// Layer inputs.
    pub a: Matrix,
    /// Output gradients.
    pub g: Matrix,
}

impl FactorMatrices {
    /// A borrowed view (checks that `a` and `g` have the same rows).
    pub fn view(&self) -> Result<Factors<'_>> {
        Ok(Factors::new(self.a.view(), self.g.view())?)
    }

    /// Number of examples.
    pub fn rows(&self) -> usize {
        self.a.rows()
    }
}

/// Factors of one (checkpoint, layer) for the training and (optionally) test examples.
#[derive(Clone, Debug)]
pub struct FactorTerm {
    /// Where the term comes from, for messages (e.g. `checkpoint epoch-3`).
    pub label: String,
    /// Weight of the term: the learning rate of its checkpoint.
    pub weight: f32,
    /// Whether the bias gradient is included (adds 1 to every input dot product).
    pub bias: Bias,
    /// Rows per example: 1 for a plain term; `S > 1` for the ghost form of a layer seen at
    /// `S` positions (rows `i·S .. (i+1)·S` are example `i`'s), scored
    /// `w Σ_{s,t} (g_s·g'_t)(a_s·a'_t + bias)`.
    pub positions: usize,
    /// Training factors `[N·positions, ·]`.
    pub train: FactorMatrices,
    /// Test factors `[T·positions, ·]`, if there is a test set.
    pub test: Option<FactorMatrices>,
}

impl FactorTerm {
    /// Whether the term is scored in the ghost form (more than one row per example).
    pub fn is_ghost(&self) -> bool {
        self.positions > 1
    }

    /// The test factors, or the error of scores that need them.
    fn test_factors(&self) -> Result<&FactorMatrices> {
        self.test
            .as_ref()
            .ok_or_else(|| Error::config("test set", "these scores need test examples"))
    }

    /// Rows of example `i` in the term's factors.
    pub fn rows_of(&self, i: usize) -> Range<usize> {
        i * self.positions..(i + 1) * self.positions
    }
}

/// All terms of an attribution problem: `score(i, j) = Σ_terms w (g_i·g_j)(a_i·a_j + bias)`
/// (summed over position pairs for ghost terms).
///
/// TracInCPFast builds one term per checkpoint; TracInCP over several layers builds one
/// per (checkpoint, layer). Scoring does not care where the terms came from: plain terms go
/// to the backend's fused kernels together; a ghost term is scored by the same fused kernel
/// over its positions and pooled per example pair (see [`Engine`]).
#[derive(Clone, Debug, Default)]
pub struct TermSet {
    /// The terms.
    pub terms: Vec<FactorTerm>,
}

impl TermSet {
    /// Number of training examples.
    pub fn n_train(&self) -> usize {
        self.terms
            .first()
            .map_or(0, |t| t.train.rows() / t.positions.max(1))
    }

    /// Number of test examples (0 without a test set).
    pub fn n_test(&self) -> usize {
        self.terms.first().map_or(0, |t| {
            t.test.as_ref().map_or(0, |f| f.rows() / t.positions.max(1))
        })
    }

    /// Whether any term is scored in the ghost form.
    fn has_ghost(&self) -> bool {
        self.terms.iter().any(FactorTerm::is_ghost)
    }

    /// Kernel terms of the plain (one row per example) terms, for the test rows against
    /// training rows `train`.
    fn kernel_terms(&self, train: Range<usize>) -> Result<Vec<Term<'_>>> {
        self.terms
            .iter()
            .filter(|t| !t.is_ghost())
            .map(|t| {
                let test = t.test_factors()?;
                Ok(Term {
                    weight: t.weight,
                    bias: t.bias,
                    query: test.view()?,
                    train: t.train.view()?.slice_rows(train.start, train.end),
                })
            })
            .collect()
    }

    /// Checks that every term has a test set and consistent rows.
    fn check_shapes(&self) -> Result<()> {
        let (n, t) = (self.n_train(), self.n_test());
        for term in &self.terms {
            let p = term.positions.max(1);
            let test = term.test_factors()?;
            if term.train.rows() != n * p || test.rows() != t * p {
                return Err(Error::config(
                    "terms",
                    format!(
                        "{}: expected {n} training and {t} test examples of {p} rows each, \
                         found {} and {} rows",
                        term.label,
                        term.train.rows(),
                        test.rows()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Position scores per ghost kernel call, at most (4 Mi `f32`, 16 MiB).
const GHOST_BLOCK_ELEMENTS: usize = 1 << 22;

/// Runs a [`TermSet`] on a backend, in chunks of training rows (for progress and to bound
/// the work of each backend call).
#[derive(Clone, Debug)]
pub struct Engine<B: Backend = CpuBackend> {
    backend: B,
    chunk: usize,
}

impl Default for Engine<CpuBackend> {
    fn default() -> Self {
        Self::new(CpuBackend::new())
    }
}

impl<B: Backend> Engine<B> {
    /// Default chunk of training rows per backend call (a multiple of every tile size).
    pub const DEFAULT_CHUNK: usize = 16_384;

    /// An engine on `backend`.
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            chunk: Self::DEFAULT_CHUNK,
        }
    }

    /// Changes the training rows per backend call (at least 1).
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The full `[test, train]` score matrix, row-major.
    pub fn scores(&self, set: &TermSet, progress: &dyn Progress) -> Result<Vec<f32>> {
        let (nq, nt) = (set.n_test(), set.n_train());
        set.check_shapes()?;
        finite::check(set, Splits::TrainAndTest)?;
        let mut out = full_matrix(nq, nt)?;
        let mut block = Vec::new();
        progress.start("scores", nt as u64);
        for cols in ranges(nt, self.chunk) {
            block.resize(nq * cols.len(), 0.0);
            self.block(set, cols.clone(), &mut block)?;
            for (q, row) in block.chunks_exact(cols.len()).enumerate() {
                out[q * nt + cols.start..q * nt + cols.end].copy_from_slice(row);
            }
            progress.advance(cols.len() as u64);
        }
        progress.finish();
        Ok(out)
    }

    /// The `k` strongest proponents and opponents of every test example, streamed over
    /// training chunks: memory is `O(test × k)` beyond the inputs.
    pub fn topk(&self, set: &TermSet, k: usize, progress: &dyn Progress) -> Result<TopKRows> {
        let (nq, nt) = (set.n_test(), set.n_train());
        if k == 0 || k > nt {
            return Err(Error::config(
                "k",
                format!("k = {k}; expected 1 <= k <= {nt} (the number of training examples)"),
            ));
        }
        set.check_shapes()?;
        finite::check(set, Splits::TrainAndTest)?;
        let mut acc = TopK::new(nq, k)?;
        let mut block = Vec::new();
        progress.start("top-k", nt as u64);
        for cols in ranges(nt, self.chunk) {
            if set.has_ghost() {
                // The pooled block, offered on the host.
                block.resize(nq * cols.len(), 0.0);
                self.block(set, cols.clone(), &mut block)?;
                for (q, row) in block.chunks_exact(cols.len()).enumerate() {
                    acc.offer_row(q, cols.start, row);
                }
            } else {
                let terms = set.kernel_terms(cols.clone())?;
                self.backend.topk(&terms, cols.start, &mut acc)?;
            }
            progress.advance(cols.len() as u64);
        }
        progress.finish();
        Ok(acc.finish())
    }

    /// Scores of every test example against the training examples `cols`, into `block`
    /// (`[test, cols]`): the plain terms in one fused call, then each ghost term.
    fn block(&self, set: &TermSet, cols: Range<usize>, block: &mut [f32]) -> Result<()> {
        let plain = set.kernel_terms(cols.clone())?;
        if plain.is_empty() {
            block.fill(0.0);
        } else {
            self.backend.scores(&plain, block)?;
        }
        for term in set.terms.iter().filter(|t| t.is_ghost()) {
            self.add_ghost(term, cols.clone(), block)?;
        }
        Ok(())
    }

    /// Adds a ghost term's scores against training examples `cols` to `block`: the fused
    /// kernel over position rows (`[T·S, c·S]`, in pieces of at most
    /// [`GHOST_BLOCK_ELEMENTS`]), each `S × S` square summed in f64.
    fn add_ghost(&self, term: &FactorTerm, cols: Range<usize>, block: &mut [f32]) -> Result<()> {
        let s = term.positions;
        let test = term.test_factors()?;
        let nq = test.rows() / s;
        let width = cols.len();
        let piece = (GHOST_BLOCK_ELEMENTS / (nq * s * s).max(1)).max(1);
        let mut expanded = Vec::new();
        for sub in ranges(width, piece) {
            let (start, end) = (cols.start + sub.start, cols.start + sub.end);
            let kernel = Term {
                weight: term.weight,
                bias: term.bias,
                query: test.view()?,
                train: term.train.view()?.slice_rows(start * s, end * s),
            };
            let row_len = sub.len() * s;
            expanded.resize(nq * s * row_len, 0.0);
            self.backend.scores(&[kernel], &mut expanded)?;
            for q in 0..nq {
                for j in 0..sub.len() {
                    let mut sum = 0f64;
                    for qs in q * s..(q + 1) * s {
                        let row = &expanded[qs * row_len + j * s..qs * row_len + (j + 1) * s];
                        sum += row.iter().map(|&x| f64::from(x)).sum::<f64>();
                    }
                    let cell = &mut block[q * width + sub.start + j];
                    *cell = (f64::from(*cell) + sum) as f32;
                }
            }
        }
        Ok(())
    }

    /// Self-influence of every training example: `Σ_terms w ‖g‖² (‖a‖² + bias)`.
    ///
    /// A value that f32 cannot hold is an error naming the checkpoint and example (see
    /// [`finite`]); it is looked for after the kernel, which costs `O(train)`, and named by
    /// the f64 check only then.
    pub fn self_influence(&self, set: &TermSet) -> Result<Vec<f32>> {
        let terms: Vec<SelfTerm<'_>> = set
            .terms
            .iter()
            .filter(|t| !t.is_ghost())
            .map(|t| {
                Ok(SelfTerm {
                    weight: t.weight,
                    bias: t.bias,
                    factors: t.train.view()?,
                })
            })
            .collect::<Result<_>>()?;
        let mut out = vec![0.0f32; set.n_train()];
        if !terms.is_empty() {
            self.backend.self_influence(&terms, &mut out)?;
        }
        for term in set.terms.iter().filter(|t| t.is_ghost()) {
            for (i, x) in out.iter_mut().enumerate() {
                *x = (f64::from(*x) + f64::from(term.weight) * ghost_self(term, i)) as f32;
            }
        }
        let fits = |x: &f32| x.is_finite() && f64::from(x.abs()) <= finite::LIMIT;
        if let Some(i) = out.iter().position(|x| !fits(x)) {
            finite::check(set, Splits::TrainOnly)?;
            return Err(Error::NonFinite {
                checkpoint: "all checkpoints".into(),
                split: "train",
                example: i,
                details: format!("its self-influence {} does not fit in f32", out[i]),
            });
        }
        Ok(out)
    }
}

/// `Σ_{s,t} (g_s·g_t)(a_s·a_t + bias)` over the positions of training example `i` of a
/// ghost term, in f64: the squared norm of its gradient (`O(S² (K + D))`, on the host).
pub(crate) fn ghost_self(term: &FactorTerm, i: usize) -> f64 {
    let (a, g) = (term.train.a.view(), term.train.g.view());
    let dot = |x: &[f32], y: &[f32]| -> f64 {
        x.iter()
            .zip(y)
            .map(|(&p, &q)| f64::from(p) * f64::from(q))
            .sum()
    };
    let bias = f64::from(term.bias.input_dot());
    let rows = term.rows_of(i);
    let mut sum = 0.0;
    for s in rows.clone() {
        for t in rows.clone() {
            sum += dot(g.row(s), g.row(t)) * (dot(a.row(s), a.row(t)) + bias);
        }
    }
    sum
}

/// A zeroed `[queries, train]` matrix, or an error (not an abort) when it cannot be
/// allocated.
fn full_matrix(queries: usize, train: usize) -> Result<Vec<f32>> {
    let too_large = || {
        Error::config(
            "scores",
            format!(
                "the full [{queries} x {train}] score matrix cannot be allocated ({:.1} GiB); \
                 use top-k (streamed, memory O(test x k)) or fewer test examples",
                queries as f64 * train as f64 * 4.0 / (1u64 << 30) as f64
            ),
        )
    };
    let len = queries.checked_mul(train).ok_or_else(too_large)?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| too_large())?;
    out.resize(len, 0.0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_score_matrix_is_an_error_not_an_abort() {
        for (q, t) in [(usize::MAX / 2, 4), (1 << 31, 1 << 31), (1 << 20, 1 << 40)] {
            let e = full_matrix(q, t).unwrap_err().to_string();
            assert!(e.contains("use top-k"), "{e}");
        }
        assert_eq!(full_matrix(3, 5).unwrap(), vec![0.0; 15]);
    }
}
