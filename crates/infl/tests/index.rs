//! The nearest-neighbour index (`infl::index`): embeddings reproduce the engine's scores,
//! exact search over an index is the engine's top-k, approximate search recalls it,
//! reopening changes nothing, mismatched queries and damaged files are refused, a failed
//! build leaves nothing behind, and rescoring keeps the exact best of each shortlist (a
//! run's subset scores as the same rows of the whole run).
//!
//! No expected numbers are written here: every check compares two computations (the index
//! against the engine on the estimator's own term set, approximate against exact).

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use infl::index::{
    ANN_FILE, BuildOptions, EMBEDDINGS_FILE, ExactRun, ExactTerms, Insertion, Queries, Recipe,
    Rescore, Rows, Search, Training, embedding_width, embeddings,
};
use infl::io::{Inputs, RunLayout};
use infl::{
    Bias, CpuBackend, Engine, Estimator, FactorMatrices, FactorTerm, Index, Matrix, Prepared, Run,
    Splits, TermSet, TopKRows, TracInCPFast, TracInCPFastRandProj, load_run,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn run() -> Run {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/captum_tracincp/mlp");
    let layout = RunLayout::discover(dir).unwrap();
    Run::from(load_run(&layout, "fc3", Splits::TrainAndTest).unwrap())
}

fn prepared(estimator: &dyn Estimator) -> (Prepared, Recipe) {
    let prepared = estimator.prepare(&CpuBackend::new(), &run(), &()).unwrap();
    let recipe = Recipe::of(estimator, &prepared, &["fc3".to_string()]);
    (prepared, recipe)
}

fn rand_proj(p: usize) -> TracInCPFastRandProj {
    TracInCPFastRandProj {
        projection_dim: Some(p),
        seed: 3,
        ..Default::default()
    }
}

/// A recipe for a term set that no estimator made.
fn custom_recipe(set: &TermSet) -> Recipe {
    Recipe {
        method: "custom".into(),
        settings: vec![("origin".into(), "test".into())],
        checkpoints: vec!["c".into()],
        learning_rates: vec![1.0],
        layers: vec!["l".into()],
        terms: Recipe::term_shapes(set),
    }
}

fn build(prepared: &Prepared, recipe: &Recipe, dir: &Path, options: &BuildOptions) -> Index {
    Index::build(
        Training::from(prepared),
        recipe,
        dir,
        &Inputs::none(),
        options,
    )
    .unwrap()
}

/// Same indices; scores within 1e-5 relative to the row's largest magnitude.
fn assert_same_topk(what: &str, got: &TopKRows, want: &TopKRows) {
    for (side, g, w) in [
        ("proponents", &got.proponents, &want.proponents),
        ("opponents", &got.opponents, &want.opponents),
    ] {
        assert_eq!(g.len(), w.len(), "{what} {side}: rows");
        for (q, (gr, wr)) in g.iter().zip(w).enumerate() {
            let gi: Vec<usize> = gr.iter().map(|r| r.index).collect();
            let wi: Vec<usize> = wr.iter().map(|r| r.index).collect();
            assert_eq!(gi, wi, "{what} {side} of query {q}");
            let scale = wr.iter().fold(0.0f32, |m, r| m.max(r.score.abs()));
            for (a, b) in gr.iter().zip(wr) {
                let tol = 1e-5 * scale.max(f32::MIN_POSITIVE);
                assert!(
                    (a.score - b.score).abs() <= tol,
                    "{what} {side} of query {q}: {} vs {}",
                    a.score,
                    b.score
                );
            }
        }
    }
}

/// Exact search over the index equals the engine's top-k of the estimator's own set.
fn exact_equals_engine(what: &str, prepared: &Prepared, recipe: &Recipe) {
    let dir = tempfile::tempdir().unwrap();
    let options = BuildOptions {
        chunk_rows: 7, // several chunks, the last one short
        ..Default::default()
    };
    let index = build(prepared, recipe, dir.path(), &options);
    let queries = Queries::of_test(recipe.clone(), &prepared.set).unwrap();
    let cpu = CpuBackend::new();
    for k in [1, 5, prepared.set.n_train()] {
        let got = index.query(&cpu, &queries, k, Search::Exact).unwrap();
        let want = Engine::default().topk(&prepared.set, k, &()).unwrap();
        assert_same_topk(&format!("{what}, k = {k}"), &got, &want);
    }
    assert_eq!(index.ids(), prepared.train.ids.as_slice());
    // All candidates: the approximate search is exact too.
    let all = Search::Approximate {
        candidates: prepared.set.n_train(),
        expansion: 16,
    };
    let got = index.query(&cpu, &queries, 5, all).unwrap();
    let want = Engine::default().topk(&prepared.set, 5, &()).unwrap();
    assert_same_topk(&format!("{what}, approximate over all rows"), &got, &want);
}

#[test]
fn exact_search_is_the_engines_topk_for_tracincp_fast() {
    let est = TracInCPFast::default();
    let (p, recipe) = prepared(&est);
    exact_equals_engine("TracInCPFast", &p, &recipe);
}

#[test]
fn exact_search_is_the_engines_topk_for_rand_proj() {
    let est = rand_proj(10);
    let (p, recipe) = prepared(&est);
    // K·D = 32 > 10: projected to 3 x 3 per checkpoint.
    assert_eq!(embedding_width(&p.set), 9 * p.set.terms.len());
    exact_equals_engine("TracInCPFastRandProj p = 10", &p, &recipe);
}

fn random(rng: &mut ChaCha8Rng, rows: usize, cols: usize, scale: f32) -> Matrix {
    let mut uniform = || ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) as f32;
    Matrix::from_fn(rows, cols, |_, _| scale * (2.0 * uniform() - 1.0))
}

/// Three terms of different widths, two with their bias included.
fn several_terms(train: usize, test: usize, seed: u64) -> Prepared {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shapes = [
        (3, 5, Bias::Included),
        (2, 4, Bias::Excluded),
        (4, 1, Bias::Included),
    ];
    let terms = shapes
        .iter()
        .enumerate()
        .map(|(t, &(dg, da, bias))| {
            let mut split = |n| FactorMatrices {
                a: random(&mut rng, n, da, 1.0),
                g: random(&mut rng, n, dg, 2.0),
            };
            FactorTerm {
                label: format!("term {t}"),
                weight: 0.5 + t as f32,
                bias,
                positions: 1,
                train: split(train),
                test: Some(split(test)),
            }
        })
        .collect();
    let info = |n: usize| infl::SplitInfo {
        ids: (0..n as i64).map(|i| 1000 + i).collect(),
        labels: None,
        predicted: vec![0; n],
    };
    Prepared {
        set: TermSet { terms },
        learning_rates: vec![1.0],
        checkpoints: vec!["c".into()],
        train: info(train),
        test: Some(info(test)),
    }
}

#[test]
fn embeddings_reproduce_the_engines_scores_with_biases_and_several_terms() {
    let p = several_terms(50, 6, 1);
    assert_eq!(embedding_width(&p.set), 3 * 6 + 2 * 4 + 4 * 2);
    let train = embeddings(&p.set, Rows::Train(0..50)).unwrap();
    let part = embeddings(&p.set, Rows::Train(10..20)).unwrap();
    assert_eq!(
        part.data(),
        &train.data()[10 * train.cols()..20 * train.cols()]
    );
    let test = embeddings(&p.set, Rows::Test).unwrap();
    let scores = Engine::default().scores(&p.set, &()).unwrap();
    let scale = scores.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    for q in 0..6 {
        for t in 0..50 {
            let dot: f64 = (test.view().row(q).iter().zip(train.view().row(t)))
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let want = scores[q * 50 + t];
            assert!((dot as f32 - want).abs() <= 1e-5 * scale, "({q}, {t})");
        }
    }
    exact_equals_engine("three terms with biases", &p, &custom_recipe(&p.set));
}

/// `rows` embeddings: rank-8 signal plus noise, row norms log-normal (heavy-tailed, as
/// gradient norms are).
fn gradient_like(rng: &mut ChaCha8Rng, basis: &Matrix, rows: usize) -> Matrix {
    let mut normal = || {
        let u1 = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    let (rank, width) = (basis.rows(), basis.cols());
    let mut data = Vec::with_capacity(rows * width);
    for _ in 0..rows {
        let coef: Vec<f64> = (0..rank).map(|_| normal()).collect();
        let norm = (1.5 * normal()).exp();
        for c in 0..width {
            let signal: f64 = (0..rank)
                .map(|r| coef[r] * f64::from(basis.view().row(r)[c]))
                .sum();
            data.push((norm * (signal + 0.3 * normal())) as f32);
        }
    }
    Matrix::from_vec(rows, width, data).unwrap()
}

/// A one-term set whose embeddings are `train`'s and `test`'s rows (`g` = 1).
fn embedded(train: Matrix, test: Matrix) -> Prepared {
    let ones = |m: Matrix| FactorMatrices {
        g: Matrix::from_fn(m.rows(), 1, |_, _| 1.0),
        a: m,
    };
    let (n, t) = (train.rows(), test.rows());
    let info = |n: usize| infl::SplitInfo {
        ids: (0..n as i64).collect(),
        labels: None,
        predicted: vec![0; n],
    };
    Prepared {
        set: TermSet {
            terms: vec![FactorTerm {
                label: "synthetic".into(),
                weight: 1.0,
                bias: Bias::Excluded,
                positions: 1,
                train: ones(train),
                test: Some(ones(test)),
            }],
        },
        learning_rates: vec![1.0],
        checkpoints: vec!["c".into()],
        train: info(n),
        test: Some(info(t)),
    }
}

fn recall(got: &[Vec<infl::Ranked>], want: &[Vec<infl::Ranked>]) -> f64 {
    let (mut hit, mut all) = (0, 0);
    for (g, w) in got.iter().zip(want) {
        all += w.len();
        hit += w
            .iter()
            .filter(|r| g.iter().any(|x| x.index == r.index))
            .count();
    }
    hit as f64 / all as f64
}

#[test]
fn approximate_search_recalls_the_exact_top_10() {
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    let basis = random(&mut rng, 8, 64, 1.0);
    let train = gradient_like(&mut rng, &basis, 20_000);
    let test = gradient_like(&mut rng, &basis, 100);
    let p = embedded(train, test);
    let recipe = custom_recipe(&p.set);
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let index = build(&p, &recipe, dir.path(), &BuildOptions::default());
    let built = start.elapsed();
    let queries = Queries::of_test(recipe, &p.set).unwrap();
    let cpu = CpuBackend::new();
    let start = Instant::now();
    let exact = index.query(&cpu, &queries, 10, Search::Exact).unwrap();
    let exact_time = start.elapsed();
    let search = Search::Approximate {
        candidates: 512,
        expansion: 128,
    };
    let start = Instant::now();
    let approx = index.query(&cpu, &queries, 10, search).unwrap();
    let approx_time = start.elapsed();
    let (pro, opp) = (
        recall(&approx.proponents, &exact.proponents),
        recall(&approx.opponents, &exact.opponents),
    );
    eprintln!(
        "20000 x 64: build {built:.2?}, exact {exact_time:.2?}, approximate (512 candidates) \
         {approx_time:.2?}; recall@10 proponents {pro:.4}, opponents {opp:.4}"
    );
    assert!(pro >= 0.95 && opp >= 0.95, "recall {pro} / {opp}");
    // Returned scores are exact: every approximate entry is the true score of its row.
    let e = index.embeddings();
    for (q, row) in approx
        .proponents
        .iter()
        .chain(&approx.opponents)
        .enumerate()
    {
        let query = queries.embeddings.view().row(q % 100);
        for r in row {
            let dot: f32 = query
                .iter()
                .zip(e.view().row(r.index))
                .map(|(a, b)| a * b)
                .sum();
            assert!(
                (dot - r.score).abs() <= 1e-4 * dot.abs().max(1.0),
                "{dot} vs {}",
                r.score
            );
        }
    }
    assert!(approx.opponents.iter().flatten().all(|r| r.score < 0.0));
}

#[test]
fn a_reopened_index_gives_the_same_answers() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let basis = random(&mut rng, 4, 16, 1.0);
    let p = embedded(
        gradient_like(&mut rng, &basis, 3000),
        gradient_like(&mut rng, &basis, 20),
    );
    let recipe = custom_recipe(&p.set);
    let dir = tempfile::tempdir().unwrap();
    let options = BuildOptions {
        insertion: Insertion::Sequential,
        expansion_search: 40,
        ..Default::default()
    };
    let built = build(&p, &recipe, dir.path(), &options);
    let reopened = Index::open(dir.path()).unwrap();
    assert_eq!(reopened.recipe(), &recipe);
    assert_eq!(reopened.options().expansion_search, 40);
    assert_eq!(reopened.ids(), built.ids());
    assert_eq!(reopened.embeddings(), built.embeddings());
    let queries = Queries::of_test(recipe.clone(), &p.set).unwrap();
    let cpu = CpuBackend::new();
    let small = Search::Approximate {
        candidates: 20,
        expansion: 20,
    };
    // 3000 rows, M = 16: 2 · 20 · 16 visits pay; 2 · 4096 · 16 and (ef counts too)
    // 2 · 100 · 16 do not, and the exact search answers instead.
    assert!(built.graph_pays(20, 20));
    assert!(!built.graph_pays(4096, 128) && !built.graph_pays(20, 100));
    for search in [Search::Exact, Search::approximate(), small] {
        let a = built.query(&cpu, &queries, 10, search).unwrap();
        let b = reopened.query(&cpu, &queries, 10, search).unwrap();
        assert_eq!(a, b, "{search:?}");
    }
    // Sequential insertion is reproducible: the same inputs give the same files.
    let again = tempfile::tempdir().unwrap();
    build(&p, &recipe, again.path(), &options);
    for name in [EMBEDDINGS_FILE, ANN_FILE] {
        let read = |d: &Path| std::fs::read(d.join(name)).unwrap();
        assert!(read(dir.path()) == read(again.path()), "{name} differs");
    }
}

#[test]
fn queries_of_other_settings_or_widths_are_refused() {
    let (p, recipe) = prepared(&rand_proj(10));
    let dir = tempfile::tempdir().unwrap();
    let index = build(&p, &recipe, dir.path(), &BuildOptions::default());
    let cpu = CpuBackend::new();
    let refused = |q: &Queries| {
        index
            .query(&cpu, q, 3, Search::Exact)
            .unwrap_err()
            .to_string()
    };
    let (p4, r4) = prepared(&rand_proj(4));
    let e = refused(&Queries::of_test(r4, &p4.set).unwrap());
    assert!(
        e.contains("the index was built with projection_dim 10, the query with 4"),
        "{e}"
    );
    let (pf, rf) = prepared(&TracInCPFast::default());
    let e = refused(&Queries::of_test(rf, &pf.set).unwrap());
    assert!(
        e.contains("method tracincp-fast-rand-proj, the query with tracincp-fast"),
        "{e}"
    );
    let mut other = recipe.clone();
    other.layers = vec!["fc2".into()];
    let e = refused(&Queries::of_test(other, &p.set).unwrap());
    assert!(e.contains("layers [fc3], the query with [fc2]"), "{e}");
    let mut lr = recipe.clone();
    lr.learning_rates[0] *= 2.0;
    let e = refused(&Queries::of_test(lr, &p.set).unwrap());
    assert!(e.contains("learning rates"), "{e}");
    let narrow = Queries {
        recipe: recipe.clone(),
        embeddings: Matrix::zeros(2, index.width() - 1),
    };
    let e = refused(&narrow);
    assert!(
        e.contains(&format!(
            "width {}, the query embeddings have {}",
            index.width(),
            index.width() - 1
        )),
        "{e}"
    );
    let ok = Queries::of_test(recipe, &p.set).unwrap();
    assert!(index.query(&cpu, &ok, 0, Search::Exact).is_err());
    assert!(index.query(&cpu, &ok, 3, Search::Exact).is_ok());
}

/// A small index in a fresh folder, for damaging.
fn small_index() -> (tempfile::TempDir, Vec<u8>, Vec<u8>) {
    let p = several_terms(120, 2, 9);
    let dir = tempfile::tempdir().unwrap();
    build(
        &p,
        &custom_recipe(&p.set),
        dir.path(),
        &BuildOptions::default(),
    );
    let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap();
    let (e, a) = (read(EMBEDDINGS_FILE), read(ANN_FILE));
    (dir, e, a)
}

/// Opening with `name` replaced by `bytes` fails with an error naming it.
fn refused_naming(dir: &Path, name: &str, bytes: &[u8], good: &[u8]) -> String {
    std::fs::write(dir.join(name), bytes).unwrap();
    let result = Index::open(dir);
    std::fs::write(dir.join(name), good).unwrap();
    let e = result
        .expect_err("a damaged file must be refused")
        .to_string();
    assert!(e.contains(name), "{e}");
    e
}

#[test]
fn truncated_files_are_refused_naming_the_file() {
    let (dir, emb, ann) = small_index();
    Index::open(dir.path()).unwrap();
    for (name, good) in [(EMBEDDINGS_FILE, &emb), (ANN_FILE, &ann)] {
        for len in [0, 7, 8, 100, good.len() / 2, good.len() - 1] {
            let e = refused_naming(dir.path(), name, &good[..len], good);
            if name == ANN_FILE {
                assert!(e.contains("truncated"), "{e}");
            }
        }
        let mut longer = good.clone();
        longer.push(0);
        refused_naming(dir.path(), name, &longer, good);
    }
    let e = refused_naming(dir.path(), EMBEDDINGS_FILE, &emb[..emb.len() - 4], &emb);
    assert!(e.contains("truncated"), "{e}");
    std::fs::remove_file(dir.path().join(ANN_FILE)).unwrap();
    let e = Index::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains(ANN_FILE), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::fuzz_cases()))]

    /// Any changed bytes, in either file, are refused with the file named (usearch never
    /// sees a changed graph).
    #[test]
    fn altered_files_are_refused_naming_the_file(
        which in 0usize..2,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        SMALL.with(|(dir, emb, ann)| {
            let (name, good) = if which == 0 { (EMBEDDINGS_FILE, emb) } else { (ANN_FILE, ann) };
            let mut bad = good.clone();
            for (at, xor) in &edits {
                let i = at.index(bad.len());
                bad[i] ^= xor;
            }
            if &bad != good {
                refused_naming(dir.path(), name, &bad, good);
            }
        });
    }
}

thread_local! {
    /// One small index per test thread (its folder lives as long as the thread).
    static SMALL: (tempfile::TempDir, Vec<u8>, Vec<u8>) = small_index();
}

#[test]
fn a_failed_build_leaves_nothing_behind() {
    let mut p = several_terms(1500, 2, 4);
    // Example 1234 (in the fifth chunk of 256) overflows f32 in term 1.
    let term = &mut p.set.terms[1];
    let mut a = term.train.a.to_vec();
    a[1234 * term.train.a.cols()] = 1e30;
    term.train.a = Matrix::from_vec(1500, term.train.a.cols(), a).unwrap();
    let recipe = custom_recipe(&p.set);
    let options = BuildOptions {
        chunk_rows: 256,
        ..Default::default()
    };
    let root = tempfile::tempdir().unwrap();
    let fresh = root.path().join("new/index");
    let e = Index::build(
        Training::from(&p),
        &recipe,
        &fresh,
        &Inputs::none(),
        &options,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("train example 1234 at term 1"), "{e}");
    assert!(
        std::fs::read_dir(root.path()).unwrap().next().is_none(),
        "left behind"
    );
    // Over an existing index: it stays as it was, with no temporary file beside it.
    let good = several_terms(1500, 2, 4);
    let old = Index::build(
        Training::from(&good),
        &custom_recipe(&good.set),
        root.path(),
        &Inputs::none(),
        &options,
    )
    .unwrap();
    let before: Vec<Vec<u8>> = [EMBEDDINGS_FILE, ANN_FILE]
        .iter()
        .map(|n| std::fs::read(root.path().join(n)).unwrap())
        .collect();
    drop(old);
    Index::build(
        Training::from(&p),
        &recipe,
        root.path(),
        &Inputs::none(),
        &options,
    )
    .unwrap_err();
    let mut names: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [ANN_FILE, EMBEDDINGS_FILE]);
    for (n, b) in [EMBEDDINGS_FILE, ANN_FILE].iter().zip(&before) {
        assert!(
            &std::fs::read(root.path().join(n)).unwrap() == b,
            "{n} changed"
        );
    }
    Index::open(root.path()).unwrap();
}

/// Exact rescoring from a term set: training rows and queries selected from `set`.
struct FromSet<'a>(&'a TermSet);

impl ExactTerms for FromSet<'_> {
    fn terms(&self, rows: &[usize], queries: std::ops::Range<usize>) -> infl::Result<TermSet> {
        let q: Vec<usize> = queries.collect();
        let terms = (self.0.terms.iter())
            .map(|t| FactorTerm {
                train: FactorMatrices {
                    a: t.train.a.select_rows(rows),
                    g: t.train.g.select_rows(rows),
                },
                test: t.test.as_ref().map(|f| FactorMatrices {
                    a: f.a.select_rows(&q),
                    g: f.g.select_rows(&q),
                }),
                ..t.clone()
            })
            .collect();
        Ok(TermSet { terms })
    }
}

/// For each query, the best `k` of `candidates` (proponents: largest, opponents: most
/// negative) by the exact `scores` `[T, N]`, ties by row.
fn best_of(candidates: &[Vec<usize>], scores: &[f32], n: usize, k: usize) -> TopKRows {
    let pick = |sign: f32| -> Vec<Vec<infl::Ranked>> {
        (candidates.iter().enumerate())
            .map(|(q, rows)| {
                let mut v: Vec<infl::Ranked> = (rows.iter())
                    .map(|&r| infl::Ranked {
                        index: r,
                        score: scores[q * n + r],
                    })
                    .collect();
                v.sort_by(|a, b| {
                    (sign * b.score)
                        .total_cmp(&(sign * a.score))
                        .then(a.index.cmp(&b.index))
                });
                v.truncate(k);
                v
            })
            .collect()
    };
    TopKRows {
        k,
        proponents: pick(1.0),
        opponents: pick(-1.0),
    }
}

/// Per query, the distinct rows of both lists of `t`.
fn shortlisted(t: &TopKRows) -> Vec<Vec<usize>> {
    (t.proponents.iter().zip(&t.opponents))
        .map(|(p, o)| {
            let mut rows: Vec<usize> = p.iter().chain(o).map(|r| r.index).collect();
            rows.sort_unstable();
            rows.dedup();
            rows
        })
        .collect()
}

#[test]
fn rescoring_keeps_the_exact_best_of_each_querys_shortlist_across_chunks() {
    // The index holds noisy embeddings; the exact scores are the clean ones. 150 queries
    // make three chunks of at most CHUNK_QUERIES.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let basis = random(&mut rng, 8, 32, 1.0);
    let (n, t) = (3000, 150);
    let clean = embedded(
        gradient_like(&mut rng, &basis, n),
        gradient_like(&mut rng, &basis, t),
    );
    let noisy = |m: &Matrix, rng: &mut ChaCha8Rng| {
        let noise = random(rng, m.rows(), m.cols(), 0.5);
        Matrix::from_fn(m.rows(), m.cols(), |i, j| {
            m.view().row(i)[j] * (1.0 + noise.view().row(i)[j])
        })
    };
    let term = &clean.set.terms[0];
    let stored = embedded(
        noisy(&term.train.a, &mut rng),
        noisy(&term.test.as_ref().unwrap().a, &mut rng),
    );
    let recipe = custom_recipe(&stored.set);
    let dir = tempfile::tempdir().unwrap();
    let index = build(&stored, &recipe, dir.path(), &BuildOptions::default());
    let queries = Queries::of_test(recipe, &stored.set).unwrap();
    let cpu = CpuBackend::new();
    let exact_scores = Engine::default().scores(&clean.set, &()).unwrap();
    let exact = FromSet(&clean.set);
    assert!(t > 2 * infl::index::CHUNK_QUERIES);
    let graph = Search::Approximate {
        candidates: 40,
        expansion: 40,
    };
    assert!(index.graph_pays(40, 40));
    for search in [Search::Exact, graph] {
        for (k, shortlist) in [(1, 1), (5, 40), (10, 300)] {
            let rescore = Rescore {
                shortlist,
                exact: &exact,
            };
            let got = index
                .query_rescored(&cpu, &queries, k, search, rescore)
                .unwrap();
            let short = index.query(&cpu, &queries, shortlist, search).unwrap();
            let want = best_of(&shortlisted(&short), &exact_scores, n, k);
            assert_same_topk(
                &format!("{search:?}, k {k}, shortlist {shortlist}"),
                &got,
                &want,
            );
        }
    }
    // A shortlist of every row is the exact top-k of the clean scores.
    let all = Rescore {
        shortlist: n,
        exact: &exact,
    };
    let got = index
        .query_rescored(&cpu, &queries, 7, Search::Exact, all)
        .unwrap();
    let want = Engine::default().topk(&clean.set, 7, &()).unwrap();
    assert_same_topk("shortlist of every row", &got, &want);
    // Rescoring recovers what the noise lost.
    let plain = index.query(&cpu, &queries, 10, Search::Exact).unwrap();
    let rescored = (index.query_rescored(
        &cpu,
        &queries,
        10,
        Search::Exact,
        Rescore {
            shortlist: 300,
            exact: &exact,
        },
    ))
    .unwrap();
    let want = Engine::default().topk(&clean.set, 10, &()).unwrap();
    let (before, after) = (
        recall(&plain.proponents, &want.proponents),
        recall(&rescored.proponents, &want.proponents),
    );
    assert!(
        after > before && after >= 0.95,
        "recall {before} -> {after}"
    );
    // A shortlist shorter than k is refused.
    let err = index
        .query_rescored(
            &cpu,
            &queries,
            5,
            Search::Exact,
            Rescore {
                shortlist: 4,
                exact: &exact,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("shortlist 4 < k = 5"), "{err}");
}

#[test]
fn a_rand_proj_index_rescored_on_its_run_answers_exact_tracincp_fast() {
    let est = rand_proj(10);
    let (p, recipe) = prepared(&est);
    let dir = tempfile::tempdir().unwrap();
    let index = build(&p, &recipe, dir.path(), &BuildOptions::default());
    let queries = Queries::of_test(recipe, &p.set).unwrap();
    let cpu = CpuBackend::new();
    let run = run();
    let unprojected = est
        .unprojected()
        .expect("a projection has an exact counterpart");
    assert_eq!(unprojected.name(), TracInCPFast::default().name());
    assert!(TracInCPFast::default().unprojected().is_none());
    let exact = ExactRun {
        estimator: &*unprojected,
        backend: &cpu,
        run: &run,
    };
    let fast = TracInCPFast::default().prepare(&cpu, &run, &()).unwrap();
    let n = p.set.n_train();
    let full = Engine::default().scores(&fast.set, &()).unwrap();
    for search in [Search::Exact, Search::approximate()] {
        for shortlist in [3, 8, n] {
            let rescore = Rescore {
                shortlist,
                exact: &exact,
            };
            let got = index
                .query_rescored(&cpu, &queries, 3, search, rescore)
                .unwrap();
            let short = index.query(&cpu, &queries, shortlist, search).unwrap();
            let want = best_of(&shortlisted(&short), &full, n, 3);
            assert_same_topk(&format!("shortlist {shortlist}"), &got, &want);
        }
    }
}

#[test]
fn a_subset_of_a_run_scores_as_the_same_rows_of_the_whole_run() {
    let cpu = CpuBackend::new();
    let factors = {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/captum_tracincp/cnn/factors");
        let run = infl::io::FactorRun::discover(dir).unwrap();
        Run::from(infl::load_factor_run(&run, None, Splits::TrainAndTest).unwrap())
    };
    let cases: [(&str, Run, Box<dyn Estimator>); 2] = [
        ("features", run(), Box::new(TracInCPFast::default())),
        ("factors", factors, Box::new(infl::TracInCP::default())),
    ];
    for (what, run, est) in cases {
        let whole = est.prepare(&cpu, &run, &()).unwrap();
        let full = Engine::default().scores(&whole.set, &()).unwrap();
        let (n, t) = (whole.set.n_train(), whole.set.n_test());
        let rows: Vec<usize> = (0..n).rev().step_by(3).collect();
        let queries = 1..t;
        let part = est
            .prepare(&cpu, &run.subset(&rows, queries.clone()).unwrap(), &())
            .unwrap();
        let ids: Vec<i64> = rows.iter().map(|&r| whole.train.ids[r]).collect();
        assert_eq!(part.train.ids, ids, "{what}: ids kept");
        let got = Engine::default().scores(&part.set, &()).unwrap();
        let scale = full.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (i, q) in queries.clone().enumerate() {
            for (j, &r) in rows.iter().enumerate() {
                let (a, b) = (got[i * rows.len() + j], full[q * n + r]);
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "{what} ({q}, {r}): {a} vs {b}"
                );
            }
        }
        let err = run.subset(&[n], 0..1).unwrap_err().to_string();
        assert!(err.contains(&format!("training row {n}")), "{err}");
        let err = run.subset(&[0], 0..t + 1).unwrap_err().to_string();
        assert!(err.contains("test rows"), "{err}");
    }
}
