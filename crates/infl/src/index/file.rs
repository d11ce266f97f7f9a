//! The index's two files on disk, and the checks that make a damaged one an error.
//!
//! `embeddings.safetensors` is a plain safetensors file (`ids` i64 `[N]`, then
//! `embeddings` f32 `[N, E]`, the canonical order: larger alignment first) whose header is
//! written first — N and E are known up front — so the data can follow chunk by chunk.
//! Its `__metadata__` holds the [`Recipe`](super::Recipe), the build options, and three
//! fixed-width fields filled in last: `ann_bytes` and `ann_crc32` (size and CRC-32 of
//! `ann.usearch`) and `crc32`, the CRC-32 of the whole embeddings file read with `crc32`'s
//! own eight digits as `0`. Rewriting them in place keeps the header's length.
//!
//! Why checksums: usearch reads its file without bounds checks, so a flipped byte in the
//! graph could send a search out of bounds (a crash, not an error). Both files are read once
//! on open (`O(N·E)`, at disk speed) and compared with what the build recorded; only then
//! is `ann.usearch` handed to usearch. A CRC-32 catches every change of up to 32
//! consecutive bits and any other with probability `1 − 2⁻³²`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// File name of the embeddings and ids.
pub const EMBEDDINGS_FILE: &str = "embeddings.safetensors";
/// File name of the approximate nearest-neighbour index.
pub const ANN_FILE: &str = "ann.usearch";
/// `format` metadata of an index.
pub(super) const FORMAT: &str = "infl-index";
/// `format_version` metadata of this layout.
pub(super) const VERSION: &str = "1";

/// Placeholder of a CRC-32 (eight hex digits).
pub(super) const ZERO_CRC: &str = "00000000";

/// A CRC-32 as written in metadata.
pub(super) fn crc_text(crc: u32) -> String {
    format!("{crc:08x}")
}

/// A byte count as written in metadata (fixed width, so it can be filled in last).
pub(super) fn bytes_text(n: u64) -> String {
    format!("{n:020}")
}

/// Byte offsets of the two tensors in the data section: `ids` then `embeddings`.
pub(super) struct DataLayout {
    /// Bytes of `ids`.
    pub ids: usize,
    /// Bytes of `embeddings`.
    pub embeddings: usize,
}

impl DataLayout {
    pub(super) fn new(rows: usize, width: usize) -> Result<Self> {
        let too_large = || {
            Error::config(
                "index",
                format!("{rows} x {width} embeddings are more bytes than this machine addresses"),
            )
        };
        Ok(Self {
            ids: rows.checked_mul(8).ok_or_else(too_large)?,
            embeddings: rows
                .checked_mul(width)
                .and_then(|n| n.checked_mul(4))
                .ok_or_else(too_large)?,
        })
    }
}

/// The 8-byte length and JSON header of the embeddings file, padded with spaces so that
/// the data starts 8-aligned.
pub(super) fn header(
    metadata: &BTreeMap<String, String>,
    rows: usize,
    width: usize,
) -> Result<Vec<u8>> {
    let layout = DataLayout::new(rows, width)?;
    let value = serde_json::json!({
        "__metadata__": metadata,
        "ids": {"dtype": "I64", "shape": [rows], "data_offsets": [0, layout.ids]},
        "embeddings": {
            "dtype": "F32",
            "shape": [rows, width],
            "data_offsets": [layout.ids, layout.ids + layout.embeddings],
        },
    });
    let mut text =
        serde_json::to_vec(&value).map_err(|e| Error::config("index metadata", e.to_string()))?;
    while (8 + text.len()) % 8 != 0 {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    Ok(out)
}

/// Where the eight digits of `crc32` are in a header (length prefix included).
fn crc_digits(header: &[u8]) -> Option<std::ops::Range<usize>> {
    let key = b"\"crc32\":\"";
    let at = header.windows(key.len()).position(|w| w == key)? + key.len();
    (header.get(at + 8) == Some(&b'"')).then_some(at..at + 8)
}

/// The header with `crc32`'s digits set to `crc`, or `None` without such a field.
pub(super) fn with_crc(header: &[u8], crc: &str) -> Option<Vec<u8>> {
    let digits = crc_digits(header)?;
    let mut out = header.to_vec();
    out[digits].copy_from_slice(crc.as_bytes().get(..8)?);
    Some(out)
}

/// An error naming a damaged or unreadable file.
pub(super) fn damaged(path: &Path, details: impl Into<String>) -> Error {
    Error::Io(infl_io::Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, details.into()),
    })
}

/// CRC-32 of everything `r` yields.
fn crc_of(mut r: impl Read, mut hasher: crc32fast::Hasher) -> std::io::Result<u32> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(hasher.finalize()),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// CRC-32 of a whole file.
pub(super) fn file_crc(path: &Path) -> std::io::Result<u32> {
    crc_of(std::fs::File::open(path)?, crc32fast::Hasher::new())
}

/// Checks the embeddings file (whose safetensors header infl-io has already checked)
/// against its recorded `crc32`.
pub(super) fn verify_embeddings(path: &Path, recorded: &str) -> Result<()> {
    let io = |e| {
        Error::Io(infl_io::Error::Io {
            path: path.to_path_buf(),
            source: e,
        })
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(io)?;
    let len = usize::try_from(u64::from_le_bytes(prefix))
        .map_err(|_| damaged(path, "the header length does not fit in memory"))?;
    let mut header = prefix.to_vec();
    header.resize(8 + len, 0);
    file.read_exact(&mut header[8..]).map_err(io)?;
    let zeroed = with_crc(&header, ZERO_CRC).ok_or_else(|| {
        damaged(
            path,
            "no fixed-width `crc32` metadata: not an infl index, or damaged",
        )
    })?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&zeroed);
    let crc = crc_text(crc_of(file, hasher).map_err(io)?);
    check_crc(path, &crc, recorded)
}

/// The one message of a file whose CRC-32 is not the one recorded at build.
fn check_crc(path: &Path, crc: &str, recorded: &str) -> Result<()> {
    if crc != recorded {
        return Err(damaged(
            path,
            format!(
                "corrupted: its CRC-32 is {crc}, the index recorded {recorded} when it was \
                 built (the file changed since); rebuild the index"
            ),
        ));
    }
    Ok(())
}

/// Checks `ann.usearch` against the size and CRC-32 the embeddings file recorded.
pub(super) fn verify_ann(path: &Path, bytes: u64, recorded: &str) -> Result<()> {
    let io = |e| {
        Error::Io(infl_io::Error::Io {
            path: path.to_path_buf(),
            source: e,
        })
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(damaged(path, "expected a regular file"));
    }
    let found = meta.len();
    if found != bytes {
        let what = if found < bytes {
            format!("truncated ({} bytes missing)", bytes - found)
        } else {
            format!("{} trailing bytes", found - bytes)
        };
        return Err(damaged(
            path,
            format!("{what}: the file has {found} bytes, the index recorded {bytes}"),
        ));
    }
    let crc = crc_text(file_crc(path).map_err(io)?);
    check_crc(path, &crc, recorded)
}
