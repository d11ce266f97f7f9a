//! The persistent index (`infl::index`) at N = 1,000,000 synthetic embeddings of width
//! E = 64 (low rank + noise, heavy-tailed norms, seeded: `infl_benches::index_data`), k = 10,
//! side by side in one run:
//! - `index_build`: `Index::build` (throughput = rows/s). A 1M-row build takes 1–2 minutes
//!   on 2 cores, too long for criterion's 10 samples, so this group builds
//!   `INFL_BENCH_BUILD_ROWS` rows (default 100,000) per sample; the 1M index the query
//!   groups use is built once in setup, and that one build's time and rows/s are printed
//!   (`benches/examples/index_build.rs` times a 1M build alone, under `/usr/bin/time -v`).
//! - `index_query`: `Search::Exact` (every row through the engine) and
//!   `Search::Approximate` with the defaults (4096 candidates, ef 128), batches of 1 and
//!   100 queries (throughput = queries/s).
//!
//! `cargo bench -p infl-benches --bench index` measures at full size; under `cargo test`
//! (CI) every benchmark runs once at a tiny size (2,000 rows, width 16).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use infl::index::{BuildOptions, Index, Queries, Search, Training};
use infl::io::Inputs;
use infl::{CpuBackend, Matrix, TermSet};
use infl_benches::index_data::{embeddings, one_term, recipe, rows_of};

const K: usize = 10;
const SEED: u64 = 7;

struct Size {
    rows: usize,
    build_rows: usize,
    width: usize,
    batches: [usize; 2],
}

fn size() -> Size {
    if std::env::args().any(|a| a == "--bench") {
        Size {
            rows: 1_000_000,
            build_rows: std::env::var("INFL_BENCH_BUILD_ROWS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(100_000),
            width: 64,
            batches: [1, 100],
        }
    } else {
        Size {
            rows: 2_000,
            build_rows: 2_000,
            width: 16,
            batches: [1, 10],
        }
    }
}

/// A fresh scratch folder for one index.
fn scratch(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infl-bench-index-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn build(set: &TermSet, dir: &std::path::Path) -> Index {
    let ids: Vec<i64> = (0..set.n_train() as i64).collect();
    Index::build(
        Training { set, ids: &ids },
        &recipe(set),
        dir,
        &Inputs::none(),
        &BuildOptions::default(),
    )
    .expect("build")
}

fn index(cr: &mut Criterion) {
    let s = size();
    let backend = CpuBackend::new();
    let threads = rayon::current_num_threads();

    let mut g = cr.benchmark_group(format!(
        "index_build_n{}_e{}_threads{threads}",
        s.build_rows, s.width
    ));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.throughput(Throughput::Elements(s.build_rows as u64));
    let small = one_term(embeddings(s.build_rows, s.width, SEED), None);
    let dir = scratch("build");
    g.bench_function("build", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(&dir);
            },
            |()| build(&small, &dir),
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
    drop(small);

    let max_batch = s.batches[1];
    let queries = rows_of(max_batch, s.width, SEED, SEED + 1);
    let set = one_term(embeddings(s.rows, s.width, SEED), Some(queries.clone()));
    let dir = scratch("query");
    let t = Instant::now();
    let idx = build(&set, &dir);
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "setup: built the {}-row index (width {}) once in {secs:.1} s = {:.0} rows/s",
        s.rows,
        s.width,
        s.rows as f64 / secs
    );
    let recipe = recipe(&set);
    drop(set);

    let mut g = cr.benchmark_group(format!(
        "index_query_n{}_e{}_k{K}_threads{threads}",
        s.rows, s.width
    ));
    g.sample_size(10);
    for &batch in &s.batches {
        let q = Queries {
            recipe: recipe.clone(),
            embeddings: Matrix::from_vec(
                batch,
                s.width,
                queries.data()[..batch * s.width].to_vec(),
            )
            .expect("shape"),
        };
        g.throughput(Throughput::Elements(batch as u64));
        for (name, search) in [
            ("exact", Search::Exact),
            ("approximate", Search::approximate()),
        ] {
            g.bench_function(format!("{name}_batch{batch}"), |b| {
                b.iter(|| idx.query(&backend, &q, K, search).expect("query"))
            });
        }
    }
    g.finish();
    drop(idx);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, index);
criterion_main!(benches);
