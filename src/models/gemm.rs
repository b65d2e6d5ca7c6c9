//! Matrix products for layered models, on `matrixmultiply` (the kernel nalgebra itself calls),
//! which takes arbitrary strides: a transposed operand is a view, never a copy.
//!
//! Products run in parallel over fixed blocks of the output's columns. The blocks do not depend
//! on the number of threads and every output element is computed by one block, so results are
//! identical with 1 or 16 threads.

use rayon::prelude::*;

use crate::train::net::Real;

/// Float types with a matrix-multiply kernel.
pub trait Gemm: Real {
    /// C = alpha A B + beta C for an m x k A and a k x n B, all given by pointer and strides.
    ///
    /// # Safety
    /// The pointers with their strides must address valid, non-overlapping matrices of the
    /// stated sizes; C must be writable.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: (*const Self, isize, isize),
        b: (*const Self, isize, isize),
        beta: Self,
        c: (*mut Self, isize, isize),
    );
}

impl Gemm for f32 {
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: (*const f32, isize, isize),
        b: (*const f32, isize, isize),
        beta: f32,
        c: (*mut f32, isize, isize),
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::sgemm(m, k, n, alpha, a.0, a.1, a.2, b.0, b.1, b.2, beta, c.0, c.1, c.2) }
    }
}

impl Gemm for f64 {
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: f64,
        a: (*const f64, isize, isize),
        b: (*const f64, isize, isize),
        beta: f64,
        c: (*mut f64, isize, isize),
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::dgemm(m, k, n, alpha, a.0, a.1, a.2, b.0, b.1, b.2, beta, c.0, c.1, c.2) }
    }
}

/// A read-only column-major matrix, possibly read transposed.
#[derive(Clone, Copy)]
pub struct View<'a, F> {
    data: &'a [F],
    rows: usize,
    cols: usize,
    /// Strides of the viewed (possibly transposed) matrix.
    row_stride: usize,
    col_stride: usize,
}

impl<'a, F: Gemm> View<'a, F> {
    /// The column-major `rows x cols` matrix stored in `data`.
    pub fn new(data: &'a [F], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data does not match its shape");
        View { data, rows, cols, row_stride: 1, col_stride: rows }
    }

    pub fn t(self) -> Self {
        View { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Columns `start..end` of the view.
    fn columns(self, start: usize, end: usize) -> Self {
        let offset = start * self.col_stride;
        let data = if end > start { &self.data[offset..] } else { &self.data[..0] };
        View { data, cols: end - start, ..self }
    }

    /// Index one past the last element the view touches, relative to its start.
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
        }
    }
}

/// c (m x n, column-major) = a b + beta c, sequentially.
pub fn matmul<F: Gemm>(c: &mut [F], a: View<F>, b: View<F>, beta: F) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert_eq!(c.len(), m * n, "output does not match the product's shape");
    assert!(a.extent() <= a.data.len() && b.extent() <= b.data.len(), "view runs past its data");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.iter_mut().for_each(|x| *x *= beta);
        return;
    }
    // SAFETY: the asserts above keep every access inside the slices; c is a distinct &mut.
    unsafe {
        F::gemm_raw(
            m,
            k,
            n,
            F::one(),
            (a.data.as_ptr(), a.row_stride as isize, a.col_stride as isize),
            (b.data.as_ptr(), b.row_stride as isize, b.col_stride as isize),
            beta,
            (c.as_mut_ptr(), 1, m as isize),
        );
    }
}

/// As [`matmul`], in parallel over blocks of `block` output columns.
pub fn par_matmul<F: Gemm>(c: &mut [F], a: View<F>, b: View<F>, beta: F, block: usize) {
    let m = a.rows;
    assert_eq!(c.len(), m * b.cols, "output does not match the product's shape");
    if m == 0 {
        return;
    }
    let block = block.max(1);
    c.par_chunks_mut(m * block).enumerate().for_each(|(j, c)| {
        let start = j * block;
        matmul(c, a, b.columns(start, start + c.len() / m), beta);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DMatrix;

    #[test]
    fn products_with_transposed_views_match_nalgebra() {
        let a = DMatrix::<f64>::from_fn(5, 3, |i, j| (i * 3 + j) as f64 * 0.5 - 2.0);
        let b = DMatrix::<f64>::from_fn(5, 4, |i, j| (i + 2 * j) as f64 - 3.0);
        let mut c = vec![0.0; 3 * 4];
        par_matmul(&mut c, View::new(a.as_slice(), 5, 3).t(), View::new(b.as_slice(), 5, 4), 0.0, 3);
        let expected = a.transpose() * &b;
        assert_eq!(c.as_slice(), expected.as_slice());
        let mut d = vec![1.0; 5 * 5];
        matmul(&mut d, View::new(a.as_slice(), 5, 3), View::new(a.as_slice(), 5, 3).t(), 1.0);
        let expected = &a * a.transpose() + DMatrix::from_element(5, 5, 1.0);
        assert_eq!(d.as_slice(), expected.as_slice());
    }
}
