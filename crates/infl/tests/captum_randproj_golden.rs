//! Golden tests: TracInCPFastRandProj against Captum's `TracInCPFastRandProj`
//! (`fixtures/captum_tracincp`, section c of its README).
//!
//! - Without a projection (none, or `K·D ≤ p`) it is TracInCPFast exactly, and Captum's
//!   scores and top-5.
//! - With Captum's own projection matrices it reproduces Captum's scores and `‖e_i‖²` for
//!   every stored seed (the definition: √lr, one pair of matrices for all checkpoints, no
//!   bias).
//! - With infl's own seeded matrices (torch's RNG cannot be reproduced) the projection is
//!   unbiased and its spread is the theoretical one the fixtures record, and the
//!   correlation with exact scores matches Captum's.

use std::path::PathBuf;

use infl::io::{Rank, RunLayout, TensorFile};
use infl::{
    CpuBackend, Engine, Estimator, Matrix, Projections, Run, Splits, TracInCPFast,
    TracInCPFastRandProj, load_run,
};

mod common;

use common::{assert_close_to_peer as assert_close, backends};

fn fixtures() -> PathBuf {
    common::fixtures("captum_tracincp")
}

fn expected(tag: &str) -> TensorFile {
    TensorFile::open(fixtures().join(format!("expected_{tag}.safetensors"))).unwrap()
}

fn run() -> Run {
    let layout = RunLayout::discover(fixtures().join("mlp")).unwrap();
    Run::from(load_run(&layout, "fc3", Splits::TrainAndTest).unwrap())
}

/// A 2-D or 3-D float tensor, flattened.
fn flat(file: &TensorFile, name: &str) -> Vec<f32> {
    file.matrix(name, Rank::MatrixOrBatched)
        .unwrap()
        .data()
        .to_vec()
}

fn rand_proj(projection_dim: Option<usize>, seed: u64) -> TracInCPFastRandProj {
    TracInCPFastRandProj {
        projection_dim,
        seed,
        ..Default::default()
    }
}

#[test]
fn without_a_projection_it_is_tracincp_fast_and_captum() {
    let want = expected("randproj_none");
    let run = run();
    for backend in backends() {
        let backend = backend.as_ref();
        let fast = TracInCPFast::default()
            .scores(backend, &run, &())
            .unwrap()
            .values;
        // None, p = K·D = 32 and p = 1000: Captum's rule says no projection.
        for p in [None, Some(32), Some(1000)] {
            let est = rand_proj(p, 7);
            let scores = est.scores(backend, &run, &()).unwrap().values;
            assert_eq!(
                scores,
                fast,
                "p = {p:?} on {}: TracInCPFast exactly",
                backend.name()
            );
            assert_close(
                "scores",
                &scores,
                want.matrix("scores", Rank::Matrix).unwrap().data(),
            );
            let self_inf = est.self_influence(backend, &run).unwrap().values;
            assert_close("self", &self_inf, &want.vector("self_influence").unwrap());
            let top = est.topk(backend, &run, 5, &()).unwrap().values;
            for (name, rows) in [("proponent", &top.proponents), ("opponent", &top.opponents)] {
                let idx: Vec<i64> = rows.iter().flatten().map(|r| r.index as i64).collect();
                assert_eq!(
                    idx,
                    want.integers_flat(&format!("{name}s")).unwrap(),
                    "{name}s"
                );
                let got: Vec<f32> = rows.iter().flatten().map(|r| r.score).collect();
                let w = want
                    .matrix(&format!("{name}_scores"), Rank::Matrix)
                    .unwrap();
                assert_close(&format!("{name} scores"), &got, w.data());
            }
        }
    }
}

/// Seed `s`'s matrices from a `[S, rows, k]` tensor.
fn captum_matrix(file: &TensorFile, name: &str, s: usize) -> Matrix {
    let shape = file.info(name).unwrap().shape.to_vec();
    let all = flat(file, name);
    let len = shape[1] * shape[2];
    Matrix::from_vec(shape[1], shape[2], all[s * len..(s + 1) * len].to_vec()).unwrap()
}

#[test]
fn with_captums_matrices_it_reproduces_captums_numbers() {
    let run = run();
    for tag in ["randproj_p4", "randproj_p10"] {
        let want = expected(tag);
        let seeds = want.info("scores").unwrap().shape[0];
        let scores = flat(&want, "scores");
        let self_dot = flat(&want, "self_dot");
        let per = scores.len() / seeds;
        for backend in backends() {
            let engine = Engine::new(backend.as_ref());
            for s in 0..seeds {
                let p = Projections {
                    jacobian: captum_matrix(&want, "projection_jacobian", s),
                    input: captum_matrix(&want, "projection_input", s),
                };
                let prepared = rand_proj(None, 0)
                    .prepare_with(backend.as_ref(), &run, &p)
                    .unwrap();
                let what = format!("{tag} seed {s} on {}", backend.name());
                let got = engine.scores(&prepared.set, &()).unwrap();
                assert_close(&what, &got, &scores[s * per..(s + 1) * per]);
                let got = engine.self_influence(&prepared.set).unwrap();
                assert_close(&what, &got, &self_dot[s * 40..(s + 1) * 40]);
            }
        }
    }
}

/// Pearson correlation.
fn pearson(x: &[f32], y: &[f32]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (
        x.iter().map(|&v| f64::from(v)).sum::<f64>() / n,
        y.iter().map(|&v| f64::from(v)).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (f64::from(a) - mx, f64::from(b) - my);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    sxy / (sxx * syy).sqrt()
}

/// Over many of infl's seeds: the ratio `‖e_i‖² / exact self-influence` has mean 1 and
/// the theoretical spread the fixtures record, and the projected scores correlate with the
/// exact ones as Captum's do (its 20-seed mean, within 4 of its standard errors).
#[test]
fn infls_projection_is_unbiased_with_the_theoretical_spread() {
    const SEEDS: u64 = 2000;
    let run = run();
    let cpu = CpuBackend::new();
    let engine = Engine::new(&cpu);
    for tag in ["randproj_p4", "randproj_p10"] {
        let want = expected(tag);
        let p: usize = want.metadata()["projection_dim"].parse().unwrap();
        let exact = want.vector("exact_self_influence").unwrap();
        let exact_scores = flat(&want, "exact_scores");
        let theory = want.vector("ratio_std_theory").unwrap();
        let n = exact.len();
        let (mut sum, mut sum_sq) = (vec![0f64; n], vec![0f64; n]);
        let mut pearsons = Vec::new();
        for seed in 0..SEEDS {
            let prepared = rand_proj(Some(p), seed).prepare(&cpu, &run, &()).unwrap();
            let self_inf = engine.self_influence(&prepared.set).unwrap();
            for i in 0..n {
                let r = f64::from(self_inf[i] / exact[i]);
                sum[i] += r;
                sum_sq[i] += r * r;
            }
            let scores = engine.scores(&prepared.set, &()).unwrap();
            for (row, exact_row) in scores.chunks(n).zip(exact_scores.chunks(n)) {
                pearsons.push(pearson(row, exact_row));
            }
        }
        let s = SEEDS as f64;
        let mut variance_ratio = 0.0;
        for i in 0..n {
            let mean = sum[i] / s;
            let var = (sum_sq[i] - s * mean * mean) / (s - 1.0);
            let se = f64::from(theory[i]) / s.sqrt();
            assert!(
                (mean - 1.0).abs() < 5.0 * se,
                "{tag}: example {i}: mean ratio {mean} (theory: 1 ± {se})"
            );
            variance_ratio += var / f64::from(theory[i]).powi(2) / n as f64;
        }
        assert!(
            (0.85..1.15).contains(&variance_ratio),
            "{tag}: variance over theory {variance_ratio}"
        );
        let ours = pearsons.iter().sum::<f64>() / pearsons.len() as f64;
        let captum_all = flat(&want, "pearson_all");
        let m = captum_all.len() as f64;
        let captum = captum_all.iter().map(|&x| f64::from(x)).sum::<f64>() / m;
        let sd = (captum_all
            .iter()
            .map(|&x| (f64::from(x) - captum).powi(2))
            .sum::<f64>()
            / (m - 1.0))
            .sqrt();
        assert!(
            (ours - captum).abs() < 4.0 * sd / m.sqrt(),
            "{tag}: mean Pearson with exact scores {ours:.3}, Captum's {captum:.3} (sd {sd:.3})"
        );
    }
}

#[test]
fn projections_depend_only_on_the_seed() {
    let a = Projections::draw(10, 300, 64, 3).unwrap().unwrap();
    let b = Projections::draw(10, 300, 64, 3).unwrap().unwrap();
    let c = Projections::draw(10, 300, 64, 4).unwrap().unwrap();
    assert_eq!(a.jacobian.data(), b.jacobian.data());
    assert_eq!(a.input.data(), b.input.data());
    assert_ne!(a.input.data(), c.input.data());
    assert_eq!((a.jacobian.rows(), a.jacobian.cols()), (10, 8));
    assert_eq!((a.input.rows(), a.input.cols()), (300, 8));
    // Drawn in parallel threads: the same bits.
    let drawn: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| Projections::draw(10, 300, 64, 3).unwrap().unwrap()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().input.data().to_vec())
            .collect()
    });
    assert!(drawn.iter().all(|d| d == a.input.data()));
    // Entries N(0, 1/k): the sample variance of 2,400 entries is 1/8 within 10%.
    let var = a
        .input
        .data()
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        / 2400.0;
    assert!(
        (var * 8.0 - 1.0).abs() < 0.1,
        "variance {var}, expected 1/8"
    );
    assert_eq!(Projections::sizes(4, 8, 32), None);
    assert_eq!(Projections::sizes(4, 8, 10), Some((3, 3)));
    assert_eq!(Projections::sizes(4, 8, 4), Some((2, 2)));
    assert_eq!(Projections::sizes(2, 1000, 100), Some((2, 10)));
}
