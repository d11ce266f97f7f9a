//! Generic test bodies for [`Backend`] implementations (feature `testing`).
//!
//! Each kernel has one test body here, comparing a backend against the f64
//! [`reference`](crate::backend::reference) with a relative + absolute tolerance scaled by
//! the dot-product length. [`backend_tests!`](crate::backend_tests) instantiates all of
//! them for a backend, so every backend runs exactly the same checks.

use crate::backend::reference;
use crate::{Backend, Bias, Factors, MatRef, Matrix, Rhs, SelfTerm, Term, TopK, TopKRows};

/// Row counts that break workgroup and tile multiples.
pub const ODD_ROWS: [usize; 4] = [1, 63, 137, 257];

/// A seeded pseudo-random matrix with entries in [-1, 1) (SplitMix64; no dependency).
pub fn rand_matrix(rows: usize, cols: usize, seed: u64) -> Matrix {
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    Matrix::from_fn(rows, cols, |_, _| {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    })
}

/// Rounds every element through a lower precision (e.g. `|x| half::f16::from_f32(x).to_f32()`),
/// to test inputs that were stored as f16/bf16.
pub fn round_through(m: &Matrix, f: impl Fn(f32) -> f32) -> Matrix {
    Matrix::from_fn(m.rows(), m.cols(), |r, c| f(m.view().row(r)[c]))
}

/// Asserts `|got - want| <= rel · |want| + abs` with `abs = eps · dot_len · scale`,
/// where `scale` is the largest `|want|` (f32 rounding grows with the dot length).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], dot_len: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-30);
    let eps = f32::EPSILON;
    let abs = 4.0 * eps * (dot_len as f32).sqrt().max(1.0) * scale;
    let rel = 8.0 * eps * (dot_len as f32).sqrt().max(1.0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * w.abs() + abs,
            "{what}[{i}]: got {g}, want {w} (dot length {dot_len})"
        );
    }
}

/// One term's random factors.
#[derive(Debug)]
pub struct TermData {
    /// The term's weight.
    pub weight: f32,
    /// Query layer inputs.
    pub query_a: Matrix,
    /// Query output gradients.
    pub query_g: Matrix,
    /// Training layer inputs.
    pub train_a: Matrix,
    /// Training output gradients.
    pub train_g: Matrix,
}

impl TermData {
    /// Every matrix, for transformations applied to all of them.
    pub fn matrices_mut(&mut self) -> [&mut Matrix; 4] {
        [
            &mut self.query_a,
            &mut self.query_g,
            &mut self.train_a,
            &mut self.train_g,
        ]
    }
}

/// Random factor data for `terms` terms.
#[derive(Debug)]
pub struct Problem {
    /// One entry per term.
    pub data: Vec<TermData>,
    /// Bias applied to every term.
    pub bias: Bias,
}

impl Problem {
    /// Random problem with `nq` queries, `nt` train rows, factor widths `da` and `dg`.
    pub fn new(nq: usize, nt: usize, da: usize, dg: usize, terms: usize, seed: u64) -> Self {
        let data = (0..terms as u64)
            .map(|i| {
                let s = seed.wrapping_mul(31).wrapping_add(i * 7919);
                TermData {
                    weight: 0.5 + i as f32 * 0.25,
                    query_a: rand_matrix(nq, da, s + 1),
                    query_g: rand_matrix(nq, dg, s + 2),
                    train_a: rand_matrix(nt, da, s + 3),
                    train_g: rand_matrix(nt, dg, s + 4),
                }
            })
            .collect();
        Self {
            data,
            bias: Bias::Excluded,
        }
    }

    /// Kernel terms.
    pub fn terms(&self) -> Vec<Term<'_>> {
        self.data
            .iter()
            .map(|d| Term {
                weight: d.weight,
                bias: self.bias,
                query: Factors::new(d.query_a.view(), d.query_g.view()).expect("rows"),
                train: Factors::new(d.train_a.view(), d.train_g.view()).expect("rows"),
            })
            .collect()
    }

    /// Self-influence terms over the train factors.
    pub fn self_terms(&self) -> Vec<SelfTerm<'_>> {
        self.data
            .iter()
            .map(|d| SelfTerm {
                weight: d.weight,
                bias: self.bias,
                factors: Factors::new(d.train_a.view(), d.train_g.view()).expect("rows"),
            })
            .collect()
    }

    fn dot_len(&self) -> usize {
        self.data
            .first()
            .map_or(1, |d| d.query_a.cols() * d.query_g.cols() * self.data.len())
    }
}

/// Body: fused scores equal the reference.
pub fn check_scores(b: &dyn Backend, p: &Problem) {
    let terms = p.terms();
    let want = reference::scores(&terms).expect("reference");
    let mut got = vec![f32::NAN; want.len()];
    b.scores(&terms, &mut got).expect("scores");
    assert_close(&format!("{} scores", b.name()), &got, &want, p.dot_len());
}

/// Body: streamed top-k equals sorting the backend's own full scores, and its scores
/// equal the reference. Indices may differ from the reference only at exact ties.
pub fn check_topk(b: &dyn Backend, p: &Problem, k: usize) {
    let terms = p.terms();
    let nt = terms[0].train.rows();
    let mut full = vec![0.0; terms[0].query.rows() * nt];
    b.scores(&terms, &mut full).expect("scores");
    let mut acc = TopK::new(terms[0].query.rows(), k).expect("k");
    b.topk(&terms, 0, &mut acc).expect("topk");
    let got = acc.finish();
    let want = TopKRows::from_full(&full, nt, k);
    for (g, w) in got
        .proponents
        .iter()
        .chain(&got.opponents)
        .zip(want.proponents.iter().chain(&want.opponents))
    {
        let gs: Vec<f32> = g.iter().map(|r| r.score).collect();
        let ws: Vec<f32> = w.iter().map(|r| r.score).collect();
        assert_close(&format!("{} top-k scores", b.name()), &gs, &ws, p.dot_len());
        for (x, y) in g.iter().zip(w) {
            assert!(
                x.index == y.index || x.score == y.score,
                "{}: top-k index {} vs {} with different scores",
                b.name(),
                x.index,
                y.index
            );
        }
    }
}

/// The rows `rows` of `m`, copied in that order.
fn pick_rows(m: &Matrix, rows: &[usize]) -> Matrix {
    let data = rows
        .iter()
        .flat_map(|&r| m.view().row(r).to_vec())
        .collect();
    Matrix::from_vec(rows.len(), m.cols(), data).expect("rows")
}

/// Body: a score does not depend on which other rows are scored with it. Scores of
/// selected query rows against selected train rows (copied into new matrices, in any
/// count: 1, 2, 3, …) equal the matching entries of the full score matrix **bit for bit**.
/// Exact top-k with bound pruning relies on it: pruning scores gathered subsets.
pub fn check_scores_independent_of_rows(b: &dyn Backend, p: &Problem) {
    let terms = p.terms();
    let (nq, nt) = (terms[0].query.rows(), terms[0].train.rows());
    let mut full = vec![0.0; nq * nt];
    b.scores(&terms, &mut full).expect("scores");
    let picks = |n: usize, seed: usize| -> Vec<Vec<usize>> {
        let mut sets = vec![vec![n - 1], (0..n).collect()];
        for count in [2usize, 3, 17, 300] {
            let step = (n / count.min(n)).max(1);
            sets.push((0..n).skip(seed % step).step_by(step).take(count).collect());
        }
        sets
    };
    for (s, queries) in picks(nq, 1).into_iter().enumerate() {
        for train in picks(nt, s + 2) {
            let data: Vec<[Matrix; 4]> = p
                .data
                .iter()
                .map(|d| {
                    [
                        pick_rows(&d.query_a, &queries),
                        pick_rows(&d.query_g, &queries),
                        pick_rows(&d.train_a, &train),
                        pick_rows(&d.train_g, &train),
                    ]
                })
                .collect();
            let sub: Vec<Term<'_>> = data
                .iter()
                .zip(&terms)
                .map(|(m, t)| Term {
                    query: Factors::new(m[0].view(), m[1].view()).expect("rows"),
                    train: Factors::new(m[2].view(), m[3].view()).expect("rows"),
                    ..*t
                })
                .collect();
            let mut got = vec![f32::NAN; queries.len() * train.len()];
            b.scores(&sub, &mut got).expect("scores");
            for (i, &q) in queries.iter().enumerate() {
                for (j, &t) in train.iter().enumerate() {
                    assert_eq!(
                        got[i * train.len() + j].to_bits(),
                        full[q * nt + t].to_bits(),
                        "{}: score ({q}, {t}) in a {} x {} selection differs from the full \
                         matrix's: {} vs {}",
                        b.name(),
                        queries.len(),
                        train.len(),
                        got[i * train.len() + j],
                        full[q * nt + t]
                    );
                }
            }
        }
    }
}

/// Body: self-influence equals the reference.
pub fn check_self_influence(b: &dyn Backend, p: &Problem) {
    let terms = p.self_terms();
    let want = reference::self_influence(&terms).expect("reference");
    let mut got = vec![f32::NAN; want.len()];
    b.self_influence(&terms, &mut got).expect("self_influence");
    assert_close(
        &format!("{} self-influence", b.name()),
        &got,
        &want,
        p.dot_len(),
    );
}

/// Body: GEMM equals the reference, both layouts of `b`.
pub fn check_gemm(b: &dyn Backend, m: usize, n: usize, k: usize, seed: u64) {
    let x = rand_matrix(m, k, seed);
    let y = rand_matrix(n, k, seed + 1);
    let yt = Matrix::from_fn(k, n, |r, c| y.view().row(c)[r]);
    for (operand, rhs) in [(y.view(), Rhs::Transposed), (yt.view(), Rhs::AsIs)] {
        let want = reference::gemm(x.view(), operand, rhs).expect("reference");
        let mut got = vec![f32::NAN; m * n];
        b.gemm(x.view(), operand, rhs, &mut got).expect("gemm");
        assert_close(&format!("{} gemm {m}x{n}x{k}", b.name()), &got, &want, k);
    }
}

/// Body: summed outer products `aᵀ · b` equal the reference.
pub fn check_sum_outer(b: &dyn Backend, n: usize, p: usize, q: usize, seed: u64) {
    let x = rand_matrix(n, p, seed);
    let y = rand_matrix(n, q, seed + 1);
    let xt = Matrix::from_fn(p, n, |r, c| x.view().row(c)[r]);
    let want = reference::gemm(xt.view(), y.view(), Rhs::AsIs).expect("reference");
    let mut got = vec![f32::NAN; p * q];
    b.sum_outer(x.view(), y.view(), &mut got)
        .expect("sum_outer");
    assert_close(
        &format!("{} sum_outer {n}x{p}x{q}", b.name()),
        &got,
        &want,
        n,
    );
}

/// A backend seen through its required methods only, so that the provided defaults of
/// [`Backend`] run on top of it (tested for every backend by [`backend_tests!`]).
#[derive(Debug)]
pub struct RequiredOnly<'a>(pub &'a dyn Backend);

impl Backend for RequiredOnly<'_> {
    fn name(&self) -> String {
        format!("{} (provided defaults)", self.0.name())
    }
    fn scores(&self, terms: &[Term<'_>], out: &mut [f32]) -> crate::Result<()> {
        self.0.scores(terms, out)
    }
    fn gemm(&self, a: MatRef<'_>, b: MatRef<'_>, rhs: Rhs, out: &mut [f32]) -> crate::Result<()> {
        self.0.gemm(a, b, rhs, out)
    }
}

/// Instantiates every generic kernel test for a backend: `backend_tests!(make_backend())`
/// where the expression returns `Option<B>` (`None` skips with a visible message — the
/// caller decides whether a missing device is a failure).
#[macro_export]
macro_rules! backend_tests {
    ($make:expr) => {
        fn __backend() -> Option<Box<dyn $crate::Backend>> {
            let b = $make;
            b.map(|b| Box::new(b) as Box<dyn $crate::Backend>)
        }

        #[test]
        fn scores_on_odd_shapes() {
            let Some(b) = __backend() else { return };
            use $crate::testing::*;
            for (i, &nq) in ODD_ROWS.iter().enumerate() {
                for (j, &nt) in ODD_ROWS.iter().enumerate() {
                    let (da, dg) = [(1, 1), (63, 10), (137, 3), (257, 17)][(i + j) % 4];
                    let mut p = Problem::new(nq, nt, da, dg, 1 + (i + j) % 3, (i * 4 + j) as u64);
                    if (i + j) % 2 == 1 {
                        p.bias = $crate::Bias::Included;
                    }
                    check_scores(&*b, &p);
                }
            }
        }

        #[test]
        fn scores_with_wide_factors() {
            let Some(b) = __backend() else { return };
            use $crate::testing::*;
            check_scores(&*b, &Problem::new(63, 137, 4096, 10, 2, 11));
            check_scores(&*b, &Problem::new(137, 63, 128, 1000, 1, 12));
        }

        #[test]
        fn scores_with_half_precision_inputs() {
            let Some(b) = __backend() else { return };
            use $crate::testing::*;
            let f16 = |x: f32| {
                // Round to 11 significant bits (f16's mantissa), a stand-in for f16 storage.
                let bits = x.to_bits();
                f32::from_bits((bits + 0x0000_1000) & 0xFFFF_E000)
            };
            let bf16 = |x: f32| f32::from_bits((x.to_bits() + 0x0000_8000) & 0xFFFF_0000);
            for round in [&f16 as &dyn Fn(f32) -> f32, &bf16] {
                let mut p = Problem::new(63, 257, 128, 10, 2, 5);
                for d in &mut p.data {
                    for m in d.matrices_mut() {
                        *m = round_through(m, round);
                    }
                }
                check_scores(&*b, &p);
            }
        }

        #[test]
        fn topk_on_odd_shapes() {
            let Some(b) = __backend() else { return };
            use $crate::testing::*;
            for (i, &nq) in ODD_ROWS.iter().enumerate() {
                let nt = ODD_ROWS[3 - i];
                for k in [1usize, 7, nt] {
                    check_topk(
                        &*b,
                        &Problem::new(nq, nt, 33, 5, 2, (i * 10 + k) as u64),
                        k.min(nt),
                    );
                }
            }
        }

        #[test]
        fn scores_do_not_depend_on_the_rows_scored_with_them() {
            let Some(b) = __backend() else { return };
            use $crate::testing::*;
            for (i, (da, dg)) in [(1, 1), (33, 5), (128, 10), (257, 80)]
                .into_iter()
                .enumerate()
            {
                let mut p = Problem::new(
                    ODD_ROWS[i],
                    ODD_ROWS[3 - i].max(40),
                    da,
                    dg,
                    1 + i % 3,
                    i as u64,
                );
                if i % 2 == 1 {
                    p.bias = $crate::Bias::Included;
                }
                check_scores_independent_of_rows(&*b, &p);
            }
        }

        #[test]
        fn self_influence_on_odd_shapes() {
            let Some(b) = __backend() else { return };
            use $crate::testing::*;
            for (i, &n) in ODD_ROWS.iter().enumerate() {
                let mut p = Problem::new(
                    1,
                    n,
                    [1, 64, 129, 4096][i],
                    [1, 10, 1000, 3][i],
                    3,
                    i as u64,
                );
                if i % 2 == 0 {
                    p.bias = $crate::Bias::Included;
                }
                check_self_influence(&*b, &p);
            }
        }

        #[test]
        fn gemm_on_odd_shapes() {
            let Some(b) = __backend() else { return };
            use $crate::testing::*;
            for (i, &m) in ODD_ROWS.iter().enumerate() {
                let n = ODD_ROWS[(i + 1) % 4];
                let k = [1, 63, 1000, 257][i];
                check_gemm(&*b, m, n, k, i as u64);
            }
        }

        #[test]
        fn sum_outer_on_odd_shapes() {
            let Some(b) = __backend() else { return };
            use $crate::testing::*;
            for (i, &n) in ODD_ROWS.iter().enumerate() {
                check_sum_outer(&*b, n, ODD_ROWS[(i + 1) % 4], [1, 10, 63, 3][i], i as u64);
            }
        }

        #[test]
        fn provided_defaults_agree_with_the_reference() {
            let Some(b) = __backend() else { return };
            use $crate::testing::*;
            let defaults = RequiredOnly(&*b);
            let mut p = Problem::new(63, 257, 33, 5, 2, 21);
            p.bias = $crate::Bias::Included;
            check_topk(&defaults, &p, 7);
            check_self_influence(&defaults, &p);
            check_sum_outer(&defaults, 137, 17, 5, 3);
        }
    };
}
