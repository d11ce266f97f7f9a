//! `infl eval loo|lds`: counterfactual evaluation of every estimator on MNIST (the bundled
//! subset or `--mnist-dir`), with [`infl::counterfactual`].
//!
//! Steps (every argument is checked before anything is written):
//! 1. load MNIST (standardised as the demo does, or scaled to [0, 1] with `--pixels unit`),
//!    the first `--train` / `--test` images;
//! 2. train the reference model — logistic regression (`--model lr`, the default: f64,
//!    L2 `--l2`, Newton-CG to `--tolerance`) or infl-nn's MLP (`--model mlp`, seeded SGD,
//!    a checkpoint per epoch) — and write its run to `OUT/run-lds` or `OUT/run-loo` (the
//!    test examples differ);
//! 3. score the test examples with every `--methods` entry (influence functions per solver,
//!    TracInCPFast, RandProj, and the baselines) through the estimators' public API;
//! 4. retrain on the counterfactual training sets (rayon, one model per worker), cached in
//!    `--cache` (default `OUT/cache-loo` / `OUT/cache-lds`) so an interrupted run resumes;
//! 5. correlate, print a table, and write `OUT/{loo,lds}.json`, the ground truth as
//!    `OUT/{loo,lds}.safetensors` (for dattri's side-by-side script) and PNG plots.
//!
//! Logistic regression is deterministic, so LDS uses one seed for it whatever `--seeds`
//! says; retrainings start from the reference model (warm start: the optimum is unique, so
//! only the time changes, to ~1e-14).

mod models;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand, ValueEnum};
use infl::counterfactual::{self, Cache, Job, Outcome, Target, TrainSet, methods};
use infl::curvature::Damping;
use infl::io::RunLayout;
use infl::{Bias, CpuBackend, Loss, Options, Reduction, Run, Splits};
use ndarray::Array2;
use serde_json::json;

use crate::demo::load::{Pixels, labels_of, load_data, to_inputs};
use crate::progress::Bar;

/// `infl eval` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum EvalCommand {
    /// Leave-one-out (Koh & Liang Fig. 2): remove training examples one at a time (the
    /// highest-|influence| ones for test example 0 plus random ones), retrain, and
    /// correlate the actual change of each test loss with score / N.
    Loo(LooArgs),
    /// Linear datamodeling score (Park et al. 2023, as dattri): retrain on M random
    /// subsets of a fraction α, Spearman of Σ scores over the subset with the test
    /// example's −loss (or margin), per test example, averaged.
    Lds(LdsArgs),
}

/// Which model is retrained.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelArg {
    /// Multinomial logistic regression, f64, L2, Newton-CG to convergence.
    Lr,
    /// infl-nn's MLP, minibatch SGD, seeded.
    Mlp,
}

/// How an LDS subset's loss is scaled (logistic regression).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubsetScaleArg {
    /// The subset's mean.
    Mean,
    /// 1/N of the full training set.
    N,
}

/// What LDS correlates with.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetArg {
    /// −loss of the test example.
    Loss,
    /// Margin of the test example.
    Margin,
}

/// Options of both subcommands.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Directory with the four MNIST IDX files; default: the bundled subset.
    #[arg(long, value_name = "DIR")]
    pub mnist_dir: Option<PathBuf>,
    /// Training images (the first N).
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub train: usize,
    /// How pixels become inputs: standardised (dattri's setting, the default) or scaled
    /// to [0, 1] only (a more strongly regularised model at the same λ, where the
    /// influence function is closer to retraining; see QUALITY.md).
    #[arg(long, value_enum, default_value_t = Pixels::Standardised)]
    pub pixels: Pixels,
    /// Average-pool the 28×28 images by N×N blocks (N must divide 28) first: fewer
    /// parameters, for quick runs (CI uses 4: 49 pixels).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub pool: usize,
    /// The model.
    #[arg(long, value_enum, default_value_t = ModelArg::Lr)]
    pub model: ModelArg,
    /// L2 penalty λ of logistic regression (bias included); also influence functions'
    /// damping on it.
    #[arg(long, default_value_t = 1e-3)]
    pub l2: f64,
    /// How logistic regression scales an LDS subset's loss: `mean` over the subset (as
    /// dattri retrains) or `n` (Koh & Liang's 1/N of the full set, the penalty's weight
    /// unchanged).
    #[arg(long, value_enum, default_value_t = SubsetScaleArg::Mean)]
    pub subset_scale: SubsetScaleArg,
    /// Logistic regression's gradient-norm tolerance.
    #[arg(long, default_value_t = 1e-12)]
    pub tolerance: f64,
    /// MLP hidden sizes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128,64",
        value_name = "SIZES"
    )]
    pub hidden: Vec<usize>,
    /// MLP epochs (one checkpoint each).
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// MLP SGD learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
    /// MLP SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// MLP minibatch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Influence functions' damping on the MLP's final layer (Kronfluence's convention).
    #[arg(long, default_value_t = 1e-3)]
    pub damping: f64,
    /// Methods to evaluate, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub methods: Option<Vec<String>>,
    /// TracInCPFastRandProj's projection dimension.
    #[arg(long, default_value_t = 1024)]
    pub projection_dim: usize,
    /// LiSSA's recursion depth (dattri's is 5000; each step applies H to every test
    /// gradient).
    #[arg(long, default_value_t = 100)]
    pub lissa_depth: usize,
    /// Seed of subsets, removals, the MLP and the random baseline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory.
    #[arg(long, default_value = "infl-eval", value_name = "DIR")]
    pub out: PathBuf,
    /// Cache of retraining results (default OUT/cache-loo or OUT/cache-lds).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Do not draw PNG plots.
    #[arg(long)]
    pub no_plots: bool,
}

/// Options of `infl eval loo`.
#[derive(Args, Debug, Clone)]
pub struct LooArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Test examples evaluated (the first N); test example 0 chooses the removals.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub tests: usize,
    /// Removals with the largest |exact influence| on test example 0.
    #[arg(long, default_value_t = 30)]
    pub top: usize,
    /// Removals drawn at random among the others.
    #[arg(long, default_value_t = 30)]
    pub random: usize,
}

/// Options of `infl eval lds`.
#[derive(Args, Debug, Clone)]
pub struct LdsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Test examples evaluated (the first N).
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub test: usize,
    /// Number of random subsets M.
    #[arg(long, default_value_t = 50, value_name = "M")]
    pub subsets: usize,
    /// Fraction α of the training set in each subset.
    #[arg(long, default_value_t = 0.5, value_name = "ALPHA")]
    pub fraction: f64,
    /// Training seeds averaged per subset (the MLP; logistic regression is deterministic).
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// What the subsets' models are judged by.
    #[arg(long, value_enum, default_value_t = TargetArg::Loss)]
    pub target: TargetArg,
}

/// The evaluation's data: standardised MNIST images and labels.
pub struct Data {
    /// `[N, 784]`.
    pub train_x: Array2<f32>,
    /// Training labels.
    pub train_y: Vec<i64>,
    /// `[T, 784]`.
    pub test_x: Array2<f32>,
    /// Test labels.
    pub test_y: Vec<i64>,
    /// 10.
    pub classes: usize,
    /// Where the images come from.
    pub source: String,
}

impl Data {
    /// Row indices as ids.
    fn ids(&self) -> (Vec<i64>, Vec<i64>) {
        (
            (0..self.train_y.len() as i64).collect(),
            (0..self.test_y.len() as i64).collect(),
        )
    }

    /// FNV-1a of the pixels and labels, so a cache knows its data.
    fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = self
            .train_x
            .iter()
            .chain(self.test_x.iter())
            .flat_map(|v| v.to_bits().to_le_bytes())
            .chain(
                self.train_y
                    .iter()
                    .chain(&self.test_y)
                    .flat_map(|v| v.to_le_bytes()),
            );
        for b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// Runs `infl eval`, on a pool of `threads` threads when given.
pub fn run(command: EvalCommand, threads: Option<usize>, bar: &Bar) -> Result<()> {
    let go = || match &command {
        EvalCommand::Loo(args) => loo(args, bar),
        EvalCommand::Lds(args) => lds(args, bar),
    };
    match threads {
        Some(t) => rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build()
            .context("cannot start the thread pool")?
            .install(go),
        None => go(),
    }
}

/// The methods asked for (all by default), checked by name.
fn chosen_methods(args: &CommonArgs) -> Result<Vec<&'static methods::Method>> {
    match &args.methods {
        None => Ok(methods::METHODS.iter().collect()),
        Some(names) => names
            .iter()
            .map(|n| methods::find(n.trim()).map_err(|e| anyhow::anyhow!("--methods: {e}")))
            .collect(),
    }
}

fn validate(args: &CommonArgs) -> Result<()> {
    chosen_methods(args)?;
    ensure!(
        args.train >= 2,
        "--train: expected at least 2 training images"
    );
    ensure!(
        args.pool >= 1 && 28 % args.pool == 0,
        "--pool: expected a divisor of 28 (1, 2, 4, 7, 14, 28), found {}",
        args.pool
    );
    ensure!(
        args.l2.is_finite() && args.l2 > 0.0,
        "--l2: expected a positive number, found {}",
        args.l2
    );
    ensure!(
        args.tolerance.is_finite() && args.tolerance > 0.0,
        "--tolerance: expected a positive number, found {}",
        args.tolerance
    );
    ensure!(
        args.damping.is_finite() && args.damping > 0.0,
        "--damping: expected a positive number, found {}",
        args.damping
    );
    ensure!(
        !args.hidden.is_empty() && !args.hidden.contains(&0),
        "--hidden: expected positive sizes"
    );
    ensure!(args.epochs >= 1, "--epochs: expected at least 1");
    ensure!(args.batch_size >= 1, "--batch-size: expected at least 1");
    ensure!(args.lissa_depth >= 1, "--lissa-depth: expected at least 1");
    ensure!(
        args.projection_dim >= 1,
        "--projection-dim: expected at least 1"
    );
    ensure!(
        args.lr.is_finite() && args.lr > 0.0 && (0.0..1.0).contains(&args.momentum),
        "--lr / --momentum: expected lr > 0 and momentum in [0, 1)"
    );
    ensure!(
        !args.out.exists() || args.out.is_dir(),
        "--out: {} exists and is not a directory",
        args.out.display()
    );
    Ok(())
}

fn load(args: &CommonArgs, tests: usize) -> Result<Data> {
    let d = load_data(args.mnist_dir.as_deref(), Some(args.train), Some(tests))?;
    ensure!(
        d.mnist.train.len() == args.train,
        "--train: the data have only {} training images",
        d.mnist.train.len()
    );
    Ok(Data {
        train_x: pool(to_inputs(&d.mnist.train, args.pixels), args.pool),
        train_y: labels_of(&d.mnist.train),
        test_x: pool(to_inputs(&d.mnist.test, args.pixels), args.pool),
        test_y: labels_of(&d.mnist.test),
        classes: 10,
        source: d.source,
    })
}

/// Averages `p × p` blocks of 28 × 28 images (rows of `x`).
fn pool(x: Array2<f32>, p: usize) -> Array2<f32> {
    if p == 1 {
        return x;
    }
    let side = 28 / p;
    Array2::from_shape_fn((x.nrows(), side * side), |(i, j)| {
        let (r, c) = (j / side * p, j % side * p);
        let sum: f32 = (0..p * p)
            .map(|k| x[[i, (r + k / p) * 28 + c + k % p]])
            .sum();
        sum / (p * p) as f32
    })
}

/// The model's settings, as recorded in caches and reports.
fn model_config(args: &CommonArgs, data: &Data) -> serde_json::Value {
    let model = match args.model {
        ModelArg::Lr => {
            json!({"kind": "logistic regression", "l2": args.l2, "tolerance": args.tolerance,
                   "subset_scale": format!("{:?}", args.subset_scale)})
        }
        ModelArg::Mlp => json!({
            "kind": "mlp", "hidden": args.hidden, "epochs": args.epochs, "lr": args.lr,
            "momentum": args.momentum, "batch_size": args.batch_size,
        }),
    };
    json!({
        "data": {"source": data.source, "train": data.train_y.len(), "test": data.test_y.len(), "pool": args.pool,
                 "pixels": format!("{:?}", args.pixels), "fingerprint": data.fingerprint()},
        "model": model,
        "seed": args.seed,
    })
}

/// The estimators' settings for the model.
fn settings(args: &CommonArgs) -> methods::Settings {
    let damping = match args.model {
        ModelArg::Lr => args.l2,
        ModelArg::Mlp => args.damping,
    };
    methods::Settings {
        options: Options {
            loss: Loss::CrossEntropy,
            reduction: Reduction::Sum,
            bias: Bias::Included,
            default_learning_rate: 1.0,
            projection_dim: Some(args.projection_dim),
            seed: args.seed,
            damping: Some(Damping::Value(damping)),
            ..Options::default()
        },
        lissa_depth: args.lissa_depth,
    }
}

/// A trained reference model, retrainable, with its run loaded back.
struct Reference<'d> {
    retrainer: Box<dyn counterfactual::Retrainer + 'd>,
    run: Run,
}

/// Trains the reference model, writes `OUT/run-KIND` (replacing an earlier one) and
/// loads it.
fn reference<'d>(args: &CommonArgs, data: &'d Data, kind: &str) -> Result<Reference<'d>> {
    let dir = args.out.join(format!("run-{kind}"));
    clear_run_dir(&dir)?;
    let t = Instant::now();
    let (retrainer, layer): (Box<dyn counterfactual::Retrainer + 'd>, String) = match args.model {
        ModelArg::Lr => {
            let config = infl_nn::FitConfig {
                l2: args.l2,
                tolerance: args.tolerance,
                ..Default::default()
            };
            let scale = match args.subset_scale {
                SubsetScaleArg::Mean => models::SubsetScale::Mean,
                SubsetScaleArg::N => models::SubsetScale::FullN,
            };
            let model = models::LogRegModel::fit(data, config, scale)?;
            model.write_run(&dir, data)?;
            (Box::new(model), "fc1".into())
        }
        ModelArg::Mlp => {
            let config = infl_nn::TrainConfig {
                epochs: args.epochs,
                batch_size: args.batch_size,
                learning_rate: args.lr,
                momentum: args.momentum,
                weight_decay: 0.0,
                seed: args.seed,
            };
            let model = models::MlpModel::new(data, args.hidden.clone(), config);
            model.write_run(&dir, args.seed)?;
            (Box::new(model), format!("fc{}", args.hidden.len() + 1))
        }
    };
    eprintln!(
        "reference model trained in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let layout = RunLayout::discover(&dir)?;
    let run = Run::from(infl::load_run(&layout, &layer, Splits::TrainAndTest)?);
    Ok(Reference { retrainer, run })
}

/// Removes the `*.safetensors` files of an earlier `OUT/run` (nothing else is there).
fn clear_run_dir(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "safetensors") {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// One method's scores, or why it failed (reported, not fatal: the others still count).
pub struct Scored {
    method: &'static methods::Method,
    scores: Result<Vec<f32>, String>,
    seconds: f64,
}

fn score_all(
    chosen: &[&'static methods::Method],
    settings: &methods::Settings,
    run: &Run,
    bar: &Bar,
) -> Vec<Scored> {
    let backend = CpuBackend::default();
    chosen
        .iter()
        .map(|&method| {
            let t = Instant::now();
            let scores = method
                .scores(settings, &backend, run, bar)
                .map_err(|e| e.to_string());
            if let Err(e) = &scores {
                eprintln!("{}: {e}", method.name);
            }
            Scored {
                method,
                scores,
                seconds: t.elapsed().as_secs_f64(),
            }
        })
        .collect()
}

fn open_cache(
    args: &CommonArgs,
    kind: &str,
    config: &serde_json::Value,
    tests: usize,
) -> Result<Cache> {
    let dir = args
        .cache
        .clone()
        .unwrap_or_else(|| args.out.join(format!("cache-{kind}")));
    Cache::open(&dir, config, tests).map_err(|e| anyhow::anyhow!("--cache: {e}"))
}

/// `infl eval lds`.
fn lds(args: &LdsArgs, bar: &Bar) -> Result<()> {
    let common = &args.common;
    validate(common)?;
    ensure!(args.test >= 1, "--test: expected at least 1 test image");
    let seeds = match common.model {
        ModelArg::Lr => 1,
        ModelArg::Mlp => args.seeds,
    };
    ensure!(seeds >= 1, "--seeds: expected at least 1");
    let subsets =
        counterfactual::lds_subsets(common.train, args.subsets, args.fraction, common.seed)
            .map_err(|e| anyhow::anyhow!("--subsets/--fraction: {e}"))?;
    let chosen = chosen_methods(common)?;
    let data = load(common, args.test)?;
    let mut config = model_config(common, &data);
    config["lds"] = json!({"subsets": args.subsets, "fraction": args.fraction, "seeds": seeds});
    let cache = open_cache(common, "lds", &config, data.test_y.len())?;
    let start = Instant::now();
    let reference = reference(common, &data, "lds")?;
    let scored = score_all(&chosen, &settings(common), &reference.run, bar);
    let jobs: Vec<Job> = subsets
        .iter()
        .enumerate()
        .flat_map(|(m, s)| {
            (0..seeds).map(move |k| Job {
                key: format!("lds-{m:04}-s{k}"),
                set: TrainSet::Subset(s.clone()),
                seed: common.seed + k as u64,
            })
        })
        .collect();
    let t = Instant::now();
    let outcomes = counterfactual::retrain_all(&*reference.retrainer, &jobs, &cache, bar)?;
    let retrain_seconds = t.elapsed().as_secs_f64();
    let per_subset: Vec<Outcome> = outcomes.chunks(seeds).map(Outcome::mean).collect();
    let target = match args.target {
        TargetArg::Loss => Target::Loss,
        TargetArg::Margin => Target::Margin,
    };
    let results = report::judge_lds(
        &scored,
        &subsets,
        common.train,
        &per_subset,
        target,
        common.seed,
    );
    report::write_lds(&report::LdsReport {
        args,
        config: &config,
        settings: &settings(common),
        subsets: &subsets,
        outcomes: &per_subset,
        results: &results,
        target,
        retrain_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
    })
}

/// `infl eval loo`.
fn loo(args: &LooArgs, bar: &Bar) -> Result<()> {
    let common = &args.common;
    validate(common)?;
    ensure!(args.tests >= 1, "--tests: expected at least 1 test image");
    let total = args.top + args.random;
    if total < 2 || total > common.train {
        bail!(
            "--top/--random: expected 2 to {} removals in all, found {total}",
            common.train
        );
    }
    let chosen = chosen_methods(common)?;
    let data = load(common, args.tests)?;
    // Results are keyed by the removed example, so any removals share one cache.
    let config = model_config(common, &data);
    let cache = open_cache(common, "loo", &config, data.test_y.len())?;
    let start = Instant::now();
    let reference = reference(common, &data, "loo")?;
    let settings = settings(common);
    let scored = score_all(&chosen, &settings, &reference.run, bar);
    // Koh & Liang's choice: the largest |exact influence| on test example 0.
    let exact = match scored.iter().find(|s| s.method.name == "influence-exact") {
        Some(s) => s
            .scores
            .clone()
            .map_err(|e| anyhow::anyhow!("influence-exact: {e}"))?,
        None => methods::find("influence-exact")?.scores(
            &settings,
            &CpuBackend::default(),
            &reference.run,
            bar,
        )?,
    };
    let removals =
        counterfactual::loo_removals(&exact[..common.train], args.top, args.random, common.seed)?;
    let mut jobs = vec![Job {
        key: "full".into(),
        set: TrainSet::Full,
        seed: common.seed,
    }];
    jobs.extend(removals.iter().map(|&r| Job {
        key: format!("without-{r:06}"),
        set: TrainSet::Without(r),
        seed: common.seed,
    }));
    let t = Instant::now();
    let outcomes = counterfactual::retrain_all(&*reference.retrainer, &jobs, &cache, bar)?;
    let retrain_seconds = t.elapsed().as_secs_f64();
    let results = report::judge_loo(&scored, &removals, common.train, &outcomes, common.seed);
    report::write_loo(&report::LooReport {
        args,
        config: &config,
        settings: &settings,
        removals: &removals,
        outcomes: &outcomes,
        results: &results,
        retrain_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
    })
}
