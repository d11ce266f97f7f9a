//! Self-influence: blocks of examples through
//! [`call_self_influence`](crate::kernels::self_influence::call_self_influence).

use std::ops::Range;

use infl_core::{SelfTerm, ranges};

use super::packed::{PackedFactors, TermShape, term_table, total_width};
use crate::context::{Context, Streamed};
use crate::error::Result;
use crate::kernels::self_influence::{
    SelfInfluenceBindings, SelfInfluenceBuffers, SelfInfluenceParams, call_self_influence,
};
use crate::plan;

/// The buffers of a self-influence pass and the caller's output.
struct SelfInfluence<'t, 'a, 'o> {
    terms: &'t [SelfTerm<'a>],
    factors: PackedFactors,
    results: wgpu::Buffer,
    kernel: SelfInfluenceBindings,
    out: &'o mut [f32],
}

impl Streamed for SelfInfluence<'_, '_, '_> {
    type Block = Range<usize>;

    fn record(
        &mut self,
        ctx: &Context,
        rows: &Range<usize>,
        enc: &mut wgpu::CommandEncoder,
        readback: &wgpu::Buffer,
    ) -> Result<u64> {
        let factors = self.terms.iter().map(|t| t.factors);
        self.factors.upload(ctx, factors, rows);
        let params = SelfInfluenceParams {
            rows: rows.len() as u32,
            n_terms: self.terms.len() as u32,
            ..SelfInfluenceParams::default()
        };
        call_self_influence(ctx, enc, &self.kernel, params);
        let bytes = (rows.len() * 4) as u64;
        enc.copy_buffer_to_buffer(&self.results, 0, readback, 0, bytes);
        Ok(bytes)
    }

    fn consume(&mut self, rows: Range<usize>, words: &[u32]) -> Result<()> {
        self.out[rows].copy_from_slice(bytemuck::cast_slice(words));
        Ok(())
    }
}

/// Computes the self-influence of every example of `terms` into `out`.
pub(super) fn run(ctx: &Context, terms: &[SelfTerm<'_>], out: &mut [f32]) -> Result<()> {
    let n = out.len();
    let shapes: Vec<TermShape> = terms.iter().map(TermShape::of_self_term).collect();
    let width = total_width(&shapes);
    let rows_per_block =
        plan::plan_rows("self_influence", n, width, ctx.limits, ctx.caps.train_rows)?;
    let factors = PackedFactors::new(ctx, "factors", &shapes, rows_per_block);
    let table = term_table(&shapes, &factors.offsets, &factors.offsets);
    let term_buf = ctx.storage_init("terms", &table);
    let results = ctx.storage("self-influence", (rows_per_block * 4) as u64);
    let kernel = SelfInfluenceBindings::new(
        ctx,
        rows_per_block,
        SelfInfluenceBuffers {
            terms: &term_buf,
            data: &factors.buffer,
            out: &results,
        },
    );
    let readbacks = ctx.readbacks("readback", (rows_per_block * 4) as u64);
    let mut job = SelfInfluence {
        terms,
        factors,
        results,
        kernel,
        out,
    };
    let blocks = ranges(n, rows_per_block);
    ctx.stream("self_influence", &readbacks, blocks, &mut job)
}
