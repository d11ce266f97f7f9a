//! Writing results atomically: to a temporary file in the destination's folder, then a
//! rename, so an interrupted run never leaves a partial result.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::{Dtype, View};

use crate::{Error, Result};

/// A tensor to write.
#[derive(Clone, Debug, PartialEq)]
pub enum OutTensor {
    /// f32 data with its shape.
    F32(Vec<usize>, Vec<f32>),
    /// i64 data with its shape.
    I64(Vec<usize>, Vec<i64>),
}

struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes `bytes` to `path` atomically (temp file + rename).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Streams content to `path` atomically (temp file + rename).
pub fn write_atomic_with(
    path: impl AsRef<Path>,
    f: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".infl-tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(path, e))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        f(&mut w).map_err(|e| Error::io(path, e))?;
        w.flush().map_err(|e| Error::io(path, e))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Serialises tensors (and string metadata) as safetensors, written atomically.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: Vec<(String, OutTensor)>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let bytes: Vec<(String, Bytes)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let b = match t {
                OutTensor::F32(shape, v) => Bytes {
                    dtype: Dtype::F32,
                    shape,
                    data: bytemuck::cast_slice(&v).to_vec(),
                },
                OutTensor::I64(shape, v) => Bytes {
                    dtype: Dtype::I64,
                    shape,
                    data: bytemuck::cast_slice(&v).to_vec(),
                },
            };
            (name, b)
        })
        .collect();
    let meta = (!metadata.is_empty()).then_some(metadata);
    let buf = safetensors::serialize(bytes.iter().map(|(n, b)| (n.as_str(), b)), meta)
        .map_err(|e| Error::bad(path, "(all)", format!("cannot serialise: {e}")))?;
    write_atomic(path, &buf)
}
