//! Loading checkpoints (one layer of a state dict) and example (feature) files.

use std::ops::Range;
use std::path::Path;

use infl_core::{Checkpoint, Examples, MatRef};

use crate::{Error, Rank, Result, TensorFile};

pub(crate) fn check_finite(path: &Path, tensor: &str, m: MatRef<'_>) -> Result<()> {
    check_finite_shaped(path, tensor, m, &[m.rows(), m.cols()])
}

/// [`check_finite`] for a tensor of `shape` read as the matrix `m` (a `[N, S, D]` tensor as
/// `[N·S, D]`): the position is reported in the file's own indices.
pub(crate) fn check_finite_shaped(
    path: &Path,
    tensor: &str,
    m: MatRef<'_>,
    shape: &[usize],
) -> Result<()> {
    if let Some((r, c)) = m.first_non_finite() {
        let v = m.row(r)[c];
        let mut flat = r * m.cols() + c;
        let mut at = vec![0; shape.len()];
        for (i, &dim) in shape.iter().enumerate().rev() {
            at[i] = flat % dim.max(1);
            flat /= dim.max(1);
        }
        let at: Vec<String> = at.iter().map(usize::to_string).collect();
        return Err(Error::bad(
            path,
            tensor,
            format!("expected finite values, found {v} at [{}]", at.join(", ")),
        ));
    }
    Ok(())
}

/// The metadata key of a checkpoint's learning rate (written by infl-nn, read here).
pub const LEARNING_RATE_KEY: &str = "learning_rate";

/// Parses the value `raw` of a checkpoint's `learning_rate` metadata entry (surrounding
/// whitespace ignored). Anything but a finite number is an error naming `path`.
pub fn parse_learning_rate(path: &Path, raw: &str) -> Result<f32> {
    let bad = |why: String| Error::bad(path, format!("{LEARNING_RATE_KEY} (metadata)"), why);
    let lr = raw
        .trim()
        .parse::<f32>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| bad(format!("expected a finite number, found {raw:?}")))?;
    check_learning_rate(lr).map_err(bad)
}

/// The one rule for learning rates, wherever they come from (metadata, manifest, flag,
/// memory): finite and positive. A negative rate would silently flip its checkpoint's
/// contribution, and zero would silently drop it. Returns the rate or why it is refused.
pub fn check_learning_rate(lr: f32) -> std::result::Result<f32, String> {
    if lr.is_finite() && lr > 0.0 {
        Ok(lr)
    } else {
        Err(format!(
            "expected a positive learning rate, found {lr}: a negative rate would flip the \
             checkpoint's contribution and zero would drop it"
        ))
    }
}

/// Loads layer `layer` of a safetensors state dict: `{layer}.weight` `[K, D]` and, when
/// present, `{layer}.bias` `[K]`; the learning rate from the metadata key
/// `learning_rate`, if present (see [`parse_learning_rate`]). The weight has at least one
/// row and one column; values must be finite.
pub fn load_checkpoint(path: impl AsRef<Path>, layer: &str) -> Result<Checkpoint> {
    let path = path.as_ref();
    let file = TensorFile::open(path)?;
    let wname = format!("{layer}.weight");
    let weight = file.matrix(&wname, Rank::Matrix)?;
    check_weight_shape(path, &wname, weight.view())?;
    check_finite(path, &wname, weight.view())?;
    let bname = format!("{layer}.bias");
    let bias = if file.contains(&bname) {
        Some(load_bias(&file, &bname, &wname, weight.view())?)
    } else {
        None
    };
    let learning_rate = file
        .metadata()
        .get(LEARNING_RATE_KEY)
        .map(|raw| parse_learning_rate(path, raw))
        .transpose()?;
    Ok(Checkpoint {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source: path.to_path_buf(),
        learning_rate,
        weight,
        bias,
    })
}

/// A layer has at least one output (row) and one input (column): with no outputs there
/// is no gradient to trace, and with no inputs every score would be zero.
fn check_weight_shape(path: &Path, wname: &str, w: MatRef<'_>) -> Result<()> {
    let (k, d) = (w.rows(), w.cols());
    let why = match (k, d) {
        (0, _) => "the layer has no outputs (zero rows)",
        (_, 0) => "the layer has no columns (zero inputs)",
        _ => return Ok(()),
    };
    Err(Error::bad(
        path,
        wname,
        format!("expected shape [K, D] with K >= 1 and D >= 1, found [{k}, {d}]: {why}"),
    ))
}

/// Features have at least one column: zero-width features give all-zero scores.
fn check_feature_columns(path: &Path, f: MatRef<'_>) -> Result<()> {
    if f.cols() > 0 {
        return Ok(());
    }
    Err(Error::bad(
        path,
        "features",
        format!(
            "expected shape [N, D] with D >= 1, found [{}, 0]: the features have no columns, \
             so every score would be zero",
            f.rows()
        ),
    ))
}

/// Ids are unique: the first repeated one is reported with both of its rows.
pub(crate) fn check_unique_ids(path: &Path, ids: &[i64]) -> Result<()> {
    let mut first_row = std::collections::HashMap::new();
    for (row, &id) in ids.iter().enumerate() {
        if let Some(first) = first_row.insert(id, row) {
            return Err(Error::bad(
                path,
                "ids",
                format!("expected unique ids, found duplicate id {id} at rows {first} and {row}"),
            ));
        }
    }
    Ok(())
}

/// The bias `bname` of a layer whose weight `wname` is `weight` `[K, D]`: `[K]`, finite.
fn load_bias(file: &TensorFile, bname: &str, wname: &str, weight: MatRef<'_>) -> Result<Vec<f32>> {
    let path = file.path();
    let b = file.vector(bname)?;
    if b.len() != weight.rows() {
        return Err(Error::bad(
            path,
            bname,
            format!(
                "expected shape [{}] to match `{wname}` [{}, {}], found [{}]",
                weight.rows(),
                weight.rows(),
                weight.cols(),
                b.len()
            ),
        ));
    }
    if let Some(i) = b.iter().position(|x| !x.is_finite()) {
        return Err(Error::bad(
            path,
            bname,
            format!("expected finite values, found {} at [{i}]", b[i]),
        ));
    }
    Ok(b)
}

/// Loads an example file: `features` `[N, D]` float (required), and when present
/// `labels` `[N]` (any integer dtype), `targets` `[N, K]` or `[N]` float, `ids` `[N]`
/// integer. Features have at least one column; features and targets must be finite;
/// lengths must agree; ids must be unique.
pub fn load_examples(path: impl AsRef<Path>) -> Result<Examples> {
    load_examples_rows(path, None)
}

/// [`load_examples`] restricted to the rows `rows` (`None`: all): only their features
/// and targets are read and checked; `labels` and `ids` (small) are checked whole — ids
/// unique across the file — and then cut to the rows. A shard of a training set loads this
/// way without reading the other shards' features.
pub fn load_examples_rows(path: impl AsRef<Path>, rows: Option<Range<usize>>) -> Result<Examples> {
    let path = path.as_ref();
    let file = TensorFile::open(path)?;
    let features = file.matrix_rows("features", Rank::Matrix, rows.clone())?;
    check_feature_columns(path, features.view())?;
    check_finite(path, "features", features.view())?;
    let n = file.info("features")?.shape[0];
    let check_len = |name: &str, len: usize| {
        if len != n {
            Err(Error::bad(
                path,
                name,
                format!("expected {n} entries (one per row of `features`), found {len}"),
            ))
        } else {
            Ok(())
        }
    };
    let labels = if file.contains("labels") {
        let l = file.integers("labels")?;
        check_len("labels", l.len())?;
        Some(l)
    } else {
        None
    };
    let targets = if file.contains("targets") {
        check_len(
            "targets",
            file.info("targets")?.shape.first().copied().unwrap_or(0),
        )?;
        let t = file.matrix_rows("targets", Rank::MatrixOrVector, rows.clone())?;
        if t.cols() == 0 {
            return Err(Error::bad(
                path,
                "targets",
                format!(
                    "expected [N, K] with K >= 1, found [{}, 0]: the targets have no columns",
                    t.rows()
                ),
            ));
        }
        check_finite(path, "targets", t.view())?;
        Some(t)
    } else {
        None
    };
    let ids = if file.contains("ids") {
        let i = file.integers("ids")?;
        check_len("ids", i.len())?;
        check_unique_ids(path, &i)?;
        Some(i)
    } else {
        None
    };
    let cut = |v: Vec<i64>| match &rows {
        Some(r) => v[r.clone()].to_vec(),
        None => v,
    };
    Ok(Examples {
        source: path.to_path_buf(),
        features,
        labels: labels.map(cut),
        targets,
        // Rows keep their ids: the row index in the whole file when it has no `ids`.
        ids: match (ids, &rows) {
            (None, Some(r)) => Some(r.clone().map(|i| i as i64).collect()),
            (ids, _) => ids.map(cut),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rates_must_be_finite_numbers() {
        let path = Path::new("ckpt.safetensors");
        assert_eq!(parse_learning_rate(path, " 0.25\n").unwrap(), 0.25);
        for raw in ["0", "-0.5", "-0"] {
            let e = parse_learning_rate(path, raw).unwrap_err().to_string();
            assert!(e.contains("expected a positive learning rate"), "{e}");
        }
        for raw in ["inf", "-inf", "NaN", "fast", ""] {
            let e = parse_learning_rate(path, raw).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "ckpt.safetensors: tensor `learning_rate (metadata)`: expected a finite \
                     number, found {raw:?}"
                )
            );
            assert!(matches!(e, Error::Tensor(_)), "{e:?}");
        }
    }
}
