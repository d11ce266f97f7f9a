//! The backward pass against finite differences, and the exported per-example factors
//! against per-example gradients.

use infl_nn::{Mlp, per_example_factors};
use ndarray::{Array2, s};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_batch(rows: usize, cols: usize, classes: usize, seed: u64) -> (Array2<f32>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-2.0f32..2.0));
    let y = (0..rows)
        .map(|_| rng.random_range(0..classes as i64))
        .collect();
    (x, y)
}

/// Central differences of the mean loss with respect to every parameter, compared with
/// the analytic gradient. The MLP is evaluated in f32, so the step is large-ish and the
/// tolerance mixes absolute and relative error; a sign error, a missing ReLU mask or a
/// transposed product all give errors orders of magnitude above it.
#[test]
fn gradients_match_finite_differences() {
    for (seed, hidden) in [(1u64, vec![6usize, 5]), (2, vec![7]), (3, vec![])] {
        let model = Mlp::new(4, &hidden, 3, seed).unwrap();
        let (x, y) = random_batch(5, 4, 3, seed + 100);
        let (_, grads) = model.loss_and_grad(x.view(), &y).unwrap();
        let eps = 1e-2f32;
        let mut worst = 0.0f64;
        let mut checked = 0;
        for l in 0..model.layers().len() {
            let (rows, cols) = model.layers()[l].weight.dim();
            for i in 0..rows {
                for j in 0..=cols {
                    // j == cols stands for the bias.
                    let perturbed = |delta: f32| {
                        let mut layers = model.layers().to_vec();
                        if j == cols {
                            layers[l].bias[i] += delta;
                        } else {
                            layers[l].weight[[i, j]] += delta;
                        }
                        Mlp::from_layers(layers)
                            .unwrap()
                            .loss(x.view(), &y)
                            .unwrap()
                    };
                    let numeric = (perturbed(eps) - perturbed(-eps)) / (2.0 * f64::from(eps));
                    let analytic = f64::from(if j == cols {
                        grads[l].bias[i]
                    } else {
                        grads[l].weight[[i, j]]
                    });
                    let err =
                        (numeric - analytic).abs() / (1e-3 + analytic.abs().max(numeric.abs()));
                    worst = worst.max(err);
                    checked += 1;
                    assert!(
                        err < 2e-2,
                        "fc{} [{i}, {j}]: numeric {numeric}, analytic {analytic}",
                        l + 1
                    );
                }
            }
        }
        assert!(checked == model.parameters());
        eprintln!("hidden {hidden:?}: worst relative error {worst:.2e} over {checked} parameters");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// For every example and layer, `g ⊗ a` from the exported factors is the weight
    /// gradient of that example's own loss (a batch of one), `g` its bias gradient, and
    /// their batch mean is the minibatch gradient.
    #[test]
    fn factor_outer_products_are_per_example_gradients(
        seed in 0u64..1000,
        rows in 1usize..7,
        input in 1usize..6,
        hidden in proptest::collection::vec(1usize..6, 0..3),
        classes in 2usize..5,
    ) {
        let model = Mlp::new(input, &hidden, classes, seed).unwrap();
        let (x, y) = random_batch(rows, input, classes, seed ^ 0xabc);
        let factors = per_example_factors(&model, x.view(), &y).unwrap();
        prop_assert_eq!(factors.len(), hidden.len() + 1);
        let (_, batch) = model.loss_and_grad(x.view(), &y).unwrap();
        for (l, f) in factors.iter().enumerate() {
            prop_assert_eq!(&f.name, &format!("fc{}", l + 1));
            let mut mean_w = Array2::<f32>::zeros(batch[l].weight.dim());
            for i in 0..rows {
                let (_, single) = model.loss_and_grad(x.slice(s![i..i + 1, ..]), &y[i..i + 1]).unwrap();
                let g = f.g.row(i);
                let a = f.a.row(i);
                let outer = Array2::from_shape_fn(single[l].weight.dim(), |(p, q)| g[p] * a[q]);
                for (u, v) in outer.iter().zip(single[l].weight.iter()) {
                    prop_assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()), "fc{} example {i}: {u} vs {v}", l + 1);
                }
                for (u, v) in g.iter().zip(single[l].bias.iter()) {
                    prop_assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()));
                }
                mean_w = mean_w + outer / rows as f32;
            }
            for (u, v) in mean_w.iter().zip(batch[l].weight.iter()) {
                prop_assert!((u - v).abs() <= 1e-4 * (1.0 + v.abs()), "fc{} batch: {u} vs {v}", l + 1);
            }
        }
    }
}
