//! Checkpoints and example sets as loaded from disk (or built in memory).

use std::path::PathBuf;

use crate::Matrix;

/// One training checkpoint, reduced to the layer under study.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// A short name (file stem), used in messages.
    pub name: String,
    /// Where it was read from (empty for in-memory data); named in errors.
    pub source: PathBuf,
    /// Learning rate in force at this checkpoint, if the checkpoint records one.
    pub learning_rate: Option<f32>,
    /// The layer's weight, `[K, D]` (PyTorch `nn.Linear` layout: out × in).
    pub weight: Matrix,
    /// The layer's bias, `[K]`, if it has one.
    pub bias: Option<Vec<f32>>,
}

/// What an example is scored against: a class label or a regression target.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// Class indices in `[0, K)` (cross-entropy head).
    Classes(Vec<i64>),
    /// Real targets `[N, K]` (mean-squared-error head).
    Values(Matrix),
}

/// A set of examples at one checkpoint: the layer's inputs and what they are scored against.
#[derive(Clone, Debug)]
pub struct Examples {
    /// Where they were read from (empty for in-memory data); named in errors.
    pub source: PathBuf,
    /// Layer inputs (penultimate features), `[N, D]`.
    pub features: Matrix,
    /// Integer class labels `[N]`, if present.
    pub labels: Option<Vec<i64>>,
    /// Real regression targets `[N, K]`, if present.
    pub targets: Option<Matrix>,
    /// User-facing example ids `[N]`, if present (defaults to the row index).
    pub ids: Option<Vec<i64>>,
}

impl Examples {
    /// Examples with features and class labels only.
    pub fn classified(features: Matrix, labels: Vec<i64>) -> Self {
        Self {
            source: PathBuf::new(),
            features,
            labels: Some(labels),
            targets: None,
            ids: None,
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.features.rows()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of row `i`: the `ids` tensor if present, else `i`.
    pub fn id(&self, i: usize) -> i64 {
        self.ids.as_ref().map_or(i as i64, |ids| ids[i])
    }

    /// The examples in `rows` (in that order; each `< len()`), keeping their ids.
    pub fn select(&self, rows: &[usize]) -> Self {
        Self {
            source: self.source.clone(),
            features: self.features.select_rows(rows),
            labels: (self.labels.as_ref()).map(|l| rows.iter().map(|&r| l[r]).collect()),
            targets: self.targets.as_ref().map(|t| t.select_rows(rows)),
            ids: Some(rows.iter().map(|&r| self.id(r)).collect()),
        }
    }
}
