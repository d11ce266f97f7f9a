//! The vocabulary every estimator shares: what a run is (checkpoints with the examples'
//! layer inputs), the loss it was trained with, what is known of each split, and what an
//! estimator hands to the [`Engine`](crate::Engine).

use std::ops::Range;
use std::path::PathBuf;

use infl_core::{Checkpoint, Examples};
use infl_io::{FactorFile, FactorRun, LayerFactors, RunLayout};

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
    load_checkpoint_rows(entry, layer, splits, None)
}

/// [`load_checkpoint_data`] with only the training rows `train_rows` (`None`: all), read
/// without touching the others' features (a [`Shard`](crate::Shard) of the training set).
pub fn load_checkpoint_rows(
    entry: &infl_io::RunEntry,
    layer: &str,
    splits: Splits,
    train_rows: Option<Range<usize>>,
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
        train: infl_io::load_examples_rows(&entry.train, train_rows)?,
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

/// What estimators read: checkpoints with the final layer's inputs, or per-layer factor
/// files. Each estimator reads one kind ([`Registration::input`](crate::estimators::Registration)).
#[derive(Clone, Debug)]
pub enum Run {
    /// Checkpoints with the features of their final linear layer (`--run`, `--manifest`).
    Features(Vec<CheckpointData>),
    /// Per-example factors of chosen layers (`--factors`).
    Factors(Vec<FactorCheckpoint>),
}

impl From<Vec<CheckpointData>> for Run {
    fn from(run: Vec<CheckpointData>) -> Self {
        Self::Features(run)
    }
}

impl From<Vec<FactorCheckpoint>> for Run {
    fn from(run: Vec<FactorCheckpoint>) -> Self {
        Self::Factors(run)
    }
}

impl Run {
    /// The checkpoints with features, or an error saying that `who` needs them.
    pub fn features(&self, who: &str) -> Result<&[CheckpointData]> {
        match self {
            Self::Features(run) => Ok(run),
            Self::Factors(_) => Err(Error::config(
                "input",
                format!(
                    "{who} reads checkpoints and features (--run or --manifest), not factor files"
                ),
            )),
        }
    }

    /// The factor checkpoints, or an error saying that `who` needs them.
    pub fn factors(&self, who: &str) -> Result<&[FactorCheckpoint]> {
        match self {
            Self::Factors(run) => Ok(run),
            Self::Features(_) => Err(Error::config(
                "input",
                format!("{who} reads factor files (--factors DIR), not features"),
            )),
        }
    }

    /// Number of checkpoints.
    pub fn len(&self) -> usize {
        match self {
            Self::Features(run) => run.len(),
            Self::Factors(run) => run.len(),
        }
    }

    /// True without checkpoints.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Training examples (of the first checkpoint; all have the same).
    pub fn n_train(&self) -> usize {
        match self {
            Self::Features(run) => run.first().map_or(0, |d| d.train.len()),
            Self::Factors(run) => run.first().map_or(0, |c| c.train.len()),
        }
    }

    /// The ids of the training examples (of the first checkpoint; all have the same).
    pub fn train_ids(&self) -> Vec<i64> {
        match self {
            Self::Features(run) => run.first().map_or(Vec::new(), |d| {
                (0..d.train.len()).map(|i| d.train.id(i)).collect()
            }),
            Self::Factors(run) => run.first().map_or(Vec::new(), |c| c.train.ids.clone()),
        }
    }

    /// The run restricted to the training rows `train` (in that order, ids kept) and the
    /// test rows `test`: what an index shortlist is rescored on. Refused when a row is out
    /// of range or the run has no test set.
    pub fn subset(&self, train: &[usize], test: Range<usize>) -> Result<Run> {
        let (n, t) = (self.n_train(), self.n_test());
        if let Some(bad) = train.iter().find(|&&r| r >= n) {
            let details = format!("training row {bad}; the run has {n}");
            return Err(Error::config("rows", details));
        }
        if test.end > t || test.start > test.end {
            let details = format!("test rows {test:?}; the run has {t} test examples");
            return Err(Error::config("rows", details));
        }
        let tests: Vec<usize> = test.collect();
        Ok(match self {
            Self::Features(run) => Self::Features(
                run.iter()
                    .map(|d| CheckpointData {
                        checkpoint: d.checkpoint.clone(),
                        train: d.train.select(train),
                        test: d.test.as_ref().map(|e| e.select(&tests)),
                    })
                    .collect(),
            ),
            Self::Factors(run) => Self::Factors(
                run.iter()
                    .map(|c| FactorCheckpoint {
                        train: c.train.select(train),
                        test: c.test.as_ref().map(|s| s.select(&tests)),
                        ..c.clone()
                    })
                    .collect(),
            ),
        })
    }

    /// Test examples loaded (0 without a test set).
    pub fn n_test(&self) -> usize {
        match self {
            Self::Features(run) => run
                .first()
                .and_then(|d| d.test.as_ref())
                .map_or(0, Examples::len),
            Self::Factors(run) => run
                .first()
                .and_then(|c| c.test.as_ref())
                .map_or(0, SplitFactors::len),
        }
    }
}

/// One traced layer's factors, with its name.
#[derive(Clone, Debug)]
pub struct NamedFactors {
    /// The layer (or parameter) name.
    pub name: String,
    /// Its factors.
    pub factors: LayerFactors,
}

/// The chosen layers' factors of one split at one checkpoint.
#[derive(Clone, Debug)]
pub struct SplitFactors {
    /// The factor file, for messages.
    pub source: PathBuf,
    /// Example ids (distinct).
    pub ids: Vec<i64>,
    /// Labels, if the file has them.
    pub labels: Option<Vec<i64>>,
    /// The chosen layers, in the order chosen.
    pub layers: Vec<NamedFactors>,
}

impl SplitFactors {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True without examples.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The examples `rows` (in that order; each `< len()`), ids kept.
    pub fn select(&self, rows: &[usize]) -> Self {
        Self {
            source: self.source.clone(),
            ids: rows.iter().map(|&r| self.ids[r]).collect(),
            labels: (self.labels.as_ref()).map(|l| rows.iter().map(|&r| l[r]).collect()),
            layers: (self.layers.iter())
                .map(|l| NamedFactors {
                    name: l.name.clone(),
                    factors: l.factors.select(rows),
                })
                .collect(),
        }
    }

    /// What is known of the split (no predictions: factor files carry none).
    pub fn info(&self) -> SplitInfo {
        SplitInfo {
            ids: self.ids.clone(),
            labels: self.labels.clone(),
            predicted: Vec::new(),
        }
    }
}

/// One checkpoint of a factor run.
#[derive(Clone, Debug)]
pub struct FactorCheckpoint {
    /// The checkpoint's name (`NAME` of its files).
    pub name: String,
    /// Its learning rate, if the training file records one.
    pub learning_rate: Option<f32>,
    /// Training examples' factors.
    pub train: SplitFactors,
    /// Test examples' factors, when asked for and present.
    pub test: Option<SplitFactors>,
}

impl FactorCheckpoint {
    /// The learning rate, else `default`, under the one rule ([`infl_io::check_learning_rate`]).
    pub fn learning_rate_or(&self, default: f32) -> Result<f32> {
        infl_io::check_learning_rate(self.learning_rate.unwrap_or(default)).map_err(|why| {
            Error::config(
                "learning rate",
                format!(
                    "checkpoint {} ({}): {why}",
                    self.name,
                    self.train.source.display()
                ),
            )
        })
    }
}

/// Loads a factor run: the layers `layers` names (all when `None`; see
/// [`FactorFile::resolve`]) of every checkpoint, the test split when `splits` asks for it.
/// Checks that every file has the same layers with the same shapes (examples, positions,
/// widths) and every checkpoint the same examples.
pub fn load_factor_run(
    run: &FactorRun,
    layers: Option<&[String]>,
    splits: Splits,
) -> Result<Vec<FactorCheckpoint>> {
    let checkpoints = run
        .entries
        .iter()
        .map(|e| {
            let train = load_split_factors(&e.train, layers)?;
            let test = match (splits, &e.test) {
                (Splits::TrainAndTest, Some(t)) => Some(load_split_factors(t, layers)?),
                _ => None,
            };
            Ok(FactorCheckpoint {
                name: e.name.clone(),
                learning_rate: FactorFile::open(&e.train)?.learning_rate()?,
                train,
                test,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    check_factor_run(&checkpoints)?;
    Ok(checkpoints)
}

fn load_split_factors(path: &std::path::Path, layers: Option<&[String]>) -> Result<SplitFactors> {
    let file = FactorFile::open(path)?;
    let names = file.resolve(layers)?;
    let layers: Vec<NamedFactors> = names
        .into_iter()
        .map(|name| {
            let factors = file.layer(&name)?;
            Ok(NamedFactors { name, factors })
        })
        .collect::<Result<_>>()?;
    let n = layers.first().map_or(0, |l| l.factors.examples());
    if n == 0 {
        return Err(Error::data(
            path,
            "(all)",
            "expected at least one example, found none",
        ));
    }
    if let Some(l) = layers.iter().find(|l| l.factors.examples() != n) {
        return Err(Error::data(
            path,
            &l.name,
            format!(
                "expected {n} examples as in layer `{}`, found {}",
                layers[0].name,
                l.factors.examples()
            ),
        ));
    }
    Ok(SplitFactors {
        source: path.to_path_buf(),
        ids: file.ids(n)?,
        labels: file.labels(n)?,
        layers,
    })
}

/// A layer's shape: kind, positions and widths.
fn shape_of(f: &LayerFactors) -> String {
    match f {
        LayerFactors::Linear {
            a,
            g,
            positions,
            bias,
        } => format!(
            "linear, {positions} position(s), inputs {}, outputs {}, bias {}",
            a.cols(),
            g.cols(),
            if *bias == infl_core::Bias::Included {
                "included"
            } else {
                "excluded"
            }
        ),
        LayerFactors::Dense { grad } => format!("dense gradient of {}", grad.cols()),
    }
}

/// Every split of every checkpoint has the first training file's layers and shapes, and
/// each split the same examples at every checkpoint.
fn check_factor_run(run: &[FactorCheckpoint]) -> Result<()> {
    let Some(first) = run.first() else {
        return Err(Error::config(
            "checkpoints",
            "at least one checkpoint is needed",
        ));
    };
    let reference = &first.train;
    for c in run {
        for split in std::iter::once(&c.train).chain(&c.test) {
            let names =
                |s: &SplitFactors| s.layers.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
            if split.layers.len() != reference.layers.len() {
                return Err(Error::data(
                    &split.source,
                    "(layers)",
                    format!(
                        "expected the layers {:?} as in {}, found {:?}",
                        names(reference),
                        reference.source.display(),
                        names(split)
                    ),
                ));
            }
            for (l, r) in split.layers.iter().zip(&reference.layers) {
                let (have, want) = (shape_of(&l.factors), shape_of(&r.factors));
                if l.name != r.name || have != want {
                    return Err(Error::data(
                        &split.source,
                        &l.name,
                        format!(
                            "expected layer `{}` as in {} ({want}), found `{}` ({have})",
                            r.name,
                            reference.source.display(),
                            l.name
                        ),
                    ));
                }
            }
        }
        let pairs = std::iter::once((&c.train, Some(&first.train)))
            .chain(c.test.as_ref().map(|t| (t, first.test.as_ref())));
        for (split, want) in pairs {
            match want {
                Some(w) if split.ids != w.ids => {
                    return Err(Error::data(
                        &split.source,
                        "ids",
                        format!(
                            "expected the {} examples of {} (same ids, same order)",
                            w.len(),
                            w.source.display()
                        ),
                    ));
                }
                Some(w) if split.labels != w.labels => {
                    return Err(Error::data(
                        &split.source,
                        "labels",
                        format!(
                            "expected the labels of {} (the same examples carry the same \
                             labels at every checkpoint)",
                            w.source.display()
                        ),
                    ));
                }
                None => {
                    return Err(Error::config(
                        "test set",
                        format!(
                            "checkpoint {} has test factors but {} has none",
                            c.name, first.name
                        ),
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
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
