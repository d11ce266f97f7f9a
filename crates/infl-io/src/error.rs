//! The error type of infl-io: every variant names the file (and tensor) involved.

use std::path::PathBuf;

use infl_core::TensorError;

/// Errors raised while reading or writing infl's files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file (bad or truncated header, wrong size...).
    #[error("{path}: not a valid safetensors file: {details}")]
    NotSafetensors {
        /// The file.
        path: PathBuf,
        /// What the parser reported.
        details: String,
    },
    /// A tensor's header entry is inconsistent: unknown dtype, a shape whose size does
    /// not match its data offsets, or data that overlaps or leaves a gap.
    #[error("{path}: not a valid safetensors file: tensor `{tensor}`: {details}")]
    BadEntry {
        /// The file.
        path: PathBuf,
        /// The tensor whose entry is wrong.
        tensor: String,
        /// What was expected and what the entry says.
        details: String,
    },
    /// A required tensor is absent.
    #[error("{path}: no tensor `{tensor}` (the file has: {})", available.join(", "))]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor that was looked for.
        tensor: String,
        /// The tensors the file does have.
        available: Vec<String>,
    },
    /// A tensor or metadata entry has the wrong dtype, shape or values (infl-core's one
    /// "file + tensor + what was expected" error).
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// Checkpoints and feature files do not pair up, or a manifest is malformed.
    #[error("{path}: {details}")]
    Layout {
        /// The run directory or manifest.
        path: PathBuf,
        /// What is wrong.
        details: String,
    },
    /// An error from infl-core.
    #[error(transparent)]
    Core(#[from] infl_core::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        details: impl Into<String>,
    ) -> Self {
        Self::Tensor(TensorError::new(path, tensor, details))
    }

    pub(crate) fn not_safetensors(path: impl Into<PathBuf>, details: impl Into<String>) -> Self {
        Self::NotSafetensors {
            path: path.into(),
            details: details.into(),
        }
    }

    pub(crate) fn bad_entry(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        details: impl Into<String>,
    ) -> Self {
        Self::BadEntry {
            path: path.into(),
            tensor: tensor.into(),
            details: details.into(),
        }
    }

    pub(crate) fn layout(path: impl Into<PathBuf>, details: impl Into<String>) -> Self {
        Self::Layout {
            path: path.into(),
            details: details.into(),
        }
    }
}

/// Result alias using [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
