//! New buffers that the code about to fill them writes whole, so they are never zeroed first.
//!
//! A spiking CNN's batch matrices run to tens of megabytes (the first LIF layer of
//! networks/fashion_scnn.ron holds 32 x 28 x 28 values per sample and step), far beyond the
//! caches: zeroing one costs a pass over memory as long as the pass that then overwrites it. The
//! buffers here start uninitialised, typed `MaybeUninit` until their writer is done, so no value
//! is read before it is written.

use std::mem::MaybeUninit;

use nalgebra::DMatrix;

use crate::nn::Real;

/// `n` slots, none written yet.
pub fn slots<T>(n: usize) -> Vec<MaybeUninit<T>> {
    let mut data = Vec::with_capacity(n);
    // SAFETY: a MaybeUninit needs no initialisation, and the capacity is n.
    unsafe { data.set_len(n) };
    data
}

/// The values of `slots`, every one of which has been written.
///
/// # Safety
/// Every element of `slots` must have been written.
pub unsafe fn written_slots<T>(slots: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut slots = std::mem::ManuallyDrop::new(slots);
    let (ptr, len, capacity) = (slots.as_mut_ptr(), slots.len(), slots.capacity());
    // SAFETY: MaybeUninit<T> has T's size and alignment, the allocation came from a Vec of
    // them, and the caller guarantees that all len elements are initialised.
    unsafe { Vec::from_raw_parts(ptr.cast::<T>(), len, capacity) }
}

/// The `rows x cols` matrix (column-major) of `slots`, every one of which has been written.
///
/// # Safety
/// Every element of `slots` must have been written.
pub unsafe fn written_matrix<F: Real>(rows: usize, cols: usize, slots: Vec<MaybeUninit<F>>) -> DMatrix<F> {
    assert_eq!(slots.len(), rows * cols, "slots do not match the matrix");
    // SAFETY: the caller guarantees every slot written.
    DMatrix::from_vec(rows, cols, unsafe { written_slots(slots) })
}

/// A new `rows x cols` matrix (column-major) whose every element `write` sets through the
/// pointer it is given, none read before: for kernels that address their output by pointer
/// (from several threads, or through a matrix product).
///
/// # Safety
/// `write` must write all `rows cols` elements, within them.
pub unsafe fn written<F: Real>(rows: usize, cols: usize, write: impl FnOnce(*mut F)) -> DMatrix<F> {
    let mut data = slots(rows * cols);
    write(data.as_mut_ptr().cast::<F>());
    // SAFETY: the caller's `write` set all rows cols elements.
    unsafe { written_matrix(rows, cols, data) }
}

/// `slots` as the values they hold, to read back or add to.
///
/// # Safety
/// Every element of `slots` must have been written.
pub unsafe fn assume_written<F>(slots: &mut [MaybeUninit<F>]) -> &mut [F] {
    // SAFETY: MaybeUninit<F> has F's layout, and the caller guarantees the values written.
    unsafe { &mut *(slots as *mut [MaybeUninit<F>] as *mut [F]) }
}

/// `values` as slots to write over, for a writer that takes slots.
///
/// # Safety
/// Every slot must hold a value again when the slots are let go: the writer must not leave an
/// uninitialised one behind, since `values` are read as values afterwards.
pub unsafe fn as_slots<F>(values: &mut [F]) -> &mut [MaybeUninit<F>] {
    // SAFETY: MaybeUninit<F> has F's layout; the caller keeps every slot initialised.
    unsafe { &mut *(values as *mut [F] as *mut [MaybeUninit<F>]) }
}

/// Zeroes `slots` and hands them back as values: for the rarer paths that add to or read back
/// what they write.
pub fn zeroed<F: Real>(slots: &mut [MaybeUninit<F>]) -> &mut [F] {
    slots.iter_mut().for_each(|s| *s = MaybeUninit::new(F::zero()));
    // SAFETY: every element was just written.
    unsafe { assume_written(slots) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_slots_hold_what_was_written() {
        let mut v = slots(1000);
        v.iter_mut().enumerate().for_each(|(i, x)| *x = MaybeUninit::new(i as f32));
        // SAFETY: all 1000 slots were written.
        let v: Vec<f32> = unsafe { written_slots(v) };
        assert_eq!(v.len(), 1000);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
        // SAFETY: the closure sets all 12 elements through the pointer.
        let m: DMatrix<f64> = unsafe { written(3, 4, |p: *mut f64| (0..12).for_each(|k| p.add(k).write(k as f64))) };
        assert_eq!(m[(2, 3)], 11.0);
        let mut s = slots::<f64>(5);
        assert_eq!(zeroed(&mut s), &[0.0; 5]);
    }
}
