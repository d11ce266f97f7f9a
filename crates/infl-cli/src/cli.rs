//! Command-line arguments and the subcommands' drivers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use infl::io::RunLayout;
use infl::{
    Backend, BackendChoice, CheckpointData, Engine, Loss, Prepared, Progress, Reduction,
    TracInCPFast,
};

use crate::output;
use crate::progress::Bar;

/// Training-data attribution: which training examples made a model predict what it
/// predicts, and which training labels look wrong.
#[derive(Parser, Debug)]
#[command(name = "infl", version, about, long_about = None)]
pub struct Cli {
    /// Worker threads (default: one per core).
    #[arg(long, global = true)]
    pub threads: Option<usize>,

    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Compute backend: `auto` (a hardware GPU if present, else the CPU), `cpu`, or `gpu`
    /// (any wgpu adapter, software included; WGPU_BACKEND / WGPU_ADAPTER_NAME are honoured).
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub backend: BackendArg,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train an MLP on MNIST (bundled subset by default) with injected label noise, record
    /// forgetting events, compute TracInCPFast self-influence, and report how well each
    /// finds the mislabelled examples (metrics, results.json, PNG plots).
    Demo(crate::demo::DemoArgs),
    /// Full influence score matrix [test, train], written as safetensors.
    Scores {
        #[command(flatten)]
        input: Input,
        /// Output file.
        #[arg(long, short, default_value = "scores.safetensors")]
        out: PathBuf,
    },
    /// Top-k proponents and opponents of every test example (streamed; memory does not
    /// grow with test × train).
    Topk {
        #[command(flatten)]
        input: Input,
        /// How many proponents and opponents per test example.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// Output file (safetensors).
        #[arg(long, short, default_value = "topk.safetensors")]
        out: PathBuf,
        /// Also write the lists as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Self-influence of every training example and the most suspicious (likely
    /// mislabelled) ones: self_influence.safetensors, suspicious.csv, suspicious.json.
    SelfInfluence {
        #[command(flatten)]
        input: Input,
        /// Output folder.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// How many suspects to list (0 = all).
        #[arg(long, default_value_t = 100)]
        top: usize,
    },
}

/// Backend choice on the command line.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BackendArg {
    /// A hardware GPU if there is one, else the CPU.
    Auto,
    /// The CPU backend.
    Cpu,
    /// Any GPU adapter (software included); an error if there is none.
    Gpu,
}

impl From<BackendArg> for BackendChoice {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Cpu => BackendChoice::Cpu,
            BackendArg::Gpu => BackendChoice::Gpu,
        }
    }
}

/// The estimator.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Method {
    /// TracInCPFast on the final linear layer (Pruthi et al. 2020, appendix F; as Captum).
    #[value(name = "tracincp-fast")]
    TracInCPFast,
}

/// Loss head.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LossArg {
    /// Softmax cross-entropy on `labels`.
    Ce,
    /// Squared error on `targets` (MSELoss).
    Mse,
}

/// Loss reduction used in training.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ReductionArg {
    /// reduction="sum".
    Sum,
    /// reduction="mean".
    Mean,
}

/// Where the checkpoints and features are, and how to score them.
#[derive(Args, Debug)]
pub struct Input {
    /// Run folder: NAME.safetensors checkpoints with NAME.train.safetensors and
    /// NAME.test.safetensors feature files.
    #[arg(
        long,
        required_unless_present = "manifest",
        conflicts_with = "manifest"
    )]
    pub run: Option<PathBuf>,
    /// JSON manifest listing checkpoints and feature files instead of --run.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// The final linear layer's name in the state dict (LAYER.weight [K, D], optional
    /// LAYER.bias [K]).
    #[arg(long)]
    pub layer: String,
    /// Estimator.
    #[arg(long, value_enum, default_value = "tracincp-fast")]
    pub method: Method,
    /// Loss head.
    #[arg(long, value_enum, default_value = "ce")]
    pub loss: LossArg,
    /// Loss reduction the model was trained with (ce: no effect; mse mean: J / K).
    #[arg(long, value_enum, default_value = "sum")]
    pub reduction: ReductionArg,
    /// Include the bias gradient (Captum leaves it out).
    #[arg(long)]
    pub include_bias: bool,
    /// Learning rate for checkpoints without `learning_rate` metadata.
    #[arg(long, default_value_t = 1.0)]
    pub learning_rate: f32,
}

impl Input {
    fn layout(&self) -> Result<RunLayout> {
        Ok(match (&self.run, &self.manifest) {
            (Some(dir), _) => RunLayout::discover(dir)?,
            (None, Some(m)) => RunLayout::from_manifest(m)?,
            (None, None) => bail!("give --run DIR or --manifest FILE"),
        })
    }

    fn estimator(&self) -> Result<TracInCPFast> {
        if !self.learning_rate.is_finite() {
            bail!("--learning-rate must be finite, got {}", self.learning_rate);
        }
        Ok(TracInCPFast {
            loss: match self.loss {
                LossArg::Ce => Loss::CrossEntropy,
                LossArg::Mse => Loss::MeanSquaredError,
            },
            reduction: match self.reduction {
                ReductionArg::Sum => Reduction::Sum,
                ReductionArg::Mean => Reduction::Mean,
            },
            include_bias: self.include_bias,
            default_learning_rate: self.learning_rate,
        })
    }
}

/// Everything a subcommand needs after loading.
pub struct Loaded {
    pub engine: Engine<Box<dyn Backend>>,
    pub prepared: Prepared,
    pub layer: String,
    pub settings: TracInCPFast,
}

/// How to compute: backend choice and CPU threads.
#[derive(Clone, Copy, Debug)]
pub struct Compute {
    pub backend: BackendArg,
    pub threads: Option<usize>,
}

fn load(input: &Input, compute: Compute, progress: &Bar, need_test: bool) -> Result<Loaded> {
    let layout = input.layout()?;
    if need_test && !layout.has_test() {
        bail!(
            "{}: no test features: this subcommand needs NAME.test.safetensors (or `test` in the \
             manifest) for every checkpoint",
            layout.source.display()
        );
    }
    let backend = infl::select_backend(compute.backend.into(), compute.threads)?;
    if !progress.quiet() {
        eprintln!("backend: {}", backend.name());
    }
    let engine = Engine::new(backend);
    progress.start("loading", layout.entries.len() as u64);
    let mut data: Vec<CheckpointData> = Vec::with_capacity(layout.entries.len());
    for e in &layout.entries {
        let mut entry = e.clone();
        if !need_test {
            // Self-influence needs the training features only: don't map the test files.
            entry.test = None;
        }
        let one = RunLayout {
            source: layout.source.clone(),
            entries: vec![entry],
        };
        data.extend(infl::load_run(&one, &input.layer)?);
        progress.advance(1);
    }
    progress.finish();
    let settings = input.estimator()?;
    let prepared = settings.prepare(engine.backend(), &data)?;
    Ok(Loaded {
        engine,
        prepared,
        layer: input.layer.clone(),
        settings,
    })
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let bar = Bar::new(cli.quiet);
    let compute = Compute {
        backend: cli.backend,
        threads: cli.threads,
    };
    match cli.command {
        Command::Demo(args) => crate::demo::run(&args, cli.threads)?,
        Command::Scores { input, out } => {
            let l = load(&input, compute, &bar, true)?;
            let scores = l.engine.scores(&l.prepared.set, &bar)?;
            output::write_scores(&out, &l, &scores)
                .with_context(|| format!("writing {}", out.display()))?;
            output::print_scores_summary(&out, &l, &scores);
        }
        Command::Topk {
            input,
            k,
            out,
            json,
        } => {
            let l = load(&input, compute, &bar, true)?;
            let top = l.engine.topk(&l.prepared.set, k, &bar)?;
            output::write_topk(&out, json.as_deref(), &l, &top)?;
            output::print_topk_summary(&out, &l, &top);
        }
        Command::SelfInfluence {
            input,
            out_dir,
            top,
        } => {
            let l = load(&input, compute, &bar, false)?;
            let self_inf = l.engine.self_influence(&l.prepared.set)?;
            let n = self_inf.len();
            let top = if top == 0 { n } else { top.min(n) };
            let suspects = infl::rank_suspects(&self_inf, &l.prepared.train, top);
            ensure_dir(&out_dir)?;
            output::write_self_influence(&out_dir, &l, &self_inf, &suspects)?;
            output::print_self_summary(&out_dir, &l, &suspects);
        }
    }
    Ok(())
}

fn ensure_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create output folder", dir.display()))?;
    }
    Ok(())
}
