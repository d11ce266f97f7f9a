//! The optional `images` tensor of feature (and factor) files: the examples as pictures,
//! for plots of proponents and opponents (`infl topk --plot`).
//!
//! Shape `[N, H, W]` (grey) or `[N, H, W, C]` with `C` = 1 (grey) or 3 (RGB), row-major,
//! one image per example in the file's row order. Two encodings, as PyTorch and NumPy users
//! hold images: `U8` with 0 = black and 255 = white (MNIST's IDX bytes, PIL arrays), or a
//! float dtype (F32, F64, F16, BF16) with values in `[0, 1]` (torchvision's `ToTensor`),
//! mapped to bytes by `round(255 x)`. Anything else — another dtype, shape or channel
//! count, a value outside `[0, 1]` or not finite — is refused naming the file, the tensor
//! and what was expected. The file is memory-mapped: [`Images::open`] checks every value
//! once (a streaming pass) and [`Images::image`] converts one image when it is drawn, so a
//! large image tensor is never held in memory.

use std::path::Path;

use half::{bf16, f16};
use safetensors::Dtype;

use crate::{Error, Result, TensorFile};

/// The tensor's name.
pub const IMAGES: &str = "images";

/// The `images` tensor of one file, checked (see the module docs).
#[derive(Debug)]
pub struct Images {
    file: TensorFile,
    dtype: Dtype,
    /// Images `N`.
    pub count: usize,
    /// Rows `H`.
    pub height: usize,
    /// Columns `W`.
    pub width: usize,
    /// Channels `C`: 1 (grey) or 3 (RGB).
    pub channels: usize,
}

impl Images {
    /// The `images` of the safetensors file `path`, checked; `None` when it has none.
    pub fn open(path: impl AsRef<Path>) -> Result<Option<Self>> {
        let file = TensorFile::open(path.as_ref())?;
        if !file.contains(IMAGES) {
            return Ok(None);
        }
        let info = file.info(IMAGES)?;
        let (dtype, shape) = (info.dtype, info.shape.to_vec());
        let (count, height, width, channels) = match shape[..] {
            [n, h, w] => (n, h, w, 1),
            [n, h, w, c] if c == 1 || c == 3 => (n, h, w, c),
            _ => {
                let details = format!(
                    "expected [N, H, W] or [N, H, W, C] with C = 1 or 3 channels, found shape \
                     {shape:?}"
                );
                return Err(Error::bad(file.path(), IMAGES, details));
            }
        };
        if height == 0 || width == 0 {
            let details = format!("expected images of at least 1 x 1 pixel, found shape {shape:?}");
            return Err(Error::bad(file.path(), IMAGES, details));
        }
        if !matches!(
            dtype,
            Dtype::U8 | Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16
        ) {
            let details = format!(
                "expected U8 pixels (0 black .. 255 white) or a float dtype (F32, F64, F16, BF16) \
                 with values in [0, 1], found {dtype:?}"
            );
            return Err(Error::bad(file.path(), IMAGES, details));
        }
        let images = Self {
            file,
            dtype,
            count,
            height,
            width,
            channels,
        };
        images.check_values()?;
        Ok(Some(images))
    }

    /// The file the images come from.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Values per image (`H · W · C`).
    pub fn pixels(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// The tensor's shape as the file gives it, for messages.
    pub fn shape(&self) -> Vec<usize> {
        self.file
            .info(IMAGES)
            .map_or_else(|_| Vec::new(), |i| i.shape.to_vec())
    }

    /// Image `i` as bytes `[H, W, C]` row-major (0 black, 255 white); `None` past the end.
    pub fn image(&self, i: usize) -> Option<Vec<u8>> {
        if i >= self.count {
            return None;
        }
        let size = self.dtype.bitsize() / 8;
        let per = self.pixels();
        let raw = self.bytes().get(i * per * size..(i + 1) * per * size)?;
        Some(match self.dtype {
            Dtype::U8 => raw.to_vec(),
            _ => (0..per)
                .map(|j| (self.value(raw, j) * 255.0).round() as u8)
                .collect(),
        })
    }

    /// The tensor's bytes (found when the file was opened; empty otherwise).
    fn bytes(&self) -> &[u8] {
        self.file.raw_bytes(IMAGES).unwrap_or(&[])
    }

    /// Value `j` of `raw` (a float dtype), as f64.
    fn value(&self, raw: &[u8], j: usize) -> f64 {
        let at = |n: usize| &raw[j * n..(j + 1) * n];
        match self.dtype {
            Dtype::F32 => f64::from(f32::from_le_bytes(at(4).try_into().unwrap_or([0; 4]))),
            Dtype::F64 => f64::from_le_bytes(at(8).try_into().unwrap_or([0; 8])),
            Dtype::F16 => f64::from(f16::from_le_bytes(at(2).try_into().unwrap_or([0; 2]))),
            Dtype::BF16 => f64::from(bf16::from_le_bytes(at(2).try_into().unwrap_or([0; 2]))),
            _ => f64::NAN,
        }
    }

    /// Float images hold finite values in `[0, 1]`; the first that does not is reported
    /// with its index `[n, y, x(, c)]`.
    fn check_values(&self) -> Result<()> {
        if self.dtype == Dtype::U8 {
            return Ok(());
        }
        let bytes = self.bytes();
        let total = bytes.len() / (self.dtype.bitsize() / 8);
        let Some(j) = (0..total).find(|&j| !(0.0..=1.0).contains(&self.value(bytes, j))) else {
            return Ok(());
        };
        let v = self.value(bytes, j);
        let at = self.index_of(j);
        let details = format!(
            "expected float pixels in [0, 1] (0 black, 1 white; or U8 0..255), found {v} at \
             [{at}]"
        );
        Err(Error::bad(self.file.path(), IMAGES, details))
    }

    /// The tensor index of flat position `j`, as `n, y, x` (and `, c` for 4-D tensors).
    fn index_of(&self, j: usize) -> String {
        let c = j % self.channels;
        let p = j / self.channels;
        let (n, y, x) = (
            p / (self.height * self.width),
            (p / self.width) % self.height,
            p % self.width,
        );
        match self.shape().len() {
            4 => format!("{n}, {y}, {x}, {c}"),
            _ => format!("{n}, {y}, {x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{OutTensor, write_safetensors};

    fn file(dir: &Path, images: Option<OutTensor>) -> std::path::PathBuf {
        let path = dir.join("x.train.safetensors");
        let mut tensors = vec![(
            "features".to_string(),
            OutTensor::F32(vec![2, 1], vec![0.0; 2]),
        )];
        tensors.extend(images.map(|t| (IMAGES.to_string(), t)));
        write_safetensors(&path, tensors, HashMap::new()).expect("write");
        path
    }

    fn refused(dir: &Path, images: OutTensor, needle: &str) {
        let path = file(dir, Some(images));
        let e = Images::open(&path).expect_err(needle).to_string();
        assert!(
            e.contains("x.train.safetensors") && e.contains("`images`"),
            "{e}"
        );
        assert!(e.contains(needle), "{needle:?}: {e}");
    }

    #[test]
    fn bytes_and_unit_floats_are_pixels_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            Images::open(file(dir.path(), None))
                .expect("open")
                .is_none()
        );
        // U8 [N, H, W]: as stored.
        let grey: Vec<u8> = (0..2 * 2 * 3).map(|i| (i * 20) as u8).collect();
        let path = file(dir.path(), Some(OutTensor::U8(vec![2, 2, 3], grey.clone())));
        let im = Images::open(&path).expect("open").expect("images");
        assert_eq!((im.count, im.height, im.width, im.channels), (2, 2, 3, 1));
        assert_eq!(im.image(1).expect("image 1"), grey[6..]);
        assert!(im.image(2).is_none());
        // Float [N, H, W, 3] in [0, 1]: round(255 x).
        let rgb: Vec<f64> = (0..2 * 3).map(|i| i as f64 / 5.0).collect();
        let path = file(dir.path(), Some(OutTensor::F64(vec![2, 1, 1, 3], rgb)));
        let im = Images::open(&path).expect("open").expect("images");
        assert_eq!(im.channels, 3);
        assert_eq!(im.image(1).expect("image 1"), [153, 204, 255]);
        // Refused: shapes, channels, dtypes, values.
        let d = dir.path();
        refused(
            d,
            OutTensor::U8(vec![2, 6], vec![0; 12]),
            "[N, H, W] or [N, H, W, C]",
        );
        refused(
            d,
            OutTensor::U8(vec![2, 1, 3, 2], vec![0; 12]),
            "C = 1 or 3",
        );
        refused(d, OutTensor::U8(vec![2, 0, 3], vec![]), "at least 1 x 1");
        refused(d, OutTensor::I64(vec![2, 1, 1], vec![0; 2]), "found I64");
        let mut v = vec![0.5f32; 12];
        v[7] = 1.5;
        refused(
            d,
            OutTensor::F32(vec![2, 2, 3], v.clone()),
            "found 1.5 at [1, 0, 1]",
        );
        v[7] = f32::NAN;
        refused(
            d,
            OutTensor::F32(vec![2, 2, 1, 3], v),
            "found NaN at [1, 0, 0, 1]",
        );
    }
}
