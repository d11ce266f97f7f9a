//! Minibatch SGD with momentum and weight decay (PyTorch's `torch.optim.SGD` update),
//! seeded shuffling, and hooks for observers and checkpoints.
//!
//! Each epoch presents every training example once, in an order drawn from a ChaCha8
//! generator seeded by [`TrainConfig::seed`]; the last minibatch may be smaller (no
//! example is dropped). For every minibatch the trainer runs the training-mode forward
//! pass, reports each example's prediction to the [`TrainingObserver`] *before* the
//! optimizer step (as InterpretDL's forgetting-events recorder expects), then steps on the
//! mean cross-entropy loss:
//! `d = ∇ + wd·θ; v = μ·v + d; θ −= lr·v` (no dampening, no Nesterov; weight decay applies
//! to weights and biases, as PyTorch's default parameter group does).

use infl_core::{Presentation, TrainingObserver};
use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Backward, Error, Forward, LinearGrad, Mlp, Result};

/// Training settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Number of passes over the training set.
    pub epochs: usize,
    /// Examples per minibatch (one larger than the training set means the whole set).
    pub batch_size: usize,
    /// Step size.
    pub learning_rate: f32,
    /// Momentum `μ` (0 for plain SGD).
    pub momentum: f32,
    /// L2 weight decay `wd` (0 for none).
    pub weight_decay: f32,
    /// Seed of the shuffling generator.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            seed: 0,
        }
    }
}

/// Training examples: inputs, class labels and the ids reported to observers.
#[derive(Clone, Copy, Debug)]
pub struct Dataset<'a> {
    /// Inputs `[N, in]`.
    pub x: ArrayView2<'a, f32>,
    /// Class labels `[N]` (the labels trained on, possibly noisy).
    pub labels: &'a [i64],
    /// Ids reported in [`Presentation::id`]; the row index when `None`.
    pub ids: Option<&'a [usize]>,
}

/// What the trainer tells its caller as it goes (progress, checkpoints).
pub trait TrainHooks {
    /// A minibatch was processed (after the optimizer step).
    fn on_batch(&mut self, _epoch: usize, _batch: usize, _batches: usize, _loss: f32) {}
    /// Epoch `epoch` (1-based) is over; `learning_rate` was in force during it. Save
    /// checkpoints here. An error stops training.
    fn on_epoch_end(&mut self, _epoch: usize, _model: &Mlp, _learning_rate: f32) -> Result<()> {
        Ok(())
    }
}

impl TrainHooks for () {}

/// A record of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's minibatches (weighted by batch size).
    pub loss: f32,
    /// Training accuracy of the pre-step predictions over the epoch.
    pub accuracy: f32,
}

/// Trains `model` in place on `data` with minibatch SGD; returns per-epoch statistics.
pub fn train(
    model: &mut Mlp,
    data: Dataset<'_>,
    config: &TrainConfig,
    observer: &mut dyn TrainingObserver,
    hooks: &mut dyn TrainHooks,
) -> Result<Vec<EpochStats>> {
    check_inputs(data, config)?;
    let n = data.x.nrows();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    // Momentum buffers, shaped like each layer's gradient.
    let mut velocity: Vec<LinearGrad> = model
        .layers()
        .iter()
        .map(|l| LinearGrad {
            weight: Array2::zeros(l.weight.dim()),
            bias: Array1::zeros(l.bias.len()),
        })
        .collect();
    // A batch larger than the training set is the whole set (as PyTorch's DataLoader).
    let batch_size = config.batch_size.min(n);
    let batches = n.div_ceil(batch_size);
    let mut order: Vec<usize> = (0..n).collect();
    let mut stats = Vec::new();
    let mut scratch = BatchScratch::new(batch_size);
    for epoch in 1..=config.epochs {
        shuffle(&mut order, &mut rng);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for (b, rows) in order.chunks(batch_size).enumerate() {
            let pass = present(model, data, rows, &mut scratch, observer)?;
            correct += pass.correct;
            let batch_loss = pass.back.losses.iter().sum::<f32>() / rows.len() as f32;
            if !batch_loss.is_finite() {
                return Err(Error::Diverged {
                    epoch,
                    batch: b,
                    loss: batch_loss,
                });
            }
            loss_sum += f64::from(batch_loss) * rows.len() as f64;
            let grads = model.gradients(&pass.fwd, &pass.back, 1.0 / rows.len() as f32);
            sgd_step(model, &grads, &mut velocity, config);
            hooks.on_batch(epoch, b, batches, batch_loss);
        }
        hooks.on_epoch_end(epoch, model, config.learning_rate)?;
        stats.push(EpochStats {
            epoch,
            loss: (loss_sum / n as f64) as f32,
            accuracy: correct as f32 / n as f32,
        });
    }
    Ok(stats)
}

/// Checks the data's lengths and the settings' ranges before any training.
fn check_inputs(data: Dataset<'_>, config: &TrainConfig) -> Result<()> {
    let n = data.x.nrows();
    if data.labels.len() != n {
        return Err(Error::shape(
            "train",
            format!(
                "expected {n} labels, one per input row, found {}",
                data.labels.len()
            ),
        ));
    }
    if let Some(ids) = data.ids
        && ids.len() != n
    {
        return Err(Error::shape(
            "train",
            format!("expected {n} ids, one per input row, found {}", ids.len()),
        ));
    }
    if n == 0 {
        return Err(Error::config(
            "training set",
            "expected at least one example, found none",
        ));
    }
    check_config(config)
}

/// Checks the batch size and the optimizer's settings.
fn check_config(config: &TrainConfig) -> Result<()> {
    if config.batch_size == 0 {
        return Err(Error::config("batch size", "expected at least 1, found 0"));
    }
    if !(config.learning_rate.is_finite() && config.learning_rate > 0.0) {
        return Err(Error::config(
            "learning rate",
            format!("expected a positive number, found {}", config.learning_rate),
        ));
    }
    let momentum_ok = (0.0..1.0).contains(&config.momentum);
    let decay_ok = config.weight_decay.is_finite() && config.weight_decay >= 0.0;
    if !(momentum_ok && decay_ok) {
        return Err(Error::config(
            "optimizer",
            format!(
                "expected 0 <= momentum < 1 and weight decay >= 0, found {} and {}",
                config.momentum, config.weight_decay
            ),
        ));
    }
    Ok(())
}

/// Fisher–Yates with the seeded generator.
fn shuffle(order: &mut [usize], rng: &mut ChaCha8Rng) {
    for i in (1..order.len()).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
}

/// Buffers reused from one minibatch to the next.
struct BatchScratch {
    labels: Vec<i64>,
    presentations: Vec<Presentation>,
}

impl BatchScratch {
    fn new(batch_size: usize) -> Self {
        Self {
            labels: Vec::with_capacity(batch_size),
            presentations: Vec::with_capacity(batch_size),
        }
    }
}

/// One minibatch's training-mode passes, as reported to the observer.
struct Pass {
    fwd: Forward,
    back: Backward,
    /// How many pre-step predictions were correct.
    correct: usize,
}

/// Runs the forward and backward pass of the examples `rows` and reports every
/// prediction to `observer`, before any optimizer step.
fn present(
    model: &Mlp,
    data: Dataset<'_>,
    rows: &[usize],
    scratch: &mut BatchScratch,
    observer: &mut dyn TrainingObserver,
) -> Result<Pass> {
    let x = data.x.select(Axis(0), rows);
    let labels = &mut scratch.labels;
    labels.clear();
    labels.extend(rows.iter().map(|&r| data.labels[r]));
    let fwd = model.forward(x.view())?;
    let back = model.backward(&fwd, labels)?;
    let presentations = &mut scratch.presentations;
    presentations.clear();
    for ((&r, &y), p) in rows.iter().zip(labels.iter()).zip(fwd.predicted()) {
        presentations.push(Presentation {
            id: data.ids.map_or(r, |ids| ids[r]),
            predicted: p,
            correct: p == y,
        });
    }
    let correct = presentations.iter().filter(|p| p.correct).count();
    observer.observe(presentations);
    Ok(Pass { fwd, back, correct })
}

/// PyTorch's SGD update of every parameter: `v = μ·v + ∇ + wd·θ; θ −= lr·v`.
fn sgd_step(
    model: &mut Mlp,
    grads: &[LinearGrad],
    velocity: &mut [LinearGrad],
    config: &TrainConfig,
) {
    let (lr, mu, wd) = (config.learning_rate, config.momentum, config.weight_decay);
    for ((layer, grad), v) in model.layers_mut().iter_mut().zip(grads).zip(velocity) {
        Zip::from(&mut layer.weight)
            .and(&grad.weight)
            .and(&mut v.weight)
            .par_for_each(|w, &g, v| {
                *v = mu * *v + g + wd * *w;
                *w -= lr * *v;
            });
        Zip::from(&mut layer.bias)
            .and(&grad.bias)
            .and(&mut v.bias)
            .for_each(|w, &g, v| {
                *v = mu * *v + g + wd * *w;
                *w -= lr * *v;
            });
    }
}
