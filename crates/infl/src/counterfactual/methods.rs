//! The methods a counterfactual evaluation scores: every registered estimator that reads
//! a run's final-layer features (influence functions once per solver), plus two baselines
//! that give the numbers meaning: random scores, and the plain gradient dot product at
//! the last checkpoint (TracInCPFast on that checkpoint alone with learning rate 1).
//!
//! Every method is scored through its estimator's public API and the one engine; a new
//! estimator joins the evaluation by one entry in [`METHODS`].

use infl_core::Backend;

use crate::curvature::Solver;
use crate::engine::Progress;
use crate::estimators::{self, Options};
use crate::run::Run;
use crate::{Error, Result};

/// How a method is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A registered estimator (by registry name), with influence functions' solver.
    Estimator(&'static str, SolverChoice),
    /// TracInCPFast on the last checkpoint with learning rate 1.
    GradDotLast,
    /// Seeded standard-normal scores.
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SolverChoice {
    /// Not an influence function.
    None,
    Exact,
    Cg,
    Lissa,
    Arnoldi,
}

/// A method of the evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Method {
    /// Machine name (`--methods`, JSON keys).
    pub name: &'static str,
    /// Name for tables and plots.
    pub label: &'static str,
    kind: Kind,
}

/// Every method, in the order reports list them (the baselines last).
pub const METHODS: &[Method] = &[
    Method {
        name: "influence-exact",
        label: "IF exact",
        kind: Kind::Estimator("influence", SolverChoice::Exact),
    },
    Method {
        name: "influence-cg",
        label: "IF CG",
        kind: Kind::Estimator("influence", SolverChoice::Cg),
    },
    Method {
        name: "influence-lissa",
        label: "IF LiSSA",
        kind: Kind::Estimator("influence", SolverChoice::Lissa),
    },
    Method {
        name: "influence-arnoldi",
        label: "IF Arnoldi",
        kind: Kind::Estimator("influence", SolverChoice::Arnoldi),
    },
    Method {
        name: "tracincp-fast",
        label: "TracInCPFast",
        kind: Kind::Estimator("tracincp-fast", SolverChoice::None),
    },
    Method {
        name: "tracincp-fast-rand-proj",
        label: "TracInCPFastRandProj",
        kind: Kind::Estimator("tracincp-fast-rand-proj", SolverChoice::None),
    },
    Method {
        name: "grad-dot-last",
        label: "grad dot (last)",
        kind: Kind::GradDotLast,
    },
    Method {
        name: "random",
        label: "random",
        kind: Kind::Random,
    },
];

/// The method named `name`, or an error listing the known names.
pub fn find(name: &str) -> Result<&'static Method> {
    METHODS.iter().find(|m| m.name == name).ok_or_else(|| {
        let known: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        Error::config(
            "method",
            format!(
                "unknown method {name:?}; expected one of: {}",
                known.join(", ")
            ),
        )
    })
}

/// Settings shared by the methods.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The estimators' common options (loss, bias, damping, projection, seed); the solver
    /// is each influence method's own.
    pub options: Options,
    /// LiSSA's recursion depth.
    pub lissa_depth: usize,
}

impl Method {
    /// The estimator options this method runs with.
    fn options(&self, settings: &Settings) -> Options {
        let mut o = settings.options;
        if let Kind::Estimator(_, solver) = self.kind {
            o.solver = match solver {
                SolverChoice::None | SolverChoice::Exact => Solver::Exact,
                SolverChoice::Cg => Solver::cg(),
                SolverChoice::Lissa => Solver::Lissa {
                    depth: settings.lissa_depth,
                    scale: None,
                    batch: None,
                    repeats: 1,
                    seed: settings.options.seed,
                },
                SolverChoice::Arnoldi => Solver::Arnoldi {
                    dimension: Solver::DEFAULT_ARNOLDI_DIMENSION,
                    eigenpairs: Solver::DEFAULT_ARNOLDI_EIGENPAIRS,
                    seed: settings.options.seed,
                },
            };
        }
        o
    }

    /// The settings recorded with its results (`method` and the estimator's own).
    pub fn metadata(&self, settings: &Settings) -> Vec<(String, String)> {
        let o = self.options(settings);
        match self.kind {
            Kind::Estimator(name, _) => estimators::build(name, &o)
                .map(|e| e.metadata())
                .unwrap_or_default(),
            Kind::GradDotLast => vec![(
                "method".into(),
                "tracincp-fast, last checkpoint, lr 1".into(),
            )],
            Kind::Random => vec![("seed".into(), o.seed.to_string())],
        }
    }

    /// The `[test, train]` scores of `run` (row-major), positive = helpful.
    pub fn scores(
        &self,
        settings: &Settings,
        backend: &dyn Backend,
        run: &Run,
        progress: &dyn Progress,
    ) -> Result<Vec<f32>> {
        let options = self.options(settings);
        match self.kind {
            Kind::Estimator(name, _) => {
                let estimator = estimators::build(name, &options)?;
                Ok(estimator.scores(backend, run, progress)?.values)
            }
            Kind::GradDotLast => {
                let features = run.features(self.label)?;
                let mut last = features
                    .last()
                    .cloned()
                    .ok_or_else(|| Error::config("checkpoints", "the run has none"))?;
                last.checkpoint.learning_rate = Some(1.0);
                let estimator = estimators::build("tracincp-fast", &options)?;
                Ok(estimator
                    .scores(backend, &Run::from(vec![last]), progress)?
                    .values)
            }
            Kind::Random => {
                let len = run.n_test() * run.n_train();
                Ok(crate::seeded::standard_normals(options.seed, u64::MAX, len)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect())
            }
        }
    }
}
