//! Per-example factor files: the per-layer gradients that TracInCP over chosen layers (and
//! every later estimator that needs more than the final layer) reads.
//!
//! **Format** (`infl factors v1`, written by `python/export_factors.py` for PyTorch models
//! and by infl-nn's exporter): a folder holding, for each checkpoint `NAME`,
//! `NAME.train.safetensors` and, for test scores, `NAME.test.safetensors` (for every
//! checkpoint or for none; names sort naturally, as in [`crate::layout`]). In each file:
//! - for every traced linear layer `L` (`nn.Linear`, or `nn.Conv2d` through unfold):
//!   `L.a` `[N, D]` or `[N, S, D]`, the layer's input at `S` positions (tokens, conv
//!   patches), and `L.g` `[N, K]` or `[N, S, K]`, the gradient of the example's own loss
//!   (summed, not averaged over a batch) with respect to the layer's output. The example's
//!   weight gradient is `Σ_s g_s ⊗ a_s`; when the metadata entry `L.bias` is `true`, its
//!   bias gradient `Σ_s g_s` is part of the gradient too (Captum's `TracInCP` includes it);
//! - for any other traced parameter `P`: `P.grad` `[N, numel]`, its per-example gradient;
//! - `ids` `[N]`, distinct (row numbers when absent) and optionally `labels` `[N]`;
//! - metadata `learning_rate` (the rate in force for the epoch that ended at the checkpoint)
//!   and `layers` (the traced names, comma-separated, in order).
//!
//! Floats may be f32 (used in place when aligned), f16, bf16 or f64.

use std::path::{Path, PathBuf};

use infl_core::{Bias, Matrix};

use crate::load::{check_finite, check_finite_shaped, check_unique_ids};
use crate::{Error, LEARNING_RATE_KEY, Rank, Result, TensorFile, parse_learning_rate};

/// What a file without factor layers is told.
const NO_LAYERS: &str = "the file has no factor layers: expected tensors `L.a` and `L.g` (or \
                         `P.grad`) for each traced layer, as infl.torch (python/export_factors.py) \
                         or `infl demo --export-factors` write them";

/// The factors of one traced layer or parameter.
#[derive(Clone, Debug)]
pub enum LayerFactors {
    /// A linear layer: inputs `a` `[N·S, D]` and output gradients `g` `[N·S, K]`, the `S`
    /// positions of example `i` in rows `i·S .. (i+1)·S`.
    Linear {
        /// Layer inputs.
        a: Matrix,
        /// Gradients of the loss with respect to the layer's outputs.
        g: Matrix,
        /// Positions per example (1 for a plain `[N, D]` layer).
        positions: usize,
        /// Whether the bias gradient `Σ_s g_s` is part of the gradient.
        bias: Bias,
    },
    /// A dense per-example gradient `[N, numel]`.
    Dense {
        /// The gradients.
        grad: Matrix,
    },
}

impl LayerFactors {
    /// Number of examples.
    pub fn examples(&self) -> usize {
        match self {
            Self::Linear { a, positions, .. } => a.rows() / positions,
            Self::Dense { grad } => grad.rows(),
        }
    }

    /// The factors of the examples `rows` (in that order; each `< examples()`).
    pub fn select(&self, rows: &[usize]) -> Self {
        match self {
            Self::Linear {
                a,
                g,
                positions,
                bias,
            } => {
                let p = *positions;
                let expanded: Vec<usize> = rows.iter().flat_map(|&r| r * p..(r + 1) * p).collect();
                Self::Linear {
                    a: a.select_rows(&expanded),
                    g: g.select_rows(&expanded),
                    positions: p,
                    bias: *bias,
                }
            }
            Self::Dense { grad } => Self::Dense {
                grad: grad.select_rows(rows),
            },
        }
    }
}

/// One factor file (a checkpoint's training or test examples), read on demand.
#[derive(Debug)]
pub struct FactorFile {
    file: TensorFile,
}

impl FactorFile {
    /// Opens (memory-maps) a factor file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self {
            file: TensorFile::open(path)?,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The traced layers: the `layers` metadata entry, else every `L` with `L.a` or
    /// `L.grad`, sorted. A name listed twice, or none at all, is an error.
    pub fn layers(&self) -> Result<Vec<String>> {
        let names = self.traced()?;
        if names.is_empty() {
            return Err(Error::layout(self.path(), NO_LAYERS));
        }
        Ok(names)
    }

    /// [`layers`](Self::layers), possibly none.
    fn traced(&self) -> Result<Vec<String>> {
        let names: Vec<String> = match self.file.metadata().get("layers") {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            None => {
                let mut found: Vec<String> = (self.file.names().iter())
                    .filter_map(|n| n.strip_suffix(".a").or_else(|| n.strip_suffix(".grad")))
                    .map(String::from)
                    .collect();
                found.sort();
                found.dedup();
                found
            }
        };
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(Error::bad(
                    self.path(),
                    "__metadata__.layers",
                    format!("expected distinct layer names, found `{name}` twice"),
                ));
            }
        }
        Ok(names)
    }

    /// What the file has, for messages: its layers, or that it has none.
    fn has(&self) -> Result<String> {
        let names = self.traced()?;
        Ok(if names.is_empty() {
            NO_LAYERS.to_string()
        } else {
            format!("the file has layers: {}", names.join(", "))
        })
    }

    /// The layers that `requested` names (all of [`layers`](Self::layers) when `None`),
    /// in the order requested: each name is a traced layer, or a module whose traced
    /// parameters are `NAME.*` (`norm` for `norm.weight` and `norm.bias`).
    pub fn resolve(&self, requested: Option<&[String]>) -> Result<Vec<String>> {
        let Some(requested) = requested else {
            return self.layers();
        };
        let layers = self.traced()?;
        let mut chosen: Vec<String> = Vec::new();
        for name in requested {
            let prefix = format!("{name}.");
            let matched: Vec<&String> = layers
                .iter()
                .filter(|l| *l == name || l.starts_with(&prefix))
                .collect();
            if matched.is_empty() {
                return Err(Error::layout(
                    self.path(),
                    format!("no factors for layer `{name}` ({})", self.has()?),
                ));
            }
            for l in matched {
                if chosen.contains(l) {
                    return Err(Error::layout(
                        self.path(),
                        format!("layer `{l}` is chosen twice (by `{name}`)"),
                    ));
                }
                chosen.push(l.clone());
            }
        }
        Ok(chosen)
    }

    /// The checkpoint's learning rate, if the file records one.
    pub fn learning_rate(&self) -> Result<Option<f32>> {
        self.file
            .metadata()
            .get(LEARNING_RATE_KEY)
            .map(|raw| parse_learning_rate(self.path(), raw))
            .transpose()
    }

    /// The examples' ids (`0..n` when the file has none), checked distinct.
    pub fn ids(&self, n: usize) -> Result<Vec<i64>> {
        if !self.file.contains("ids") {
            return Ok((0..n as i64).collect());
        }
        let ids = self.file.integers("ids")?;
        self.check_examples("ids", ids.len(), n)?;
        check_unique_ids(self.path(), &ids)?;
        Ok(ids)
    }

    /// The examples' labels, if the file has them.
    pub fn labels(&self, n: usize) -> Result<Option<Vec<i64>>> {
        if !self.file.contains("labels") {
            return Ok(None);
        }
        let labels = self.file.integers("labels")?;
        self.check_examples("labels", labels.len(), n)?;
        Ok(Some(labels))
    }

    /// The factors of layer (or parameter) `name`, checked: shapes agree, nothing is
    /// empty, every value is finite.
    pub fn layer(&self, name: &str) -> Result<LayerFactors> {
        let (a, g, grad) = (
            format!("{name}.a"),
            format!("{name}.g"),
            format!("{name}.grad"),
        );
        if self.file.contains(&a) || self.file.contains(&g) {
            return self.linear(name, &a, &g);
        }
        if self.file.contains(&grad) {
            let m = self.file.matrix(&grad, Rank::Matrix)?;
            self.check_nonempty(&grad, m.cols(), "columns")?;
            check_finite(self.path(), &grad, m.view())?;
            return Ok(LayerFactors::Dense { grad: m });
        }
        Err(Error::layout(
            self.path(),
            format!(
                "no factors for layer `{name}`: expected `{a}` and `{g}`, or `{grad}` ({})",
                self.has()?
            ),
        ))
    }

    /// Layer `name`'s output gradients for labels sampled from the model, `{name}.g_sampled`
    /// (same shape as `{name}.g`; what the true Fisher is fitted on, as Kronfluence's
    /// default `use_empirical_fisher=False`), checked finite; `None` when the file has none.
    pub fn sampled_gradients(&self, name: &str) -> Result<Option<Matrix>> {
        let (g_name, s_name) = (format!("{name}.g"), format!("{name}.{SAMPLED_SUFFIX}"));
        if !self.file.contains(&s_name) {
            return Ok(None);
        }
        let m = self.file.matrix(&s_name, Rank::MatrixOrBatched)?;
        let shape = self.file.info(&s_name)?.shape.to_vec();
        let expected = match self.file.contains(&g_name) {
            true => self.file.info(&g_name)?.shape.to_vec(),
            false => shape.clone(),
        };
        if shape != expected {
            return Err(Error::bad(
                self.path(),
                &s_name,
                format!("expected the shape of `{g_name}` {expected:?}, found {shape:?}"),
            ));
        }
        check_finite_shaped(self.path(), &s_name, m.view(), &shape)?;
        Ok(Some(m))
    }

    fn linear(&self, name: &str, a_name: &str, g_name: &str) -> Result<LayerFactors> {
        let a = self.file.matrix(a_name, Rank::MatrixOrBatched)?;
        let g = self.file.matrix(g_name, Rank::MatrixOrBatched)?;
        let (sa, sg) = (
            self.file.info(a_name)?.shape.to_vec(),
            self.file.info(g_name)?.shape.to_vec(),
        );
        let lead = |s: &[usize]| s[..s.len() - 1].to_vec();
        if lead(&sa) != lead(&sg) {
            return Err(Error::bad(
                self.path(),
                g_name,
                format!(
                    "expected the leading dimensions of `{a_name}` {:?} (examples{}), found \
                     shape {sg:?}",
                    lead(&sa),
                    if sa.len() == 3 { ", positions" } else { "" }
                ),
            ));
        }
        self.check_nonempty(a_name, a.cols(), "columns (inputs)")?;
        self.check_nonempty(g_name, g.cols(), "columns (outputs)")?;
        check_finite_shaped(self.path(), a_name, a.view(), &sa)?;
        check_finite_shaped(self.path(), g_name, g.view(), &sg)?;
        Ok(LayerFactors::Linear {
            positions: if sa.len() == 3 { sa[1].max(1) } else { 1 },
            bias: self.bias_flag(name)?,
            a,
            g,
        })
    }

    /// The `L.bias` metadata entry: `true`, `false`, or absent (false).
    fn bias_flag(&self, name: &str) -> Result<Bias> {
        let key = format!("{name}.bias");
        match self.file.metadata().get(&key).map(String::as_str) {
            None | Some("false") => Ok(Bias::Excluded),
            Some("true") => Ok(Bias::Included),
            Some(other) => Err(Error::bad(
                self.path(),
                format!("__metadata__.{key}"),
                format!("expected `true` or `false`, found {other:?}"),
            )),
        }
    }

    fn check_nonempty(&self, tensor: &str, cols: usize, what: &str) -> Result<()> {
        if cols == 0 {
            return Err(Error::bad(
                self.path(),
                tensor,
                format!("expected at least one column, found none: the tensor has no {what}"),
            ));
        }
        Ok(())
    }

    fn check_examples(&self, tensor: &str, found: usize, n: usize) -> Result<()> {
        if found != n {
            return Err(Error::bad(
                self.path(),
                tensor,
                format!("expected {n} entries, one per example, found {found}"),
            ));
        }
        Ok(())
    }
}

/// The suffix of a layer's sampled-label output gradients: `L.g_sampled`.
pub const SAMPLED_SUFFIX: &str = "g_sampled";

/// A factor folder's checkpoints, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct FactorRun {
    /// The folder.
    pub source: PathBuf,
    /// One entry per checkpoint.
    pub entries: Vec<FactorEntry>,
}

/// One checkpoint's factor files.
#[derive(Clone, Debug, PartialEq)]
pub struct FactorEntry {
    /// The checkpoint's name (`NAME`).
    pub name: String,
    /// `NAME.train.safetensors`.
    pub train: PathBuf,
    /// `NAME.test.safetensors`, if the folder has test factors.
    pub test: Option<PathBuf>,
}
