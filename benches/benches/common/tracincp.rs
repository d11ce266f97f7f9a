//! The TracInCP-over-3-layers problem shared by the `tracincp` bench and the
//! `tracincp_parity` example: random factors of an MNIST-like MLP (784-256-128-10), one
//! engine term per (checkpoint, layer), biases included, and the FLOP formulas that
//! `benches/torch_tracin.py --modes tracincp` uses too.

use infl::{FactorMatrices, FactorTerm, TermSet};
use infl_core::Bias;
use infl_core::testing::rand_matrix;

/// The MLP's linear layers as (inputs D, outputs K): 784-256-128-10.
pub const LAYERS: [(usize, usize); 3] = [(784, 256), (256, 128), (128, 10)];

/// Problem size: `n` train, `t` test, `c` checkpoints over [`LAYERS`].
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Training examples.
    pub n: usize,
    /// Test examples.
    pub t: usize,
    /// Checkpoints.
    pub c: usize,
}

/// Learning rate of checkpoint `c` (the torch peer uses the same).
pub fn learning_rate(c: usize) -> f32 {
    0.1 / (c + 1) as f32
}

/// One term per (checkpoint, layer): `lr_c (g_i·g_j)(a_i·a_j + 1)`, factors from
/// `rand_matrix` (uniform in [-1, 1)) with distinct seeds.
pub fn term_set(s: Size) -> TermSet {
    let mut terms = Vec::with_capacity(s.c * LAYERS.len());
    for c in 0..s.c {
        for (l, &(d, k)) in LAYERS.iter().enumerate() {
            let seed = 100 * c as u64 + 10 * l as u64;
            terms.push(FactorTerm {
                label: format!("checkpoint {c} layer {l}"),
                weight: learning_rate(c),
                bias: Bias::Included,
                positions: 1,
                train: FactorMatrices {
                    a: rand_matrix(s.n, d, seed + 1),
                    g: rand_matrix(s.n, k, seed + 2),
                },
                test: Some(FactorMatrices {
                    a: rand_matrix(s.t, d, seed + 3),
                    g: rand_matrix(s.t, k, seed + 4),
                }),
            });
        }
    }
    TermSet { terms }
}

/// FLOPs of one score pass: per checkpoint and layer `2·T·N·D + 2·T·N·K + 3·T·N` (the
/// two grams, then the bias add, the product and the weighted accumulation).
pub fn score_flops(s: Size) -> u64 {
    let per_ckpt: usize = LAYERS
        .iter()
        .map(|&(d, k)| 2 * s.t * s.n * d + 2 * s.t * s.n * k + 3 * s.t * s.n)
        .sum();
    (s.c * per_ckpt) as u64
}

/// FLOPs of self-influence: per checkpoint and layer `2·N·(D + K) + 3·N` (two squared
/// norms, then the bias add, the product and the weighted accumulation).
pub fn self_flops(s: Size) -> u64 {
    let per_ckpt: usize = LAYERS
        .iter()
        .map(|&(d, k)| 2 * s.n * (d + k) + 3 * s.n)
        .sum();
    (s.c * per_ckpt) as u64
}
