//! The error type of infl-core and of the backends' kernels.

use std::path::PathBuf;

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
    #[error("{path}: tensor `{tensor}`: {details}")]
    BadTensor {
        /// The file the tensor comes from.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What was expected and what was found.
        details: String,
    },
    /// A backend failed (device lost, out of memory, unsupported feature...).
    #[error("backend {backend}: {details}")]
    Backend {
        /// Name of the backend.
        backend: String,
        /// What went wrong.
        details: String,
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
}

/// Result alias using [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
