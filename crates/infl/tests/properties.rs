//! Invariants of TracInCPFast, checked with proptest on random problems (seeded).

use infl::{
    Bias, Checkpoint, CheckpointData, CpuBackend, Engine, Estimator, Examples, Loss, Matrix, Run,
    Tiles, TopKRows, TracInCPFast,
};
use infl_core::testing::{assert_close, rand_matrix};
use proptest::prelude::*;

struct Problem {
    data: Vec<CheckpointData>,
}

/// `c` checkpoints of a K-class head on D features; N train and T test examples.
fn problem(c: usize, n: usize, t: usize, d: usize, k: usize, seed: u64, bias: bool) -> Problem {
    let labels = |len: usize, s: u64| -> Vec<i64> {
        let m = rand_matrix(len, 1, s);
        m.data()
            .iter()
            .map(|x| ((x + 1.0) * 0.5 * k as f32) as i64 % k as i64)
            .collect()
    };
    let (ytr, yte) = (labels(n, seed ^ 0xA5), labels(t, seed ^ 0x5A));
    let data = (0..c as u64)
        .map(|i| {
            let s = seed.wrapping_mul(1000).wrapping_add(i * 17);
            let mut train = Examples::classified(rand_matrix(n, d, s + 1), ytr.clone());
            train.targets = Some(rand_matrix(n, k, s + 5));
            let mut test = Examples::classified(rand_matrix(t, d, s + 2), yte.clone());
            test.targets = Some(rand_matrix(t, k, s + 6));
            CheckpointData {
                checkpoint: Checkpoint {
                    name: format!("c{i}"),
                    source: Default::default(),
                    learning_rate: Some(0.1 + 0.3 * i as f32),
                    weight: rand_matrix(k, d, s + 3),
                    bias: bias.then(|| rand_matrix(k, 1, s + 4).to_vec()),
                },
                train,
                test: Some(test),
            }
        })
        .collect();
    Problem { data }
}

fn engine() -> Engine<CpuBackend> {
    // Small tiles and chunks so that blocking is exercised on small problems.
    Engine::new(
        CpuBackend::with_threads(2)
            .unwrap()
            .with_tiles(Tiles { query: 3, train: 5 }),
    )
    .with_chunk(10)
}

fn scores(p: &Problem, est: &TracInCPFast) -> Vec<f32> {
    let e = engine();
    let prepared = est
        .prepare(e.backend(), &Run::from(p.data.clone()), &())
        .unwrap();
    e.scores(&prepared.set, &()).unwrap()
}

fn est(mse: bool, include_bias: bool) -> TracInCPFast {
    TracInCPFast {
        loss: if mse {
            Loss::MeanSquaredError
        } else {
            Loss::CrossEntropy
        },
        bias: if include_bias {
            Bias::Included
        } else {
            Bias::Excluded
        },
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// With train = test, self-influence is the diagonal of the score matrix.
    #[test]
    fn self_influence_is_the_diagonal(
        c in 1usize..4, n in 1usize..30, d in 1usize..20, k in 2usize..6,
        seed in any::<u64>(), mse in any::<bool>(), bias in any::<bool>(),
    ) {
        let mut p = problem(c, n, 1, d, k, seed, bias);
        for cd in &mut p.data {
            cd.test = Some(cd.train.clone());
        }
        let e = engine();
        let prepared = est(mse, bias).prepare(e.backend(), &Run::from(p.data.clone()), &()).unwrap();
        let full = e.scores(&prepared.set, &()).unwrap();
        let diag: Vec<f32> = (0..n).map(|i| full[i * n + i]).collect();
        let self_inf = e.self_influence(&prepared.set).unwrap();
        assert_close("diagonal", &self_inf, &diag, d * k * c);
    }

    /// Scores are linear in each checkpoint's (positive) learning rate.
    #[test]
    fn linear_in_each_learning_rate(
        c in 1usize..4, n in 1usize..25, t in 1usize..6, d in 1usize..16, k in 2usize..5,
        seed in any::<u64>(), which in 0usize..3, factor in 0.01f32..3.0,
    ) {
        let p = problem(c, n, t, d, k, seed, false);
        let which = which % c;
        let base = scores(&p, &est(false, false));
        // The contribution of checkpoint `which` alone, at learning rate 1.
        let mut single = Problem { data: vec![p.data[which].clone()] };
        single.data[0].checkpoint.learning_rate = Some(1.0);
        let alone = scores(&single, &est(false, false));
        let mut scaled = Problem { data: p.data.clone() };
        let lr = p.data[which].checkpoint.learning_rate.unwrap();
        scaled.data[which].checkpoint.learning_rate = Some(lr * factor);
        let got = scores(&scaled, &est(false, false));
        let want: Vec<f32> = base.iter().zip(&alone)
            .map(|(b, a)| b + (factor - 1.0) * lr * a).collect();
        let scale = base.iter().chain(&alone).fold(0.0f32, |m, x| m.max(x.abs()));
        for (g, w) in got.iter().zip(&want) {
            prop_assert!((g - w).abs() <= 1e-5 * scale * (1.0 + factor.abs()) + 1e-30,
                "{g} vs {w}");
        }
    }

    /// Permuting the training examples permutes the score columns (and self-influence).
    #[test]
    fn permutation_equivariant(
        c in 1usize..3, n in 2usize..30, t in 1usize..5, d in 1usize..12, k in 2usize..5,
        seed in any::<u64>(), rot in 1usize..29,
    ) {
        let p = problem(c, n, t, d, k, seed, true);
        // A permutation: rotation then reversal.
        let perm: Vec<usize> = (0..n).map(|i| (n - 1 - i + rot) % n).collect();
        let mut q = Problem { data: p.data.clone() };
        for cd in &mut q.data {
            let tr = &cd.train;
            cd.train = Examples {
                source: Default::default(),
                features: tr.features.select_rows(&perm),
                labels: tr.labels.as_ref().map(|l| perm.iter().map(|&i| l[i]).collect()),
                targets: tr.targets.as_ref().map(|m| m.select_rows(&perm)),
                ids: None,
            };
        }
        let a = scores(&p, &est(false, true));
        let b = scores(&q, &est(false, true));
        let permuted: Vec<f32> = (0..t)
            .flat_map(|qi| perm.iter().map(move |&pj| (qi, pj)))
            .map(|(qi, pj)| a[qi * n + pj])
            .collect();
        // Equal up to f32 rounding (the GEMM's blocking differs between orders).
        assert_close("permuted scores", &b, &permuted, d * 3 * c);
    }

    /// Streamed top-k (small tiles and chunks, several threads) equals sorting the full
    /// score matrix, exactly, ties to the lower index included.
    #[test]
    fn streamed_topk_equals_sorted_full(
        c in 1usize..3, n in 1usize..40, t in 1usize..6, d in 1usize..10, k in 1usize..8,
        seed in any::<u64>(), quantise in any::<bool>(),
    ) {
        let mut p = problem(c, n, t, d, 3, seed, false);
        if quantise {
            // Coarse features make exact ties common.
            for cd in &mut p.data {
                let f = &cd.train.features;
                cd.train.features = Matrix::from_fn(f.rows(), f.cols(), |r, cc| (f.view().row(r)[cc] * 2.0).round());
            }
        }
        let k = k.min(n);
        let e = engine();
        let prepared = est(false, false).prepare(e.backend(), &Run::from(p.data.clone()), &()).unwrap();
        let full = e.scores(&prepared.set, &()).unwrap();
        let top = e.topk(&prepared.set, k, &()).unwrap();
        prop_assert_eq!(top, TopKRows::from_full(&full, n, k));
    }

    /// Results do not depend on the number of threads.
    #[test]
    fn independent_of_thread_count(seed in any::<u64>(), n in 1usize..50) {
        let p = problem(2, n, 4, 7, 3, seed, false);
        let run = |threads| {
            let e = Engine::new(CpuBackend::with_threads(threads).unwrap());
            let prepared = est(false, false).prepare(e.backend(), &Run::from(p.data.clone()), &()).unwrap();
            (e.scores(&prepared.set, &()).unwrap(), e.topk(&prepared.set, n.min(3), &()).unwrap())
        };
        prop_assert_eq!(run(1), run(3));
    }
}
