//! Result files (safetensors, CSV, JSON), staged into the subcommand's
//! [`Publication`] (published all-or-nothing by the caller), and stdout summaries.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use infl::io::{OutTensor, Publication};
use infl::{Attributed, Estimator, PairsScored, Prepared, Ranked, Suspect, TopKRows};
use serde::Serialize;

/// Where results come from: the estimator (its name and settings), the layer, and for a
/// shard's part its first training row and its part metadata (`infl::shard`).
pub struct Provenance<'a> {
    pub estimator: &'a dyn Estimator,
    pub layer: &'a str,
    /// Added to every training row index written (0 for a whole run).
    pub first_row: usize,
    pub part: Option<Vec<(String, String)>>,
}

/// Safetensors metadata of a result: what it holds, the estimator's name and settings,
/// the layer, checkpoints and learning rates, infl's version.
fn metadata(p: &Provenance<'_>, prepared: &Prepared, what: &str) -> HashMap<String, String> {
    let mut meta: HashMap<String, String> = p.estimator.metadata().into_iter().collect();
    meta.extend([
        ("content".into(), what.into()),
        ("layer".into(), p.layer.to_string()),
        (
            "checkpoints".into(),
            serde_json::to_string(&prepared.checkpoints).unwrap_or_default(),
        ),
        (
            "learning_rates".into(),
            serde_json::to_string(&prepared.learning_rates).unwrap_or_default(),
        ),
        ("infl_version".into(), env!("CARGO_PKG_VERSION").into()),
    ]);
    meta.extend(p.part.iter().flatten().cloned());
    meta
}

fn ids(v: &[i64]) -> OutTensor {
    OutTensor::I64(vec![v.len()], v.to_vec())
}

fn test_ids(prepared: &Prepared) -> Vec<i64> {
    prepared
        .test
        .as_ref()
        .map(|t| t.ids.clone())
        .unwrap_or_default()
}

/// `scores` [T, N] f32, `train_ids` [N], `test_ids` [T].
pub fn stage_scores(
    publication: &mut Publication,
    path: &Path,
    p: &Provenance<'_>,
    scores: &Attributed<Vec<f32>>,
) -> Result<()> {
    let prepared = &scores.prepared;
    publication.stage_safetensors(
        path,
        scores_tensors(&scores.values, &prepared.train.ids, &test_ids(prepared)),
        metadata(p, prepared, SCORES),
    )?;
    Ok(())
}

/// The `content` of each result (metadata), which `infl merge` dispatches on.
pub const SCORES: &str = "scores [test, train]";
pub const TOPK: &str = "top-k proponents and opponents";
pub const SELF_INFLUENCE: &str = "self-influence [train]";

/// `scores` `[T, N]`, `train_ids` `[N]`, `test_ids` `[T]`.
pub fn scores_tensors(
    scores: &[f32],
    train_ids: &[i64],
    test_ids: &[i64],
) -> Vec<(String, OutTensor)> {
    let (t, n) = (test_ids.len(), train_ids.len());
    vec![
        ("scores".into(), OutTensor::F32(vec![t, n], scores.to_vec())),
        ("train_ids".into(), ids(train_ids)),
        ("test_ids".into(), ids(test_ids)),
    ]
}

pub fn print_scores_summary(path: &Path, p: &Provenance<'_>, scores: &Attributed<Vec<f32>>) {
    let prepared = &scores.prepared;
    let (t, n) = (prepared.set.n_test(), prepared.set.n_train());
    let (lo, hi) = scores
        .values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    println!(
        "{} scores: {t} test x {n} train over {} checkpoints (learning rates {:?})",
        p.estimator.label(),
        prepared.checkpoints.len(),
        prepared.learning_rates
    );
    println!("score range: [{lo:.6e}, {hi:.6e}]");
    println!("wrote {}", path.display());
}

#[derive(Serialize)]
struct JsonRanked {
    index: usize,
    id: i64,
    score: f32,
}

#[derive(Serialize)]
struct JsonTest {
    test_index: usize,
    test_id: i64,
    proponents: Vec<JsonRanked>,
    opponents: Vec<JsonRanked>,
}

/// Per list: indices [T, k] (training rows), ids [T, k], scores [T, k]. Rows are padded
/// with index -1 and score NaN only if fewer than k candidates exist (never, as k <= N).
pub fn stage_topk(
    publication: &mut Publication,
    path: &Path,
    json: Option<&Path>,
    p: &Provenance<'_>,
    result: &Attributed<TopKRows>,
) -> Result<()> {
    let prepared = &result.prepared;
    let mut meta = metadata(p, prepared, TOPK);
    meta.insert("k".into(), result.values.k.to_string());
    let train_ids = &prepared.train.ids;
    let locate = |i: usize| Located {
        index: p.first_row + i,
        id: train_ids[i],
    };
    let lists = TopkLists {
        top: &result.values,
        locate: &locate,
        test_ids: &test_ids(prepared),
    };
    stage_topk_lists(publication, path, json, &lists, meta)
}

/// A candidate's row in the whole training set and its id.
pub struct Located {
    pub index: usize,
    pub id: i64,
}

/// Top-k lists with where their candidates are: `locate` maps a list entry's index to its
/// training row and id.
pub struct TopkLists<'a> {
    pub top: &'a TopKRows,
    pub locate: &'a dyn Fn(usize) -> Located,
    pub test_ids: &'a [i64],
}

/// The top-k file (and JSON) of `lists` with metadata `meta`.
pub fn stage_topk_lists(
    publication: &mut Publication,
    path: &Path,
    json: Option<&Path>,
    lists: &TopkLists<'_>,
    meta: HashMap<String, String>,
) -> Result<()> {
    publication.stage_safetensors(path, topk_tensors(lists), meta)?;
    if let Some(json) = json {
        publication.stage(json, &topk_json(lists)?)?;
    }
    Ok(())
}

/// Indices, ids and scores `[T, w]` of both lists (`w` = k, or a shard's rows when fewer),
/// and the test ids.
fn topk_tensors(lists: &TopkLists<'_>) -> Vec<(String, OutTensor)> {
    let top = lists.top;
    let t = top.proponents.len();
    let w = top.proponents.first().map_or(top.k, Vec::len);
    let mut tensors = Vec::new();
    for (name, rows) in [("proponent", &top.proponents), ("opponent", &top.opponents)] {
        let at: Vec<Located> = rows
            .iter()
            .flatten()
            .map(|r| (lists.locate)(r.index))
            .collect();
        let idx: Vec<i64> = at.iter().map(|l| l.index as i64).collect();
        let id: Vec<i64> = at.iter().map(|l| l.id).collect();
        let sc: Vec<f32> = rows.iter().flatten().map(|r| r.score).collect();
        tensors.push((format!("{name}s"), OutTensor::I64(vec![t, w], idx)));
        tensors.push((format!("{name}_ids"), OutTensor::I64(vec![t, w], id)));
        tensors.push((format!("{name}_scores"), OutTensor::F32(vec![t, w], sc)));
    }
    tensors.push(("test_ids".into(), ids(lists.test_ids)));
    tensors
}

/// The lists as pretty JSON, one object per test example.
fn topk_json(lists: &TopkLists<'_>) -> Result<Vec<u8>> {
    let top = lists.top;
    let conv = |v: &Vec<Ranked>| {
        v.iter()
            .map(|r| {
                let at = (lists.locate)(r.index);
                JsonRanked {
                    index: at.index,
                    id: at.id,
                    score: r.score,
                }
            })
            .collect()
    };
    let list: Vec<JsonTest> = (lists.test_ids.iter().copied())
        .enumerate()
        .map(|(q, test_id)| JsonTest {
            test_index: q,
            test_id,
            proponents: conv(&top.proponents[q]),
            opponents: conv(&top.opponents[q]),
        })
        .collect();
    Ok(serde_json::to_vec_pretty(&list)?)
}

/// What `infl fit` fitted and where it wrote it.
pub fn print_fit_summary(saved: &infl::curvature::SavedCurvature, out: &Path) {
    use infl::curvature::SavedCurvature;
    match saved {
        SavedCurvature::Hessian(h) => {
            let id = &h.identity;
            println!(
                "Hessian of the final layer at checkpoint {} ({} training examples, {} parameters), wrote {}",
                id.checkpoint,
                id.examples,
                id.dim(),
                out.display()
            );
        }
        SavedCurvature::Kfac(k) => {
            let id = &k.identity;
            println!(
                "{} fit ({}) of layers {} at checkpoint {} ({} training examples), wrote {}",
                id.strategy.short_name(),
                id.curvature.short_name(),
                id.layers.join(","),
                id.checkpoint,
                id.examples,
                out.display()
            );
        }
    }
}

pub fn print_topk_summary(
    path: &Path,
    p: &Provenance<'_>,
    result: &Attributed<TopKRows>,
    pairs: PairsScored,
) {
    let (top, prepared) = (&result.values, &result.prepared);
    let tids = test_ids(prepared);
    let train_ids = &prepared.train.ids;
    println!(
        "{} top-{}: {} test x {} train over {} checkpoints, {:.1}% of pairs scored",
        p.estimator.label(),
        top.k,
        tids.len(),
        prepared.set.n_train(),
        prepared.checkpoints.len(),
        100.0 * pairs.fraction()
    );
    if let Some(part) = &p.part {
        let shard = part.iter().find(|(k, _)| k == infl::shard::SHARD_KEY);
        if let Some((_, shard)) = shard {
            println!("(shard {shard}: the lists of its rows only; `infl merge` combines parts)");
        }
    }
    let show = tids.len().min(5);
    for (q, tid) in tids.iter().enumerate().take(show) {
        let fmt = |v: &Vec<Ranked>| {
            v.iter()
                .take(3)
                .map(|r| format!("{} ({:+.3e})", train_ids[r.index], r.score))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("test {tid:>6}: proponents {}", fmt(&top.proponents[q]));
        println!("{:>13} opponents  {}", "", fmt(&top.opponents[q]));
    }
    if tids.len() > show {
        println!("... ({} more test examples)", tids.len() - show);
    }
    println!("wrote {}", path.display());
}

#[derive(Serialize)]
struct JsonSuspect {
    rank: usize,
    index: usize,
    id: i64,
    self_influence: f32,
    label: Option<i64>,
    predicted: Option<usize>,
}

/// The files of `self-influence` in `dir`, in the order they are staged.
pub fn self_influence_files(dir: &Path) -> [PathBuf; 3] {
    [
        "self_influence.safetensors",
        "suspicious.csv",
        "suspicious.json",
    ]
    .map(|f| dir.join(f))
}

/// self_influence.safetensors (`self_influence` [N], `ids` [N]), suspicious.csv and
/// suspicious.json.
pub fn stage_self_influence(
    publication: &mut Publication,
    dir: &Path,
    p: &Provenance<'_>,
    result: &Attributed<Vec<f32>>,
    suspects: &[Suspect],
) -> Result<()> {
    let meta = metadata(p, &result.prepared, SELF_INFLUENCE);
    let ids = &result.prepared.train.ids;
    stage_self_influence_files(publication, dir, &result.values, ids, suspects, meta)
}

/// The three self-influence files of `values` (ids `train_ids`) and `suspects`.
pub fn stage_self_influence_files(
    publication: &mut Publication,
    dir: &Path,
    self_inf: &[f32],
    train_ids: &[i64],
    suspects: &[Suspect],
    meta: HashMap<String, String>,
) -> Result<()> {
    let json: Vec<JsonSuspect> = suspects
        .iter()
        .map(|s| JsonSuspect {
            rank: s.rank,
            index: s.index,
            id: s.id,
            self_influence: s.self_influence,
            label: s.label,
            predicted: s.predicted,
        })
        .collect();
    let json = serde_json::to_vec_pretty(&json)?;
    let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    let [tensors, csv, json_path] = self_influence_files(dir);
    publication.stage_safetensors(
        tensors,
        vec![
            (
                "self_influence".into(),
                OutTensor::F32(vec![self_inf.len()], self_inf.to_vec()),
            ),
            ("ids".into(), ids(train_ids)),
        ],
        meta,
    )?;
    publication.stage_with(csv, |w| {
        writeln!(w, "rank,index,id,self_influence,label,predicted")?;
        for s in suspects {
            writeln!(
                w,
                "{},{},{},{:e},{},{}",
                s.rank,
                s.index,
                s.id,
                s.self_influence,
                opt(s.label),
                opt(s.predicted.map(|p| p as i64))
            )?;
        }
        Ok(())
    })?;
    publication.stage(json_path, &json)?;
    Ok(())
}

/// The part file of `self-influence --shard` in `dir`.
pub fn self_influence_part(dir: &Path, shard: infl::Shard) -> PathBuf {
    dir.join(format!(
        "self_influence.shard-{}-of-{}.safetensors",
        shard.index(),
        shard.count()
    ))
}

/// A self-influence part: `self_influence` and `ids` of its rows, with their `labels` and
/// `predicted` classes when known (what `infl merge` needs to rank the suspects).
pub fn stage_self_influence_part(
    publication: &mut Publication,
    path: &Path,
    p: &Provenance<'_>,
    result: &Attributed<Vec<f32>>,
) -> Result<()> {
    let (values, train) = (&result.values, &result.prepared.train);
    let n = values.len();
    let mut tensors = vec![
        (
            "self_influence".into(),
            OutTensor::F32(vec![n], values.clone()),
        ),
        ("ids".into(), ids(&train.ids)),
    ];
    if let Some(labels) = &train.labels {
        tensors.push(("labels".into(), ids(labels)));
    }
    if !train.predicted.is_empty() {
        let predicted = train.predicted.iter().map(|&c| c as i64).collect();
        tensors.push(("predicted".into(), OutTensor::I64(vec![n], predicted)));
    }
    let meta = metadata(p, &result.prepared, SELF_INFLUENCE);
    publication.stage_safetensors(path, tensors, meta)?;
    Ok(())
}

pub fn print_self_summary(
    dir: &Path,
    p: &Provenance<'_>,
    result: &Attributed<Vec<f32>>,
    suspects: &[Suspect],
) {
    println!(
        "{} self-influence of {} training examples over {} checkpoints",
        p.estimator.label(),
        result.values.len(),
        result.prepared.checkpoints.len()
    );
    println!(
        "most suspicious (highest self-influence; label = given, predicted = last checkpoint):"
    );
    println!(
        "{:>5} {:>10} {:>14} {:>6} {:>9}",
        "rank", "id", "self-infl.", "label", "predicted"
    );
    for s in suspects.iter().take(10) {
        let mark = match (s.label, s.predicted) {
            (Some(a), Some(b)) if a != b as i64 => "  <- disagrees",
            _ => "",
        };
        println!(
            "{:>5} {:>10} {:>14.6e} {:>6} {:>9}{mark}",
            s.rank,
            s.id,
            s.self_influence,
            s.label.map_or("-".into(), |x| x.to_string()),
            s.predicted.map_or("-".into(), |x| x.to_string()),
        );
    }
    let [a, b, c] = self_influence_files(dir);
    println!("wrote {}, {}, {}", a.display(), b.display(), c.display());
}
