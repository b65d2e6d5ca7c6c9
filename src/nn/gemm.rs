//! Matrix products for layered models, on `matrixmultiply` (the kernel nalgebra itself calls),
//! which takes arbitrary strides: a transposed operand is a view, never a copy.
//!
//! Products run in parallel over fixed pieces of the output: bands of rows when the output is
//! taller than wide, else bands of columns. The pieces depend only on the shapes, never on the
//! number of threads, and every output element is computed by one piece with the same sum over
//! the inner dimension, so results are identical with 1 or 16 threads (and whatever the split).
//!
//! Why the split follows the shape: the kernel copies ("packs") both operands into its own
//! layout on every call. A dense layer's forward product is a 2048 x 2048 weight matrix times a
//! batch of 128 columns; cut into column bands, each band re-packs the whole weight matrix for
//! a few multiply-adds per element, which cost as much as the arithmetic in a profile. Cut into
//! row bands, every weight is packed once and only the small batch is packed again per band.

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::data::spike_trains::SpikeTrains;
use crate::nn::Real;
use crate::nn::conv::ConvGeometry;
use crate::nn::conv_tiles::{self, SpikeBytes};
use crate::nn::fresh::written;
use crate::nn::tiles;

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

    /// The currents `w x + bias` of steps `steps` of a first layer's input spikes by a tile
    /// multiply ([`tiles`]), where this type and the CPU have one (`cache` keeps `w` packed for
    /// it); None elsewhere.
    fn spike_currents(
        _w: &DMatrix<Self>,
        _bias: Option<&DMatrix<Self>>,
        _trains: &SpikeTrains,
        _steps: (usize, usize),
        _cache: &tiles::TileCache,
    ) -> Option<DMatrix<Self>> {
        None
    }

    /// Packs `w` into `cache` for [`Gemm::spike_currents`] now, where it runs.
    fn refresh_tiles(_w: &DMatrix<Self>, _cache: &tiles::TileCache) {}

    /// A convolution of spikes `x` by a tile multiply ([`conv_tiles`]), where this type, the
    /// CPU and the geometry allow it: the output and the spikes kept for the backward pass;
    /// None elsewhere.
    fn spike_convolution(
        _g: &ConvGeometry,
        _w: &DMatrix<Self>,
        _bias: Option<&DMatrix<Self>>,
        _x: &DMatrix<Self>,
    ) -> Option<(DMatrix<Self>, SpikeBytes)> {
        None
    }

    /// The gradients of the filters, bias and input of a [`Gemm::spike_convolution`].
    fn spike_convolution_backward(
        _g: &ConvGeometry,
        _w: &DMatrix<Self>,
        _has_bias: bool,
        _spikes: &SpikeBytes,
        _dy: &DMatrix<Self>,
        _input_grad: bool,
    ) -> (DMatrix<Self>, Option<DMatrix<Self>>, DMatrix<Self>) {
        unreachable!("spikes as bytes are kept only by a type with a tile convolution")
    }
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

    fn spike_currents(
        w: &DMatrix<f32>,
        bias: Option<&DMatrix<f32>>,
        trains: &SpikeTrains,
        steps: (usize, usize),
        cache: &tiles::TileCache,
    ) -> Option<DMatrix<f32>> {
        tiles::spike_currents(w, bias.map(DMatrix::as_slice), trains, steps, cache)
    }

    fn refresh_tiles(w: &DMatrix<f32>, cache: &tiles::TileCache) {
        cache.refresh(w)
    }

    fn spike_convolution(
        g: &ConvGeometry,
        w: &DMatrix<f32>,
        bias: Option<&DMatrix<f32>>,
        x: &DMatrix<f32>,
    ) -> Option<(DMatrix<f32>, SpikeBytes)> {
        conv_tiles::forward(g, w, bias, x)
    }

    fn spike_convolution_backward(
        g: &ConvGeometry,
        w: &DMatrix<f32>,
        has_bias: bool,
        spikes: &SpikeBytes,
        dy: &DMatrix<f32>,
        input_grad: bool,
    ) -> (DMatrix<f32>, Option<DMatrix<f32>>, DMatrix<f32>) {
        conv_tiles::backward(g, w, has_bias, spikes, dy, input_grad)
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

    /// Rows `start..end` of the view.
    pub fn rows_of(self, start: usize, end: usize) -> Self {
        let offset = start * self.row_stride;
        let data = if end > start && self.cols > 0 { &self.data[offset..] } else { &self.data[..0] };
        View { data, rows: end - start, ..self }
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
    let (m, n) = (a.rows, b.cols);
    assert_eq!(c.len(), m * n, "output does not match the product's shape");
    // SAFETY: c holds the m x n output with column stride m, and is a distinct &mut.
    unsafe { product_into(c.as_mut_ptr(), m, a, b, beta) }
}

/// The product a b + beta c written through `c`, an `a.rows x b.cols` matrix with row stride 1
/// and column stride `c_col_stride`.
///
/// # Safety
/// `c` with that stride must address writable memory that nothing else touches meanwhile; with
/// beta 0 it is written without being read, so it may be uninitialised.
pub unsafe fn product_into<F: Gemm>(c: *mut F, c_col_stride: usize, a: View<F>, b: View<F>, beta: F) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert!(a.extent() <= a.data.len() && b.extent() <= b.data.len(), "view runs past its data");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for j in 0..n {
            for i in 0..m {
                // SAFETY: (i, j) lies inside the output the caller vouches for.
                unsafe {
                    let at = c.add(i + j * c_col_stride);
                    at.write(if beta == F::zero() { F::zero() } else { at.read() * beta });
                }
            }
        }
        return;
    }
    // SAFETY: the asserts above keep every read inside the views; the caller vouches for c.
    unsafe {
        F::gemm_raw(
            m,
            k,
            n,
            F::one(),
            (a.data.as_ptr(), a.row_stride as isize, a.col_stride as isize),
            (b.data.as_ptr(), b.row_stride as isize, b.col_stride as isize),
            beta,
            (c, 1, c_col_stride as isize),
        );
    }
}

/// Rows or columns of the output per parallel piece (a multiple of the kernel's 16 x 16 tile).
const PIECE: usize = 256;

/// The output pointer, shared by pieces that write disjoint parts of it.
#[derive(Clone, Copy)]
struct Output<F>(*mut F);
// SAFETY: each piece writes only its own rows or columns (see par_matmul).
unsafe impl<F> Send for Output<F> {}
unsafe impl<F> Sync for Output<F> {}

impl<F> Output<F> {
    /// The address `offset` elements in (a method, so that closures capture the whole wrapper
    /// and not its raw pointer alone).
    ///
    /// # Safety
    /// `offset` must stay inside the output.
    unsafe fn at(self, offset: usize) -> *mut F {
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.0.add(offset) }
    }
}

/// As [`matmul`], in parallel over pieces of [`PIECE`] rows of the output when it has at least
/// as many rows as columns, else of [`PIECE`] columns.
pub fn par_matmul<F: Gemm>(c: &mut [F], a: View<F>, b: View<F>, beta: F) {
    assert_eq!(c.len(), a.rows * b.cols, "output does not match the product's shape");
    // SAFETY: c holds the output, and is a distinct &mut.
    unsafe { par_product_into(c.as_mut_ptr(), a, b, beta) }
}

/// [`par_matmul`] through a pointer to the `a.rows x b.cols` output.
///
/// # Safety
/// As [`product_into`], with column stride `a.rows`.
unsafe fn par_product_into<F: Gemm>(c: *mut F, a: View<F>, b: View<F>, beta: F) {
    let (m, n) = (a.rows, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    let out = Output(c);
    if m >= n {
        (0..m.div_ceil(PIECE)).into_par_iter().for_each(|p| {
            let rows = p * PIECE..(m.min((p + 1) * PIECE));
            // SAFETY: rows of distinct pieces do not overlap, and the output outlives the loop.
            unsafe { product_into(out.at(rows.start), m, a.rows_of(rows.start, rows.end), b, beta) };
        });
    } else {
        (0..n.div_ceil(PIECE)).into_par_iter().for_each(|p| {
            let columns = p * PIECE..(n.min((p + 1) * PIECE));
            // SAFETY: as above, for columns.
            unsafe { product_into(out.at(columns.start * m), m, a, b.columns(columns.start, columns.end), beta) };
        });
    }
}

/// The product a b as a new matrix, in parallel as [`par_matmul`]: with beta 0 the output is
/// written without being read, so it is never zeroed.
pub fn product<F: Gemm>(a: View<F>, b: View<F>) -> DMatrix<F> {
    // SAFETY: the product writes every element of its new a.rows x b.cols output.
    unsafe { written(a.rows, b.cols, |c| par_product_into(c, a, b, F::zero())) }
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
        par_matmul(&mut c, View::new(a.as_slice(), 5, 3).t(), View::new(b.as_slice(), 5, 4), 0.0);
        let expected = a.transpose() * &b;
        assert_eq!(c.as_slice(), expected.as_slice());
        let mut d = vec![1.0; 5 * 5];
        matmul(&mut d, View::new(a.as_slice(), 5, 3), View::new(a.as_slice(), 5, 3).t(), 1.0);
        let expected = &a * a.transpose() + DMatrix::from_element(5, 5, 1.0);
        assert_eq!(d.as_slice(), expected.as_slice());
    }

    #[test]
    fn pieces_of_tall_and_wide_products_equal_one_whole_product() {
        // Shapes cut into several pieces of rows (tall) or of columns (wide), one piece ragged.
        for (m, k, n) in [(600, 300, 40), (40, 300, 600), (257, 513, 257)] {
            let a = DMatrix::<f32>::from_fn(m, k, |i, j| ((i * 7 + j * 13) % 29) as f32 * 0.01 - 0.14);
            let b = DMatrix::<f32>::from_fn(k, n, |i, j| ((i * 11 + j * 3) % 31) as f32 * 0.02 - 0.3);
            let mut whole = vec![0.0; m * n];
            matmul(&mut whole, View::new(a.as_slice(), m, k), View::new(b.as_slice(), k, n), 0.0);
            let mut pieces = vec![1.0; m * n];
            par_matmul(&mut pieces, View::new(a.as_slice(), m, k), View::new(b.as_slice(), k, n), 0.0);
            assert_eq!(pieces, whole, "{m} x {k} x {n}");
            // Transposed operands, as the backward passes read them.
            let (at, bt) = (a.transpose(), b.transpose());
            par_matmul(&mut pieces, View::new(at.as_slice(), k, m).t(), View::new(bt.as_slice(), n, k).t(), 0.0);
            assert_eq!(pieces, whole, "{m} x {k} x {n}, transposed views");
        }
    }
}
