//! What an index's embeddings were computed with, recorded in its file and compared with
//! every query's.
//!
//! A [`Recipe`] is everything that changes the numbers: the method and its settings
//! (projection dimension and seed included, as the estimator reports them), the checkpoints
//! and their learning rates, the layers, and the shape of every term (which fixes the
//! embedding layout). Query embeddings made with another recipe live in another space: a
//! dot product with the index's would be meaningless, so [`Recipe::check_query`] refuses
//! them, naming the first setting that differs.
//!
//! In the file every field is one string of `__metadata__`: names as they are, lists as
//! JSON, so that any safetensors reader can show them.

use std::collections::HashMap;
use std::path::Path;

use infl_core::Bias;
use serde::{Deserialize, Serialize};

use crate::engine::TermSet;
use crate::estimators::Estimator;
use crate::run::Prepared;
use crate::{Error, Result};

/// The shape and weight of one term (one `(checkpoint, layer)`), as embedded.
#[derive(Clone, Debug, PartialEq)]
pub struct TermShape {
    /// Where the term comes from (the [`FactorTerm`](crate::FactorTerm)'s label).
    pub label: String,
    /// Its weight (the learning rate).
    pub weight: f32,
    /// Whether its bias gradient is included.
    pub bias: Bias,
    /// Output-gradient columns `Dg`.
    pub outputs: usize,
    /// Input columns `Da`.
    pub inputs: usize,
}

/// Everything that determines the embeddings (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// The method's machine name (e.g. `tracincp-fast-rand-proj`).
    pub method: String,
    /// The estimator's settings, `(key, value)` (e.g. `("projection_dim", "1024")`).
    pub settings: Vec<(String, String)>,
    /// Checkpoint names, in order.
    pub checkpoints: Vec<String>,
    /// Their learning rates.
    pub learning_rates: Vec<f32>,
    /// The layers the terms come from (e.g. `["fc3"]`).
    pub layers: Vec<String>,
    /// One entry per term of the set.
    pub terms: Vec<TermShape>,
}

impl Recipe {
    /// The recipe of `prepared`, made by `estimator` from `layers`.
    pub fn of(estimator: &dyn Estimator, prepared: &Prepared, layers: &[String]) -> Self {
        Self {
            method: estimator.name().to_string(),
            settings: estimator.settings(),
            checkpoints: prepared.checkpoints.clone(),
            learning_rates: prepared.learning_rates.clone(),
            layers: layers.to_vec(),
            terms: term_shapes(&prepared.set),
        }
    }

    /// The shapes of a term set (for recipes of sets that no estimator made).
    pub fn term_shapes(set: &TermSet) -> Vec<TermShape> {
        term_shapes(set)
    }

    /// The embedding width this recipe gives.
    pub fn width(&self) -> usize {
        self.terms
            .iter()
            .map(|t| t.outputs * (t.inputs + usize::from(t.bias == Bias::Included)))
            .sum()
    }

    /// Refuses a query recipe that differs from this one (the index's), naming the first
    /// setting that differs: "the index was built with projection_dim 1024, the query
    /// with 256".
    pub fn check_query(&self, query: &Recipe) -> Result<()> {
        let differs = |what: &str, built: String, asked: String| {
            Err(Error::config(
                "query",
                format!("the index was built with {what} {built}, the query with {asked}"),
            ))
        };
        if self.method != query.method {
            return differs("method", self.method.clone(), query.method.clone());
        }
        let mut keys: Vec<&String> = self.settings.iter().map(|(k, _)| k).collect();
        keys.extend(query.settings.iter().map(|(k, _)| k));
        for key in keys {
            let (built, asked) = (setting(&self.settings, key), setting(&query.settings, key));
            if built != asked {
                return differs(key, built, asked);
            }
        }
        let list = |v: &[String]| format!("[{}]", v.join(", "));
        if self.checkpoints != query.checkpoints {
            return differs(
                "checkpoints",
                list(&self.checkpoints),
                list(&query.checkpoints),
            );
        }
        if self.learning_rates != query.learning_rates {
            let lrs = |v: &[f32]| format!("{v:?}");
            return differs(
                "learning rates",
                lrs(&self.learning_rates),
                lrs(&query.learning_rates),
            );
        }
        if self.layers != query.layers {
            return differs("layers", list(&self.layers), list(&query.layers));
        }
        let terms = |v: &[TermShape]| format!("[{}]", describe(v));
        if self.terms != query.terms {
            return differs("terms", terms(&self.terms), terms(&query.terms));
        }
        Ok(())
    }

    /// The metadata entries of the recipe.
    pub(super) fn to_metadata(&self) -> Result<Vec<(String, String)>> {
        let terms: Vec<TermRecord> = self.terms.iter().map(TermRecord::from).collect();
        Ok(vec![
            ("method".into(), self.method.clone()),
            ("settings".into(), json(&self.settings)?),
            ("checkpoints".into(), json(&self.checkpoints)?),
            ("learning_rates".into(), json(&self.learning_rates)?),
            ("layers".into(), json(&self.layers)?),
            ("terms".into(), json(&terms)?),
        ])
    }

    /// The recipe recorded in `metadata` of `path`.
    pub(super) fn from_metadata(path: &Path, metadata: &HashMap<String, String>) -> Result<Self> {
        let terms: Vec<TermRecord> = parse(path, metadata, "terms")?;
        Ok(Self {
            method: entry(path, metadata, "method")?.to_string(),
            settings: parse(path, metadata, "settings")?,
            checkpoints: parse(path, metadata, "checkpoints")?,
            learning_rates: parse(path, metadata, "learning_rates")?,
            layers: parse(path, metadata, "layers")?,
            terms: terms
                .into_iter()
                .map(|t| t.shape(path))
                .collect::<Result<_>>()?,
        })
    }
}

fn term_shapes(set: &TermSet) -> Vec<TermShape> {
    set.terms
        .iter()
        .map(|t| TermShape {
            label: t.label.clone(),
            weight: t.weight,
            bias: t.bias,
            outputs: t.train.g.cols(),
            inputs: t.train.a.cols(),
        })
        .collect()
}

fn setting(settings: &[(String, String)], key: &str) -> String {
    settings
        .iter()
        .find(|(k, _)| k == key)
        .map_or("(not set)".into(), |(_, v)| v.clone())
}

fn describe(terms: &[TermShape]) -> String {
    let one = |t: &TermShape| {
        let bias = if t.bias == Bias::Included {
            " + bias"
        } else {
            ""
        };
        format!(
            "{} (weight {}): {} outputs x {} inputs{bias}",
            t.label, t.weight, t.outputs, t.inputs
        )
    };
    terms.iter().map(one).collect::<Vec<_>>().join("; ")
}

/// A term as written in the `terms` metadata entry.
#[derive(Serialize, Deserialize)]
struct TermRecord {
    label: String,
    weight: f32,
    bias: String,
    outputs: usize,
    inputs: usize,
}

impl From<&TermShape> for TermRecord {
    fn from(t: &TermShape) -> Self {
        Self {
            label: t.label.clone(),
            weight: t.weight,
            bias: match t.bias {
                Bias::Included => "included".into(),
                Bias::Excluded => "excluded".into(),
            },
            outputs: t.outputs,
            inputs: t.inputs,
        }
    }
}

impl TermRecord {
    fn shape(self, path: &Path) -> Result<TermShape> {
        let bias = match self.bias.as_str() {
            "included" => Bias::Included,
            "excluded" => Bias::Excluded,
            other => {
                return Err(Error::data(
                    path,
                    "terms (metadata)",
                    format!("bias {other:?}; expected \"included\" or \"excluded\""),
                ));
            }
        };
        Ok(TermShape {
            label: self.label,
            weight: self.weight,
            bias,
            outputs: self.outputs,
            inputs: self.inputs,
        })
    }
}

fn json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::config("index metadata", e.to_string()))
}

/// The metadata entry `key` of `path`, which must be present.
pub(super) fn entry<'a>(
    path: &Path,
    metadata: &'a HashMap<String, String>,
    key: &str,
) -> Result<&'a str> {
    metadata.get(key).map(String::as_str).ok_or_else(|| {
        Error::data(
            path,
            format!("{key} (metadata)"),
            "missing: every infl index records it",
        )
    })
}

/// The metadata entry `key` of `path`, parsed as JSON.
pub(super) fn parse<T: for<'de> Deserialize<'de>>(
    path: &Path,
    metadata: &HashMap<String, String>,
    key: &str,
) -> Result<T> {
    let text = entry(path, metadata, key)?;
    serde_json::from_str(text).map_err(|e| {
        Error::data(
            path,
            format!("{key} (metadata)"),
            format!("cannot be read ({e}): {text:?}"),
        )
    })
}
