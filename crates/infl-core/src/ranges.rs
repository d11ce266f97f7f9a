//! The one way infl cuts `0..len` into consecutive blocks: CPU tiles, GPU blocks and the
//! engine's training chunks all use [`ranges`], so their boundaries agree by construction.

use std::ops::Range;

/// Consecutive blocks `[0, size), [size, 2·size), …` covering `0..len`; the last one may be
/// shorter. A `size` of 0 is treated as 1. Empty when `len` is 0.
pub fn ranges(len: usize, size: usize) -> impl Iterator<Item = Range<usize>> + Clone {
    let size = size.max(1);
    (0..len.div_ceil(size)).map(move |b| b * size..((b + 1) * size).min(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn covers_with_a_short_tail() {
        let r: Vec<_> = ranges(10, 4).collect();
        assert_eq!(r, vec![0..4, 4..8, 8..10]);
        assert_eq!(ranges(0, 4).count(), 0);
        assert_eq!(ranges(3, 0).count(), 3);
    }

    proptest! {
        #[test]
        fn blocks_tile_the_range_in_order(len in 0usize..500, size in 0usize..40) {
            let blocks: Vec<_> = ranges(len, size).collect();
            let mut next = 0;
            for b in &blocks {
                prop_assert_eq!(b.start, next);
                prop_assert!(!b.is_empty() && b.len() <= size.max(1));
                next = b.end;
            }
            prop_assert_eq!(next, len);
        }
    }
}
