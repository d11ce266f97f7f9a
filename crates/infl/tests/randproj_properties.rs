//! Invariants of TracInCPFastRandProj on random problems (proptest, seeded): the projected
//! self-influence is unbiased (its mean over many projection seeds is the exact one, within
//! the spread that Gaussian projections imply), projections never change the unprojected
//! case, and scores are the dot products of the projected factors on every backend.

use infl::{
    Checkpoint, CheckpointData, CpuBackend, Engine, Estimator, Examples, Run, TracInCPFast,
    TracInCPFastRandProj,
};
use infl_core::testing::rand_matrix;
use proptest::prelude::*;

mod common;

/// One checkpoint of a K-class head on D features, N training examples (test = train).
fn run(n: usize, d: usize, k: usize, seed: u64) -> Run {
    let labels: Vec<i64> = (0..n as i64).map(|i| i % k as i64).collect();
    let train = Examples::classified(rand_matrix(n, d, seed), labels);
    Run::from(vec![CheckpointData {
        checkpoint: Checkpoint {
            name: "c".into(),
            source: Default::default(),
            learning_rate: Some(0.3),
            weight: rand_matrix(k, d, seed ^ 0x51),
            bias: None,
        },
        test: Some(train.clone()),
        train,
    }])
}

fn rand_proj(p: Option<usize>, seed: u64) -> TracInCPFastRandProj {
    TracInCPFastRandProj {
        projection_dim: p,
        seed,
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Over 400 seeds, the mean of `‖e_i‖² / exact` is 1 within 5 standard errors, the
    /// standard deviation of one ratio being `√((1 + 2/k_J)(1 + 2/k_a) − 1)` at most.
    #[test]
    fn projected_self_influence_is_unbiased(
        n in 1usize..6, d in 5usize..40, k in 3usize..8, p in 4usize..30, seed in any::<u64>(),
    ) {
        const SEEDS: u64 = 400;
        let run = run(n, d, k, seed);
        let cpu = CpuBackend::with_threads(1).unwrap();
        let exact = TracInCPFast::default().self_influence(&cpu, &run).unwrap().values;
        let mut mean = vec![0f64; n];
        for s in 0..SEEDS {
            let projected = rand_proj(Some(p), s).self_influence(&cpu, &run).unwrap().values;
            for i in 0..n {
                mean[i] += f64::from(projected[i] / exact[i]) / SEEDS as f64;
            }
        }
        let root = (p as f64).sqrt().floor();
        let (kj, ka) = (root.min(k as f64), root.min(d as f64));
        let sd = ((1.0 + 2.0 / kj) * (1.0 + 2.0 / ka) - 1.0).sqrt();
        for (i, m) in mean.iter().enumerate() {
            prop_assert!(
                (m - 1.0).abs() < 5.0 * sd / (SEEDS as f64).sqrt(),
                "example {}: mean ratio {} (sd of one ratio {})", i, m, sd
            );
        }
    }

    /// Scores are the engine's over the projected factors, equal on every backend, and
    /// without a projection (or with K·D ≤ p) exactly TracInCPFast's.
    #[test]
    fn scores_are_projected_dot_products(
        n in 1usize..40, d in 1usize..30, k in 2usize..8, p in 1usize..300, seed in any::<u64>(),
    ) {
        let run = run(n, d, k, seed);
        let cpu = CpuBackend::with_threads(2).unwrap();
        let fast = TracInCPFast::default().scores(&cpu, &run, &()).unwrap().values;
        let est = rand_proj(Some(p), seed);
        let prepared = est.prepare(&cpu, &run, &()).unwrap();
        let scores = Engine::new(&cpu).scores(&prepared.set, &()).unwrap();
        if k * d <= p {
            prop_assert_eq!(&scores, &fast);
        } else {
            let term = &prepared.set.terms[0];
            let root = (p as f64).sqrt() as usize;
            prop_assert_eq!(term.train.g.cols(), root.min(k).max(1));
            prop_assert_eq!(term.train.a.cols(), root.min(d).max(1));
        }
        prop_assert_eq!(
            rand_proj(None, seed).scores(&cpu, &run, &()).unwrap().values,
            fast
        );
        if let Some(gpu) = common::gpu() {
            let on_gpu = est.scores(gpu.as_ref(), &run, &()).unwrap().values;
            infl_core::testing::assert_close("GPU", &on_gpu, &scores, d + k);
        }
    }
}
