//! Command-line arguments and the subcommands' drivers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use infl::curvature::{Curvature, Damping, Solver};
use infl::estimators::Convention;
use infl::estimators::Input as Reads;
use infl::io::{FactorRun, Inputs, Publication, RunLayout};
use infl::shard::ShardRows;
use infl::{
    Attributed, Backend, BackendChoice, Bias, CheckpointData, Estimator, Loss, Options, Progress,
    Pruning, Reduction, Run, Shard, Splits, estimators,
};

use crate::output::{self, Provenance};
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
    /// Counterfactual evaluation: retrain on leave-one-out or random-subset training sets
    /// and correlate every estimator's predictions with the actual effects (LOO, LDS).
    Eval {
        #[command(subcommand)]
        command: crate::eval::EvalCommand,
    },
    /// Full influence score matrix [test, train], written as safetensors.
    Scores {
        #[command(flatten)]
        input: Input,
        /// Output file.
        #[arg(long, short, default_value = "scores.safetensors")]
        out: PathBuf,
        #[command(flatten)]
        sharding: ShardArg,
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
        /// Score every pair instead of skipping those whose norm bound cannot enter the
        /// lists (the lists are the same; for comparison).
        #[arg(long)]
        no_prune: bool,
        #[command(flatten)]
        sharding: ShardArg,
        #[command(flatten)]
        plot: crate::topk_plot::PlotArgs,
    },
    /// A persistent nearest-neighbour index of the training examples: `index build`, then
    /// `index query` for proponents and opponents of new examples.
    Index {
        #[command(subcommand)]
        command: crate::index::IndexCommand,
    },
    /// Fit the curvature of influence functions (--method influence) once and save it, so
    /// that `scores`/`topk`/`self-influence --hessian FILE` reuse it for many test batches
    /// and shards (--shard): with --run the final layer's Hessian (the damping and the
    /// solver may still change), with --factors the K-FAC or EK-FAC fit of the --layers
    /// (--solver kfac|ekfac, --curvature fisher|true-fisher; the damping may still change).
    Fit {
        #[command(flatten)]
        input: Input,
        /// Output file (safetensors: "infl hessian v1" with --run, "infl kfac v1" with
        /// --factors).
        #[arg(long, short, default_value = "hessian.safetensors")]
        out: PathBuf,
    },
    /// Self-influence of every training example and the most suspicious (likely
    /// mislabelled) ones: self_influence.safetensors, suspicious.csv, suspicious.json.
    SelfInfluence {
        #[command(flatten)]
        input: Input,
        /// Output folder.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// How many suspects to list (0 = all; default 100).
        #[arg(long)]
        top: Option<usize>,
        #[command(flatten)]
        sharding: ShardArg,
    },
    /// Merge the parts that `--shard i/N` wrote (topk, scores or self-influence) into the
    /// result one run over every training example gives, bit for bit. Refuses parts of
    /// different runs or settings, overlapping and missing shards.
    Merge(crate::merge::MergeArgs),
}

/// `--shard i/N` of the scoring subcommands.
#[derive(Args, Debug, Clone, Copy)]
pub struct ShardArg {
    /// Score only shard i of N (1-based) of the training rows: contiguous rows
    /// ⌊(i−1)·n/N⌋..⌊i·n/N⌋, global row indices kept. The output is a part (its metadata
    /// records the shard, rows, run and settings) for `infl merge OUT PARTS...`.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<Shard>,
}

/// `--shard`: `i/N`.
fn parse_shard(v: &str) -> Result<Shard, String> {
    v.parse().map_err(|e: infl::Error| e.to_string())
}

/// Self-influence's default number of suspects.
pub(crate) const DEFAULT_TOP: usize = 100;

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

/// `--method`: the names of the registered estimators, with their one-line help.
fn method_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(
        estimators::REGISTRY
            .iter()
            .map(|r| PossibleValue::new(r.name).help(r.about)),
    )
}

/// Where the checkpoints and features (or factors) are, and how to score them.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["run", "manifest", "factors"])))]
pub struct Input {
    /// Run folder: NAME.safetensors checkpoints with NAME.train.safetensors and
    /// NAME.test.safetensors feature files (estimators of the final layer).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// JSON manifest listing checkpoints and feature files instead of --run.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Factor folder: NAME.train.safetensors (and NAME.test.safetensors) per-example factor
    /// files of chosen layers (`--method tracincp`; written by python/export_factors.py).
    #[arg(long)]
    pub factors: Option<PathBuf>,
    /// The final linear layer's name in the state dict (LAYER.weight [K, D], optional
    /// LAYER.bias [K]); for --run and --manifest.
    #[arg(long)]
    pub layer: Option<String>,
    /// The layers to trace, comma-separated (a module name takes all its parameters); for
    /// --factors. Default: every layer of the factor files.
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// Estimator.
    #[arg(long, value_parser = method_parser(), default_value = estimators::REGISTRY[0].name)]
    pub method: String,
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
    /// Random projection dimension p (--method tracincp-fast-rand-proj; Captum's
    /// projection_dim): factors projected to min(floor(sqrt p), K) and min(floor(sqrt p), D)
    /// columns, none when K*D <= p. Default: no projection.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 40))]
    pub projection_dim: Option<u64>,
    /// Seed of the random projections (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Influence functions' solver (--method influence).
    #[command(flatten)]
    pub solving: SolverArgs,
}

/// How --method influence applies `(H + damping I)^-1`.
#[derive(Args, Clone, Debug, Default)]
pub struct SolverArgs {
    /// With --run: `exact` (assemble + Cholesky in f64, up to 20,000 parameters; the
    /// default), `cg` (block conjugate gradients), `lissa` (Koh & Liang's recursion) or
    /// `arnoldi` (a low-rank inverse from a Krylov basis, Captum's
    /// ArnoldiInfluenceFunction; --seed seeds its start). With --factors: `kfac` or `ekfac`
    /// (Kronfluence's numerics, every chosen layer; ekfac is the default) or any of the
    /// others over the chosen layers' --curvature (cg is the default when --curvature is
    /// given).
    #[arg(long, value_enum)]
    pub solver: Option<SolverArg>,
    /// With --factors and an exact, cg, lissa or arnoldi solver, the curvature inverted
    /// over the chosen layers: `fisher` (the empirical Fisher of the files' gradients;
    /// the default), `true-fisher` (from the files' `L.g_sampled`, gradients for labels
    /// sampled from the model), `gauss-newton` or `hessian` (of the infl-nn MLP whose
    /// checkpoint NAME.safetensors lies beside the factor files or in their parent
    /// folder; exact Hessian-vector products over the whole network).
    #[arg(long, value_enum)]
    pub curvature: Option<CurvatureArg>,
    /// Whose scaling: `kronfluence` (default: the mean Hessian, ∇ℓ_testᵀ (H/N + λI)⁻¹
    /// ∇ℓ_train) or `captum` (the summed Hessian, N times smaller scores at N times the
    /// damping). Both report positive = helpful.
    #[arg(long, value_enum)]
    pub convention: Option<ConventionArg>,
    /// Damping λ added to the convention's Hessian, or `heuristic` (0.1 × its mean
    /// eigenvalue, Kronfluence's damping_factor=None). Default: 1e-8 (Kronfluence's
    /// damping_factor), 1e-6 with --convention captum (its hessian_reg).
    #[arg(long, allow_hyphen_values = true, value_parser = parse_damping)]
    pub damping: Option<Damping>,
    /// CG's relative residual tolerance (default 1e-8).
    #[arg(long)]
    pub cg_tolerance: Option<f64>,
    /// CG's iteration cap (default 1000).
    #[arg(long, value_parser = parse_positive)]
    pub cg_max_iterations: Option<usize>,
    /// LiSSA's recursion depth (default 5000, dattri's).
    #[arg(long, value_parser = parse_positive)]
    pub lissa_depth: Option<usize>,
    /// LiSSA's scale (default: the largest eigenvalue of H + damping I, by power
    /// iteration).
    #[arg(long)]
    pub lissa_scale: Option<f64>,
    /// LiSSA's minibatch: examples drawn (uniformly, with replacement, seeded by --seed)
    /// for each step's Hessian estimate (default: every example, exactly).
    #[arg(long, value_parser = parse_positive)]
    pub lissa_batch: Option<usize>,
    /// Minibatch LiSSA estimates averaged (default 1; needs --lissa-batch).
    #[arg(long, value_parser = parse_positive)]
    pub lissa_repeats: Option<usize>,
    /// Arnoldi's Krylov dimension (default 200, Captum's arnoldi_dim).
    #[arg(long, value_parser = parse_positive)]
    pub arnoldi_dim: Option<usize>,
    /// Eigenpairs Arnoldi keeps (default 50, Captum's projection_dim).
    #[arg(long, value_parser = parse_positive)]
    pub arnoldi_eigenpairs: Option<usize>,
    /// A curvature saved by `infl fit` for this run's last checkpoint (with --run the
    /// final layer's Hessian; with --factors and --solver kfac|ekfac their fit), instead of
    /// fitting one; refused if it was fitted on anything else.
    #[arg(long)]
    pub hessian: Option<PathBuf>,
}

impl SolverArgs {
    /// Whether any solver flag was given.
    fn any(&self) -> bool {
        self.solver.is_some()
            || self.curvature.is_some()
            || self.damping.is_some()
            || self.convention.is_some()
            || self.hessian.is_some()
            || self.knobs().iter().any(|(_, set)| *set)
    }

    /// Each solver-specific flag, whether it was given.
    fn knobs(&self) -> [(&'static str, bool); 8] {
        [
            ("--cg-tolerance", self.cg_tolerance.is_some()),
            ("--cg-max-iterations", self.cg_max_iterations.is_some()),
            ("--lissa-depth", self.lissa_depth.is_some()),
            ("--lissa-scale", self.lissa_scale.is_some()),
            ("--lissa-batch", self.lissa_batch.is_some()),
            ("--lissa-repeats", self.lissa_repeats.is_some()),
            ("--arnoldi-dim", self.arnoldi_dim.is_some()),
            ("--arnoldi-eigenpairs", self.arnoldi_eigenpairs.is_some()),
        ]
    }

    /// The solver, refusing another solver's flags; the default is `exact` on features and
    /// `ekfac` (Kronfluence's default strategy) on factor files.
    fn solver(&self, seed: Option<u64>, factors: bool) -> Result<Solver> {
        let curvature = self.curvature.map(Curvature::from);
        let default = SolverArg::from_str(Solver::default_name(factors, curvature), false)
            .map_err(|e| anyhow::anyhow!(e))?;
        let chosen = self.solver.unwrap_or(default);
        let prefix = match chosen {
            SolverArg::Exact => "--exact-",
            SolverArg::Cg => "--cg-",
            SolverArg::Lissa => "--lissa-",
            SolverArg::Arnoldi => "--arnoldi-",
            SolverArg::Kfac | SolverArg::Ekfac => "--kfac-",
        };
        if let Some((flag, _)) = self
            .knobs()
            .iter()
            .find(|(f, set)| *set && !f.starts_with(prefix))
        {
            bail!("{flag} is not a flag of --solver {}", chosen.name());
        }
        ensure!(
            self.lissa_repeats.is_none_or(|r| r == 1) || self.lissa_batch.is_some(),
            "--lissa-repeats: repeats average minibatch estimates, and full-batch ones are \
             identical; give --lissa-batch too"
        );
        let draws = chosen == SolverArg::Arnoldi || self.lissa_batch.is_some();
        if seed.is_some() && !draws {
            bail!(
                "--seed: --solver {} draws nothing at random (arnoldi and minibatch lissa do)",
                chosen.name()
            );
        }
        Ok(match chosen {
            SolverArg::Exact => Solver::Exact,
            SolverArg::Cg => Solver::Cg {
                tolerance: self.cg_tolerance.unwrap_or(Solver::DEFAULT_CG_TOLERANCE),
                max_iterations: self
                    .cg_max_iterations
                    .unwrap_or(Solver::DEFAULT_CG_MAX_ITERATIONS),
            },
            SolverArg::Lissa => Solver::Lissa {
                depth: self.lissa_depth.unwrap_or(Solver::DEFAULT_LISSA_DEPTH),
                scale: self.lissa_scale,
                batch: self.lissa_batch,
                repeats: self.lissa_repeats.unwrap_or(1),
                seed: seed.unwrap_or(0),
            },
            SolverArg::Arnoldi => Solver::Arnoldi {
                dimension: self
                    .arnoldi_dim
                    .unwrap_or(Solver::DEFAULT_ARNOLDI_DIMENSION),
                eigenpairs: self
                    .arnoldi_eigenpairs
                    .unwrap_or(Solver::DEFAULT_ARNOLDI_EIGENPAIRS),
                seed: seed.unwrap_or(0),
            },
            SolverArg::Kfac => Solver::Kfac,
            SolverArg::Ekfac => Solver::Ekfac,
        })
    }
}

/// A count that must be at least 1 (iterations, depths, batch sizes, repeats, dimensions).
fn parse_positive(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(0) => Err("expected at least 1, found 0".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "expected a whole number of at least 1, found {v:?}"
        )),
    }
}

/// `--damping`: a number or `heuristic`.
fn parse_damping(v: &str) -> Result<Damping, String> {
    if v == "heuristic" {
        return Ok(Damping::Heuristic);
    }
    v.parse()
        .map(Damping::Value)
        .map_err(|_| format!("expected a number or `heuristic`, found {v:?}"))
}

/// `--convention`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConventionArg {
    /// The mean Hessian (Kronfluence).
    Kronfluence,
    /// The summed Hessian (Captum).
    Captum,
}

/// `--curvature`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CurvatureArg {
    /// The empirical Fisher of the factor files' gradients.
    Fisher,
    /// The true Fisher, from the files' `L.g_sampled`.
    TrueFisher,
    /// The Gauss-Newton matrix of the infl-nn MLP beside the factor files.
    GaussNewton,
    /// The exact Hessian of that MLP.
    Hessian,
}

impl From<CurvatureArg> for Curvature {
    fn from(c: CurvatureArg) -> Self {
        match c {
            CurvatureArg::Fisher => Curvature::Fisher,
            CurvatureArg::TrueFisher => Curvature::TrueFisher,
            CurvatureArg::GaussNewton => Curvature::GaussNewton,
            CurvatureArg::Hessian => Curvature::Hessian,
        }
    }
}

/// `--solver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SolverArg {
    /// Assemble the Hessian, Cholesky in f64.
    Exact,
    /// Conjugate gradients.
    Cg,
    /// LiSSA.
    Lissa,
    /// Arnoldi.
    Arnoldi,
    /// K-FAC over factor files (--factors), Kronfluence's numerics.
    Kfac,
    /// EK-FAC over factor files (--factors), Kronfluence's numerics.
    Ekfac,
}

impl SolverArg {
    fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Cg => "cg",
            Self::Lissa => "lissa",
            Self::Arnoldi => "arnoldi",
            Self::Kfac => "kfac",
            Self::Ekfac => "ekfac",
        }
    }
}

/// Where a run is: a layout of checkpoints with features, or a factor folder.
pub(crate) enum Source {
    Features { layout: RunLayout, layer: String },
    Factors(FactorRun),
}

impl Source {
    /// What outputs must leave alone.
    pub(crate) fn inputs(&self) -> Inputs {
        match self {
            Source::Features { layout, .. } => Inputs::of_run(layout),
            Source::Factors(run) => Inputs::of_factors(run),
        }
    }
}

impl Input {
    /// The run's source, checked against what `--method` reads.
    pub(crate) fn source(&self) -> Result<Source> {
        let input = estimators::find(&self.method)?.input;
        match (input, &self.factors) {
            (Reads::Factors | Reads::Either, Some(dir)) => {
                self.check_factor_flags()?;
                Ok(Source::Factors(FactorRun::discover(dir)?))
            }
            (Reads::Factors, None) => bail!(
                "--method {} reads factor files: give --factors DIR (see infl.torch, python/export_factors.py)",
                self.method
            ),
            (Reads::Features, Some(_)) => bail!(
                "--method {} reads checkpoints and features: give --run DIR or --manifest FILE \
                 (--factors is for --method tracincp)",
                self.method
            ),
            (Reads::Features | Reads::Either, None) => {
                ensure!(
                    self.layers.is_none(),
                    "--layers is for --factors; with --run or --manifest give --layer"
                );
                let Some(layer) = self.layer.clone() else {
                    bail!("--layer: give the final linear layer's name in the state dict");
                };
                let layout = match (&self.run, &self.manifest) {
                    (Some(dir), _) => RunLayout::discover(dir)?,
                    (None, Some(m)) => RunLayout::from_manifest(m)?,
                    (None, None) => bail!("give --run DIR or --manifest FILE"),
                };
                Ok(Source::Features { layout, layer })
            }
        }
    }

    /// Flags that say nothing about factor files are refused rather than ignored: the
    /// files hold the loss's gradients already, and say per layer whether a bias is traced.
    fn check_factor_flags(&self) -> Result<()> {
        ensure!(
            self.layer.is_none(),
            "--layer names the final layer of a --run; with --factors give --layers"
        );
        if let Some(layers) = &self.layers {
            ensure!(
                !layers.is_empty() && layers.iter().all(|l| !l.trim().is_empty()),
                "--layers: expected layer names separated by commas, found an empty name in \
                 {:?}",
                layers.join(",")
            );
        }
        ensure!(
            self.loss == LossArg::Ce,
            "--loss: factor files hold the gradients of the loss they were exported with \
             (python/export_factors.py --loss); drop --loss"
        );
        ensure!(
            self.reduction == ReductionArg::Sum,
            "--reduction: factor files hold per-example gradients of the loss they were \
             exported with; drop --reduction"
        );
        ensure!(
            !self.include_bias,
            "--include-bias: factor files say per layer whether its bias is traced (metadata \
             `L.bias`); drop --include-bias"
        );
        Ok(())
    }

    /// The defaults of every flag, for `method` (as if only `--method` were given).
    pub(crate) fn for_method(method: &str) -> Self {
        Self {
            run: None,
            manifest: None,
            factors: None,
            layer: None,
            layers: None,
            method: method.to_string(),
            loss: LossArg::Ce,
            reduction: ReductionArg::Sum,
            include_bias: false,
            learning_rate: 1.0,
            projection_dim: None,
            seed: None,
            solving: SolverArgs::default(),
        }
    }

    /// Sets the flags from an estimator's recorded settings (`Estimator::settings`), as
    /// `setting(key)` gives them.
    pub(crate) fn apply_settings<'a>(
        &mut self,
        setting: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<()> {
        let number = |key: &str, v: &str| -> Result<u64> {
            v.parse()
                .with_context(|| format!("setting {key}: expected a number, found {v:?}"))
        };
        if let Some(v) = setting("loss") {
            self.loss = LossArg::from_str(v, true)
                .map_err(|_| anyhow::anyhow!("setting loss: unknown {v:?}"))?;
        }
        if let Some(v) = setting("reduction") {
            self.reduction = ReductionArg::from_str(v, true)
                .map_err(|_| anyhow::anyhow!("setting reduction: unknown {v:?}"))?;
        }
        if let Some(v) = setting("include_bias") {
            self.include_bias = v == "true";
        }
        if let Some(v) = setting("projection_dim").filter(|v| *v != "none") {
            self.projection_dim = Some(number("projection_dim", v)?);
        }
        if let Some(v) = setting("seed") {
            self.seed = Some(number("seed", v)?);
        }
        if let Some(v) = setting("solver") {
            self.solving.solver = Some(
                SolverArg::from_str(v, true)
                    .map_err(|_| anyhow::anyhow!("setting solver: unknown {v:?}"))?,
            );
        }
        if let Some(v) = setting("damping") {
            self.solving.damping =
                Some(parse_damping(v).map_err(|why| anyhow::anyhow!("setting damping: {why}"))?);
        }
        if let Some(v) = setting("convention") {
            self.solving.convention = Some(
                ConventionArg::from_str(v, true)
                    .map_err(|_| anyhow::anyhow!("setting convention: unknown {v:?}"))?,
            );
        }
        Ok(())
    }

    /// The estimator these flags describe (with a saved curvature when `--hessian` is
    /// given).
    pub(crate) fn estimator(&self) -> Result<Box<dyn Estimator>> {
        let options = self.options()?;
        if let Some(path) = &self.solving.hessian {
            // Only influence functions take a saved curvature (`options` checked that).
            let influence = infl::InfluenceFunction::from(&options).with_saved_curvature(path)?;
            return Ok(Box::new(influence));
        }
        Ok(estimators::build(&self.method, &options)?)
    }

    /// The common options, after refusing flags that do not apply to the method.
    pub(crate) fn options(&self) -> Result<Options> {
        if let Err(why) = infl::io::check_learning_rate(self.learning_rate) {
            bail!("--learning-rate: {why}");
        }
        let influence = infl::InfluenceFunction::default();
        let solver = if self.method == influence.name() {
            self.solving.solver(self.seed, self.factors.is_some())?
        } else {
            ensure!(
                !self.solving.any(),
                "--solver, --damping and the solvers' flags are for --method {}",
                influence.name()
            );
            Solver::Exact
        };
        let rand_proj = infl::TracInCPFastRandProj::default();
        if self.method != rand_proj.name() {
            let seeded = self.seed.is_some() && self.method != influence.name();
            ensure!(
                self.projection_dim.is_none() && !seeded,
                "--projection-dim and --seed are for --method {}",
                rand_proj.name()
            );
        } else {
            ensure!(
                !self.include_bias,
                "--include-bias: {} leaves the bias out (as Captum)",
                rand_proj.name()
            );
        }
        Ok(Options {
            loss: match self.loss {
                LossArg::Ce => Loss::CrossEntropy,
                LossArg::Mse => Loss::MeanSquaredError,
            },
            reduction: match self.reduction {
                ReductionArg::Sum => Reduction::Sum,
                ReductionArg::Mean => Reduction::Mean,
            },
            bias: if self.include_bias {
                Bias::Included
            } else {
                Bias::Excluded
            },
            default_learning_rate: self.learning_rate,
            projection_dim: self.projection_dim.map(|p| p as usize),
            seed: self.seed.unwrap_or(0),
            solver,
            convention: match self.solving.convention {
                None | Some(ConventionArg::Kronfluence) => Convention::Kronfluence,
                Some(ConventionArg::Captum) => Convention::Captum,
            },
            damping: self.solving.damping,
            curvature: self.solving.curvature.map(Curvature::from),
        })
    }
}

/// A run loaded for one estimator on one backend.
pub struct Loaded {
    pub backend: Box<dyn Backend>,
    pub estimator: Box<dyn Estimator>,
    pub run: Run,
    /// The layer (features) or layers (factors), for output metadata.
    pub layer: String,
    /// The shard's rows when only a shard was loaded.
    pub part: Option<ShardRows>,
}

impl Loaded {
    /// Where results come from, for output metadata and summaries; a part's metadata
    /// records its shard and the run's identity (see `infl::shard`).
    fn provenance(&self, prepared: &infl::Prepared) -> Provenance<'_> {
        let part = self.part.as_ref().map(|p| {
            let run = infl::shard::run_identity(&self.run, p.examples, &prepared.learning_rates);
            infl::shard::part_metadata(p.shard, &p.rows, p.examples, run)
        });
        Provenance {
            estimator: &*self.estimator,
            layer: &self.layer,
            first_row: self.part.as_ref().map_or(0, |p| p.rows.start),
            part,
        }
    }
}

/// How to compute: backend choice and CPU threads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compute {
    pub backend: BackendArg,
    pub threads: Option<usize>,
}

/// The run's source and the publication of a subcommand's outputs, both checked before
/// anything is loaded, computed or written.
struct Plan {
    source: Source,
    publication: Publication,
}

impl Plan {
    fn new<P: AsRef<Path>>(input: &Input, outputs: impl IntoIterator<Item = P>) -> Result<Self> {
        let source = input.source()?;
        let inputs = (source.inputs()).and_files(input.solving.hessian.iter().cloned());
        let publication = Publication::plan(&inputs, outputs)?;
        Ok(Self {
            source,
            publication,
        })
    }
}

/// Publishes a subcommand's staged outputs. `INFL_HOLD_BEFORE_PUBLISH_MS` (for the tests
/// of interrupt handling only) waits that long first, with every file staged.
pub(crate) fn publish(publication: Publication) -> Result<()> {
    if let Some(ms) = std::env::var("INFL_HOLD_BEFORE_PUBLISH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    Ok(publication.publish()?)
}

pub(crate) fn load(
    input: &Input,
    source: &Source,
    compute: Compute,
    progress: &Bar,
    splits: Splits,
) -> Result<Loaded> {
    load_shard(input, source, compute, progress, splits, None)
}

/// [`load`] of the training rows of `shard` only (all when `None`).
fn load_shard(
    input: &Input,
    source: &Source,
    compute: Compute,
    progress: &Bar,
    splits: Splits,
    shard: Option<Shard>,
) -> Result<Loaded> {
    check_splits(source, splits)?;
    let estimator = input.estimator()?;
    let backend = infl::select_backend(compute.backend.into(), compute.threads)?;
    if !progress.quiet() {
        eprintln!("backend: {}", backend.name());
    }
    let (run, layer, part) = read_run_shard(input, source, progress, splits, shard)?;
    let name = estimator.name();
    let estimator = infl::shard::for_part(estimator, part.as_ref()).with_context(|| {
        let shard = part.as_ref().map_or(String::new(), |p| p.shard.to_string());
        format!("--shard {shard} with --method {name}")
    })?;
    if let Some(plan) = estimator.memory(&run) {
        crate::resources::check_plan(&plan, progress.quiet())?;
    }
    Ok(Loaded {
        backend,
        estimator,
        run,
        layer,
        part,
    })
}

/// A test set must be there when `splits` asks for it.
fn check_splits(source: &Source, splits: Splits) -> Result<()> {
    let (has_test, origin) = match source {
        Source::Features { layout, .. } => (layout.has_test(), &layout.source),
        Source::Factors(run) => (run.entries.iter().all(|e| e.test.is_some()), &run.source),
    };
    if splits == Splits::TrainAndTest && !has_test {
        bail!(
            "{}: no test examples: this subcommand needs NAME.test.safetensors (or `test` in the \
             manifest) for every checkpoint",
            origin.display()
        );
    }
    Ok(())
}

/// Reads the run of `source` (the splits asked for) with the layer names for output
/// metadata: the layer (features) or the layers (factors), comma-separated.
pub(crate) fn read_run(
    input: &Input,
    source: &Source,
    progress: &Bar,
    splits: Splits,
) -> Result<(Run, String)> {
    let (run, layer, _) = read_run_shard(input, source, progress, splits, None)?;
    Ok((run, layer))
}

/// [`read_run`] of the training rows of `shard` (all when `None`), with those rows. With
/// features only the shard's rows are read; factor files are read whole and cut.
fn read_run_shard(
    input: &Input,
    source: &Source,
    progress: &Bar,
    splits: Splits,
    shard: Option<Shard>,
) -> Result<(Run, String, Option<ShardRows>)> {
    check_splits(source, splits)?;
    let part = match (shard, source) {
        (None, _) => None,
        (Some(shard), Source::Features { layout, .. }) => {
            Some(ShardRows::of_layout(shard, layout)?)
        }
        (Some(_), Source::Factors(_)) => None, // cut after reading, below
    };
    let entries = match source {
        Source::Features { layout, .. } => layout.entries.len(),
        Source::Factors(run) => run.entries.len(),
    };
    progress.start("loading", entries as u64);
    let read = match source {
        Source::Features { layout, layer } => {
            let mut run: Vec<CheckpointData> = Vec::with_capacity(entries);
            let rows = part.as_ref().map(|p| p.rows.clone());
            for entry in &layout.entries {
                run.push(infl::load_checkpoint_rows(
                    entry,
                    layer,
                    splits,
                    rows.clone(),
                )?);
                progress.advance(1);
            }
            (Run::Features(run), layer.clone())
        }
        Source::Factors(factors) => {
            let run = infl::load_factor_run(factors, input.layers.as_deref(), splits)?;
            progress.advance(entries as u64);
            let layers = run.first().map_or(Vec::new(), |c| {
                c.train.layers.iter().map(|l| l.name.clone()).collect()
            });
            (Run::Factors(run), layers.join(","))
        }
    };
    progress.finish();
    let (run, layer) = read;
    match (shard, part) {
        (Some(shard), None) => {
            let (cut, part) = infl::shard::cut(&run, shard)?;
            Ok((cut, layer, Some(part)))
        }
        (_, part) => Ok((run, layer, part)),
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(t) = cli.threads {
        infl::check_threads(t).context("--threads")?;
    }
    let bar = Bar::new(cli.quiet);
    let compute = Compute {
        backend: cli.backend,
        threads: cli.threads,
    };
    match cli.command {
        Command::Demo(args) => crate::demo::run(&args, cli.threads)?,
        Command::Eval { command } => crate::eval::run(command, cli.threads, &bar)?,
        Command::Index { command } => crate::index::run(command, compute, &bar)?,
        Command::Scores {
            input,
            out,
            sharding,
        } => {
            let mut plan = Plan::new(&input, [&out])?;
            let l = load_shard(
                &input,
                &plan.source,
                compute,
                &bar,
                Splits::TrainAndTest,
                sharding.shard,
            )?;
            crate::resources::check_memory_for_scores(&l.run)?;
            let scores = l.estimator.scores(&*l.backend, &l.run, &bar)?;
            let provenance = l.provenance(&scores.prepared);
            output::stage_scores(&mut plan.publication, &out, &provenance, &scores)?;
            publish(plan.publication)?;
            output::print_scores_summary(&out, &provenance, &scores);
        }
        Command::Topk {
            input,
            k,
            out,
            json,
            no_prune,
            sharding,
            plot,
        } => {
            ensure!(
                json.is_none() || sharding.shard.is_none(),
                "--json: a shard's lists are partial; `infl merge --json FILE` writes the \
                 merged lists"
            );
            plot.check(sharding.shard)?;
            let mut plan = Plan::new(&input, std::iter::once(&out).chain(&json))?;
            if let Some(dir) = &plot.plot {
                plan.publication.plan_folder(dir, crate::topk_plot::FILES)?;
            }
            let l = load_shard(
                &input,
                &plan.source,
                compute,
                &bar,
                Splits::TrainAndTest,
                sharding.shard,
            )?;
            let images = (plot.plot.as_ref())
                .map(|_| crate::topk_plot::RunImages::read(&plan.source, &l.run))
                .transpose()?;
            let pruning = if no_prune {
                Pruning::Off
            } else {
                Pruning::Auto
            };
            // A shard shorter than k lists all of its rows; the merge keeps k.
            let rows = l.part.as_ref().map_or(k, |p| p.rows.len());
            let counted =
                l.estimator
                    .topk_counted(&*l.backend, &l.run, k.min(rows.max(1)), pruning, &bar)?;
            let pairs = counted.values.pairs;
            let mut top = Attributed {
                prepared: counted.prepared,
                values: counted.values.rows,
            };
            top.values.k = k;
            let provenance = l.provenance(&top.prepared);
            output::stage_topk(
                &mut plan.publication,
                &out,
                json.as_deref(),
                &provenance,
                &top,
            )?;
            let drawn = match (&plot.plot, &images) {
                (Some(dir), Some(images)) => {
                    let figures = crate::topk_plot::Figures {
                        label: l.estimator.label(),
                        top: &top,
                        shown: plot.top(k),
                    };
                    let n = crate::topk_plot::stage(
                        &mut plan.publication,
                        dir,
                        images,
                        &figures,
                        &bar,
                    )?;
                    Some((dir, n))
                }
                _ => None,
            };
            publish(plan.publication)?;
            output::print_topk_summary(&out, &provenance, &top, pairs);
            if let Some((dir, n)) = drawn {
                println!("drew {n} PNG(s) into {}", dir.display());
            }
        }
        Command::Merge(args) => crate::merge::run(&args)?,
        Command::Fit { mut input, out } => {
            let influence = infl::InfluenceFunction::default();
            ensure!(
                input.method == influence.name() || input.method == estimators::REGISTRY[0].name,
                "--method {}: `infl fit` fits the curvature of --method {}",
                input.method,
                influence.name()
            );
            ensure!(
                input.solving.hessian.is_none(),
                "--hessian: `infl fit` writes a curvature (--out), it does not read one"
            );
            input.method = influence.name().to_string();
            let mut plan = Plan::new(&input, [&out])?;
            let l = load(&input, &plan.source, compute, &bar, Splits::TrainOnly)?;
            let fit = infl::InfluenceFunction::from(&input.options()?);
            let saved = fit.fit_curvature(&*l.backend, &l.run, &bar)?;
            let (tensors, metadata) = saved.tensors();
            plan.publication
                .stage_safetensors(&out, tensors, metadata)?;
            publish(plan.publication)?;
            output::print_fit_summary(&saved, &out);
        }
        Command::SelfInfluence {
            input,
            out_dir,
            top,
            sharding: ShardArg { shard: Some(shard) },
        } => {
            ensure!(
                top.is_none(),
                "--top: a shard cannot rank the whole training set; give --top to `infl merge`"
            );
            let part = output::self_influence_part(&out_dir, shard);
            let mut plan = Plan::new(&input, [&part])?;
            let l = load_shard(
                &input,
                &plan.source,
                compute,
                &bar,
                Splits::TrainOnly,
                Some(shard),
            )?;
            let self_inf = l
                .estimator
                .self_influence_with_progress(&*l.backend, &l.run, &bar)?;
            let provenance = l.provenance(&self_inf.prepared);
            output::stage_self_influence_part(
                &mut plan.publication,
                &part,
                &provenance,
                &self_inf,
            )?;
            publish(plan.publication)?;
            println!(
                "{} self-influence of shard {shard} (training rows {:?}), wrote {}",
                provenance.estimator.label(),
                l.part.as_ref().map(|p| p.rows.clone()).unwrap_or_default(),
                part.display()
            );
        }
        Command::SelfInfluence {
            input,
            out_dir,
            top,
            sharding: ShardArg { shard: None },
        } => {
            let mut plan = Plan::new(&input, output::self_influence_files(&out_dir))?;
            let l = load(&input, &plan.source, compute, &bar, Splits::TrainOnly)?;
            let self_inf = l
                .estimator
                .self_influence_with_progress(&*l.backend, &l.run, &bar)?;
            let n = self_inf.values.len();
            let top = match top.unwrap_or(DEFAULT_TOP) {
                0 => n,
                top => top.min(n),
            };
            let suspects = infl::rank_suspects(&self_inf.values, &self_inf.prepared.train, top);
            let provenance = l.provenance(&self_inf.prepared);
            output::stage_self_influence(
                &mut plan.publication,
                &out_dir,
                &provenance,
                &self_inf,
                &suspects,
            )?;
            publish(plan.publication)?;
            output::print_self_summary(&out_dir, &provenance, &self_inf, &suspects);
        }
    }
    Ok(())
}
