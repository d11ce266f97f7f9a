//! Factors on the device: every term's `A` and `G` rows of a block packed one after
//! another in a single storage buffer, and the [`TermDesc`] table that tells the shaders
//! where each block starts.

use std::ops::Range;

use infl_core::{Factors, SelfTerm, Term};

use crate::context::Context;
use crate::kernels::TermDesc;

/// The widths and coefficients of one term, as the kernels see them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TermShape {
    /// Width of the layer inputs `A`.
    pub a_cols: usize,
    /// Width of the output gradients `G`.
    pub g_cols: usize,
    /// The term's weight.
    pub weight: f32,
    /// What the bias adds to an input dot product (0 or 1).
    pub bias_dot: f32,
}

impl TermShape {
    /// The shape of a scoring term (its query and train widths agree, checked by
    /// infl-core).
    pub fn of_term(t: &Term<'_>) -> Self {
        Self {
            a_cols: t.query.a.cols(),
            g_cols: t.query.g.cols(),
            weight: t.weight,
            bias_dot: t.bias_dot(),
        }
    }

    /// The shape of a self-influence term.
    pub fn of_self_term(t: &SelfTerm<'_>) -> Self {
        Self {
            a_cols: t.factors.a.cols(),
            g_cols: t.factors.g.cols(),
            weight: t.weight,
            bias_dot: t.bias_dot(),
        }
    }

    /// `f32`s per example row of both factors.
    pub fn width(&self) -> usize {
        self.a_cols + self.g_cols
    }
}

/// `f32`s per example row of all terms' factors together.
pub(crate) fn total_width(shapes: &[TermShape]) -> usize {
    shapes.iter().map(TermShape::width).sum()
}

/// Element offsets of one term's `A` and `G` blocks in a packed buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FactorOffsets {
    /// Where the `A` block starts.
    pub a: usize,
    /// Where the `G` block starts.
    pub g: usize,
}

/// Offsets of each term's blocks when blocks of `rows` rows are laid out one after
/// another: term 0's `A`, term 0's `G`, term 1's `A`...
pub(crate) fn offsets(shapes: &[TermShape], rows: usize) -> Vec<FactorOffsets> {
    let mut at = 0usize;
    shapes
        .iter()
        .map(|s| {
            let offsets = FactorOffsets {
                a: at,
                g: at + rows * s.a_cols,
            };
            at = offsets.g + rows * s.g_cols;
            offsets
        })
        .collect()
}

/// The shaders' term table, from each term's shape and its query and train offsets.
pub(crate) fn term_table(
    shapes: &[TermShape],
    query: &[FactorOffsets],
    train: &[FactorOffsets],
) -> Vec<TermDesc> {
    shapes
        .iter()
        .zip(query)
        .zip(train)
        .map(|((s, q), t)| TermDesc {
            weight: s.weight,
            bias: s.bias_dot,
            da: s.a_cols as u32,
            dg: s.g_cols as u32,
            q_a: q.a as u32,
            q_g: q.g as u32,
            t_a: t.a as u32,
            t_g: t.g as u32,
        })
        .collect()
}

/// One side (queries, train rows or the examples of self-influence) of a pass: a storage
/// buffer holding a block of rows of every term's factors, at [`offsets`].
#[derive(Debug)]
pub(crate) struct PackedFactors {
    /// The storage buffer.
    pub buffer: wgpu::Buffer,
    /// Where each term's blocks start.
    pub offsets: Vec<FactorOffsets>,
    /// The rows last uploaded, which need no new upload.
    resident: Option<Range<usize>>,
}

impl PackedFactors {
    /// A buffer for blocks of up to `rows_per_block` rows.
    pub fn new(ctx: &Context, label: &str, shapes: &[TermShape], rows_per_block: usize) -> Self {
        let bytes = (rows_per_block * total_width(shapes) * 4) as u64;
        Self {
            buffer: ctx.storage(label, bytes),
            offsets: offsets(shapes, rows_per_block),
            resident: None,
        }
    }

    /// Queues the upload of rows `rows` of every term's factors (one [`Factors`] per term,
    /// in term order), unless they are the rows already on the device.
    pub fn upload<'a>(
        &mut self,
        ctx: &Context,
        factors: impl IntoIterator<Item = Factors<'a>>,
        rows: &Range<usize>,
    ) {
        if self.resident.as_ref() == Some(rows) {
            return;
        }
        for (f, at) in factors.into_iter().zip(&self.offsets) {
            let block = f.slice_rows(rows.start, rows.end);
            ctx.write_f32(&self.buffer, at.a, block.a.data());
            ctx.write_f32(&self.buffer, at.g, block.g.data());
        }
        self.resident = Some(rows.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(a_cols: usize, g_cols: usize) -> TermShape {
        TermShape {
            a_cols,
            g_cols,
            weight: 0.5,
            bias_dot: 1.0,
        }
    }

    #[test]
    fn blocks_are_packed_term_by_term() {
        let shapes = [shape(3, 2), shape(5, 1)];
        assert_eq!(total_width(&shapes), 11);
        let o = offsets(&shapes, 4);
        assert_eq!(
            o,
            vec![
                FactorOffsets { a: 0, g: 12 },
                FactorOffsets { a: 20, g: 40 }
            ]
        );
        let table = term_table(&shapes, &o, &offsets(&shapes, 2));
        assert_eq!(
            table[1],
            TermDesc {
                weight: 0.5,
                bias: 1.0,
                da: 5,
                dg: 1,
                q_a: 20,
                q_g: 40,
                t_a: 10,
                t_g: 20,
            }
        );
    }
}
