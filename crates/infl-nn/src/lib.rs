//! infl-nn: a small native MLP trainer, so that infl can train and attribute on real data
//! without Python.
//!
//! - [`Mlp`]: linear layers with ReLU, softmax cross-entropy; forward and backward on
//!   ndarray + rayon, results independent of the thread count.
//! - [`train()`]: minibatch SGD with momentum and weight decay, seeded shuffling; reports
//!   every presentation to an [`infl_core::TrainingObserver`] (forgetting events) before
//!   the optimizer step, and calls [`TrainHooks`] for progress and checkpoints.
//! - [`LogReg`]: multinomial logistic regression fitted to convergence in f64 by
//!   preconditioned Newton-CG (counterfactual retraining, where optimiser noise must not
//!   mask a leave-one-out effect).
//! - [`export`]: PyTorch-style safetensors checkpoints (`fc1.weight` `[out, in]`, ...,
//!   metadata `learning_rate`, `epoch`), penultimate features in the format
//!   `infl_io::load_examples` reads, laid out in infl's run-directory convention
//!   ([`RunWriter`]), and per-example factors of every linear layer.
//!
//! ```
//! use infl_nn::{Dataset, Mlp, TrainConfig, train};
//! use ndarray::Array2;
//!
//! // Two separable blobs.
//! let x = Array2::from_shape_fn((40, 2), |(i, j)| if (i % 2 == 0) == (j == 0) { 1.0 } else { -1.0 });
//! let labels: Vec<i64> = (0..40).map(|i| (i % 2) as i64).collect();
//! let mut model = Mlp::new(2, &[8], 2, 0)?;
//! let config = TrainConfig { epochs: 20, batch_size: 8, learning_rate: 0.1, ..Default::default() };
//! let data = Dataset { x: x.view(), labels: &labels, ids: None };
//! let stats = train(&mut model, data, &config, &mut |_: &[infl_core::Presentation]| {}, &mut ())?;
//! assert_eq!(stats.last().unwrap().accuracy, 1.0);
//! # Ok::<(), infl_nn::Error>(())
//! ```

#![deny(missing_docs)]

mod error;
pub mod export;
pub mod hvp;
pub mod logreg;
pub mod mlp;
pub mod train;

pub use error::{Error, Result};
pub use export::{
    CheckpointMeta, FactorFiles, LayerFactors, RunWriter, Split, SplitImages, load_checkpoint,
    penultimate_features, per_example_factors, sampled_labels, save_checkpoint,
};
pub use hvp::{HvpPlan, LayerBlock, Product};
pub use logreg::{Evaluation, FitConfig, FitReport, LogReg, LogRegData, Preconditioner};
pub use mlp::{Backward, Forward, Linear, LinearGrad, Mlp};
pub use train::{Dataset, EpochStats, TrainConfig, TrainHooks, train};
