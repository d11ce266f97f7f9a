//! The error type of infl-core and of the backends' kernels, and [`TensorError`], the one
//! "file + tensor + what was expected" error every crate reuses.

use std::fmt;
use std::path::PathBuf;

/// A tensor (or metadata entry) of an input file is not what infl expects. Every crate's
/// error enum wraps this one type, so messages about tensors read the same everywhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: tensor `{tensor}`: {details}", path.display())]
pub struct TensorError {
    /// The file the tensor comes from (empty for in-memory data).
    pub path: PathBuf,
    /// The tensor's name (or `KEY (metadata)`).
    pub tensor: String,
    /// What was expected and what was found.
    pub details: String,
}

impl TensorError {
    /// A tensor error naming `path`, `tensor` and `details`.
    pub fn new(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        details: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            tensor: tensor.into(),
            details: details.into(),
        }
    }
}

/// The error of a backend, kept whole so that callers can walk its `source()` chain or
/// downcast it (e.g. to the GPU backend's error to tell "too large" from "device lost").
pub type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors raised by core types and backend kernels.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two operands do not have compatible shapes.
    #[error("shape mismatch in {op}: {details}")]
    Shape {
        /// The operation that checked the shapes.
        op: &'static str,
        /// What was expected and what was found.
        details: String,
    },
    /// A value is outside its allowed range (k = 0, an empty split, a bad label...).
    #[error("invalid {what}: {details}")]
    Invalid {
        /// What was invalid.
        what: String,
        /// Why.
        details: String,
    },
    /// A tensor in an input file is not what infl expects.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// A backend failed (device lost, out of memory, a block too large...). The backend's
    /// own error is the source.
    #[error("backend {backend}: {source}")]
    Backend {
        /// Name of the backend.
        backend: String,
        /// The backend's error.
        source: BoxedError,
    },
}

impl Error {
    /// Shorthand for [`Error::Shape`].
    pub fn shape(op: &'static str, details: impl Into<String>) -> Self {
        Self::Shape {
            op,
            details: details.into(),
        }
    }

    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(what: impl Into<String>, details: impl Into<String>) -> Self {
        Self::Invalid {
            what: what.into(),
            details: details.into(),
        }
    }

    /// Wraps a backend's own error, keeping it as the source.
    pub fn backend(
        backend: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            backend: backend.to_string(),
            source: Box::new(source),
        }
    }

    /// The backend's own error of type `E`, if this is a backend error of that type.
    pub fn backend_error<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Self::Backend { source, .. } => source.downcast_ref::<E>(),
            _ => None,
        }
    }
}

/// Result alias using [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
