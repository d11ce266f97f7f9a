//! The one ranking order of infl: higher score first, ties to the lower index.
//!
//! Scores are compared with `total_cmp` after folding `-0.0` into `0.0`, so the order is
//! total (a sort on user data cannot panic or depend on the sort algorithm) and `-0.0` ties
//! with `0.0`. Top-k lists, suspect rankings and the evaluation metrics all use it.

use std::cmp::Ordering;

/// A score type: `f32` or `f64`.
pub trait Score: Copy {
    /// Compares two scores in the total order, `-0.0` equal to `0.0`.
    fn total(self, other: Self) -> Ordering;

    /// An integer whose order is [`Score::total`]'s (for sorting by key).
    fn key(self) -> i64;
}

/// `total_cmp`'s key of `x + 0.0` (adding +0.0 turns -0.0 into +0.0 and leaves every other
/// value unchanged): the bits, with the magnitude flipped for negative values.
#[inline]
fn total_key(x: f64) -> i64 {
    let bits = (x + 0.0).to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

impl Score for f32 {
    #[inline]
    fn total(self, other: Self) -> Ordering {
        (self + 0.0).total_cmp(&(other + 0.0))
    }

    #[inline]
    fn key(self) -> i64 {
        // f32 → f64 is exact and keeps the order (NaNs stay above or below every number).
        total_key(f64::from(self))
    }
}

impl Score for f64 {
    #[inline]
    fn total(self, other: Self) -> Ordering {
        (self + 0.0).total_cmp(&(other + 0.0))
    }

    #[inline]
    fn key(self) -> i64 {
        total_key(self)
    }
}

/// Which end of the scale ranks first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Highest score first (proponents, suspects).
    Descending,
    /// Lowest score first (opponents).
    Ascending,
}

/// Orders `(score, index)` pairs: by score in `direction`, then by the lower index.
#[inline]
pub fn compare<S: Score>(direction: Direction, a: (S, usize), b: (S, usize)) -> Ordering {
    let by_score = match direction {
        Direction::Descending => b.0.total(a.0),
        Direction::Ascending => a.0.total(b.0),
    };
    by_score.then(a.1.cmp(&b.1))
}

/// Indices of `scores`, highest score first, ties to the lower index: sorted as
/// `(!key, index)` pairs ([`Score::key`]; `!` reverses an `i64`'s order without overflow),
/// a total order on distinct indices, so the unstable sort gives the one answer.
pub fn rank_descending<S: Score>(scores: &[S]) -> Vec<usize> {
    let mut keyed: Vec<(i64, usize)> = (scores.iter().enumerate())
        .map(|(i, s)| (!s.key(), i))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_to_lower_index_and_signed_zeros_tie() {
        let s = [1.0f32, 3.0, -0.0, 3.0, 0.0, f32::NEG_INFINITY];
        assert_eq!(rank_descending(&s), vec![1, 3, 0, 2, 4, 5]);
    }

    #[test]
    fn the_keyed_sort_is_compare_s_order() {
        let mut s: Vec<f64> = vec![0.0, -0.0, 1.0, -1.0, f64::INFINITY, f64::NEG_INFINITY];
        s.extend([
            f64::NAN,
            -f64::NAN,
            1e-300,
            -1e-300,
            2.5,
            2.5,
            -7.0,
            f64::MIN_POSITIVE,
        ]);
        s.extend((0..200).map(|i| ((i * 7919 % 101) as f64 - 50.0) / 3.0));
        let mut want: Vec<usize> = (0..s.len()).collect();
        want.sort_by(|&a, &b| compare(Direction::Descending, (s[a], a), (s[b], b)));
        assert_eq!(rank_descending(&s), want);
        let f: Vec<f32> = s.iter().map(|&x| x as f32).collect();
        want.sort_by(|&a, &b| compare(Direction::Descending, (f[a], a), (f[b], b)));
        assert_eq!(rank_descending(&f), want);
    }

    #[test]
    fn nan_does_not_panic_and_is_placed_consistently() {
        let s = [1.0f64, f64::NAN, 2.0, f64::NAN];
        let r = rank_descending(&s);
        assert_eq!(r, vec![1, 3, 2, 0]);
    }
}
