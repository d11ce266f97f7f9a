//! The error type of infl-nn.

use std::path::PathBuf;

use infl_core::TensorError;

/// Errors raised while building, training, saving or loading a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed (names the file and tensor).
    #[error(transparent)]
    Io(#[from] infl_io::Error),
    /// A core type rejected its input.
    #[error(transparent)]
    Core(#[from] infl_core::Error),
    /// A checkpoint does not describe an MLP infl-nn can load (infl-core's one
    /// "file + tensor + what was expected" error).
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// Inputs have the wrong shape for the model (or for each other).
    #[error("shape mismatch in {op}: {details}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What was expected and what was found.
        details: String,
    },
    /// A setting is out of range.
    #[error("invalid {what}: {details}")]
    Config {
        /// The setting.
        what: String,
        /// What was expected and what was found.
        details: String,
    },
    /// Training produced a non-finite loss.
    #[error(
        "training diverged at epoch {epoch}, batch {batch}: loss is {loss}; lower the learning rate"
    )]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Minibatch within the epoch (0-based).
        batch: usize,
        /// The offending loss value.
        loss: f32,
    },
    /// A second-order fit stopped before its gradient norm reached the tolerance.
    #[error(
        "logistic regression did not converge: gradient norm {gradient_norm:.3e} after \
         {steps} Newton steps (tolerance {tolerance:.1e}); raise the tolerance or the step limit"
    )]
    NotConverged {
        /// Newton steps taken.
        steps: usize,
        /// `‖∇f‖₂` reached.
        gradient_norm: f64,
        /// The tolerance asked for.
        tolerance: f64,
    },
}

impl Error {
    pub(crate) fn shape(op: &'static str, details: impl Into<String>) -> Self {
        Self::Shape {
            op,
            details: details.into(),
        }
    }

    pub(crate) fn config(what: impl Into<String>, details: impl Into<String>) -> Self {
        Self::Config {
            what: what.into(),
            details: details.into(),
        }
    }

    pub(crate) fn checkpoint(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        details: impl Into<String>,
    ) -> Self {
        Self::Tensor(TensorError::new(path, tensor, details))
    }
}

/// Result alias using [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
