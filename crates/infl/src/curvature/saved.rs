//! Fitted curvature on disk (`infl fit`, then `--hessian FILE`), so that many test batches
//! (and shards) reuse one fit: the final layer's Hessian here, K-FAC and EK-FAC fits on
//! factor files in [`crate::kfac`] (`SavedFit`), and what both share ([`SavedCurvature`]
//! opens either; the metadata reader, the identity check and the CRCs live here once).
//!
//! **Two formats, one shape.** A Hessian file ("infl hessian v1", safetensors) holds
//! `hessian` f64 `[n, n]`; a K-FAC file ("infl kfac v1") holds per layer the f64
//! eigenvectors and eigenvalues (see `crate::kfac`). They stay two formats because what
//! they are fitted on differs (a final layer's weights and features; factor files' layers),
//! and a file of one given where the other is needed is refused by name. Both are stored
//! *without damping*, so the damping (including the heuristic) and, for the Hessian, the
//! solver can change without refitting; both record a CRC-32 of their f64 data, checked on
//! open so that an altered byte is refused, and metadata naming what they were fitted on
//! (an identity: [`Identity`] here): the checkpoint, the shapes, the settings, and a
//! CRC-32 of the exact bytes of the training data the fit read. A run whose identity
//! differs is refused, naming the first field that differs and both values. With the
//! assembled matrix, applying `H` costs `n²` per vector instead of a pass over the
//! training set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef};
use infl_core::Bias;
use infl_io::{OutTensor, TensorFile};

use super::{HessianOperator, par};
use crate::engine::Progress;
use crate::kfac::{KFAC_FORMAT, SavedFit};
use crate::run::{CheckpointData, Loss};
use crate::{Error, Result};

/// The `format` metadata of a Hessian file.
pub const FORMAT: &str = "infl hessian v1";

/// A curvature saved by `infl fit`: the final layer's Hessian or a K-FAC/EK-FAC fit on
/// factor files (cheap to clone: the fits are shared).
#[derive(Clone, Debug)]
pub enum SavedCurvature {
    /// "infl hessian v1": the exact Hessian of a final layer.
    Hessian(Arc<SavedHessian>),
    /// "infl kfac v1": a K-FAC or EK-FAC fit of factor files' layers.
    Kfac(Arc<SavedFit>),
}

impl SavedCurvature {
    /// Reads a file written by `infl fit`, of either format (its `format` metadata says
    /// which); anything else is refused, naming the file and both formats.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let format = TensorFile::open(path)?.metadata().get("format").cloned();
        match format.as_deref() {
            Some(FORMAT) => Ok(Self::Hessian(Arc::new(SavedHessian::open(path)?))),
            Some(KFAC_FORMAT) => Ok(Self::Kfac(Arc::new(SavedFit::open(path)?))),
            found => {
                let found = found.map_or("none".to_string(), |f| format!("{f:?}"));
                let details = format!(
                    "format {found}; expected {FORMAT:?} or {KFAC_FORMAT:?} (a curvature \
                     written by `infl fit`)"
                );
                Err(Error::data(path, "__metadata__.format", details))
            }
        }
    }

    /// The CRC-32 of the training data it was fitted on (what shards' parts record).
    pub fn crc32(&self) -> u32 {
        match self {
            Self::Hessian(h) => h.identity.crc32,
            Self::Kfac(k) => k.identity.crc32,
        }
    }

    /// The file it was read from (empty when fitted in this process).
    pub fn source(&self) -> &Path {
        match self {
            Self::Hessian(h) => &h.source,
            Self::Kfac(k) => &k.source,
        }
    }

    /// Its format's name.
    pub fn format(&self) -> &'static str {
        match self {
            Self::Hessian(_) => FORMAT,
            Self::Kfac(_) => KFAC_FORMAT,
        }
    }

    /// The tensors and metadata of its file.
    pub fn tensors(&self) -> (Vec<(String, OutTensor)>, HashMap<String, String>) {
        match self {
            Self::Hessian(h) => h.tensors(),
            Self::Kfac(k) => k.tensors(),
        }
    }

    /// The error for a saved curvature of the other kind: `instead` says what the chosen
    /// solver and input need instead.
    pub(crate) fn wrong_kind(&self, instead: &str) -> Error {
        let have = match self {
            Self::Hessian(_) => "a final layer's Hessian (`infl fit --run`)",
            Self::Kfac(_) => "a K-FAC/EK-FAC fit of factor files (`infl fit --factors`)",
        };
        let details = format!("{have}, format {:?}, but {instead}", self.format());
        Error::data(self.source(), "__metadata__.format", details)
    }
}

/// What a Hessian was fitted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The checkpoint's name.
    pub checkpoint: String,
    /// Training examples.
    pub examples: usize,
    /// Outputs `K`.
    pub outputs: usize,
    /// Inputs `D` (without the bias column).
    pub inputs: usize,
    /// The loss.
    pub loss: Loss,
    /// Whether the bias is a parameter.
    pub bias: Bias,
    /// CRC-32 of the weights, bias, training features, labels and targets (their bytes).
    pub crc32: u32,
}

impl Identity {
    /// The identity of a checkpoint's training data for `loss` and `bias`.
    pub fn of(d: &CheckpointData, loss: Loss, bias: Bias) -> Self {
        let mut crc = crc32fast::Hasher::new();
        crc_f32s(&mut crc, d.checkpoint.weight.data());
        crc_f32s(&mut crc, d.checkpoint.bias.as_deref().unwrap_or_default());
        crc_f32s(&mut crc, d.train.features.data());
        if let Some(l) = &d.train.labels {
            l.iter().for_each(|x| crc.update(&x.to_le_bytes()));
        }
        if let Some(t) = &d.train.targets {
            crc_f32s(&mut crc, t.data());
        }
        Self {
            checkpoint: d.checkpoint.name.clone(),
            examples: d.train.len(),
            outputs: d.checkpoint.weight.rows(),
            inputs: d.checkpoint.weight.cols(),
            loss,
            bias,
            crc32: crc.finalize(),
        }
    }

    /// The parameters `n = K · (D + bias)`.
    pub fn dim(&self) -> usize {
        self.outputs * (self.inputs + usize::from(self.bias == Bias::Included))
    }

    fn metadata(&self) -> Vec<(String, String)> {
        [
            ("checkpoint", self.checkpoint.clone()),
            ("examples", self.examples.to_string()),
            ("outputs", self.outputs.to_string()),
            ("inputs", self.inputs.to_string()),
            ("loss", self.loss.short_name().to_string()),
            ("include_bias", (self.bias == Bias::Included).to_string()),
            ("crc32", format!("{:08x}", self.crc32)),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    }
}

/// An assembled Hessian with what it was fitted on; also the operator `H v = H·v`.
#[derive(Clone, Debug)]
pub struct SavedHessian {
    /// `H` `[n, n]` (no damping).
    pub hessian: Mat<f64>,
    /// What it was fitted on.
    pub identity: Identity,
    /// The file it was read from (empty when fitted in this process).
    pub source: PathBuf,
}

impl SavedHessian {
    /// The tensors and metadata of its file.
    pub fn tensors(&self) -> (Vec<(String, OutTensor)>, HashMap<String, String>) {
        let n = self.hessian.nrows();
        let data = row_major(self.hessian.as_ref());
        let meta = file_metadata(FORMAT, self.identity.metadata(), data_crc(&[&data]));
        let tensor = OutTensor::F64(vec![n, n], data);
        (vec![("hessian".into(), tensor)], meta)
    }

    /// Reads a Hessian file, checking its format, metadata and shape.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = TensorFile::open(path.as_ref())?;
        let header = Header::new(&file, FORMAT)?;
        let loss = match header.get("loss")? {
            "ce" => Loss::CrossEntropy,
            "mse" => Loss::MeanSquaredError,
            other => return Err(header.bad("loss", other, "ce or mse")),
        };
        let identity = Identity {
            checkpoint: header.get("checkpoint")?.to_string(),
            examples: header.number("examples")?,
            outputs: header.number("outputs")?,
            inputs: header.number("inputs")?,
            loss,
            bias: if header.get("include_bias")? == "true" {
                Bias::Included
            } else {
                Bias::Excluded
            },
            crc32: header.crc("crc32")?,
        };
        let n = identity.dim();
        let data = file.f64s("hessian", &[n, n])?;
        header.check_data("hessian", &[&data])?;
        Ok(Self {
            hessian: Mat::from_fn(n, n, |i, j| data[i * n + j]),
            identity,
            source: file.path().to_path_buf(),
        })
    }

    /// Refuses a run (its last checkpoint's training file `run`) whose identity differs,
    /// naming the first differing field.
    pub fn check(&self, run: &Path, want: &Identity) -> Result<()> {
        check_identity(
            &self.source,
            "hessian",
            &self.identity.metadata(),
            &want.metadata(),
            run,
        )
    }
}

/// Refuses a run (its training file `run`) whose identity `want` differs from the fit's
/// `have` (both as metadata `(key, value)`, in the order checked), naming the first differing field and
/// both values.
pub(crate) fn check_identity(
    source: &Path,
    tensor: &str,
    have: &[(String, String)],
    want: &[(String, String)],
    run: &Path,
) -> Result<()> {
    // Fields that set how many follow (the layers) come first, so a differing count is
    // named by them.
    match have.iter().zip(want).find(|(a, b)| a != b) {
        None => Ok(()),
        Some(((key, found), (_, expected))) => {
            let details = format!(
                "fitted with {key} = {found}, but the run's last checkpoint ({}) has \
                 {expected}: refit with `infl fit` (or drop --hessian)",
                run.display()
            );
            Err(Error::data(source, tensor, details))
        }
    }
}

/// The metadata of a saved curvature's file: its format, its identity and the CRC-32 of
/// its data.
pub(crate) fn file_metadata(
    format: &str,
    identity: Vec<(String, String)>,
    data_crc: u32,
) -> HashMap<String, String> {
    let mut meta: HashMap<String, String> = identity.into_iter().collect();
    meta.insert("format".into(), format.into());
    meta.insert(DATA_CRC.into(), format!("{data_crc:08x}"));
    meta
}

/// The metadata key of the CRC-32 of a saved curvature's f64 data (all its tensors, in
/// the order they are read).
const DATA_CRC: &str = "hessian_crc32";

/// The metadata of a saved curvature's file, read with errors naming the file and key.
pub(crate) struct Header<'f> {
    path: &'f Path,
    meta: &'f HashMap<String, String>,
}

impl<'f> Header<'f> {
    /// The header of `file`, refused unless its format is `format`.
    pub(crate) fn new(file: &'f TensorFile, format: &str) -> Result<Self> {
        let header = Self {
            path: file.path(),
            meta: file.metadata(),
        };
        let found = header.get("format")?;
        if found != format {
            let details = format!("format {found:?}; expected {format:?}");
            return Err(Error::data(header.path, "__metadata__", details));
        }
        Ok(header)
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Result<&'f str> {
        self.meta.get(key).map(String::as_str).ok_or_else(|| {
            let details = format!("no `{key}`; expected a file written by `infl fit`");
            Error::data(self.path, "__metadata__", details)
        })
    }

    /// The error for `key`'s value `found`, naming what was `expected`.
    pub(crate) fn bad(&self, key: &str, found: &str, expected: &str) -> Error {
        let details = format!("{found:?}; expected {expected}");
        Error::data(self.path, format!("{key} (metadata)"), details)
    }

    /// `key` as a number.
    pub(crate) fn number(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        v.parse().map_err(|_| self.bad(key, v, "a number"))
    }

    /// `key` as a CRC-32 (8 hex digits).
    pub(crate) fn crc(&self, key: &str) -> Result<u32> {
        let v = self.get(key)?;
        u32::from_str_radix(v, 16).map_err(|_| self.bad(key, v, "8 hex digits"))
    }

    /// Refuses `data` (the file's tensors, in order) unless its CRC-32 is the recorded
    /// one; `tensor` names them in the message.
    pub(crate) fn check_data(&self, tensor: &str, data: &[&[f64]]) -> Result<()> {
        let want = self.crc(DATA_CRC)?;
        let found = data_crc(data);
        if found != want {
            let details = format!(
                "CRC-32 {found:08x}, but the file records {want:08x}: it was altered or \
                 damaged; refit with `infl fit`"
            );
            return Err(Error::data(self.path, tensor, details));
        }
        Ok(())
    }
}

/// Adds f32 values' little-endian bytes to `crc` (in blocks: the same CRC as one value at
/// a time, faster).
pub(crate) fn crc_f32s(crc: &mut crc32fast::Hasher, v: &[f32]) {
    const BLOCK: usize = 4096;
    let mut bytes = [0u8; 4 * BLOCK];
    for block in v.chunks(BLOCK) {
        for (b, x) in bytes.chunks_exact_mut(4).zip(block) {
            b.copy_from_slice(&x.to_le_bytes());
        }
        crc.update(&bytes[..4 * block.len()]);
    }
}

/// CRC-32 of f64 values' little-endian bytes, over every slice in turn.
pub(crate) fn data_crc(data: &[&[f64]]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    for v in data {
        v.iter().for_each(|x| crc.update(&x.to_le_bytes()));
    }
    crc.finalize()
}

/// A matrix's entries, row-major (how the files lay out `[rows, cols]`).
pub(crate) fn row_major(m: MatRef<'_, f64>) -> Vec<f64> {
    (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)]))
        .collect()
}

impl HessianOperator for SavedHessian {
    fn dim(&self) -> usize {
        self.hessian.nrows()
    }

    fn apply(&self, v: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        super::check_block(self.dim(), v, out.as_ref(), "hessian")?;
        matmul(out, Accum::Replace, v, self.hessian.transpose(), 1.0, par());
        Ok(())
    }

    /// The saved matrix (nothing to report).
    fn assemble(&self, _progress: &dyn Progress) -> Result<Mat<f64>> {
        Ok(self.hessian.clone())
    }

    fn trace(&self) -> Result<f64> {
        Ok((0..self.dim()).map(|i| self.hessian[(i, i)]).sum())
    }
}
