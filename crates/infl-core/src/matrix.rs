//! Dense row-major `f32` matrices: owned or backed by any storage (e.g. a memory map).

use std::fmt;
use std::sync::Arc;

use crate::{Error, Result};

/// Read-only `f32` storage behind a [`Matrix`]: a `Vec<f32>` or a memory-mapped file.
pub trait F32Storage: Send + Sync {
    /// The elements.
    fn as_f32(&self) -> &[f32];
}

impl F32Storage for Vec<f32> {
    fn as_f32(&self) -> &[f32] {
        self
    }
}

/// A dense row-major `[rows, cols]` matrix of `f32`, cheap to clone (shared storage).
#[derive(Clone)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    storage: Arc<dyn F32Storage>,
}

impl fmt::Debug for Matrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Matrix {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows && self.cols == other.cols && self.data() == other.data()
    }
}

impl Matrix {
    /// Wraps row-major data; fails unless `data.len() == rows * cols`.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        Self::from_storage(rows, cols, Arc::new(data))
    }

    /// Wraps any storage; fails unless it holds exactly `rows * cols` elements.
    pub fn from_storage(rows: usize, cols: usize, storage: Arc<dyn F32Storage>) -> Result<Self> {
        let len = storage.as_f32().len();
        if rows.checked_mul(cols) != Some(len) {
            return Err(Error::shape(
                "Matrix::from_storage",
                format!(
                    "{rows} x {cols} needs {} elements, got {len}",
                    rows as u128 * cols as u128
                ),
            ));
        }
        Ok(Self {
            rows,
            cols,
            storage,
        })
    }

    /// A `[rows, cols]` matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            storage: Arc::new(vec![0.0f32; rows * cols]),
        }
    }

    /// Builds a matrix from a function of (row, col).
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f32) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                data.push(f(r, c));
            }
        }
        Self {
            rows,
            cols,
            storage: Arc::new(data),
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The row-major elements.
    pub fn data(&self) -> &[f32] {
        self.storage.as_f32()
    }

    /// A borrowed view of the whole matrix.
    pub fn view(&self) -> MatRef<'_> {
        MatRef {
            data: self.data(),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Copies the data into a `Vec`.
    pub fn to_vec(&self) -> Vec<f32> {
        self.data().to_vec()
    }

    /// Gathers the given rows into a new matrix (in the given order).
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        let mut data = Vec::with_capacity(rows.len() * self.cols);
        for &r in rows {
            data.extend_from_slice(self.view().row(r));
        }
        Self {
            rows: rows.len(),
            cols: self.cols,
            storage: Arc::new(data),
        }
    }
}

/// A borrowed row-major `[rows, cols]` matrix whose rows are contiguous.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> MatRef<'a> {
    /// Wraps a row-major slice; fails unless `data.len() == rows * cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::shape(
                "MatRef::new",
                format!(
                    "{rows} x {cols} needs {} elements, got {}",
                    rows * cols,
                    data.len()
                ),
            ));
        }
        Ok(Self { data, rows, cols })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The row-major elements.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &'a [f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// The rows `start..end` (a contiguous block).
    pub fn slice_rows(&self, start: usize, end: usize) -> MatRef<'a> {
        assert!(start <= end && end <= self.rows, "row range out of bounds");
        MatRef {
            data: &self.data[start * self.cols..end * self.cols],
            rows: end - start,
            cols: self.cols,
        }
    }

    /// Squared Euclidean norm of every row.
    pub fn row_sq_norms(&self) -> Vec<f32> {
        (0..self.rows)
            .map(|r| self.row(r).iter().map(|x| x * x).sum())
            .collect()
    }

    /// Index of the first non-finite element, if any.
    pub fn first_non_finite(&self) -> Option<(usize, usize)> {
        let i = self.data.iter().position(|x| !x.is_finite())?;
        Some((i / self.cols.max(1), i % self.cols.max(1)))
    }

    /// Copies into an owned [`Matrix`].
    pub fn to_matrix(&self) -> Matrix {
        Matrix {
            rows: self.rows,
            cols: self.cols,
            storage: Arc::new(self.data.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        assert!(Matrix::from_vec(2, 3, vec![0.0; 5]).is_err());
        let m = Matrix::from_vec(2, 3, (0..6).map(|x| x as f32).collect()).unwrap();
        assert_eq!(m.view().row(1), &[3.0, 4.0, 5.0]);
        assert_eq!(m.view().slice_rows(1, 2).data(), &[3.0, 4.0, 5.0]);
        assert_eq!(
            m.select_rows(&[1, 0]).data(),
            &[3.0, 4.0, 5.0, 0.0, 1.0, 2.0]
        );
        assert_eq!(m.view().row_sq_norms(), vec![5.0, 50.0]);
    }

    #[test]
    fn finds_non_finite() {
        let m = Matrix::from_vec(2, 2, vec![0.0, 1.0, f32::NAN, 2.0]).unwrap();
        assert_eq!(m.view().first_non_finite(), Some((1, 0)));
        assert_eq!(Matrix::zeros(3, 3).view().first_non_finite(), None);
    }
}
