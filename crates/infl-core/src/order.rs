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
}

impl Score for f32 {
    #[inline]
    fn total(self, other: Self) -> Ordering {
        // Adding +0.0 turns -0.0 into +0.0 and leaves every other value unchanged.
        (self + 0.0).total_cmp(&(other + 0.0))
    }
}

impl Score for f64 {
    #[inline]
    fn total(self, other: Self) -> Ordering {
        (self + 0.0).total_cmp(&(other + 0.0))
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

/// Indices of `scores`, highest score first, ties to the lower index (a total order on
/// distinct indices, so an unstable sort gives the one answer).
pub fn rank_descending<S: Score>(scores: &[S]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| compare(Direction::Descending, (scores[a], a), (scores[b], b)));
    order
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
    fn nan_does_not_panic_and_is_placed_consistently() {
        let s = [1.0f64, f64::NAN, 2.0, f64::NAN];
        let r = rank_descending(&s);
        assert_eq!(r, vec![1, 3, 2, 0]);
    }
}
