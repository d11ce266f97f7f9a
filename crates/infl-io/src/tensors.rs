//! Reading tensors from a memory-mapped safetensors file.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use infl_core::Matrix;
use infl_core::matrix::F32Storage;
use memmap2::Mmap;
use safetensors::Dtype;
use serde::Deserialize;
use serde_json::{Map, Value};

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
    /// 2-D tensors, or 3-D tensors `[n, s, cols]` read as `[n·s, cols]` (per-example
    /// positions — tokens, conv patches — as consecutive rows).
    MatrixOrBatched,
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
        let header = Header::parse(&path, &map)?;
        Ok(Self {
            path,
            map: Arc::new(map),
            data_start: 8 + header.len,
            tensors: header.tensors,
            metadata: header.metadata,
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

    /// The bytes of tensor `name` as stored (little-endian, its dtype's width each).
    pub(crate) fn raw_bytes(&self, name: &str) -> Result<&[u8]> {
        Ok(self.raw(name)?.bytes)
    }

    /// A float tensor as an `[rows, cols]` f32 matrix. 2-D tensors keep their shape;
    /// 1-D tensors become one column when `rank` is [`Rank::MatrixOrVector`], 3-D ones
    /// `[n·s, cols]` when it is [`Rank::MatrixOrBatched`].
    pub fn matrix(&self, name: &str, rank: Rank) -> Result<Matrix> {
        self.matrix_rows(name, rank, None)
    }

    /// [`matrix`](Self::matrix) restricted to the rows `rows` (of the `[rows, cols]`
    /// reading; `None`: all of them), which alone are read: a shard of a large file maps
    /// and converts only its own rows. A range past the end is an error naming the tensor.
    pub fn matrix_rows(
        &self,
        name: &str,
        rank: Rank,
        only: Option<Range<usize>>,
    ) -> Result<Matrix> {
        let Raw {
            dtype,
            shape,
            bytes,
            start,
        } = self.raw(name)?;
        let (rows, cols) = match (shape, rank) {
            ([r, c], _) => (*r, *c),
            ([r], Rank::MatrixOrVector) => (*r, 1),
            // The header check proved that the data holds n·s·c elements: no overflow.
            ([n, s, c], Rank::MatrixOrBatched) => (n * s, *c),
            _ => {
                let expected = match rank {
                    Rank::Matrix => "2-D",
                    Rank::MatrixOrVector => "1-D or 2-D",
                    Rank::MatrixOrBatched => "2-D [N, D] or 3-D [N, S, D]",
                };
                return Err(Error::bad(
                    &self.path,
                    name,
                    format!("expected a {expected} tensor, found shape {shape:?}"),
                ));
            }
        };
        let (rows, bytes, start) = match only {
            None => (rows, bytes, start),
            Some(r) if r.start <= r.end && r.end <= rows => {
                let row_bytes = cols * dtype.bitsize() / 8;
                let cut = r.start * row_bytes..r.end * row_bytes;
                (r.len(), &bytes[cut.clone()], start + cut.start)
            }
            Some(r) => {
                let details = format!("rows {r:?}; expected a range within its {rows} rows");
                return Err(Error::bad(&self.path, name, details));
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

    /// An f64 tensor `name` of exactly `shape`, at full precision (no other dtype, no
    /// non-finite value).
    pub fn f64s(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let Raw {
            dtype,
            shape: found,
            bytes,
            ..
        } = self.raw(name)?;
        if dtype != Dtype::F64 || found != shape {
            let details = format!("{dtype:?} {found:?}; expected F64 {shape:?}");
            return Err(Error::bad(&self.path, name, details));
        }
        let v: Vec<f64> = pod(bytes);
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            let details = format!("a non-finite value ({}) at flat index {i}", v[i]);
            return Err(Error::bad(&self.path, name, details));
        }
        Ok(v)
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

/// The largest JSON header accepted (the safetensors crate's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// A header, checked against the file: every entry's size matches its shape, the entries
/// tile the data area exactly (no gap, no overlap), and the file ends where the data does.
struct Header {
    /// Length of the JSON text (after the 8-byte length prefix).
    len: usize,
    tensors: HashMap<String, Entry>,
    metadata: HashMap<String, String>,
}

/// A tensor's entry as written in the JSON header.
#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

impl Header {
    /// Parses and checks the header of `file` (the whole mapped file).
    fn parse(path: &Path, file: &[u8]) -> Result<Self> {
        let json = json_text(path, file)?;
        let map: Map<String, Value> = serde_json::from_str(json).map_err(|e| {
            Error::not_safetensors(
                path,
                format!("the JSON header is not a valid JSON object: {e}"),
            )
        })?;
        let mut header = Self {
            len: json.len(),
            tensors: HashMap::with_capacity(map.len()),
            metadata: HashMap::new(),
        };
        for (name, value) in map {
            if name == "__metadata__" {
                header.metadata = serde_json::from_value(value).map_err(|e| {
                    Error::not_safetensors(
                        path,
                        format!("`__metadata__`: expected an object of strings: {e}"),
                    )
                })?;
            } else {
                let entry = Entry::parse(path, &name, value)?;
                header.tensors.insert(name, entry);
            }
        }
        let data_len = file.len() - 8 - header.len;
        header.check_layout(path, data_len)?;
        Ok(header)
    }

    /// The entries, sorted by offset, tile `[0, data_len)` exactly.
    fn check_layout(&self, path: &Path, data_len: usize) -> Result<()> {
        let mut sorted: Vec<(&String, &Range<usize>)> =
            self.tensors.iter().map(|(n, e)| (n, &e.offsets)).collect();
        sorted.sort_unstable_by_key(|(n, r)| (r.start, r.end, *n));
        let mut end = 0;
        let mut last: Option<&str> = None;
        for (name, r) in sorted {
            let after = || last.map_or("the start of the data".into(), |l| format!("`{l}`"));
            if r.start != end {
                let what = if r.start > end {
                    format!("a gap of {} bytes after {}", r.start - end, after())
                } else {
                    format!("an overlap with {}, which ends at {end}", after())
                };
                return Err(Error::bad_entry(
                    path,
                    name.as_str(),
                    format!(
                        "data_offsets [{}, {}] leave {what}: the data must be contiguous",
                        r.start, r.end
                    ),
                ));
            }
            end = r.end;
            last = Some(name);
        }
        check_data_len(path, end, data_len, 8 + self.len, last)
    }
}

/// The JSON text of the header, after checking its length prefix against the file size.
fn json_text<'a>(path: &Path, file: &'a [u8]) -> Result<&'a str> {
    let Some(prefix) = file.first_chunk::<8>() else {
        return Err(Error::not_safetensors(
            path,
            format!(
                "truncated: the file has {} bytes, fewer than the 8-byte header length",
                file.len()
            ),
        ));
    };
    let n = u64::from_le_bytes(*prefix);
    let rest = file.len() - 8;
    if n > rest as u64 {
        return Err(Error::not_safetensors(
            path,
            format!(
                "truncated: the header length says the JSON header has {n} bytes, the file has \
                 {rest} after the 8-byte length"
            ),
        ));
    }
    if n > MAX_HEADER {
        return Err(Error::not_safetensors(
            path,
            format!("the JSON header has {n} bytes, more than the limit of {MAX_HEADER}"),
        ));
    }
    let bytes = &file[8..8 + n as usize];
    std::str::from_utf8(bytes)
        .map_err(|e| Error::not_safetensors(path, format!("the JSON header is not UTF-8: {e}")))
}

/// The data area (`data_len` bytes after a `header_len`-byte header) holds exactly the
/// `needed` bytes that the header describes, up to the end of tensor `last`.
fn check_data_len(
    path: &Path,
    needed: usize,
    data_len: usize,
    header_len: usize,
    last: Option<&str>,
) -> Result<()> {
    let ends = last.map_or(String::new(), |l| format!(" (up to the end of `{l}`)"));
    let sizes = format!(
        "the header says the data needs {needed} bytes{ends}, the file has {data_len} after \
         its {header_len}-byte header"
    );
    let details = match needed.cmp(&data_len) {
        std::cmp::Ordering::Equal => return Ok(()),
        std::cmp::Ordering::Greater => {
            format!("truncated: {sizes} ({} missing)", needed - data_len)
        }
        std::cmp::Ordering::Less => format!("{} trailing bytes: {sizes}", data_len - needed),
    };
    Err(Error::not_safetensors(path, details))
}

impl Entry {
    /// A tensor's entry: a known dtype and data offsets whose length is what the dtype and
    /// shape need (computed with checked arithmetic).
    fn parse(path: &Path, name: &str, value: Value) -> Result<Self> {
        let raw: RawEntry = serde_json::from_value(value).map_err(|e| {
            Error::bad_entry(
                path,
                name,
                format!("expected {{\"dtype\", \"shape\", \"data_offsets\"}}: {e}"),
            )
        })?;
        let dtype: Dtype = serde_json::from_value(Value::String(raw.dtype.clone()))
            .map_err(|_| Error::bad_entry(path, name, format!("unknown dtype {:?}", raw.dtype)))?;
        let (begin, end) = raw.data_offsets;
        let needed = byte_len(dtype, &raw.shape);
        let held = end.checked_sub(begin);
        if needed.as_ref().ok() != held.as_ref() {
            let needs = needed.map_or_else(|why| why, |n| format!("{n} bytes"));
            let holds = held.map_or("which end before they begin".into(), |h| {
                format!("which hold {h} bytes")
            });
            return Err(Error::bad_entry(
                path,
                name,
                format!(
                    "dtype {dtype:?} with shape {:?} needs {needs}, but its data_offsets are \
                     [{begin}, {end}], {holds}",
                    raw.shape
                ),
            ));
        }
        Ok(Self {
            dtype,
            shape: raw.shape,
            offsets: begin..end,
        })
    }
}

/// Bytes taken by `shape` elements of `dtype`, or why they cannot be counted.
fn byte_len(dtype: Dtype, shape: &[usize]) -> std::result::Result<usize, String> {
    let bits = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.bitsize()))
        .ok_or("more bytes than this machine can address")?;
    if bits % 8 != 0 {
        return Err(format!("{bits} bits, not a whole number of bytes"));
    }
    Ok(bits / 8)
}

/// Little-endian POD decode that tolerates unaligned data (copies).
fn pod<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    bytemuck::pod_collect_to_vec(bytes)
}
