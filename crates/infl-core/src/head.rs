//! The classification head's arithmetic, shared by the estimators and the trainer:
//! argmax predictions and the softmax cross-entropy gradient `softmax(z) − onehot(y)`.

/// Index of the largest value, the first one on ties (as `numpy.argmax`); 0 when empty.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = j;
        }
    }
    best
}

/// Replaces logits by their softmax, shifted by the row maximum so that large logits do
/// not overflow.
pub fn softmax_in_place(row: &mut [f32]) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0f32;
    for x in row.iter_mut() {
        *x = (*x - m).exp();
        s += *x;
    }
    for x in row.iter_mut() {
        *x /= s;
    }
}

/// Replaces logits by the gradient of the summed cross-entropy, `softmax(z) − onehot(y)`,
/// and returns the example's loss `−ln p_y`. `label` must be a valid column.
pub fn cross_entropy_gradient_in_place(row: &mut [f32], label: usize) -> f32 {
    softmax_in_place(row);
    let loss = -row[label].ln();
    row[label] -= 1.0;
    loss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn gradient_rows_sum_to_zero_even_for_huge_logits() {
        let mut row = [1e30f32, -1e30, 0.0];
        cross_entropy_gradient_in_place(&mut row, 1);
        assert_eq!(row, [1.0, -1.0, 0.0]);
        let mut row = [0.5f32, 0.5];
        cross_entropy_gradient_in_place(&mut row, 0);
        assert_eq!(row, [-0.5, 0.5]);
    }
}
