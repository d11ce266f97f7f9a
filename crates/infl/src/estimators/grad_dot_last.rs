//! A test-only toy estimator (feature `testing`): the plain gradient dot product of the
//! final layer at the last checkpoint, `score(i, j) = (J_i·J_j)(a_i·a_j)`. It exists to show
//! that a second estimator needs only its own file and one line in the registry.

use infl_core::{Backend, Bias};

use super::{Audience, Estimator, Indexing, Input, Options, Registration};
use crate::engine::{FactorMatrices, FactorTerm, Progress, TermSet};
use crate::head::LossHead;
use crate::run::{Prepared, Run, SplitInfo, check_test_sets};
use crate::{Error, Result};

pub(super) const REGISTRATION: Registration = Registration {
    name: "grad-dot-last",
    label: "GradDot(last checkpoint)",
    about: "test-only toy: the final layer's gradient dot product at the last checkpoint",
    build: |o| Box::new(GradDotLast { options: *o }),
    input: Input::Features,
    audience: Audience::Tests,
    indexing: Indexing::Embeddings,
};

/// The gradient dot product at the last checkpoint (learning rates ignored).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradDotLast {
    /// Loss, reduction and bias.
    pub options: Options,
}

impl Estimator for GradDotLast {
    fn registration(&self) -> &'static Registration {
        &REGISTRATION
    }

    fn settings(&self) -> Vec<(String, String)> {
        vec![("loss".into(), self.options.loss.short_name().into())]
    }

    fn prepare(
        &self,
        backend: &dyn Backend,
        run: &Run,
        _progress: &dyn Progress,
    ) -> Result<Prepared> {
        let run = run.features(self.label())?;
        let last = run
            .last()
            .ok_or_else(|| Error::config("checkpoints", "at least one checkpoint is needed"))?;
        check_test_sets(run)?;
        let head = LossHead {
            loss: self.options.loss,
            reduction: self.options.reduction,
        };
        let train = head.compute(backend, &last.checkpoint, &last.train, &last.train)?;
        let test = match &last.test {
            Some(t) => Some((t, head.compute(backend, &last.checkpoint, t, t)?)),
            None => None,
        };
        Ok(Prepared {
            set: TermSet {
                terms: vec![FactorTerm {
                    label: format!("checkpoint {}", last.checkpoint.name),
                    weight: 1.0,
                    bias: Bias::Excluded,
                    positions: 1,
                    train: FactorMatrices {
                        a: last.train.features.clone(),
                        g: train.gradients,
                    },
                    test: test.as_ref().map(|(t, h)| FactorMatrices {
                        a: t.features.clone(),
                        g: h.gradients.clone(),
                    }),
                }],
            },
            learning_rates: vec![1.0],
            checkpoints: vec![last.checkpoint.name.clone()],
            train: SplitInfo::of(&last.train, train.predicted),
            test: test.map(|(t, h)| SplitInfo::of(t, h.predicted)),
        })
    }
}
