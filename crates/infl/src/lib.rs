//! infl: training-data attribution in Rust.
//!
//! Which training examples made a model predict what it predicts, and which training
//! labels look wrong. This crate holds the estimators, generic over a compute
//! [`Backend`] (the CPU backend, [`CpuBackend`], is the default), and re-exports the
//! vocabulary ([`infl_core`]) and file formats ([`infl_io`]).
//!
//! The estimators reduce to a [`TermSet`]: per (checkpoint, layer), the per-example
//! layer inputs `a` and output gradients `g`, whose outer product is the weight gradient.
//! An [`Engine`] scores a term set: full scores, streamed top-k proponents/opponents, or
//! self-influence.
//!
//! ```
//! use infl::{CheckpointData, Engine, TracInCPFast};
//! use infl::core::{Checkpoint, Examples, Matrix};
//!
//! // One checkpoint of a 3-class linear head on 2-D features.
//! let weight = Matrix::from_vec(3, 2, vec![1.0, 0.0, 0.0, 1.0, -1.0, -1.0])?;
//! let checkpoint = Checkpoint {
//!     name: "ckpt".into(),
//!     source: Default::default(),
//!     learning_rate: Some(0.1),
//!     weight,
//!     bias: None,
//! };
//! let train = Examples::classified(
//!     Matrix::from_vec(4, 2, vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 0.5])?,
//!     vec![0, 1, 2, 0],
//! );
//! let test = Examples::classified(Matrix::from_vec(1, 2, vec![0.9, 0.1])?, vec![0]);
//! let data = [CheckpointData { checkpoint, train, test: Some(test) }];
//!
//! let engine = Engine::default(); // CPU backend
//! let prepared = TracInCPFast::default().prepare(engine.backend(), &data)?;
//! let top = engine.topk(&prepared.set, 2, &())?;
//! assert_eq!(top.proponents[0][0].index, 0); // the most similar example of class 0
//! let self_inf = engine.self_influence(&prepared.set)?;
//! assert_eq!(self_inf.len(), 4);
//! # Ok::<(), infl::Error>(())
//! ```

#![deny(missing_docs)]

pub mod engine;
mod error;
pub mod forgetting;
pub mod metrics;
pub mod tracin;

pub use engine::{Engine, FactorTerm, Progress, TermSet};
pub use error::{Error, Result};
pub use forgetting::{
    ExampleForgetting, ExampleHistory, ForgettingRecorder, ForgettingStats, NoisyLabels,
};
pub use infl_core::{Backend, TopKRows};
pub use infl_cpu::CpuBackend;
pub use tracin::{
    CheckpointData, Loss, Prepared, Reduction, SplitInfo, Suspect, TracInCPFast, load_run,
    rank_suspects,
};

/// The vocabulary crate.
pub use infl_core as core;
/// The CPU backend crate.
pub use infl_cpu as cpu;
/// The file-format crate.
pub use infl_io as io;
/// The GPU (wgpu) backend crate.
pub use infl_wgpu as wgpu;
pub use infl_wgpu::BackendChoice;

/// Opens the backend asked for: `Cpu` → the CPU backend (`threads`, default one per core);
/// `Gpu` → any wgpu adapter, software included, or an error naming what was searched;
/// `Auto` → a hardware GPU if there is one, else the CPU backend (never a software adapter).
/// `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` are honoured.
pub fn select_backend(choice: BackendChoice, threads: Option<usize>) -> Result<Box<dyn Backend>> {
    let gpu = infl_wgpu::WgpuBackend::select(choice, infl_wgpu::Options::default())
        .map_err(infl_core::Error::from)?;
    Ok(match gpu {
        Some(g) => Box::new(g),
        None => Box::new(match threads {
            Some(t) => CpuBackend::with_threads(t)?,
            None => CpuBackend::new(),
        }),
    })
}
