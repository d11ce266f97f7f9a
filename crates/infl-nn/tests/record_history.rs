//! Records the training history used by the InterpretDL golden test
//! (`fixtures/interpretdl/recorded.json`): every presentation `(id, predicted, correct)` of
//! a small MLP trained on the first 300 images of the bundled MNIST subset with 10% of the
//! labels replaced by a wrong one. Regenerate with
//! `cargo test -p infl-nn --release --test record_history -- --ignored`, then
//! `python fixtures/interpretdl/port.py`.

use std::fmt::Write;
use std::path::Path;

use infl_core::Presentation;
use infl_nn::{Dataset, Mlp, TrainConfig, train};
use ndarray::Array2;

#[test]
#[ignore = "writes fixtures/interpretdl/recorded.json"]
fn record_training_history() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let m = infl_io::mnist::load_mnist(root.join("data/mnist-subset")).unwrap();
    let n = 300;
    let x = Array2::from_shape_fn((n, 784), |(i, j)| f32::from(m.train.image(i)[j]) / 255.0);
    let mut y: Vec<i64> = m.train.labels[..n].iter().map(|&l| i64::from(l)).collect();
    // Every tenth label is shifted to a wrong class.
    for i in (0..n).step_by(10) {
        y[i] = (y[i] + 1 + (i as i64 / 10) % 9) % 10;
    }
    // Ids need not be row numbers: use 1000 + row.
    let ids: Vec<usize> = (0..n).map(|i| 1000 + i).collect();
    let mut model = Mlp::new(784, &[32], 10, 5).unwrap();
    let cfg = TrainConfig {
        epochs: 20,
        batch_size: 32,
        learning_rate: 0.05,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 5,
    };
    let mut seen: Vec<Presentation> = Vec::new();
    let mut obs = |b: &[Presentation]| seen.extend_from_slice(b);
    train(
        &mut model,
        Dataset {
            x: x.view(),
            labels: &y,
            ids: Some(&ids),
        },
        &cfg,
        &mut obs,
        &mut (),
    )
    .unwrap();
    let mut out = String::from(
        "{\"source\": \"infl-nn MLP 784-32-10 on the first 300 bundled MNIST images, every 10th label wrong, 20 epochs, batch 32, lr 0.05, momentum 0.9, seed 5\",\n \"epochs\": [20, 7, 1],\n \"presentations\": [",
    );
    for (i, p) in seen.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if i % 8 == 0 {
            out.push_str("\n  ");
        }
        write!(out, "[{}, {}, {}]", p.id, p.predicted, u8::from(p.correct)).unwrap();
    }
    out.push_str("\n]}\n");
    std::fs::write(root.join("fixtures/interpretdl/recorded.json"), out).unwrap();
}
