//! Builders of input files for infl-io's tests: safetensors by hand (any dtype, any
//! offsets), IDX (raw and gzip) and manifests.

// Each test binary uses a subset of these builders.
#![allow(dead_code)]

use std::io::Write;

use half::{bf16, f16};
use serde_json::{Map, Value, json};

/// One tensor of a hand-built safetensors file.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Its name.
    pub name: String,
    /// Its dtype as the header spells it (`F32`, `I64`...).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its bytes.
    pub data: Vec<u8>,
    /// Offsets to write instead of the right ones.
    pub offsets: Option<(usize, usize)>,
}

/// A tensor with the right offsets.
pub fn spec(name: &str, dtype: &str, shape: &[usize], data: Vec<u8>) -> Spec {
    Spec {
        name: name.into(),
        dtype: dtype.into(),
        shape: shape.to_vec(),
        data,
        offsets: None,
    }
}

/// A safetensors file holding `tensors` (data in the given order) and `metadata`.
pub fn safetensors(tensors: &[Spec], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        let meta: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        header.insert("__metadata__".into(), Value::Object(meta));
    }
    let mut data = Vec::new();
    for t in tensors {
        let right = (data.len(), data.len() + t.data.len());
        let (b, e) = t.offsets.unwrap_or(right);
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [b, e]}),
        );
        data.extend_from_slice(&t.data);
    }
    let text = serde_json::to_vec(&Value::Object(header)).expect("json");
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&data);
    out
}

/// Little-endian bytes of f32 values.
pub fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of f64 values.
pub fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of f16 values.
pub fn f16s(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect()
}

/// Little-endian bytes of bf16 values.
pub fn bf16s(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect()
}

/// Little-endian bytes of i64 values.
pub fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of i32 values.
pub fn i32s(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An IDX file of unsigned bytes.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// `bytes` gzip-compressed.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// A manifest listing checkpoints `a` and `b` with train and test files.
pub fn manifest() -> Vec<u8> {
    br#"{"checkpoints": [
  {"checkpoint": "a.safetensors", "train": "a.train.safetensors",
   "test": "a.test.safetensors", "learning_rate": 0.1},
  {"checkpoint": "b.safetensors", "train": "b.train.safetensors",
   "test": "b.test.safetensors", "learning_rate": 0.05}
]}"#
    .to_vec()
}
