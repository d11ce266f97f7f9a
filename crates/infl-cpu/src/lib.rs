//! The CPU backend of infl.
//!
//! Every kernel is a loop over *tiles* `[query block × train block]`. A tile evaluates
//! `Σ_terms w (G_q G_tᵀ) ⊙ (A_q A_tᵀ + bias)` with two single-threaded faer GEMMs per
//! term into small scratch buffers that stay in cache, then either copies the tile into
//! the caller's score matrix or offers its rows to a top-k accumulator. Parallelism is
//! over tasks (a query block × a contiguous run of train blocks) with rayon, never inside
//! a GEMM, so work per thread is large and there is no nested parallelism.
//!
//! Design choices:
//! - faer is the GEMM (fastest measured on these machines, ahead of OpenBLAS and
//!   matrixmultiply); ndarray is not needed on this path.
//! - Results do not depend on the thread count: a tile's arithmetic is fixed by the tile
//!   sizes alone, and top-k merging uses a total order.
//! - Nor on a row's position or its block's shape: faer picks its kernel by shape (a
//!   matrix-vector product for one output row or column, nano-gemm up to 16³
//!   multiply-adds, its blocked GEMM otherwise), and they round differently, so a product
//!   with fewer than [`MIN_DIM`] output rows or columns (or too small for faer's general kernel) is
//!   computed padded with zero rows.
//!   Every element is then rounded by the blocked GEMM, and a training row scores the same
//!   bits in a one-row shard as in the whole run (`infl --shard i/N`).
//! - Memory beyond the inputs is `O(threads × tile)` for scores and
//!   `O(queries × k × threads)` for top-k: nothing grows with `queries × train`.
//! - GEMM and summed outer products (`aᵀ·b`, read transposed in place) are single faer
//!   products parallelised by faer itself on the backend's threads.

#![deny(missing_docs)]

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use faer::{Accum, MatMut, MatRef as FMatRef, Par};
use infl_core::backend::{
    check_gemm, check_scores, check_self_influence, check_sum_outer, check_topk,
};
use infl_core::{Backend, Error, MatRef, Result, Rhs, SelfTerm, Term, TopK, ranges};
use rayon::prelude::*;

/// Tile sizes of the fused kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    /// Query rows per tile.
    pub query: usize,
    /// Train rows per tile.
    pub train: usize,
}

impl Default for Tiles {
    fn default() -> Self {
        // Tuned on Zen 4 (1 MiB L2) at D = 128, K = 10: a 256 × 256 tile keeps the input
        // gram, the accumulator and the packed operands in L2.
        Self {
            query: 256,
            train: 256,
        }
    }
}

/// The CPU backend: faer GEMM tiles scheduled with rayon.
#[derive(Clone, Debug)]
pub struct CpuBackend {
    pool: Option<Arc<rayon::ThreadPool>>,
    tiles: Tiles,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// Uses rayon's global thread pool.
    pub fn new() -> Self {
        Self {
            pool: None,
            tiles: Tiles::default(),
        }
    }

    /// Uses a private pool of `threads` threads (0 = one per core).
    pub fn with_threads(threads: usize) -> Result<Self> {
        check_threads(threads)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("infl-cpu-{i}"))
            .build()
            .map_err(|source| Error::backend("cpu", ThreadPoolError { threads, source }))?;
        Ok(Self {
            pool: Some(Arc::new(pool)),
            tiles: Tiles::default(),
        })
    }

    /// Overrides the tile sizes (both at least 1).
    pub fn with_tiles(mut self, tiles: Tiles) -> Self {
        self.tiles = Tiles {
            query: tiles.query.max(1),
            train: tiles.train.max(1),
        };
        self
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }

    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// Splits `nt` train rows into contiguous runs so that there are about four tasks
    /// per thread in all; runs are whole train tiles.
    fn train_runs(&self, query_blocks: usize, nt: usize) -> Vec<Range<usize>> {
        let tiles = nt.div_ceil(self.tiles.train).max(1);
        let want = (4 * self.threads())
            .div_ceil(query_blocks.max(1))
            .clamp(1, tiles);
        ranges(nt, tiles.div_ceil(want) * self.tiles.train).collect()
    }
}

/// The error of [`CpuBackend::with_threads`] when rayon cannot start the pool; it is the
/// source of the returned [`infl_core::Error::Backend`].
#[derive(Debug)]
pub struct ThreadPoolError {
    threads: usize,
    source: rayon::ThreadPoolBuildError,
}

impl fmt::Display for ThreadPoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot start {} threads: {}", self.threads, self.source)
    }
}

impl std::error::Error for ThreadPoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn fmat(m: MatRef<'_>) -> FMatRef<'_, f32> {
    FMatRef::from_row_major_slice(m.data(), m.rows(), m.cols())
}

/// Products with fewer output rows or columns than this are computed padded to it (see the
/// crate docs: faer's small-shape kernels round differently from its blocked GEMM).
pub const MIN_DIM: usize = 16;

/// faer multiplies products of at most this many `m·n·k` with nano-gemm (its
/// `NANO_GEMM_THRESHOLD`), which sums in another order than its general kernel: such
/// products are padded past it too.
const FAER_SMALL_MNK: usize = 16 * 16 * 16;

/// `out[m, n] = x · yᵀ`, single-threaded.
fn gemm_abt(x: MatRef<'_>, y: MatRef<'_>, out: &mut [f32]) {
    let dst = MatMut::from_row_major_slice_mut(&mut out[..x.rows() * y.rows()], x.rows(), y.rows());
    matmul_padded(dst, fmat(x), fmat(y).transpose(), Par::Seq);
}

/// `dst = lhs · rhs`, padded with zero rows of `lhs` or columns of `rhs` up to [`MIN_DIM`]
/// so that faer's blocked GEMM rounds every element whatever the shape. The padded copies
/// (of a short operand only: `O(MIN_DIM × k)`) keep each operand's layout (row- or column-major), and the result is computed row-major
/// as `dst` is, so the kernel sees the same problem as for a large product.
fn matmul_padded(dst: MatMut<'_, f32>, lhs: FMatRef<'_, f32>, rhs: FMatRef<'_, f32>, par: Par) {
    let (m, n, k) = (lhs.nrows(), rhs.ncols(), lhs.ncols());
    let general = m >= MIN_DIM && n >= MIN_DIM && m * n * k > FAER_SMALL_MNK;
    if general || k <= 1 {
        // (`k = 1` is one rounded product on every path.)
        faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0, par);
        return;
    }
    let pm = m.max(MIN_DIM);
    let pn = n.max(MIN_DIM).max(FAER_SMALL_MNK / (k * pm) + 1);
    // Only the short operand is copied (a tall one is used in place).
    let (mut l, mut r, mut out) = (Vec::new(), Vec::new(), vec![0.0; pm * pn]);
    let lp = if pm > m {
        l.resize(pm * k, 0.0);
        padded(&mut l, lhs, pm, k)
    } else {
        lhs
    };
    let rp = if pn > n {
        r.resize(k * pn, 0.0);
        padded(&mut r, rhs, k, pn)
    } else {
        rhs
    };
    let padded_dst = MatMut::from_row_major_slice_mut(&mut out, pm, pn);
    faer::linalg::matmul::matmul(padded_dst, Accum::Replace, lp, rp, 1.0, par);
    let mut dst = dst;
    dst.copy_from(FMatRef::from_row_major_slice(&out, pm, pn).submatrix(0, 0, m, n));
}

/// `src` copied into the top-left corner of a zero `[rows, cols]` matrix stored in `buf`,
/// row-major when `src` is (unit column stride), else column-major.
fn padded<'a>(
    buf: &'a mut [f32],
    src: FMatRef<'_, f32>,
    rows: usize,
    cols: usize,
) -> FMatRef<'a, f32> {
    let row_major = src.col_stride() == 1;
    {
        let view = if row_major {
            MatMut::from_row_major_slice_mut(buf, rows, cols)
        } else {
            MatMut::from_column_major_slice_mut(buf, rows, cols)
        };
        view.submatrix_mut(0, 0, src.nrows(), src.ncols())
            .copy_from(src);
    }
    if row_major {
        FMatRef::from_row_major_slice(buf, rows, cols)
    } else {
        FMatRef::from_column_major_slice(buf, rows, cols)
    }
}

/// Output-gradient widths up to this use the fused row kernel instead of a second GEMM.
const SMALL_G: usize = 64;

/// Scratch buffers of one worker.
struct Scratch {
    acc: Vec<f32>,
    ga: Vec<f32>,
    gg: Vec<f32>,
    gt: Vec<f32>,
}

impl Scratch {
    fn new(tiles: Tiles) -> Self {
        let n = tiles.query * tiles.train;
        Self {
            acc: vec![0.0; n],
            ga: vec![0.0; n],
            gg: vec![0.0; n.max(tiles.train)],
            gt: vec![0.0; SMALL_G * tiles.train],
        }
    }
}

/// `acc (=|+=) w · (ga + b) ⊙ gg` over one row or tile: [`Accum::Replace`] for a tile's
/// first term, [`Accum::Add`] for the others.
#[inline(always)]
fn fuse(accum: Accum, w: f32, b: f32, acc: &mut [f32], ga: &[f32], gg: &[f32]) {
    match accum {
        Accum::Replace => {
            for ((o, a), g) in acc.iter_mut().zip(ga).zip(gg) {
                *o = w * ((a + b) * g);
            }
        }
        Accum::Add => {
            for ((o, a), g) in acc.iter_mut().zip(ga).zip(gg) {
                *o += w * ((a + b) * g);
            }
        }
    }
}

/// The elementwise part of one term of a tile, compiled for the best SIMD level of the
/// running CPU (AVX-512, AVX2+FMA or baseline) through pulp's runtime dispatch; the loops
/// inside are plain iterators that the compiler vectorises for that level.
struct FuseTerm<'a> {
    accum: Accum,
    w: f32,
    b: f32,
    /// Query gradients of the tile `[nq, dg]`.
    gq: MatRef<'a>,
    /// Train gradients of the tile `[nt, dg]`.
    gt_rows: MatRef<'a>,
    acc: &'a mut [f32],
    ga: &'a [f32],
    gt: &'a mut [f32],
    row: &'a mut [f32],
}

impl pulp::WithSimd for FuseTerm<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let (nq, nt, dg) = (self.gq.rows(), self.gt_rows.rows(), self.gq.cols());
        let gt = &mut self.gt[..dg * nt];
        for r in 0..nt {
            for (c, &v) in self.gt_rows.row(r).iter().enumerate() {
                gt[c * nt + r] = v;
            }
        }
        let row = &mut self.row[..nt];
        for r in 0..nq {
            row.fill(0.0);
            for (c, &x) in self.gq.row(r).iter().enumerate() {
                for (o, y) in row.iter_mut().zip(&gt[c * nt..(c + 1) * nt]) {
                    *o += x * y;
                }
            }
            let span = r * nt..(r + 1) * nt;
            fuse(
                self.accum,
                self.w,
                self.b,
                &mut self.acc[span.clone()],
                &self.ga[span],
                row,
            );
        }
    }
}

/// Self-influence of the rows `start..start + out.len()`, with runtime SIMD dispatch.
struct SelfRows<'a> {
    terms: &'a [SelfTerm<'a>],
    start: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for SelfRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (i, v) in self.out.iter_mut().enumerate() {
            let r = self.start + i;
            let mut s = 0.0f32;
            for t in self.terms {
                let na = squared_norm(t.factors.a.row(r));
                let ng = squared_norm(t.factors.g.row(r));
                s += t.weight * (ng * (na + t.bias_dot()));
            }
            *v = s;
        }
    }
}

/// `Σ x²` in 16 independent lanes (a fixed order, so the compiler vectorises it and the
/// result does not depend on threads), then the lanes summed in order.
#[inline(always)]
fn squared_norm(x: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    for (a, v) in acc.iter_mut().zip(tail) {
        *a += v * v;
    }
    acc.iter().sum()
}

/// [`fuse`] over a whole tile, with runtime SIMD dispatch.
struct FuseTile<'a> {
    accum: Accum,
    w: f32,
    b: f32,
    acc: &'a mut [f32],
    ga: &'a [f32],
    gg: &'a [f32],
}

impl pulp::WithSimd for FuseTile<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        fuse(self.accum, self.w, self.b, self.acc, self.ga, self.gg);
    }
}

/// Evaluates the tile `queries × train` into `s.acc[..queries.len() * train.len()]`
/// (row-major).
///
/// The input gram `A_q A_tᵀ` is a faer GEMM. For narrow output gradients (`K ≤ 64`, the
/// usual classifier head) the gradient gram is not materialised: each query row's
/// `G_q[i] · G_tᵀ` is built in L1 from the transposed train gradients (K axpys of one
/// tile row) and fused into the accumulator at once.
fn tile(terms: &[Term<'_>], queries: Range<usize>, train: Range<usize>, s: &mut Scratch) {
    let len = queries.len() * train.len();
    let arch = pulp::Arch::new();
    for (i, term) in terms.iter().enumerate() {
        let qf = term.query.slice_rows(queries.start, queries.end);
        let tf = term.train.slice_rows(train.start, train.end);
        gemm_abt(qf.a, tf.a, &mut s.ga);
        let accum = if i == 0 { Accum::Replace } else { Accum::Add };
        let (w, b) = (term.weight, term.bias_dot());
        if tf.g.cols() <= SMALL_G {
            arch.dispatch(FuseTerm {
                accum,
                w,
                b,
                gq: qf.g,
                gt_rows: tf.g,
                acc: &mut s.acc[..len],
                ga: &s.ga[..len],
                gt: &mut s.gt,
                row: &mut s.gg,
            });
        } else {
            gemm_abt(qf.g, tf.g, &mut s.gg);
            arch.dispatch(FuseTile {
                accum,
                w,
                b,
                acc: &mut s.acc[..len],
                ga: &s.ga[..len],
                gg: &s.gg[..len],
            });
        }
    }
}

/// `start + r`: a range relative to `start` made absolute.
fn offset(start: usize, r: Range<usize>) -> Range<usize> {
    start + r.start..start + r.end
}

/// A top-k task: a block of query rows against a run of training rows.
struct Task {
    queries: Range<usize>,
    train: Range<usize>,
}

/// A scores task: query rows from `first_query` on against the run `train`, owning the
/// slice of each of those output rows that the run covers.
struct ScoreTask<'a> {
    first_query: usize,
    train: Range<usize>,
    rows: Vec<&'a mut [f32]>,
}

/// Cuts `out` (`[queries, nt]`, row-major) into one task per (block of `query_tile` rows,
/// train run), each owning its slices of the output rows.
fn score_tasks<'a>(
    out: &'a mut [f32],
    nt: usize,
    query_tile: usize,
    runs: &[Range<usize>],
) -> Vec<ScoreTask<'a>> {
    let mut tasks = Vec::new();
    for (qb, block) in out.chunks_mut(query_tile * nt).enumerate() {
        let mut per_run: Vec<Vec<&mut [f32]>> = runs.iter().map(|_| Vec::new()).collect();
        for row in block.chunks_mut(nt) {
            let mut rest = row;
            for (r, run) in runs.iter().enumerate() {
                let (head, tail) = rest.split_at_mut(run.len());
                per_run[r].push(head);
                rest = tail;
            }
        }
        tasks.extend(per_run.into_iter().zip(runs).map(|(rows, run)| ScoreTask {
            first_query: qb * query_tile,
            train: run.clone(),
            rows,
        }));
    }
    tasks
}

impl CpuBackend {
    /// `out = lhs · rhs` (row-major) with one faer GEMM on this backend's threads.
    fn matmul(&self, lhs: FMatRef<'_, f32>, rhs: FMatRef<'_, f32>, out: &mut [f32]) {
        let threads = self.threads();
        let par = if threads > 1 {
            Par::rayon(threads)
        } else {
            Par::Seq
        };
        self.install(|| {
            let dst = MatMut::from_row_major_slice_mut(out, lhs.nrows(), rhs.ncols());
            matmul_padded(dst, lhs, rhs, par);
        });
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({} threads)", self.threads())
    }

    fn scores(&self, terms: &[Term<'_>], out: &mut [f32]) -> Result<()> {
        let (nq, nt) = check_scores(terms, out.len())?;
        if nq == 0 || nt == 0 {
            return Ok(());
        }
        let tiles = self.tiles;
        let runs = self.train_runs(nq.div_ceil(tiles.query), nt);
        let tasks = score_tasks(out, nt, tiles.query, &runs);
        self.install(|| {
            tasks.into_par_iter().for_each_init(
                || Scratch::new(tiles),
                |s, mut task| {
                    let queries = task.first_query..task.first_query + task.rows.len();
                    for cols in ranges(task.train.len(), tiles.train) {
                        let w = cols.len();
                        tile(
                            terms,
                            queries.clone(),
                            offset(task.train.start, cols.clone()),
                            s,
                        );
                        for (i, row) in task.rows.iter_mut().enumerate() {
                            row[cols.clone()].copy_from_slice(&s.acc[i * w..(i + 1) * w]);
                        }
                    }
                },
            );
        });
        Ok(())
    }

    fn topk(&self, terms: &[Term<'_>], train_offset: usize, acc: &mut TopK) -> Result<()> {
        let (nq, nt) = check_topk(terms, acc)?;
        if nq == 0 || nt == 0 {
            return Ok(());
        }
        let (tiles, k) = (self.tiles, acc.k());
        let runs = self.train_runs(nq.div_ceil(tiles.query), nt);
        let tasks: Vec<Task> = ranges(nq, tiles.query)
            .flat_map(|queries| {
                runs.iter().map(move |train| Task {
                    queries: queries.clone(),
                    train: train.clone(),
                })
            })
            .collect();
        let seed = &*acc;
        let parts: Vec<Result<(usize, TopK)>> = self.install(|| {
            tasks
                .into_par_iter()
                .map_init(
                    || Scratch::new(tiles),
                    |s, Task { queries, train }| {
                        let rows: Vec<usize> = queries.clone().collect();
                        let mut part = seed.part(&rows, k)?;
                        for cols in ranges(train.len(), tiles.train) {
                            let (w, cols) = (cols.len(), offset(train.start, cols));
                            let first = train_offset + cols.start;
                            tile(terms, queries.clone(), cols, s);
                            for i in 0..queries.len() {
                                part.offer_row(i, first, &s.acc[i * w..(i + 1) * w]);
                            }
                        }
                        Ok((queries.start, part))
                    },
                )
                .collect()
        });
        for part in parts {
            let (q0, part) = part?;
            acc.merge(q0, &part)?;
        }
        Ok(())
    }

    fn self_influence(&self, terms: &[SelfTerm<'_>], out: &mut [f32]) -> Result<()> {
        check_self_influence(terms, out.len())?;
        const CHUNK: usize = 1024;
        self.install(|| {
            out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
                pulp::Arch::new().dispatch(SelfRows {
                    terms,
                    start: c * CHUNK,
                    out: o,
                });
            });
        });
        Ok(())
    }

    fn gemm(&self, a: MatRef<'_>, b: MatRef<'_>, rhs: Rhs, out: &mut [f32]) -> Result<()> {
        check_gemm(a, b, rhs, out.len())?;
        let rhs = match rhs {
            Rhs::AsIs => fmat(b),
            Rhs::Transposed => fmat(b).transpose(),
        };
        self.matmul(fmat(a), rhs, out);
        Ok(())
    }

    /// `aᵀ · b` as one faer GEMM reading `a` transposed in place (no host transpose).
    fn sum_outer(&self, a: MatRef<'_>, b: MatRef<'_>, out: &mut [f32]) -> Result<()> {
        check_sum_outer(a, b, out.len())?;
        self.matmul(fmat(a).transpose(), fmat(b), out);
        Ok(())
    }
}

/// The most worker threads accepted: 8 per core of this machine, and at least 64. More
/// only slows the work down (thread start-up alone takes seconds at 10,000).
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (8 * cores).max(64)
}

/// Checks a requested thread count: at least 1 and at most [`max_threads`].
pub fn check_threads(threads: usize) -> Result<()> {
    let max = max_threads();
    if (1..=max).contains(&threads) {
        return Ok(());
    }
    Err(Error::invalid(
        "threads",
        format!(
            "{threads} threads requested; expected 1 to {max} (8 per core, at least 64); \
             leave --threads out for one per core"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `train_runs` cuts exactly where the former `step_by` split did, so tile boundaries,
    /// and with them every score, are unchanged.
    #[test]
    fn train_runs_are_whole_tiles_as_before() {
        for threads in [1, 3, 8] {
            let b = CpuBackend::with_threads(threads)
                .expect("pool")
                .with_tiles(Tiles { query: 5, train: 7 });
            for query_blocks in [1usize, 2, 9] {
                for nt in 1usize..200 {
                    let tiles = nt.div_ceil(7);
                    let want = (4 * threads).div_ceil(query_blocks).clamp(1, tiles);
                    let per = tiles.div_ceil(want);
                    let before: Vec<_> = (0..tiles)
                        .step_by(per)
                        .map(|t| t * 7..((t + per) * 7).min(nt))
                        .collect();
                    assert_eq!(b.train_runs(query_blocks, nt), before, "{nt} rows");
                }
            }
        }
    }

    #[test]
    fn sum_outer_handles_empty_operands() {
        let b = CpuBackend::new();
        let a = MatRef::new(&[], 0, 3).expect("a");
        let g = MatRef::new(&[], 0, 2).expect("g");
        let mut out = vec![f32::NAN; 6];
        b.sum_outer(a, g, &mut out).expect("no rows");
        assert_eq!(out, vec![0.0; 6]);
        let err = b.sum_outer(a, g, &mut out[..5]).expect_err("shape");
        assert!(err.to_string().contains("out has 5 elements"), "{err}");
    }
}
