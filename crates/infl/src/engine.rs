//! Scoring a [`TermSet`] with a backend: full scores, streamed top-k, self-influence.

use infl_core::{Backend, Bias, Factors, MatRef, Matrix, SelfTerm, Term, TopK, TopKRows, ranges};
use infl_cpu::CpuBackend;

use std::ops::Range;

use crate::finite;
use crate::prune::{AUTO_LIMIT, Bounds, PairsScored, Pruning, TopKOutcome};
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

    /// Every term's factors as views (checked: every term has test factors).
    fn rows(&self) -> Result<Rows<'_>> {
        let terms = self
            .terms
            .iter()
            .map(|t| {
                Ok(TermRows {
                    weight: t.weight,
                    bias: t.bias,
                    positions: t.positions.max(1),
                    train: t.train.view()?,
                    test: t.test_factors()?.view()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Rows {
            terms,
            queries: self.n_test(),
            train: self.n_train(),
        })
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

/// One term's factors over the rows a backend call scores (views into a [`TermSet`] or
/// into rows gathered from it).
#[derive(Clone, Copy, Debug)]
struct TermRows<'a> {
    weight: f32,
    bias: Bias,
    positions: usize,
    train: Factors<'a>,
    test: Factors<'a>,
}

/// The terms of a [`TermSet`] over some of its examples: `queries` test and `train`
/// training examples (`positions` rows each).
#[derive(Clone, Debug)]
struct Rows<'a> {
    terms: Vec<TermRows<'a>>,
    queries: usize,
    train: usize,
}

impl<'a> Rows<'a> {
    /// The training examples `cols` only.
    fn train_slice(&self, cols: Range<usize>) -> Rows<'a> {
        let terms = self
            .terms
            .iter()
            .map(|t| TermRows {
                train: t
                    .train
                    .slice_rows(cols.start * t.positions, cols.end * t.positions),
                ..*t
            })
            .collect();
        Rows {
            terms,
            queries: self.queries,
            train: cols.len(),
        }
    }

    /// Kernel terms of the plain (one row per example) terms.
    fn kernel_terms(&self) -> Vec<Term<'a>> {
        self.terms
            .iter()
            .filter(|t| t.positions == 1)
            .map(|t| Term {
                weight: t.weight,
                bias: t.bias,
                query: t.test,
                train: t.train,
            })
            .collect()
    }

    /// Whether any term is scored in the ghost form.
    fn has_ghost(&self) -> bool {
        self.terms.iter().any(|t| t.positions > 1)
    }
}

/// What the probe of [`Pruning::Auto`] found.
struct Probe {
    /// Pairs it scored.
    scored: u64,
    /// Whether pruning pays.
    pays: bool,
}

/// Factor rows copied out of a [`TermSet`]: the training examples of a pruning block and,
/// when not all of them, the test examples it is scored for; buffers reused block to block.
#[derive(Debug, Default)]
struct Gathered {
    /// Per term: training `a` and `g`, then test `a` and `g` (empty: all test rows).
    buffers: Vec<[Vec<f32>; 4]>,
}

impl Gathered {
    /// Copies examples `train` (and `test`, unless `None` for all) of every term of `set`.
    fn gather(&mut self, set: &TermSet, train: &[usize], test: Option<&[usize]>) {
        self.buffers.resize_with(set.terms.len(), Default::default);
        for (term, bufs) in set.terms.iter().zip(&mut self.buffers) {
            let [ta, tg, qa, qg] = bufs;
            copy_examples(ta, term.train.a.view(), term.positions, train);
            copy_examples(tg, term.train.g.view(), term.positions, train);
            let test_rows = test.unwrap_or(&[]);
            if let Some(f) = &term.test {
                copy_examples(qa, f.a.view(), term.positions, test_rows);
                copy_examples(qg, f.g.view(), term.positions, test_rows);
            }
        }
    }

    /// `all` restricted to the gathered examples (`queries` test examples, `train`
    /// training ones; the test rows of `all` when none were gathered).
    fn rows<'a>(&'a self, all: &Rows<'a>, queries: usize, train: usize) -> Result<Rows<'a>> {
        let view = |data: &'a [f32], like: MatRef<'_>, n: usize, p: usize| {
            MatRef::new(data, n * p, like.cols())
        };
        let terms = all
            .terms
            .iter()
            .zip(&self.buffers)
            .map(|(t, [ta, tg, qa, qg])| {
                let p = t.positions;
                let train_f = Factors::new(
                    view(ta, t.train.a, train, p)?,
                    view(tg, t.train.g, train, p)?,
                )?;
                let test = if queries == all.queries {
                    t.test
                } else {
                    Factors::new(
                        view(qa, t.test.a, queries, p)?,
                        view(qg, t.test.g, queries, p)?,
                    )?
                };
                Ok(TermRows {
                    train: train_f,
                    test,
                    ..*t
                })
            })
            .collect::<Result<_>>()?;
        Ok(Rows {
            terms,
            queries,
            train,
        })
    }
}

/// Replaces `out` with the rows of `examples` (each `positions` rows) of `m`.
fn copy_examples(out: &mut Vec<f32>, m: MatRef<'_>, positions: usize, examples: &[usize]) {
    out.clear();
    let width = m.cols() * positions;
    for &i in examples {
        out.extend_from_slice(&m.data()[i * width..(i + 1) * width]);
    }
}

/// Position scores per ghost kernel call, at most (4 Mi `f32`, 16 MiB).
const GHOST_BLOCK_ELEMENTS: usize = 1 << 22;

/// Runs a [`TermSet`] on a backend, in chunks of training rows (for progress and to bound
/// the work of each backend call). Top-k prunes pairs by their norm bounds unless told
/// otherwise ([`Pruning`], [`crate::prune`]); the lists are the same either way.
#[derive(Clone, Debug)]
pub struct Engine<B: Backend = CpuBackend> {
    backend: B,
    chunk: usize,
    pruning: Pruning,
    prune_block: usize,
}

impl Default for Engine<CpuBackend> {
    fn default() -> Self {
        Self::new(CpuBackend::new())
    }
}

impl<B: Backend> Engine<B> {
    /// Default chunk of training rows per backend call (a multiple of every tile size).
    pub const DEFAULT_CHUNK: usize = 16_384;

    /// Default training examples per pruning block (a multiple of every tile size).
    pub const DEFAULT_PRUNE_BLOCK: usize = 1024;

    /// An engine on `backend`.
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            chunk: Self::DEFAULT_CHUNK,
            pruning: Pruning::default(),
            prune_block: Self::DEFAULT_PRUNE_BLOCK,
        }
    }

    /// Changes the training rows per backend call (at least 1).
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// Changes whether top-k prunes (see [`Pruning`]).
    pub fn with_pruning(mut self, pruning: Pruning) -> Self {
        self.pruning = pruning;
        self
    }

    /// Changes the training examples per pruning block (at least 1; at least `k` are used).
    pub fn with_prune_block(mut self, rows: usize) -> Self {
        self.prune_block = rows.max(1);
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
        let all = set.rows()?;
        let mut out = full_matrix(nq, nt)?;
        let mut block = Vec::new();
        progress.start("scores", nt as u64);
        for cols in ranges(nt, self.chunk) {
            block.resize(nq * cols.len(), 0.0);
            self.block(&all.train_slice(cols.clone()), &mut block)?;
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
        Ok(self.topk_counted(set, k, progress)?.rows)
    }

    /// [`Engine::topk`] with the number of pairs it scored.
    pub fn topk_counted(
        &self,
        set: &TermSet,
        k: usize,
        progress: &dyn Progress,
    ) -> Result<TopKOutcome> {
        let (nq, nt) = (set.n_test(), set.n_train());
        if k == 0 || k > nt {
            return Err(Error::config(
                "k",
                format!("k = {k}; expected 1 <= k <= {nt} (the number of training examples)"),
            ));
        }
        set.check_shapes()?;
        let norms = finite::checked_norms(set, Splits::TrainAndTest)?;
        let all = set.rows()?;
        let total = nq as u64 * nt as u64;
        progress.start("top-k", nt as u64);
        let block = self.prune_block.max(k);
        let outcome = if self.pruning == Pruning::Off || nq == 0 || nt <= block {
            let mut acc = TopK::new(nq, k)?;
            self.topk_rows(&all, &mut acc, progress)?;
            TopKOutcome {
                rows: acc.finish(),
                pairs: PairsScored {
                    scored: total,
                    total,
                },
            }
        } else {
            self.topk_pruned(set, &all, &Bounds::new(set, &norms), k, progress)?
        };
        progress.finish();
        Ok(outcome)
    }

    /// Unpruned top-k of `rows` into `acc` (candidate `j` is training index `j`), in
    /// chunks of training examples.
    fn topk_rows(&self, rows: &Rows<'_>, acc: &mut TopK, progress: &dyn Progress) -> Result<()> {
        let mut block = Vec::new();
        for cols in ranges(rows.train, self.chunk) {
            let part = rows.train_slice(cols.clone());
            if part.has_ghost() {
                // The pooled block, offered on the host.
                block.resize(rows.queries * cols.len(), 0.0);
                self.block(&part, &mut block)?;
                for (q, row) in block.chunks_exact(cols.len()).enumerate() {
                    acc.offer_row(q, cols.start, row);
                }
            } else {
                self.backend.topk(&part.kernel_terms(), cols.start, acc)?;
            }
            progress.advance(cols.len() as u64);
        }
        Ok(())
    }

    /// Remaining blocks whose bounds the probe samples to predict the pairs left to score.
    const PROBE_BLOCKS: usize = 8;

    /// Test examples the probe scores (evenly spaced; all of them when there are fewer).
    const PROBE_QUERIES: usize = 64;

    /// Training examples per block of the probe (at least `k`): smaller than the engine's
    /// blocks, because the probe's pairs cost several times an unpruned pair (its training
    /// rows are gathered for only 64 test examples).
    const PROBE_ROWS: usize = 256;

    /// The most pairs the probe scores, as a fraction of all pairs.
    const PROBE_BUDGET: f64 = 0.0005;

    /// Top-k over blocks of training examples in decreasing bound order, each scored only
    /// for the test examples it can still improve (see [`crate::prune`]). Under
    /// [`Pruning::Auto`] a probe decides first whether that pays ([`Self::probe`]).
    fn topk_pruned(
        &self,
        set: &TermSet,
        all: &Rows<'_>,
        bounds: &Bounds,
        k: usize,
        progress: &dyn Progress,
    ) -> Result<TopKOutcome> {
        let (nq, nt) = (all.queries, all.train);
        let total = nq as u64 * nt as u64;
        let order = bounds.order(nt);
        let blocks: Vec<Vec<usize>> = order
            .chunks(self.prune_block.max(k))
            .map(|b| {
                let mut rows = b.to_vec();
                rows.sort_unstable();
                rows
            })
            .collect();
        let mut scored = 0u64;
        let mut gathered = Gathered::default();
        if self.pruning == Pruning::Auto {
            let probe = self.probe(set, all, bounds, &order, &blocks, k, &mut gathered)?;
            scored += probe.scored;
            if !probe.pays {
                let mut acc = TopK::new(nq, k)?;
                self.topk_rows(all, &mut acc, progress)?;
                let pairs = PairsScored {
                    scored: scored + total,
                    total,
                };
                return Ok(TopKOutcome {
                    rows: acc.finish(),
                    pairs,
                });
            }
        }
        let mut acc = TopK::new(nq, k)?;
        for rows in &blocks {
            let live = Bounds::live(&acc, &bounds.block_bounds(rows, None));
            scored += self.score_block(set, all, rows, &live, None, &mut acc, &mut gathered)?;
            progress.advance(rows.len() as u64);
        }
        Ok(TopKOutcome {
            rows: acc.finish(),
            pairs: PairsScored { scored, total },
        })
    }

    /// Scores the training examples `rows` (a block, increasing) for the test examples
    /// `live` of `acc` — indices into `queries` when given (`acc` then has one row per
    /// query), else test indices — and merges them into `acc`. Returns the pairs scored.
    #[allow(clippy::too_many_arguments)]
    fn score_block(
        &self,
        set: &TermSet,
        all: &Rows<'_>,
        rows: &[usize],
        live: &[usize],
        queries: Option<&[usize]>,
        acc: &mut TopK,
        gathered: &mut Gathered,
    ) -> Result<u64> {
        if live.is_empty() {
            return Ok(0);
        }
        let tests: Vec<usize> = match queries {
            Some(q) => live.iter().map(|&i| q[i]).collect(),
            None => live.to_vec(),
        };
        let subset = (tests.len() < all.queries).then_some(&tests[..]);
        gathered.gather(set, rows, subset);
        let view = gathered.rows(all, tests.len(), rows.len())?;
        let mut local = acc.part(live, acc.k().min(rows.len()))?;
        self.topk_rows(&view, &mut local, &())?;
        acc.merge_mapped(&local, live, rows)?;
        Ok((live.len() * rows.len()) as u64)
    }

    /// The probe of [`Pruning::Auto`]: pruned top-k for an evenly spaced sample of
    /// [`Self::PROBE_QUERIES`] test examples, in blocks of [`Self::PROBE_ROWS`] training
    /// examples in bound order, until the thresholds it has reached say that pruning pays — the sample's live fraction over an evenly
    /// spaced sample of [`Self::PROBE_BLOCKS`] blocks still ahead is at most
    /// [`AUTO_LIMIT`] (an upper estimate: thresholds only rise) — or until it has scored
    /// [`Self::PROBE_BUDGET`] of all pairs (at least one block). So an input whose bounds
    /// prune nothing pays a twentieth of a percent of the pairs or one sampled block (scored
    /// several times less efficiently than unpruned pairs: their training rows are
    /// gathered for 64 test examples), and one where thresholds rise slowly (large `k`)
    /// is probed long enough to see it.
    #[allow(clippy::too_many_arguments)]
    fn probe(
        &self,
        set: &TermSet,
        all: &Rows<'_>,
        bounds: &Bounds,
        order: &[usize],
        blocks: &[Vec<usize>],
        k: usize,
        gathered: &mut Gathered,
    ) -> Result<Probe> {
        let nq = all.queries;
        let step = nq.div_ceil(Self::PROBE_QUERIES).max(1);
        let queries: Vec<usize> = (0..nq).step_by(step).collect();
        let budget = Self::PROBE_BUDGET * nq as f64 * all.train as f64;
        let stride = blocks.len().div_ceil(Self::PROBE_BLOCKS).max(1);
        // The sampled blocks' bounds for the sampled queries, by first position in `order`.
        let sampled: Vec<(usize, Vec<f64>)> = (1..blocks.len())
            .step_by(stride)
            .map(|c| {
                let start = c * blocks[0].len();
                (start, bounds.block_bounds(&blocks[c], Some(&queries)))
            })
            .collect();
        let mut acc = TopK::new(queries.len(), k)?;
        let (mut scored, mut done) = (0u64, 0usize);
        for chunk in order.chunks(Self::PROBE_ROWS.max(k)) {
            let mut rows = chunk.to_vec();
            rows.sort_unstable();
            let live = Bounds::live(&acc, &bounds.block_bounds(&rows, Some(&queries)));
            scored +=
                self.score_block(set, all, &rows, &live, Some(&queries), &mut acc, gathered)?;
            done += rows.len();
            let (mut live, mut pairs) = (0u64, 0u64);
            for (_, bb) in sampled.iter().filter(|(start, _)| *start >= done) {
                let admitted = (0..queries.len()).filter(|&q| acc.admits(q, bb[q])).count();
                live += admitted as u64;
                pairs += queries.len() as u64;
            }
            if pairs == 0 || live as f64 <= AUTO_LIMIT * pairs as f64 {
                return Ok(Probe { scored, pays: true });
            }
            if scored as f64 >= budget {
                break;
            }
        }
        Ok(Probe {
            scored,
            pays: false,
        })
    }

    /// Scores of every test example against the training examples of `rows`, into
    /// `block` (`[test, train]`): the plain terms in one fused call, then each ghost term.
    fn block(&self, rows: &Rows<'_>, block: &mut [f32]) -> Result<()> {
        let plain = rows.kernel_terms();
        if plain.is_empty() {
            block.fill(0.0);
        } else {
            self.backend.scores(&plain, block)?;
        }
        for term in rows.terms.iter().filter(|t| t.positions > 1) {
            self.add_ghost(term, rows.queries, rows.train, block)?;
        }
        Ok(())
    }

    /// Adds a ghost term's scores against its `width` training examples to `block`: the
    /// fused kernel over position rows (`[T·S, c·S]`, in pieces of at most
    /// [`GHOST_BLOCK_ELEMENTS`]), each `S × S` square summed in f64.
    fn add_ghost(
        &self,
        term: &TermRows<'_>,
        nq: usize,
        width: usize,
        block: &mut [f32],
    ) -> Result<()> {
        let s = term.positions;
        let piece = (GHOST_BLOCK_ELEMENTS / (nq * s * s).max(1)).max(1);
        let mut expanded = Vec::new();
        for sub in ranges(width, piece) {
            let kernel = Term {
                weight: term.weight,
                bias: term.bias,
                query: term.test,
                train: term.train.slice_rows(sub.start * s, sub.end * s),
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
