//! A fitted Hessian on disk (`infl fit`, then `--hessian FILE`), so that many test batches
//! reuse one fit.
//!
//! The file ("infl hessian v1", safetensors) holds `hessian` f64 `[n, n]` — `H` without
//! damping, so the damping and the solver can change without refitting, with its CRC-32
//! recorded and checked on open so that an altered byte is refused — and metadata naming what it was fitted on ([`Identity`]): the checkpoint, the shapes, the loss, the
//! bias, and a CRC-32 of the exact bytes of the layer's weights and bias and of the
//! training features, labels and targets. A run whose last checkpoint has another
//! identity is refused, naming the first field that differs. With the assembled matrix,
//! applying `H` costs `n²` per vector instead of a pass over the training set.

use std::collections::HashMap;
use std::path::Path;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef};
use infl_core::Bias;
use infl_io::{OutTensor, TensorFile};

use super::{HessianOperator, par};
use crate::engine::Progress;
use crate::run::{CheckpointData, Loss};
use crate::{Error, Result};

/// The `format` metadata of a Hessian file.
pub const FORMAT: &str = "infl hessian v1";

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
        let floats = |h: &mut crc32fast::Hasher, v: &[f32]| {
            v.iter().for_each(|x| h.update(&x.to_le_bytes()))
        };
        floats(&mut crc, d.checkpoint.weight.data());
        floats(&mut crc, d.checkpoint.bias.as_deref().unwrap_or_default());
        floats(&mut crc, d.train.features.data());
        if let Some(l) = &d.train.labels {
            l.iter().for_each(|x| crc.update(&x.to_le_bytes()));
        }
        if let Some(t) = &d.train.targets {
            floats(&mut crc, t.data());
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

    fn metadata(&self) -> Vec<(&'static str, String)> {
        vec![
            ("checkpoint", self.checkpoint.clone()),
            ("examples", self.examples.to_string()),
            ("outputs", self.outputs.to_string()),
            ("inputs", self.inputs.to_string()),
            ("loss", self.loss.short_name().to_string()),
            ("include_bias", (self.bias == Bias::Included).to_string()),
            ("crc32", format!("{:08x}", self.crc32)),
        ]
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
    pub source: std::path::PathBuf,
}

impl SavedHessian {
    /// The tensors and metadata of its file.
    pub fn tensors(&self) -> (Vec<(String, OutTensor)>, HashMap<String, String>) {
        let n = self.hessian.nrows();
        let data: Vec<f64> = (0..n)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| self.hessian[(i, j)])
            .collect();
        let mut meta: HashMap<String, String> = (self.identity.metadata().into_iter())
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("hessian_crc32".into(), format!("{:08x}", data_crc(&data)));
        let tensor = OutTensor::F64(vec![n, n], data);
        (vec![("hessian".into(), tensor)], meta)
    }

    /// Reads a Hessian file, checking its format, metadata and shape.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = TensorFile::open(path.as_ref())?;
        let path = file.path().to_path_buf();
        let meta = file.metadata();
        let get = |key: &str| -> Result<&String> {
            meta.get(key).ok_or_else(|| {
                let details = format!("no `{key}`; expected a file written by `infl fit`");
                Error::data(&path, "__metadata__", details)
            })
        };
        if get("format")? != FORMAT {
            let details = format!("format {:?}; expected {FORMAT:?}", get("format")?);
            return Err(Error::data(&path, "__metadata__", details));
        }
        let number = |key: &str| -> Result<usize> {
            let v = get(key)?;
            v.parse().map_err(|_| {
                Error::data(
                    &path,
                    format!("{key} (metadata)"),
                    format!("{v:?}; expected a number"),
                )
            })
        };
        let loss = match get("loss")?.as_str() {
            "ce" => Loss::CrossEntropy,
            "mse" => Loss::MeanSquaredError,
            other => {
                let details = format!("{other:?}; expected ce or mse");
                return Err(Error::data(&path, "loss (metadata)", details));
            }
        };
        let crc = get("crc32")?;
        let identity = Identity {
            checkpoint: get("checkpoint")?.clone(),
            examples: number("examples")?,
            outputs: number("outputs")?,
            inputs: number("inputs")?,
            loss,
            bias: if get("include_bias")? == "true" {
                Bias::Included
            } else {
                Bias::Excluded
            },
            crc32: u32::from_str_radix(crc, 16).map_err(|_| {
                Error::data(
                    &path,
                    "crc32 (metadata)",
                    format!("{crc:?}; expected 8 hex digits"),
                )
            })?,
        };
        let n = identity.dim();
        let data = file.f64s("hessian", &[n, n])?;
        let want = get("hessian_crc32")?;
        let found = format!("{:08x}", data_crc(&data));
        if &found != want {
            let details = format!(
                "CRC-32 {found}, but the file records {want}: it was altered or damaged; refit \
                 with `infl fit`"
            );
            return Err(Error::data(&path, "hessian", details));
        }
        let hessian = Mat::from_fn(n, n, |i, j| data[i * n + j]);
        Ok(Self {
            hessian,
            identity,
            source: path,
        })
    }

    /// Refuses a run (its last checkpoint's training file `run`) whose identity differs,
    /// naming the first differing field.
    pub fn check(&self, run: &Path, want: &Identity) -> Result<()> {
        let (have, need) = (self.identity.metadata(), want.metadata());
        match have.iter().zip(&need).find(|(a, b)| a.1 != b.1) {
            None => Ok(()),
            Some(((key, found), (_, expected))) => {
                let details = format!(
                    "fitted with {key} = {found}, but the run's last checkpoint ({}) has \
                     {expected}: refit with `infl fit` (or drop --hessian)",
                    run.display()
                );
                Err(Error::data(&self.source, "hessian", details))
            }
        }
    }
}

/// CRC-32 of f64 values' little-endian bytes.
fn data_crc(v: &[f64]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    v.iter().for_each(|x| crc.update(&x.to_le_bytes()));
    crc.finalize()
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
