//! The vocabulary every estimator shares: what a run is (checkpoints with the examples'
//! layer inputs), the loss it was trained with, what is known of each split, and what an
//! estimator hands to the [`Engine`](crate::Engine).

use infl_core::{Checkpoint, Examples};
use infl_io::RunLayout;

use crate::engine::TermSet;
use crate::{Error, Result};

/// The loss whose gradient is traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Loss {
    /// Softmax cross-entropy on integer `labels`: `J = softmax(z) − onehot(y)`.
    #[default]
    CrossEntropy,
    /// Squared error on real `targets` (`MSELoss`): `J = 2 (z − y)`.
    MeanSquaredError,
}

impl Loss {
    /// The short name used on the command line and in metadata (`ce`, `mse`).
    pub fn short_name(self) -> &'static str {
        match self {
            Loss::CrossEntropy => "ce",
            Loss::MeanSquaredError => "mse",
        }
    }
}

/// The loss reduction the model was trained with (as Captum's `loss_fn.reduction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// `reduction="sum"`.
    #[default]
    Sum,
    /// `reduction="mean"` (rescaled by the batch size, as Captum does).
    Mean,
}

impl Reduction {
    /// The short name used on the command line and in metadata (`sum`, `mean`).
    pub fn short_name(self) -> &'static str {
        match self {
            Reduction::Sum => "sum",
            Reduction::Mean => "mean",
        }
    }
}

/// One checkpoint with the examples' layer inputs at that checkpoint.
#[derive(Clone, Debug)]
pub struct CheckpointData {
    /// The layer's weights.
    pub checkpoint: Checkpoint,
    /// Training examples.
    pub train: Examples,
    /// Test examples, if any.
    pub test: Option<Examples>,
}

/// Which splits of a run to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Splits {
    /// Training examples only (self-influence): test files are not even opened.
    TrainOnly,
    /// Training and, where the run has them, test examples.
    TrainAndTest,
}

/// What is known of a set of examples besides their factors.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitInfo {
    /// User-facing ids (the `ids` tensor, else the row index).
    pub ids: Vec<i64>,
    /// Class labels, when present.
    pub labels: Option<Vec<i64>>,
    /// Predicted class (argmax of the logits) at the last checkpoint.
    pub predicted: Vec<usize>,
}

impl SplitInfo {
    /// Ids and labels of `examples`, with the given predictions.
    pub fn of(examples: &Examples, predicted: Vec<usize>) -> Self {
        Self {
            ids: (0..examples.len()).map(|i| examples.id(i)).collect(),
            labels: examples.labels.clone(),
            predicted,
        }
    }
}

/// An estimator's output, ready to be scored by an [`Engine`](crate::Engine).
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The terms to score.
    pub set: TermSet,
    /// The learning rate used for each checkpoint.
    pub learning_rates: Vec<f32>,
    /// Checkpoint names, in order.
    pub checkpoints: Vec<String>,
    /// Training examples.
    pub train: SplitInfo,
    /// Test examples, if any.
    pub test: Option<SplitInfo>,
}

/// Loads every checkpoint of a run (layer `layer`) with the feature files of `splits`. A
/// manifest's learning rate overrides the checkpoint's metadata.
pub fn load_run(layout: &RunLayout, layer: &str, splits: Splits) -> Result<Vec<CheckpointData>> {
    layout
        .entries
        .iter()
        .map(|e| load_checkpoint_data(e, layer, splits))
        .collect()
}

/// Loads one entry of a run (see [`load_run`]).
pub fn load_checkpoint_data(
    entry: &infl_io::RunEntry,
    layer: &str,
    splits: Splits,
) -> Result<CheckpointData> {
    let mut checkpoint = infl_io::load_checkpoint(&entry.checkpoint, layer)?;
    if let Some(lr) = entry.learning_rate {
        checkpoint.learning_rate = Some(lr);
    }
    let test = match splits {
        Splits::TrainOnly => None,
        Splits::TrainAndTest => entry
            .test
            .as_ref()
            .map(infl_io::load_examples)
            .transpose()?,
    };
    Ok(CheckpointData {
        checkpoint,
        train: infl_io::load_examples(&entry.train)?,
        test,
    })
}

/// Every checkpoint has a test set, or none has.
pub fn check_test_sets(run: &[CheckpointData]) -> Result<()> {
    let Some(first) = run.first() else {
        return Ok(());
    };
    let has_test = first.test.is_some();
    match run.iter().find(|d| d.test.is_some() != has_test) {
        None => Ok(()),
        Some(d) => Err(Error::config(
            "test set",
            format!(
                "checkpoint {} {} test examples but {} {}",
                d.checkpoint.name,
                if d.test.is_some() { "has" } else { "has no" },
                first.checkpoint.name,
                if has_test { "has" } else { "has none" }
            ),
        )),
    }
}

/// The learning rate of a checkpoint (its own, else `default`), refused unless finite and
/// positive (infl-io's one rule, [`infl_io::check_learning_rate`]).
pub fn learning_rate(d: &CheckpointData, default: f32) -> Result<f32> {
    let lr = d.checkpoint.learning_rate.unwrap_or(default);
    infl_io::check_learning_rate(lr).map_err(|why| {
        Error::config(
            "learning rate",
            format!(
                "checkpoint {} ({}): {why}",
                d.checkpoint.name,
                d.checkpoint.source.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use infl_core::Matrix;

    fn data(lr: Option<f32>) -> CheckpointData {
        CheckpointData {
            checkpoint: Checkpoint {
                name: "c".into(),
                source: Default::default(),
                learning_rate: lr,
                weight: Matrix::from_vec(1, 1, vec![1.0]).unwrap(),
                bias: None,
            },
            train: Examples::classified(Matrix::from_vec(1, 1, vec![1.0]).unwrap(), vec![0]),
            test: None,
        }
    }

    #[test]
    fn learning_rates_in_memory_follow_the_one_rule() {
        assert_eq!(learning_rate(&data(Some(0.5)), 1.0).unwrap(), 0.5);
        assert_eq!(learning_rate(&data(None), 2.0).unwrap(), 2.0);
        for (lr, default) in [(Some(-1.0), 1.0), (Some(0.0), 1.0), (None, -2.0)] {
            let e = learning_rate(&data(lr), default).unwrap_err().to_string();
            assert!(
                e.contains("checkpoint c") && e.contains("expected a positive learning rate"),
                "{e}"
            );
        }
    }
}
