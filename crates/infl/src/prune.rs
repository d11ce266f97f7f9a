//! Exact top-k at a fraction of the work: norm-bound pruning, one mechanism for every
//! term set the [`Engine`](crate::Engine) scores.
//!
//! By Cauchy–Schwarz a term's score of a (test, train) pair is at most the product of the
//! two examples' gradient norms in that term: `|w (g_q·g_j)(a_q·a_j + bias)| ≤
//! |w| ‖g_q‖‖ã_q‖ · ‖g_j‖‖ã_j‖` with `ã = (a, √bias)`. Summed over terms, per term,
//! this is never looser than the single `√(self_q · self_j)` (Cauchy–Schwarz again) and
//! usually much tighter. So a block of training examples whose largest bound for a test
//! example is below that example's current `k`-th proponent *and* opponent cannot enter
//! either list ([`TopK::admits`]), and is not scored for it.
//!
//! Design choices:
//! - **Groups.** Terms that share their training factors (influence functions' rank-one
//!   terms `e_r ⊗ X_q[r]` against the unchanged `(a, g)`) are bounded together: their
//!   query side is the Frobenius norm of `Σ_r w_r g_r ⊗ ã_r` (the preconditioned query
//!   gradient's norm), not the sum of the members' norms, which would be up to `√K` looser.
//!   Every other term is its own group. A ghost term (`S` positions) is bounded by the
//!   triangle inequality, `Σ_s ‖g_s‖‖ã_s‖` on both sides.
//! - **Rounding.** The bound must hold for the *computed* f32 score, not only the exact
//!   one: every f32 dot product of length `n` is within `γ_n Σ|x_i y_i| ≤ n·u ‖x‖‖y‖` of the
//!   exact value, whatever the summation order (CPU or GPU), so the query side is raised
//!   by `ε · Σ_r |w_r| ‖g_r‖‖ã_r‖` with `ε = 2 u (max (Da + Dg) + terms + 8)`, `u = 2⁻²⁴`
//!   (at least `10⁻⁶`). Norms are the f64 norms of [`finite`](crate::finite)'s check,
//!   computed once with it.
//! - **Order and blocks.** Training examples are visited in decreasing order of their bound
//!   against the largest query coefficients, in blocks of [`Engine::with_prune_block`]
//!   rows copied out of the (possibly memory-mapped) inputs, in increasing index within a
//!   block so that a block's own top-k breaks ties as the whole does. Large-norm examples
//!   come first, so thresholds rise fast; a block is scored only for the test examples it
//!   can still improve (copied too when they are not all of them), through the same
//!   backend top-k as unpruned scoring. Both backends compute a score the same way
//!   whatever rows it is computed with (`backend_tests!`'s
//!   `scores_do_not_depend_on_the_rows_scored_with_them`), so the result is **identical**
//!   to unpruned top-k, ties included.
//! - **Block bounds.** A test example's bound against a block is the largest of the
//!   rows' own bounds (`O(groups)` per pair, a small fraction of scoring), not the sum
//!   of each group's largest norm: checkpoints order the examples differently, and on
//!   full-MNIST features that looser bound left 81% of the pairs to score at k = 10
//!   against 20% with this one. A block's bounds for every test example are one f64
//!   product `[rows, groups] · [groups, tests]` (sequential faer), computed when the
//!   block is reached.
//! - **When it does not pay.** Under [`Pruning::Auto`] a probe decides first: pruned
//!   top-k for an evenly spaced sample of 64 test examples, in blocks of 256 training
//!   examples in bound order, until the thresholds reached say that at most
//!   [`AUTO_LIMIT`] of the sample's pairs in 8 evenly spaced engine blocks still ahead
//!   remain live (an upper estimate: thresholds only rise) — then all test examples are
//!   pruned — or until it has scored a twentieth of a percent of all pairs — then top-k runs
//!   unpruned. An input whose bounds prune nothing pays the order of the training
//!   examples and that twentieth of a percent (+0.4–2.5% measured at N = 50,000, T = 1,000; the
//!   first probe, one engine block scored for every test example, cost 7–11%:
//!   BENCHMARKS.md); on full-MNIST k = 100, whose thresholds rise more slowly, the probe
//!   sees that pruning pays and it scores 35% of the pairs (a single-block probe gave up).
//!
//! [`Engine::with_prune_block`]: crate::Engine::with_prune_block

use std::collections::HashMap;

use infl_core::{TopK, TopKRows, rank_descending};

use crate::engine::{FactorTerm, TermSet};
use crate::finite::ExampleNorms;

/// Whether top-k skips pairs that provably cannot enter the lists (the result is the same
/// either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pruning {
    /// Prune when the first block of training examples shows that it pays (the default).
    #[default]
    Auto,
    /// Always prune (for tests and measurements).
    Always,
    /// Score every pair (`--no-prune`).
    Off,
}

/// Under [`Pruning::Auto`], the largest predicted fraction of pairs still to score after
/// the probe for which pruning goes on.
pub const AUTO_LIMIT: f64 = 0.8;

/// How many (test, train) pairs a top-k computation scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairsScored {
    /// Pairs scored (a dropped probe counts: it can exceed `total`).
    pub scored: u64,
    /// Test examples × training examples.
    pub total: u64,
}

impl PairsScored {
    /// `scored / total` (1 for an empty problem).
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.scored as f64 / self.total as f64
        }
    }
}

/// Top-k lists with the work they took.
#[derive(Clone, Debug, PartialEq)]
pub struct TopKOutcome {
    /// The lists.
    pub rows: TopKRows,
    /// Pairs scored.
    pub pairs: PairsScored,
}

/// Terms bounded together: a query coefficient per test example and a norm per training
/// example, whose product bounds the group's computed score of the pair.
#[derive(Debug)]
struct Group {
    query: Vec<f64>,
    train: Vec<f64>,
}

/// The bounds of a term set: `|score(q, j)| ≤ Σ_G query_G(q) · train_G(j)`.
#[derive(Debug)]
pub(crate) struct Bounds {
    groups: Vec<Group>,
}

/// Largest group whose query side is computed as a Frobenius norm (`O(members²)` per
/// test example); larger ones use the sum of the members' norms.
const MAX_FROBENIUS_MEMBERS: usize = 64;

impl Bounds {
    /// The bounds of `set` from the norms of its finiteness check (both splits).
    pub fn new(set: &TermSet, norms: &ExampleNorms) -> Self {
        let eps = rounding_allowance(set);
        let groups = share_training_factors(set)
            .into_iter()
            .map(|members| {
                let first = members[0];
                let sum: Vec<f64> = (0..set.n_test())
                    .map(|q| {
                        members
                            .iter()
                            .map(|&t| f64::from(set.terms[t].weight).abs() * norms.test[t][q])
                            .sum()
                    })
                    .collect();
                let query = if (2..=MAX_FROBENIUS_MEMBERS).contains(&members.len()) {
                    let frobenius = frobenius(set, &members);
                    sum.iter()
                        .zip(frobenius)
                        .map(|(&s, f)| f.min(s) + eps * s)
                        .collect()
                } else {
                    sum.iter().map(|&s| s * (1.0 + eps)).collect()
                };
                Group {
                    query,
                    train: norms.train[first].clone(),
                }
            })
            .collect();
        Self { groups }
    }

    /// Training examples in decreasing order of their bound against each group's largest
    /// query coefficient (ties to the lower index).
    pub fn order(&self, n_train: usize) -> Vec<usize> {
        let top: Vec<f64> = self
            .groups
            .iter()
            .map(|g| g.query.iter().fold(0.0, |m: f64, &x| m.max(x)))
            .collect();
        let key: Vec<f64> = (0..n_train)
            .map(|j| {
                self.groups
                    .iter()
                    .zip(&top)
                    .map(|(g, t)| t * g.train[j])
                    .sum()
            })
            .collect();
        rank_descending(&key)
    }

    /// Per test example (or per example of `queries`, in its order), its bound against the
    /// block `rows`: the largest over the rows of the row's own bound (not the sum of each
    /// group's largest norm, which is far looser when the groups' orders differ, e.g.
    /// checkpoints). The row bounds of a chunk of test examples are one f64 product
    /// `[rows, groups] · [groups, tests]` (sequential, so the bounds do not depend on the
    /// thread count); f64 rounding is far inside the bounds' allowance.
    pub fn block_bounds(&self, rows: &[usize], queries: Option<&[usize]>) -> Vec<f64> {
        use faer::linalg::matmul::matmul;
        use faer::{Accum, Mat, Par};
        /// Test examples per product (bounds the `[rows, chunk]` buffer).
        const CHUNK: usize = 1024;
        let all = self.groups.first().map_or(0, |g| g.query.len());
        let n_test = queries.map_or(all, <[usize]>::len);
        let query_index = |q: usize| queries.map_or(q, |s| s[q]);
        // Column-major `[rows, tests]`: a test example's row bounds are one column.
        let train = Mat::from_fn(rows.len(), self.groups.len(), |j, g| {
            self.groups[g].train[rows[j]]
        });
        let mut out = Vec::with_capacity(n_test);
        let mut row_bound = Mat::<f64>::zeros(rows.len(), CHUNK.min(n_test));
        for q0 in (0..n_test).step_by(CHUNK) {
            let m = CHUNK.min(n_test - q0);
            let query = Mat::from_fn(self.groups.len(), m, |g, q| {
                self.groups[g].query[query_index(q0 + q)]
            });
            let dst = row_bound.as_mut().subcols_mut(0, m);
            matmul(
                dst,
                Accum::Replace,
                train.as_ref(),
                query.as_ref(),
                1.0,
                Par::Seq,
            );
            out.extend((0..m).map(|q| row_bound.col(q).iter().fold(0.0, |b: f64, &x| b.max(x))));
        }
        out
    }

    /// Test examples that a block with bounds `block` ([`Self::block_bounds`]) can still
    /// improve in `acc`.
    pub fn live(acc: &TopK, block: &[f64]) -> Vec<usize> {
        (0..acc.queries())
            .filter(|&q| acc.admits(q, block[q]))
            .collect()
    }
}

/// `ε` of the module docs: the relative rounding allowance of a computed score.
fn rounding_allowance(set: &TermSet) -> f64 {
    let widest = set
        .terms
        .iter()
        .map(|t| t.train.a.cols() + t.train.g.cols())
        .max()
        .unwrap_or(0);
    let u = f64::from(f32::EPSILON) / 2.0;
    (2.0 * u * (widest + set.terms.len() + 8) as f64).max(1e-6)
}

/// Indices of the terms, grouped by shared training factors (same storage, shape and bias,
/// one row per example); ghost terms and all others alone, in order of first member.
fn share_training_factors(set: &TermSet) -> Vec<Vec<usize>> {
    let key = |t: &FactorTerm| {
        let (a, g) = (t.train.a.view(), t.train.g.view());
        (
            a.data().as_ptr() as usize,
            g.data().as_ptr() as usize,
            a.cols(),
            g.cols(),
            a.rows(),
            t.bias,
        )
    };
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut seen: HashMap<_, usize> = HashMap::new();
    for (i, t) in set.terms.iter().enumerate() {
        if t.is_ghost() {
            groups.push(vec![i]);
            continue;
        }
        match seen.get(&key(t)) {
            Some(&g) => groups[g].push(i),
            None => {
                seen.insert(key(t), groups.len());
                groups.push(vec![i]);
            }
        }
    }
    groups
}

/// Per test example, `‖Σ_r w_r g_r ⊗ ã_r‖_F` over the group's terms, in f64:
/// `√(Σ_{r,s} w_r w_s (g_r·g_s)(a_r·a_s + bias))`.
fn frobenius(set: &TermSet, members: &[usize]) -> Vec<f64> {
    let dot = |x: &[f32], y: &[f32]| -> f64 {
        x.iter()
            .zip(y)
            .map(|(&p, &q)| f64::from(p) * f64::from(q))
            .sum()
    };
    let tests: Vec<_> = members
        .iter()
        .map(|&t| {
            let term = &set.terms[t];
            let f = term.test.as_ref().expect("checked: top-k has test factors");
            (f64::from(term.weight), f.a.view(), f.g.view())
        })
        .collect();
    let bias = f64::from(set.terms[members[0]].bias.input_dot());
    (0..set.n_test())
        .map(|q| {
            let mut sq = 0.0;
            for (r, (wr, ar, gr)) in tests.iter().enumerate() {
                for (s, (ws, as_, gs)) in tests.iter().enumerate().skip(r) {
                    let gg = dot(gr.row(q), gs.row(q));
                    if gg == 0.0 {
                        continue;
                    }
                    let both = if r == s { 1.0 } else { 2.0 };
                    sq += both * wr * ws * gg * (dot(ar.row(q), as_.row(q)) + bias);
                }
            }
            sq.max(0.0).sqrt()
        })
        .collect()
}
