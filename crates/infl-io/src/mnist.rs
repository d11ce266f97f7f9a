//! MNIST in its original IDX format, raw or gzip-compressed.
//!
//! An IDX file is a big-endian header — two zero bytes, a type byte (`0x08` for unsigned
//! bytes, the only type MNIST uses and the only one read here), the number of dimensions,
//! then each dimension as a `u32` — followed by the data, row-major. Gzip-compressed files
//! are recognised by their magic bytes (`1f 8b`), whatever their name.
//!
//! [`load_mnist`] reads the four standard files of a directory
//! (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
//! `t10k-labels-idx1-ubyte`, each with or without `.gz`). Every error names the file and
//! says what was expected: a wrong magic number, a type or rank other than expected,
//! images and labels of different lengths, a truncated file, trailing data, a size the
//! header promises beyond [`MAX_IDX_BYTES`] or beyond what a gzip stream can hold, labels
//! outside 0–9. The header is always checked before the data is allocated or inflated.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// One split of MNIST: images and their labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MnistSplit {
    /// Pixels, `[n, rows * cols]` row-major, 0 (background) to 255 (ink).
    pub images: Vec<u8>,
    /// Labels `[n]`, 0–9.
    pub labels: Vec<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

impl MnistSplit {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split has no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * self.pixels()..(i + 1) * self.pixels()]
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn truncated(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.images.truncate(n * self.pixels());
        self.labels.truncate(n);
        self
    }
}

/// MNIST's training and test splits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mnist {
    /// The training split (60,000 images in the full set).
    pub train: MnistSplit,
    /// The test split (10,000 images in the full set).
    pub test: MnistSplit,
}

/// The most data an IDX file may promise (2 GiB: EMNIST's largest file is 550 MB).
pub const MAX_IDX_BYTES: usize = 1 << 31;

/// Deflate's largest compression ratio (about 1032:1): a gzip stream of `n` bytes never
/// inflates to more than `DEFLATE_MAX_RATIO * n`.
pub const DEFLATE_MAX_RATIO: usize = 1032;

/// Decodes an IDX array from bytes (gzip-compressed or not); `path` is named in errors.
///
/// The header is read first and the size it promises is checked (against
/// [`MAX_IDX_BYTES`] and, for gzip, against what the compressed stream can hold) before
/// any data is allocated; gzip is inflated incrementally, never beyond the promise.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.starts_with(&GZIP_MAGIC) {
        return parse_gzip(bytes, path);
    }
    let header = parse_header(bytes, path)?;
    let len = promised_len(&header.dims, bytes.len(), Source::Raw, path)?;
    let body = &bytes[header.len..];
    check_body_len(len, body.len(), &header.dims, Source::Raw, path)?;
    Ok(IdxArray {
        dims: header.dims,
        data: body.to_vec(),
    })
}

/// Gzip's magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Where IDX bytes come from, for the size limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Raw bytes.
    Raw,
    /// A gzip stream, which inflates at most [`DEFLATE_MAX_RATIO`] times its size.
    Gzip,
}

/// Inflates a gzip IDX stream: header first, then at most the promised data plus one
/// byte (to detect trailing data).
fn parse_gzip(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let mut gz = Members::new(bytes);
    let mut head = [0u8; 4 + 4 * 255];
    let got = read_up_to(&mut gz, &mut head[..4], path, "the IDX header")?;
    let rank = if got == 4 { usize::from(head[3]) } else { 0 };
    let hlen = got + read_up_to(&mut gz, &mut head[4..4 + 4 * rank], path, "the IDX header")?;
    gz.refuse_junk(path)?;
    let header = parse_header(&head[..hlen], path)?;
    let len = promised_len(&header.dims, bytes.len(), Source::Gzip, path)?;
    let mut data = vec![0u8; len];
    let stage = format!("the {len} bytes of data the header promises");
    let got = read_up_to(&mut gz, &mut data, path, &stage)?;
    let extra = read_up_to(&mut gz, &mut [0u8; 1], path, "the end of the stream")?;
    gz.refuse_junk(path)?;
    check_body_len(len, got + extra, &header.dims, Source::Gzip, path)?;
    Ok(IdxArray {
        dims: header.dims,
        data,
    })
}

/// The members of a gzip file inflated one after another (as `gzip -d` does). Bytes after
/// a member that do not start another one are junk: they end the stream and are counted.
struct Members<'a> {
    gz: flate2::bufread::GzDecoder<&'a [u8]>,
    junk: usize,
}

impl<'a> Members<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            gz: flate2::bufread::GzDecoder::new(bytes),
            junk: 0,
        }
    }

    /// Refuses junk after the last member.
    fn refuse_junk(&self, path: &Path) -> Result<()> {
        if self.junk == 0 {
            return Ok(());
        }
        Err(Error::bad(
            path,
            "gzip stream",
            format!(
                "expected the file to end with its gzip stream, found {} trailing bytes after \
                 it",
                self.junk
            ),
        ))
    }
}

impl Read for Members<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.gz.read(buf)?;
            // The member's end (its checksum verified): what follows is the rest.
            let rest: &[u8] = self.gz.get_ref();
            if n > 0 || buf.is_empty() || rest.is_empty() || self.junk > 0 {
                return Ok(n);
            }
            if !rest.starts_with(&GZIP_MAGIC) {
                self.junk = rest.len();
                return Ok(0);
            }
            self.gz = flate2::bufread::GzDecoder::new(rest);
        }
    }
}

/// Fills `buf` from the gzip stream as far as it goes; returns how many bytes it read.
/// `stage` says what was being read, for errors.
fn read_up_to(r: &mut impl Read, buf: &mut [u8], path: &Path, stage: &str) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(gzip_error(path, e, n, stage)),
        }
    }
    Ok(n)
}

fn gzip_error(path: &Path, e: std::io::Error, n: usize, stage: &str) -> Error {
    let why = if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "truncated"
    } else {
        "corrupt"
    };
    Error::bad(
        path,
        "gzip stream",
        format!("expected a complete gzip stream, found it {why} after {n} bytes of {stage}: {e}"),
    )
}

/// The data size the header's dimensions promise, refused when it overflows, exceeds
/// [`MAX_IDX_BYTES`] or, from gzip, exceeds what an `input_len`-byte stream can hold.
fn promised_len(dims: &[usize], input_len: usize, source: Source, path: &Path) -> Result<usize> {
    let bad = |why: String| Error::bad(path, "IDX header", why);
    let len = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    if len > MAX_IDX_BYTES {
        return Err(bad(format!(
            "the header's dimensions {dims:?} promise {len} bytes of data, more than the \
             limit of {MAX_IDX_BYTES}"
        )));
    }
    let most = input_len.saturating_mul(DEFLATE_MAX_RATIO);
    if source == Source::Gzip && len > most {
        return Err(bad(format!(
            "the header's dimensions {dims:?} promise {len} bytes of data, more than a \
             {input_len}-byte gzip stream can hold (at most {most} at deflate's maximum ratio \
             of {DEFLATE_MAX_RATIO}:1)"
        )));
    }
    Ok(len)
}

/// The data is exactly as long as the header promises. From gzip, at most one byte past
/// the promise is inflated, so `found` counts trailing data only for raw bytes.
fn check_body_len(
    len: usize,
    found: usize,
    dims: &[usize],
    source: Source,
    path: &Path,
) -> Result<()> {
    let promise = format!("the header's dimensions {dims:?} promise {len} bytes of data");
    let why = match (found.cmp(&len), source) {
        (std::cmp::Ordering::Equal, _) => return Ok(()),
        (std::cmp::Ordering::Less, _) => format!("{promise}, found {found}: the file is truncated"),
        (std::cmp::Ordering::Greater, Source::Raw) => {
            format!("{promise}, found {found}: {} trailing bytes", found - len)
        }
        (std::cmp::Ordering::Greater, Source::Gzip) => {
            format!("{promise}, the stream inflates to more: trailing data")
        }
    };
    Err(Error::bad(path, "IDX data", why))
}

/// An IDX header: the dimensions and the header's length in bytes.
struct IdxHeader {
    dims: Vec<usize>,
    len: usize,
}

/// Checks the magic number (unsigned bytes, rank at least 1) and reads the dimensions.
/// (Long only because each of its four checks spells out its message.)
fn parse_header(bytes: &[u8], path: &Path) -> Result<IdxHeader> {
    if bytes.len() < 4 {
        return Err(Error::bad(
            path,
            "IDX header",
            format!(
                "expected at least 4 header bytes, the file has {}",
                bytes.len()
            ),
        ));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::bad(
            path,
            "IDX header",
            format!(
                "expected a magic number 0x0000TTNN (two zero bytes, type, rank), found \
                 {magic:#010x}: not an IDX file"
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(Error::bad(
            path,
            "IDX header",
            format!(
                "expected element type 0x08 (unsigned byte), found {:#04x} in magic number \
                 {magic:#010x}",
                bytes[2]
            ),
        ));
    }
    let rank = bytes[3] as usize;
    let len = 4 + 4 * rank;
    if rank == 0 || bytes.len() < len {
        return Err(Error::bad(
            path,
            "IDX header",
            format!(
                "expected {rank} dimension(s) (at least one) in a {len}-byte header, the file \
                 has {} bytes",
                bytes.len()
            ),
        ));
    }
    let dims = (0..rank)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    Ok(IdxHeader { dims, len })
}

/// Reads an IDX file (gzip-compressed or not).
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    crate::write::require_regular_file(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_idx(&bytes, path)
}

/// Builds a split from decoded images (`[n, rows, cols]`) and labels (`[n]`).
pub fn split_from_idx(
    images: IdxArray,
    images_path: &Path,
    labels: IdxArray,
    labels_path: &Path,
) -> Result<MnistSplit> {
    let [n, rows, cols] = images.dims[..] else {
        return Err(Error::bad(
            images_path,
            "IDX header",
            format!(
                "expected images of 3 dimensions [n, rows, cols], found {:?}",
                images.dims
            ),
        ));
    };
    check_labels(&labels, labels_path, n, images_path)?;
    Ok(MnistSplit {
        images: images.data,
        labels: labels.data,
        rows,
        cols,
    })
}

/// Labels are `[n]`, one per image of `images_path`, each a digit 0–9.
fn check_labels(labels: &IdxArray, path: &Path, n: usize, images_path: &Path) -> Result<()> {
    let [m] = labels.dims[..] else {
        return Err(Error::bad(
            path,
            "IDX header",
            format!(
                "expected labels of 1 dimension [n], found {:?}",
                labels.dims
            ),
        ));
    };
    if m != n {
        return Err(Error::bad(
            path,
            "IDX header",
            format!(
                "expected {n} labels, one per image of {}, found {m}",
                images_path.display()
            ),
        ));
    }
    if let Some(i) = labels.data.iter().position(|&l| l > 9) {
        return Err(Error::bad(
            path,
            "IDX data",
            format!(
                "expected digit labels 0-9, found {} at [{i}]",
                labels.data[i]
            ),
        ));
    }
    Ok(())
}

/// Reads one split from its image and label files.
pub fn load_split(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<MnistSplit> {
    let (ip, lp) = (images.as_ref(), labels.as_ref());
    split_from_idx(read_idx(ip)?, ip, read_idx(lp)?, lp)
}

/// Finds `stem.gz` or `stem` in `dir`.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        // Anything there (a directory too) is read, so that its error is the one reported.
        if p.exists() {
            return Ok(p);
        }
    }
    Err(Error::layout(
        dir,
        format!("no MNIST file `{stem}.gz` or `{stem}` in this directory"),
    ))
}

/// Reads MNIST from a directory holding the four standard files (gzip or raw).
pub fn load_mnist(dir: impl AsRef<Path>) -> Result<Mnist> {
    let dir = dir.as_ref();
    Ok(Mnist {
        train: load_split(
            find(dir, "train-images-idx3-ubyte")?,
            find(dir, "train-labels-idx1-ubyte")?,
        )?,
        test: load_split(
            find(dir, "t10k-images-idx3-ubyte")?,
            find(dir, "t10k-labels-idx1-ubyte")?,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn err(bytes: &[u8]) -> String {
        parse_idx(bytes, Path::new("x.idx"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn raw_and_gzip_agree() {
        let raw = idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let a = parse_idx(&raw, Path::new("a")).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data[11], 12);
        assert_eq!(parse_idx(&gz(&raw), Path::new("a")).unwrap(), a);
    }

    #[test]
    fn bad_files_are_named_and_explained() {
        let e = err(&[0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0]);
        assert!(e.contains("x.idx") && e.contains("magic number") && e.contains("0x12345678"));
        assert!(err(&[0, 0, 0x0d, 1, 0, 0, 0, 0]).contains("0x0d"));
        assert!(err(&[0, 0]).contains("at least 4 header bytes"));
        assert!(err(&[0, 0, 8, 3, 0, 0, 0, 1]).contains("3 dimension(s)"));
        let t = err(&idx(&[3, 2], &[1, 2, 3]));
        assert!(
            t.contains("truncated") && t.contains("promise 6 bytes"),
            "{t}"
        );
        let full = gz(&idx(&[3, 2], &[1, 2, 3, 4, 5, 6]));
        let g = err(&full[..full.len() - 6]);
        assert!(g.contains("gzip"), "{g}");
        assert!(err(&idx(&[1], &[1, 2])).contains("1 trailing bytes"));
    }

    #[test]
    fn splits_are_checked() {
        let p = Path::new("img");
        let l = Path::new("lab");
        let images = IdxArray {
            dims: vec![2, 1, 2],
            data: vec![0, 1, 2, 3],
        };
        let ok = split_from_idx(
            images.clone(),
            p,
            IdxArray {
                dims: vec![2],
                data: vec![3, 9],
            },
            l,
        )
        .unwrap();
        assert_eq!(ok.image(1), &[2, 3]);
        assert_eq!(ok.clone().truncated(1).images, vec![0, 1]);
        let e = split_from_idx(
            images.clone(),
            p,
            IdxArray {
                dims: vec![3],
                data: vec![0, 0, 0],
            },
            l,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("expected 2 labels"), "{e}");
        let e = split_from_idx(
            images,
            p,
            IdxArray {
                dims: vec![2],
                data: vec![0, 10],
            },
            l,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("0-9") && e.contains("[1]"), "{e}");
    }

    #[test]
    fn missing_directory_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_mnist(dir.path()).unwrap_err().to_string();
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
    }

    #[test]
    fn bundled_subset_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-subset");
        let m = load_mnist(dir).unwrap();
        assert_eq!(
            (m.train.len(), m.train.rows, m.train.cols),
            (10_000, 28, 28)
        );
        assert_eq!(m.test.len(), 2_000);
        // The first training digit of MNIST is a 5, the first test digit a 7.
        assert_eq!((m.train.labels[0], m.test.labels[0]), (5, 7));
    }
}
