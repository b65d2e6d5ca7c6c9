//! The scalar types the models run in: f32 for training, f64 for gradient checks.

use std::mem::MaybeUninit;

use nalgebra::RealField;

use crate::surrogate::DerivativeTable;

/// The float types the trainer runs in: f32 for training, f64 for gradient checks.
pub trait Real: RealField + Copy + Send + Sync + 'static {
    fn of(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// self * a + b in one rounding (a fused multiply-add instruction where the CPU has one).
    fn fma(self, a: Self, b: Self) -> Self;
    /// Replaces every x of `xs` by the tabulated surrogate derivative at x, in this type's
    /// arithmetic.
    fn surrogate_derivatives(table: &DerivativeTable, xs: &mut [Self]);
    /// `xs` as f32 values where this type is f32, else None: the way into kernels written for
    /// f32 lanes.
    fn as_f32(xs: &[Self]) -> Option<&[f32]>;
    /// [`Real::as_f32`] for slots still to be written.
    fn as_f32_slots(xs: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<f32>]>;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn fma(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
    fn surrogate_derivatives(table: &DerivativeTable, xs: &mut [Self]) {
        table.derivatives_f32(xs)
    }
    fn as_f32(xs: &[Self]) -> Option<&[f32]> {
        Some(xs)
    }
    fn as_f32_slots(xs: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<f32>]> {
        Some(xs)
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn fma(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
    /// f64 is the type gradients are checked in: the surrogate's exact derivative, not the
    /// table's interpolation (good to about 1e-4, which would hide errors of that size).
    fn surrogate_derivatives(table: &DerivativeTable, xs: &mut [Self]) {
        xs.iter_mut().for_each(|x| *x = table.exact(*x))
    }
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn as_f32_slots(_: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<f32>]> {
        None
    }
}
