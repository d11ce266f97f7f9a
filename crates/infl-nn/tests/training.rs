//! Training: learning, determinism (seed and thread count), what observers see.

use std::cell::RefCell;

use infl_core::Presentation;
use infl_nn::{Dataset, Mlp, TrainConfig, TrainHooks, train};
use ndarray::Array2;

/// Four Gaussian-ish blobs in 6-D, deterministic.
fn blobs(n: usize) -> (Array2<f32>, Vec<i64>) {
    let labels: Vec<i64> = (0..n).map(|i| (i * 7 % 4) as i64).collect();
    let x = Array2::from_shape_fn((n, 6), |(i, j)| {
        let c = labels[i] as usize;
        let centre = if j % 4 == c { 2.0 } else { 0.0 };
        let noise = (((i * 131 + j * 71) % 97) as f32 / 97.0 - 0.5) * 1.5;
        centre + noise
    });
    (x, labels)
}

fn run(threads: usize, seed: u64) -> (Mlp, Vec<Presentation>) {
    let (x, y) = blobs(300);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut model = Mlp::new(6, &[70, 16], 4, 7).unwrap();
        let seen = RefCell::new(Vec::new());
        let mut obs = |b: &[Presentation]| seen.borrow_mut().extend_from_slice(b);
        let cfg = TrainConfig {
            epochs: 15,
            batch_size: 100,
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            seed,
        };
        train(
            &mut model,
            Dataset {
                x: x.view(),
                labels: &y,
                ids: None,
            },
            &cfg,
            &mut obs,
            &mut (),
        )
        .unwrap();
        (model, seen.into_inner())
    })
}

#[test]
fn learns_and_is_deterministic_across_thread_counts() {
    let (a, pa) = run(1, 3);
    let (b, pb) = run(2, 3);
    let (c, pc) = run(3, 4);
    assert_eq!(a, b, "the thread count changed the trained weights");
    assert_eq!(pa, pb);
    assert_ne!(pa, pc, "a different seed should shuffle differently");
    assert_ne!(a, c);
    // Every example is presented once per epoch.
    assert_eq!(pa.len(), 15 * 300);
    for epoch in pa.chunks(300) {
        let mut ids: Vec<usize> = epoch.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..300).collect::<Vec<_>>());
    }
    let (x, y) = blobs(300);
    let pred = a.predict(x.view(), 64).unwrap();
    let acc = pred.iter().zip(&y).filter(|(p, y)| p == y).count() as f32 / 300.0;
    assert!(acc > 0.95, "training accuracy {acc}");
}

/// The observer sees the prediction of the forward pass *before* the step: replaying the
/// first batch through the initial model gives the same predictions.
#[test]
fn observer_sees_pre_step_predictions() {
    let (x, y) = blobs(50);
    let init = Mlp::new(6, &[5], 4, 11).unwrap();
    let mut model = init.clone();
    let mut first: Option<Vec<Presentation>> = None;
    let mut obs = |b: &[Presentation]| {
        if first.is_none() {
            first = Some(b.to_vec());
        }
    };
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 50,
        learning_rate: 0.5,
        seed: 1,
        ..Default::default()
    };
    train(
        &mut model,
        Dataset {
            x: x.view(),
            labels: &y,
            ids: None,
        },
        &cfg,
        &mut obs,
        &mut (),
    )
    .unwrap();
    let first = first.unwrap();
    let expected = init.predict(x.view(), 50).unwrap();
    for p in &first {
        assert_eq!(p.predicted, expected[p.id]);
        assert_eq!(p.correct, expected[p.id] == y[p.id]);
    }
    assert_ne!(model, init);
}

#[test]
fn hooks_and_ids_and_bad_settings() {
    struct Count(Vec<(usize, f32)>, usize);
    impl TrainHooks for Count {
        fn on_batch(&mut self, _: usize, _: usize, batches: usize, _: f32) {
            assert_eq!(batches, 3);
            self.1 += 1;
        }
        fn on_epoch_end(&mut self, epoch: usize, _: &Mlp, lr: f32) -> infl_nn::Result<()> {
            self.0.push((epoch, lr));
            Ok(())
        }
    }
    let (x, y) = blobs(25);
    let ids: Vec<usize> = (100..125).collect();
    let mut model = Mlp::new(6, &[4], 4, 0).unwrap();
    let mut hooks = Count(vec![], 0);
    let mut max_id = 0;
    let mut obs = |b: &[Presentation]| max_id = max_id.max(b.iter().map(|p| p.id).max().unwrap());
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 10,
        learning_rate: 0.1,
        ..Default::default()
    };
    let data = Dataset {
        x: x.view(),
        labels: &y,
        ids: Some(&ids),
    };
    let stats = train(&mut model, data, &cfg, &mut obs, &mut hooks).unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(hooks.0, vec![(1, 0.1), (2, 0.1)]);
    assert_eq!(hooks.1, 6);
    assert_eq!(max_id, 124);

    let mut bad = |cfg: TrainConfig| {
        train(
            &mut model,
            data,
            &cfg,
            &mut |_: &[Presentation]| {},
            &mut (),
        )
        .unwrap_err()
        .to_string()
    };
    assert!(
        bad(TrainConfig {
            batch_size: 0,
            ..cfg.clone()
        })
        .contains("batch size")
    );
    assert!(
        bad(TrainConfig {
            learning_rate: -1.0,
            ..cfg.clone()
        })
        .contains("learning rate")
    );
    assert!(
        bad(TrainConfig {
            momentum: 1.5,
            ..cfg.clone()
        })
        .contains("momentum")
    );
    let e = bad(TrainConfig {
        learning_rate: 1e30,
        ..cfg
    });
    assert!(e.contains("diverged"), "{e}");
}
