//! The error type of the `infl` crate.

use std::path::PathBuf;

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
    /// Input data are inconsistent (names the file and tensor).
    #[error("{path}: tensor `{tensor}`: {details}")]
    Data {
        /// The file holding the offending tensor.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What was expected and what was found.
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
        Self::Data {
            path: path.into(),
            tensor: tensor.into(),
            details: details.into(),
        }
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
