//! TracInCPFast (Pruthi et al. 2020, appendix F) on the final linear layer, matching
//! Captum's `TracInCPFast`.
//!
//! Per checkpoint `c` with learning rate `lr_c`, layer inputs `a` (the penultimate
//! features) and `J = ∂loss/∂logits` per example:
//! `score(i, j) = Σ_c lr_c (J_i·J_j)(a_i·a_j)` and `self(j) = Σ_c lr_c ‖J_j‖²‖a_j‖²`.
//!
//! Captum's conventions, kept here: the bias gradient is left out (opt in with
//! [`Bias::Included`], which adds 1 to every `a_i·a_j`); `J` is the per-example gradient
//! of the *summed* loss — for a `mean` loss Captum multiplies the batch gradient by the
//! batch size, so cross-entropy gives the same scores for both reductions, while
//! `MSELoss(reduction="mean")`, which also averages over the `K` outputs, gives `J/K`.

use infl_core::{Backend, Bias};

use super::{Audience, Estimator, Indexing, Input, Options, Registration};
use crate::engine::{FactorMatrices, FactorTerm, Progress, TermSet};
use crate::head::LossHead;
use crate::run::{
    self, CheckpointData, Loss, Prepared, Reduction, Run, SplitInfo, check_test_sets,
};
use crate::{Error, Result};

pub(super) const REGISTRATION: Registration = Registration {
    name: "tracincp-fast",
    label: "TracInCPFast",
    about: "TracInCPFast on the final linear layer (Pruthi et al. 2020, appendix F; as Captum)",
    build: |o| Box::new(TracInCPFast::from(o)),
    input: Input::Features,
    audience: Audience::Users,
    indexing: Indexing::Embeddings,
};

/// TracInCPFast settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TracInCPFast {
    /// Loss head.
    pub loss: Loss,
    /// Loss reduction.
    pub reduction: Reduction,
    /// Whether the bias gradient is included (Captum leaves it out).
    pub bias: Bias,
    /// Learning rate for checkpoints that record none (Captum's default is 1.0).
    pub default_learning_rate: f32,
}

impl Default for TracInCPFast {
    fn default() -> Self {
        Self::from(&Options::default())
    }
}

impl From<&Options> for TracInCPFast {
    fn from(o: &Options) -> Self {
        Self {
            loss: o.loss,
            reduction: o.reduction,
            bias: o.bias,
            default_learning_rate: o.default_learning_rate,
        }
    }
}

impl Estimator for TracInCPFast {
    fn registration(&self) -> &'static Registration {
        &REGISTRATION
    }

    fn settings(&self) -> Vec<(String, String)> {
        vec![
            ("loss".into(), self.loss.short_name().into()),
            ("reduction".into(), self.reduction.short_name().into()),
            (
                "include_bias".into(),
                (self.bias == Bias::Included).to_string(),
            ),
        ]
    }

    /// One term per checkpoint: `A` = the features, `G` = `J`, weight = the learning rate.
    fn prepare(
        &self,
        backend: &dyn Backend,
        run: &Run,
        _progress: &dyn Progress,
    ) -> Result<Prepared> {
        let run = run.features(self.label())?;
        let first = run
            .first()
            .ok_or_else(|| Error::config("checkpoints", "at least one checkpoint is needed"))?;
        check_test_sets(run)?;
        let head = LossHead {
            loss: self.loss,
            reduction: self.reduction,
        };
        let mut terms = Vec::with_capacity(run.len());
        let (mut train_pred, mut test_pred) = (Vec::new(), Vec::new());
        for d in run {
            let train = head.compute(backend, &d.checkpoint, &d.train, &first.train)?;
            train_pred = train.predicted;
            let test = match (&d.test, &first.test) {
                (Some(t), Some(f)) => {
                    let h = head.compute(backend, &d.checkpoint, t, f)?;
                    test_pred = h.predicted;
                    Some(FactorMatrices {
                        a: t.features.clone(),
                        g: h.gradients,
                    })
                }
                _ => None,
            };
            terms.push(FactorTerm {
                label: format!("checkpoint {}", d.checkpoint.name),
                weight: self.learning_rate(d)?,
                bias: self.bias,
                positions: 1,
                train: FactorMatrices {
                    a: d.train.features.clone(),
                    g: train.gradients,
                },
                test,
            });
        }
        Ok(Prepared {
            learning_rates: terms.iter().map(|t| t.weight).collect(),
            checkpoints: run.iter().map(|d| d.checkpoint.name.clone()).collect(),
            set: TermSet { terms },
            train: SplitInfo::of(&first.train, train_pred),
            test: first.test.as_ref().map(|t| SplitInfo::of(t, test_pred)),
        })
    }
}

impl TracInCPFast {
    /// The checkpoint's learning rate, else the default (see [`run::learning_rate`]).
    pub fn learning_rate(&self, d: &CheckpointData) -> Result<f32> {
        run::learning_rate(d, self.default_learning_rate)
    }
}
