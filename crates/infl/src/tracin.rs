//! TracInCPFast (Pruthi et al. 2020, appendix F) on the final linear layer, matching
//! Captum's `TracInCPFast`.
//!
//! Per checkpoint `c` with learning rate `lr_c`, layer inputs `a` (the penultimate
//! features) and `J = ∂loss/∂logits` per example:
//! `score(i, j) = Σ_c lr_c (J_i·J_j)(a_i·a_j)` and `self(j) = Σ_c lr_c ‖J_j‖²‖a_j‖²`.
//!
//! Captum's conventions, kept here: the bias gradient is left out (opt in with
//! `include_bias`, which adds 1 to every `a_i·a_j`); `J` is the per-example gradient of
//! the *summed* loss — for a `mean` loss Captum multiplies the batch gradient by the batch
//! size, so cross-entropy gives the same scores for both reductions, while
//! `MSELoss(reduction="mean")`, which also averages over the `K` outputs, gives `J/K`.

use infl_core::{Backend, Checkpoint, Examples, Matrix};
use infl_io::RunLayout;

use crate::engine::{FactorTerm, TermSet};
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

/// The loss reduction the model was trained with (as Captum's `loss_fn.reduction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// `reduction="sum"`.
    #[default]
    Sum,
    /// `reduction="mean"` (rescaled by the batch size, as Captum does).
    Mean,
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

/// TracInCPFast settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TracInCPFast {
    /// Loss head.
    pub loss: Loss,
    /// Loss reduction.
    pub reduction: Reduction,
    /// Include the bias gradient (Captum leaves it out).
    pub include_bias: bool,
    /// Learning rate for checkpoints that record none (Captum's default is 1.0).
    pub default_learning_rate: f32,
}

impl Default for TracInCPFast {
    fn default() -> Self {
        Self {
            loss: Loss::CrossEntropy,
            reduction: Reduction::Sum,
            include_bias: false,
            default_learning_rate: 1.0,
        }
    }
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

/// TracInCPFast factors, ready to be scored by an [`crate::Engine`].
#[derive(Clone, Debug)]
pub struct Prepared {
    /// One term per checkpoint.
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

/// Output gradients and predictions of one split at one checkpoint.
struct Head {
    g: Matrix,
    predicted: Vec<usize>,
}

impl TracInCPFast {
    /// Computes the factors of every checkpoint with `backend` (one small GEMM each for
    /// the logits) and checks that the inputs are consistent.
    pub fn prepare<B: Backend>(&self, backend: &B, data: &[CheckpointData]) -> Result<Prepared> {
        let first = data
            .first()
            .ok_or_else(|| Error::config("checkpoints", "at least one checkpoint is needed"))?;
        let has_test = first.test.is_some();
        let mut terms = Vec::with_capacity(data.len());
        let mut lrs = Vec::with_capacity(data.len());
        let (mut train_pred, mut test_pred) = (Vec::new(), Vec::new());
        for d in data {
            if d.test.is_some() != has_test {
                return Err(Error::config(
                    "test set",
                    format!(
                        "checkpoint {} {} test examples but {} {}",
                        d.checkpoint.name,
                        if d.test.is_some() { "has" } else { "has no" },
                        first.checkpoint.name,
                        if has_test { "has" } else { "has none" }
                    ),
                ));
            }
            let lr = d
                .checkpoint
                .learning_rate
                .unwrap_or(self.default_learning_rate);
            let train = self.head(backend, &d.checkpoint, &d.train, &first.train)?;
            train_pred = train.predicted;
            let test = match (&d.test, &first.test) {
                (Some(t), Some(f)) => {
                    let h = self.head(backend, &d.checkpoint, t, f)?;
                    test_pred = h.predicted;
                    Some((t.features.clone(), h.g))
                }
                _ => None,
            };
            lrs.push(lr);
            terms.push(FactorTerm {
                weight: lr,
                bias: self.include_bias,
                train_a: d.train.features.clone(),
                train_g: train.g,
                test,
            });
        }
        let info = |e: &Examples, predicted| SplitInfo {
            ids: (0..e.len()).map(|i| e.id(i)).collect(),
            labels: e.labels.clone(),
            predicted,
        };
        Ok(Prepared {
            set: TermSet { terms },
            learning_rates: lrs,
            checkpoints: data.iter().map(|d| d.checkpoint.name.clone()).collect(),
            train: info(&first.train, train_pred),
            test: first.test.as_ref().map(|t| info(t, test_pred)),
        })
    }

    /// `J = ∂loss/∂logits` per example, and the argmax predictions.
    fn head<B: Backend>(
        &self,
        backend: &B,
        ckpt: &Checkpoint,
        ex: &Examples,
        reference: &Examples,
    ) -> Result<Head> {
        let (n, d) = (ex.len(), ex.features.cols());
        let (k, wd) = (ckpt.weight.rows(), ckpt.weight.cols());
        if n == 0 {
            return Err(Error::data(
                &ex.source,
                "features",
                "expected at least one example, found an empty split",
            ));
        }
        if d != wd {
            return Err(Error::data(
                &ex.source,
                "features",
                format!(
                    "expected [N, {wd}] to match the layer weight [{k}, {wd}] in {}, found [{n}, {d}]",
                    ckpt.source.display()
                ),
            ));
        }
        if n != reference.len() {
            return Err(Error::data(
                &ex.source,
                "features",
                format!(
                    "expected {} examples as in {}, found {n}",
                    reference.len(),
                    reference.source.display()
                ),
            ));
        }
        if ex.labels != reference.labels || ex.ids != reference.ids {
            return Err(Error::data(
                &ex.source,
                if ex.labels != reference.labels {
                    "labels"
                } else {
                    "ids"
                },
                format!(
                    "expected the same examples in the same order as {}",
                    reference.source.display()
                ),
            ));
        }
        let mut z = vec![0.0f32; n * k];
        backend.gemm(ex.features.view(), ckpt.weight.view(), true, &mut z)?;
        if let Some(b) = &ckpt.bias {
            for row in z.chunks_mut(k) {
                row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
            }
        }
        let predicted: Vec<usize> = z
            .chunks(k)
            .map(|row| {
                let mut best = 0;
                for (j, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = j;
                    }
                }
                best
            })
            .collect();
        match self.loss {
            Loss::CrossEntropy => {
                let labels = ex.labels.as_ref().ok_or_else(|| {
                    Error::data(
                        &ex.source,
                        "labels",
                        "the cross-entropy head needs integer class labels `labels` [N]",
                    )
                })?;
                if let Some((i, &y)) = labels
                    .iter()
                    .enumerate()
                    .find(|(_, y)| **y < 0 || **y >= k as i64)
                {
                    return Err(Error::data(
                        &ex.source,
                        "labels",
                        format!(
                            "expected class labels in [0, {k}) for the {k} outputs of the layer \
                             in {}, found {y} at [{i}]",
                            ckpt.source.display()
                        ),
                    ));
                }
                for (row, &y) in z.chunks_mut(k).zip(labels) {
                    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut s = 0.0f32;
                    for x in row.iter_mut() {
                        *x = (*x - m).exp();
                        s += *x;
                    }
                    for x in row.iter_mut() {
                        *x /= s;
                    }
                    row[y as usize] -= 1.0;
                }
            }
            Loss::MeanSquaredError => {
                let t = ex.targets.as_ref().ok_or_else(|| {
                    Error::data(
                        &ex.source,
                        "targets",
                        "the mean-squared-error head needs real targets `targets` [N, K]",
                    )
                })?;
                if t.cols() != k {
                    return Err(Error::data(
                        &ex.source,
                        "targets",
                        format!(
                            "expected [{n}, {k}] for the {k} outputs of the layer, found [{}, {}]",
                            t.rows(),
                            t.cols()
                        ),
                    ));
                }
                let scale = match self.reduction {
                    Reduction::Sum => 2.0,
                    Reduction::Mean => 2.0 / k as f32,
                };
                for (x, y) in z.iter_mut().zip(t.data()) {
                    *x = scale * (*x - y);
                }
            }
        }
        Ok(Head {
            g: Matrix::from_vec(n, k, z)?,
            predicted,
        })
    }
}

/// A training example ranked by self-influence (likely mislabelled when high).
#[derive(Clone, Debug, PartialEq)]
pub struct Suspect {
    /// 1-based rank.
    pub rank: usize,
    /// Row in the training set.
    pub index: usize,
    /// User-facing id.
    pub id: i64,
    /// Its self-influence.
    pub self_influence: f32,
    /// Its given label, if labels are known.
    pub label: Option<i64>,
    /// Predicted class at the last checkpoint (classification heads).
    pub predicted: Option<usize>,
}

/// The `top` training examples with the highest self-influence, highest first (ties:
/// lower index first).
pub fn rank_suspects(self_influence: &[f32], train: &SplitInfo, top: usize) -> Vec<Suspect> {
    let mut order: Vec<usize> = (0..self_influence.len()).collect();
    order.sort_by(|&a, &b| {
        self_influence[b]
            .partial_cmp(&self_influence[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    order
        .into_iter()
        .take(top)
        .enumerate()
        .map(|(r, i)| Suspect {
            rank: r + 1,
            index: i,
            id: train.ids[i],
            self_influence: self_influence[i],
            label: train.labels.as_ref().map(|l| l[i]),
            predicted: train.labels.as_ref().map(|_| train.predicted[i]),
        })
        .collect()
}

/// Loads every checkpoint of a run (layer `layer`) with its feature files. A manifest's
/// learning rate overrides the checkpoint's metadata.
pub fn load_run(layout: &RunLayout, layer: &str) -> Result<Vec<CheckpointData>> {
    layout
        .entries
        .iter()
        .map(|e| {
            let mut checkpoint = infl_io::load_checkpoint(&e.checkpoint, layer)?;
            if let Some(lr) = e.learning_rate {
                checkpoint.learning_rate = Some(lr);
            }
            Ok(CheckpointData {
                checkpoint,
                train: infl_io::load_examples(&e.train)?,
                test: e.test.as_ref().map(infl_io::load_examples).transpose()?,
            })
        })
        .collect()
}
