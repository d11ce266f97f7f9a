//! Norm-bound pruning gives exactly the unpruned top-k (indices and score bits, ties
//! included) on random term sets shaped like every estimator's: one term per checkpoint
//! (TracInCPFast), ghost terms over positions (TracInCP, S > 1), terms sharing their
//! training factors (influence functions' rank-one terms), with heavy-tailed, constant or
//! quantised (tied) norms and k up to N. Each property runs on the CPU and, when an
//! adapter is present, on the GPU (a failure with INFL_REQUIRE_GPU=1).

mod common;

use infl::{Backend, Bias, Engine, FactorMatrices, FactorTerm, Matrix, Pruning, TermSet};
use infl_core::TopKRows;
use infl_core::testing::rand_matrix;
use proptest::prelude::*;

/// How example norms are spread.
#[derive(Clone, Copy, Debug)]
enum Norms {
    /// Log-normal row scales (σ = 2): a few examples dominate, as with real gradients.
    HeavyTailed,
    /// Every row rescaled to norm 1: all bounds of a term tie.
    Constant,
    /// Entries in {-1, 0, 1}: many exactly tied scores.
    Quantised,
}

fn norms() -> impl Strategy<Value = Norms> {
    prop_oneof![
        Just(Norms::HeavyTailed),
        Just(Norms::Constant),
        Just(Norms::Quantised)
    ]
}

/// A random `[rows, cols]` matrix with norms spread as `how`.
fn factors(rows: usize, cols: usize, seed: u64, how: Norms) -> Matrix {
    let m = rand_matrix(rows, cols, seed);
    let scale = rand_matrix(rows, 1, seed ^ 0xABCD);
    Matrix::from_fn(rows, cols, |r, c| {
        let x = m.view().row(r)[c];
        match how {
            Norms::HeavyTailed => x * (2.0 * 2.0 * scale.view().row(r)[0]).exp(),
            Norms::Constant => {
                let n: f32 = m.view().row(r).iter().map(|v| v * v).sum::<f32>().sqrt();
                if n > 0.0 { x / n } else { 1.0 }
            }
            Norms::Quantised => (x * 1.5).round(),
        }
    })
}

/// One term's shape.
#[derive(Clone, Copy, Debug)]
struct Shape {
    da: usize,
    dg: usize,
    positions: usize,
    /// Members sharing the training factors (1: a plain term).
    shared: usize,
    bias: bool,
}

fn shape() -> impl Strategy<Value = Shape> {
    (1usize..24, 1usize..8, 1usize..4, 1usize..4, any::<bool>()).prop_map(
        |(da, dg, positions, shared, bias)| Shape {
            da,
            dg,
            // A group is plain; ghost terms stand alone.
            positions: if shared > 1 { 1 } else { positions },
            shared,
            bias,
        },
    )
}

fn term_set(shapes: &[Shape], nt: usize, nq: usize, seed: u64, how: Norms) -> TermSet {
    let mut terms = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let seed = seed.wrapping_add(1000 * i as u64);
        let p = s.positions;
        let train = FactorMatrices {
            a: factors(nt * p, s.da, seed, how),
            g: factors(nt * p, s.dg, seed + 1, how),
        };
        for m in 0..s.shared {
            let seed = seed + 10 * m as u64;
            terms.push(FactorTerm {
                label: format!("term {i}.{m}"),
                weight: 0.25 + 0.5 * (i + m) as f32,
                bias: if s.bias {
                    Bias::Included
                } else {
                    Bias::Excluded
                },
                positions: p,
                train: train.clone(),
                test: Some(FactorMatrices {
                    a: factors(nq * p, s.da, seed + 2, how),
                    g: factors(nq * p, s.dg, seed + 3, how),
                }),
            });
        }
    }
    TermSet { terms }
}

/// Indices and score bits of both lists.
fn bits(r: &TopKRows) -> Vec<Vec<(usize, u32)>> {
    r.proponents
        .iter()
        .chain(&r.opponents)
        .map(|l| l.iter().map(|c| (c.index, c.score.to_bits())).collect())
        .collect()
}

fn backends() -> Vec<Box<dyn Backend>> {
    common::backends()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Pruned top-k (forced, and automatic) equals unpruned top-k bit for bit.
    #[test]
    fn pruned_topk_is_unpruned_topk(
        shapes in prop::collection::vec(shape(), 1..4),
        nt in 1usize..160, nq in 1usize..12, k_frac in 0.0f64..1.0,
        block in 1usize..40, how in norms(), seed in any::<u64>(),
    ) {
        let set = term_set(&shapes, nt, nq, seed, how);
        let k = 1 + ((nt - 1) as f64 * k_frac * k_frac) as usize;
        for backend in backends() {
            let engine = |p| Engine::new(backend.as_ref()).with_chunk(23).with_prune_block(block).with_pruning(p);
            let off = engine(Pruning::Off).topk_counted(&set, k, &()).unwrap();
            prop_assert_eq!(off.pairs.scored, off.pairs.total);
            prop_assert_eq!(off.pairs.total, (nq * nt) as u64);
            for p in [Pruning::Always, Pruning::Auto] {
                let on = engine(p).topk_counted(&set, k, &()).unwrap();
                prop_assert_eq!(bits(&on.rows), bits(&off.rows), "{:?} on {}", p, backend.name());
                if p == Pruning::Always {
                    prop_assert!(on.pairs.scored <= on.pairs.total);
                }
            }
        }
    }
}

/// On heavy-tailed norms with many more training than test examples, pruning skips most
/// pairs (the point of it), and still gives the unpruned lists.
#[test]
fn heavy_tails_prune_most_pairs() {
    let shapes = [Shape {
        da: 16,
        dg: 4,
        positions: 1,
        shared: 1,
        bias: false,
    }; 3];
    let set = term_set(&shapes, 4000, 8, 7, Norms::HeavyTailed);
    for backend in backends() {
        let engine = |p| {
            Engine::new(backend.as_ref())
                .with_prune_block(64)
                .with_pruning(p)
        };
        let off = engine(Pruning::Off).topk_counted(&set, 5, &()).unwrap();
        let on = engine(Pruning::Auto).topk_counted(&set, 5, &()).unwrap();
        assert_eq!(bits(&on.rows), bits(&off.rows), "{}", backend.name());
        assert!(
            on.pairs.fraction() < 0.5,
            "{}: scored {:.3} of the pairs",
            backend.name(),
            on.pairs.fraction()
        );
    }
}

/// Where bounds prune nothing (every norm equal), `Auto` gives up after a probe that costs
/// a twentieth of a percent of the pairs (its budget, overrun by at most one probe block: 256
/// training examples for a sample of 64 test examples), not a block for every test example.
#[test]
fn a_probe_that_gives_up_costs_a_twentieth_of_a_percent() {
    let shapes = [Shape {
        da: 16,
        dg: 4,
        positions: 1,
        shared: 1,
        bias: false,
    }; 2];
    let (nt, nq, block) = (4000, 640, 100);
    let set = term_set(&shapes, nt, nq, 11, Norms::Constant);
    for backend in backends() {
        let engine = |p| {
            Engine::new(backend.as_ref())
                .with_prune_block(block)
                .with_pruning(p)
        };
        let off = engine(Pruning::Off).topk_counted(&set, 10, &()).unwrap();
        let on = engine(Pruning::Auto).topk_counted(&set, 10, &()).unwrap();
        assert_eq!(bits(&on.rows), bits(&off.rows), "{}", backend.name());
        let probe = on.pairs.scored - on.pairs.total;
        let budget = on.pairs.total / 2000 + 64 * 256;
        assert!(
            on.pairs.scored >= on.pairs.total && probe <= budget,
            "{}: the probe scored {probe} pairs (a block for all is {})",
            backend.name(),
            nq * block
        );
    }
}
