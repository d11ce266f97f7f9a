//! Scores and top-k: the fused kernel over blocks of queries × train rows, each score block
//! then handed to a [`ScoreSink`] ([`FullScores`], or top-k selection in
//! [`topk`](super::topk)).

use infl_core::Term;

use super::packed::{PackedFactors, TermShape, term_table, total_width};
use super::{PairBlock, pair_blocks};
use crate::context::{Context, Streamed};
use crate::error::Result;
use crate::kernels::fused_scores::{
    FusedScoresBindings, FusedScoresBuffers, FusedScoresParams, call_fused_scores,
};
use crate::plan::{self, Blocks, PairShape};

/// What happens to a score block once the fused kernel has computed it.
pub(super) trait ScoreSink {
    /// Top-k: the `k` to keep per query row (at most the train rows), which bounds the
    /// block plan; `None` when the whole block is read back.
    fn topk(&self) -> Option<usize>;

    /// Makes the sink's device buffers for blocks of `blocks` size reading `scores`;
    /// returns the readback bytes a block needs at most.
    fn prepare(&mut self, ctx: &Context, blocks: Blocks, scores: &wgpu::Buffer) -> u64;

    /// Records what follows the fused dispatch of `block`, ending with a copy of the
    /// result into `readback`; returns the bytes to read back.
    fn record(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        block: &PairBlock,
        scores: &wgpu::Buffer,
        readback: &wgpu::Buffer,
    ) -> u64;

    /// Takes the read-back result of `block`.
    fn consume(&mut self, block: PairBlock, words: &[u32]);
}

/// Records the copy of a whole `rows × cols` score block into `readback`; returns its bytes.
pub(super) fn copy_scores(
    enc: &mut wgpu::CommandEncoder,
    block: &PairBlock,
    scores: &wgpu::Buffer,
    readback: &wgpu::Buffer,
) -> u64 {
    let bytes = (block.rows.len() * block.cols.len() * 4) as u64;
    enc.copy_buffer_to_buffer(scores, 0, readback, 0, bytes);
    bytes
}

/// Scores read back whole into the caller's `[queries, train]` output.
pub(super) struct FullScores<'o> {
    out: &'o mut [f32],
    /// Row stride of `out`: all train rows.
    train: usize,
}

impl<'o> FullScores<'o> {
    /// A sink writing into `out` of `train` columns.
    pub fn new(out: &'o mut [f32], train: usize) -> Self {
        Self { out, train }
    }
}

impl ScoreSink for FullScores<'_> {
    fn topk(&self) -> Option<usize> {
        None
    }

    fn prepare(&mut self, _: &Context, blocks: Blocks, _: &wgpu::Buffer) -> u64 {
        (blocks.query * blocks.train * 4) as u64
    }

    fn record(
        &self,
        _: &Context,
        enc: &mut wgpu::CommandEncoder,
        block: &PairBlock,
        scores: &wgpu::Buffer,
        readback: &wgpu::Buffer,
    ) -> u64 {
        copy_scores(enc, block, scores, readback)
    }

    fn consume(&mut self, block: PairBlock, words: &[u32]) {
        let cols = block.cols.len();
        let scores: &[f32] = bytemuck::cast_slice(words);
        for (i, row) in scores.chunks_exact(cols).enumerate() {
            let at = (block.rows.start + i) * self.train + block.cols.start;
            self.out[at..at + cols].copy_from_slice(row);
        }
    }
}

/// The device side of a fused pass, whatever the sink: planned block sizes, the term
/// table, packed query and train factors, the score block and the kernel's bindings.
struct FusedPass<'t, 'a> {
    terms: &'t [Term<'a>],
    blocks: Blocks,
    query: PackedFactors,
    train: PackedFactors,
    scores: wgpu::Buffer,
    kernel: FusedScoresBindings,
}

impl<'t, 'a> FusedPass<'t, 'a> {
    /// Plans blocks for `queries × train` scores (top-k: keeping `topk` per row) and makes
    /// the buffers.
    fn new(
        ctx: &Context,
        op: &'static str,
        terms: &'t [Term<'a>],
        queries: usize,
        train: usize,
        topk: Option<usize>,
    ) -> Result<Self> {
        let shapes: Vec<TermShape> = terms.iter().map(TermShape::of_term).collect();
        let width = total_width(&shapes);
        let shape = PairShape {
            queries,
            train,
            query_width: width,
            train_width: width,
            topk,
            tile: ctx.tiles.output_tile(),
        };
        let blocks = plan::plan_pair(op, &shape, ctx.limits, ctx.caps)?;
        let query = PackedFactors::new(ctx, "query factors", &shapes, blocks.query);
        let train = PackedFactors::new(ctx, "train factors", &shapes, blocks.train);
        let table = term_table(&shapes, &query.offsets, &train.offsets);
        let term_buf = ctx.storage_init("terms", &table);
        let scores = ctx.storage("score block", (blocks.query * blocks.train * 4) as u64);
        let kernel = FusedScoresBindings::new(
            ctx,
            FusedScoresBuffers {
                terms: &term_buf,
                query: &query.buffer,
                train: &train.buffer,
                out: &scores,
            },
        );
        Ok(Self {
            terms,
            blocks,
            query,
            train,
            scores,
            kernel,
        })
    }

    /// Uploads the factor rows `block` needs (those not already on the device) and records
    /// the fused dispatch.
    fn record(&mut self, ctx: &Context, enc: &mut wgpu::CommandEncoder, block: &PairBlock) {
        let query = self.terms.iter().map(|t| t.query);
        self.query.upload(ctx, query, &block.rows);
        let train = self.terms.iter().map(|t| t.train);
        self.train.upload(ctx, train, &block.cols);
        let cols = block.cols.len() as u32;
        let params = FusedScoresParams {
            q_rows: block.rows.len() as u32,
            t_rows: cols,
            n_terms: self.terms.len() as u32,
            ld_out: cols,
        };
        call_fused_scores(ctx, enc, &self.kernel, params);
    }
}

/// A fused pass and its sink, streamed block by block.
struct Fused<'t, 'a, S> {
    pass: FusedPass<'t, 'a>,
    sink: S,
}

impl<S: ScoreSink> Streamed for Fused<'_, '_, S> {
    type Block = PairBlock;

    fn record(
        &mut self,
        ctx: &Context,
        block: &PairBlock,
        enc: &mut wgpu::CommandEncoder,
        readback: &wgpu::Buffer,
    ) -> Result<u64> {
        self.pass.record(ctx, enc, block);
        Ok(self
            .sink
            .record(ctx, enc, block, &self.pass.scores, readback))
    }

    fn consume(&mut self, block: PairBlock, words: &[u32]) -> Result<()> {
        self.sink.consume(block, words);
        Ok(())
    }
}

/// Computes the `queries × train` scores of `terms` block by block into `sink`.
pub(super) fn run(
    ctx: &Context,
    op: &'static str,
    terms: &[Term<'_>],
    queries: usize,
    train: usize,
    mut sink: impl ScoreSink,
) -> Result<()> {
    let pass = FusedPass::new(ctx, op, terms, queries, train, sink.topk())?;
    let blocks = pass.blocks;
    let readbacks = ctx.readbacks("readback", sink.prepare(ctx, blocks, &pass.scores));
    let work = pair_blocks(queries, blocks.query, train, blocks.train);
    ctx.stream(op, &readbacks, work, &mut Fused { pass, sink })
}
