//! Invariants of TracInCP over chosen layers, checked with proptest on random factor runs
//! (seeded): the ghost and materialised forms agree; self-influence is the diagonal of the
//! scores; permuting layers or checkpoints changes nothing; top-k is the sorted scores.
//! Each property runs on the CPU and, when an adapter is present, on the GPU.

use infl::io::LayerFactors;
use infl::{
    Backend, Bias, CpuBackend, Engine, Estimator, FactorCheckpoint, LayerForm, NamedFactors, Run,
    SplitFactors, TracInCP,
};
use infl_core::testing::{assert_close, rand_matrix};
use proptest::prelude::*;

/// A layer's shape: positions S, outputs K, inputs D, bias; or a dense gradient of width W.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Linear {
        s: usize,
        k: usize,
        d: usize,
        bias: Bias,
    },
    Dense {
        w: usize,
    },
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        (1usize..5, 1usize..6, 1usize..7, any::<bool>()).prop_map(|(s, k, d, b)| Shape::Linear {
            s,
            k,
            d,
            bias: if b { Bias::Included } else { Bias::Excluded },
        }),
        (1usize..9).prop_map(|w| Shape::Dense { w }),
    ]
}

fn layer(shape: Shape, n: usize, seed: u64) -> LayerFactors {
    match shape {
        Shape::Linear { s, k, d, bias } => LayerFactors::Linear {
            a: rand_matrix(n * s, d, seed),
            g: rand_matrix(n * s, k, seed ^ 0x9E37),
            positions: s,
            bias,
        },
        Shape::Dense { w } => LayerFactors::Dense {
            grad: rand_matrix(n, w, seed),
        },
    }
}

fn split(shapes: &[Shape], n: usize, seed: u64) -> SplitFactors {
    SplitFactors {
        source: Default::default(),
        ids: (0..n as i64).collect(),
        labels: None,
        layers: shapes
            .iter()
            .enumerate()
            .map(|(l, &s)| NamedFactors {
                name: format!("layer{l}"),
                factors: layer(s, n, seed.wrapping_add(l as u64 * 101)),
            })
            .collect(),
    }
}

/// `c` checkpoints with the layers `shapes`; the test split is the training one when
/// `test` is `None`.
fn run(
    shapes: &[Shape],
    c: usize,
    n: usize,
    test: Option<usize>,
    seed: u64,
) -> Vec<FactorCheckpoint> {
    (0..c as u64)
        .map(|i| {
            let s = seed.wrapping_mul(7919).wrapping_add(i * 31);
            let train = split(shapes, n, s);
            FactorCheckpoint {
                name: format!("c{i}"),
                learning_rate: Some(0.1 + 0.2 * i as f32),
                test: Some(match test {
                    Some(t) => split(shapes, t, s ^ 0xABCD),
                    None => train.clone(),
                }),
                train,
            }
        })
        .collect()
}

fn tracincp(form: LayerForm) -> TracInCP {
    TracInCP {
        form,
        ..Default::default()
    }
}

mod common;

/// Two CPU threads, then the GPU when present.
fn backends() -> Vec<Box<dyn Backend>> {
    let mut b: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend::with_threads(2).unwrap())];
    b.extend(common::gpu());
    b
}

/// The width of one example's gradient over every layer (for tolerances).
fn width(shapes: &[Shape]) -> usize {
    shapes
        .iter()
        .map(|s| match *s {
            Shape::Linear { s, k, d, .. } => s * k * (d + 1),
            Shape::Dense { w } => w,
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Ghost and materialised forms give the same scores, top-k and self-influence.
    #[test]
    fn ghost_and_materialised_forms_agree(
        shapes in prop::collection::vec(shape(), 1..4),
        c in 1usize..3, n in 1usize..20, t in 1usize..6, seed in any::<u64>(),
    ) {
        let run = Run::from(run(&shapes, c, n, Some(t), seed));
        let tol = width(&shapes) * c;
        for backend in backends() {
            let engine = Engine::new(backend.as_ref()).with_chunk(7);
            let ghost = tracincp(LayerForm::Ghost).prepare(backend.as_ref(), &run, &()).unwrap();
            let mat = tracincp(LayerForm::Materialised).prepare(backend.as_ref(), &run, &()).unwrap();
            let has_ghost = ghost.set.terms.iter().any(|t| t.positions > 1);
            let multi = shapes.iter().any(|s| matches!(s, Shape::Linear { s, .. } if *s > 1));
            prop_assert_eq!(has_ghost, multi);
            prop_assert!(mat.set.terms.iter().all(|t| t.positions == 1));
            let (gs, ms) = (
                engine.scores(&ghost.set, &()).unwrap(),
                engine.scores(&mat.set, &()).unwrap(),
            );
            assert_close("scores", &gs, &ms, tol);
            assert_close(
                "self-influence",
                &engine.self_influence(&ghost.set).unwrap(),
                &engine.self_influence(&mat.set).unwrap(),
                tol,
            );
            let k = n.min(3);
            let top = engine.topk(&ghost.set, k, &()).unwrap();
            for (q, row) in top.proponents.iter().enumerate() {
                let want = &gs[q * n..(q + 1) * n];
                let mut sorted: Vec<f32> = want.to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let got: Vec<f32> = row.iter().map(|r| r.score).collect();
                prop_assert_eq!(&got[..], &sorted[..k]);
                for r in row {
                    prop_assert_eq!(r.score, want[r.index]);
                }
            }
        }
    }

    /// With train = test, self-influence is the diagonal of the scores (both forms).
    #[test]
    fn self_influence_is_the_diagonal(
        shapes in prop::collection::vec(shape(), 1..4),
        c in 1usize..3, n in 1usize..16, seed in any::<u64>(), ghost in any::<bool>(),
    ) {
        let run = Run::from(run(&shapes, c, n, None, seed));
        let form = if ghost { LayerForm::Ghost } else { LayerForm::Materialised };
        let backend = CpuBackend::with_threads(2).unwrap();
        let engine = Engine::new(&backend).with_chunk(5);
        let prepared = tracincp(form).prepare(&backend, &run, &()).unwrap();
        let full = engine.scores(&prepared.set, &()).unwrap();
        let diag: Vec<f32> = (0..n).map(|i| full[i * n + i]).collect();
        let self_inf = engine.self_influence(&prepared.set).unwrap();
        assert_close("diagonal", &self_inf, &diag, width(&shapes) * c);
    }

    /// Reordering layers and checkpoints does not change scores.
    #[test]
    fn layer_and_checkpoint_order_do_not_matter(
        shapes in prop::collection::vec(shape(), 1..4),
        c in 1usize..4, n in 1usize..16, t in 1usize..5, seed in any::<u64>(),
    ) {
        let forward = run(&shapes, c, n, Some(t), seed);
        let mut reversed = forward.clone();
        reversed.reverse();
        for cp in &mut reversed {
            cp.train.layers.reverse();
            if let Some(test) = &mut cp.test {
                test.layers.reverse();
            }
        }
        let backend = CpuBackend::with_threads(2).unwrap();
        let est = TracInCP::default();
        let a = est.scores(&backend, &Run::from(forward), &()).unwrap().values;
        let b = est.scores(&backend, &Run::from(reversed), &()).unwrap().values;
        assert_close("reordered", &b, &a, width(&shapes) * c);
    }
}

#[test]
fn the_cost_rule_picks_the_cheaper_form() {
    // Conv patches: S = 9, K = 3, D = 18: 81·21 > 54, materialise.
    assert!(!LayerForm::ByCost.ghost(9, 3, 18));
    // A short sequence through a wide layer: S = 4, K = D = 768: 16·1536 < 589,824, ghost.
    assert!(LayerForm::ByCost.ghost(4, 768, 768));
    // One position is never ghost.
    assert!(!LayerForm::Ghost.ghost(1, 768, 768));
    assert!(LayerForm::Ghost.ghost(2, 1, 1));
    assert!(!LayerForm::Materialised.ghost(4, 768, 768));
}

/// The index's embeddings of a ghost term set are the materialised gradients: their dot
/// products are the engine's scores.
#[test]
fn embeddings_of_ghost_terms_give_the_scores() {
    let shapes = [
        Shape::Linear {
            s: 3,
            k: 4,
            d: 5,
            bias: Bias::Included,
        },
        Shape::Linear {
            s: 1,
            k: 2,
            d: 3,
            bias: Bias::Excluded,
        },
        Shape::Dense { w: 4 },
    ];
    let (n, t) = (9, 4);
    let run = Run::from(run(&shapes, 2, n, Some(t), 11));
    let cpu = CpuBackend::with_threads(2).unwrap();
    let prepared = tracincp(LayerForm::Ghost).prepare(&cpu, &run, &()).unwrap();
    assert!(prepared.set.terms.iter().any(|t| t.positions == 3));
    let scores = Engine::new(&cpu).scores(&prepared.set, &()).unwrap();
    let train = infl::index::embeddings(&prepared.set, infl::index::Rows::Train(0..n)).unwrap();
    let test = infl::index::embeddings(&prepared.set, infl::index::Rows::Test).unwrap();
    let width = infl::index::embedding_width(&prepared.set);
    assert_eq!(width, 2 * (4 * 6 + 2 * 3 + 4));
    let dots: Vec<f32> = (0..t)
        .flat_map(|q| {
            let (test, train) = (&test, &train);
            (0..n).map(move |i| {
                let (x, y) = (test.view().row(q), train.view().row(i));
                x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>()
            })
        })
        .collect();
    assert_close("embedding dot products", &dots, &scores, width);
}
