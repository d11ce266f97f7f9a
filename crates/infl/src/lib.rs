//! infl: training-data attribution in Rust.
//!
//! Which training examples made a model predict what it predicts, and which training
//! labels look wrong. This crate holds the estimators, the one scoring [`Engine`], the
//! evaluation of mislabel detectors, and the choice of backend.
//!
//! How it fits together (one hop each):
//! - [`run`]: what a run is ([`CheckpointData`]: a checkpoint's final layer with the
//!   examples' layer inputs), the loss, [`load_run`], and [`Prepared`], what an estimator
//!   produces.
//! - [`estimators`]: the [`Estimator`] trait and the [`REGISTRY`](estimators::REGISTRY) that the
//!   CLI, the demo and (soon) the Python bindings dispatch over. An estimator turns a run
//!   into a [`TermSet`]: per (checkpoint, layer), the per-example layer inputs `a` and output
//!   gradients `g`, whose outer product is the weight gradient.
//! - [`Engine`]: scores a term set on any [`Backend`] — full scores, streamed top-k
//!   proponents/opponents, self-influence. Estimators never score by themselves.
//! - [`curvature`]: Hessians as operators ([`curvature::HessianOperator`]) and the solvers of
//!   influence functions (exact Cholesky, CG) that precondition test gradients.
//! - [`kfac`]: K-FAC and EK-FAC (Kronfluence's numerics) over the linear layers of factor
//!   files: a [`kfac::Fit`] per checkpoint preconditions test gradients into engine terms.
//! - [`index`]: a persistent nearest-neighbour [`Index`] of training embeddings (their dot
//!   products are a term set's scores), for top-k without scoring every training example.
//! - [`shard`]: a [`Shard`] `i/N` of the training rows, scored on its own, and the checks
//!   that parts of one result fit together before they are merged.
//! - [`eval`] and [`metrics`]: how well a score finds mislabelled examples; [`forgetting`]:
//!   forgetting events (Toneva et al. 2019) with InterpretDL's noisy-label rule.
//! - [`counterfactual`]: leave-one-out and LDS ground truth (retraining through a
//!   [`counterfactual::Retrainer`], cached on disk) against every estimator's scores.
//! - [`select_backend`]: the CPU backend, or a GPU one through wgpu (cargo feature `gpu`,
//!   on by default).
//!
//! ```
//! use infl::{Checkpoint, CheckpointData, Engine, Estimator, Examples, Matrix, Run, TracInCPFast};
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
//! let run = Run::from(vec![CheckpointData { checkpoint, train, test: Some(test) }]);
//!
//! let engine = Engine::default(); // CPU backend
//! let prepared = TracInCPFast::default().prepare(engine.backend(), &run, &())?;
//! let top = engine.topk(&prepared.set, 2, &())?;
//! assert_eq!(top.proponents[0][0].index, 0); // the most similar example of class 0
//! let self_inf = engine.self_influence(&prepared.set)?;
//! assert_eq!(self_inf.len(), 4);
//! # Ok::<(), infl::Error>(())
//! ```

#![deny(missing_docs)]

mod backend;
pub mod counterfactual;
pub mod curvature;
pub mod engine;
mod error;
pub mod estimators;
pub mod eval;
pub mod finite;
pub mod forgetting;
pub mod head;
pub mod index;
pub mod kfac;
pub mod metrics;
pub mod prune;
pub mod run;
mod seeded;
pub mod shard;
mod suspects;

pub use backend::{BackendChoice, select_backend};
pub use engine::{Engine, FactorMatrices, FactorTerm, Progress, TermSet};
pub use error::{Error, Result};
pub use estimators::{
    Attributed, Estimator, InfluenceFunction, LayerForm, Options, Projections, TracInCP,
    TracInCPFast, TracInCPFastRandProj,
};
pub use forgetting::{
    ExampleForgetting, ExampleHistory, ForgettingRecorder, ForgettingStats, NoisyLabels,
};
pub use index::Index;
pub use infl_core::matrix::F32Storage;
pub use infl_core::{
    Backend, Bias, Checkpoint, Examples, MatRef, Matrix, Presentation, Ranked, TopK, TopKRows,
    TrainingObserver,
};
pub use infl_cpu::{CpuBackend, Tiles, check_threads, max_threads};
pub use prune::{PairsScored, Pruning, TopKOutcome};
pub use run::{
    CheckpointData, FactorCheckpoint, Loss, NamedFactors, Prepared, Reduction, Run, SplitFactors,
    SplitInfo, Splits, load_checkpoint_data, load_checkpoint_rows, load_factor_run, load_run,
};
pub use shard::Shard;
pub use suspects::{Suspect, rank_suspects};

/// The file formats infl reads and writes (a curated view of `infl-io`).
pub mod io {
    pub use infl_io::{
        FactorEntry, FactorFile, FactorRun, FolderContent, Images, Inputs, LayerFactors, OutTensor,
        Publication, Rank, RunEntry, RunLayout, StagedFolder, TEMP_PREFIX, TensorFile,
        check_learning_rate, load_checkpoint, load_examples, load_examples_rows, mnist,
        natural_cmp, remove_temporary_files, write_atomic, write_atomic_with, write_safetensors,
    };
}
