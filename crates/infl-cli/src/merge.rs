//! `infl merge OUT PARTS...`: the parts written by `--shard i/N` combined into the result
//! of one run over every training example, bit for bit (scores are the same numbers,
//! top-k lists merge under the one ranking order, self-influence is ranked once whole).
//!
//! Every part is opened and checked (`infl::shard::order_parts`: one run, one set of
//! settings, every shard exactly once; then each tensor's shape against its rows) and the
//! output is planned against the parts before anything is written; the result is
//! published all-or-nothing like every other subcommand's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use infl::SplitInfo;
use infl::io::{Inputs, Publication, Rank, TensorFile};
use infl::shard::{ListData, MergedTopK, Part, TopKPart, merge_topk_parts, order_parts};

use crate::output::{self, Located, SCORES, SELF_INFLUENCE, TOPK, TopkLists};

/// `infl merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Output: a file for topk and scores parts, a folder for self-influence parts.
    pub out: PathBuf,
    /// The parts, in any order (one per shard).
    #[arg(required = true)]
    pub parts: Vec<PathBuf>,
    /// topk: also write the merged lists as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// self-influence: how many suspects to list (0 = all; default 100).
    #[arg(long)]
    pub top: Option<usize>,
}

/// An opened part.
struct Opened {
    part: Part,
    file: TensorFile,
}

/// Runs `infl merge`.
pub fn run(args: &MergeArgs) -> Result<()> {
    let mut opened = Vec::new();
    for path in &args.parts {
        let file = TensorFile::open(path)?;
        let part = Part::from_metadata(path, file.metadata())?;
        opened.push((part, file));
    }
    let ordered = order_parts(opened.iter().map(|(p, _)| p.clone()).collect())?;
    let mut files: Vec<Option<TensorFile>> = opened.into_iter().map(|(_, f)| Some(f)).collect();
    let parts: Vec<Opened> = ordered
        .into_iter()
        .map(|part| {
            let i = args.parts.iter().position(|p| *p == part.path);
            let file = i
                .and_then(|i| files[i].take())
                .context("a part was given twice")?;
            Ok(Opened { part, file })
        })
        .collect::<Result<_>>()?;
    let content = parts[0]
        .part
        .settings
        .get("content")
        .cloned()
        .unwrap_or_default();
    ensure!(
        args.json.is_none() || content == TOPK,
        "--json: only top-k parts have lists to write as JSON ({} holds {content:?})",
        parts[0].part.path.display()
    );
    ensure!(
        args.top.is_none() || content == SELF_INFLUENCE,
        "--top: only self-influence parts rank suspects ({} holds {content:?})",
        parts[0].part.path.display()
    );
    let inputs = Inputs::files(args.parts.iter().cloned());
    match content.as_str() {
        TOPK => {
            let outputs = std::iter::once(&args.out).chain(&args.json);
            let publication = Publication::plan(&inputs, outputs)?;
            merge_topk(&parts, publication, &args.out, args.json.as_deref())
        }
        SCORES => {
            let publication = Publication::plan(&inputs, [&args.out])?;
            merge_scores(&parts, publication, &args.out)
        }
        SELF_INFLUENCE => {
            let files = output::self_influence_files(&args.out);
            let publication = Publication::plan(&inputs, &files)?;
            merge_self_influence(&parts, publication, &args.out, args.top)
        }
        other => bail!(
            "{}: content {other:?}; expected the part of a topk, scores or self-influence run",
            parts[0].part.path.display()
        ),
    }
}

/// Tensor `name` of `file`, which must have `shape`.
fn check_shape(file: &TensorFile, name: &str, shape: &[usize]) -> Result<()> {
    let found = file.info(name)?.shape;
    ensure!(
        found == shape,
        "{}: tensor `{name}`: expected shape {shape:?} (the part's rows), found {found:?}",
        file.path().display()
    );
    Ok(())
}

/// `test_ids` of every part (the same in all: the run's test split).
fn test_ids(parts: &[Opened]) -> Result<Vec<i64>> {
    let first = parts[0].file.integers("test_ids")?;
    for p in &parts[1..] {
        ensure!(
            p.file.integers("test_ids")? == first,
            "{}: tensor `test_ids`: expected the test examples of {}",
            p.part.path.display(),
            parts[0].part.path.display()
        );
    }
    Ok(first)
}

/// A part's `{name}s`, `{name}_ids` and `{name}_scores`, each checked to be `[t, w]`.
fn read_list(p: &Opened, name: &str, t: usize, w: usize) -> Result<ListData> {
    let names = [
        format!("{name}s"),
        format!("{name}_ids"),
        format!("{name}_scores"),
    ];
    for tensor in &names {
        check_shape(&p.file, tensor, &[t, w])?;
    }
    Ok(ListData {
        rows: p.file.integers_flat(&names[0])?,
        ids: p.file.integers_flat(&names[1])?,
        scores: p.file.matrix(&names[2], Rank::Matrix)?.to_vec(),
    })
}

fn merge_topk(
    parts: &[Opened],
    mut publication: Publication,
    out: &Path,
    json: Option<&Path>,
) -> Result<()> {
    let settings = &parts[0].part.settings;
    let k: usize = (settings.get("k").and_then(|k| k.parse().ok())).with_context(|| {
        format!(
            "{}: metadata `k`: expected a number",
            parts[0].part.path.display()
        )
    })?;
    let tests = test_ids(parts)?;
    let t = tests.len();
    let n = parts[0].part.examples;
    let flat = parts
        .iter()
        .map(|p| {
            let w = k.min(p.part.rows.len());
            Ok((
                p,
                w,
                [
                    read_list(p, "proponent", t, w)?,
                    read_list(p, "opponent", t, w)?,
                ],
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let topk_parts: Vec<TopKPart<'_>> = flat
        .iter()
        .map(|(p, w, lists)| TopKPart {
            source: p.part.path.clone(),
            rows: Some(p.part.rows.clone()),
            width: *w,
            proponents: lists[0].as_flat(),
            opponents: lists[1].as_flat(),
        })
        .collect();
    let MergedTopK { top, ids } = merge_topk_parts(t, k, &topk_parts)?;
    let locate = |i: usize| Located {
        index: i,
        id: ids[&i],
    };
    let lists = TopkLists {
        top: &top,
        locate: &locate,
        test_ids: &tests,
    };
    let meta = parts[0].part.merged_metadata();
    output::stage_topk_lists(&mut publication, out, json, &lists, meta)?;
    crate::cli::publish(publication)?;
    println!(
        "merged {} top-k parts ({t} test x {n} train, k = {k}) into {}",
        parts.len(),
        out.display()
    );
    Ok(())
}

fn merge_scores(parts: &[Opened], mut publication: Publication, out: &Path) -> Result<()> {
    let tests = test_ids(parts)?;
    let (t, n) = (tests.len(), parts[0].part.examples);
    let len = t
        .checked_mul(n)
        .context("the merged score matrix is too large")?;
    let mut scores = Vec::new();
    scores
        .try_reserve_exact(len)
        .map_err(|_| anyhow::anyhow!("the merged [{t} x {n}] score matrix cannot be allocated"))?;
    scores.resize(len, 0.0f32);
    let mut train_ids = Vec::with_capacity(n);
    for p in parts {
        let rows = p.part.rows.clone();
        check_shape(&p.file, "scores", &[t, rows.len()])?;
        check_shape(&p.file, "train_ids", &[rows.len()])?;
        let part = p.file.matrix("scores", Rank::Matrix)?;
        for q in 0..t {
            scores[q * n + rows.start..q * n + rows.end].copy_from_slice(part.view().row(q));
        }
        train_ids.extend(p.file.integers("train_ids")?);
    }
    let tensors = output::scores_tensors(&scores, &train_ids, &tests);
    publication.stage_safetensors(out, tensors, parts[0].part.merged_metadata())?;
    crate::cli::publish(publication)?;
    println!(
        "merged {} score parts ({t} test x {n} train) into {}",
        parts.len(),
        out.display()
    );
    Ok(())
}

fn merge_self_influence(
    parts: &[Opened],
    mut publication: Publication,
    dir: &Path,
    top: Option<usize>,
) -> Result<()> {
    let n = parts[0].part.examples;
    let (mut values, mut ids) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut labels, mut predicted) = (Some(Vec::new()), Some(Vec::new()));
    for p in parts {
        let rows = p.part.rows.len();
        for name in ["self_influence", "ids"] {
            check_shape(&p.file, name, &[rows])?;
        }
        values.extend(p.file.vector("self_influence")?);
        ids.extend(p.file.integers("ids")?);
        for (name, column) in [("labels", &mut labels), ("predicted", &mut predicted)] {
            let present = p.file.contains(name);
            ensure!(
                present == parts[0].file.contains(name),
                "{}: tensor `{name}`: expected it {} as in {}",
                p.part.path.display(),
                if present { "absent" } else { "present" },
                parts[0].part.path.display()
            );
            if present {
                check_shape(&p.file, name, &[rows])?;
                if let Some(c) = column.as_mut() {
                    c.extend(p.file.integers(name)?);
                }
            } else {
                *column = None;
            }
        }
    }
    let predicted: Vec<usize> = (predicted.unwrap_or_default().into_iter())
        .map(|c| usize::try_from(c).unwrap_or(usize::MAX))
        .collect();
    let info = SplitInfo {
        ids,
        labels,
        predicted,
    };
    let top = match top.unwrap_or(crate::cli::DEFAULT_TOP) {
        0 => n,
        top => top.min(n),
    };
    let suspects = infl::rank_suspects(&values, &info, top);
    let meta = parts[0].part.merged_metadata();
    output::stage_self_influence_files(&mut publication, dir, &values, &info.ids, &suspects, meta)?;
    crate::cli::publish(publication)?;
    println!(
        "merged {} self-influence parts ({n} training examples) into {}",
        parts.len(),
        dir.display()
    );
    Ok(())
}
