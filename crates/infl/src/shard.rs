//! Sharding the training set: a [`Shard`] `i/N` is a contiguous range of training rows,
//! scored on its own (any machine, any order) and recorded as a *part* whose metadata says
//! which rows it holds, of which run and with which settings; [`order_parts`] checks that
//! parts fit together before they are merged.
//!
//! Design choices:
//! - Shards are contiguous and balanced: shard `i` of `N` (1-based, as `--shard 1/3` in
//!   test runners) holds rows `⌊(i−1)·n/N⌋ .. ⌊i·n/N⌋`, so a part's range follows from
//!   `(i, N, n)` alone and a part that claims another range is refused.
//! - Results keep global row indices, and every score is computed with the same arithmetic
//!   as in a whole run (the backends' per-element arithmetic does not depend on a row's
//!   position), so a merge equals the unsharded result bit for bit.
//! - A part carries the run's identity ([`run_identity`]: checkpoints, learning rates,
//!   weights, the test split and the training set's size) and the estimator's settings;
//!   parts of different runs or settings are refused by comparing their metadata.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;

use infl_core::{Matrix, Ranked, TopK, TopKRows};
use infl_io::{LayerFactors, RunLayout};

use crate::run::{Run, SplitFactors, Splits, load_checkpoint_rows};
use crate::{Error, Result};

/// Metadata key of a part's shard (`i/N`).
pub const SHARD_KEY: &str = "shard";
/// Metadata key of a part's training rows (`start..end`).
pub const ROWS_KEY: &str = "shard_train_rows";
/// Metadata key of the number of training examples of the whole run.
pub const EXAMPLES_KEY: &str = "shard_train_examples";
/// Metadata key of the run's identity (CRC-32, 8 hex digits).
pub const RUN_KEY: &str = "shard_run_crc32";

/// The metadata keys that only parts have (a merged result drops them).
pub const PART_KEYS: [&str; 4] = [SHARD_KEY, ROWS_KEY, EXAMPLES_KEY, RUN_KEY];

/// Shard `index` of `count` (1-based): a contiguous range of the training rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// Shard `index` of `count`; refused unless `1 <= index <= count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index == 0 || index > count {
            return Err(Error::config(
                "shard",
                format!("{index}/{count}; expected i/N with 1 <= i <= N (shards count from 1)"),
            ));
        }
        Ok(Self { index, count })
    }

    /// Every shard of `count`, in order.
    pub fn all(count: usize) -> impl Iterator<Item = Shard> {
        (1..=count).map(move |index| Self { index, count })
    }

    /// The 1-based index `i`.
    pub fn index(self) -> usize {
        self.index
    }

    /// The number of shards `N`.
    pub fn count(self) -> usize {
        self.count
    }

    /// Its training rows in a run of `n` examples; refused when there are more shards than
    /// examples (a shard is never empty).
    pub fn rows(self, n: usize) -> Result<Range<usize>> {
        if self.count > n {
            return Err(Error::config(
                "shard",
                format!(
                    "{self}: {} shards of {n} training examples; expected at most {n} shards \
                     (a shard holds at least one row)",
                    self.count
                ),
            ));
        }
        let at = |i: usize| (i as u128 * n as u128 / self.count as u128) as usize;
        Ok(at(self.index - 1)..at(self.index))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// `i/N`, e.g. `3/8`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "shard",
                format!("{s:?}; expected i/N (e.g. 3/8: the third of eight shards)"),
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let number = |x: &str| x.trim().parse::<usize>().map_err(|_| bad());
        Self::new(number(i)?, number(n)?)
    }
}

/// A shard and the training rows it covers in a run of `examples`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRows {
    /// The shard.
    pub shard: Shard,
    /// Its training rows.
    pub rows: Range<usize>,
    /// Training examples of the whole run.
    pub examples: usize,
}

impl ShardRows {
    /// The rows of `shard` in a run of `examples`.
    pub fn new(shard: Shard, examples: usize) -> Result<Self> {
        Ok(Self {
            shard,
            rows: shard.rows(examples)?,
            examples,
        })
    }

    /// The rows of `shard` of a run's layout, from its first training file's header (no
    /// data read).
    pub fn of_layout(shard: Shard, layout: &RunLayout) -> Result<Self> {
        let Some(first) = layout.entries.first() else {
            return Err(Error::config("checkpoints", "the run has no checkpoints"));
        };
        let file = infl_io::TensorFile::open(&first.train)?;
        let examples = file.info("features")?.shape.first().copied().unwrap_or(0);
        Self::new(shard, examples)
    }
}

/// Loads the checkpoints of `layout` (layer `layer`, the splits asked for), only the
/// training rows of `shard` when one is given (their features alone are read).
pub fn load_features(
    layout: &RunLayout,
    layer: &str,
    splits: Splits,
    shard: Option<Shard>,
) -> Result<(Run, Option<ShardRows>)> {
    let part = shard.map(|s| ShardRows::of_layout(s, layout)).transpose()?;
    let rows = part.as_ref().map(|p| p.rows.clone());
    let run = (layout.entries.iter())
        .map(|e| load_checkpoint_rows(e, layer, splits, rows.clone()))
        .collect::<Result<Vec<_>>>()?;
    Ok((Run::Features(run), part))
}

/// A whole run cut to the training rows of `shard` (factor runs, read whole).
pub fn cut(run: &Run, shard: Shard) -> Result<(Run, ShardRows)> {
    let part = ShardRows::new(shard, run.n_train())?;
    let rows: Vec<usize> = part.rows.clone().collect();
    Ok((run.subset(&rows, 0..run.n_test())?, part))
}

/// The identity of a run as every shard of it sees it: checkpoint names, learning rates,
/// the final layer's weights and bias (features) or the layers' names and shapes (factor
/// files), the whole test split, and the number of training examples `n_train` (the shard
/// itself holds only its rows, so the training data enter by their count). CRC-32.
pub fn run_identity(run: &Run, n_train: usize, learning_rates: &[f32]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    let floats =
        |h: &mut crc32fast::Hasher, v: &[f32]| v.iter().for_each(|x| h.update(&x.to_le_bytes()));
    let ints =
        |h: &mut crc32fast::Hasher, v: &[i64]| v.iter().for_each(|x| h.update(&x.to_le_bytes()));
    crc.update(&(n_train as u64).to_le_bytes());
    floats(&mut crc, learning_rates);
    match run {
        Run::Features(run) => {
            for d in run {
                crc.update(d.checkpoint.name.as_bytes());
                floats(&mut crc, d.checkpoint.weight.data());
                floats(&mut crc, d.checkpoint.bias.as_deref().unwrap_or_default());
                if let Some(t) = &d.test {
                    floats(&mut crc, t.features.data());
                    ints(&mut crc, t.labels.as_deref().unwrap_or_default());
                    floats(&mut crc, t.targets.as_ref().map_or(&[][..], Matrix::data));
                    let ids: Vec<i64> = (0..t.len()).map(|i| t.id(i)).collect();
                    ints(&mut crc, &ids);
                }
            }
        }
        Run::Factors(run) => {
            for c in run {
                crc.update(c.name.as_bytes());
                for l in &c.train.layers {
                    crc.update(l.name.as_bytes());
                    crc.update(format!("{:?}", shape(&l.factors)).as_bytes());
                }
                if let Some(t) = &c.test {
                    split_factors(&mut crc, t);
                }
            }
        }
    }
    crc.finalize()
}

/// Columns and positions of a layer (not its examples).
fn shape(f: &LayerFactors) -> (usize, usize, usize) {
    match f {
        LayerFactors::Linear {
            a, g, positions, ..
        } => (a.cols(), g.cols(), *positions),
        LayerFactors::Dense { grad } => (grad.cols(), 0, 1),
    }
}

fn split_factors(crc: &mut crc32fast::Hasher, s: &SplitFactors) {
    s.ids.iter().for_each(|x| crc.update(&x.to_le_bytes()));
    for l in &s.layers {
        let mats: Vec<&Matrix> = match &l.factors {
            LayerFactors::Linear { a, g, .. } => vec![a, g],
            LayerFactors::Dense { grad } => vec![grad],
        };
        for m in mats {
            m.data().iter().for_each(|x| crc.update(&x.to_le_bytes()));
        }
    }
}

/// The metadata a part adds to its result's: shard, rows, the run's size and identity.
pub fn part_metadata(
    shard: Shard,
    rows: &Range<usize>,
    n_train: usize,
    run: u32,
) -> Vec<(String, String)> {
    vec![
        (SHARD_KEY.into(), shard.to_string()),
        (ROWS_KEY.into(), format!("{}..{}", rows.start, rows.end)),
        (EXAMPLES_KEY.into(), n_train.to_string()),
        (RUN_KEY.into(), format!("{run:08x}")),
    ]
}

/// A part as its metadata describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    /// Its shard.
    pub shard: Shard,
    /// Its training rows.
    pub rows: Range<usize>,
    /// Training examples of the whole run.
    pub examples: usize,
    /// Every other metadata entry (content, method, settings, run identity...): equal in
    /// all parts of one result, and the merged result's metadata.
    pub settings: BTreeMap<String, String>,
}

impl Part {
    /// Reads a part's description from its metadata; refuses a file that is not a part or
    /// whose rows are not its shard's.
    pub fn from_metadata(path: impl Into<PathBuf>, meta: &HashMap<String, String>) -> Result<Self> {
        let path = path.into();
        let get = |key: &str| {
            meta.get(key).ok_or_else(|| {
                Error::data(
                    &path,
                    format!("{key} (metadata)"),
                    "expected a shard part (written by --shard i/N), found a file without it",
                )
            })
        };
        let bad = |key: &str, why: String| Error::data(&path, format!("{key} (metadata)"), why);
        let shard: Shard = get(SHARD_KEY)?
            .parse()
            .map_err(|e: Error| bad(SHARD_KEY, e.to_string()))?;
        let examples: usize = get(EXAMPLES_KEY)?
            .parse()
            .map_err(|_| bad(EXAMPLES_KEY, "expected a number of examples".into()))?;
        let want = shard
            .rows(examples)
            .map_err(|e| bad(EXAMPLES_KEY, e.to_string()))?;
        let rows = get(ROWS_KEY)?;
        if *rows != format!("{}..{}", want.start, want.end) {
            return Err(bad(
                ROWS_KEY,
                format!("{rows:?}; shard {shard} of {examples} examples holds rows {want:?}"),
            ));
        }
        let settings = (meta.iter())
            .filter(|(k, _)| ![SHARD_KEY, ROWS_KEY, EXAMPLES_KEY].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self {
            path,
            shard,
            rows: want,
            examples,
            settings,
        })
    }

    /// The metadata of the merged result: the settings without the run identity.
    pub fn merged_metadata(&self) -> HashMap<String, String> {
        (self.settings.iter())
            .filter(|(k, _)| k.as_str() != RUN_KEY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Checks that `parts` are every shard of one result exactly once — the same run, the same
/// settings, the same shard count and run size, no shard twice, none missing — and returns
/// them in row order (the order they were given in does not matter).
pub fn order_parts(mut parts: Vec<Part>) -> Result<Vec<Part>> {
    let Some(first) = parts.first().cloned() else {
        return Err(Error::config(
            "parts",
            "expected at least one part to merge",
        ));
    };
    for p in &parts[1..] {
        let mismatch = |what: String| {
            Error::config(
                "parts",
                format!(
                    "{} and {} are not parts of one result: {what}",
                    first.path.display(),
                    p.path.display()
                ),
            )
        };
        if p.shard.count != first.shard.count || p.examples != first.examples {
            return Err(mismatch(format!(
                "shard {} of {} examples vs shard {} of {}",
                first.shard, first.examples, p.shard, p.examples
            )));
        }
        let keys = first.settings.keys().chain(p.settings.keys());
        if let Some(key) = keys
            .into_iter()
            .find(|k| first.settings.get(*k) != p.settings.get(*k))
        {
            let show = |v: Option<&String>| v.map_or("(absent)".to_string(), |v| format!("{v:?}"));
            let what = if key == RUN_KEY {
                "a different run, "
            } else {
                ""
            };
            return Err(mismatch(format!(
                "{what}`{key}` is {} vs {}",
                show(first.settings.get(key)),
                show(p.settings.get(key))
            )));
        }
    }
    parts.sort_by_key(|p| p.shard);
    if let Some(w) = parts.windows(2).find(|w| w[0].shard == w[1].shard) {
        return Err(Error::config(
            "parts",
            format!(
                "{} and {} both hold shard {} (rows {:?}): overlapping parts",
                w[0].path.display(),
                w[1].path.display(),
                w[0].shard,
                w[0].rows
            ),
        ));
    }
    let have: Vec<Shard> = parts.iter().map(|p| p.shard).collect();
    let missing: Vec<String> = Shard::all(first.shard.count)
        .filter(|s| !have.contains(s))
        .map(|s| {
            let rows = s.rows(first.examples).unwrap_or_default();
            format!("{s} (rows {rows:?})")
        })
        .collect();
    if !missing.is_empty() {
        return Err(Error::config(
            "parts",
            format!(
                "missing {}: every shard of {} is needed",
                missing.join(", "),
                first.shard.count
            ),
        ));
    }
    Ok(parts)
}

/// One list kind (proponents or opponents) of a top-k part, flat and row-major
/// `[tests, width]`, as a part file or a Python dict holds it.
#[derive(Clone, Copy, Debug)]
pub struct FlatList<'a> {
    /// Training rows of the whole training set.
    pub rows: &'a [i64],
    /// Their ids.
    pub ids: &'a [i64],
    /// Their scores.
    pub scores: &'a [f32],
}

/// `estimator` for the rows `part` was loaded with (itself for a whole run): what
/// [`Estimator::for_shard`](crate::Estimator::for_shard) answers, for the CLI and the
/// Python package alike.
pub fn for_part(
    estimator: Box<dyn crate::Estimator>,
    part: Option<&ShardRows>,
) -> Result<Box<dyn crate::Estimator>> {
    match part {
        Some(rows) => Ok(estimator.for_shard(rows)?.unwrap_or(estimator)),
        None => Ok(estimator),
    }
}

/// The owned values behind a [`FlatList`] (as read from a file or converted from Python).
#[derive(Clone, Debug, Default)]
pub struct ListData {
    /// Training rows.
    pub rows: Vec<i64>,
    /// Their ids.
    pub ids: Vec<i64>,
    /// Their scores.
    pub scores: Vec<f32>,
}

impl ListData {
    /// The borrowed view.
    pub fn as_flat(&self) -> FlatList<'_> {
        FlatList {
            rows: &self.rows,
            ids: &self.ids,
            scores: &self.scores,
        }
    }
}

/// A top-k part to merge: its lists and, for error messages and checks, where it came from
/// and which training rows it may hold.
#[derive(Clone, Debug)]
pub struct TopKPart<'a> {
    /// The part's file (or a name such as `part 3` for lists in memory).
    pub source: PathBuf,
    /// The part's training rows, when known: candidates outside are refused.
    pub rows: Option<Range<usize>>,
    /// Entries per test example (at most `k`; fewer when the part has fewer rows).
    pub width: usize,
    /// Largest scores first.
    pub proponents: FlatList<'a>,
    /// Most negative scores first.
    pub opponents: FlatList<'a>,
}

/// Merged lists: the best `k` of every part's candidates, with their ids.
#[derive(Clone, Debug)]
pub struct MergedTopK {
    /// The lists (global training rows); `k` is the requested `k`.
    pub top: TopKRows,
    /// Every listed row's id.
    pub ids: HashMap<usize, i64>,
}

/// Merges the top-k lists of parts over disjoint training rows (shards' results, in any
/// order and grouping) into the best `k` for each of `tests` test examples: the lists one
/// unsharded run gives (`infl merge` and `infl.merge_topk`; [`TopK`]'s order, ties to the
/// lower row). Refuses lists of the wrong length, rows outside a part's range and parts
/// whose ranges overlap.
pub fn merge_topk_parts(tests: usize, k: usize, parts: &[TopKPart<'_>]) -> Result<MergedTopK> {
    let mut ranges: Vec<(&Range<usize>, &PathBuf)> = parts
        .iter()
        .filter_map(|p| Some((p.rows.as_ref()?, &p.source)))
        .collect();
    ranges.sort_by_key(|(r, _)| (r.start, r.end));
    if let Some(w) = ranges.windows(2).find(|w| w[0].0.end > w[1].0.start) {
        return Err(Error::config(
            "parts",
            format!(
                "overlapping parts: {} (rows {:?}) and {} (rows {:?})",
                w[0].1.display(),
                w[0].0,
                w[1].1.display(),
                w[1].0
            ),
        ));
    }
    // Capacity is bounded by the candidates, not by a k from the input.
    let candidates: usize = parts.iter().map(|p| p.width).sum();
    let mut acc = TopK::new(tests, k.min(candidates).max(1))?;
    let mut ids = HashMap::new();
    for part in parts {
        let proponents = part_rows(part, "proponent", part.proponents, tests, &mut ids)?;
        let opponents = part_rows(part, "opponent", part.opponents, tests, &mut ids)?;
        acc.merge_rows(
            0,
            &TopKRows {
                k,
                proponents,
                opponents,
            },
        )?;
    }
    let mut top = acc.finish();
    top.k = k;
    Ok(MergedTopK { top, ids })
}

/// One list kind of a part as ranked rows per test example, its ids recorded in `ids`.
fn part_rows(
    part: &TopKPart<'_>,
    name: &str,
    list: FlatList<'_>,
    tests: usize,
    ids: &mut HashMap<usize, i64>,
) -> Result<Vec<Vec<Ranked>>> {
    let len = tests * part.width;
    let lens = [list.rows.len(), list.ids.len(), list.scores.len()];
    if lens.iter().any(|&l| l != len) {
        return Err(Error::data(
            &part.source,
            format!("{name}s"),
            format!(
                "expected {tests} x {} rows, ids and scores, found {lens:?} values",
                part.width
            ),
        ));
    }
    let mut out = Vec::with_capacity(tests);
    for q in 0..tests {
        let mut row = Vec::with_capacity(part.width);
        for j in q * part.width..(q + 1) * part.width {
            let index = usize::try_from(list.rows[j]).ok();
            let Some(r) = index.filter(|r| part.rows.as_ref().is_none_or(|rows| rows.contains(r)))
            else {
                let range = part
                    .rows
                    .as_ref()
                    .map_or(String::new(), |r| format!(" in {r:?} (its shard)"));
                return Err(Error::data(
                    &part.source,
                    format!("{name}s"),
                    format!("expected training rows{range}, found {}", list.rows[j]),
                ));
            };
            ids.insert(r, list.ids[j]);
            row.push(Ranked {
                index: r,
                score: list.scores[j],
            });
        }
        out.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shards_parse_and_refuse() {
        assert_eq!("3/8".parse::<Shard>().unwrap(), Shard::new(3, 8).unwrap());
        for bad in ["3/2", "0/2", "1/0", "x/2", "2", "1/2/3", "-1/2", ""] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains("expected i/N"), "{bad}: {e}");
        }
        let e = Shard::new(1, 5).unwrap().rows(4).unwrap_err().to_string();
        assert!(e.contains("at most 4 shards"), "{e}");
    }

    proptest! {
        /// Shards tile the rows in order, none empty, sizes differing by at most one.
        #[test]
        fn shards_tile_the_rows(n in 1usize..400, count in 1usize..50) {
            prop_assume!(count <= n);
            let mut next = 0;
            let mut sizes = Vec::new();
            for s in Shard::all(count) {
                let r = s.rows(n).unwrap();
                prop_assert_eq!(r.start, next);
                prop_assert!(!r.is_empty());
                sizes.push(r.len());
                next = r.end;
            }
            prop_assert_eq!(next, n);
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(hi - lo <= 1);
        }
    }

    fn part(i: usize, count: usize, n: usize, extra: &[(&str, &str)]) -> Part {
        let shard = Shard::new(i, count).unwrap();
        let rows = shard.rows(n).unwrap();
        let mut meta: HashMap<String, String> =
            part_metadata(shard, &rows, n, 0xabc).into_iter().collect();
        meta.insert("method".into(), "tracincp-fast".into());
        meta.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Part::from_metadata(format!("p{i}"), &meta).unwrap()
    }

    #[test]
    fn parts_are_ordered_and_checked() {
        let parts = vec![
            part(2, 3, 10, &[]),
            part(3, 3, 10, &[]),
            part(1, 3, 10, &[]),
        ];
        let ordered = order_parts(parts).unwrap();
        let rows: Vec<_> = ordered.iter().map(|p| p.rows.clone()).collect();
        assert_eq!(rows, vec![0..3, 3..6, 6..10]);
        assert!(!ordered[0].merged_metadata().contains_key(RUN_KEY));

        let e = order_parts(vec![part(1, 3, 10, &[]), part(1, 3, 10, &[])]).unwrap_err();
        assert!(e.to_string().contains("overlapping"), "{e}");
        let e = order_parts(vec![part(1, 3, 10, &[])]).unwrap_err();
        assert!(
            e.to_string().contains("missing 2/3 (rows 3..6), 3/3"),
            "{e}"
        );
        let e = order_parts(vec![part(1, 2, 10, &[]), part(2, 3, 10, &[])]).unwrap_err();
        assert!(e.to_string().contains("not parts of one result"), "{e}");
        let e = order_parts(vec![part(1, 2, 10, &[]), part(2, 2, 10, &[("k", "5")])]);
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("`k` is (absent) vs \"5\"")
        );

        let mut meta: HashMap<String, String> =
            part_metadata(Shard::new(1, 2).unwrap(), &(0..4), 10, 1)
                .into_iter()
                .collect();
        let e = Part::from_metadata("p", &meta).unwrap_err().to_string();
        assert!(e.contains("holds rows 0..5"), "{e}");
        meta.remove(SHARD_KEY);
        let e = Part::from_metadata("p", &meta).unwrap_err().to_string();
        assert!(e.contains("expected a shard part"), "{e}");
    }

    #[test]
    fn merged_parts_equal_the_whole_lists_and_refuse_bad_rows() {
        // 2 tests x 7 rows, with ties; parts 0..3 and 3..7 given in reverse order.
        let scores = [
            0.5f32, -1.0, 0.5, 2.0, 0.0, -1.0, 3.0, //
            1.0, 1.0, -2.0, 0.0, -2.0, 4.0, 0.25,
        ];
        let (tests, n, k) = (2, 7, 3);
        let whole = TopKRows::from_full(&scores, n, k);
        let flat = |rows: Range<usize>| {
            let sub: Vec<f32> = (0..tests)
                .flat_map(|q| scores[q * n + rows.start..q * n + rows.end].to_vec())
                .collect();
            let top = TopKRows::from_full(&sub, rows.len(), k);
            let list = |l: &Vec<Vec<Ranked>>| {
                let r: Vec<i64> = l
                    .iter()
                    .flatten()
                    .map(|c| (c.index + rows.start) as i64)
                    .collect();
                let s: Vec<f32> = l.iter().flatten().map(|c| c.score).collect();
                (r.clone(), r.iter().map(|r| r + 100).collect::<Vec<_>>(), s)
            };
            (
                list(&top.proponents),
                list(&top.opponents),
                k.min(rows.len()),
            )
        };
        let (a, b) = (flat(0..3), flat(3..7));
        type Flat = (
            (Vec<i64>, Vec<i64>, Vec<f32>),
            (Vec<i64>, Vec<i64>, Vec<f32>),
            usize,
        );
        fn part(f: &Flat, rows: Range<usize>) -> TopKPart<'_> {
            TopKPart {
                source: PathBuf::from(format!("part {rows:?}")),
                rows: Some(rows),
                width: f.2,
                proponents: FlatList {
                    rows: &f.0.0,
                    ids: &f.0.1,
                    scores: &f.0.2,
                },
                opponents: FlatList {
                    rows: &f.1.0,
                    ids: &f.1.1,
                    scores: &f.1.2,
                },
            }
        }
        let merged = merge_topk_parts(tests, k, &[part(&b, 3..7), part(&a, 0..3)]).unwrap();
        assert_eq!(merged.top, whole);
        assert_eq!(merged.ids[&6], 106);
        // A k beyond the candidates keeps them all (and allocates no more).
        let all = merge_topk_parts(tests, 1 << 60, &[part(&a, 0..3)]).unwrap();
        assert_eq!(all.top.proponents[0].len(), 3);

        let e = merge_topk_parts(tests, k, &[part(&a, 0..3), part(&b, 2..7)]).unwrap_err();
        assert!(e.to_string().contains("overlapping parts"), "{e}");
        let e = merge_topk_parts(tests, k, &[part(&b, 4..7)]).unwrap_err();
        assert!(
            e.to_string()
                .contains("expected training rows in 4..7 (its shard), found 3"),
            "{e}"
        );
        let mut short = a.clone();
        short.1.2.pop();
        let e = merge_topk_parts(tests, k, &[part(&short, 0..3)]).unwrap_err();
        assert!(
            e.to_string()
                .contains("part 0..3: tensor `opponents`: expected 2 x 3"),
            "{e}"
        );
    }
}
