//! Which retrainings an evaluation runs: LDS subsets and leave-one-out removals, seeded.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// `subsets` random subsets of `round(fraction · n)` of `n` training examples (sorted row
/// indices), drawn by a ChaCha8 generator seeded by `seed` (a partial Fisher–Yates shuffle
/// per subset). `fraction` must be in (0, 1), `subsets` at least 2 (a correlation needs
/// two points), and each subset must keep at least one example and leave one out.
pub fn lds_subsets(n: usize, subsets: usize, fraction: f64, seed: u64) -> Result<Vec<Vec<usize>>> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::config(
            "fraction",
            format!("expected α in (0, 1), found {fraction}"),
        ));
    }
    if subsets < 2 {
        return Err(Error::config(
            "subsets",
            format!("expected M >= 2 (Spearman's correlation needs two points), found {subsets}"),
        ));
    }
    let size = (fraction * n as f64).round() as usize;
    if size == 0 || size >= n {
        return Err(Error::config(
            "fraction",
            format!(
                "α = {fraction} of {n} training examples keeps {size}; expected 1 to {}",
                n.saturating_sub(1)
            ),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows: Vec<usize> = (0..n).collect();
    Ok((0..subsets)
        .map(|_| {
            for i in 0..size {
                let j = rng.random_range(i..n);
                rows.swap(i, j);
            }
            let mut s = rows[..size].to_vec();
            s.sort_unstable();
            s
        })
        .collect())
}

/// The training examples to leave out one at a time: the `top` largest by `|score|` for an
/// anchor test example (Koh & Liang's choice; ties by lower index), then `random` others
/// drawn uniformly without replacement by a generator seeded by `seed`. Refuses more than
/// the training set holds.
pub fn loo_removals(
    anchor_scores: &[f32],
    top: usize,
    random: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let n = anchor_scores.len();
    if top + random > n || top + random < 2 {
        return Err(Error::config(
            "removals",
            format!(
                "{top} top + {random} random of {n} training examples; expected 2 to {n} in all"
            ),
        ));
    }
    let magnitude: Vec<f64> = anchor_scores.iter().map(|s| f64::from(s.abs())).collect();
    let order = infl_core::rank_descending(&magnitude);
    let mut chosen: Vec<usize> = order[..top].to_vec();
    let mut rest: Vec<usize> = order[top..].to_vec();
    rest.sort_unstable();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in 0..random {
        let j = rng.random_range(i..rest.len());
        rest.swap(i, j);
        chosen.push(rest[i]);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_seeded_sorted_and_sized() {
        let a = lds_subsets(100, 5, 0.3, 7).unwrap();
        assert_eq!(a, lds_subsets(100, 5, 0.3, 7).unwrap());
        assert_ne!(a, lds_subsets(100, 5, 0.3, 8).unwrap());
        for s in &a {
            assert_eq!(s.len(), 30);
            assert!(s.windows(2).all(|w| w[0] < w[1]));
        }
        assert_ne!(a[0], a[1]);
        for bad in [0.0, 1.0, -0.5, f64::NAN, 1.5] {
            assert!(lds_subsets(100, 5, bad, 0).is_err(), "{bad}");
        }
        assert!(
            lds_subsets(100, 1, 0.5, 0)
                .unwrap_err()
                .to_string()
                .contains("M >= 2")
        );
        assert!(lds_subsets(3, 2, 0.01, 0).is_err());
    }

    #[test]
    fn removals_take_the_largest_magnitudes_then_random_others() {
        let s = [0.1, -5.0, 3.0, 0.0, 0.2, -0.3, 4.0, 0.05];
        let r = loo_removals(&s, 3, 2, 1).unwrap();
        assert_eq!(&r[..3], &[1, 6, 2]);
        assert_eq!(r.len(), 5);
        assert!(r[3..].iter().all(|i| ![1, 6, 2].contains(i)));
        assert_ne!(r[3], r[4]);
        assert_eq!(r, loo_removals(&s, 3, 2, 1).unwrap());
        assert!(loo_removals(&s, 5, 4, 0).is_err());
    }
}
