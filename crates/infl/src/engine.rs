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
    /// Training factors `[N, ·]`.
    pub train: FactorMatrices,
    /// Test factors `[T, ·]`, if there is a test set.
    pub test: Option<FactorMatrices>,
}

/// All terms of an attribution problem: `score(i, j) = Σ_terms w (g_i·g_j)(a_i·a_j + bias)`.
///
/// TracInCPFast builds one term per checkpoint; TracInCP over several layers builds one
/// per (checkpoint, layer). Scoring does not care where the terms came from.
#[derive(Clone, Debug, Default)]
pub struct TermSet {
    /// The terms.
    pub terms: Vec<FactorTerm>,
}

impl TermSet {
    /// Number of training examples.
    pub fn n_train(&self) -> usize {
        self.terms.first().map_or(0, |t| t.train.rows())
    }

    /// Number of test examples (0 without a test set).
    pub fn n_test(&self) -> usize {
        self.terms
            .first()
            .and_then(|t| t.test.as_ref())
            .map_or(0, FactorMatrices::rows)
    }

    /// Kernel terms for the test rows against training rows `train_rows`.
    fn kernel_terms(&self, train_rows: Range<usize>) -> Result<Vec<Term<'_>>> {
        self.terms
            .iter()
            .map(|t| {
                let test = t
                    .test
                    .as_ref()
                    .ok_or_else(|| Error::config("test set", "these scores need test examples"))?;
                Ok(Term {
                    weight: t.weight,
                    bias: t.bias,
                    query: test.view()?,
                    train: t.train.view()?.slice_rows(train_rows.start, train_rows.end),
                })
            })
            .collect()
    }
}

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
        set.kernel_terms(0..0)?;
        finite::check(set, Splits::TrainAndTest)?;
        let mut out = full_matrix(nq, nt)?;
        let mut block = Vec::new();
        progress.start("scores", nt as u64);
        for cols in ranges(nt, self.chunk) {
            let terms = set.kernel_terms(cols.clone())?;
            block.resize(nq * cols.len(), 0.0);
            self.backend.scores(&terms, &mut block)?;
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
        set.kernel_terms(0..0)?;
        finite::check(set, Splits::TrainAndTest)?;
        let mut acc = TopK::new(nq, k)?;
        progress.start("top-k", nt as u64);
        for cols in ranges(nt, self.chunk) {
            let terms = set.kernel_terms(cols.clone())?;
            self.backend.topk(&terms, cols.start, &mut acc)?;
            progress.advance(cols.len() as u64);
        }
        progress.finish();
        Ok(acc.finish())
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
            .map(|t| {
                Ok(SelfTerm {
                    weight: t.weight,
                    bias: t.bias,
                    factors: t.train.view()?,
                })
            })
            .collect::<Result<_>>()?;
        let mut out = vec![0.0f32; set.n_train()];
        self.backend.self_influence(&terms, &mut out)?;
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
