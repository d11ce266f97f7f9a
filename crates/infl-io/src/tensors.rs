//! Reading tensors from a memory-mapped safetensors file.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use infl_core::Matrix;
use infl_core::matrix::F32Storage;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

/// A safetensors file, memory-mapped, with its header parsed.
///
/// Float tensors are returned as `f32` [`Matrix`]es: little-endian, suitably aligned f32
/// data is not copied (the matrix borrows the map); f16, bf16 and f64 are converted.
#[derive(Debug)]
pub struct TensorFile {
    path: PathBuf,
    map: Arc<Mmap>,
    data_start: usize,
    tensors: HashMap<String, Entry>,
    metadata: HashMap<String, String>,
}

/// Dtype, shape and position of one tensor, from the header.
#[derive(Debug)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte offsets relative to the start of the data section.
    offsets: Range<usize>,
}

/// One tensor's header entry and its bytes in the map.
struct Raw<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    bytes: &'a [u8],
    /// Offset of `bytes` from the start of the map (for alignment).
    start: usize,
}

/// Dtype and shape of a tensor (see [`TensorFile::info`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorInfo<'a> {
    /// The stored element type.
    pub dtype: Dtype,
    /// The shape, outermost dimension first.
    pub shape: &'a [usize],
}

/// Which tensor ranks [`TensorFile::matrix`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rank {
    /// Only 2-D tensors `[rows, cols]`.
    Matrix,
    /// 2-D tensors, or 1-D tensors `[rows]` read as one column.
    MatrixOrVector,
}

struct MappedF32 {
    map: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl F32Storage for MappedF32 {
    fn as_f32(&self) -> &[f32] {
        // Alignment and size were checked when the storage was created.
        bytemuck::cast_slice(&self.map[self.start..self.start + self.len * 4])
    }
}

impl TensorFile {
    /// Maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        crate::write::require_regular_file(&path)?;
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only. As with every memory-mapped reader, a file truncated
        // by another process while mapped is outside what we can defend against.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let (header_len, meta) =
            SafeTensors::read_metadata(&map).map_err(|e| Error::NotSafetensors {
                path: path.clone(),
                details: e.to_string(),
            })?;
        let tensors = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (start, end) = info.data_offsets;
                let entry = Entry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    offsets: start..end,
                };
                (name, entry)
            })
            .collect();
        Ok(Self {
            metadata: meta.metadata().clone().unwrap_or_default(),
            path,
            map: Arc::new(map),
            data_start: 8 + header_len,
            tensors,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }

    /// True if the file has tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The string metadata of the header (`__metadata__`).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Dtype and shape of tensor `name`.
    pub fn info(&self, name: &str) -> Result<TensorInfo<'_>> {
        let e = self.get(name)?;
        Ok(TensorInfo {
            dtype: e.dtype,
            shape: &e.shape,
        })
    }

    fn get(&self, name: &str) -> Result<&Entry> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            available: self.names(),
        })
    }

    fn raw(&self, name: &str) -> Result<Raw<'_>> {
        let e = self.get(name)?;
        let start = self.data_start + e.offsets.start;
        Ok(Raw {
            dtype: e.dtype,
            shape: &e.shape,
            bytes: &self.map[start..self.data_start + e.offsets.end],
            start,
        })
    }

    /// A float tensor as an `[rows, cols]` f32 matrix. 2-D tensors keep their shape;
    /// 1-D tensors become one column when `rank` is [`Rank::MatrixOrVector`].
    pub fn matrix(&self, name: &str, rank: Rank) -> Result<Matrix> {
        let Raw {
            dtype,
            shape,
            bytes,
            start,
        } = self.raw(name)?;
        let (rows, cols) = match (shape, rank) {
            ([r, c], _) => (*r, *c),
            ([r], Rank::MatrixOrVector) => (*r, 1),
            _ => {
                let expected = match rank {
                    Rank::Matrix => "2-D",
                    Rank::MatrixOrVector => "1-D or 2-D",
                };
                return Err(Error::bad(
                    &self.path,
                    name,
                    format!("expected a {expected} tensor, found shape {shape:?}"),
                ));
            }
        };
        if dtype == Dtype::F32 && cfg!(target_endian = "little") && start % 4 == 0 {
            let storage = MappedF32 {
                map: self.map.clone(),
                start,
                len: rows * cols,
            };
            return Ok(Matrix::from_storage(rows, cols, Arc::new(storage))?);
        }
        let data = self.floats(name, dtype, bytes)?;
        Ok(Matrix::from_vec(rows, cols, data)?)
    }

    /// A 1-D float tensor as `Vec<f32>`.
    pub fn vector(&self, name: &str) -> Result<Vec<f32>> {
        let Raw {
            dtype,
            shape,
            bytes,
            ..
        } = self.raw(name)?;
        if shape.len() != 1 {
            return Err(Error::bad(
                &self.path,
                name,
                format!("expected a 1-D tensor, found shape {shape:?}"),
            ));
        }
        self.floats(name, dtype, bytes)
    }

    fn floats(&self, name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
        Ok(match dtype {
            Dtype::F32 => pod::<f32>(bytes),
            Dtype::F64 => pod::<f64>(bytes).into_iter().map(|x| x as f32).collect(),
            Dtype::F16 => pod::<f16>(bytes).into_iter().map(f32::from).collect(),
            Dtype::BF16 => pod::<bf16>(bytes).into_iter().map(f32::from).collect(),
            other => {
                return Err(Error::bad(
                    &self.path,
                    name,
                    format!("expected a float tensor (F32, F16, BF16 or F64), found {other:?}"),
                ));
            }
        })
    }

    /// A 1-D integer tensor (any integer dtype) as `Vec<i64>`.
    pub fn integers(&self, name: &str) -> Result<Vec<i64>> {
        let shape = self.info(name)?.shape;
        if shape.len() != 1 {
            return Err(Error::bad(
                &self.path,
                name,
                format!("expected a 1-D tensor, found shape {shape:?}"),
            ));
        }
        self.integers_flat(name)
    }

    /// An integer tensor of any shape (any integer dtype), flattened row-major.
    pub fn integers_flat(&self, name: &str) -> Result<Vec<i64>> {
        let Raw { dtype, bytes, .. } = self.raw(name)?;
        let v: Vec<i64> = match dtype {
            Dtype::I64 => pod::<i64>(bytes),
            Dtype::I32 => pod::<i32>(bytes).into_iter().map(i64::from).collect(),
            Dtype::I16 => pod::<i16>(bytes).into_iter().map(i64::from).collect(),
            Dtype::I8 => pod::<i8>(bytes).into_iter().map(i64::from).collect(),
            Dtype::U8 => bytes.iter().map(|&b| i64::from(b)).collect(),
            Dtype::U16 => pod::<u16>(bytes).into_iter().map(i64::from).collect(),
            Dtype::U32 => pod::<u32>(bytes).into_iter().map(i64::from).collect(),
            Dtype::U64 => pod::<u64>(bytes)
                .into_iter()
                .map(|x| {
                    i64::try_from(x).map_err(|_| {
                        Error::bad(&self.path, name, format!("value {x} does not fit in i64"))
                    })
                })
                .collect::<Result<_>>()?,
            other => {
                return Err(Error::bad(
                    &self.path,
                    name,
                    format!("expected an integer tensor, found {other:?}"),
                ));
            }
        };
        Ok(v)
    }
}

/// Little-endian POD decode that tolerates unaligned data (copies).
fn pod<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    bytemuck::pod_collect_to_vec(bytes)
}
