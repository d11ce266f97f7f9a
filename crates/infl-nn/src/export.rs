//! Checkpoints, feature files and per-example factor files, in the formats infl reads.
//!
//! - **Checkpoint** `NAME.safetensors`: a PyTorch-style state dict, `fc1.weight` `[out, in]`,
//!   `fc1.bias` `[out]`, ..., `fcL.weight`, `fcL.bias` (f32), loadable with
//!   `safetensors.torch.load_file` into `nn.Linear` layers of the same names. Metadata:
//!   `learning_rate` (in force during the epoch that ended at this checkpoint), `epoch`,
//!   `format` = `infl-nn mlp`, `sizes` (comma-separated layer sizes, input first).
//! - **Features** `NAME.train.safetensors`, `NAME.test.safetensors`: the penultimate
//!   features (the input of `fcL`) as `features` `[N, D]` f32, `labels` `[N]` i64 and `ids`
//!   `[N]` i64 — what `infl_io::load_examples` reads; with the checkpoint they follow the
//!   directory convention of [`infl_io::layout`]. When the split comes with its images
//!   ([`Split::images`]), also `images` `[N, H, W]` u8 (0 black .. 255 white, as
//!   [`infl_io::Images`] reads them), in the feature and factor files alike: what `infl
//!   topk --plot` draws.
//! - **Factors** `factors/NAME.train.safetensors` (and `.test`): for every layer `fcK`,
//!   `fcK.a` `[N, in_K]`, the layer's input, and `fcK.g` `[N, out_K]`, the gradient of the
//!   example's own cross-entropy loss (reduction "sum", i.e. `softmax − onehot` at the
//!   last layer) with respect to the layer's output; plus `labels` and `ids`, and the
//!   checkpoint's metadata. The example's weight gradient at `fcK` is the outer product
//!   `fcK.g[i] ⊗ fcK.a[i]` and its bias gradient `fcK.g[i]` (metadata `fcK.bias` = `true`).
//!   This is infl-io's `infl factors v1` format (metadata `format`, `layers`, `loss`,
//!   `reduction` as python/export_factors.py writes them), so `--method tracincp --factors
//!   RUN/factors` traces every layer. They sit in a subfolder so that the directory
//!   convention does not take them for checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use infl_core::ranges;
use infl_io::{
    LEARNING_RATE_KEY, OutTensor, Rank, TensorFile, parse_learning_rate, write_safetensors,
};
use ndarray::{Array1, Array2, ArrayView2, Axis, s};

use crate::{Error, Linear, Mlp, Result};

/// The `format` metadata of factor files (the one python/export_factors.py writes).
const FACTORS_FORMAT: &str = "infl factors v1";

/// Rows per forward pass when exporting (bounds memory; results do not depend on it).
const EXPORT_BATCH: usize = 1024;

/// Metadata stored with a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    /// Learning rate in force during the epoch that ended here.
    pub learning_rate: Option<f32>,
    /// Epoch (1-based; 0 for the initial model).
    pub epoch: Option<usize>,
}

fn f32_tensor(a: &Array2<f32>) -> OutTensor {
    OutTensor::F32(vec![a.nrows(), a.ncols()], a.iter().copied().collect())
}

/// The `format` metadata of infl-nn checkpoints.
pub const MLP_FORMAT: &str = "infl-nn mlp";

fn meta_map(meta: &CheckpointMeta, model: &Mlp) -> HashMap<String, String> {
    let mut m = HashMap::new();
    if let Some(lr) = meta.learning_rate {
        m.insert(LEARNING_RATE_KEY.into(), lr.to_string());
    }
    if let Some(e) = meta.epoch {
        m.insert("epoch".into(), e.to_string());
    }
    m.insert("format".into(), MLP_FORMAT.into());
    let sizes: Vec<String> = model.sizes().iter().map(ToString::to_string).collect();
    m.insert("sizes".into(), sizes.join(","));
    m
}

/// Writes `model` as a PyTorch-style state dict (atomically).
pub fn save_checkpoint(model: &Mlp, path: impl AsRef<Path>, meta: &CheckpointMeta) -> Result<()> {
    let mut tensors = Vec::new();
    for (l, layer) in model.layers().iter().enumerate() {
        let name = Mlp::layer_name(l);
        tensors.push((format!("{name}.weight"), f32_tensor(&layer.weight)));
        tensors.push((
            format!("{name}.bias"),
            OutTensor::F32(vec![layer.bias.len()], layer.bias.to_vec()),
        ));
    }
    write_safetensors(path, tensors, meta_map(meta, model))?;
    Ok(())
}

/// Reads a checkpoint written by [`save_checkpoint`] (or any state dict with layers
/// `fc1`, `fc2`, ... holding `weight` `[out, in]` and `bias` `[out]`). The learning rate
/// must be finite ([`infl_io::parse_learning_rate`], as for attribution).
pub fn load_checkpoint(path: impl AsRef<Path>) -> Result<(Mlp, CheckpointMeta)> {
    let file = TensorFile::open(path.as_ref())?;
    let mut layers: Vec<Linear> = Vec::new();
    while let Some(layer) = load_layer(&file, layers.len(), layers.last())? {
        layers.push(layer);
    }
    if layers.is_empty() {
        return Err(Error::checkpoint(
            file.path(),
            "fc1.weight",
            format!(
                "expected an MLP state dict with fc1.weight, fc2.weight, ...; the file has: {}",
                file.names().join(", ")
            ),
        ));
    }
    let meta = load_meta(&file)?;
    Ok((Mlp::from_layers(layers)?, meta))
}

/// Layer `l` (`fc{l+1}`) of a state dict, `None` past the last one; it must take the
/// outputs of `prev` as inputs.
fn load_layer(file: &TensorFile, l: usize, prev: Option<&Linear>) -> Result<Option<Linear>> {
    let path = file.path();
    let name = Mlp::layer_name(l);
    let wname = format!("{name}.weight");
    if !file.contains(&wname) {
        return Ok(None);
    }
    let w = file.matrix(&wname, Rank::Matrix)?;
    let bname = format!("{name}.bias");
    let b = file.vector(&bname)?;
    let weight = Array2::from_shape_vec((w.rows(), w.cols()), w.to_vec())
        .map_err(|e| Error::checkpoint(path, &wname, e.to_string()))?;
    if b.len() != w.rows() {
        return Err(Error::checkpoint(
            path,
            &bname,
            format!(
                "expected shape [{}] to match `{wname}`, found [{}]",
                w.rows(),
                b.len()
            ),
        ));
    }
    if let Some(prev) = prev.map(Linear::outputs)
        && prev != w.cols()
    {
        return Err(Error::checkpoint(
            path,
            &wname,
            format!(
                "expected [out, {prev}] to follow the previous layer's {prev} outputs, found [{}, {}]",
                w.rows(),
                w.cols()
            ),
        ));
    }
    Ok(Some(Linear {
        weight,
        bias: Array1::from(b),
    }))
}

/// The metadata entries `learning_rate` and `epoch`, when present.
fn load_meta(file: &TensorFile) -> Result<CheckpointMeta> {
    let path = file.path();
    let learning_rate = file
        .metadata()
        .get(LEARNING_RATE_KEY)
        .map(|raw| parse_learning_rate(path, raw))
        .transpose()?;
    let epoch = file
        .metadata()
        .get("epoch")
        .map(|s| s.trim())
        .map(|s| {
            s.parse::<usize>().map_err(|_| {
                Error::checkpoint(
                    path,
                    "epoch (metadata)",
                    format!("expected an integer, found {s:?}"),
                )
            })
        })
        .transpose()?;
    Ok(CheckpointMeta {
        learning_rate,
        epoch,
    })
}

/// The penultimate features (input of the last layer) of every row of `x`, `[N, D]`.
pub fn penultimate_features(model: &Mlp, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
    let d = model.layers()[model.layers().len() - 1].inputs();
    let mut out = Array2::zeros((x.nrows(), d));
    for (chunk, mut o) in x
        .axis_chunks_iter(Axis(0), EXPORT_BATCH)
        .zip(out.axis_chunks_iter_mut(Axis(0), EXPORT_BATCH))
    {
        let f = model.forward(chunk)?;
        o.assign(f.penultimate());
    }
    Ok(out)
}

/// Per-example factors of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerFactors {
    /// Layer name (`fcK`).
    pub name: String,
    /// Layer inputs `[N, in]`.
    pub a: Array2<f32>,
    /// Gradients of each example's own loss with respect to the layer's outputs `[N, out]`.
    pub g: Array2<f32>,
}

/// Per-example factors of every layer for examples `x` with labels `labels`.
pub fn per_example_factors(
    model: &Mlp,
    x: ArrayView2<'_, f32>,
    labels: &[i64],
) -> Result<Vec<LayerFactors>> {
    if labels.len() != x.nrows() {
        return Err(Error::shape(
            "per_example_factors",
            format!("expected {} labels, found {}", x.nrows(), labels.len()),
        ));
    }
    let mut out: Vec<LayerFactors> = model
        .layers()
        .iter()
        .enumerate()
        .map(|(l, layer)| LayerFactors {
            name: Mlp::layer_name(l),
            a: Array2::zeros((x.nrows(), layer.inputs())),
            g: Array2::zeros((x.nrows(), layer.outputs())),
        })
        .collect();
    for rows in ranges(x.nrows(), EXPORT_BATCH) {
        let fwd = model.forward(x.slice(s![rows.clone(), ..]))?;
        let back = model.backward(&fwd, &labels[rows.clone()])?;
        for (l, f) in out.iter_mut().enumerate() {
            f.a.slice_mut(s![rows.clone(), ..]).assign(&fwd.inputs[l]);
            f.g.slice_mut(s![rows.clone(), ..])
                .assign(&back.output_grads[l]);
        }
    }
    Ok(out)
}

/// Seed of the labels drawn for the true Fisher's output gradients (`L.g_sampled`).
pub const SAMPLE_SEED: u64 = 0x5A3;

/// One label per example drawn from the model's predictive distribution `softmax(logits)`:
/// ChaCha8 keyed by `seed` with the example's id as the stream, one uniform through the
/// inverse CDF in f64 — an example's label does not depend on its batch, its row or the
/// thread count. Kronfluence's default (`use_empirical_fisher=False`) fits on such labels.
pub fn sampled_labels(logits: ArrayView2<'_, f32>, ids: &[i64], seed: u64) -> Vec<i64> {
    use rand::{RngExt, SeedableRng};
    (logits.rows().into_iter().zip(ids))
        .map(|(z, &id)| {
            let max = z.fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let e: Vec<f64> = z.iter().map(|&x| f64::from(x - max).exp()).collect();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(id as u64);
            let mut u = rng.random::<f64>() * e.iter().sum::<f64>();
            for (k, p) in e.iter().enumerate() {
                if u < *p {
                    return k as i64;
                }
                u -= p;
            }
            (e.len() - 1) as i64
        })
        .collect()
}

/// The `labels` and `ids` tensors of a split (and its `images`), common to its feature
/// and factor files.
fn labels_and_ids(split: Split<'_>) -> Vec<(String, OutTensor)> {
    let n = split.labels.len();
    let mut tensors = vec![
        (
            "labels".to_string(),
            OutTensor::I64(vec![n], split.labels.to_vec()),
        ),
        (
            "ids".to_string(),
            OutTensor::I64(vec![n], split.ids.to_vec()),
        ),
    ];
    if let Some(im) = split.images {
        let shape = vec![n, im.height, im.width];
        let images = OutTensor::U8(shape, im.pixels.to_vec());
        tensors.push((infl_io::images::IMAGES.to_string(), images));
    }
    tensors
}

/// A set of examples to export at each checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct Split<'a> {
    /// Inputs `[N, in]`.
    pub x: ArrayView2<'a, f32>,
    /// Labels `[N]` (for training examples: the labels trained on).
    pub labels: &'a [i64],
    /// Ids `[N]`.
    pub ids: &'a [i64],
    /// The examples as grey images, written as `images` when given.
    pub images: Option<SplitImages<'a>>,
}

/// A split's grey images: `[N, height, width]` bytes, row-major, 0 black .. 255 white.
#[derive(Clone, Copy, Debug)]
pub struct SplitImages<'a> {
    /// The pixels of every example, image after image.
    pub pixels: &'a [u8],
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
}

/// Whether a [`RunWriter`] also writes per-example factor files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorFiles {
    /// Checkpoints and features only.
    Skip,
    /// Also `factors/NAME.{train,test}.safetensors` with every layer's factors (large:
    /// `N × Σ(in + 2·out)` floats per checkpoint and split): `L.a`, `L.g` for the true
    /// labels and `L.g_sampled` for labels drawn from the model ([`sampled_labels`], the
    /// true Fisher's).
    Write,
}

/// Writes a run in the directory convention of [`infl_io::layout`]: per checkpoint
/// `NAME.safetensors`, `NAME.train.safetensors`, `NAME.test.safetensors`, and with
/// [`FactorFiles::Write`] `factors/NAME.{train,test}.safetensors`.
#[derive(Clone, Debug)]
pub struct RunWriter {
    dir: PathBuf,
    factors: FactorFiles,
}

impl RunWriter {
    /// A writer into `dir` (created if needed, with its `factors` subfolder when
    /// `factors` is [`FactorFiles::Write`]).
    pub fn new(dir: impl Into<PathBuf>, factors: FactorFiles) -> Result<Self> {
        let dir = dir.into();
        let sub = match factors {
            FactorFiles::Write => dir.join("factors"),
            FactorFiles::Skip => dir.clone(),
        };
        std::fs::create_dir_all(&sub).map_err(|e| infl_io::Error::Io {
            path: sub.clone(),
            source: e,
        })?;
        Ok(Self { dir, factors })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes checkpoint `name` of `model` with its features (and factors).
    pub fn write<'a>(
        &self,
        name: &str,
        model: &Mlp,
        meta: &CheckpointMeta,
        train: Split<'a>,
        test: Option<Split<'a>>,
    ) -> Result<()> {
        save_checkpoint(model, self.dir.join(format!("{name}.safetensors")), meta)?;
        let metadata = meta_map(meta, model);
        for (split, suffix) in [(Some(train), "train"), (test, "test")] {
            if let Some(split) = split {
                self.write_split(name, suffix, model, &metadata, split)?;
            }
        }
        Ok(())
    }

    /// Writes the feature file (and factor file) `NAME.{suffix}.safetensors` of `split`.
    fn write_split(
        &self,
        name: &str,
        suffix: &str,
        model: &Mlp,
        metadata: &HashMap<String, String>,
        split: Split<'_>,
    ) -> Result<()> {
        if split.labels.len() != split.x.nrows() || split.ids.len() != split.x.nrows() {
            return Err(Error::shape(
                "RunWriter::write",
                format!(
                    "{suffix}: expected {} labels and ids, found {} and {}",
                    split.x.nrows(),
                    split.labels.len(),
                    split.ids.len()
                ),
            ));
        }
        if let Some(im) = split.images
            && im.pixels.len() != split.x.nrows() * im.height * im.width
        {
            return Err(Error::shape(
                "RunWriter::write",
                format!(
                    "{suffix}: expected {} images of {} x {} pixels, found {} pixels",
                    split.x.nrows(),
                    im.height,
                    im.width,
                    im.pixels.len()
                ),
            ));
        }
        let common = || labels_and_ids(split);
        if self.factors == FactorFiles::Write {
            let mut tensors = common();
            let mut metadata = metadata.clone();
            let factors = per_example_factors(model, split.x, split.labels)?;
            let drawn = sampled_labels(model.logits(split.x)?.view(), split.ids, SAMPLE_SEED);
            let sampled = per_example_factors(model, split.x, &drawn)?;
            for (f, s) in factors.iter().zip(&sampled) {
                tensors.push((format!("{}.a", f.name), f32_tensor(&f.a)));
                tensors.push((format!("{}.g", f.name), f32_tensor(&f.g)));
                tensors.push((
                    format!("{}.{}", f.name, infl_io::SAMPLED_SUFFIX),
                    f32_tensor(&s.g),
                ));
                metadata.insert(format!("{}.bias", f.name), "true".into());
                metadata.insert(format!("{}.kind", f.name), "linear".into());
            }
            let layers: Vec<&str> = factors.iter().map(|f| f.name.as_str()).collect();
            metadata.insert("layers".into(), layers.join(","));
            metadata.insert("format".into(), FACTORS_FORMAT.into());
            metadata.insert("loss".into(), "cross_entropy".into());
            metadata.insert("reduction".into(), "sum".into());
            write_safetensors(
                self.dir
                    .join("factors")
                    .join(format!("{name}.{suffix}.safetensors")),
                tensors,
                metadata,
            )?;
        }
        let mut tensors = common();
        tensors.push((
            "features".to_string(),
            f32_tensor(&penultimate_features(model, split.x)?),
        ));
        write_safetensors(
            self.dir.join(format!("{name}.{suffix}.safetensors")),
            tensors,
            HashMap::new(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_labels_follow_the_softmax_and_are_keyed_by_id() {
        let logits = ndarray::array![[0.0f32, 1.0, -1.0], [2.0, 0.0, 0.0]];
        let p0: Vec<f64> = {
            let e: Vec<f64> = [0.0f64, 1.0, -1.0].iter().map(|x| x.exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        };
        let draws = 20_000;
        let mut counts = [0usize; 3];
        for seed in 0..draws {
            counts[sampled_labels(logits.view(), &[7, 8], seed)[0] as usize] += 1;
        }
        for k in 0..3 {
            let freq = counts[k] as f64 / draws as f64;
            // 5 standard deviations of a binomial frequency.
            let sd = (p0[k] * (1.0 - p0[k]) / draws as f64).sqrt();
            assert!(
                (freq - p0[k]).abs() <= 5.0 * sd,
                "class {k}: {freq} vs {}",
                p0[k]
            );
        }
        // An example's label depends on its id and the seed, not on its row.
        let a = sampled_labels(logits.view(), &[7, 8], 3);
        let b = sampled_labels(logits.slice(s![1..2, ..]), &[8], 3);
        assert_eq!(a[1], b[0]);
    }
}
