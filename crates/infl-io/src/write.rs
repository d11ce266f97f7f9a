//! Writing one result file atomically ([`Publication`] of one file) and serialising
//! safetensors with a canonical header.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::{Dtype, View};

use crate::publish::{Inputs, Publication};
use crate::{Error, Result};

/// A tensor to write.
#[derive(Clone, Debug, PartialEq)]
pub enum OutTensor {
    /// f32 data with its shape.
    F32(Vec<usize>, Vec<f32>),
    /// i64 data with its shape.
    I64(Vec<usize>, Vec<i64>),
    /// f64 data with its shape (fitted curvature, kept at full precision).
    F64(Vec<usize>, Vec<f64>),
    /// Bytes with their shape (8-bit images).
    U8(Vec<usize>, Vec<u8>),
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

/// Writes `bytes` to `path` atomically (temp file + rename), under [`Publication`]'s rules.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Streams content to `path` atomically (temp file + rename), under [`Publication`]'s
/// rules.
pub fn write_atomic_with(
    path: impl AsRef<Path>,
    f: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let mut publication = Publication::plan(&Inputs::none(), [path])?;
    publication.stage_with(path, f)?;
    publication.publish()
}

/// Rewrites the JSON header of a serialised safetensors buffer with its keys sorted, so
/// that the same tensors and metadata always give the same bytes (the metadata is a
/// `HashMap`, whose order varies between runs). The header keeps its length.
fn canonical_header(buf: &mut [u8]) {
    let Some(n) = buf
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(|b: [u8; 8]| u64::from_le_bytes(b) as usize)
    else {
        return;
    };
    let Some(header) = buf.get(8..8 + n) else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return;
    };
    let Ok(sorted) = serde_json::to_vec(&sorted_keys(value)) else {
        return;
    };
    if sorted.len() <= n {
        let h = &mut buf[8..8 + n];
        h[..sorted.len()].copy_from_slice(&sorted);
        h[sorted.len()..].fill(b' ');
    }
}

/// The value with every object's keys in sorted order, whatever the map type preserves.
fn sorted_keys(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        other => other,
    }
}

/// Serialises tensors (and string metadata) as safetensors, written atomically. The header
/// is canonical (sorted keys): equal content gives byte-identical files.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: Vec<(String, OutTensor)>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    write_atomic(path, &safetensors_bytes(path, tensors, metadata)?)
}

/// The bytes of a safetensors file with a canonical header (`path` is for messages).
pub(crate) fn safetensors_bytes(
    path: &Path,
    tensors: Vec<(String, OutTensor)>,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
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
                OutTensor::F64(shape, v) => Bytes {
                    dtype: Dtype::F64,
                    shape,
                    data: bytemuck::cast_slice(&v).to_vec(),
                },
                OutTensor::U8(shape, data) => Bytes {
                    dtype: Dtype::U8,
                    shape,
                    data,
                },
            };
            (name, b)
        })
        .collect();
    let meta = (!metadata.is_empty()).then_some(metadata);
    let mut buf = safetensors::serialize(bytes.iter().map(|(n, b)| (n.as_str(), b)), meta)
        .map_err(|e| Error::bad(path, "(all)", format!("cannot serialise: {e}")))?;
    canonical_header(&mut buf);
    Ok(buf)
}

/// Refuses anything but a regular file (after following links) before it is opened: a
/// FIFO would block `open` forever, a directory or device would fail with a cryptic error.
pub(crate) fn require_regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        "a special file (FIFO, socket or device)"
    };
    Err(Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {kind}, expected a regular file"),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_content_gives_identical_bytes_and_readable_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta: HashMap<String, String> =
            (0..20).map(|i| (format!("k{i}"), i.to_string())).collect();
        let tensors = || {
            (0..10)
                .map(|i| {
                    (
                        format!("t{i}"),
                        OutTensor::F32(vec![2], vec![i as f32, 1.0]),
                    )
                })
                .collect::<Vec<_>>()
        };
        let (a, b) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
        );
        write_safetensors(&a, tensors(), meta.clone()).expect("write a");
        // A map with another insertion history (and so, likely, another iteration order).
        let mut pairs: Vec<(String, String)> = meta.into_iter().collect();
        pairs.reverse();
        let meta_b: HashMap<String, String> = pairs.into_iter().collect();
        write_safetensors(&b, tensors(), meta_b).expect("write b");
        assert_eq!(std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
        let f = crate::TensorFile::open(&a).expect("readable");
        assert_eq!(f.metadata().get("k7").map(String::as_str), Some("7"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&a).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o644, "mode {mode:o}");
        }
    }
}
