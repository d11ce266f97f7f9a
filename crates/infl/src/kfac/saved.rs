//! A K-FAC or EK-FAC fit on disk ("infl kfac v1": `infl fit --factors DIR --solver
//! kfac|ekfac`, then `--hessian FILE`), so that many test batches and shards reuse one fit.
//!
//! The file (safetensors) holds per layer `L`, all f64 and *undamped* (the damping,
//! heuristic included, is applied on use, from the same numbers):
//! `L.activation_eigenvectors` `Q_A` `[D', D']`, `L.gradient_eigenvectors` `Q_S` `[K, K]`
//! (row-major, eigenvectors as columns), the covariances' eigenvalues
//! `L.activation_eigenvalues` `[D']` and `L.gradient_eigenvalues` `[K]` — K-FAC's `Λ` is
//! their product, recomputed on open by the same expression as the fit — and, for EK-FAC,
//! the corrected `L.eigenvalues` `Λ` `[K, D']`. So the scores from a saved fit are the
//! unsaved path's bit for bit. Its metadata ([`FitIdentity`], checked in this order):
//! strategy, curvature (empirical or true Fisher), checkpoint, layers (a JSON list) and
//! each layer's shape (`L.shape`), training examples, and a CRC-32 of the values the fit
//! read (each layer's `.a`, then its `.g` or, for the true Fisher, `.g_sampled`, as f32
//! little-endian bytes: the file's own bytes when it stores f32); and
//! the CRC-32 of the f64 data, checked on open (shared with the Hessian file:
//! [`crate::curvature::SavedCurvature`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use faer::Mat;
use infl_core::Bias;
use infl_io::{OutTensor, TensorFile};

use super::{Fit, LayerFit, Shape, Strategy, kronecker, linear};
use crate::Result;
use crate::curvature::{
    Curvature, Header, check_identity, crc_f32s, data_crc, file_metadata, row_major,
};
use crate::run::SplitFactors;

/// The `format` metadata of a K-FAC fit file.
pub const FORMAT: &str = "infl kfac v1";

/// What a K-FAC or EK-FAC fit was fitted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitIdentity {
    /// K-FAC or EK-FAC.
    pub strategy: Strategy,
    /// [`Curvature::Fisher`] (the files' `.g`) or [`Curvature::TrueFisher`] (`.g_sampled`).
    pub curvature: Curvature,
    /// The checkpoint's name.
    pub checkpoint: String,
    /// The layers, in order.
    pub layers: Vec<String>,
    /// Each layer's shape, as its file records it
    /// (`outputs=K inputs=D positions=S bias=included|excluded`).
    pub shapes: Vec<String>,
    /// Training examples.
    pub examples: usize,
    /// CRC-32 of the values the fit read (f32, little-endian): per layer its `.a`, then its
    /// `.g` (or `.g_sampled`).
    pub crc32: u32,
}

impl FitIdentity {
    /// The identity of a fit of `train` (the factors the fit reads: for the true Fisher,
    /// with the sampled gradients in place of `.g`) at checkpoint `checkpoint`.
    pub fn of(
        train: &SplitFactors,
        checkpoint: &str,
        strategy: Strategy,
        curvature: Curvature,
    ) -> Result<Self> {
        let mut crc = crc32fast::Hasher::new();
        let mut shapes = Vec::with_capacity(train.layers.len());
        for layer in &train.layers {
            let (shape, a, g) = linear(layer, &train.source)?;
            crc_f32s(&mut crc, a.data());
            crc_f32s(&mut crc, g.data());
            shapes.push(shape.key());
        }
        Ok(Self {
            strategy,
            curvature,
            checkpoint: checkpoint.to_string(),
            layers: train.layers.iter().map(|l| l.name.clone()).collect(),
            shapes,
            examples: train.len(),
            crc32: crc.finalize(),
        })
    }

    fn metadata(&self) -> Vec<(String, String)> {
        let names = serde_json::to_string(&self.layers).unwrap_or_default();
        let mut m = vec![
            ("strategy".into(), self.strategy.short_name().into()),
            ("curvature".into(), self.curvature.short_name().into()),
            ("checkpoint".into(), self.checkpoint.clone()),
            ("layers".into(), names),
        ];
        for (name, shape) in self.layers.iter().zip(&self.shapes) {
            m.push((format!("{name}.shape"), shape.clone()));
        }
        m.push(("examples".into(), self.examples.to_string()));
        m.push(("crc32".into(), format!("{:08x}", self.crc32)));
        m
    }
}

/// A K-FAC or EK-FAC fit with what it was fitted on.
#[derive(Clone, Debug)]
pub struct SavedFit {
    /// The fit.
    pub fit: Fit,
    /// What it was fitted on.
    pub identity: FitIdentity,
    /// The file it was read from (empty when fitted in this process).
    pub source: PathBuf,
}

impl SavedFit {
    /// The tensors and metadata of its file (see the module docs).
    pub fn tensors(&self) -> (Vec<(String, OutTensor)>, HashMap<String, String>) {
        let ekfac = self.fit.strategy == Strategy::Ekfac;
        let mut tensors = Vec::new();
        for l in &self.fit.layers {
            let (k, w) = (l.outputs(), l.width());
            let matrix =
                |m: &Mat<f64>| OutTensor::F64(vec![m.nrows(), m.ncols()], row_major(m.as_ref()));
            let mut push =
                |what: &str, t: OutTensor| tensors.push((format!("{}.{what}", l.name), t));
            push(
                "activation_eigenvectors",
                matrix(&l.activation_eigenvectors),
            );
            push("gradient_eigenvectors", matrix(&l.gradient_eigenvectors));
            push(
                "activation_eigenvalues",
                OutTensor::F64(vec![w], l.activation_eigenvalues.clone()),
            );
            push(
                "gradient_eigenvalues",
                OutTensor::F64(vec![k], l.gradient_eigenvalues.clone()),
            );
            if ekfac {
                push("eigenvalues", matrix(&l.eigenvalues));
            }
        }
        let data: Vec<&[f64]> = (tensors.iter())
            .filter_map(|(_, t)| match t {
                OutTensor::F64(_, v) => Some(v.as_slice()),
                _ => None,
            })
            .collect();
        let crc = data_crc(&data);
        let meta = file_metadata(FORMAT, self.identity.metadata(), crc);
        (tensors, meta)
    }

    /// Reads a K-FAC fit file, checking its format, metadata, shapes and data CRC.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let file = TensorFile::open(path.as_ref())?;
        let header = Header::new(&file, FORMAT)?;
        let strategy = match header.get("strategy")? {
            "kfac" => Strategy::Kfac,
            "ekfac" => Strategy::Ekfac,
            other => return Err(header.bad("strategy", other, "kfac or ekfac")),
        };
        let curvature = match header.get("curvature")? {
            "fisher" => Curvature::Fisher,
            "true-fisher" => Curvature::TrueFisher,
            other => return Err(header.bad("curvature", other, "fisher or true-fisher")),
        };
        let names = header.get("layers")?;
        let layers: Vec<String> = serde_json::from_str(names)
            .ok()
            .filter(|l: &Vec<String>| !l.is_empty())
            .ok_or_else(|| header.bad("layers", names, "a JSON list of layer names"))?;
        let mut shapes = Vec::with_capacity(layers.len());
        let mut data: Vec<Vec<f64>> = Vec::new();
        let mut fits = Vec::with_capacity(layers.len());
        for name in &layers {
            let key = format!("{name}.shape");
            let text = header.get(&key)?;
            let shape = Shape::parse(text).ok_or_else(|| {
                header.bad(
                    &key,
                    text,
                    "outputs=K inputs=D positions=S bias=included|excluded",
                )
            })?;
            shapes.push(text.to_string());
            let (k, w) = (shape.outputs, shape.width());
            let mut read = |what: &str, dims: &[usize]| -> Result<Vec<f64>> {
                let v = file.f64s(&format!("{name}.{what}"), dims)?;
                data.push(v.clone());
                Ok(v)
            };
            let qa = read("activation_eigenvectors", &[w, w])?;
            let qs = read("gradient_eigenvectors", &[k, k])?;
            let lambda_a = read("activation_eigenvalues", &[w])?;
            let lambda_s = read("gradient_eigenvalues", &[k])?;
            let eigenvalues = match strategy {
                Strategy::Kfac => kronecker(&lambda_s, &lambda_a),
                Strategy::Ekfac => matrix(&read("eigenvalues", &[k, w])?, k, w),
            };
            fits.push(LayerFit {
                name: name.clone(),
                shape,
                activation_eigenvectors: matrix(&qa, w, w),
                gradient_eigenvectors: matrix(&qs, k, k),
                activation_eigenvalues: lambda_a,
                gradient_eigenvalues: lambda_s,
                eigenvalues,
            });
        }
        let slices: Vec<&[f64]> = data.iter().map(Vec::as_slice).collect();
        header.check_data("(tensors)", &slices)?;
        let source = file.path().to_path_buf();
        let identity = FitIdentity {
            strategy,
            curvature,
            checkpoint: header.get("checkpoint")?.to_string(),
            layers,
            shapes,
            examples: header.number("examples")?,
            crc32: header.crc("crc32")?,
        };
        let fit = Fit {
            strategy,
            source: source.clone(),
            layers: fits,
        };
        Ok(Self {
            fit,
            identity,
            source,
        })
    }

    /// Refuses a run (its last checkpoint's training file `run`) whose identity differs,
    /// naming the first differing field.
    pub fn check(&self, run: &Path, want: &FitIdentity) -> Result<()> {
        let (have, want) = (self.identity.metadata(), want.metadata());
        check_identity(&self.source, "__metadata__", &have, &want, run)
    }
}

/// A row-major `[rows, cols]` matrix.
fn matrix(data: &[f64], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| data[i * cols + j])
}

impl Shape {
    /// The shape as its file records it (`outputs=K inputs=D positions=S bias=included`).
    pub(super) fn key(self) -> String {
        let bias = match self.bias {
            Bias::Included => "included",
            Bias::Excluded => "excluded",
        };
        format!(
            "outputs={} inputs={} positions={} bias={bias}",
            self.outputs, self.inputs, self.positions
        )
    }

    /// The shape [`key`](Self::key) wrote (positive sizes), or `None`.
    fn parse(text: &str) -> Option<Self> {
        let fields: HashMap<&str, &str> = (text.split(' '))
            .map(|f| f.split_once('='))
            .collect::<Option<_>>()?;
        let size = |key: &str| fields.get(key)?.parse::<usize>().ok().filter(|&n| n > 0);
        let bias = match *fields.get("bias")? {
            "included" => Bias::Included,
            "excluded" => Bias::Excluded,
            _ => return None,
        };
        let shape = Self {
            outputs: size("outputs")?,
            inputs: size("inputs")?,
            positions: size("positions")?,
            bias,
        };
        (fields.len() == 4 && shape.key() == text).then_some(shape)
    }
}
