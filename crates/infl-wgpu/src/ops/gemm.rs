//! GEMM: blocks of output rows × columns through
//! [`call_gemm`](crate::kernels::gemm::call_gemm).

use std::ops::Range;

use infl_core::{MatRef, Rhs};

use super::{PairBlock, pair_blocks};
use crate::context::{Context, Streamed};
use crate::error::Result;
use crate::kernels::gemm::{GemmBindings, GemmBuffers, GemmParams, call_gemm};
use crate::plan::{self, PairShape};

/// The operands, device buffers and output of one product.
struct Gemm<'a, 'o> {
    a: MatRef<'a>,
    b: MatRef<'a>,
    rhs: Rhs,
    /// Output columns.
    n: usize,
    /// Reduction length.
    k: usize,
    a_buf: wgpu::Buffer,
    b_buf: wgpu::Buffer,
    out_buf: wgpu::Buffer,
    kernel: GemmBindings,
    /// Rows of `a` on the device.
    resident_rows: Option<Range<usize>>,
    /// Output columns whose part of `b` is on the device.
    resident_cols: Option<Range<usize>>,
    /// Scratch for gathering a column block of `b` `[k, n]`.
    gathered: Vec<f32>,
    out: &'o mut [f32],
}

impl Gemm<'_, '_> {
    /// Queues the upload of the part of `b` that output columns `cols` need, unless it is
    /// on the device already; returns its row stride on the device.
    fn upload_rhs(&mut self, ctx: &Context, cols: &Range<usize>) -> usize {
        let whole = cols.len() == self.n;
        if self.resident_cols.as_ref() != Some(cols) {
            match self.rhs {
                Rhs::Transposed => ctx.write_f32(
                    &self.b_buf,
                    0,
                    self.b.slice_rows(cols.start, cols.end).data(),
                ),
                Rhs::AsIs if whole => ctx.write_f32(&self.b_buf, 0, self.b.data()),
                Rhs::AsIs => {
                    // Gather columns `cols` of b [k, n] into a contiguous [k, cols].
                    self.gathered.clear();
                    for r in 0..self.k {
                        self.gathered
                            .extend_from_slice(&self.b.row(r)[cols.start..cols.end]);
                    }
                    ctx.write_f32(&self.b_buf, 0, &self.gathered);
                }
            }
            self.resident_cols = Some(cols.clone());
        }
        match self.rhs {
            Rhs::Transposed => self.k,
            // Whole or gathered, a [k, cols] block.
            Rhs::AsIs => cols.len(),
        }
    }
}

impl Streamed for Gemm<'_, '_> {
    type Block = PairBlock;

    fn record(
        &mut self,
        ctx: &Context,
        block: &PairBlock,
        enc: &mut wgpu::CommandEncoder,
        readback: &wgpu::Buffer,
    ) -> Result<u64> {
        if self.resident_rows.as_ref() != Some(&block.rows) {
            let rows = self.a.slice_rows(block.rows.start, block.rows.end);
            ctx.write_f32(&self.a_buf, 0, rows.data());
            self.resident_rows = Some(block.rows.clone());
        }
        let ld_b = self.upload_rhs(ctx, &block.cols);
        let (rows, cols) = (block.rows.len(), block.cols.len());
        let params = GemmParams {
            m: rows as u32,
            n: cols as u32,
            k: self.k as u32,
            b_trans: u32::from(self.rhs == Rhs::Transposed),
            ld_out: cols as u32,
            ld_b: ld_b as u32,
            ..GemmParams::default()
        };
        call_gemm(ctx, enc, &self.kernel, params);
        let bytes = (rows * cols * 4) as u64;
        enc.copy_buffer_to_buffer(&self.out_buf, 0, readback, 0, bytes);
        Ok(bytes)
    }

    fn consume(&mut self, block: PairBlock, words: &[u32]) -> Result<()> {
        let cols = block.cols.len();
        let values: &[f32] = bytemuck::cast_slice(words);
        for (i, row) in values.chunks_exact(cols).enumerate() {
            let at = (block.rows.start + i) * self.n + block.cols.start;
            self.out[at..at + cols].copy_from_slice(row);
        }
        Ok(())
    }
}

/// Computes `out = a · b` or `a · bᵀ` (shapes checked by the caller, `k > 0`).
pub(super) fn run(
    ctx: &Context,
    a: MatRef<'_>,
    b: MatRef<'_>,
    rhs: Rhs,
    out: &mut [f32],
) -> Result<()> {
    let (m, k) = (a.rows(), a.cols());
    let n = out.len() / m;
    let shape = PairShape {
        queries: m,
        train: n,
        query_width: k,
        train_width: k,
        topk: None,
        tile: ctx.tiles.output_tile(),
    };
    let blocks = plan::plan_pair("gemm", &shape, ctx.limits, ctx.caps)?;
    let (rows_per_block, cols_per_block) = (blocks.query, blocks.train);
    let a_buf = ctx.storage("gemm a", (rows_per_block * k * 4) as u64);
    let b_buf = ctx.storage("gemm b", (cols_per_block * k * 4) as u64);
    let out_buf = ctx.storage("gemm out", (rows_per_block * cols_per_block * 4) as u64);
    let buffers = GemmBuffers {
        a: &a_buf,
        b: &b_buf,
        out: &out_buf,
    };
    let kernel = GemmBindings::new(ctx, buffers);
    let readbacks = ctx.readbacks("readback", (rows_per_block * cols_per_block * 4) as u64);
    let mut job = Gemm {
        a,
        b,
        rhs,
        n,
        k,
        a_buf,
        b_buf,
        out_buf,
        kernel,
        resident_rows: None,
        resident_cols: None,
        gathered: Vec::new(),
        out,
    };
    let work = pair_blocks(m, rows_per_block, n, cols_per_block);
    ctx.stream("gemm", &readbacks, work, &mut job)
}
