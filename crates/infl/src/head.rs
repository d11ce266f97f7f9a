//! The final linear layer as a loss head: from a checkpoint's weights and a split's layer
//! inputs to the output gradients `J = ∂loss/∂logits` and the argmax predictions.
//!
//! A pipeline of four named steps: [`check_split`] (shapes and the same examples as the
//! reference split), [`logits`] (one GEMM on the backend), predictions
//! ([`infl_core::head::argmax`]) and [`output_gradients`] (cross-entropy or squared error).
//! `J` is the per-example gradient of the *summed* loss, as Captum computes it.

use infl_core::head::{argmax, cross_entropy_gradient_in_place};
use infl_core::{Backend, Checkpoint, Examples, Matrix, Rhs, TensorError};

use crate::Result;
use crate::run::{Loss, Reduction};

/// Output gradients and predictions of one split at one checkpoint.
#[derive(Clone, Debug)]
pub struct Head {
    /// `J = ∂loss/∂logits`, `[N, K]`.
    pub gradients: Matrix,
    /// Argmax of the logits per example.
    pub predicted: Vec<usize>,
}

/// The loss a head differentiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LossHead {
    /// The loss.
    pub loss: Loss,
    /// Its reduction in training.
    pub reduction: Reduction,
}

impl LossHead {
    /// Checks `examples` against the layer and against `reference` (the same split at the
    /// first checkpoint), then computes the head.
    pub fn compute(
        &self,
        backend: &dyn Backend,
        checkpoint: &Checkpoint,
        examples: &Examples,
        reference: &Examples,
    ) -> Result<Head> {
        check_split(checkpoint, examples, reference)?;
        let mut z = logits(backend, checkpoint, examples)?;
        let k = checkpoint.weight.rows();
        refuse_non_finite(&z, k, examples, "features", || {
            format!(
                "the logits overflow f32 with the layer in {} (features x weights too large); \
                 rescale the features or the model",
                checkpoint.source.display()
            )
        })?;
        let predicted = z.chunks(k).map(argmax).collect();
        output_gradients(self, checkpoint, examples, &mut z)?;
        refuse_non_finite(&z, k, examples, "targets", || {
            "the loss gradient overflows f32 (targets far from the outputs); rescale them"
                .to_string()
        })?;
        Ok(Head {
            gradients: Matrix::from_vec(examples.len(), k, z)?,
            predicted,
        })
    }
}

/// Checks that `examples` fit the layer and are the same examples, in the same order, as
/// `reference`.
pub fn check_split(ckpt: &Checkpoint, examples: &Examples, reference: &Examples) -> Result<()> {
    let (n, d) = (examples.len(), examples.features.cols());
    let (k, wd) = (ckpt.weight.rows(), ckpt.weight.cols());
    let bad = |tensor: &str, details: String| TensorError::new(&examples.source, tensor, details);
    if n == 0 {
        return Err(bad(
            "features",
            "expected at least one example, found an empty split".into(),
        )
        .into());
    }
    if k == 0 || d == 0 {
        // infl-io refuses these in files; a checkpoint built in memory is checked here.
        return Err(TensorError::new(
            &ckpt.source,
            "weight",
            format!("expected [K, D] with K >= 1 and D >= 1, found [{k}, {wd}]: the layer has no outputs or no inputs"),
        )
        .into());
    }
    if d != wd {
        return Err(bad(
            "features",
            format!(
                "expected [N, {wd}] to match the layer weight [{k}, {wd}] in {}, found [{n}, {d}]",
                ckpt.source.display()
            ),
        )
        .into());
    }
    if n != reference.len() {
        return Err(bad(
            "features",
            format!(
                "expected {} examples as in {}, found {n}",
                reference.len(),
                reference.source.display()
            ),
        )
        .into());
    }
    let same = |tensor| {
        bad(
            tensor,
            format!(
                "expected the same examples in the same order as {}",
                reference.source.display()
            ),
        )
    };
    if examples.labels != reference.labels {
        return Err(same("labels").into());
    }
    if examples.ids != reference.ids {
        return Err(same("ids").into());
    }
    Ok(())
}

/// The logits `z = a Wᵀ + b`, row-major `[N, K]`.
pub fn logits(backend: &dyn Backend, ckpt: &Checkpoint, examples: &Examples) -> Result<Vec<f32>> {
    let k = ckpt.weight.rows();
    let mut z = vec![0.0f32; examples.len() * k];
    backend.gemm(
        examples.features.view(),
        ckpt.weight.view(),
        Rhs::Transposed,
        &mut z,
    )?;
    if let Some(b) = &ckpt.bias {
        for row in z.chunks_mut(k) {
            row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
        }
    }
    Ok(z)
}

/// Replaces the logits `z` by `J = ∂loss/∂logits` of `head`'s loss.
pub fn output_gradients(
    head: &LossHead,
    ckpt: &Checkpoint,
    examples: &Examples,
    z: &mut [f32],
) -> Result<()> {
    let (n, k) = (examples.len(), ckpt.weight.rows());
    match head.loss {
        Loss::CrossEntropy => {
            let labels = class_labels(ckpt, examples)?;
            for (row, &y) in z.chunks_mut(k).zip(labels) {
                cross_entropy_gradient_in_place(row, y as usize);
            }
        }
        Loss::MeanSquaredError => {
            let t = examples.targets.as_ref().ok_or_else(|| {
                TensorError::new(
                    &examples.source,
                    "targets",
                    "the mean-squared-error head needs real targets `targets` [N, K]",
                )
            })?;
            if t.cols() != k {
                return Err(TensorError::new(
                    &examples.source,
                    "targets",
                    format!(
                        "expected [{n}, {k}] for the {k} outputs of the layer, found [{}, {}]",
                        t.rows(),
                        t.cols()
                    ),
                )
                .into());
            }
            let scale = match head.reduction {
                Reduction::Sum => 2.0,
                Reduction::Mean => 2.0 / k as f32,
            };
            for (x, y) in z.iter_mut().zip(t.data()) {
                *x = scale * (*x - y);
            }
        }
    }
    Ok(())
}

/// The class labels of `examples`, each checked to be one of the layer's outputs.
fn class_labels<'e>(ckpt: &Checkpoint, examples: &'e Examples) -> Result<&'e [i64]> {
    let k = ckpt.weight.rows();
    let labels = examples.labels.as_deref().ok_or_else(|| {
        TensorError::new(
            &examples.source,
            "labels",
            "the cross-entropy head needs integer class labels `labels` [N]",
        )
    })?;
    if let Some((i, &y)) = labels
        .iter()
        .enumerate()
        .find(|(_, y)| **y < 0 || **y >= k as i64)
    {
        return Err(TensorError::new(
            &examples.source,
            "labels",
            format!(
                "expected class labels in [0, {k}) for the {k} outputs of the layer in {}, \
                 found {y} at [{i}]",
                ckpt.source.display()
            ),
        )
        .into());
    }
    Ok(labels)
}

/// The first row of `z` (`k` wide) with a non-finite value, as an error on `tensor` of
/// `examples`' file.
fn refuse_non_finite(
    z: &[f32],
    k: usize,
    examples: &Examples,
    tensor: &str,
    why: impl FnOnce() -> String,
) -> Result<()> {
    match z
        .chunks(k)
        .position(|row| row.iter().any(|x| !x.is_finite()))
    {
        None => Ok(()),
        Some(i) => {
            Err(
                TensorError::new(&examples.source, tensor, format!("example {i}: {}", why()))
                    .into(),
            )
        }
    }
}
