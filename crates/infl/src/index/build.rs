//! Building an index: the training set is embedded chunk by chunk, each chunk written to
//! `embeddings.safetensors` and added to the usearch graph, so memory is one chunk of
//! embeddings plus what usearch holds (its own copy of the vectors and the graph).
//!
//! Both files go through one [`Publication`]: staged beside their destinations and renamed
//! together at the end. Any error — a non-finite embedding in the last chunk included —
//! leaves the folder as it was: no partial file, no temporary file, no new folder.
//!
//! The options are usearch's HNSW knobs. `connectivity` (HNSW's `M`, 16) and
//! `expansion_add` (`ef_construction`, 128) are usearch's defaults; `expansion_search`
//! (`ef`) is 128 rather than usearch's 64, since MEASURED.md found recall 0.993–0.996 at 64
//! and 0.999 at 128 on gradient-like embeddings. A search of `c` candidates explores at
//! least `c` nodes whatever `ef` is (usearch takes `max(ef, c)`).

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use infl_core::ranges;
use infl_io::{Inputs, Publication, StagedFile};
use rayon::prelude::*;

use super::embed::{Rows, embedding_width, embeddings};
use super::file::{
    ANN_FILE, EMBEDDINGS_FILE, FORMAT, VERSION, ZERO_CRC, bytes_text, crc_text, damaged, file_crc,
    header, with_crc,
};
use super::recipe::Recipe;
use crate::engine::TermSet;
use crate::run::Prepared;
use crate::{Error, Result};

/// The training examples to index: a term set and the ids of its rows.
#[derive(Clone, Copy, Debug)]
pub struct Training<'a> {
    /// The terms (only their training factors are read).
    pub set: &'a TermSet,
    /// One id per training row.
    pub ids: &'a [i64],
}

impl<'a> From<&'a Prepared> for Training<'a> {
    fn from(p: &'a Prepared) -> Self {
        Self {
            set: &p.set,
            ids: &p.train.ids,
        }
    }
}

/// How rows are added to the usearch graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insertion {
    /// From every rayon thread: fast, but the graph (and so approximate results and the
    /// file's bytes) depends on thread timing.
    Parallel,
    /// In row order on one thread: the same inputs give the same file.
    Sequential,
}

/// Options of [`Index::build`](super::Index::build) (see the module docs for the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// Graph edges per node (HNSW's `M`; usearch's default 16).
    pub connectivity: usize,
    /// Candidates explored when adding a row (`ef_construction`; usearch's default 128).
    pub expansion_add: usize,
    /// Candidates explored by a search unless a query says otherwise (`ef`; 128, see
    /// MEASURED.md: ef ≥ 128).
    pub expansion_search: usize,
    /// Training rows embedded and written per chunk.
    pub chunk_rows: usize,
    /// Parallel or reproducible insertion.
    pub insertion: Insertion,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 128,
            chunk_rows: 4096,
            insertion: Insertion::Parallel,
        }
    }
}

impl BuildOptions {
    fn check(&self) -> Result<()> {
        let bad = |what: &str, v: usize, min: usize| {
            (v < min).then(|| Error::config(what, format!("{v}; expected at least {min}")))
        };
        let first = bad("connectivity", self.connectivity, 2)
            .or_else(|| bad("expansion_add", self.expansion_add, 1))
            .or_else(|| bad("expansion_search", self.expansion_search, 1))
            .or_else(|| bad("chunk_rows", self.chunk_rows, 1));
        first.map_or(Ok(()), Err)
    }
}

/// Builds and publishes the index of `training` in `dir` (see [`super::Index::build`]).
pub(super) fn build(
    training: Training<'_>,
    recipe: &Recipe,
    dir: &Path,
    inputs: &Inputs,
    options: &BuildOptions,
) -> Result<()> {
    let (rows, width) = check_inputs(training, recipe)?;
    options.check()?;
    let (emb_path, ann_path) = (dir.join(EMBEDDINGS_FILE), dir.join(ANN_FILE));
    let mut publication = Publication::plan(inputs, [&emb_path, &ann_path])?;
    let ann = new_ann(width, rows, options).map_err(|e| damaged(&ann_path, e))?;
    let mut metadata = metadata(recipe, options, rows, width)?;
    let placeholder = header(&metadata, rows, width)?;
    let mut staged = publication.stage_file(&emb_path)?;
    let data = write_data(&mut staged, &placeholder, training, &ann, options)?;
    let (ann_bytes, ann_crc) = stage_ann(&mut publication, &ann_path, &ann)?;
    metadata.insert("ann_bytes".into(), bytes_text(ann_bytes));
    metadata.insert("ann_crc32".into(), crc_text(ann_crc));
    let head = header(&metadata, rows, width)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head);
    hasher.combine(&data);
    let head = with_crc(&head, &crc_text(hasher.finalize()))
        .filter(|h| h.len() == placeholder.len())
        .ok_or_else(|| damaged(&emb_path, "the final header changed length (a bug)"))?;
    let io = |e| damaged(&emb_path, format!("cannot write: {e}"));
    staged.file().seek(SeekFrom::Start(0)).map_err(io)?;
    staged.file().write_all(&head).map_err(io)?;
    publication.finish_file(staged)?;
    Ok(publication.publish()?)
}

/// Rows and width of a non-empty training set whose ids and recipe match it.
fn check_inputs(t: Training<'_>, recipe: &Recipe) -> Result<(usize, usize)> {
    let (rows, width) = (t.set.n_train(), embedding_width(t.set));
    if rows == 0 || width == 0 {
        return Err(Error::config(
            "index",
            format!("{rows} training examples of width {width}; an index needs both positive"),
        ));
    }
    if t.ids.len() != rows {
        return Err(Error::config(
            "ids",
            format!("{} ids for {rows} training examples", t.ids.len()),
        ));
    }
    // The engine's one rule for values f32 cannot hold, with its messages: an index holds
    // nothing that scoring would refuse.
    crate::finite::check(t.set, crate::run::Splits::TrainOnly)?;
    if recipe.terms != Recipe::term_shapes(t.set) {
        return Err(Error::config(
            "recipe",
            "its terms are not those of the training set (make it with Recipe::of from the \
             same Prepared)",
        ));
    }
    Ok((rows, width))
}

/// An empty usearch index: inner product, f32, room for `rows`.
fn new_ann(width: usize, rows: usize, o: &BuildOptions) -> Result<usearch::Index, String> {
    let ann = usearch::Index::new(&usearch::IndexOptions {
        dimensions: width,
        metric: usearch::MetricKind::IP,
        quantization: usearch::ScalarKind::F32,
        connectivity: o.connectivity,
        expansion_add: o.expansion_add,
        expansion_search: o.expansion_search,
        multi: false,
    })
    .map_err(|e| format!("usearch cannot create an index: {e}"))?;
    let threads = rayon::current_num_threads().max(1);
    ann.reserve_capacity_and_threads(rows, threads)
        .map_err(|e| format!("usearch cannot reserve {rows} rows: {e}"))?;
    Ok(ann)
}

/// The metadata with placeholders for what is known only at the end.
fn metadata(
    recipe: &Recipe,
    o: &BuildOptions,
    rows: usize,
    width: usize,
) -> Result<BTreeMap<String, String>> {
    let mut m: BTreeMap<String, String> = recipe.to_metadata()?.into_iter().collect();
    let fixed = [
        ("format", FORMAT.to_string()),
        ("format_version", VERSION.to_string()),
        ("rows", rows.to_string()),
        ("width", width.to_string()),
        ("connectivity", o.connectivity.to_string()),
        ("expansion_add", o.expansion_add.to_string()),
        ("expansion_search", o.expansion_search.to_string()),
        ("ann_bytes", bytes_text(0)),
        ("ann_crc32", ZERO_CRC.to_string()),
        ("crc32", ZERO_CRC.to_string()),
    ];
    m.extend(fixed.into_iter().map(|(k, v)| (k.to_string(), v)));
    Ok(m)
}

/// Writes the placeholder header, the ids and the embeddings chunk by chunk (adding each
/// chunk to `ann`); returns the CRC state of the data section.
fn write_data(
    staged: &mut StagedFile,
    placeholder: &[u8],
    t: Training<'_>,
    ann: &usearch::Index,
    o: &BuildOptions,
) -> Result<crc32fast::Hasher> {
    let path = staged.dest().to_path_buf();
    let io = |e: std::io::Error| damaged(&path, format!("cannot write: {e}"));
    let mut w = std::io::BufWriter::with_capacity(1 << 20, staged.file());
    let mut hasher = crc32fast::Hasher::new();
    w.write_all(placeholder).map_err(io)?;
    let ids: Vec<u8> = t.ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    hasher.update(&ids);
    w.write_all(&ids).map_err(io)?;
    for rows in ranges(t.set.n_train(), o.chunk_rows) {
        let chunk = embeddings(t.set, Rows::Train(rows.clone()))?;
        let bytes: Vec<u8> = chunk.data().iter().flat_map(|x| x.to_le_bytes()).collect();
        hasher.update(&bytes);
        w.write_all(&bytes).map_err(io)?;
        add_chunk(ann, &chunk, rows.start, o.insertion)?;
    }
    w.flush().map_err(io)?;
    Ok(hasher)
}

/// Adds the rows of `chunk` (training rows `start..`) to `ann`, keyed by row number.
fn add_chunk(
    ann: &usearch::Index,
    chunk: &infl_core::Matrix,
    start: usize,
    insertion: Insertion,
) -> Result<()> {
    let view = chunk.view();
    let add = |r: usize| {
        ann.add((start + r) as u64, view.row(r)).map_err(|e| {
            Error::config(
                "index",
                format!("usearch refused training row {}: {e}", start + r),
            )
        })
    };
    match insertion {
        Insertion::Parallel => (0..chunk.rows()).into_par_iter().try_for_each(add),
        Insertion::Sequential => (0..chunk.rows()).try_for_each(add),
    }
}

/// Saves `ann` to a staged file; returns its size and CRC-32.
fn stage_ann(
    publication: &mut Publication,
    path: &Path,
    ann: &usearch::Index,
) -> Result<(u64, u32)> {
    let mut written = (0, 0);
    publication.stage_path(path, |tmp| {
        let name = tmp.to_str().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "usearch needs a UTF-8 path; choose another folder",
            )
        })?;
        ann.save(name)
            .map_err(|e| std::io::Error::other(format!("usearch cannot save: {e}")))?;
        written = (std::fs::metadata(tmp)?.len(), file_crc(tmp)?);
        Ok(())
    })?;
    Ok(written)
}
