//! File formats of infl: safetensors, MNIST IDX and run manifests in; safetensors and
//! other result files out, written atomically.
//!
//! - [`TensorFile`] memory-maps a safetensors file and parses only its header; tensors
//!   are read on demand. Aligned little-endian f32 data is used in place (no copy);
//!   f16, bf16 and f64 are converted to f32 once. Integer tensors of any width are read
//!   as i64.
//! - [`load_checkpoint`] reads one layer of a PyTorch-style state dict (its learning rate
//!   through [`parse_learning_rate`], which infl-nn's loader shares);
//!   [`load_examples`] reads a feature file (`features`, `labels`, `targets`, `ids`).
//! - [`FactorFile`] reads per-example factor files (per-layer inputs and output
//!   gradients, or dense gradients; format in [`factors`]); [`FactorRun`] finds them.
//! - [`mnist`] reads MNIST's IDX files, raw or gzip-compressed; [`Images`] the optional
//!   `images` tensor of feature files (the examples as pictures, for plots).
//! - [`RunLayout`] pairs checkpoints with feature files (directory convention or JSON
//!   manifest; see [`layout`]).
//! - [`Publication`] writes a set of result files all-or-nothing, never replacing an
//!   input or anything but a regular file; [`write_safetensors`] and [`write_atomic`] are
//!   publications of one file. No partial file is left behind, on interrupt included
//!   ([`remove_temporary_files`]).
//!
//! Every error names the file, and the tensor where there is one, and says what was
//! expected; tensor errors are infl-core's [`infl_core::TensorError`], wrapped by
//! [`Error::Tensor`].

#![deny(missing_docs)]

mod error;
pub mod factors;
pub mod images;
pub mod layout;
mod load;
pub mod mnist;
mod publish;
mod tensors;
mod write;

pub use error::{Error, Result};
pub use factors::{FactorEntry, FactorFile, FactorRun, LayerFactors, SAMPLED_SUFFIX};
pub use images::Images;
pub use layout::{RunEntry, RunLayout, natural_cmp};
pub use load::{
    LEARNING_RATE_KEY, check_learning_rate, load_checkpoint, load_examples, load_examples_rows,
    parse_learning_rate,
};
pub use publish::{
    FolderContent, Inputs, Publication, StagedFile, StagedFolder, TEMP_PREFIX,
    remove_temporary_files,
};
pub use tensors::{Rank, TensorFile, TensorInfo};
pub use write::{OutTensor, write_atomic, write_atomic_with, write_safetensors};
