//! Step 3, attribute: the run directory written by training is loaded back like any
//! user's run and scored by every registered estimator: self-influence of every training
//! example for each, and for the default one (the registry's first) also the proponents
//! and opponents of the test images in the run.

use std::time::Instant;

use anyhow::{Context, Result};
use infl::estimators::{Input, Options, REGISTRY, Registration};
use infl::io::{FactorRun, RunLayout};
use infl::{Backend, CpuBackend, Estimator, Run, Splits, TopKRows, load_factor_run, load_run};

use super::train::Trained;
use crate::progress::{Bar, SPINNER};

const TOPK_TEMPLATE: &str = "  top-k [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}";

/// Proponents and opponents shown per test image (at most).
const SHOWN: usize = 6;

/// One estimator's self-influence of every training example.
pub struct SelfInfluence {
    /// The estimator.
    pub registration: &'static Registration,
    /// Self-influence per training example.
    pub scores: Vec<f64>,
    /// The model's prediction for each training example, as the estimator saw it.
    pub predicted: Vec<usize>,
    /// Seconds spent (for the default estimator, loading the run included).
    pub seconds: f64,
}

/// The default estimator's strongest influencers of each test image in the run.
pub struct Explained {
    /// Proponents and opponents per test image.
    pub rows: TopKRows,
    /// The model's prediction for each test image (last checkpoint).
    pub test_predicted: Vec<usize>,
}

/// What the estimators found.
pub struct Attribution {
    /// Self-influence by the default estimator.
    pub default: SelfInfluence,
    /// Self-influence by every other registered estimator, in registry order.
    pub others: Vec<SelfInfluence>,
    /// Influencers of the test images (none when the run has no test images).
    pub explained: Option<Explained>,
    /// Seconds spent on the influencers.
    pub topk_seconds: f64,
}

impl Attribution {
    /// `(key, seconds)` for `results.json`: `self_influence` and `topk` for the default
    /// estimator, `self_influence:NAME` for the others.
    pub fn seconds(&self) -> Vec<(String, f64)> {
        let mut s = vec![("self_influence".to_string(), self.default.seconds)];
        for o in &self.others {
            s.push((format!("self_influence:{}", o.registration.name), o.seconds));
        }
        s.push(("topk".to_string(), self.topk_seconds));
        s
    }
}

/// Scores the run of `trained` with every registered estimator (default options, CPU).
pub fn attribute(trained: &Trained) -> Result<Attribution> {
    let t = Instant::now();
    let (first, rest) = REGISTRY
        .split_first()
        .context("no estimator is registered")?;
    let layout = RunLayout::discover(&trained.run_dir)?;
    let layer = trained.model.last_layer_name();
    let run = Run::from(load_run(&layout, &layer, Splits::TrainAndTest)?);
    let factors = load_factors(trained)?;
    let backend = CpuBackend::new();
    let estimator = (first.build)(&Options::default());
    let mut default = self_influence(estimator.as_ref(), &backend, &run, &layer)?;
    default.seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let explained = match trained.explained {
        0 => None,
        _ => Some(explain(estimator.as_ref(), &backend, &run)?),
    };
    let topk_seconds = t.elapsed().as_secs_f64();
    // Estimators of factor files run when the demo exported them (`--export-factors`).
    let others = rest
        .iter()
        .filter_map(|r| match r.input {
            Input::Features | Input::Either => Some((r, &run, layer.as_str())),
            Input::Factors => factors.as_ref().map(|f| (r, f, "all")),
        })
        .map(|(r, run, layers)| {
            let estimator = (r.build)(&Options::default());
            self_influence(estimator.as_ref(), &backend, run, layers)
        })
        .collect::<Result<_>>()?;
    Ok(Attribution {
        default,
        others,
        explained,
        topk_seconds,
    })
}

/// The factor files of every layer, when the demo wrote them.
fn load_factors(trained: &Trained) -> Result<Option<Run>> {
    let dir = trained.run_dir.join("factors");
    if !dir.is_dir() {
        return Ok(None);
    }
    let run = load_factor_run(&FactorRun::discover(&dir)?, None, Splits::TrainAndTest)?;
    Ok(Some(run.into()))
}

/// `estimator`'s self-influence, timed.
fn self_influence(
    estimator: &dyn Estimator,
    backend: &dyn Backend,
    run: &Run,
    layer: &str,
) -> Result<SelfInfluence> {
    let t = Instant::now();
    let spinner = Bar::templated(SPINNER);
    spinner.spin(&format!(
        "{} self-influence over {} checkpoints (layer {layer})",
        estimator.label(),
        run.len()
    ));
    let result = estimator.self_influence(backend, run);
    infl::Progress::finish(&spinner);
    let attributed = result?;
    let scores = attributed.values.iter().map(|&v| f64::from(v)).collect();
    Ok(SelfInfluence {
        registration: estimator.registration(),
        scores,
        predicted: attributed.prepared.train.predicted,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The [`SHOWN`] strongest proponents and opponents of every test image.
fn explain(estimator: &dyn Estimator, backend: &dyn Backend, run: &Run) -> Result<Explained> {
    let n = run.n_train();
    let bar = Bar::templated(TOPK_TEMPLATE);
    let top = estimator.topk(backend, run, SHOWN.min(n), &bar)?;
    Ok(Explained {
        rows: top.values,
        test_predicted: top.prepared.test.map(|t| t.predicted).unwrap_or_default(),
    })
}
