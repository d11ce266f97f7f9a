//! Estimators: every method that turns a run into scores, behind one small trait.
//!
//! An [`Estimator`] has a small required surface (its [`Registration`], its settings and
//! [`prepare`](Estimator::prepare), which turns a run into a [`TermSet`](crate::TermSet)
//! for the one scoring [`Engine`]); scoring, top-k and self-influence are provided on top
//! of it, as ripgrep's `Matcher` provides its searches on top of `find_at`. Estimators
//! never score by themselves: ARCHITECTURE.md's invariant is that there is one scoring
//! path.
//!
//! Adding an estimator: write `estimators/NAME.rs` with a type implementing [`Estimator`]
//! and a `REGISTRATION` constant, then add one line to [`REGISTRY`]. The CLI's
//! `--method`, the output metadata, the summaries and the demo's table all read the
//! registry.

#[cfg(feature = "testing")]
mod grad_dot_last;
mod influence;
mod influence_layers;
mod tracincp;
mod tracincp_fast;
mod tracincp_fast_rand_proj;

use std::fmt;

use infl_core::{Backend, Bias, TopKRows};

use crate::curvature::{Curvature, Damping, Solver};
use crate::engine::{Engine, Progress};
use crate::prune::{Pruning, TopKOutcome};
use crate::run::{Loss, Prepared, Reduction, Run};
use crate::shard::ShardRows;
use crate::{Error, Result};

pub use influence::{Convention, InfluenceFunction};
pub use tracincp::{LayerForm, TracInCP};
pub(crate) use tracincp::{against_one, materialise};
pub use tracincp_fast::TracInCPFast;
pub use tracincp_fast_rand_proj::{Projections, TracInCPFastRandProj};

/// Every estimator infl knows, in the order the CLI lists them (the first is the default).
pub const REGISTRY: &[Registration] = &[
    tracincp_fast::REGISTRATION,
    tracincp::REGISTRATION,
    tracincp_fast_rand_proj::REGISTRATION,
    influence::REGISTRATION,
    #[cfg(feature = "testing")]
    grad_dot_last::REGISTRATION,
];

/// The knobs that every estimator reads from a run (the CLI's common flags).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// The loss the model was trained with.
    pub loss: Loss,
    /// Its reduction.
    pub reduction: Reduction,
    /// Whether bias gradients are part of the gradient (Captum leaves them out).
    pub bias: Bias,
    /// Learning rate of checkpoints that record none (Captum's default is 1.0).
    pub default_learning_rate: f32,
    /// Random projection dimension `p` of TracInCPFastRandProj (`None`: no projection,
    /// Captum's default).
    pub projection_dim: Option<usize>,
    /// Seed of random projections (Captum's default is 0).
    pub seed: u64,
    /// How influence functions apply `(H + λI)⁻¹` (default: exact).
    pub solver: Solver,
    /// Influence functions' scaling convention (default Kronfluence's mean Hessian).
    pub convention: Convention,
    /// Influence functions' damping `λ` (`None`: the convention's default).
    pub damping: Option<Damping>,
    /// The curvature operator solvers invert on factor files (`None`: the empirical
    /// Fisher).
    pub curvature: Option<Curvature>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            loss: Loss::CrossEntropy,
            reduction: Reduction::Sum,
            bias: Bias::Excluded,
            default_learning_rate: 1.0,
            projection_dim: None,
            seed: 0,
            solver: Solver::Exact,
            convention: Convention::Kronfluence,
            damping: None,
            curvature: None,
        }
    }
}

/// How an estimator is named and built.
#[derive(Clone, Copy)]
pub struct Registration {
    /// Stable machine name: `--method`, output metadata (e.g. `tracincp-fast`).
    pub name: &'static str,
    /// Name for people: summaries and tables (e.g. `TracInCPFast`).
    pub label: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Builds the estimator from the common options.
    pub build: fn(&Options) -> Box<dyn Estimator>,
    /// Who it is for: users, or only the tests (registered with the `testing` feature).
    pub audience: Audience,
    /// What it reads: features or factor files.
    pub input: Input,
    /// Whether `infl::index` can persist it.
    pub indexing: Indexing,
}

/// Whether an estimator's scores can be served from an [`Index`](crate::Index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indexing {
    /// Its training embeddings alone determine the scores (TracIn methods).
    Embeddings,
    /// Its queries depend on a fit over the training set that an index does not hold
    /// (influence functions precondition them with the Hessian).
    Unsupported,
}

/// What an estimator reads (the CLI loads it before building the estimator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Checkpoints with their final layer's features ([`Run::Features`]: `--run` or
    /// `--manifest`, with `--layer`).
    Features,
    /// Per-example factors of chosen layers ([`Run::Factors`]: `--factors`, `--layers`).
    Factors,
    /// Either: features by default, factor files when `--factors` is given (influence
    /// functions: the final layer's exact Hessian, or K-FAC/EK-FAC over chosen layers).
    Either,
}

/// Who an estimator is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Offered to users (`--method`, the demo's table).
    Users,
    /// Registered only in test builds (feature `testing`), to exercise the registry.
    Tests,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The registration named `name`, or an error listing the known names.
pub fn find(name: &str) -> Result<&'static Registration> {
    REGISTRY.iter().find(|r| r.name == name).ok_or_else(|| {
        Error::config(
            "method",
            format!(
                "unknown method {name:?}; expected one of: {}",
                names().join(", ")
            ),
        )
    })
}

/// The names of every registered estimator.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|r| r.name).collect()
}

/// Builds the estimator named `name`.
pub fn build(name: &str, options: &Options) -> Result<Box<dyn Estimator>> {
    Ok((find(name)?.build)(options))
}

/// One part of the memory a computation holds beyond its inputs, with the option that
/// sizes it (for a front end to check against the memory available before the work).
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryNeed {
    /// What the memory holds.
    pub what: &'static str,
    /// The option (or input) that sizes it.
    pub flag: &'static str,
    /// Bytes.
    pub bytes: f64,
}

/// What an estimator's work on a run will hold, and what to do instead when it does not
/// fit.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// What the work is, for messages.
    pub job: &'static str,
    /// Its parts.
    pub needs: Vec<MemoryNeed>,
    /// What to do when it does not fit.
    pub instead: &'static str,
}

/// Results of an estimator with what is known of the examples they refer to.
#[derive(Clone, Debug)]
pub struct Attributed<T> {
    /// The prepared run (ids, labels, predictions, checkpoints, learning rates).
    pub prepared: Prepared,
    /// The results.
    pub values: T,
}

/// A training-data attribution method.
///
/// Required: [`registration`](Estimator::registration), [`settings`](Estimator::settings)
/// and [`prepare`](Estimator::prepare). Provided: names, metadata and the three
/// computations, all through the one [`Engine`].
pub trait Estimator: fmt::Debug + Send + Sync {
    /// How the estimator is named (the same constant as its [`REGISTRY`] entry).
    fn registration(&self) -> &'static Registration;

    /// The settings that determine its numbers, as `(key, value)` pairs for output
    /// metadata (e.g. `("loss", "ce")`).
    fn settings(&self) -> Vec<(String, String)>;

    /// Turns a run into the terms the engine scores (computing gradients on `backend`),
    /// checking that the run is consistent. Long work on the way (influence functions' fit
    /// and solves) is reported to `progress` (`&()` reports nothing).
    fn prepare(
        &self,
        backend: &dyn Backend,
        run: &Run,
        progress: &dyn Progress,
    ) -> Result<Prepared>;

    /// The exact estimator this one approximates by a random projection
    /// (TracInCPFastRandProj with a projection: TracInCPFast without bias), whose scores
    /// re-rank an index's shortlist ([`crate::index::Rescore`]). `None` (the default) when
    /// the scores are not projected.
    fn unprojected(&self) -> Option<Box<dyn Estimator>> {
        None
    }

    /// This estimator for the training rows of one shard (`--shard`, `infl::shard`):
    /// `Ok(None)`, the default, when it can score a shard's rows as it is (a row's scores
    /// do not depend on the other rows); an estimator that fits on the whole training set
    /// answers with a copy that uses a fit brought from outside and knows the whole set's
    /// size, or refuses with what to do.
    fn for_shard(&self, _rows: &ShardRows) -> Result<Option<Box<dyn Estimator>>> {
        Ok(None)
    }

    /// The memory its work on `run` will hold beyond the inputs, when that can be large
    /// (`None`, the default: nothing beyond what the engine streams).
    fn memory(&self, _run: &Run) -> Option<MemoryPlan> {
        None
    }

    /// Stable machine name (see [`Registration::name`]).
    fn name(&self) -> &'static str {
        self.registration().name
    }

    /// Name for people (see [`Registration::label`]).
    fn label(&self) -> &'static str {
        self.registration().label
    }

    /// `method` followed by [`settings`](Estimator::settings).
    fn metadata(&self) -> Vec<(String, String)> {
        let mut m = vec![("method".to_string(), self.name().to_string())];
        m.extend(self.settings());
        m
    }

    /// The full `[test, train]` score matrix, row-major.
    fn scores(
        &self,
        backend: &dyn Backend,
        run: &Run,
        progress: &dyn Progress,
    ) -> Result<Attributed<Vec<f32>>> {
        let prepared = self.prepare(backend, run, progress)?;
        let values = Engine::new(backend).scores(&prepared.set, progress)?;
        Ok(Attributed { prepared, values })
    }

    /// The `k` strongest proponents and opponents of every test example (streamed).
    fn topk(
        &self,
        backend: &dyn Backend,
        run: &Run,
        k: usize,
        progress: &dyn Progress,
    ) -> Result<Attributed<TopKRows>> {
        let top = self.topk_counted(backend, run, k, Pruning::default(), progress)?;
        Ok(Attributed {
            prepared: top.prepared,
            values: top.values.rows,
        })
    }

    /// [`topk`](Estimator::topk) with the given [`Pruning`], and the pairs it scored.
    fn topk_counted(
        &self,
        backend: &dyn Backend,
        run: &Run,
        k: usize,
        pruning: Pruning,
        progress: &dyn Progress,
    ) -> Result<Attributed<TopKOutcome>> {
        let prepared = self.prepare(backend, run, progress)?;
        let values =
            Engine::new(backend)
                .with_pruning(pruning)
                .topk_counted(&prepared.set, k, progress)?;
        Ok(Attributed { prepared, values })
    }

    /// Self-influence of every training example, without progress reports (see
    /// [`self_influence_with_progress`](Estimator::self_influence_with_progress), which an
    /// estimator overrides instead of this).
    fn self_influence(&self, backend: &dyn Backend, run: &Run) -> Result<Attributed<Vec<f32>>> {
        self.self_influence_with_progress(backend, run, &())
    }

    /// Self-influence of every training example, its preparation (a fit, the solves)
    /// reported to `progress`.
    fn self_influence_with_progress(
        &self,
        backend: &dyn Backend,
        run: &Run,
        progress: &dyn Progress,
    ) -> Result<Attributed<Vec<f32>>> {
        let prepared = self.prepare(backend, run, progress)?;
        let values = Engine::new(backend).self_influence(&prepared.set)?;
        Ok(Attributed { prepared, values })
    }
}
