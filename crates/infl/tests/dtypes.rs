//! f16/bf16/f64 inputs give the f32 result within their precision; safetensors round
//! trips through infl-io are exact for f32 and integer tensors of every width.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use half::{bf16, f16};
use infl::io::{OutTensor, Rank, RunLayout, TensorFile, write_safetensors};
use infl::{Bias, Engine, Estimator, Run, Splits, TracInCPFast, load_run};
use infl_core::testing::rand_matrix;
use proptest::prelude::*;
use safetensors::{Dtype, View};

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn floats(dtype: Dtype, shape: Vec<usize>, v: &[f32]) -> Raw {
    let data = match dtype {
        Dtype::F32 => bytemuck_bytes(v.iter().flat_map(|x| x.to_le_bytes())),
        Dtype::F64 => bytemuck_bytes(v.iter().flat_map(|x| (*x as f64).to_le_bytes())),
        Dtype::F16 => bytemuck_bytes(v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes())),
        Dtype::BF16 => bytemuck_bytes(v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes())),
        _ => unreachable!(),
    };
    Raw { dtype, shape, data }
}

fn bytemuck_bytes(it: impl Iterator<Item = u8>) -> Vec<u8> {
    it.collect()
}

fn save(path: &Path, tensors: Vec<(&str, Raw)>, meta: Option<HashMap<String, String>>) {
    let bytes = safetensors::serialize(tensors.iter().map(|(n, r)| (*n, r)), meta).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Writes a 3-checkpoint run with float tensors stored as `dtype` and labels as `int`.
fn write_run(dir: &Path, dtype: Dtype, int: Dtype) {
    let (n, t, d, k) = (50, 6, 16, 5);
    for c in 0..3u64 {
        let name = format!("ckpt-{c}");
        let w = rand_matrix(k, d, 100 + c);
        let b = rand_matrix(k, 1, 200 + c);
        save(
            &dir.join(format!("{name}.safetensors")),
            vec![
                ("head.weight", floats(dtype, vec![k, d], w.data())),
                ("head.bias", floats(dtype, vec![k], b.data())),
            ],
            Some(HashMap::from([(
                "learning_rate".into(),
                format!("{}", 0.5 / (c + 1) as f32),
            )])),
        );
        for (split, rows, s) in [("train", n, 1u64), ("test", t, 2)] {
            let f = rand_matrix(rows, d, 300 + 10 * c + s).to_vec();
            let labels: Vec<i64> = (0..rows as i64)
                .map(|i| (i * 7 + s as i64) % k as i64)
                .collect();
            let lab = match int {
                Dtype::I64 => labels.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::I32 => labels
                    .iter()
                    .flat_map(|x| (*x as i32).to_le_bytes())
                    .collect(),
                Dtype::U8 => labels.iter().map(|x| *x as u8).collect(),
                Dtype::I16 => labels
                    .iter()
                    .flat_map(|x| (*x as i16).to_le_bytes())
                    .collect(),
                _ => unreachable!(),
            };
            save(
                &dir.join(format!("{name}.{split}.safetensors")),
                vec![
                    ("features", floats(dtype, vec![rows, d], &f)),
                    (
                        "labels",
                        Raw {
                            dtype: int,
                            shape: vec![rows],
                            data: lab,
                        },
                    ),
                ],
                None,
            );
        }
    }
}

fn run_scores(dir: &Path) -> (Vec<f32>, Vec<f32>) {
    let data = load_run(
        &RunLayout::discover(dir).unwrap(),
        "head",
        Splits::TrainAndTest,
    )
    .unwrap();
    let e = Engine::default();
    let est = TracInCPFast {
        bias: Bias::Included,
        ..Default::default()
    };
    let p = est.prepare(e.backend(), &Run::from(data), &()).unwrap();
    (
        e.scores(&p.set, &()).unwrap(),
        e.self_influence(&p.set).unwrap(),
    )
}

#[test]
fn low_and_high_precision_inputs_match_f32() {
    let base = tempfile::tempdir().unwrap();
    write_run(base.path(), Dtype::F32, Dtype::I64);
    let (want, want_self) = run_scores(base.path());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let self_scale = want_self.iter().fold(0f32, |m, x| m.max(x.abs()));
    // Relative error budget: two units of the format's epsilon (f16 9.8e-4, bf16 7.8e-3), amplified by the
    // softmax and the products of dot products.
    for (dtype, int, eps) in [
        (Dtype::F64, Dtype::I32, 1e-6f32),
        (Dtype::F16, Dtype::U8, 2e-3),
        (Dtype::BF16, Dtype::I16, 1.6e-2),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_run(dir.path(), dtype, int);
        let (got, got_self) = run_scores(dir.path());
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        let self_err = got_self
            .iter()
            .zip(&want_self)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / self_scale;
        eprintln!("{dtype:?}: relative error {err}, self {self_err}");
        assert!(err <= eps, "{dtype:?}: max relative error {err} > {eps}");
        assert!(
            self_err <= eps,
            "{dtype:?}: self-influence relative error {self_err} > {eps}"
        );
        // ... and the error is not zero for the lossy formats (the test can see rounding).
        if dtype != Dtype::F64 {
            assert!(
                err > 0.0,
                "{dtype:?} gave bit-identical scores: was it really converted?"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever infl writes, infl reads back unchanged (f32 and i64, any shape, metadata).
    #[test]
    fn safetensors_round_trip(
        rows in 0usize..20, cols in 1usize..9, seed in any::<u64>(),
        ints in proptest::collection::vec(any::<i64>(), 0..30),
        key in "[a-z_]{1,12}", value in "[ -~]{0,40}",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let m = rand_matrix(rows, cols, seed).to_vec();
        write_safetensors(
            &path,
            vec![
                ("m".into(), OutTensor::F32(vec![rows, cols], m.clone())),
                ("v".into(), OutTensor::I64(vec![ints.len()], ints.clone())),
            ],
            HashMap::from([(key.clone(), value.clone())]),
        ).unwrap();
        let f = TensorFile::open(&path).unwrap();
        prop_assert_eq!(f.matrix("m", Rank::Matrix).unwrap().to_vec(), m);
        prop_assert_eq!(f.integers("v").unwrap(), ints);
        prop_assert_eq!(f.metadata().get(&key), Some(&value));
        prop_assert_eq!(f.names(), vec!["m".to_string(), "v".to_string()]);
    }
}
