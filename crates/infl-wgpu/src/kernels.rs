//! The [`Backend`] implementation: block loops around the four shaders.

use infl_core::backend::{check_gemm, check_scores, check_self_influence, check_topk};
use infl_core::{Backend, MatRef, SelfTerm, Term, TopK};

use crate::WgpuBackend;
use crate::context::Context;
use crate::error::Result;
use crate::plan::{self, PairShape, ranges};

/// Factor widths and coefficients of one term: `(da, dg, weight, bias)`.
type TermShape = (usize, usize, f32, bool);

/// Element offsets of each term's `(A, G)` blocks when factor blocks of `rows` rows are
/// laid out one after another: term 0's A, term 0's G, term 1's A...
fn offsets(terms: &[TermShape], rows: usize) -> Vec<(usize, usize)> {
    let mut at = 0usize;
    terms
        .iter()
        .map(|&(da, dg, _, _)| {
            let (a, g) = (at, at + rows * da);
            at = g + rows * dg;
            (a, g)
        })
        .collect()
}

/// The `TermDesc` table of the shaders (8 words per term): weight, bias, da, dg, then the
/// query and train `(A, G)` offsets.
fn descriptors(terms: &[TermShape], q: &[(usize, usize)], t: &[(usize, usize)]) -> Vec<u32> {
    let mut words = Vec::with_capacity(terms.len() * 8);
    for ((&(da, dg, w, bias), &(qa, qg)), &(ta, tg)) in terms.iter().zip(q).zip(t) {
        let b = if bias { 1.0f32 } else { 0.0 };
        words.extend_from_slice(&[
            w.to_bits(),
            b.to_bits(),
            da as u32,
            dg as u32,
            qa as u32,
            qg as u32,
            ta as u32,
            tg as u32,
        ]);
    }
    words
}

/// Candidates of one query block: `cands[i]` lists (column, score) pairs of row `i`.
fn offer_candidates(acc: &mut TopK, q0: usize, col0: usize, k: usize, words: &[u32]) {
    let rows = words.len() / (4 * k);
    let mut seen: Vec<u32> = Vec::with_capacity(k);
    for i in 0..rows {
        let row = &words[i * 4 * k..(i + 1) * 4 * k];
        let (props, opps) = row.split_at(2 * k);
        seen.clear();
        for c in props.chunks_exact(2) {
            seen.push(c[0]);
            acc.offer(q0 + i, col0 + c[0] as usize, f32::from_bits(c[1]));
        }
        seen.sort_unstable();
        for c in opps.chunks_exact(2) {
            // A candidate in both lists is offered once (both lists of `acc` see it).
            if seen.binary_search(&c[0]).is_err() {
                acc.offer(q0 + i, col0 + c[0] as usize, f32::from_bits(c[1]));
            }
        }
    }
}

/// What a score block is for.
enum Sink<'o, 'a> {
    Full(&'o mut [f32]),
    TopK { acc: &'a mut TopK, offset: usize },
}

impl WgpuBackend {
    fn fused(
        &self,
        op: &'static str,
        terms: &[Term<'_>],
        (nq, nt): (usize, usize),
        mut sink: Sink<'_, '_>,
    ) -> Result<()> {
        let ctx = &*self.ctx;
        let widths: Vec<TermShape> = terms
            .iter()
            .map(|t| (t.query.a.cols(), t.query.g.cols(), t.weight, t.bias))
            .collect();
        let width: usize = widths.iter().map(|w| w.0 + w.1).sum();
        let k = match &sink {
            Sink::TopK { acc, .. } => acc.k().min(nt),
            Sink::Full(_) => 0,
        };
        let shape = PairShape {
            queries: nq,
            train: nt,
            query_width: width,
            train_width: width,
            topk: (k > 0).then_some(k),
            tile: ctx.tiles.output_tile(),
        };
        let blocks = plan::plan_pair(op, &shape, ctx.limits, ctx.caps)?;
        let (qb, tb) = (blocks.query, blocks.train);
        // Candidates kept per row and list in the widest block.
        let k = k.min(tb);
        let (q_off, t_off) = (offsets(&widths, qb), offsets(&widths, tb));
        let term_buf = ctx.storage_init("terms", &descriptors(&widths, &q_off, &t_off));
        let q_buf = ctx.storage("query factors", (qb * width * 4) as u64);
        let t_buf = ctx.storage("train factors", (tb * width * 4) as u64);
        let out_buf = ctx.storage("score block", (qb * tb * 4) as u64);
        let dims = ctx.uniform("fused dims", 4);
        let group = ctx.bind(&ctx.fused, &[&dims, &term_buf, &q_buf, &t_buf, &out_buf]);

        // Top-k: a candidate buffer and one dims/bind group per dispatch of <= max rows.
        let max_wg = ctx.limits.max_workgroups_per_dim.max(1) as usize;
        let (cand_buf, topk_groups) = if k > 0 {
            let cand = ctx.storage(
                "top-k candidates",
                qb as u64 * plan::CANDIDATE_BYTES * k as u64,
            );
            let groups: Vec<_> = ranges(qb, max_wg)
                .map(|_| {
                    let d = ctx.uniform("top-k dims", 8);
                    let g = ctx.bind(&ctx.topk, &[&d, &out_buf, &cand]);
                    (d, g)
                })
                .collect();
            (Some(cand), groups)
        } else {
            (None, Vec::new())
        };
        let readback_bytes = if k > 0 {
            qb as u64 * plan::CANDIDATE_BYTES * k as u64
        } else {
            (qb * tb * 4) as u64
        };
        let readbacks = ctx.readbacks("readback", readback_bytes);

        let q_blocks: Vec<_> = ranges(nq, qb).collect();
        let single_q = q_blocks.len() == 1;
        let work: Vec<((usize, usize), (usize, usize))> = ranges(nt, tb)
            .flat_map(|t| q_blocks.iter().map(move |&q| (q, t)))
            .collect();
        let (tile_q, tile_t) = ctx.tiles.output_tile();
        let mut last_t = None;
        let mut uploaded_q = false;
        ctx.stream(
            op,
            &readbacks,
            work,
            |&((q0, q1), (t0, t1)), enc, readback| {
                if !(single_q && uploaded_q) {
                    for (term, &(a, g)) in terms.iter().zip(&q_off) {
                        let f = term.query.slice_rows(q0, q1);
                        ctx.write_f32(&q_buf, a, f.a.data());
                        ctx.write_f32(&q_buf, g, f.g.data());
                    }
                    uploaded_q = true;
                }
                if last_t != Some(t0) {
                    for (term, &(a, g)) in terms.iter().zip(&t_off) {
                        let f = term.train.slice_rows(t0, t1);
                        ctx.write_f32(&t_buf, a, f.a.data());
                        ctx.write_f32(&t_buf, g, f.g.data());
                    }
                    last_t = Some(t0);
                }
                let (rows, cols) = (q1 - q0, t1 - t0);
                ctx.write(
                    &dims,
                    &[rows as u32, cols as u32, terms.len() as u32, cols as u32],
                );
                Context::dispatch(
                    enc,
                    &ctx.fused,
                    &group,
                    cols.div_ceil(tile_t) as u32,
                    rows.div_ceil(tile_q) as u32,
                );
                let kk = k.min(cols);
                if k == 0 || kk == cols {
                    // Full block (scores, or top-k with k >= the block's columns).
                    let bytes = (rows * cols * 4) as u64;
                    enc.copy_buffer_to_buffer(&out_buf, 0, readback, 0, bytes);
                    return Ok(bytes);
                }
                let cand = cand_buf.as_ref().expect("candidate buffer");
                for ((r0, r1), (d, g)) in ranges(rows, max_wg).zip(&topk_groups) {
                    ctx.write(
                        d,
                        &[
                            rows as u32,
                            cols as u32,
                            cols as u32,
                            kk as u32,
                            r0 as u32,
                            0,
                            0,
                            0,
                        ],
                    );
                    Context::dispatch(enc, &ctx.topk, g, (r1 - r0) as u32, 1);
                }
                let bytes = rows as u64 * plan::CANDIDATE_BYTES * kk as u64;
                enc.copy_buffer_to_buffer(cand, 0, readback, 0, bytes);
                Ok(bytes)
            },
            |((q0, q1), (t0, t1)), words| {
                let cols = t1 - t0;
                match &mut sink {
                    Sink::Full(out) => {
                        let block: &[f32] = bytemuck::cast_slice(words);
                        for (i, row) in block.chunks_exact(cols).enumerate() {
                            let r = (q0 + i) * nt + t0;
                            out[r..r + cols].copy_from_slice(row);
                        }
                    }
                    Sink::TopK { acc, offset } => {
                        let kk = k.min(cols);
                        if kk == cols {
                            let block: &[f32] = bytemuck::cast_slice(words);
                            for (i, row) in block.chunks_exact(cols).enumerate() {
                                acc.offer_row(q0 + i, *offset + t0, row);
                            }
                        } else {
                            debug_assert_eq!(words.len(), (q1 - q0) * 4 * kk);
                            offer_candidates(acc, q0, *offset + t0, kk, words);
                        }
                    }
                }
                Ok(())
            },
        )
    }

    fn self_influence_gpu(&self, terms: &[SelfTerm<'_>], out: &mut [f32]) -> Result<()> {
        let ctx = &*self.ctx;
        let n = out.len();
        let widths: Vec<TermShape> = terms
            .iter()
            .map(|t| (t.factors.a.cols(), t.factors.g.cols(), t.weight, t.bias))
            .collect();
        let width: usize = widths.iter().map(|w| w.0 + w.1).sum();
        let nb = plan::plan_rows("self_influence", n, width, ctx.limits, ctx.caps.train_rows)?;
        let offs = offsets(&widths, nb);
        let term_buf = ctx.storage_init("terms", &descriptors(&widths, &offs, &offs));
        let data = ctx.storage("factors", (nb * width * 4) as u64);
        let out_buf = ctx.storage("self-influence", (nb * 4) as u64);
        let max_wg = ctx.limits.max_workgroups_per_dim.max(1) as usize;
        let groups: Vec<_> = ranges(nb, max_wg)
            .map(|_| {
                let d = ctx.uniform("self-influence dims", 4);
                let g = ctx.bind(&ctx.self_influence, &[&d, &term_buf, &data, &out_buf]);
                (d, g)
            })
            .collect();
        let readbacks = ctx.readbacks("readback", (nb * 4) as u64);
        ctx.stream(
            "self_influence",
            &readbacks,
            ranges(n, nb),
            |&(r0, r1), enc, readback| {
                for (t, &(a, g)) in terms.iter().zip(&offs) {
                    let f = t.factors.slice_rows(r0, r1);
                    ctx.write_f32(&data, a, f.a.data());
                    ctx.write_f32(&data, g, f.g.data());
                }
                let rows = r1 - r0;
                for ((s0, s1), (d, g)) in ranges(rows, max_wg).zip(&groups) {
                    ctx.write(d, &[rows as u32, terms.len() as u32, s0 as u32, 0]);
                    Context::dispatch(enc, &ctx.self_influence, g, (s1 - s0) as u32, 1);
                }
                let bytes = (rows * 4) as u64;
                enc.copy_buffer_to_buffer(&out_buf, 0, readback, 0, bytes);
                Ok(bytes)
            },
            |(r0, r1), words| {
                out[r0..r1].copy_from_slice(bytemuck::cast_slice(words));
                Ok(())
            },
        )
    }

    fn gemm_gpu(
        &self,
        a: MatRef<'_>,
        b: MatRef<'_>,
        transpose_b: bool,
        (m, n, k): (usize, usize, usize),
        out: &mut [f32],
    ) -> Result<()> {
        let ctx = &*self.ctx;
        let shape = PairShape {
            queries: m,
            train: n,
            query_width: k,
            train_width: k,
            topk: None,
            tile: ctx.tiles.output_tile(),
        };
        let blocks = plan::plan_pair("gemm", &shape, ctx.limits, ctx.caps)?;
        let (mb, nb) = (blocks.query, blocks.train);
        let a_buf = ctx.storage("gemm a", (mb * k * 4) as u64);
        let b_buf = ctx.storage("gemm b", (nb * k * 4) as u64);
        let out_buf = ctx.storage("gemm out", (mb * nb * 4) as u64);
        let dims = ctx.uniform("gemm dims", 8);
        let group = ctx.bind(&ctx.gemm, &[&dims, &a_buf, &b_buf, &out_buf]);
        let readbacks = ctx.readbacks("readback", (mb * nb * 4) as u64);
        let m_blocks: Vec<_> = ranges(m, mb).collect();
        let single_m = m_blocks.len() == 1;
        let work: Vec<((usize, usize), (usize, usize))> = ranges(n, nb)
            .flat_map(|c| m_blocks.iter().map(move |&r| (r, c)))
            .collect();
        let (tile_m, tile_n) = ctx.tiles.output_tile();
        let mut last_n = None;
        let mut uploaded_a = false;
        let mut gathered = Vec::new();
        ctx.stream(
            "gemm",
            &readbacks,
            work,
            |&((m0, m1), (n0, n1)), enc, readback| {
                if !(single_m && uploaded_a) {
                    ctx.write_f32(&a_buf, 0, a.slice_rows(m0, m1).data());
                    uploaded_a = true;
                }
                let cols = n1 - n0;
                let ld_b = if transpose_b {
                    k
                } else if cols == n {
                    n
                } else {
                    cols
                };
                if last_n != Some(n0) {
                    if transpose_b {
                        ctx.write_f32(&b_buf, 0, b.slice_rows(n0, n1).data());
                    } else if cols == n {
                        ctx.write_f32(&b_buf, 0, b.data());
                    } else {
                        // Gather columns n0..n1 of b [k, n] into a contiguous [k, cols].
                        gathered.clear();
                        for r in 0..k {
                            gathered.extend_from_slice(&b.row(r)[n0..n1]);
                        }
                        ctx.write_f32(&b_buf, 0, &gathered);
                    }
                    last_n = Some(n0);
                }
                let rows = m1 - m0;
                ctx.write(
                    &dims,
                    &[
                        rows as u32,
                        cols as u32,
                        k as u32,
                        transpose_b as u32,
                        cols as u32,
                        ld_b as u32,
                        0,
                        0,
                    ],
                );
                Context::dispatch(
                    enc,
                    &ctx.gemm,
                    &group,
                    cols.div_ceil(tile_n) as u32,
                    rows.div_ceil(tile_m) as u32,
                );
                let bytes = (rows * cols * 4) as u64;
                enc.copy_buffer_to_buffer(&out_buf, 0, readback, 0, bytes);
                Ok(bytes)
            },
            |((m0, _), (n0, n1)), words| {
                let cols = n1 - n0;
                let block: &[f32] = bytemuck::cast_slice(words);
                for (i, row) in block.chunks_exact(cols).enumerate() {
                    let r = (m0 + i) * n + n0;
                    out[r..r + cols].copy_from_slice(row);
                }
                Ok(())
            },
        )
    }
}

impl Backend for WgpuBackend {
    fn name(&self) -> String {
        format!("wgpu {}", self.ctx.adapter())
    }

    fn scores(&self, terms: &[Term<'_>], out: &mut [f32]) -> infl_core::Result<()> {
        let (nq, nt) = check_scores(terms, out.len())?;
        if nq == 0 || nt == 0 {
            return Ok(());
        }
        Ok(self.fused("scores", terms, (nq, nt), Sink::Full(out))?)
    }

    fn topk(
        &self,
        terms: &[Term<'_>],
        train_offset: usize,
        acc: &mut TopK,
    ) -> infl_core::Result<()> {
        let (nq, nt) = check_topk(terms, acc)?;
        if nq == 0 || nt == 0 {
            return Ok(());
        }
        Ok(self.fused(
            "topk",
            terms,
            (nq, nt),
            Sink::TopK {
                acc,
                offset: train_offset,
            },
        )?)
    }

    fn self_influence(&self, terms: &[SelfTerm<'_>], out: &mut [f32]) -> infl_core::Result<()> {
        let n = check_self_influence(terms, out.len())?;
        if n == 0 {
            return Ok(());
        }
        Ok(self.self_influence_gpu(terms, out)?)
    }

    fn gemm(
        &self,
        a: MatRef<'_>,
        b: MatRef<'_>,
        transpose_b: bool,
        out: &mut [f32],
    ) -> infl_core::Result<()> {
        let (m, n, k) = check_gemm(a, b, transpose_b, out.len())?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            out.fill(0.0);
            return Ok(());
        }
        Ok(self.gemm_gpu(a, b, transpose_b, (m, n, k), out)?)
    }
}
