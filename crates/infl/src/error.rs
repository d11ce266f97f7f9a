//! The error type of the `infl` crate.

use std::path::PathBuf;

use infl_core::TensorError;

/// Errors raised by the estimators.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] infl_io::Error),
    /// A kernel or core type rejected its input.
    #[error(transparent)]
    Core(#[from] infl_core::Error),
    /// An infl-nn model could not be read or applied (names the file and tensor).
    #[error(transparent)]
    Model(#[from] infl_nn::Error),
    /// Input data are inconsistent (names the file and tensor).
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// An example's values are too large (or not finite) for f32 scores: the one rule of
    /// [`crate::finite`], the same on every backend.
    #[error("{split} example {example} at {checkpoint}: {details}")]
    NonFinite {
        /// The checkpoint (or `all checkpoints` when only their sum overflows).
        checkpoint: String,
        /// `train` or `test`.
        split: &'static str,
        /// The example's row in its split.
        example: usize,
        /// Which quantity does not fit, and what to do.
        details: String,
    },
    /// A parameter is out of range (k, empty input...).
    #[error("invalid {what}: {details}")]
    Config {
        /// The parameter.
        what: String,
        /// What was expected and what was found.
        details: String,
    },
}

impl Error {
    pub(crate) fn data(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        details: impl Into<String>,
    ) -> Self {
        Self::Tensor(TensorError::new(path, tensor, details))
    }

    pub(crate) fn config(what: impl Into<String>, details: impl Into<String>) -> Self {
        Self::Config {
            what: what.into(),
            details: details.into(),
        }
    }
}

/// Result alias using [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
