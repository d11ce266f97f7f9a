//! Recall of the persistent index (`infl::index`) against exact TracInCPFast on a real run:
//! for each projection size `p`, builds the index of `TracInCPFastRandProj { p, seed 0 }`
//! and measures recall@k of its proponents and opponents against the exact, unprojected
//! TracInCPFast top-k of the first `--queries` test examples, with
//! - `Search::Exact` over the projected embeddings (the effect of projection alone),
//! - `Search::Approximate` at several (candidates, ef) settings (projection + graph), and
//!   the same settings against the exact search in the projected space (the graph alone),
//! - `--exact-dims`: the projection alone without building an index (the engine's exact
//!   top-k of the projected terms; cheap at any `p`),
//! - `Index::query_rescored`: a shortlist of `--rerank` rows from the exact and the default
//!   approximate search, rescored with exact unprojected TracInCPFast (what recovers the
//!   recall the projection loses),
//!
//! plus build time, query time per query, index size on disk and embedding width. Prints
//! markdown tables (QUALITY.md, "Index recall").
//!
//! `cargo run --release -p infl-benches --example index_recall -- --run DIR [--layer fc3]
//! [--queries 500] [--k 10] [--dims 16,64,256,1024] [--exact-dims 4096] [--rerank 100,1000]
//! [--work DIR]`

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use infl::index::{BuildOptions, ExactRun, Index, Queries, Recipe, Rescore, Search, Training};
use infl::io::{Inputs, RunLayout};
use infl::{
    CheckpointData, CpuBackend, Engine, Estimator, Examples, Ranked, Run, Splits, TopKRows,
    TracInCPFast, TracInCPFastRandProj,
};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    run: PathBuf,
    layer: String,
    queries: usize,
    k: usize,
    dims: Vec<usize>,
    exact_dims: Vec<usize>,
    rerank: Vec<usize>,
    work: PathBuf,
}

fn list(v: &str) -> Res<Vec<usize>> {
    Ok(v.split(',')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?)
}

fn args() -> Res<Args> {
    let mut a = Args {
        run: PathBuf::new(),
        layer: "fc3".into(),
        queries: 500,
        k: 10,
        dims: vec![16, 64, 256, 1024],
        exact_dims: Vec::new(),
        rerank: vec![100, 1000],
        work: std::env::temp_dir().join("infl-index-recall"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--run" => a.run = v.into(),
            "--layer" => a.layer = v,
            "--queries" => a.queries = v.parse()?,
            "--k" => a.k = v.parse()?,
            "--dims" => a.dims = list(&v)?,
            "--exact-dims" => a.exact_dims = list(&v)?,
            "--rerank" => a.rerank = list(&v)?,
            "--work" => a.work = v.into(),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.run.as_os_str().is_empty() {
        return Err("--run DIR is required".into());
    }
    Ok(a)
}

/// The first `n` rows of `e`.
fn first(e: &Examples, n: usize) -> Examples {
    e.select(&(0..n.min(e.len())).collect::<Vec<_>>())
}

/// Mean |got ∩ want| / k over queries (first `k` of each list).
fn recall(got: &[Vec<Ranked>], want: &[Vec<Ranked>], k: usize) -> f64 {
    let total: usize = got
        .iter()
        .zip(want)
        .map(|(g, w)| {
            let w: HashSet<usize> = w.iter().take(k).map(|r| r.index).collect();
            g.iter().take(k).filter(|r| w.contains(&r.index)).count()
        })
        .sum();
    total as f64 / (k * want.len()) as f64
}

/// (proponents, opponents) recall@k.
fn recalls(got: &TopKRows, want: &TopKRows, k: usize) -> (f64, f64) {
    (
        recall(&got.proponents, &want.proponents, k),
        recall(&got.opponents, &want.opponents, k),
    )
}

/// Keeps a table row and shows it at once on stderr (a long run can be cut short).
fn row(rows: &mut Vec<String>, r: String) {
    eprintln!("{r}");
    rows.push(r);
}

fn dir_bytes(dir: &Path) -> Res<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        total += e?.metadata()?.len();
    }
    Ok(total)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() -> Res<()> {
    let a = args()?;
    let backend = CpuBackend::new();
    let engine = Engine::new(&backend);
    let t = Instant::now();
    let layout = RunLayout::discover(&a.run)?;
    let run: Vec<CheckpointData> = infl::load_run(&layout, &a.layer, Splits::TrainAndTest)?
        .into_iter()
        .map(|mut c| {
            c.test = c.test.map(|e| first(&e, a.queries));
            c
        })
        .collect();
    let (n, d) = (run[0].train.len(), run[0].train.features.cols());
    let t_count = run[0].test.as_ref().map_or(0, Examples::len);
    let run = Run::from(run);
    eprintln!("loaded in {:.1} s", t.elapsed().as_secs_f64());

    let fast = TracInCPFast::default();
    let exact = fast.prepare(&backend, &run, &())?;
    let t = Instant::now();
    let reference = engine.topk(&exact.set, a.k, &())?;
    let reference_s = t.elapsed().as_secs_f64();
    println!(
        "Run {}: layer {}, {} checkpoints, N = {n} train, D = {d}, {t_count} queries, k = {}. \
         Reference: exact TracInCPFast (bias excluded) top-{}, {:.2} s ({:.2} ms/query).\n",
        a.run.display(),
        a.layer,
        exact.checkpoints.len(),
        a.k,
        a.k,
        reference_s,
        1e3 * reference_s / t_count as f64
    );
    let exact_run = ExactRun {
        estimator: &fast,
        backend: &backend,
        run: &run,
    };

    // usearch explores max(ef, candidates) nodes, so ef matters only below the candidates.
    let settings = [(256, 128), (1024, 128), (Search::DEFAULT_CANDIDATES, 128)];
    let mut main_rows = Vec::new();
    let mut graph_rows = Vec::new();
    let mut rescore_rows = Vec::new();
    // Projection alone, without an index: the engine's exact top-k of the projected terms
    // (the scores Search::Exact computes from the stored embeddings, up to f32 rounding).
    for &p in &a.exact_dims {
        let est = projected(p);
        let prepared = est.prepare(&backend, &run, &())?;
        let width = infl::index::embedding_width(&prepared.set);
        let t = Instant::now();
        let ex = engine.topk(&prepared.set, a.k, &())?;
        let ms = 1e3 * t.elapsed().as_secs_f64() / t_count as f64;
        let (rp, ro) = recalls(&ex, &reference, a.k);
        row(
            &mut main_rows,
            format!(
                "| {p} | {width} | (no index) | | engine top-k (projected, factored) | {rp:.3} | {ro:.3} | {ms:.2} |"
            ),
        );
    }
    for &p in &a.dims {
        let est = projected(p);
        let prepared = est.prepare(&backend, &run, &())?;
        let recipe = Recipe::of(&est, &prepared, std::slice::from_ref(&a.layer));
        let dir = a.work.join(format!("p{p}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&a.work)?;
        let t = Instant::now();
        let index = Index::build(
            Training::from(&prepared),
            &recipe,
            &dir,
            &Inputs::none(),
            &BuildOptions::default(),
        )?;
        let build_s = t.elapsed().as_secs_f64();
        let bytes = dir_bytes(&dir)?;
        let queries = Queries::of_test(recipe, &prepared.set)?;
        let t = Instant::now();
        let ex = index.query(&backend, &queries, a.k, Search::Exact)?;
        let ex_ms = 1e3 * t.elapsed().as_secs_f64() / t_count as f64;
        let (rp, ro) = recalls(&ex, &reference, a.k);
        eprintln!(
            "p {p}: width {}, build {build_s:.1} s, exact {rp:.3}",
            index.width()
        );
        row(
            &mut main_rows,
            format!(
                "| {p} | {} | {build_s:.1} | {:.1} | exact (projected) | {rp:.3} | {ro:.3} | {ex_ms:.2} |",
                index.width(),
                mib(bytes)
            ),
        );
        for &(candidates, expansion) in &settings {
            let search = Search::Approximate {
                candidates,
                expansion,
            };
            let t = Instant::now();
            let ap = index.query(&backend, &queries, a.k, search)?;
            let ap_ms = 1e3 * t.elapsed().as_secs_f64() / t_count as f64;
            let (rp, ro) = recalls(&ap, &reference, a.k);
            let (gp, go) = recalls(&ap, &ex, a.k);
            row(
                &mut main_rows,
                format!(
                    "| {p} | | | | approx {candidates} / ef {expansion} | {rp:.3} | {ro:.3} | {ap_ms:.2} |"
                ),
            );
            row(
                &mut graph_rows,
                format!("| {p} | {candidates} / ef {expansion} | {gp:.3} | {go:.3} |"),
            );
        }
        // The real path: Index::query_rescored with the exact estimator on the run.
        for search in [Search::Exact, Search::approximate()] {
            for &c in &a.rerank {
                let rescore = Rescore {
                    shortlist: c.max(a.k),
                    exact: &exact_run,
                };
                let t = Instant::now();
                let got = index.query_rescored(&backend, &queries, a.k, search, rescore)?;
                let ms = 1e3 * t.elapsed().as_secs_f64() / t_count as f64;
                let (rp, ro) = recalls(&got, &reference, a.k);
                let name = match search {
                    Search::Exact => "exact".to_string(),
                    Search::Approximate {
                        candidates,
                        expansion,
                    } => format!("approx {candidates} / ef {expansion}"),
                };
                row(
                    &mut rescore_rows,
                    format!("| {p} | {name} | {c} | {rp:.3} | {ro:.3} | {ms:.2} |"),
                );
            }
        }
        drop(index);
        std::fs::remove_dir_all(&dir)?;
    }
    println!(
        "Recall@{k} against exact TracInCPFast (index of TracInCPFastRandProj, seed 0):\n",
        k = a.k
    );
    println!(
        "| p | width E | build s | index MiB | search | recall@{k} proponents | recall@{k} opponents | ms/query |",
        k = a.k
    );
    println!("|---|---|---|---|---|---|---|---|");
    main_rows.iter().for_each(|r| println!("{r}"));
    println!(
        "\nThe graph alone: recall@{k} of approximate against exact search in the same \
         projected space:\n",
        k = a.k
    );
    println!("| p | candidates / ef | proponents | opponents |\n|---|---|---|---|");
    graph_rows.iter().for_each(|r| println!("{r}"));
    println!(
        "\nIndex::query_rescored: a shortlist of C proponents and C opponents from the index's \
         search, rescored with exact TracInCPFast (recall@{k} against exact TracInCPFast):\n",
        k = a.k
    );
    println!("| p | search | shortlist C | proponents | opponents | ms/query |");
    println!("|---|---|---|---|---|---|");
    rescore_rows.iter().for_each(|r| println!("{r}"));
    Ok(())
}

/// TracInCPFastRandProj with dimension `p`, seed 0.
fn projected(p: usize) -> TracInCPFastRandProj {
    TracInCPFastRandProj {
        projection_dim: Some(p),
        seed: 0,
        ..TracInCPFastRandProj::default()
    }
}
