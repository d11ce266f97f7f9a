//! `infl index build` and `infl index query`: a persistent nearest-neighbour index of a
//! run's training examples (see `infl::index`).
//!
//! `build` reads a run as the scoring subcommands do (same `--run`/`--manifest`/`--factors`
//! flags and `--method`), embeds the training examples and publishes the index folder
//! all-or-nothing. `query` rebuilds the estimator *from the index's recipe* (method and
//! settings are never given twice), embeds the test files of the query run (loaded as the
//! examples to embed), and refuses a query whose checkpoints, learning rates, layers or
//! shapes differ from the index's. A projected index re-ranks a shortlist with exact
//! scores by default (`--rescore exact`, `infl::index::Rescore`): the training files are
//! then opened (memory-mapped) but only the shortlisted rows are read, so the time still
//! grows with queries × shortlist, not with the training set.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use infl::index::{BuildOptions, ExactRun, Index, Queries, Recipe, Rescore, Search, Training};
use infl::io::{FactorRun, Publication, RunLayout};
use infl::{Attributed, Prepared, Progress, SplitInfo, Splits, TermSet, estimators};

use crate::cli::{Compute, Input, Source, load, publish, read_run};
use crate::output::{self, Provenance};
use crate::progress::Bar;

/// `infl index ...`.
#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Embed a run's training examples and write an index folder (embeddings.safetensors
    /// memory-mapped on load, ann.usearch an inner-product HNSW graph).
    Build {
        #[command(flatten)]
        input: Box<Input>,
        /// The index folder to write.
        #[arg(long)]
        index: PathBuf,
        #[command(flatten)]
        options: BuildArgs,
    },
    /// Top-k proponents and opponents of a run's test examples from an index: approximate
    /// candidates rescored exactly (default), or --exact.
    Query {
        /// The index folder.
        #[arg(long)]
        index: PathBuf,
        /// Run folder whose NAME.test.safetensors files hold the queries (the checkpoints
        /// must be the index's).
        #[arg(long, group = "query_source")]
        run: Option<PathBuf>,
        /// JSON manifest instead of --run.
        #[arg(long, group = "query_source")]
        manifest: Option<PathBuf>,
        /// Factor folder instead of --run (for an index built from factors).
        #[arg(long, group = "query_source")]
        factors: Option<PathBuf>,
        /// How many proponents and opponents per query.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// Score every training example (the reference) instead of searching the graph.
        #[arg(long)]
        exact: bool,
        /// Rows the graph proposes per query (and per negated query), rescored exactly.
        #[arg(long, default_value_t = Search::DEFAULT_CANDIDATES)]
        candidates: usize,
        /// The graph search's breadth (usearch's ef).
        #[arg(long, default_value_t = Search::DEFAULT_EXPANSION)]
        expansion: usize,
        /// How the best rows of the search are re-ranked: `exact` rescores a shortlist with
        /// the unprojected estimator (reads the run's training files; the default for a
        /// projected index, whose own scores miss most of the exact top-k), `embeddings`
        /// keeps the index's scores (the default otherwise, where they are exact).
        #[arg(long, value_enum)]
        rescore: Option<RescoreArg>,
        /// Proponents and opponents per query rescored by `--rescore exact`.
        #[arg(long, default_value_t = Rescore::DEFAULT_SHORTLIST)]
        shortlist: usize,
        /// Output file (safetensors).
        #[arg(long, short, default_value = "topk.safetensors")]
        out: PathBuf,
        /// Also write the lists as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// `--rescore`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RescoreArg {
    /// Exact scores of a shortlist (the unprojected estimator on the run's training files).
    Exact,
    /// The index's own scores.
    Embeddings,
}

/// The index's graph settings.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Graph edges per node (HNSW's M).
    #[arg(long, default_value_t = BuildOptions::default().connectivity)]
    connectivity: usize,
    /// Candidates explored when adding a row (ef_construction).
    #[arg(long, default_value_t = BuildOptions::default().expansion_add)]
    expansion_add: usize,
}

/// Runs `infl index ...`.
pub fn run(command: IndexCommand, compute: Compute, bar: &Bar) -> Result<()> {
    match command {
        IndexCommand::Build {
            input,
            index,
            options,
        } => build(&input, index, &options, compute, bar),
        IndexCommand::Query {
            index,
            run,
            manifest,
            factors,
            k,
            exact,
            candidates,
            expansion,
            rescore,
            shortlist,
            out,
            json,
        } => {
            let search = if exact {
                Search::Exact
            } else {
                Search::Approximate {
                    candidates,
                    expansion,
                }
            };
            let source = QuerySource {
                run,
                manifest,
                factors,
            };
            let ask = Ask {
                k,
                search,
                rescore,
                shortlist,
            };
            query(&index, &source, &ask, &out, json, compute, bar)
        }
    }
}

fn build(input: &Input, dir: PathBuf, args: &BuildArgs, compute: Compute, bar: &Bar) -> Result<()> {
    let source = input.source()?;
    let options = BuildOptions {
        connectivity: args.connectivity,
        expansion_add: args.expansion_add,
        ..BuildOptions::default()
    };
    // Planned before any work, as every output (Index::build plans again and publishes).
    Publication::plan(&source.inputs(), index_files(&dir))?;
    let registration = estimators::find(&input.method)?;
    anyhow::ensure!(
        registration.indexing == estimators::Indexing::Embeddings,
        "--method {}: an index embeds training examples alone, and this method's queries \
         depend on a fit over the training set (influence functions: the Hessian); index \
         this run with a TracIn method",
        registration.name
    );
    let loaded = load(input, &source, compute, bar, Splits::TrainOnly)?;
    let prepared = loaded
        .estimator
        .prepare(&*loaded.backend, &loaded.run, bar)?;
    let layers: Vec<String> = loaded.layer.split(',').map(String::from).collect();
    let recipe = Recipe::of(&*loaded.estimator, &prepared, &layers);
    bar.start("index", prepared.train.ids.len() as u64);
    let index = Index::build(
        Training::from(&prepared),
        &recipe,
        &dir,
        &source.inputs(),
        &options,
    )?;
    bar.finish();
    println!(
        "{} index of {} training examples x {} checkpoints: width {}, wrote {}",
        loaded.estimator.label(),
        index.len(),
        recipe.checkpoints.len(),
        index.width(),
        dir.display()
    );
    Ok(())
}

/// The files an index folder holds.
fn index_files(dir: &std::path::Path) -> [PathBuf; 2] {
    [
        dir.join(infl::index::EMBEDDINGS_FILE),
        dir.join(infl::index::ANN_FILE),
    ]
}

/// Where the queries are.
struct QuerySource {
    run: Option<PathBuf>,
    manifest: Option<PathBuf>,
    factors: Option<PathBuf>,
}

/// What a query asks for.
struct Ask {
    k: usize,
    search: Search,
    rescore: Option<RescoreArg>,
    shortlist: usize,
}

fn query(
    dir: &std::path::Path,
    source: &QuerySource,
    ask: &Ask,
    out: &std::path::Path,
    json: Option<PathBuf>,
    compute: Compute,
    bar: &Bar,
) -> Result<()> {
    let index = Index::open(dir)?;
    let input = input_of(index.recipe(), source)?;
    let full = input.source()?;
    let queries = as_training(input.source()?)?;
    let mut publication = Publication::plan(
        &full.inputs().and_files(index_files(dir)),
        std::iter::once(out).chain(json.as_deref()),
    )?;
    let loaded = load(&input, &queries, compute, bar, Splits::TrainOnly)?;
    let exact = match ask.rescore {
        Some(RescoreArg::Embeddings) => None,
        Some(RescoreArg::Exact) | None => loaded.estimator.unprojected(),
    };
    let prepared = loaded
        .estimator
        .prepare(&*loaded.backend, &loaded.run, bar)?;
    let layers: Vec<String> = loaded.layer.split(',').map(String::from).collect();
    let recipe = Recipe::of(&*loaded.estimator, &prepared, &layers);
    let embedded = Queries {
        recipe,
        embeddings: infl::index::embeddings(
            &prepared.set,
            infl::index::Rows::Train(0..prepared.set.n_train()),
        )?,
    };
    let backend = &*loaded.backend;
    let top = match &exact {
        None => index.query(backend, &embedded, ask.k, ask.search)?,
        Some(exact) => {
            let (run, _) = read_run(&input, &full, bar, Splits::TrainAndTest)?;
            check_rows(&index, &run, source)?;
            let exact_run = ExactRun {
                estimator: &**exact,
                backend,
                run: &run,
            };
            let rescore = Rescore {
                shortlist: ask.shortlist,
                exact: &exact_run,
            };
            index.query_rescored(backend, &embedded, ask.k, ask.search, rescore)?
        }
    };
    let result = Attributed {
        prepared: Prepared {
            set: TermSet::default(),
            learning_rates: prepared.learning_rates.clone(),
            checkpoints: prepared.checkpoints.clone(),
            train: SplitInfo {
                ids: index.ids().to_vec(),
                labels: None,
                predicted: Vec::new(),
            },
            test: Some(prepared.train.clone()),
        },
        values: top,
    };
    let provenance = Provenance {
        estimator: &*loaded.estimator,
        layer: &loaded.layer,
        first_row: 0,
        part: None,
    };
    output::stage_topk(&mut publication, out, json.as_deref(), &provenance, &result)?;
    publish(publication)?;
    let searched = match ask.search {
        Search::Exact => "exact search".to_string(),
        Search::Approximate { candidates, .. } => format!("approximate: {candidates} candidates"),
    };
    let ranked = match &exact {
        None => "index scores".to_string(),
        Some(e) => format!("best {} rescored with {}", ask.shortlist, e.label()),
    };
    println!(
        "{} top-{} of {} queries from the index {} ({} training examples; {searched}, {ranked})",
        loaded.estimator.label(),
        ask.k,
        result.values.proponents.len(),
        dir.display(),
        index.len(),
    );
    println!("wrote {}", out.display());
    Ok(())
}

/// Exact rescoring reads the query run's training rows as the index's rows: they must be
/// the examples the index was built from, in the same order.
fn check_rows(index: &Index, run: &infl::Run, source: &QuerySource) -> Result<()> {
    let ids = run.train_ids();
    if ids != index.ids() {
        let first = ids.iter().zip(index.ids()).position(|(a, b)| a != b);
        bail!(
            "{}: its {} training examples are not the {} the index {} was built from ({}); \
             --rescore exact reads them, so query with the run the index was built from, or \
             pass --rescore embeddings",
            dir_hint(source),
            ids.len(),
            index.len(),
            index.dir().display(),
            match first {
                Some(i) => format!("row {i}: id {} vs {}", ids[i], index.ids()[i]),
                None => "different counts".to_string(),
            }
        );
    }
    Ok(())
}

/// The scoring input that reproduces the index's recipe on the query's files.
fn input_of(recipe: &Recipe, source: &QuerySource) -> Result<Input> {
    let setting = |key: &str| {
        recipe
            .settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let registration = estimators::find(&recipe.method)
        .with_context(|| format!("the index was built with method {:?}", recipe.method))?;
    let mut input = Input::for_method(registration.name);
    input.run = source.run.clone();
    input.manifest = source.manifest.clone();
    input.factors = source.factors.clone();
    match registration.input {
        estimators::Input::Features | estimators::Input::Either => {
            input.layer = recipe.layers.first().cloned();
        }
        estimators::Input::Factors => input.layers = Some(recipe.layers.clone()),
    }
    input.apply_settings(setting).with_context(|| {
        format!(
            "{}: the index's settings of {}",
            dir_hint(source),
            recipe.method
        )
    })?;
    Ok(input)
}

/// The query run with its test files in the place of the training files: they are the
/// examples to embed, and the training files are never opened.
fn as_training(source: Source) -> Result<Source> {
    let missing = |origin: &std::path::Path| {
        anyhow::anyhow!(
            "{}: no test examples: a query needs NAME.test.safetensors for every checkpoint",
            origin.display()
        )
    };
    Ok(match source {
        Source::Features { layout, layer } => {
            let entries = (layout.entries.iter())
                .map(|e| {
                    let test = e.test.clone().ok_or_else(|| missing(&layout.source))?;
                    Ok(infl::io::RunEntry {
                        train: test,
                        test: None,
                        ..e.clone()
                    })
                })
                .collect::<Result<_>>()?;
            Source::Features {
                layout: RunLayout { entries, ..layout },
                layer,
            }
        }
        Source::Factors(run) => {
            let entries = (run.entries.iter())
                .map(|e| {
                    let test = e.test.clone().ok_or_else(|| missing(&run.source))?;
                    Ok(infl::io::FactorEntry {
                        train: test,
                        test: None,
                        ..e.clone()
                    })
                })
                .collect::<Result<_>>()?;
            Source::Factors(FactorRun { entries, ..run })
        }
    })
}

/// The query folder, for messages.
fn dir_hint(source: &QuerySource) -> String {
    [&source.run, &source.manifest, &source.factors]
        .into_iter()
        .flatten()
        .next()
        .map_or_else(String::new, |p| p.display().to_string())
}
