//! Step 6, write: `OUT/results.json` (atomically), then the list of files on stdout.

use std::collections::BTreeMap;

use anyhow::Result;
use infl::eval::MethodResult;
use serde::Serialize;

use super::DemoArgs;
use super::evaluate::{Evaluation, Explanation, ForgettingSummary, SuspectRecord};
use super::load::Loaded;
use super::plot::Figures;
use super::train::{EpochRecord, Trained};

/// Everything the demo reports.
pub struct Report<'a> {
    pub args: &'a DemoArgs,
    pub loaded: &'a Loaded,
    pub trained: &'a Trained,
    pub evaluation: &'a Evaluation,
    pub figures: &'a Figures,
    /// Seconds per step (`results.json`'s `seconds`).
    pub seconds: &'a BTreeMap<String, f64>,
}

/// `results.json`.
#[derive(Serialize, Debug)]
struct Results<'a> {
    data: &'a str,
    n_train: usize,
    n_test: usize,
    noise_rate: f64,
    n_mislabelled: usize,
    seed: u64,
    model: Vec<usize>,
    config: TrainSettings,
    training: &'a [EpochRecord],
    methods: Vec<&'a MethodResult>,
    forgetting: &'a ForgettingSummary,
    top_suspects: &'a BTreeMap<String, Vec<SuspectRecord>>,
    explanations: &'a [Explanation],
    files: &'a [String],
    plots_skipped: Option<&'a str>,
    seconds: &'a BTreeMap<String, f64>,
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

/// Writes `results.json` and says which files the demo wrote.
pub fn write(report: &Report<'_>) -> Result<()> {
    let Report {
        args,
        loaded,
        trained,
        evaluation,
        figures,
        seconds,
    } = *report;
    let files: Vec<String> = ["results.json", "forgetting.safetensors", "run/"]
        .into_iter()
        .map(String::from)
        .chain(figures.drawn.iter().cloned())
        .collect();
    let results = Results {
        data: &loaded.data.source,
        n_train: loaded.n_train(),
        n_test: loaded.n_test(),
        noise_rate: args.noise,
        n_mislabelled: loaded.noisy.count(),
        seed: args.seed,
        model: trained.model.sizes(),
        config: TrainSettings {
            epochs: args.epochs,
            batch_size: args.batch_size,
            learning_rate: args.lr,
            momentum: args.momentum,
            weight_decay: args.weight_decay,
            threads: rayon::current_num_threads(),
        },
        training: &trained.epochs,
        methods: evaluation.methods().map(|m| &m.result).collect(),
        forgetting: &evaluation.forgetting,
        top_suspects: &evaluation.top_suspects,
        explanations: &evaluation.explanations,
        files: &files,
        plots_skipped: figures.skipped.as_deref(),
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
