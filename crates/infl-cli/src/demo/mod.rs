//! `infl demo`: find mislabelled MNIST digits, end to end, with one command.
//!
//! A pipeline of named steps, each returning a value the next consumes (every argument is
//! checked first, before the output folder is touched):
//!
//! 1. [`load`](load::load) → [`Loaded`](load::Loaded): MNIST, the subset bundled in the
//!    binary (the first 10,000 training and 2,000 test images, `data/mnist-subset`) or the
//!    four IDX files of `--mnist-dir`; the labels of exactly `round(noise · N)` training
//!    examples, chosen with a seeded generator, replaced by a wrong label drawn uniformly
//!    among the other nine classes.
//! 2. [`train`](train::train) → [`Trained`](train::Trained): an MLP (infl-nn) trained
//!    with minibatch SGD, recording every presentation in a
//!    [`ForgettingRecorder`](infl::ForgettingRecorder) (saved to
//!    `OUT/forgetting.safetensors`) and writing after each epoch a checkpoint with the
//!    penultimate features of the training set and of the first `--explain` test images,
//!    in infl's run directory convention (`OUT/run/epoch-E.safetensors`, `.train`,
//!    `.test`).
//! 3. [`attribute`](attribute::attribute) → [`Attribution`](attribute::Attribution):
//!    that run loaded back like any user's run and scored by every estimator of
//!    [`infl::estimators::REGISTRY`] (default options, CPU backend): the self-influence of
//!    every training example; the default estimator (the registry's first, TracInCPFast on
//!    the last layer) also gives the proponents and opponents of the explained test
//!    images.
//! 4. [`evaluate`](evaluate::evaluate) → [`Evaluation`](evaluate::Evaluation): each
//!    method — forgetting events with InterpretDL's noisy-label (TIDY) rule, then each
//!    estimator's self-influence — judged by [`infl::eval::evaluate`]: the ROC AUC, the
//!    precision, recall and F1 of its flagged set (TIDY: the rule's own set;
//!    self-influence: the top `round(noise · N)`), and the fraction of mislabelled examples
//!    found after inspecting 5%, 10% and 20% of the data ranked by the method's score;
//!    printed as a table.
//! 5. [`plot`](plot::plot) → [`Figures`](plot::Figures): PNG plots `roc.png`,
//!    `found.png`, `suspects-self-influence.png`, `suspects-forgetting.png` (the default
//!    estimator's and the TIDY score's top suspects), `explanations.png`.
//! 6. [`write`](write::write): `OUT/results.json`.
//!
//! For the ranking metrics, forgetting events score an example by the TIDY score (mean
//! presentation index at which it was classified correctly); examples never classified
//! correctly, which the rule skips, rank above all others.

mod attribute;
mod evaluate;
pub(crate) mod load;
mod plot;
mod train;
mod write;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

/// Options of `infl demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Directory with the four MNIST IDX files (raw or .gz), e.g. ../shared/data/mnist.
    /// Default: the subset bundled with infl (10,000 training, 2,000 test images).
    #[arg(long, value_name = "DIR")]
    pub mnist_dir: Option<PathBuf>,
    /// Fraction of training labels replaced by a wrong label.
    #[arg(long, default_value_t = 0.1, value_name = "RATE")]
    pub noise: f64,
    /// Seed of the label noise, initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training epochs (one checkpoint each).
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    /// Hidden layer sizes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "256,128",
        value_name = "SIZES"
    )]
    pub hidden: Vec<usize>,
    /// Use only the first N training images.
    #[arg(long, value_name = "N")]
    pub train: Option<usize>,
    /// Use only the first N test images (for the test accuracy).
    #[arg(long, value_name = "N")]
    pub test: Option<usize>,
    /// Minibatch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// SGD learning rate (constant).
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Output directory (created; its `run/epoch-*` files are replaced).
    #[arg(long, default_value = "infl-demo", value_name = "DIR")]
    pub out: PathBuf,
    /// Number of test images whose proponents and opponents are shown.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub explain: usize,
    /// Also export per-example factors of every layer (`run/factors/`; large).
    #[arg(long)]
    pub export_factors: bool,
    /// Do not draw the PNG plots.
    #[arg(long)]
    pub no_plots: bool,
}

/// Runs the demo, on a pool of `threads` threads when given.
pub fn run(args: &DemoArgs, threads: Option<usize>) -> Result<()> {
    match threads {
        Some(t) => rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build()
            .context("cannot start the thread pool")?
            .install(|| run_inner(args)),
        None => run_inner(args),
    }
}

/// The steps, one after the other.
fn run_inner(args: &DemoArgs) -> Result<()> {
    let start = Instant::now();
    validate(args)?;
    let loaded = load::load(args)?;
    let mut seconds = BTreeMap::from([("load".to_string(), start.elapsed().as_secs_f64())]);
    let trained = train::train(args, &loaded)?;
    seconds.insert("train".to_string(), trained.seconds);
    let attribution = attribute::attribute(&trained)?;
    seconds.extend(attribution.seconds());
    let evaluation = evaluate::evaluate(&loaded, &trained, &attribution);
    let t = Instant::now();
    let figures = plot::plot(args, &loaded, &attribution, &evaluation)?;
    seconds.insert("plots".to_string(), t.elapsed().as_secs_f64());
    seconds.insert("total".to_string(), start.elapsed().as_secs_f64());
    write::write(&write::Report {
        args,
        loaded: &loaded,
        trained: &trained,
        evaluation: &evaluation,
        figures: &figures,
        seconds: &seconds,
    })
}

/// Checks every argument that needs no file (the data's are checked by [`load::load`],
/// which writes nothing either).
fn validate(args: &DemoArgs) -> Result<()> {
    ensure!(
        (0.0..1.0).contains(&args.noise),
        "--noise: expected a rate in [0, 1), found {}",
        args.noise
    );
    ensure!(args.epochs >= 1, "--epochs: expected at least 1");
    ensure!(
        !args.hidden.is_empty() && !args.hidden.contains(&0),
        "--hidden: expected one or more positive sizes, found {:?}",
        args.hidden
    );
    ensure!(
        args.train != Some(0),
        "--train: expected at least 1 training image"
    );
    ensure!(
        args.test != Some(0),
        "--test: expected at least 1 test image"
    );
    ensure!(args.batch_size >= 1, "--batch-size: expected at least 1");
    ensure!(
        args.lr.is_finite() && args.lr > 0.0,
        "--lr: expected a positive number, found {}",
        args.lr
    );
    ensure!(
        (0.0..1.0).contains(&args.momentum),
        "--momentum: expected a value in [0, 1), found {}",
        args.momentum
    );
    ensure!(
        args.weight_decay.is_finite() && args.weight_decay >= 0.0,
        "--weight-decay: expected a number >= 0, found {}",
        args.weight_decay
    );
    ensure!(
        !args.out.exists() || args.out.is_dir(),
        "--out: {} exists and is not a directory",
        args.out.display()
    );
    Ok(())
}
