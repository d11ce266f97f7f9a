//! Checkpoints and run directories: PyTorch names and layout, metadata, and what infl-io
//! reads back; the committed PyTorch round-trip fixture.

use std::path::Path;

use infl_io::{
    Rank, RunLayout, TensorFile, TensorInfo, load_checkpoint as io_checkpoint, load_examples,
};
use infl_nn::{
    CheckpointMeta, FactorFiles, Mlp, RunWriter, Split, SplitImages, load_checkpoint,
    penultimate_features, save_checkpoint,
};
use ndarray::Array2;
use safetensors::Dtype;

fn inputs(n: usize, d: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, d), |(i, j)| ((i * 13 + j * 7) % 17) as f32 / 17.0 - 0.4)
}

#[test]
fn checkpoint_names_shapes_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let model = Mlp::new(5, &[4, 3], 2, 1).unwrap();
    let meta = CheckpointMeta {
        learning_rate: Some(0.25),
        epoch: Some(3),
    };
    save_checkpoint(&model, &path, &meta).unwrap();
    let f = TensorFile::open(&path).unwrap();
    assert_eq!(
        f.names(),
        vec![
            "fc1.bias",
            "fc1.weight",
            "fc2.bias",
            "fc2.weight",
            "fc3.bias",
            "fc3.weight"
        ]
    );
    assert_eq!(
        f.info("fc1.weight").unwrap(),
        TensorInfo {
            dtype: Dtype::F32,
            shape: &[4, 5]
        }
    );
    assert_eq!(
        f.info("fc2.bias").unwrap(),
        TensorInfo {
            dtype: Dtype::F32,
            shape: &[3]
        }
    );
    assert_eq!(
        f.info("fc3.weight").unwrap(),
        TensorInfo {
            dtype: Dtype::F32,
            shape: &[2, 3]
        }
    );
    assert_eq!(f.metadata()["learning_rate"], "0.25");
    assert_eq!(f.metadata()["epoch"], "3");
    assert_eq!(f.metadata()["sizes"], "5,4,3,2");
    // Weights are stored [out, in] row-major, as nn.Linear.
    let w = f.matrix("fc1.weight", Rank::Matrix).unwrap();
    assert_eq!(
        w.view().row(2),
        model.layers()[0].weight.row(2).to_vec().as_slice()
    );
    let (back, m) = load_checkpoint(&path).unwrap();
    assert_eq!(back, model);
    assert_eq!(m, meta);
    // infl-io reads the last layer with its learning rate.
    let c = io_checkpoint(&path, "fc3").unwrap();
    assert_eq!(c.learning_rate, Some(0.25));
    assert_eq!((c.weight.rows(), c.weight.cols()), (2, 3));
}

#[test]
fn bad_checkpoints_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.safetensors");
    infl_io::write_safetensors(
        &path,
        vec![(
            "conv.weight".into(),
            infl_io::OutTensor::F32(vec![1, 1], vec![1.0]),
        )],
        Default::default(),
    )
    .unwrap();
    let e = load_checkpoint(&path).unwrap_err().to_string();
    assert!(
        e.contains("x.safetensors") && e.contains("fc1.weight") && e.contains("conv.weight"),
        "{e}"
    );
    infl_io::write_safetensors(
        &path,
        vec![
            (
                "fc1.weight".into(),
                infl_io::OutTensor::F32(vec![2, 3], vec![0.0; 6]),
            ),
            (
                "fc1.bias".into(),
                infl_io::OutTensor::F32(vec![2], vec![0.0; 2]),
            ),
            (
                "fc2.weight".into(),
                infl_io::OutTensor::F32(vec![2, 4], vec![0.0; 8]),
            ),
            (
                "fc2.bias".into(),
                infl_io::OutTensor::F32(vec![2], vec![0.0; 2]),
            ),
        ],
        Default::default(),
    )
    .unwrap();
    let e = load_checkpoint(&path).unwrap_err().to_string();
    assert!(e.contains("fc2.weight") && e.contains("[out, 2]"), "{e}");
}

/// The learning rate is parsed by infl-io's one parser: a non-finite value is rejected by
/// the trainer's loader exactly as by attribution's.
#[test]
fn non_finite_learning_rates_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lr.safetensors");
    save_checkpoint(
        &Mlp::new(3, &[], 2, 0).unwrap(),
        &path,
        &CheckpointMeta {
            learning_rate: Some(f32::INFINITY),
            epoch: Some(1),
        },
    )
    .unwrap();
    let expected = format!(
        "{}: tensor `learning_rate (metadata)`: expected a finite number, found \"inf\"",
        path.display()
    );
    let e = load_checkpoint(&path).unwrap_err();
    assert_eq!(e.to_string(), expected);
    assert_eq!(
        io_checkpoint(&path, "fc1").unwrap_err().to_string(),
        expected
    );
}

#[test]
fn run_directory_follows_the_convention() {
    let dir = tempfile::tempdir().unwrap();
    let model = Mlp::new(6, &[5], 3, 2).unwrap();
    let (xt, xs) = (inputs(9, 6), inputs(4, 6));
    let (yt, ys) = (vec![0, 1, 2, 0, 1, 2, 0, 1, 2i64], vec![2, 1, 0, 0i64]);
    let idt: Vec<i64> = (10..19).collect();
    let ids: Vec<i64> = (0..4).collect();
    // The test examples' 2 x 3 images, given at the last checkpoint only.
    let pixels: Vec<u8> = (0..4 * 6).map(|i| (i * 10) as u8).collect();
    let images = SplitImages {
        pixels: &pixels,
        height: 2,
        width: 3,
    };
    let w = RunWriter::new(dir.path(), FactorFiles::Write).unwrap();
    for e in 1..=2 {
        let meta = CheckpointMeta {
            learning_rate: Some(0.1 * e as f32),
            epoch: Some(e),
        };
        w.write(
            &format!("epoch-{e}"),
            &model,
            &meta,
            Split {
                x: xt.view(),
                labels: &yt,
                ids: &idt,
                images: None,
            },
            Some(Split {
                x: xs.view(),
                labels: &ys,
                ids: &ids,
                images: (e == 2).then_some(images),
            }),
        )
        .unwrap();
    }
    // Images of the wrong size are refused.
    let short = SplitImages {
        pixels: &pixels[..20],
        ..images
    };
    let split = |images| Split {
        x: xs.view(),
        labels: &ys,
        ids: &ids,
        images: Some(images),
    };
    let meta = CheckpointMeta {
        learning_rate: Some(0.1),
        epoch: None,
    };
    let e = w
        .write("bad", &model, &meta, split(short), None)
        .unwrap_err();
    assert!(e.to_string().contains("4 images of 2 x 3 pixels"), "{e}");
    std::fs::remove_file(dir.path().join("bad.safetensors")).unwrap();
    for file in [
        "epoch-2.test.safetensors",
        "factors/epoch-2.test.safetensors",
    ] {
        let read = infl_io::Images::open(dir.path().join(file))
            .unwrap()
            .unwrap();
        assert_eq!(
            (read.count, read.height, read.width, read.channels),
            (4, 2, 3, 1)
        );
        assert_eq!(read.image(3).unwrap(), pixels[18..]);
    }
    let earlier = dir.path().join("epoch-1.test.safetensors");
    assert!(infl_io::Images::open(earlier).unwrap().is_none());
    let layout = RunLayout::discover(dir.path()).unwrap();
    assert_eq!(
        layout.entries.len(),
        2,
        "factor files must not be taken for checkpoints"
    );
    assert!(layout.has_test());
    let ex = load_examples(&layout.entries[1].train).unwrap();
    assert_eq!(ex.labels.as_deref(), Some(&yt[..]));
    assert_eq!(ex.ids.as_deref(), Some(&idt[..]));
    let feats = penultimate_features(&model, xt.view()).unwrap();
    assert_eq!(ex.features.data(), feats.as_slice().unwrap());
    let fac = TensorFile::open(dir.path().join("factors/epoch-2.test.safetensors")).unwrap();
    assert_eq!(
        fac.names(),
        vec![
            "fc1.a",
            "fc1.g",
            "fc1.g_sampled",
            "fc2.a",
            "fc2.g",
            "fc2.g_sampled",
            "ids",
            "images",
            "labels"
        ]
    );
    assert_eq!(fac.info("fc2.g_sampled").unwrap().shape, &[4, 3]);
    assert_eq!(fac.info("fc1.a").unwrap().shape, &[4, 6]);
    assert_eq!(fac.info("fc2.g").unwrap().shape, &[4, 3]);
    assert_eq!(fac.metadata()["learning_rate"], "0.2");
}

/// The committed PyTorch round trip: `fixtures/nn_roundtrip/check.py` loads
/// `model.safetensors` with `safetensors.torch.load_file` into an `nn.Module` and records
/// its logits on `inputs.safetensors`; infl-nn must give the same logits.
#[test]
fn pytorch_round_trip_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/nn_roundtrip");
    let (model, meta) = load_checkpoint(dir.join("model.safetensors")).unwrap();
    assert_eq!(model.sizes(), vec![12, 16, 8, 5]);
    assert_eq!(meta.epoch, Some(2));
    let data = TensorFile::open(dir.join("torch_logits.safetensors")).unwrap();
    let x = data.matrix("inputs", Rank::Matrix).unwrap();
    let torch = data.matrix("logits", Rank::Matrix).unwrap();
    let x = Array2::from_shape_vec((x.rows(), x.cols()), x.to_vec()).unwrap();
    let ours = model.logits(x.view()).unwrap();
    assert_eq!(ours.dim(), (torch.rows(), torch.cols()));
    for (a, b) in ours.iter().zip(torch.data()) {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "logit {a} vs torch {b}"
        );
    }
}

/// Regenerates the Rust side of the round-trip fixture (then run check.py):
/// `cargo test -p infl-nn --test checkpoints -- --ignored write_round_trip_fixture`.
#[test]
#[ignore = "writes fixtures/nn_roundtrip; run by hand before check.py"]
fn write_round_trip_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/nn_roundtrip");
    std::fs::create_dir_all(&dir).unwrap();
    let mut model = Mlp::new(12, &[16, 8], 5, 42).unwrap();
    let x = inputs(20, 12);
    let y: Vec<i64> = (0..20).map(|i| (i % 5) as i64).collect();
    let cfg = infl_nn::TrainConfig {
        epochs: 2,
        batch_size: 8,
        learning_rate: 0.1,
        seed: 1,
        ..Default::default()
    };
    let data = infl_nn::Dataset {
        x: x.view(),
        labels: &y,
        ids: None,
    };
    infl_nn::train(
        &mut model,
        data,
        &cfg,
        &mut |_: &[infl_core::Presentation]| {},
        &mut (),
    )
    .unwrap();
    save_checkpoint(
        &model,
        dir.join("model.safetensors"),
        &CheckpointMeta {
            learning_rate: Some(0.1),
            epoch: Some(2),
        },
    )
    .unwrap();
    let logits = model.logits(x.view()).unwrap();
    infl_io::write_safetensors(
        dir.join("inputs.safetensors"),
        vec![
            (
                "inputs".into(),
                infl_io::OutTensor::F32(vec![20, 12], x.iter().copied().collect()),
            ),
            (
                "rust_logits".into(),
                infl_io::OutTensor::F32(vec![20, 5], logits.iter().copied().collect()),
            ),
        ],
        Default::default(),
    )
    .unwrap();
}
