//! Byte-level builders for hostile inputs: safetensors files edited tensor by tensor (any
//! dtype, any shape, inconsistent headers), MNIST IDX files and gzip streams (stored
//! blocks with a correct CRC, so a stream is valid gzip whatever its content).
//!
//! Everything here is independent of infl's own readers and writers, so a bug there
//! cannot hide a bug in the input the test meant to build.

use std::path::Path;

use serde_json::{Map, Value};

/// One tensor: dtype name as in the safetensors header (`F32`, `I64`, ...), shape, bytes.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// A safetensors file in memory.
#[derive(Clone, Debug, Default)]
pub struct St {
    pub metadata: Map<String, Value>,
    pub tensors: Vec<Tensor>,
}

impl St {
    /// Parses a valid safetensors file (fixtures only: panics on anything else).
    pub fn read(path: &Path) -> St {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let data = &bytes[8 + n..];
        let mut st = St::default();
        for (name, v) in header {
            if name == "__metadata__" {
                st.metadata = v.as_object().unwrap().clone();
                continue;
            }
            let off: Vec<usize> = v["data_offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            st.tensors.push(Tensor {
                name,
                dtype: v["dtype"].as_str().unwrap().to_string(),
                shape: v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as usize)
                    .collect(),
                data: data[off[0]..off[1]].to_vec(),
            });
        }
        st
    }

    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// The values of an F32 tensor.
    pub fn f32s(&self, name: &str) -> Vec<f32> {
        let t = self.get(name);
        assert_eq!(t.dtype, "F32", "{name}");
        t.data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// The values of an I64 tensor.
    pub fn i64s(&self, name: &str) -> Vec<i64> {
        let t = self.get(name);
        assert_eq!(t.dtype, "I64", "{name}");
        t.data
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.get(name).shape.clone()
    }

    /// Replaces tensor `name` (or adds it).
    pub fn put(&mut self, name: &str, dtype: &str, shape: &[usize], data: Vec<u8>) {
        self.remove(name);
        self.tensors.push(Tensor {
            name: name.to_string(),
            dtype: dtype.to_string(),
            shape: shape.to_vec(),
            data,
        });
    }

    pub fn put_f32(&mut self, name: &str, shape: &[usize], v: &[f32]) {
        self.put(
            name,
            "F32",
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        );
    }

    pub fn put_f64(&mut self, name: &str, shape: &[usize], v: &[f64]) {
        self.put(
            name,
            "F64",
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        );
    }

    pub fn put_i64(&mut self, name: &str, shape: &[usize], v: &[i64]) {
        self.put(
            name,
            "I64",
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        );
    }

    /// BF16: the top half of each f32 (truncation; exact for NaN, inf and 0.5).
    pub fn put_bf16(&mut self, name: &str, shape: &[usize], v: &[f32]) {
        let data = v
            .iter()
            .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        self.put(name, "BF16", shape, data);
    }

    /// F16 from raw half-precision bit patterns.
    pub fn put_f16_bits(&mut self, name: &str, shape: &[usize], v: &[u16]) {
        self.put(
            name,
            "F16",
            shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        );
    }

    pub fn remove(&mut self, name: &str) {
        self.tensors.retain(|t| t.name != name);
    }

    pub fn set_meta(&mut self, key: &str, value: &str) {
        self.metadata
            .insert(key.into(), Value::String(value.into()));
    }

    /// The header as JSON (offsets in tensor order).
    pub fn header(&self) -> Map<String, Value> {
        let mut h = Map::new();
        if !self.metadata.is_empty() {
            h.insert("__metadata__".into(), Value::Object(self.metadata.clone()));
        }
        let mut at = 0usize;
        for t in &self.tensors {
            h.insert(
                t.name.clone(),
                serde_json::json!({
                    "dtype": t.dtype,
                    "shape": t.shape,
                    "data_offsets": [at, at + t.data.len()],
                }),
            );
            at += t.data.len();
        }
        h
    }

    pub fn data(&self) -> Vec<u8> {
        self.tensors.iter().flat_map(|t| t.data.clone()).collect()
    }

    pub fn bytes(&self) -> Vec<u8> {
        assemble(&serde_json::to_vec(&self.header()).unwrap(), &self.data())
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

/// `len || header (space-padded to 8 bytes) || data`.
pub fn assemble(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = header.to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// Reads `path`, lets `f` change it, writes it back.
pub fn edit(path: &Path, f: impl FnOnce(&mut St)) {
    let mut st = St::read(path);
    f(&mut st);
    st.write(path);
}

/// Rewrites the JSON header of `path` (as `f` likes, however inconsistent) and keeps the
/// data section byte for byte.
pub fn edit_header(path: &Path, f: impl FnOnce(&mut Map<String, Value>)) {
    let st = St::read(path);
    let mut h = st.header();
    f(&mut h);
    std::fs::write(path, assemble(&serde_json::to_vec(&h).unwrap(), &st.data())).unwrap();
}

/// An IDX array of unsigned bytes.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// A valid gzip member holding `data` in stored (uncompressed) deflate blocks.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(65_535).collect()
    };
    let last = chunks.len() - 1;
    for (i, c) in chunks.into_iter().enumerate() {
        out.push(u8::from(i == last));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[test]
fn crc32_matches_the_reference_value() {
    // The check value of CRC-32/ISO-HDLC.
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}
