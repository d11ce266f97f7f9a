//! Vocabulary shared by every infl crate.
//!
//! infl reduces training-data attribution to a handful of bulk kernels over *factor
//! matrices*. For a linear layer the per-example weight gradient is an outer product
//! `g ⊗ a` (output gradient times layer input), so the gradient dot product of two
//! examples factorises: `⟨∇ᵢ, ∇ⱼ⟩ = (gᵢ·gⱼ)(aᵢ·aⱼ)`. A [`Factors`] pair holds `A` and `G`
//! for a set of examples, one row per example; a [`Term`] pairs the query and train factors
//! of one (checkpoint, layer) with its weight (the learning rate). Estimators hand a list
//! of terms to a [`Backend`], which evaluates the weighted sum of fused grams
//! `Σ w (G_q G_tᵀ) ⊙ (A_q A_tᵀ)` block by block, never materialising a `[test × train]`
//! matrix unless asked to.
//!
//! Design choices:
//! - Matrices are dense, row-major `f32` ([`Matrix`], [`MatRef`]). Loaders convert
//!   f16/bf16/f64 once, at load time; f32 data can stay memory-mapped (see
//!   [`matrix::F32Storage`]), so this crate has no I/O dependency.
//! - The [`Backend`] trait has a small required surface (fused scores, GEMM) and provided
//!   methods built on it (top-k, self-influence, summed outer products), which a backend
//!   overrides only for speed. It works on host views: a GPU backend uploads blocks
//!   itself, and every estimator (TracInCP, TracInCPFast, influence functions) is written
//!   once.
//! - One home per idea: [`ranges`] cuts every blocked loop, [`order`] is the one ranking
//!   order, [`head`] the one softmax/argmax, [`TensorError`] the one "file + tensor"
//!   error that every crate wraps.
//! - Top-k uses a total order (score descending, then lower training index), so results
//!   do not depend on blocking or thread count; see [`topk`].

#![deny(missing_docs)]

pub mod backend;
pub mod data;
pub mod error;
pub mod head;
pub mod matrix;
pub mod observe;
pub mod order;
mod ranges;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod topk;

pub use backend::{Backend, Bias, Factors, Rhs, SelfTerm, Term};
pub use data::{Checkpoint, Examples, Targets};
pub use error::{BoxedError, Error, Result, TensorError};
pub use matrix::{MatRef, Matrix};
pub use observe::{Presentation, TrainingObserver};
pub use order::{Direction, rank_descending};
pub use ranges::ranges;
pub use topk::{Ranked, TopK, TopKRows};
