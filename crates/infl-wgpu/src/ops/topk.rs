//! The top-k sink of the fused pass: each score block is reduced on the device to `k`
//! proponent and `k` opponent candidates per row ([`call_topk_rows`]), which the host
//! merges into [`TopK`]; its total order makes the result independent of blocking.

use infl_core::TopK;

use super::PairBlock;
use super::fused::{ScoreSink, copy_scores};
use crate::context::Context;
use crate::kernels::topk_rows::{TopkRowsBindings, TopkRowsParams, call_topk_rows};
use crate::plan::{Blocks, CANDIDATE_BYTES};

/// Streams score blocks into a [`TopK`] accumulator.
pub(super) struct TopKSink<'a> {
    acc: &'a mut TopK,
    /// Training index of score column 0.
    train_offset: usize,
    /// Candidates kept per row and list: `acc.k()`, at most the columns of a block.
    k: usize,
    /// The selection kernel and its candidate buffer (made by [`ScoreSink::prepare`]).
    select: Option<Selection>,
}

/// Device side of the selection.
struct Selection {
    candidates: wgpu::Buffer,
    kernel: TopkRowsBindings,
}

impl<'a> TopKSink<'a> {
    /// A sink offering scores of `train` columns to `acc`; column `t` is training index
    /// `train_offset + t`.
    pub fn new(acc: &'a mut TopK, train_offset: usize, train: usize) -> Self {
        let k = acc.k().min(train);
        Self {
            acc,
            train_offset,
            k,
            select: None,
        }
    }

    /// Candidates kept per row of a block of `cols` columns; when that is all of them, the
    /// block is read back whole instead.
    fn kept(&self, cols: usize) -> usize {
        self.k.min(cols)
    }
}

impl ScoreSink for TopKSink<'_> {
    fn topk(&self) -> Option<usize> {
        Some(self.k)
    }

    fn prepare(&mut self, ctx: &Context, blocks: Blocks, scores: &wgpu::Buffer) -> u64 {
        self.k = self.k.min(blocks.train);
        let bytes = blocks.query as u64 * CANDIDATE_BYTES * self.k as u64;
        let candidates = ctx.storage("top-k candidates", bytes);
        let kernel = TopkRowsBindings::new(ctx, blocks.query, scores, &candidates);
        self.select = Some(Selection { candidates, kernel });
        bytes
    }

    fn record(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        block: &PairBlock,
        scores: &wgpu::Buffer,
        readback: &wgpu::Buffer,
    ) -> u64 {
        let (rows, cols) = (block.rows.len(), block.cols.len());
        let k_block = self.kept(cols);
        if k_block == cols {
            return copy_scores(enc, block, scores, readback);
        }
        let select = self.select.as_ref().expect("prepare makes the selection");
        let params = TopkRowsParams {
            rows: rows as u32,
            cols: cols as u32,
            ld: cols as u32,
            k: k_block as u32,
            ..TopkRowsParams::default()
        };
        call_topk_rows(ctx, enc, &select.kernel, params);
        let bytes = rows as u64 * CANDIDATE_BYTES * k_block as u64;
        enc.copy_buffer_to_buffer(&select.candidates, 0, readback, 0, bytes);
        bytes
    }

    fn consume(&mut self, block: PairBlock, words: &[u32]) {
        let cols = block.cols.len();
        let first_index = self.train_offset + block.cols.start;
        let k_block = self.kept(cols);
        if k_block == cols {
            let scores: &[f32] = bytemuck::cast_slice(words);
            for (i, row) in scores.chunks_exact(cols).enumerate() {
                self.acc.offer_row(block.rows.start + i, first_index, row);
            }
        } else {
            debug_assert_eq!(words.len(), block.rows.len() * 4 * k_block);
            offer_candidates(self.acc, block.rows.start, first_index, k_block, words);
        }
    }
}

/// Offers the candidates of a block whose first row is query `first_row` and whose first
/// column is training index `first_index`. `words` holds, per row, `k` proponents then
/// `k` opponents, each a (column, score bits) pair.
fn offer_candidates(acc: &mut TopK, first_row: usize, first_index: usize, k: usize, words: &[u32]) {
    let mut proponents: Vec<u32> = Vec::with_capacity(k);
    for (i, row) in words.chunks_exact(4 * k).enumerate() {
        let (props, opps) = row.split_at(2 * k);
        proponents.clear();
        for c in props.chunks_exact(2) {
            proponents.push(c[0]);
            acc.offer(
                first_row + i,
                first_index + c[0] as usize,
                f32::from_bits(c[1]),
            );
        }
        proponents.sort_unstable();
        for c in opps.chunks_exact(2) {
            // A candidate in both lists is offered once (both lists of `acc` see it).
            if proponents.binary_search(&c[0]).is_err() {
                acc.offer(
                    first_row + i,
                    first_index + c[0] as usize,
                    f32::from_bits(c[1]),
                );
            }
        }
    }
}
