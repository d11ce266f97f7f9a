//! The [`Backend`] implementation: block loops that drive the kernels of
//! [`kernels`](crate::kernels), one module per operation.
//!
//! Every operation plans its block sizes with [`plan`](crate::plan), makes its buffers and
//! bindings once, and streams the blocks through [`Context::stream`](crate::context::Context::stream).

mod fused;
mod gemm;
mod packed;
mod self_influence;
mod topk;

use std::ops::Range;

use infl_core::backend::{check_gemm, check_scores, check_self_influence, check_topk};
use infl_core::{Backend, MatRef, Rhs, SelfTerm, Term, TopK, ranges};

use crate::WgpuBackend;

/// One block of a two-sided problem: query rows × train rows of a score block, or output
/// rows × output columns of a GEMM.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PairBlock {
    /// Query (GEMM: output) rows.
    rows: Range<usize>,
    /// Train rows (GEMM: output columns).
    cols: Range<usize>,
}

/// The blocks of a `rows × cols` problem, column block by column block: all row blocks of
/// one column block come before the next, so each column block is uploaded once.
fn pair_blocks(
    rows: usize,
    rows_per_block: usize,
    cols: usize,
    cols_per_block: usize,
) -> Vec<PairBlock> {
    let row_blocks: Vec<Range<usize>> = ranges(rows, rows_per_block).collect();
    ranges(cols, cols_per_block)
        .flat_map(|cols| {
            row_blocks.iter().map(move |rows| PairBlock {
                rows: rows.clone(),
                cols: cols.clone(),
            })
        })
        .collect()
}

impl Backend for WgpuBackend {
    fn name(&self) -> String {
        format!("wgpu {}", self.ctx.adapter())
    }

    fn scores(&self, terms: &[Term<'_>], out: &mut [f32]) -> infl_core::Result<()> {
        let (queries, train) = check_scores(terms, out.len())?;
        if queries == 0 || train == 0 {
            return Ok(());
        }
        let sink = fused::FullScores::new(out, train);
        Ok(fused::run(
            &self.ctx, "scores", terms, queries, train, sink,
        )?)
    }

    fn topk(
        &self,
        terms: &[Term<'_>],
        train_offset: usize,
        acc: &mut TopK,
    ) -> infl_core::Result<()> {
        let (queries, train) = check_topk(terms, acc)?;
        if queries == 0 || train == 0 {
            return Ok(());
        }
        let sink = topk::TopKSink::new(acc, train_offset, train);
        Ok(fused::run(&self.ctx, "topk", terms, queries, train, sink)?)
    }

    fn self_influence(&self, terms: &[SelfTerm<'_>], out: &mut [f32]) -> infl_core::Result<()> {
        let n = check_self_influence(terms, out.len())?;
        if n == 0 {
            return Ok(());
        }
        Ok(self_influence::run(&self.ctx, terms, out)?)
    }

    fn gemm(
        &self,
        a: MatRef<'_>,
        b: MatRef<'_>,
        rhs: Rhs,
        out: &mut [f32],
    ) -> infl_core::Result<()> {
        let (m, n, k) = check_gemm(a, b, rhs, out.len())?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            out.fill(0.0);
            return Ok(());
        }
        Ok(gemm::run(&self.ctx, a, b, rhs, out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_blocks_are_column_major() {
        let b = pair_blocks(5, 3, 4, 2);
        let pos: Vec<_> = b.iter().map(|b| (b.rows.start, b.cols.start)).collect();
        assert_eq!(pos, vec![(0, 0), (3, 0), (0, 2), (3, 2)]);
        assert_eq!(
            b[3],
            PairBlock {
                rows: 3..5,
                cols: 2..4
            }
        );
    }
}
