//! Re-ranking a shortlist with exact scores: what makes a projected index answer like the
//! unprojected estimator.
//!
//! A random projection keeps every score unbiased but adds noise larger than the gaps
//! between the best scores among many training examples (QUALITY.md, "Index recall": at
//! MNIST scale, exact search over TracInCPFastRandProj embeddings finds 5–37% of exact
//! TracInCPFast's top 10). The best rows of the projected search are still a good
//! *shortlist*: [`Index::query_rescored`] takes the `shortlist` best proponents and
//! opponents of each query in the index's space, computes their exact scores with
//! [`ExactTerms`] (the unprojected estimator on those rows only) through the one
//! [`Engine`], and keeps the best `k` of them.
//!
//! The exact terms are prepared for the shortlisted rows only, a chunk of queries at a
//! time (at most [`CHUNK_QUERIES`] queries and [`CHUNK_ROWS`] distinct rows), so the work
//! grows with queries × shortlist, not with the training set.

use std::ops::Range;

use infl_core::{Backend, TopK, TopKRows};

use super::{Index, Queries, Search};
use crate::engine::{Engine, TermSet};
use crate::estimators::Estimator;
use crate::run::Run;
use crate::{Error, Result};

/// Queries rescored together, at most.
pub const CHUNK_QUERIES: usize = 64;
/// Distinct shortlisted rows of a chunk of queries, at most (one query may exceed it alone).
pub const CHUNK_ROWS: usize = 1 << 16;

/// Exact terms for chosen training rows against chosen queries.
pub trait ExactTerms {
    /// Terms whose training rows are the index rows `rows` (sorted, distinct, in that
    /// order) and whose test rows are the queries `queries` (in the order of the
    /// [`Queries`] being answered).
    fn terms(&self, rows: &[usize], queries: Range<usize>) -> Result<TermSet>;
}

/// An estimator over a run whose training rows are the index's rows and whose test rows
/// are the queries: `estimator.prepare` on [`Run::subset`].
pub struct ExactRun<'a> {
    /// The exact estimator (e.g. [`Estimator::unprojected`]).
    pub estimator: &'a dyn Estimator,
    /// Where it computes.
    pub backend: &'a dyn Backend,
    /// The run (training rows = index rows, test rows = queries).
    pub run: &'a Run,
}

impl std::fmt::Debug for ExactRun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactRun")
            .field("estimator", &self.estimator)
            .field("train", &self.run.n_train())
            .field("test", &self.run.n_test())
            .finish_non_exhaustive()
    }
}

impl ExactTerms for ExactRun<'_> {
    fn terms(&self, rows: &[usize], queries: Range<usize>) -> Result<TermSet> {
        let run = self.run.subset(rows, queries)?;
        Ok(self.estimator.prepare(self.backend, &run, &())?.set)
    }
}

/// How [`Index::query_rescored`] re-ranks.
#[derive(Clone, Copy)]
pub struct Rescore<'a> {
    /// Best proponents and best opponents per query taken from the index's search (at
    /// least `k`; both lists are rescored).
    pub shortlist: usize,
    /// The exact scores.
    pub exact: &'a dyn ExactTerms,
}

impl std::fmt::Debug for Rescore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rescore")
            .field("shortlist", &self.shortlist)
            .finish_non_exhaustive()
    }
}

impl Rescore<'_> {
    /// Default shortlist: 2000 rows each way (QUALITY.md, "Index recall": recall@10
    /// against exact TracInCPFast on MNIST 0.959 / 0.998 (proponents / opponents) at
    /// p = 256 and 0.996 / 0.999 at p = 1024; 1000 rows gave 0.936 at p = 256).
    pub const DEFAULT_SHORTLIST: usize = 2000;
}

impl Index {
    /// [`query`](Index::query) whose candidates are re-ranked by exact scores (see the
    /// module docs): the best `rescore.shortlist` proponents and opponents of `search`,
    /// rescored by `rescore.exact`, the best `k` kept.
    pub fn query_rescored(
        &self,
        backend: &dyn Backend,
        queries: &Queries,
        k: usize,
        search: Search,
        rescore: Rescore<'_>,
    ) -> Result<TopKRows> {
        if rescore.shortlist < k {
            let details = format!(
                "shortlist {} < k = {k}; the shortlist must hold the k rows kept",
                rescore.shortlist
            );
            return Err(Error::config("shortlist", details));
        }
        let shortlist = rescore.shortlist.min(self.len());
        let short = self.query(backend, queries, shortlist, search)?;
        let candidates: Vec<Vec<usize>> = (short.proponents.iter().zip(&short.opponents))
            .map(|(p, o)| {
                let mut rows: Vec<usize> = p.iter().chain(o).map(|r| r.index).collect();
                rows.sort_unstable();
                rows.dedup();
                rows
            })
            .collect();
        let engine = Engine::new(backend);
        let mut acc = TopK::new(candidates.len(), k)?;
        for chunk in chunks(&candidates) {
            rescore_chunk(&engine, rescore.exact, &candidates, chunk, &mut acc)?;
        }
        Ok(acc.finish())
    }
}

/// Consecutive query ranges of at most [`CHUNK_QUERIES`] queries and (unless one query
/// alone has more) [`CHUNK_ROWS`] candidate rows counted with repeats.
fn chunks(candidates: &[Vec<usize>]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, c) in candidates.iter().enumerate() {
        if i > start && (i - start == CHUNK_QUERIES || rows + c.len() > CHUNK_ROWS) {
            out.push(start..i);
            (start, rows) = (i, 0);
        }
        rows += c.len();
    }
    if start < candidates.len() {
        out.push(start..candidates.len());
    }
    out
}

/// Exact scores of the queries `chunk` against the union of their candidates, each query
/// offered its own candidates only.
fn rescore_chunk(
    engine: &Engine<&dyn Backend>,
    exact: &dyn ExactTerms,
    candidates: &[Vec<usize>],
    chunk: Range<usize>,
    acc: &mut TopK,
) -> Result<()> {
    let mut union: Vec<usize> = candidates[chunk.clone()].concat();
    union.sort_unstable();
    union.dedup();
    let set = exact.terms(&union, chunk.clone())?;
    if set.n_train() != union.len() || set.n_test() != chunk.len() {
        let details = format!(
            "expected exact terms of {} rows and {} queries, found {} and {}",
            union.len(),
            chunk.len(),
            set.n_train(),
            set.n_test()
        );
        return Err(Error::config("rescore", details));
    }
    let scores = engine.scores(&set, &())?;
    for (q, own) in chunk.clone().zip(&candidates[chunk.clone()]) {
        let row = &scores[(q - chunk.start) * union.len()..][..union.len()];
        for &r in own {
            // `union` holds every candidate of the chunk.
            let at = union.binary_search(&r).unwrap_or_default();
            acc.offer(q, r, row[at]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_query_once_within_limits() {
        let sizes = [10, CHUNK_ROWS, 5, CHUNK_ROWS - 20, 30, 1, 1];
        let mut candidates: Vec<Vec<usize>> = sizes.iter().map(|&n| (0..n).collect()).collect();
        candidates.extend(std::iter::repeat_n(vec![1, 2], 3 * CHUNK_QUERIES));
        let ranges = chunks(&candidates);
        let flat: Vec<usize> = ranges.iter().flat_map(Clone::clone).collect();
        assert_eq!(flat, (0..candidates.len()).collect::<Vec<_>>());
        for r in &ranges {
            let rows: usize = candidates[r.clone()].iter().map(Vec::len).sum();
            assert!(r.len() <= CHUNK_QUERIES, "{r:?}");
            assert!(rows <= CHUNK_ROWS || r.len() == 1, "{r:?}: {rows} rows");
        }
        assert_eq!(ranges[0], 0..1, "10 + 65536 rows exceed the limit");
        assert_eq!(ranges[1], 1..2, "one query alone may exceed it");
    }
}
