//! `infl demo`: find mislabelled MNIST digits, end to end, with one command.
//!
//! 1. Loads MNIST: the subset bundled in the binary (the first 10,000 training and 2,000
//!    test images, `data/mnist-subset`) or the four IDX files of `--mnist-dir`.
//! 2. Replaces the labels of exactly `round(noise · N)` training examples, chosen with a
//!    seeded generator, by a wrong label drawn uniformly among the other nine classes.
//! 3. Trains an MLP (infl-nn) with minibatch SGD, recording every presentation in a
//!    [`ForgettingRecorder`] and writing after each epoch a checkpoint with the
//!    penultimate features of the training set and of a few test images, in infl's run
//!    directory convention (`OUT/run/epoch-E.safetensors`, `.train`, `.test`).
//! 4. Loads that run back like any user's run and scores it with TracInCPFast (last
//!    layer): self-influence of every training example, and the proponents and opponents
//!    of the first `--explain` test images.
//! 5. For each method — forgetting events with InterpretDL's noisy-label (TIDY) rule, and
//!    TracInCPFast self-influence — prints and saves the ROC AUC, the precision, recall and
//!    F1 of its flagged set (TIDY: the rule's own set; self-influence: the top
//!    `round(noise · N)`), and the fraction of mislabelled examples found after
//!    inspecting 5%, 10% and 20% of the data ranked by the method's score.
//! 6. Writes `OUT/results.json`, `OUT/forgetting.safetensors` (the presentation history)
//!    and PNG plots: `roc.png`, `found.png`, `suspects-self-influence.png`,
//!    `suspects-forgetting.png`, `explanations.png`.
//!
//! For the ranking metrics, forgetting events score an example by the TIDY score (mean
//! presentation index at which it was classified correctly); examples never classified
//! correctly, which the rule skips, rank above all others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use infl::forgetting::ForgettingRecorder;
use infl::io::RunLayout;
use infl::io::mnist::{self, Mnist, MnistSplit};
use infl::metrics;
use infl::{Engine, TracInCPFast, load_run};
use infl_nn::{CheckpointMeta, Dataset, Mlp, RunWriter, Split, TrainConfig, TrainHooks};
use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::plots::{self, ExplainRow, PALETTE, Series, Tile};

/// The bundled MNIST subset (see data/mnist-subset/README.md).
const BUNDLED: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../../../data/mnist-subset/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../../../data/mnist-subset/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../../../data/mnist-subset/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../../../data/mnist-subset/t10k-labels-idx1-ubyte.gz"),
    ),
];

/// Fractions of the data inspected for the "found after inspecting" metric.
const INSPECT: [f64; 3] = [0.05, 0.10, 0.20];

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

fn load_data(args: &DemoArgs) -> Result<(Mnist, String)> {
    let (m, source) = match &args.mnist_dir {
        Some(dir) => (
            mnist::load_mnist(dir)?,
            format!("MNIST from {}", dir.display()),
        ),
        None => {
            let split = |i: usize, j: usize| -> Result<MnistSplit> {
                let (ip, lp) = (Path::new(BUNDLED[i].0), Path::new(BUNDLED[j].0));
                Ok(mnist::split_from_idx(
                    mnist::parse_idx(BUNDLED[i].1, ip)?,
                    ip,
                    mnist::parse_idx(BUNDLED[j].1, lp)?,
                    lp,
                )?)
            };
            (
                Mnist {
                    train: split(0, 1)?,
                    test: split(2, 3)?,
                },
                "the bundled MNIST subset".to_string(),
            )
        }
    };
    let train = m.train.truncated(args.train.unwrap_or(usize::MAX));
    let test = m.test.truncated(args.test.unwrap_or(usize::MAX));
    ensure!(
        !train.is_empty(),
        "--train: expected at least 1 training image"
    );
    ensure!(!test.is_empty(), "--test: expected at least 1 test image");
    Ok((Mnist { train, test }, source))
}

/// Pixels scaled to [0, 1] and standardised with MNIST's mean and std.
fn to_inputs(s: &MnistSplit) -> Array2<f32> {
    let p = s.pixels();
    Array2::from_shape_fn((s.len(), p), |(i, j)| {
        (f32::from(s.images[i * p + j]) / 255.0 - 0.1307) / 0.3081
    })
}

/// Replaces `round(rate · N)` labels, chosen uniformly, by a different class drawn
/// uniformly among the other `classes − 1`. Returns the noisy labels and the mask.
pub fn inject_noise(labels: &[i64], classes: i64, rate: f64, seed: u64) -> (Vec<i64>, Vec<bool>) {
    let n = labels.len();
    let k = ((rate * n as f64).round() as usize).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e6f_6973_655f_6c62);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = rng.random_range(i..n);
        idx.swap(i, j);
    }
    let mut noisy = labels.to_vec();
    let mut mask = vec![false; n];
    for &i in &idx[..k] {
        noisy[i] = (labels[i] + 1 + rng.random_range(0..classes - 1)) % classes;
        mask[i] = true;
    }
    (noisy, mask)
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b
}

struct Bar(ProgressBar);

impl infl::Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(what.to_string());
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

#[derive(Serialize, Clone, Debug)]
struct EpochRecord {
    epoch: usize,
    learning_rate: f32,
    train_loss: f32,
    train_accuracy_pre_step: f32,
    test_accuracy: f32,
}

struct Hooks<'a> {
    writer: RunWriter,
    bar: ProgressBar,
    train: Split<'a>,
    explain: Option<Split<'a>>,
    test_x: &'a Array2<f32>,
    test_y: &'a [i64],
    test_acc: Vec<f32>,
}

impl TrainHooks for Hooks<'_> {
    fn on_batch(&mut self, epoch: usize, _: usize, _: usize, loss: f32) {
        self.bar.inc(1);
        if self.bar.position().is_multiple_of(16) {
            self.bar
                .set_message(format!("epoch {epoch}, loss {loss:.3}"));
        }
    }

    fn on_epoch_end(&mut self, epoch: usize, model: &Mlp, lr: f32) -> infl_nn::Result<()> {
        let meta = CheckpointMeta {
            learning_rate: Some(lr),
            epoch: Some(epoch),
        };
        self.writer.write(
            &format!("epoch-{epoch}"),
            model,
            &meta,
            self.train,
            self.explain,
        )?;
        let pred = model.predict(self.test_x.view(), 1024)?;
        let ok = pred.iter().zip(self.test_y).filter(|(p, y)| p == y).count();
        let acc = ok as f32 / self.test_y.len() as f32;
        self.test_acc.push(acc);
        self.bar.set_message(format!(
            "epoch {epoch} done, test accuracy {:.1}%",
            100.0 * acc
        ));
        Ok(())
    }
}

#[derive(Serialize, Debug, Clone)]
struct Flagged {
    rule: String,
    count: usize,
    true_positives: usize,
    precision: f64,
    recall: f64,
    f1: f64,
}

#[derive(Serialize, Debug, Clone)]
struct MethodResult {
    name: String,
    roc_auc: Option<f64>,
    flagged: Flagged,
    found_after_inspecting: BTreeMap<String, f64>,
}

fn evaluate(
    name: &str,
    scores: &[f64],
    flagged: &[usize],
    rule: &str,
    noisy: &[bool],
) -> MethodResult {
    let q = metrics::flagged_quality(flagged, noisy);
    MethodResult {
        name: name.to_string(),
        roc_auc: metrics::roc_auc(scores, noisy),
        flagged: Flagged {
            rule: rule.to_string(),
            count: q.flagged,
            true_positives: q.true_positives,
            precision: q.precision,
            recall: q.recall,
            f1: q.f1,
        },
        found_after_inspecting: INSPECT
            .iter()
            .map(|&f| {
                (
                    format!("{}%", (f * 100.0).round()),
                    metrics::found_after_inspecting(scores, noisy, f),
                )
            })
            .collect(),
    }
}

#[derive(Serialize, Debug)]
struct SuspectRecord {
    rank: usize,
    index: usize,
    score: Option<f64>,
    given_label: i64,
    predicted: usize,
    original_label: i64,
    mislabelled: bool,
}

#[derive(Serialize, Debug)]
struct Influencer {
    index: usize,
    score: f32,
    given_label: i64,
    mislabelled: bool,
}

#[derive(Serialize, Debug)]
struct Explanation {
    test_index: usize,
    label: i64,
    predicted: usize,
    proponents: Vec<Influencer>,
    opponents: Vec<Influencer>,
}

#[derive(Serialize, Debug)]
struct Results {
    data: String,
    n_train: usize,
    n_test: usize,
    noise_rate: f64,
    n_mislabelled: usize,
    seed: u64,
    model: Vec<usize>,
    config: TrainSettings,
    training: Vec<EpochRecord>,
    methods: Vec<MethodResult>,
    forgetting: ForgettingSummary,
    top_suspects: BTreeMap<String, Vec<SuspectRecord>>,
    explanations: Vec<Explanation>,
    files: Vec<String>,
    plots_skipped: Option<String>,
    seconds: BTreeMap<String, f64>,
}

#[derive(Serialize, Debug)]
struct TrainSettings {
    epochs: usize,
    batch_size: usize,
    learning_rate: f32,
    momentum: f32,
    weight_decay: f32,
    threads: usize,
}

#[derive(Serialize, Debug)]
struct ForgettingSummary {
    /// Number of examples per count of forgetting events (−1: never learned).
    examples_per_count: BTreeMap<i64, usize>,
    /// Mislabelled examples per count of forgetting events.
    mislabelled_per_count: BTreeMap<i64, usize>,
    tidy_threshold: Option<f64>,
    never_correct: usize,
}

fn tile(split: &MnistSplit, i: usize, caption: Vec<String>) -> Tile {
    Tile {
        pixels: split.image(i).to_vec(),
        width: split.cols,
        height: split.rows,
        caption,
        frame: None,
    }
}

const RED: plotters::style::RGBColor = plotters::style::RGBColor(220, 30, 30);

fn clear_run_dir(dir: &Path) -> Result<()> {
    for d in [dir.to_path_buf(), dir.join("factors")] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("epoch-") && name.ends_with(".safetensors") {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("{}: cannot remove", e.path().display()))?;
            }
        }
    }
    Ok(())
}

fn run_inner(args: &DemoArgs) -> Result<()> {
    let t_start = Instant::now();
    let mut seconds = BTreeMap::new();
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
    let (data, source) = load_data(args)?;
    let (n, nt) = (data.train.len(), data.test.len());
    let classes = 10i64;
    let clean: Vec<i64> = data.train.labels.iter().map(|&l| i64::from(l)).collect();
    let (labels, noisy) = inject_noise(&clean, classes, args.noise, args.seed);
    let n_noisy = noisy.iter().filter(|&&b| b).count();
    let x = to_inputs(&data.train);
    let test_x = to_inputs(&data.test);
    let test_y: Vec<i64> = data.test.labels.iter().map(|&l| i64::from(l)).collect();
    let threads = rayon::current_num_threads();
    println!(
        "infl demo: {source}, {n} training / {nt} test images; {n_noisy} training labels \
         ({:.1}%) replaced by a wrong one (seed {}); {threads} thread(s)",
        100.0 * args.noise,
        args.seed
    );
    seconds.insert("load".to_string(), t_start.elapsed().as_secs_f64());

    // Train, recording presentations and writing a checkpoint per epoch.
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the output directory", args.out.display()))?;
    let run_dir = args.out.join("run");
    clear_run_dir(&run_dir)?;
    let mut model = Mlp::new(
        data.train.pixels(),
        &args.hidden,
        classes as usize,
        args.seed,
    )?;
    let sizes: Vec<String> = model.sizes().iter().map(ToString::to_string).collect();
    println!(
        "training an MLP {} ({} parameters) for {} epochs: SGD lr {}, momentum {}, batch {}",
        sizes.join("-"),
        model.parameters(),
        args.epochs,
        args.lr,
        args.momentum,
        args.batch_size
    );
    let ids: Vec<i64> = (0..n as i64).collect();
    let n_explain = args.explain.min(nt);
    let explain_x = test_x.slice(ndarray::s![..n_explain, ..]);
    let explain_ids: Vec<i64> = (0..n_explain as i64).collect();
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        seed: args.seed,
    };
    let batches = n.div_ceil(args.batch_size.max(1)) as u64;
    let mut hooks = Hooks {
        writer: RunWriter::new(&run_dir, args.export_factors)?,
        bar: bar(
            batches * args.epochs as u64,
            "  train [{elapsed_precise}] [{bar:30}] {pos}/{len} batches ({eta}) {msg}",
        ),
        train: Split {
            x: x.view(),
            labels: &labels,
            ids: &ids,
        },
        explain: (n_explain > 0).then(|| Split {
            x: explain_x,
            labels: &test_y[..n_explain],
            ids: &explain_ids,
        }),
        test_x: &test_x,
        test_y: &test_y,
        test_acc: Vec::new(),
    };
    let mut recorder = ForgettingRecorder::new();
    let t = Instant::now();
    let stats = infl_nn::train(
        &mut model,
        Dataset {
            x: x.view(),
            labels: &labels,
            ids: None,
        },
        &config,
        &mut recorder,
        &mut hooks,
    )?;
    hooks.bar.finish_and_clear();
    let train_secs = t.elapsed().as_secs_f64();
    seconds.insert("train".to_string(), train_secs);
    let training: Vec<EpochRecord> = stats
        .iter()
        .zip(&hooks.test_acc)
        .map(|(s, &a)| EpochRecord {
            epoch: s.epoch,
            learning_rate: args.lr,
            train_loss: s.loss,
            train_accuracy_pre_step: s.accuracy,
            test_accuracy: a,
        })
        .collect();
    if let Some(last) = training.last() {
        println!(
            "  trained in {train_secs:.1} s: final loss {:.3}, training accuracy {:.1}% (on the \
             noisy labels), test accuracy {:.1}%",
            last.train_loss,
            100.0 * last.train_accuracy_pre_step,
            100.0 * last.test_accuracy
        );
    }
    let history_path = args.out.join("forgetting.safetensors");
    recorder.save(&history_path)?;

    // TracInCPFast on the run directory, as a user's run would be read.
    let t = Instant::now();
    let layout = RunLayout::discover(&run_dir)?;
    let layer = model.last_layer_name();
    let ckpts = load_run(&layout, &layer)?;
    let engine = Engine::default();
    let prepared = TracInCPFast::default().prepare(engine.backend(), &ckpts)?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!(
        "TracInCPFast self-influence over {} checkpoints (layer {layer})",
        ckpts.len()
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let self_inf = engine.self_influence(&prepared.set)?;
    spinner.finish_and_clear();
    seconds.insert("self_influence".to_string(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let k_show = 6.min(n);
    let top = if n_explain > 0 {
        let b = Bar(bar(
            n as u64,
            "  top-k [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}",
        ));
        Some(engine.topk(&prepared.set, k_show, &b)?)
    } else {
        None
    };
    seconds.insert("topk".to_string(), t.elapsed().as_secs_f64());
    let predicted = &prepared.train.predicted;

    // Scores and flagged sets.
    let si: Vec<f64> = self_inf.iter().map(|&v| f64::from(v)).collect();
    let n_flag = n_noisy; // round(noise · N)
    let si_rank = metrics::ranking(&si);
    let si_flagged = &si_rank[..n_flag.min(n)];
    let tidy = recorder.noisy_labels();
    let mut tidy_scores = vec![f64::INFINITY; n];
    for &(id, s) in &tidy.scores {
        tidy_scores[id] = s;
    }
    let methods = vec![
        evaluate(
            "forgetting events (TIDY)",
            &tidy_scores,
            &tidy.flagged,
            "InterpretDL noisy-label rule: mean correct presentation > mean + 5 std",
            &noisy,
        ),
        evaluate(
            "TracInCPFast self-influence",
            &si,
            si_flagged,
            "top round(noise rate x N) by self-influence",
            &noisy,
        ),
    ];
    let fstats = recorder.forgetting(args.epochs);
    let mut mislabelled_per_count = BTreeMap::new();
    for e in &fstats.examples {
        if noisy[e.id] {
            *mislabelled_per_count.entry(e.count).or_insert(0) += 1;
        }
    }
    let forgetting = ForgettingSummary {
        examples_per_count: fstats
            .count_forgotten
            .iter()
            .map(|(c, v)| (*c, v.len()))
            .collect(),
        mislabelled_per_count,
        tidy_threshold: tidy.threshold,
        never_correct: n - tidy.scores.len(),
    };

    print_table(&methods, n_noisy);

    // Suspects and explanations.
    let suspects = |order: &[usize], scores: &[f64]| -> Vec<SuspectRecord> {
        order
            .iter()
            .take(50)
            .enumerate()
            .map(|(r, &i)| SuspectRecord {
                rank: r + 1,
                index: i,
                score: scores[i].is_finite().then_some(scores[i]),
                given_label: labels[i],
                predicted: predicted[i],
                original_label: clean[i],
                mislabelled: noisy[i],
            })
            .collect()
    };
    let tidy_rank = metrics::ranking(&tidy_scores);
    let mut top_suspects = BTreeMap::new();
    top_suspects.insert("self_influence".to_string(), suspects(&si_rank, &si));
    top_suspects.insert("forgetting".to_string(), suspects(&tidy_rank, &tidy_scores));
    let explanations: Vec<Explanation> = match &top {
        Some(top) => (0..n_explain)
            .map(|q| {
                let test_pred = prepared.test.as_ref().map_or(0, |t| t.predicted[q]);
                let inf = |r: &infl::core::Ranked| Influencer {
                    index: r.index,
                    score: r.score,
                    given_label: labels[r.index],
                    mislabelled: noisy[r.index],
                };
                Explanation {
                    test_index: q,
                    label: test_y[q],
                    predicted: test_pred,
                    proponents: top.proponents[q].iter().map(inf).collect(),
                    opponents: top.opponents[q].iter().map(inf).collect(),
                }
            })
            .collect(),
        None => Vec::new(),
    };

    // Plots.
    let t = Instant::now();
    let mut files = vec![
        "results.json".to_string(),
        "forgetting.safetensors".to_string(),
        "run/".to_string(),
    ];
    let plots_skipped = if args.no_plots {
        Some("--no-plots".to_string())
    } else {
        match plots::init_font() {
            Err(e) => {
                eprintln!("warning: plots skipped: {e}");
                Some(e)
            }
            Ok(_) => {
                let pb = bar(5, "  plots [{bar:30}] {pos}/{len} {msg}");
                let mut draw = |name: &str, f: &dyn Fn(&Path) -> Result<()>| -> Result<()> {
                    pb.set_message(name.to_string());
                    f(&args.out.join(name))?;
                    files.push(name.to_string());
                    pb.inc(1);
                    Ok(())
                };
                let all_scores = [&tidy_scores, &si];
                draw("roc.png", &|p| {
                    let series: Vec<Series> = methods
                        .iter()
                        .zip(all_scores)
                        .zip(PALETTE)
                        .map(|((m, s), color)| Series {
                            label: format!("{} (AUC {})", m.name, fmt_opt(m.roc_auc)),
                            points: metrics::roc_curve(s, &noisy),
                            color,
                        })
                        .collect();
                    plots::line_chart(
                        p,
                        &format!("Finding {n_noisy} mislabelled of {n} training images: ROC"),
                        "false positive rate",
                        "true positive rate",
                        1.0,
                        &series,
                        true,
                    )
                })?;
                draw("found.png", &|p| {
                    let max_f = (4.0 * args.noise).clamp(0.2, 1.0);
                    let series: Vec<Series> = methods
                        .iter()
                        .zip(all_scores)
                        .zip(PALETTE)
                        .map(|((m, s), color)| Series {
                            label: m.name.clone(),
                            points: metrics::found_curve(s, &noisy, max_f),
                            color,
                        })
                        .collect();
                    let mut series = series;
                    let ideal = (n_noisy as f64 / n as f64).min(max_f);
                    series.push(Series {
                        label: "ideal".to_string(),
                        points: vec![(0.0, 0.0), (ideal, 1.0), (max_f, 1.0)],
                        color: PALETTE[3],
                    });
                    plots::line_chart(
                        p,
                        "Mislabelled examples found vs. data inspected",
                        "fraction of training data inspected (ranked by score)",
                        "fraction of mislabelled examples found",
                        max_f,
                        &series,
                        false,
                    )
                })?;
                let legend = "red frame: label really corrupted by the demo; caption: rank, \
                              index, given label -> model prediction (original label)";
                for (file, title, order) in [
                    (
                        "suspects-self-influence.png",
                        "Top suspects by TracInCPFast self-influence",
                        &si_rank,
                    ),
                    (
                        "suspects-forgetting.png",
                        "Top suspects by forgetting events (TIDY score)",
                        &tidy_rank,
                    ),
                ] {
                    draw(file, &|p| {
                        let tiles: Vec<Tile> = order
                            .iter()
                            .take(32)
                            .enumerate()
                            .map(|(r, &i)| {
                                let mut t = tile(
                                    &data.train,
                                    i,
                                    vec![
                                        format!("#{} idx {i}", r + 1),
                                        format!("{}->{} ({})", labels[i], predicted[i], clean[i]),
                                    ],
                                );
                                t.frame = noisy[i].then_some(RED);
                                t
                            })
                            .collect();
                        plots::image_grid(p, title, legend, &tiles, 8)
                    })?;
                }
                if !explanations.is_empty() {
                    draw("explanations.png", &|p| {
                        let rows: Vec<ExplainRow> = explanations
                            .iter()
                            .map(|e| {
                                let inf = |v: &[Influencer]| -> Vec<Tile> {
                                    v.iter()
                                        .map(|r| {
                                            let mut t = tile(
                                                &data.train,
                                                r.index,
                                                vec![
                                                    format!(
                                                        "idx {} label {}",
                                                        r.index, r.given_label
                                                    ),
                                                    format!("{:+.3}", r.score),
                                                ],
                                            );
                                            t.frame = r.mislabelled.then_some(RED);
                                            t
                                        })
                                        .collect()
                                };
                                ExplainRow {
                                    test: tile(
                                        &data.test,
                                        e.test_index,
                                        vec![
                                            format!("test {}", e.test_index),
                                            format!("label {} pred {}", e.label, e.predicted),
                                        ],
                                    ),
                                    proponents: inf(&e.proponents),
                                    opponents: inf(&e.opponents),
                                }
                            })
                            .collect();
                        plots::explanations(
                            p,
                            "TracInCPFast: training images that most helped / hurt each test prediction",
                            "caption: training index, given label, TracInCPFast score; red frame: label corrupted by the demo",
                            &rows,
                        )
                    })?;
                }
                pb.finish_and_clear();
                None
            }
        }
    };
    seconds.insert("plots".to_string(), t.elapsed().as_secs_f64());
    seconds.insert("total".to_string(), t_start.elapsed().as_secs_f64());

    let results = Results {
        data: source,
        n_train: n,
        n_test: nt,
        noise_rate: args.noise,
        n_mislabelled: n_noisy,
        seed: args.seed,
        model: model.sizes(),
        config: TrainSettings {
            epochs: args.epochs,
            batch_size: args.batch_size,
            learning_rate: args.lr,
            momentum: args.momentum,
            weight_decay: args.weight_decay,
            threads,
        },
        training,
        methods,
        forgetting,
        top_suspects,
        explanations,
        files: files.clone(),
        plots_skipped,
        seconds,
    };
    let json = serde_json::to_vec_pretty(&results)?;
    infl::io::write_atomic(args.out.join("results.json"), &json)?;
    println!(
        "wrote {} in {}: {}",
        files.len(),
        args.out.display(),
        files.join(", ")
    );
    Ok(())
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}"))
}

fn print_table(methods: &[MethodResult], n_noisy: usize) {
    println!();
    println!(
        "{:<30} {:>7} {:>8} {:>9} {:>7} {:>6}   found after inspecting",
        "method", "ROC AUC", "flagged", "precision", "recall", "F1"
    );
    println!(
        "{:<30} {:>7} {:>8} {:>9} {:>7} {:>6}   {:>6} {:>6} {:>6}",
        "", "", "", "", "", "", "5%", "10%", "20%"
    );
    for m in methods {
        let f = &m.flagged;
        let found: Vec<String> = INSPECT
            .iter()
            .map(|p| {
                let key = format!("{}%", (p * 100.0).round());
                format!("{:>5.1}%", 100.0 * m.found_after_inspecting[&key])
            })
            .collect();
        println!(
            "{:<30} {:>7} {:>8} {:>9.3} {:>7.3} {:>6.3}   {}",
            m.name,
            fmt_opt(m.roc_auc),
            f.count,
            f.precision,
            f.recall,
            f.f1,
            found.join(" ")
        );
    }
    println!("({n_noisy} mislabelled training examples)");
    if n_noisy > 0
        && methods
            .iter()
            .any(|m| m.name.contains("TIDY") && m.flagged.count == 0)
    {
        println!(
            "note: the TIDY rule flagged nothing: its threshold (mean + 5 std of the scores) is \
             made for low noise rates (about 1%) and long training; its ranking (ROC AUC, found \
             after inspecting) is still meaningful"
        );
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_exact_seeded_and_always_wrong() {
        let labels: Vec<i64> = (0..1000).map(|i| i % 10).collect();
        let (a, ma) = inject_noise(&labels, 10, 0.1, 3);
        let (b, mb) = inject_noise(&labels, 10, 0.1, 3);
        let (c, _) = inject_noise(&labels, 10, 0.1, 4);
        assert_eq!((&a, &ma), (&b, &mb));
        assert_ne!(a, c);
        assert_eq!(ma.iter().filter(|&&m| m).count(), 100);
        for i in 0..1000 {
            assert_eq!(a[i] != labels[i], ma[i]);
            assert!((0..10).contains(&a[i]));
        }
        // The wrong labels cover the other classes.
        let mut seen = std::collections::BTreeSet::new();
        for i in (0..1000).filter(|&i| ma[i] && labels[i] == 0) {
            seen.insert(a[i]);
        }
        assert!(seen.len() >= 5, "{seen:?}");
    }
}
