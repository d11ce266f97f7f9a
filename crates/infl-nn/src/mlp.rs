//! A multilayer perceptron classifier: linear layers with ReLU between them and softmax
//! cross-entropy on the logits, with a hand-written backward pass.
//!
//! Layer `l` (named `fc{l+1}`, PyTorch style) maps its input `a_l` `[B, in]` to
//! `z_l = a_l W_lᵀ + b_l` `[B, out]`, with `W_l` stored `[out, in]` as in `nn.Linear`;
//! `a_{l+1} = relu(z_l)`; the last `z` are the logits.
//!
//! The backward pass works with the gradient of each example's *own* loss
//! `ℓ_i = −log softmax(z_i)[y_i]` with respect to every layer output, `g_l = ∂ℓ_i/∂z_l`
//! `[B, out]`. These are the per-example factors: the weight gradient of example `i` at
//! layer `l` is the outer product `g_{l,i} ⊗ a_{l,i}` and its bias gradient is `g_{l,i}`.
//! A minibatch step on the mean loss uses `(1/B) Σ_i` of those. The head's arithmetic
//! (argmax, `softmax − onehot` and the loss) is infl-core's [`infl_core::head`], shared
//! with the estimators.
//!
//! Matrix products run on ndarray's GEMM over fixed chunks of rows in parallel (rayon):
//! every output element is computed by the same sequence of operations whatever the
//! number of threads, so results do not depend on it.

use infl_core::head::{argmax, cross_entropy_gradient_in_place};
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis, linalg::general_mat_mul, s};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::{Error, Result};

/// Rows per parallel GEMM task. Fixed, so that results never depend on the thread count.
const ROW_CHUNK: usize = 64;

/// One fully-connected layer, PyTorch `nn.Linear` layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// Weight `[out, in]`.
    pub weight: Array2<f32>,
    /// Bias `[out]`.
    pub bias: Array1<f32>,
}

impl Linear {
    /// Input size.
    pub fn inputs(&self) -> usize {
        self.weight.ncols()
    }

    /// Output size.
    pub fn outputs(&self) -> usize {
        self.weight.nrows()
    }
}

/// An MLP classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    layers: Vec<Linear>,
}

/// Activations of a forward pass, kept for the backward pass.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The input of every layer: `inputs[0]` is the batch, `inputs[l]` = `relu(z_{l-1})`.
    pub inputs: Vec<Array2<f32>>,
    /// Logits `[B, K]`.
    pub logits: Array2<f32>,
}

impl Forward {
    /// The penultimate features (the last layer's input) `[B, D]`.
    pub fn penultimate(&self) -> &Array2<f32> {
        self.inputs.last().expect("an MLP has at least one layer")
    }

    /// Predicted classes: argmax of the logits, the first maximum on ties (as
    /// `numpy.argmax`).
    pub fn predicted(&self) -> Vec<i64> {
        self.logits
            .rows()
            .into_iter()
            .map(|r| match r.as_slice() {
                Some(s) => argmax(s) as i64,
                None => argmax(&r.to_vec()) as i64,
            })
            .collect()
    }
}

/// Per-example loss gradients of a batch.
#[derive(Clone, Debug)]
pub struct Backward {
    /// Per-example cross-entropy losses `[B]`.
    pub losses: Vec<f32>,
    /// `output_grads[l]` = `∂ℓ_i/∂z_l` per example, `[B, out_l]`.
    pub output_grads: Vec<Array2<f32>>,
}

/// Gradients of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearGrad {
    /// `∂L/∂W` `[out, in]`.
    pub weight: Array2<f32>,
    /// `∂L/∂b` `[out]`.
    pub bias: Array1<f32>,
}

/// Checks that there is one label per row of `logits` `[B, K]`, each in `[0, K)`.
pub(crate) fn check_labels(labels: &[i64], logits: ArrayView2<'_, f32>) -> Result<()> {
    let (b, k) = logits.dim();
    if labels.len() != b {
        return Err(Error::shape(
            "Mlp::backward",
            format!(
                "expected {b} labels, one per example, found {}",
                labels.len()
            ),
        ));
    }
    if let Some((i, y)) = labels
        .iter()
        .enumerate()
        .find(|(_, y)| **y < 0 || **y >= k as i64)
    {
        return Err(Error::config(
            "labels",
            format!("expected class labels in [0, {k}), found {y} at [{i}]"),
        ));
    }
    Ok(())
}

/// `out = a · b` (`a` `[m, k]`, `b` `[k, n]`, any strides), in parallel over fixed row
/// chunks of `a`.
pub(crate) fn matmul_into(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    mut out: ArrayViewMut2<'_, f32>,
) {
    debug_assert_eq!(a.ncols(), b.nrows());
    if a.nrows() <= ROW_CHUNK {
        general_mat_mul(1.0, &a, &b, 0.0, &mut out);
        return;
    }
    out.axis_chunks_iter_mut(Axis(0), ROW_CHUNK)
        .into_par_iter()
        .zip(a.axis_chunks_iter(Axis(0), ROW_CHUNK).into_par_iter())
        .for_each(|(mut o, a)| general_mat_mul(1.0, &a, &b, 0.0, &mut o));
}

/// `a · b` as a new array.
pub(crate) fn matmul(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut out = Array2::zeros((a.nrows(), b.ncols()));
    matmul_into(a, b, out.view_mut());
    out
}

impl Mlp {
    /// A freshly initialised MLP with `input` features, the given hidden sizes and
    /// `classes` outputs. Initialisation follows PyTorch's `nn.Linear` default: weights
    /// and biases uniform in `±1/√in`, drawn from a ChaCha8 generator seeded by `seed`.
    pub fn new(input: usize, hidden: &[usize], classes: usize, seed: u64) -> Result<Self> {
        let sizes: Vec<usize> = std::iter::once(input)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(classes))
            .collect();
        if sizes.contains(&0) {
            return Err(Error::config(
                "layer sizes",
                format!("expected every size to be at least 1, found {sizes:?}"),
            ));
        }
        if classes < 2 {
            return Err(Error::config(
                "classes",
                format!("a classifier needs at least 2 classes, found {classes}"),
            ));
        }
        let parameters = Self::parameters_of(&sizes).ok_or_else(|| {
            Error::config(
                "layer sizes",
                format!("{sizes:?}: the parameter count overflows"),
            )
        })?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut uniform = |len: usize, bound: f32| -> Result<Vec<f32>> {
            let mut v = Vec::new();
            v.try_reserve_exact(len).map_err(|_| {
                Error::config(
                    "layer sizes",
                    format!(
                        "{sizes:?}: cannot allocate a model of {parameters} parameters \
                         ({:.1} GiB); use smaller layers",
                        parameters as f64 * 4.0 / (1u64 << 30) as f64
                    ),
                )
            })?;
            v.extend((0..len).map(|_| rng.random_range(-bound..bound)));
            Ok(v)
        };
        let mut layers = Vec::with_capacity(sizes.len() - 1);
        for w in sizes.windows(2) {
            let (i, o) = (w[0], w[1]);
            let bound = 1.0 / (i as f32).sqrt();
            // Row-major, as `from_shape_simple_fn` drew them: the same model for a seed.
            let weight = Array2::from_shape_vec((o, i), uniform(o * i, bound)?)
                .map_err(|e| Error::shape("Mlp::new", e.to_string()))?;
            let bias = Array1::from_vec(uniform(o, bound)?);
            layers.push(Linear { weight, bias });
        }
        Ok(Self { layers })
    }

    /// An MLP from existing layers; checks that their sizes chain.
    pub fn from_layers(layers: Vec<Linear>) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::config("layers", "an MLP needs at least one layer"));
        }
        for (l, layer) in layers.iter().enumerate() {
            if layer.bias.len() != layer.outputs() {
                return Err(Error::shape(
                    "Mlp::from_layers",
                    format!(
                        "fc{}: bias [{}] does not match weight [{}, {}]",
                        l + 1,
                        layer.bias.len(),
                        layer.outputs(),
                        layer.inputs()
                    ),
                ));
            }
            if l > 0 && layers[l - 1].outputs() != layer.inputs() {
                return Err(Error::shape(
                    "Mlp::from_layers",
                    format!(
                        "fc{} has {} outputs but fc{} expects {} inputs",
                        l,
                        layers[l - 1].outputs(),
                        l + 1,
                        layer.inputs()
                    ),
                ));
            }
        }
        Ok(Self { layers })
    }

    /// The layers, first to last.
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// Mutable access to the layers (sizes must not change).
    pub(crate) fn layers_mut(&mut self) -> &mut [Linear] {
        &mut self.layers
    }

    /// The PyTorch-style name of layer `l` (0-based): `fc{l+1}`.
    pub fn layer_name(l: usize) -> String {
        format!("fc{}", l + 1)
    }

    /// The name of the last layer (`fcL`), whose input is the penultimate features.
    pub fn last_layer_name(&self) -> String {
        Self::layer_name(self.layers.len() - 1)
    }

    /// Number of input features.
    pub fn inputs(&self) -> usize {
        self.layers[0].inputs()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs()
    }

    /// Layer sizes, input first: `[in, h1, ..., K]`.
    pub fn sizes(&self) -> Vec<usize> {
        std::iter::once(self.inputs())
            .chain(self.layers.iter().map(Linear::outputs))
            .collect()
    }

    /// Number of parameters.
    pub fn parameters(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weight.len() + l.bias.len())
            .sum()
    }

    /// Parameters of an MLP with these layer sizes (input, hidden..., classes), or `None`
    /// when the count overflows `usize`.
    pub fn parameters_of(sizes: &[usize]) -> Option<usize> {
        sizes.windows(2).try_fold(0usize, |acc, w| {
            w[0].checked_add(1)?.checked_mul(w[1])?.checked_add(acc)
        })
    }

    pub(crate) fn check_input(&self, x: &ArrayView2<'_, f32>) -> Result<()> {
        if x.ncols() != self.inputs() {
            return Err(Error::shape(
                "Mlp::forward",
                format!(
                    "expected inputs [B, {}] for fc1, found [{}, {}]",
                    self.inputs(),
                    x.nrows(),
                    x.ncols()
                ),
            ));
        }
        Ok(())
    }

    /// The forward pass, keeping every layer's input.
    pub fn forward(&self, x: ArrayView2<'_, f32>) -> Result<Forward> {
        self.check_input(&x)?;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut a = x.to_owned();
        for (l, layer) in self.layers.iter().enumerate() {
            let mut z = matmul(a.view(), layer.weight.t());
            z += &layer.bias;
            inputs.push(a);
            if l + 1 == self.layers.len() {
                return Ok(Forward { inputs, logits: z });
            }
            z.mapv_inplace(|v| v.max(0.0));
            a = z;
        }
        unreachable!("an MLP has at least one layer")
    }

    /// Logits `[B, K]`.
    pub fn logits(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        Ok(self.forward(x)?.logits)
    }

    /// Per-example losses and output gradients for class labels `labels` (in `[0, K)`).
    pub fn backward(&self, fwd: &Forward, labels: &[i64]) -> Result<Backward> {
        check_labels(labels, fwd.logits.view())?;
        // ℓ = −ln softmax(z)[y], ∂ℓ/∂z = softmax(z) − onehot(y), row by row in place.
        let mut g = fwd.logits.as_standard_layout().into_owned();
        let losses = g
            .rows_mut()
            .into_iter()
            .zip(labels)
            .map(|(mut row, &y)| {
                let row = row
                    .as_slice_mut()
                    .expect("rows of a standard-layout array are contiguous");
                cross_entropy_gradient_in_place(row, y as usize)
            })
            .collect();
        let n = self.layers.len();
        let mut grads = vec![Array2::zeros((0, 0)); n];
        grads[n - 1] = g;
        for l in (1..n).rev() {
            // ∂ℓ/∂a_l = g_l W_l, then through the ReLU: a_l = relu(z_{l-1}) > 0.
            let mut prev = matmul(grads[l].view(), self.layers[l].weight.view());
            ndarray::Zip::from(&mut prev)
                .and(&fwd.inputs[l])
                .for_each(|p, &a| {
                    if a <= 0.0 {
                        *p = 0.0;
                    }
                });
            grads[l - 1] = prev;
        }
        Ok(Backward {
            losses,
            output_grads: grads,
        })
    }

    /// Parameter gradients of `scale · Σ_i ℓ_i` (use `scale = 1/B` for the mean loss).
    pub fn gradients(&self, fwd: &Forward, back: &Backward, scale: f32) -> Vec<LinearGrad> {
        self.layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let g = &back.output_grads[l];
                let a = &fwd.inputs[l];
                // ∂/∂W = gᵀ a, computed in fixed chunks of output rows (the reduction over
                // the batch is never split, so the result is thread-count independent).
                let mut w = Array2::<f32>::zeros(layer.weight.dim());
                w.axis_chunks_iter_mut(Axis(0), ROW_CHUNK)
                    .into_par_iter()
                    .enumerate()
                    .for_each(|(c, mut o)| {
                        let r0 = c * ROW_CHUNK;
                        let gt = g.slice(s![.., r0..r0 + o.nrows()]);
                        general_mat_mul(scale, &gt.t(), &a.view(), 0.0, &mut o);
                    });
                let bias = g.sum_axis(Axis(0)) * scale;
                LinearGrad { weight: w, bias }
            })
            .collect()
    }

    /// Mean cross-entropy loss of a batch and its parameter gradients.
    pub fn loss_and_grad(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[i64],
    ) -> Result<(f32, Vec<LinearGrad>)> {
        let fwd = self.forward(x)?;
        let back = self.backward(&fwd, labels)?;
        let b = labels.len().max(1) as f32;
        let loss = back.losses.iter().sum::<f32>() / b;
        Ok((loss, self.gradients(&fwd, &back, 1.0 / b)))
    }

    /// Mean cross-entropy loss of a batch, in f64 accumulation (for gradient checks).
    pub fn loss(&self, x: ArrayView2<'_, f32>, labels: &[i64]) -> Result<f64> {
        let fwd = self.forward(x)?;
        let back = self.backward(&fwd, labels)?;
        Ok(back.losses.iter().map(|&l| f64::from(l)).sum::<f64>() / labels.len().max(1) as f64)
    }

    /// Predicted classes for `x`, computed in batches of `batch` rows.
    pub fn predict(&self, x: ArrayView2<'_, f32>, batch: usize) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(x.nrows());
        for chunk in x.axis_chunks_iter(Axis(0), batch.max(1)) {
            out.extend(self.forward(chunk)?.predicted());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_chain_and_are_checked() {
        let m = Mlp::new(5, &[4, 3], 2, 0).unwrap();
        assert_eq!(m.sizes(), vec![5, 4, 3, 2]);
        assert_eq!(m.parameters(), 5 * 4 + 4 + 4 * 3 + 3 + 3 * 2 + 2);
        assert_eq!(m.last_layer_name(), "fc3");
        assert!(m.forward(Array2::zeros((2, 4)).view()).is_err());
        assert!(Mlp::new(5, &[0], 2, 0).is_err());
        let f = m.forward(Array2::ones((3, 5)).view()).unwrap();
        assert!(m.backward(&f, &[0, 1]).is_err());
        assert!(
            m.backward(&f, &[0, 1, 2])
                .unwrap_err()
                .to_string()
                .contains("[0, 2)")
        );
    }

    #[test]
    fn same_seed_same_model() {
        assert_eq!(
            Mlp::new(7, &[5], 3, 9).unwrap(),
            Mlp::new(7, &[5], 3, 9).unwrap()
        );
        assert_ne!(
            Mlp::new(7, &[5], 3, 9).unwrap(),
            Mlp::new(7, &[5], 3, 10).unwrap()
        );
    }

    #[test]
    fn parallel_chunks_match_one_gemm() {
        let a = Array2::from_shape_fn((200, 33), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let b = Array2::from_shape_fn((33, 17), |(i, j)| ((i + 2 * j) % 5) as f32 * 0.5);
        assert_eq!(matmul(a.view(), b.view()), a.dot(&b));
    }
}
