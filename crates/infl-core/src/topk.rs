//! Streaming top-k under a total order.
//!
//! Proponents are the largest scores, opponents the most negative, each listed best first.
//! Ties are broken by the lower training index, so the result is a function of the score
//! matrix alone: it does not depend on how the training set was split into blocks, on the
//! order blocks were merged, or on the number of threads. `-0.0` and `0.0` compare equal.
//! The order is [`crate::order`]'s, the one ranking order of infl.

use std::cmp::Ordering;

use crate::order::{Direction, compare};
use crate::{Error, Result};

/// One ranked candidate: a training index and its score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranked {
    /// Training example index (row in the training set).
    pub index: usize,
    /// Its score.
    pub score: f32,
}

impl Ranked {
    /// Compares two candidates in `direction` (see [`crate::order::compare`]).
    #[inline]
    pub fn compare(direction: Direction, a: Ranked, b: Ranked) -> Ordering {
        compare(direction, (a.score, a.index), (b.score, b.index))
    }
}

/// True when `a` ranks before `b` as a proponent (higher score, then lower index).
#[inline]
pub fn proponent_before(a: Ranked, b: Ranked) -> bool {
    Ranked::compare(Direction::Descending, a, b) == Ordering::Less
}

/// True when `a` ranks before `b` as an opponent (lower score, then lower index).
#[inline]
pub fn opponent_before(a: Ranked, b: Ranked) -> bool {
    Ranked::compare(Direction::Ascending, a, b) == Ordering::Less
}

/// The best `k` of a stream of candidates, kept sorted best first.
#[derive(Clone, Debug)]
struct Best {
    items: Vec<Ranked>,
}

impl Best {
    #[inline]
    fn offer(&mut self, k: usize, c: Ranked, before: fn(Ranked, Ranked) -> bool) {
        if self.items.len() == k {
            match self.items.last() {
                Some(&worst) if before(c, worst) => {
                    self.items.pop();
                }
                _ => return,
            }
        }
        let pos = self.items.partition_point(|&x| before(x, c));
        self.items.insert(pos, c);
    }

    /// While fewer than `k` are kept, pushes the scores that pass `admit` (from the start
    /// of `scores`) until `k` are kept, then sorts once in `direction`; returns how many
    /// scores it went through (the rest are offered one by one).
    fn fill(
        &mut self,
        k: usize,
        offset: usize,
        scores: &[f32],
        admit: impl Fn(f32) -> bool,
        direction: Direction,
    ) -> usize {
        if self.items.len() >= k {
            return 0;
        }
        let mut j = 0;
        while j < scores.len() && self.items.len() < k {
            if admit(scores[j]) {
                self.items.push(Ranked {
                    index: offset + j,
                    score: scores[j],
                });
            }
            j += 1;
        }
        self.items
            .sort_unstable_by(|&a, &b| Ranked::compare(direction, a, b));
        j
    }

    /// The score a candidate must reach to be considered: the worst kept score once `k`
    /// are kept, else `open` (accept anything).
    #[inline]
    fn threshold(&self, k: usize, open: f32) -> f32 {
        match self.items.last() {
            Some(w) if self.items.len() == k => w.score,
            _ => open,
        }
    }
}

/// Running top-k proponents and opponents for a set of query rows.
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    proponents: Vec<Best>,
    opponents: Vec<Best>,
    /// Per row, scores a candidate must reach to be kept ([`TopK::part`]).
    floors: Vec<Floor>,
}

/// A proponent must score at least `hi` and an opponent at most `lo` to be kept: the
/// k-th best of the accumulator a [`TopK::part`] is merged into, below which nothing can
/// enter it (a tie still can: its index may be lower).
#[derive(Clone, Copy, Debug)]
struct Floor {
    hi: f32,
    lo: f32,
}

impl Floor {
    const OPEN: Self = Self {
        hi: f32::NEG_INFINITY,
        lo: f32::INFINITY,
    };
}

impl TopK {
    /// An empty accumulator for `queries` rows; `k` must be at least 1.
    pub fn new(queries: usize, k: usize) -> Result<Self> {
        if k == 0 {
            return Err(Error::invalid("k", "k must be at least 1"));
        }
        let empty = Best {
            items: Vec::with_capacity(k),
        };
        Ok(Self {
            k,
            proponents: vec![empty.clone(); queries],
            opponents: vec![empty; queries],
            floors: vec![Floor::OPEN; queries],
        })
    }

    /// An empty accumulator (`k` at least 1) for this one's rows `rows`, to be merged back
    /// into it: it keeps only candidates that could still enter this accumulator's lists
    /// as they are now, so it does far less work when their thresholds are high, and the
    /// merged result is the same as without it.
    pub fn part(&self, rows: &[usize], k: usize) -> Result<Self> {
        let mut part = Self::new(rows.len(), k)?;
        for (floor, &q) in part.floors.iter_mut().zip(rows) {
            (floor.hi, floor.lo) = self.bars(q);
        }
        Ok(part)
    }

    /// The proponent and opponent scores a candidate of row `q` must reach to be kept.
    #[inline]
    fn bars(&self, q: usize) -> (f32, f32) {
        let (k, floor) = (self.k, self.floors[q]);
        (
            self.proponents[q]
                .threshold(k, f32::NEG_INFINITY)
                .max(floor.hi),
            self.opponents[q].threshold(k, f32::INFINITY).min(floor.lo),
        )
    }

    /// k.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of query rows.
    pub fn queries(&self) -> usize {
        self.proponents.len()
    }

    /// Offers one score of query row `q` for training index `index`.
    #[inline]
    pub fn offer(&mut self, q: usize, index: usize, score: f32) {
        let c = Ranked { index, score };
        let k = self.k;
        self.proponents[q].offer(k, c, proponent_before);
        self.opponents[q].offer(k, c, opponent_before);
    }

    /// Offers a row of scores for query `q`; `scores[j]` belongs to training index
    /// `offset + j`. Most candidates are rejected by two comparisons against the current
    /// k-th best scores.
    pub fn offer_row(&mut self, q: usize, offset: usize, scores: &[f32]) {
        let (k, floor) = (self.k, self.floors[q]);
        let (p, o) = (&mut self.proponents[q], &mut self.opponents[q]);
        // Lists not yet full take every admissible score: pushed, then sorted once (the
        // same lists as one insertion each, without k² moves).
        let from_p = p.fill(k, offset, scores, |s| s >= floor.hi, Direction::Descending);
        let from_o = o.fill(k, offset, scores, |s| s <= floor.lo, Direction::Ascending);
        let (mut hi, mut lo) = self.bars(q);
        let (p, o) = (&mut self.proponents[q], &mut self.opponents[q]);
        for (j, &score) in scores.iter().enumerate().skip(from_p.min(from_o)) {
            if j >= from_p && score >= hi {
                p.offer(
                    k,
                    Ranked {
                        index: offset + j,
                        score,
                    },
                    proponent_before,
                );
                hi = p.threshold(k, f32::NEG_INFINITY).max(floor.hi);
            }
            if j >= from_o && score <= lo {
                o.offer(
                    k,
                    Ranked {
                        index: offset + j,
                        score,
                    },
                    opponent_before,
                );
                lo = o.threshold(k, f32::INFINITY).min(floor.lo);
            }
        }
    }

    /// Whether a score of magnitude at most `bound` could still enter query row `q`'s
    /// proponents or opponents. Once a list holds `k` candidates, a candidate enters only
    /// if it ranks before the worst kept one: a score equal to the worst may (its index
    /// can be lower), so only `bound < worst proponent` and `-bound > worst opponent`
    /// rule it out. Exact top-k with bound pruning skips the pairs for which this is false.
    #[inline]
    pub fn admits(&self, q: usize, bound: f64) -> bool {
        let (hi, lo) = self.bars(q);
        bound >= f64::from(hi) || -bound <= f64::from(lo)
    }

    /// Merges `other`, computed for the query rows `rows` (its row `i` is this row
    /// `rows[i]`) and the training indices `indices` (its candidate `c` is index
    /// `indices[c]`). `indices` must be increasing, so that `other` broke ties as this
    /// accumulator does, and disjoint from every index offered before.
    pub fn merge_mapped(&mut self, other: &TopK, rows: &[usize], indices: &[usize]) -> Result<()> {
        let fits =
            rows.iter().all(|&q| q < self.queries()) && indices.windows(2).all(|w| w[0] < w[1]);
        if rows.len() != other.queries() || !fits {
            return Err(Error::shape(
                "TopK::merge_mapped",
                format!(
                    "{} rows mapped for {} (into {}), indices increasing: {}",
                    rows.len(),
                    other.queries(),
                    self.queries(),
                    indices.windows(2).all(|w| w[0] < w[1])
                ),
            ));
        }
        let k = self.k;
        let map = |c: &Ranked| Ranked {
            index: indices[c.index],
            score: c.score,
        };
        for (i, &q) in rows.iter().enumerate() {
            for c in &other.proponents[i].items {
                self.proponents[q].offer(k, map(c), proponent_before);
            }
            for c in &other.opponents[i].items {
                self.opponents[q].offer(k, map(c), opponent_before);
            }
        }
        Ok(())
    }

    /// Merges another accumulator over a disjoint set of training indices, for the
    /// query rows `q0..q0 + other.queries()`.
    pub fn merge(&mut self, q0: usize, other: &TopK) -> Result<()> {
        if other.k != self.k || q0 + other.queries() > self.queries() {
            return Err(Error::shape(
                "TopK::merge",
                format!(
                    "cannot merge k={} rows {}..{} into k={} with {} rows",
                    other.k,
                    q0,
                    q0 + other.queries(),
                    self.k,
                    self.queries()
                ),
            ));
        }
        let k = self.k;
        for (i, (p, o)) in other.proponents.iter().zip(&other.opponents).enumerate() {
            for &c in &p.items {
                self.proponents[q0 + i].offer(k, c, proponent_before);
            }
            for &c in &o.items {
                self.opponents[q0 + i].offer(k, c, opponent_before);
            }
        }
        Ok(())
    }

    /// Merges finished lists over a disjoint set of training indices (a shard's result, or
    /// a merge of some shards') for the query rows `q0..q0 + rows.proponents.len()`. Lists
    /// may be shorter than `k` (a shard with fewer rows); the result is the same for any
    /// order and grouping of the merges.
    pub fn merge_rows(&mut self, q0: usize, rows: &TopKRows) -> Result<()> {
        let n = rows.proponents.len();
        if rows.opponents.len() != n || q0 + n > self.queries() {
            return Err(Error::shape(
                "TopK::merge_rows",
                format!(
                    "cannot merge {} proponent and {} opponent rows at {q0} into {} rows",
                    n,
                    rows.opponents.len(),
                    self.queries()
                ),
            ));
        }
        let k = self.k;
        for (i, (p, o)) in rows.proponents.iter().zip(&rows.opponents).enumerate() {
            for &c in p {
                self.proponents[q0 + i].offer(k, c, proponent_before);
            }
            for &c in o {
                self.opponents[q0 + i].offer(k, c, opponent_before);
            }
        }
        Ok(())
    }

    /// The final lists, best first. Rows have `min(k, candidates seen)` entries.
    pub fn finish(self) -> TopKRows {
        let take = |v: Vec<Best>| v.into_iter().map(|b| b.items).collect();
        TopKRows {
            k: self.k,
            proponents: take(self.proponents),
            opponents: take(self.opponents),
        }
    }
}

/// Final top-k lists per query row.
#[derive(Clone, Debug, PartialEq)]
pub struct TopKRows {
    /// k.
    pub k: usize,
    /// Per query: largest scores first.
    pub proponents: Vec<Vec<Ranked>>,
    /// Per query: most negative scores first.
    pub opponents: Vec<Vec<Ranked>>,
}

impl TopKRows {
    /// The exact top-k of a full row-major `[queries, n]` score matrix by sorting
    /// (the reference the streaming version is tested against).
    pub fn from_full(scores: &[f32], n: usize, k: usize) -> Self {
        let rows = scores.len().checked_div(n).unwrap_or(0);
        let mut proponents = Vec::with_capacity(rows);
        let mut opponents = Vec::with_capacity(rows);
        for q in 0..rows {
            let mut all: Vec<Ranked> = scores[q * n..(q + 1) * n]
                .iter()
                .enumerate()
                .map(|(index, &score)| Ranked { index, score })
                .collect();
            all.sort_by(|a, b| Ranked::compare(Direction::Descending, *a, *b));
            proponents.push(all.iter().take(k).copied().collect());
            all.sort_by(|a, b| Ranked::compare(Direction::Ascending, *a, *b));
            opponents.push(all.iter().take(k).copied().collect());
        }
        Self {
            k,
            proponents,
            opponents,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ties_go_to_lower_index() {
        let mut t = TopK::new(1, 2).unwrap();
        t.offer_row(0, 10, &[1.0, 3.0, 3.0, -0.0, 0.0, -5.0, -5.0]);
        let r = t.finish();
        assert_eq!(
            r.proponents[0].iter().map(|c| c.index).collect::<Vec<_>>(),
            vec![11, 12]
        );
        assert_eq!(
            r.opponents[0].iter().map(|c| c.index).collect::<Vec<_>>(),
            vec![15, 16]
        );
    }

    #[test]
    fn k_zero_is_rejected() {
        assert!(TopK::new(3, 0).is_err());
    }

    #[test]
    fn admits_ties_with_the_worst_kept_and_nothing_below() {
        let mut t = TopK::new(1, 2).unwrap();
        assert!(t.admits(0, 0.0), "an open list admits anything");
        t.offer_row(0, 0, &[5.0, 4.0, -3.0, -2.0]);
        // Worst kept: proponent 4, opponent -2.
        assert!(t.admits(0, 4.0) && t.admits(0, 2.0));
        assert!(!t.admits(0, 1.9999));
        let mut s = TopK::new(1, 1).unwrap();
        s.offer_row(0, 5, &[0.0]);
        assert!(s.admits(0, 0.0), "-0 ties with 0, and a lower index wins");
        assert!(!s.admits(0, -1.0));
    }

    #[test]
    fn part_keeps_only_what_can_enter_and_merges_the_same() {
        let mut all = TopK::new(1, 2).unwrap();
        all.offer_row(0, 0, &[5.0, 4.0, -3.0, -2.0]);
        let scores = [4.0, 3.0, -2.0, -1.0, 6.0];
        let mut part = all.part(&[0], 2).unwrap();
        part.offer_row(0, 10, &scores);
        let mut plain = TopK::new(1, 2).unwrap();
        plain.offer_row(0, 10, &scores);
        let kept = part.clone().finish();
        let index = |r: &[Ranked]| r.iter().map(|c| c.index).collect::<Vec<_>>();
        assert_eq!(
            index(&kept.proponents[0]),
            vec![14, 10],
            "4 ties the worst: kept"
        );
        assert_eq!(
            index(&kept.opponents[0]),
            vec![12],
            "-1 is above the worst, -2"
        );
        let mut seeded = all.clone();
        seeded.merge(0, &part).unwrap();
        all.merge(0, &plain).unwrap();
        assert_eq!(seeded.finish(), all.finish());
    }

    #[test]
    fn merge_mapped_maps_rows_and_indices() {
        let mut part = TopK::new(2, 1).unwrap();
        part.offer_row(0, 0, &[1.0, 3.0]);
        part.offer_row(1, 0, &[-1.0, 2.0]);
        let mut all = TopK::new(3, 1).unwrap();
        all.offer_row(2, 0, &[9.0]);
        all.merge_mapped(&part, &[2, 0], &[4, 7]).unwrap();
        let r = all.finish();
        assert_eq!(
            r.proponents[0],
            vec![Ranked {
                index: 7,
                score: 2.0
            }]
        );
        assert_eq!(
            r.opponents[0],
            vec![Ranked {
                index: 4,
                score: -1.0
            }]
        );
        assert_eq!(
            r.proponents[2],
            vec![Ranked {
                index: 0,
                score: 9.0
            }]
        );
        assert_eq!(
            r.opponents[2],
            vec![Ranked {
                index: 4,
                score: 1.0
            }]
        );
        assert!(all_err(&part, &[0, 1], &[3, 3]));
        assert!(all_err(&part, &[0, 5], &[1, 2]));
    }

    fn all_err(part: &TopK, rows: &[usize], idx: &[usize]) -> bool {
        TopK::new(3, 1)
            .unwrap()
            .merge_mapped(part, rows, idx)
            .is_err()
    }

    proptest! {
        /// Streaming over arbitrary blocks, merged in any order, equals sorting.
        #[test]
        fn streamed_equals_sorted(
            n in 1usize..60,
            k in 1usize..8,
            split in 1usize..17,
            seed in any::<u64>(),
        ) {
            // Few distinct values so that ties are frequent.
            let mut s = seed;
            let scores: Vec<f32> = (0..2 * n).map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) % 7) as f32 - 3.0
            }).collect();
            let mut acc = TopK::new(2, k).unwrap();
            let blocks: Vec<usize> = (0..n).step_by(split).collect();
            for &b in blocks.iter().rev() {
                let e = (b + split).min(n);
                let mut part = TopK::new(2, k).unwrap();
                for q in 0..2 {
                    part.offer_row(q, b, &scores[q * n + b..q * n + e]);
                }
                acc.merge(0, &part).unwrap();
            }
            prop_assert_eq!(acc.finish(), TopKRows::from_full(&scores, n, k));
        }

        /// Finished lists of contiguous shards (shorter than k when a shard is), merged in
        /// any order, equal sorting the whole matrix.
        #[test]
        fn merged_shard_lists_equal_sorted(
            n in 1usize..60,
            k in 1usize..8,
            shards in 1usize..20,
            seed in any::<u64>(),
        ) {
            let shards = shards.min(n);
            let mut s = seed;
            let scores: Vec<f32> = (0..2 * n).map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) % 7) as f32 - 3.0
            }).collect();
            let mut parts: Vec<TopKRows> = (0..shards).map(|i| {
                let (b, e) = (i * n / shards, (i + 1) * n / shards);
                let mut part = TopK::new(2, k.min(e - b)).unwrap();
                for q in 0..2 {
                    part.offer_row(q, b, &scores[q * n + b..q * n + e]);
                }
                part.finish()
            }).collect();
            parts.rotate_left((seed % shards as u64) as usize);
            parts.reverse();
            let mut acc = TopK::new(2, k.min(n)).unwrap();
            for p in &parts {
                acc.merge_rows(0, p).unwrap();
            }
            prop_assert_eq!(acc.finish(), TopKRows::from_full(&scores, n, k.min(n)));
        }
    }
}
