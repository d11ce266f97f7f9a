//! A persistent nearest-neighbour index of training examples, for top-k proponents and
//! opponents without scoring the whole training set.
//!
//! Every [`TermSet`] score is a dot product of per-example embeddings ([`embeddings`]:
//! `e_i·e_j = Σ_t w_t (g_i·g_j)(a_i·a_j + bias)`), so top-k proponents are a maximum
//! inner-product search and opponents one with the negated query. [`Index::build`] writes a
//! folder of two files, published together (all-or-nothing, through infl-io's
//! [`Publication`](infl_io::Publication)):
//! - `embeddings.safetensors`: `embeddings` f32 `[N, E]`, `ids` i64 `[N]`, and metadata
//!   recording the [`Recipe`] (method, settings, checkpoints, learning rates, layers, term
//!   shapes), the [`BuildOptions`], `N`, `E` and checksums (see [`mod@file`] for the layout);
//! - `ann.usearch`: a usearch HNSW graph with the native inner-product metric (MEASURED.md:
//!   the usual "append √(M²−‖x‖²)" reduction to cosine collapses when norms vary, as
//!   gradient norms do), keys = training rows.
//!
//! [`Index::open`] memory-maps both and checks them (shapes, metadata, checksums, usearch's
//! size and dimensions) before any search: a truncated or altered file is an error naming
//! it, never a crash. [`Index::query`] answers with [`Search::Exact`] — the reference: a
//! one-term set (`a` = embeddings, `g` = a column of ones) scored by the one
//! [`Engine`], blocked GEMM with streamed top-k — or
//! [`Search::Approximate`]: usearch proposes `candidates` rows for the query and for its
//! negation, the engine rescores them exactly, and the best `k` come back with exact scores
//! (opponents keep their negative sign). Queries are refused unless their [`Recipe`]
//! equals the index's.
//!
//! A projected index (TracInCPFastRandProj) ranks by projected scores, which at realistic
//! sizes miss most of the exact top 10; [`Index::query_rescored`] re-ranks a shortlist of
//! its best rows with exact scores of the unprojected estimator ([`Rescore`], see
//! `rescore.rs` for why and at what cost).

mod build;
mod embed;
pub mod file;
mod recipe;
mod rescore;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

use infl_core::{Backend, Bias, Matrix, TopK, TopKRows};
use infl_io::{Inputs, Rank, TensorFile};

use crate::engine::{Engine, FactorMatrices, FactorTerm, TermSet};
use crate::{Error, Result};

pub use build::{BuildOptions, Insertion, Training};
pub use embed::{Rows, embedding_width, embeddings};
pub use file::{ANN_FILE, EMBEDDINGS_FILE};
pub use recipe::{Recipe, TermShape};
pub use rescore::{CHUNK_QUERIES, CHUNK_ROWS, ExactRun, ExactTerms, Rescore};

use file::{damaged, verify_ann, verify_embeddings};
use recipe::entry;

/// Query embeddings `[T, E]` with the recipe they were computed with.
#[derive(Clone, Debug)]
pub struct Queries {
    /// What the embeddings were computed with (compared with the index's).
    pub recipe: Recipe,
    /// One row per query.
    pub embeddings: Matrix,
}

impl Queries {
    /// The embeddings of the test split of `set`, made with `recipe`.
    pub fn of_test(recipe: Recipe, set: &TermSet) -> Result<Self> {
        Ok(Self {
            embeddings: embeddings(set, Rows::Test)?,
            recipe,
        })
    }
}

/// How [`Index::query`] searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// Every training row, through the engine: the exact top-k.
    Exact,
    /// usearch candidates rescored exactly, where the graph pays
    /// ([`Index::graph_pays`]; otherwise the exact search, which is then cheaper).
    Approximate {
        /// Rows fetched for the query and for its negation (at least `k`; `N` or more is
        /// the exact search).
        candidates: usize,
        /// usearch's `ef` for this search (it explores `max(ef, candidates)` nodes).
        expansion: usize,
    },
}

impl Search {
    /// Default candidates: ~4k rescored rows, MEASURED.md's advice.
    pub const DEFAULT_CANDIDATES: usize = 4096;
    /// Default `ef` (MEASURED.md: ef ≥ 128).
    pub const DEFAULT_EXPANSION: usize = 128;

    /// [`Search::Approximate`] with the defaults.
    pub fn approximate() -> Self {
        Self::Approximate {
            candidates: Self::DEFAULT_CANDIDATES,
            expansion: Self::DEFAULT_EXPANSION,
        }
    }
}

/// An opened index (see the module docs).
pub struct Index {
    dir: PathBuf,
    recipe: Recipe,
    options: BuildOptions,
    embeddings: Matrix,
    ids: Vec<i64>,
    ann: usearch::Index,
    /// Held while a query sets usearch's `ef` and searches.
    searching: Mutex<()>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("rows", &self.len())
            .field("width", &self.width())
            .field("method", &self.recipe.method)
            .finish_non_exhaustive()
    }
}

impl Index {
    /// Embeds `training` chunk by chunk, builds the usearch graph, publishes both files in
    /// `dir` all-or-nothing (never replacing one of `inputs`), and opens the result. A
    /// training example whose embedding does not fit in f32 is an [`Error::NonFinite`]
    /// naming it, and then nothing is written (see [`embeddings`]).
    pub fn build(
        training: Training<'_>,
        recipe: &Recipe,
        dir: impl AsRef<Path>,
        inputs: &Inputs,
        options: &BuildOptions,
    ) -> Result<Self> {
        build::build(training, recipe, dir.as_ref(), inputs, options)?;
        Self::open(dir)
    }

    /// Opens the index in `dir`, checking both files (see the module docs).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(EMBEDDINGS_FILE);
        let file = TensorFile::open(&path)?;
        let meta = file.metadata();
        expect_entry(&path, meta, "format", file::FORMAT)?;
        expect_entry(&path, meta, "format_version", file::VERSION)?;
        verify_embeddings(&path, entry(&path, meta, "crc32")?)?;
        let recipe = recipe::Recipe::from_metadata(&path, meta)?;
        let (rows, width): (usize, usize) =
            (number(&path, meta, "rows")?, number(&path, meta, "width")?);
        if recipe.width() != width {
            let details = format!("{width}, but its terms give {}", recipe.width());
            return Err(Error::data(&path, "width (metadata)", details));
        }
        let options = BuildOptions {
            connectivity: number(&path, meta, "connectivity")?,
            expansion_add: number(&path, meta, "expansion_add")?,
            expansion_search: number(&path, meta, "expansion_search")?,
            ..BuildOptions::default()
        };
        let (embeddings, ids) = read_tensors(&file, rows, width)?;
        let ann_path = dir.join(ANN_FILE);
        verify_ann(
            &ann_path,
            number(&path, meta, "ann_bytes")?,
            entry(&path, meta, "ann_crc32")?,
        )?;
        let ann = view_ann(&ann_path, rows, width)?;
        ann.change_expansion_search(options.expansion_search);
        Ok(Self {
            dir,
            recipe,
            options,
            embeddings,
            ids,
            ann,
            searching: Mutex::new(()),
        })
    }

    /// Number of training rows `N`.
    pub fn len(&self) -> usize {
        self.embeddings.rows()
    }

    /// True without rows (never, for a built index).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Embedding width `E`.
    pub fn width(&self) -> usize {
        self.embeddings.cols()
    }

    /// What the embeddings were computed with.
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// The options the graph was built with (`chunk_rows` and `insertion` are not recorded
    /// and read as the defaults).
    pub fn options(&self) -> &BuildOptions {
        &self.options
    }

    /// The ids of the training rows (result indices are rows: `ids()[index]`).
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// The embeddings `[N, E]` (memory-mapped).
    pub fn embeddings(&self) -> &Matrix {
        &self.embeddings
    }

    /// The folder of the index.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `k` strongest proponents and opponents of every query, as training rows with
    /// exact scores. Refused unless the queries' recipe and width are the index's.
    pub fn query(
        &self,
        backend: &dyn Backend,
        queries: &Queries,
        k: usize,
        search: Search,
    ) -> Result<TopKRows> {
        self.recipe.check_query(&queries.recipe)?;
        let q = &queries.embeddings;
        if q.cols() != self.width() {
            return Err(Error::config(
                "query",
                format!(
                    "the index was built with width {}, the query embeddings have {} columns",
                    self.width(),
                    q.cols()
                ),
            ));
        }
        if k == 0 || k > self.len() {
            let details = format!(
                "k = {k}; expected 1 <= k <= {} (the index's rows)",
                self.len()
            );
            return Err(Error::config("k", details));
        }
        match search {
            Search::Approximate {
                candidates,
                expansion,
            } if self.graph_pays(candidates.max(k), expansion) => {
                self.approximate(backend, q, k, candidates, expansion)
            }
            Search::Exact | Search::Approximate { .. } => {
                Engine::new(backend).topk(&one_term(self.embeddings.clone(), q.clone()), k, &())
            }
        }
    }

    /// Whether a graph search of `candidates` rows (and `expansion`) costs less than the
    /// exact search. Both directions explore `max(candidates, expansion)` nodes of about
    /// `connectivity` neighbours each, so the graph computes about
    /// `2 · max(candidates, expansion) · connectivity` dot products against the exact
    /// search's `N`: below that `N` the exact search is both cheaper and exact (and
    /// candidates covering every row leave the graph, which may leave a row unreachable,
    /// nothing to add).
    pub fn graph_pays(&self, candidates: usize, expansion: usize) -> bool {
        let visited = candidates
            .max(expansion)
            .saturating_mul(2 * self.options.connectivity);
        candidates < self.len() && visited < self.len()
    }

    /// usearch candidates of every query, rescored by the engine.
    fn approximate(
        &self,
        backend: &dyn Backend,
        q: &Matrix,
        k: usize,
        candidates: usize,
        expansion: usize,
    ) -> Result<TopKRows> {
        if candidates == 0 || expansion == 0 {
            let details =
                format!("candidates {candidates}, expansion {expansion}; both must be positive");
            return Err(Error::config("search", details));
        }
        let count = candidates.max(k).min(self.len());
        let engine = Engine::new(backend);
        let mut acc = TopK::new(q.rows(), k)?;
        // Graph searches of all queries in parallel, under the lock that holds this call's
        // `ef`: at most one worker per hardware thread, the search slots usearch reserves
        // by default (more concurrent searches would fail rather than wait).
        let lists: Vec<Vec<usize>> = {
            let _searching = self
                .searching
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.ann.change_expansion_search(expansion);
            let hardware = std::thread::available_parallelism().map_or(1, |n| n.get());
            let workers = rayon::current_num_threads().min(hardware).max(1);
            let queries: Vec<usize> = (0..q.rows()).collect();
            let lists = queries
                .par_chunks(q.rows().div_ceil(workers).max(1))
                .map(|chunk| {
                    (chunk.iter())
                        .map(|&i| self.candidates(q.view().row(i), count))
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()
                .map(|parts| parts.concat());
            self.ann
                .change_expansion_search(self.options.expansion_search);
            lists?
        };
        for (i, rows) in lists.into_iter().enumerate() {
            let query = Matrix::from_vec(1, q.cols(), q.view().row(i).to_vec())?;
            let scores =
                engine.scores(&one_term(self.embeddings.select_rows(&rows), query), &())?;
            rows.iter()
                .zip(&scores)
                .for_each(|(&r, &s)| acc.offer(i, r, s));
        }
        Ok(acc.finish())
    }

    /// The rows usearch proposes for `query` and for `-query`, sorted, without repeats.
    fn candidates(&self, query: &[f32], count: usize) -> Result<Vec<usize>> {
        let negated: Vec<f32> = query.iter().map(|x| -x).collect();
        let path = self.dir.join(ANN_FILE);
        let mut rows = Vec::with_capacity(2 * count);
        for v in [query, &negated] {
            let found = self
                .ann
                .search(v, count)
                .map_err(|e| damaged(&path, format!("usearch search failed: {e}")))?;
            rows.extend(found.keys.iter().map(|&key| key as usize));
        }
        if let Some(bad) = rows.iter().find(|&&r| r >= self.len()) {
            return Err(damaged(
                &path,
                format!("key {bad} is not a row (the index has {})", self.len()),
            ));
        }
        rows.sort_unstable();
        rows.dedup();
        Ok(rows)
    }
}

/// The one-term set whose scores are `query·train` dot products: `a` = embeddings, `g` = 1.
fn one_term(train: Matrix, query: Matrix) -> TermSet {
    let ones = |m: &Matrix| FactorMatrices {
        g: Matrix::from_fn(m.rows(), 1, |_, _| 1.0),
        a: m.clone(),
    };
    TermSet {
        terms: vec![FactorTerm {
            label: "index embeddings".into(),
            weight: 1.0,
            bias: Bias::Excluded,
            positions: 1,
            train: ones(&train),
            test: Some(ones(&query)),
        }],
    }
}

/// The metadata entry `key` must be `want`.
fn expect_entry(
    path: &Path,
    meta: &std::collections::HashMap<String, String>,
    key: &str,
    want: &str,
) -> Result<()> {
    let found = entry(path, meta, key)?;
    if found != want {
        let details =
            format!("{found:?}; expected {want:?} (an index written by this version of infl)");
        return Err(Error::data(path, format!("{key} (metadata)"), details));
    }
    Ok(())
}

/// The metadata entry `key`, a number.
fn number<T: FromStr>(
    path: &Path,
    meta: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<T> {
    let text = entry(path, meta, key)?;
    text.parse().map_err(|_| {
        Error::data(
            path,
            format!("{key} (metadata)"),
            format!("{text:?}; expected a number"),
        )
    })
}

/// The `embeddings` `[rows, width]` (memory-mapped) and `ids` `[rows]` tensors.
fn read_tensors(file: &TensorFile, rows: usize, width: usize) -> Result<(Matrix, Vec<i64>)> {
    let path = file.path();
    for (name, shape) in [("embeddings", vec![rows, width]), ("ids", vec![rows])] {
        let found = file.info(name)?.shape;
        if found != shape.as_slice() {
            let details =
                format!("shape {found:?}; expected {shape:?} (the recorded rows and width)");
            return Err(Error::data(path, name, details));
        }
    }
    Ok((
        file.matrix("embeddings", Rank::Matrix)?,
        file.integers("ids")?,
    ))
}

/// Memory-maps `ann.usearch` (already checked against its checksum) and checks it holds
/// `rows` vectors of `width` f32 under the inner-product metric.
fn view_ann(path: &Path, rows: usize, width: usize) -> Result<usearch::Index> {
    let name = path
        .to_str()
        .ok_or_else(|| damaged(path, "usearch needs a UTF-8 path; move the index"))?;
    let ann = usearch::Index::restore_view(name)
        .map_err(|e| damaged(path, format!("usearch cannot read it: {e}")))?;
    let found = (
        ann.size(),
        ann.dimensions(),
        ann.metric_kind(),
        ann.scalar_kind(),
    );
    let want = (
        rows,
        width,
        usearch::MetricKind::IP,
        usearch::ScalarKind::F32,
    );
    if found != want {
        let details = format!(
            "{} vectors of {} {:?} under {:?}; expected {rows} of {width} F32 under IP (the \
             embeddings file's)",
            found.0, found.1, found.3, found.2
        );
        return Err(damaged(path, details));
    }
    Ok(ann)
}
