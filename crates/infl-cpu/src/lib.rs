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
//! - Memory beyond the inputs is `O(threads × tile)` for scores and
//!   `O(queries × k × threads)` for top-k: nothing grows with `queries × train`.

#![deny(missing_docs)]

use std::sync::Arc;

use faer::{Accum, MatMut, MatRef as FMatRef, Par};
use infl_core::backend::{check_gemm, check_scores, check_self_influence, check_topk};
use infl_core::{Backend, Error, MatRef, Result, SelfTerm, Term, TopK};
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
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("infl-cpu-{i}"))
            .build()
            .map_err(|e| Error::Backend {
                backend: "cpu".into(),
                details: format!("cannot start {threads} threads: {e}"),
            })?;
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
    fn train_runs(&self, query_blocks: usize, nt: usize) -> Vec<(usize, usize)> {
        let tb = self.tiles.train;
        let tiles = nt.div_ceil(tb).max(1);
        let want = (4 * self.threads())
            .div_ceil(query_blocks.max(1))
            .clamp(1, tiles);
        let per = tiles.div_ceil(want);
        (0..tiles)
            .step_by(per)
            .map(|t| (t * tb, ((t + per) * tb).min(nt)))
            .collect()
    }
}

fn fmat(m: MatRef<'_>) -> FMatRef<'_, f32> {
    FMatRef::from_row_major_slice(m.data(), m.rows(), m.cols())
}

/// `out[m, n] = x · yᵀ`, single-threaded.
fn gemm_abt(x: MatRef<'_>, y: MatRef<'_>, out: &mut [f32]) {
    let (m, n) = (x.rows(), y.rows());
    let dst = MatMut::from_row_major_slice_mut(&mut out[..m * n], m, n);
    faer::linalg::matmul::matmul(
        dst,
        Accum::Replace,
        fmat(x),
        fmat(y).transpose(),
        1.0,
        Par::Seq,
    );
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

/// `acc (=|+=) w · (ga + b) ⊙ gg` over one row or tile.
#[inline(always)]
fn fuse(first: bool, w: f32, b: f32, acc: &mut [f32], ga: &[f32], gg: &[f32]) {
    if first {
        for ((o, a), g) in acc.iter_mut().zip(ga).zip(gg) {
            *o = w * ((a + b) * g);
        }
    } else {
        for ((o, a), g) in acc.iter_mut().zip(ga).zip(gg) {
            *o += w * ((a + b) * g);
        }
    }
}

/// The elementwise part of one term of a tile, compiled for the best SIMD level of the
/// running CPU (AVX-512, AVX2+FMA or baseline) through pulp's runtime dispatch; the loops
/// inside are plain iterators that the compiler vectorises for that level.
struct FuseTerm<'a> {
    first: bool,
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
                self.first,
                self.w,
                self.b,
                &mut self.acc[span.clone()],
                &self.ga[span],
                row,
            );
        }
    }
}

/// [`fuse`] over a whole tile, with runtime SIMD dispatch.
struct FuseTile<'a> {
    first: bool,
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
        fuse(self.first, self.w, self.b, self.acc, self.ga, self.gg);
    }
}

/// Evaluates one tile into `s.acc[..(q1-q0)*(t1-t0)]` (row-major).
///
/// The input gram `A_q A_tᵀ` is a faer GEMM. For narrow output gradients (`K ≤ 64`, the
/// usual classifier head) the gradient gram is not materialised: each query row's
/// `G_q[i] · G_tᵀ` is built in L1 from the transposed train gradients (K axpys of one
/// tile row) and fused into the accumulator at once.
fn tile(terms: &[Term<'_>], q: (usize, usize), t: (usize, usize), s: &mut Scratch) {
    let (nq, nt) = (q.1 - q.0, t.1 - t.0);
    let len = nq * nt;
    let arch = pulp::Arch::new();
    for (i, term) in terms.iter().enumerate() {
        let qf = term.query.slice_rows(q.0, q.1);
        let tf = term.train.slice_rows(t.0, t.1);
        gemm_abt(qf.a, tf.a, &mut s.ga);
        let (w, b) = (term.weight, if term.bias { 1.0f32 } else { 0.0 });
        if tf.g.cols() <= SMALL_G {
            arch.dispatch(FuseTerm {
                first: i == 0,
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
                first: i == 0,
                w,
                b,
                acc: &mut s.acc[..len],
                ga: &s.ga[..len],
                gg: &s.gg[..len],
            });
        }
    }
}

/// A scores task: first query row, train run, and the output row slices it owns.
type ScoreTask<'a> = (usize, (usize, usize), Vec<&'a mut [f32]>);

fn blocks(n: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(size.max(1))
        .map(move |s| (s, (s + size).min(n)))
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
        // One task per (query block, train run), owning its slices of the output rows.
        let mut tasks: Vec<ScoreTask<'_>> = Vec::new();
        for (qb, block) in out.chunks_mut(tiles.query * nt).enumerate() {
            let mut per_run: Vec<Vec<&mut [f32]>> = runs.iter().map(|_| Vec::new()).collect();
            for row in block.chunks_mut(nt) {
                let mut rest = row;
                for (r, &(t0, t1)) in runs.iter().enumerate() {
                    let (head, tail) = rest.split_at_mut(t1 - t0);
                    per_run[r].push(head);
                    rest = tail;
                }
            }
            for (r, rows) in per_run.into_iter().enumerate() {
                tasks.push((qb * tiles.query, runs[r], rows));
            }
        }
        self.install(|| {
            tasks.into_par_iter().for_each_init(
                || Scratch::new(tiles),
                |s, (q0, (r0, r1), mut rows)| {
                    let q1 = q0 + rows.len();
                    for (t0, t1) in blocks(r1 - r0, tiles.train) {
                        let w = t1 - t0;
                        tile(terms, (q0, q1), (r0 + t0, r0 + t1), s);
                        for (i, row) in rows.iter_mut().enumerate() {
                            row[t0..t1].copy_from_slice(&s.acc[i * w..(i + 1) * w]);
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
        let tasks: Vec<((usize, usize), (usize, usize))> = blocks(nq, tiles.query)
            .flat_map(|q| runs.iter().map(move |&r| (q, r)))
            .collect();
        let parts: Vec<Result<(usize, TopK)>> = self.install(|| {
            tasks
                .into_par_iter()
                .map_init(
                    || Scratch::new(tiles),
                    |s, ((q0, q1), (r0, r1))| {
                        let mut part = TopK::new(q1 - q0, k)?;
                        for (t0, t1) in blocks(r1 - r0, tiles.train) {
                            let w = t1 - t0;
                            tile(terms, (q0, q1), (r0 + t0, r0 + t1), s);
                            for i in 0..q1 - q0 {
                                part.offer_row(
                                    i,
                                    train_offset + r0 + t0,
                                    &s.acc[i * w..(i + 1) * w],
                                );
                            }
                        }
                        Ok((q0, part))
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
                let start = c * CHUNK;
                for (i, v) in o.iter_mut().enumerate() {
                    let r = start + i;
                    let mut s = 0.0f32;
                    for t in terms {
                        let a = t.factors.a.row(r);
                        let g = t.factors.g.row(r);
                        let na: f32 = a.iter().map(|x| x * x).sum();
                        let ng: f32 = g.iter().map(|x| x * x).sum();
                        s += t.weight * (ng * (na + if t.bias { 1.0 } else { 0.0 }));
                    }
                    *v = s;
                }
            });
        });
        Ok(())
    }

    fn gemm(&self, a: MatRef<'_>, b: MatRef<'_>, transpose_b: bool, out: &mut [f32]) -> Result<()> {
        let (m, n, _) = check_gemm(a, b, transpose_b, out.len())?;
        let threads = self.threads();
        self.install(|| {
            let dst = MatMut::from_row_major_slice_mut(out, m, n);
            let rhs = if transpose_b {
                fmat(b).transpose()
            } else {
                fmat(b)
            };
            let par = if threads > 1 {
                Par::rayon(threads)
            } else {
                Par::Seq
            };
            faer::linalg::matmul::matmul(dst, Accum::Replace, fmat(a), rhs, 1.0, par);
        });
        Ok(())
    }
}
