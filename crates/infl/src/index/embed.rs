//! Per-example embeddings of a [`TermSet`]: vectors whose dot products are the engine's
//! scores.
//!
//! A term contributes `w (g_i·g_j)(a_i·a_j + bias)` to a score, and
//! `(g_i·g_j)(a_i·a_j) = vec(g_i ⊗ a_i)·vec(g_j ⊗ a_j)`; an included bias is one more input
//! column of 1. So with `e_i = concat_t √w_t · vec(g_t[i] ⊗ [a_t[i], 1 if bias])`
//! (row-major, the `g` index major) `e_i·e_j` is the score; a ghost term's example sums
//! that over its positions (its materialised gradient). For TracInCPFastRandProj's
//! terms these are exactly Captum's embeddings `concat_c √lr_c vec((J P_J) ⊗ (a P_a))`.
//!
//! Each entry is one product, formed in f64 (`√w`, `g`, `a`) and stored as f32. The width
//! is `Σ_t Dg_t (Da_t + bias)`: embeddings are worth it when that stays moderate (a
//! projection, or a final layer), since they trade the engine's factored scoring for one
//! dense vector per example.
//!
//! **Non-finite values.** A block whose squared norm `w ‖g‖² (‖a‖² + bias)` is not finite
//! or exceeds [`finite::LIMIT`] is an error naming the term, the split and the example
//! (the engine's own rule, see [`finite`]): an index never holds a value that scoring
//! would refuse. A negative or non-finite weight has no real square root and is refused.

use std::ops::Range;

use infl_core::{Bias, Matrix};

use crate::engine::{FactorMatrices, FactorTerm, TermSet};
use crate::finite;
use crate::{Error, Result};

/// Which examples to embed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rows {
    /// These rows of the training split.
    Train(Range<usize>),
    /// Every example of the test split.
    Test,
}

/// Width `E` of the embeddings of `set`: `Σ_t Dg_t (Da_t + 1 if the bias is included)`.
pub fn embedding_width(set: &TermSet) -> usize {
    set.terms.iter().map(term_width).sum()
}

fn term_width(t: &FactorTerm) -> usize {
    t.train.g.cols() * (t.train.a.cols() + bias_columns(t.bias))
}

fn bias_columns(bias: Bias) -> usize {
    match bias {
        Bias::Excluded => 0,
        Bias::Included => 1,
    }
}

/// The embeddings `[rows, E]` of `rows` (see the module docs), or an error naming the
/// first example whose embedding does not fit in f32.
pub fn embeddings(set: &TermSet, rows: Rows) -> Result<Matrix> {
    let (split, range) = match rows {
        Rows::Train(r) if r.start <= r.end && r.end <= set.n_train() => ("train", r),
        Rows::Train(r) => {
            return Err(Error::config(
                "rows",
                format!(
                    "training rows {}..{}; expected a range within 0..{}",
                    r.start,
                    r.end,
                    set.n_train()
                ),
            ));
        }
        Rows::Test => ("test", 0..set.n_test()),
    };
    let width = embedding_width(set);
    let mut out = vec![0.0f32; range.len() * width];
    let mut offset = 0;
    for term in &set.terms {
        let factors = split_factors(term, split)?;
        let scale = term_scale(term)?;
        let w = term_width(term);
        let mut acc = Vec::new();
        for (r, i) in range.clone().enumerate() {
            let block = &mut out[r * width + offset..r * width + offset + w];
            let rows = term.rows_of(i);
            embed_row(factors, rows, scale, term.bias, &mut acc, block).map_err(|norm| {
                Error::NonFinite {
                    checkpoint: term.label.clone(),
                    split,
                    example: i,
                    details: format!(
                        "its embedding block has w‖g‖²(‖a‖² + bias) = {norm:.4e}, which does not \
                     fit in f32 (largest accepted {:.4e}); rescale the features or the model",
                        finite::LIMIT
                    ),
                }
            })?;
        }
        offset += w;
    }
    Ok(Matrix::from_vec(range.len(), width, out)?)
}

/// The factors of `split` of a term, checked against the training widths.
fn split_factors<'a>(term: &'a FactorTerm, split: &str) -> Result<&'a FactorMatrices> {
    let f = match split {
        "train" => &term.train,
        _ => term
            .test
            .as_ref()
            .ok_or_else(|| Error::config("test set", "test embeddings need test examples"))?,
    };
    let (a, g) = (term.train.a.cols(), term.train.g.cols());
    if f.a.cols() != a || f.g.cols() != g || f.a.rows() != f.g.rows() {
        return Err(Error::config(
            "factors",
            format!(
                "{}: {split} factors a [{} x {}], g [{} x {}]; expected {a} input and {g} \
                 output columns (the training widths) and as many rows in both",
                term.label,
                f.a.rows(),
                f.a.cols(),
                f.g.rows(),
                f.g.cols()
            ),
        ));
    }
    Ok(f)
}

/// `√w` of a term, refused for weights without a real square root.
fn term_scale(term: &FactorTerm) -> Result<f64> {
    let w = f64::from(term.weight);
    if !(w.is_finite() && w >= 0.0) {
        return Err(Error::config(
            "term weight",
            format!(
                "{}: weight {w}; an embedding scales by √w, so it needs a finite weight >= 0",
                term.label
            ),
        ));
    }
    Ok(w.sqrt())
}

/// Writes `√w Σ_s vec(g_s ⊗ [a_s, 1?])` over the rows of example `i` (one row, or its
/// positions for a ghost term) into `block`, summed in f64 in `acc`; on failure returns
/// the block's squared norm, computed in f64.
fn embed_row(
    f: &FactorMatrices,
    rows: Range<usize>,
    scale: f64,
    bias: Bias,
    acc: &mut Vec<f64>,
    block: &mut [f32],
) -> std::result::Result<(), f64> {
    acc.clear();
    acc.resize(block.len(), 0.0);
    for row in rows {
        let (a, g) = (f.a.view().row(row), f.g.view().row(row));
        let stride = a.len() + bias_columns(bias);
        for (gk, out) in g.iter().zip(acc.chunks_exact_mut(stride.max(1))) {
            let s = scale * f64::from(*gk);
            for (o, al) in out.iter_mut().zip(a) {
                *o += s * f64::from(*al);
            }
            if bias == Bias::Included {
                out[a.len()] += s;
            }
        }
    }
    let norm: f64 = acc.iter().map(|v| v * v).sum();
    for (o, v) in block.iter_mut().zip(acc.iter()) {
        *o = *v as f32;
    }
    if norm.is_finite() && norm <= finite::LIMIT {
        Ok(())
    } else {
        Err(norm)
    }
}
