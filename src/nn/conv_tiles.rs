//! A stride-1 convolution of spikes by the tile multiply ([`super::amx`]): the forward pass, the
//! filter gradient and the input gradient of a spiking CNN's second convolution, whose input is
//! a spiking layer's 0/1 output after pooling.
//!
//! The event-driven passes ([`super::conv`]) add one filter column per input spike and tap and
//! leave the input gradient to a float product of the dense output gradient: on
//! networks/fashion_scnn.ron that convolution took 42% of an epoch. Here all three are integer
//! tile products, none of which builds a patch matrix of floats:
//!
//! - forward and input gradient are correlations of an image stored position by position (a
//!   position's channels side by side, as bytes, the borders zero): a tile of 16 consecutive
//!   output positions reads 16 consecutive image positions through each tap, one tile load at a
//!   fixed stride, so no patches are unrolled at all. The forward pass correlates the spikes
//!   with the filters; the input gradient correlates the output gradient with the filters
//!   turned by half a circle and their channels and filters swapped.
//! - the filter gradient sums over output positions: each tap's shifted copy of the input
//!   planes (bytes) times the output gradient.
//!
//! Spikes are bytes 0 and 1; filters and output gradients are 24-bit fixed-point integers
//! ([`super::amx`]) on scales chosen so that every sum stays exact: each filter's own scale in
//! the forward pass, each input channel's in the input gradient (over all filters and taps that
//! reach it); the output gradient's scale per column (sample and step) in the input gradient
//! and per filter over a fixed block of columns in the filter gradient. So the output and both
//! gradients are the exact sums of rounded values, rounded once, whatever the threads.

use nalgebra::DMatrix;

use super::conv::ConvGeometry;
use super::fresh;

/// A convolution's input of spikes as bytes 0 or 1, column after column (channel-major), kept by
/// the forward pass for the filter gradient.
#[derive(Debug, Clone)]
pub struct SpikeBytes(Vec<u8>);

/// The output `w * x + bias` of a convolution of spikes `x` (0 or 1 only), and `x` as bytes,
/// where the tile multiply runs and the convolution has stride 1; None elsewhere.
pub fn forward(
    g: &ConvGeometry,
    w: &DMatrix<f32>,
    bias: Option<&DMatrix<f32>>,
    x: &DMatrix<f32>,
) -> Option<(DMatrix<f32>, SpikeBytes)> {
    use rayon::prelude::*;
    if !imp::fits(g) {
        return None;
    }
    // Bytes and the check that every value is 0 or 1 in one pass without early exits, which
    // vectorises.
    let mut bytes = vec![0u8; x.len()];
    let spikes_only = bytes.par_chunks_mut(1 << 14).zip(x.as_slice().par_chunks(1 << 14)).all(|(b, x)| {
        b.iter_mut().zip(x).fold(true, |ok, (b, &v)| {
            *b = u8::from(v == 1.0);
            ok & ((v == 0.0) | (v == 1.0))
        })
    });
    if !spikes_only {
        return None;
    }
    let spikes = SpikeBytes(bytes);
    let mut y = fresh::slots(g.output.size() * x.ncols());
    // SAFETY: `fits` checked the CPU.
    unsafe { imp::forward(g, w, bias.map(|b| b.as_slice()), &spikes.0, &mut y) };
    // SAFETY: the kernel writes every output.
    Some((unsafe { fresh::written_matrix(g.output.size(), x.ncols(), y) }, spikes))
}

/// Gradients of the filters, of the bias, and of the input (zero unless `input_grad`) from the
/// output gradient `dy`, for a forward pass that returned `spikes`.
pub fn backward(
    g: &ConvGeometry,
    w: &DMatrix<f32>,
    has_bias: bool,
    spikes: &SpikeBytes,
    dy: &DMatrix<f32>,
    input_grad: bool,
) -> (DMatrix<f32>, Option<DMatrix<f32>>, DMatrix<f32>) {
    assert!(imp::fits(g), "spikes as bytes are kept only where the tile multiply runs");
    let dw = imp::filter_gradient(g, w.nrows(), &spikes.0, dy);
    let db = has_bias.then(|| super::linear::bias_gradient(dy.as_slice(), w.nrows(), g.output.positions()));
    let dx = if input_grad {
        let mut dx = fresh::slots(g.input.size() * dy.ncols());
        // SAFETY: `fits` checked the CPU.
        unsafe { imp::input_gradient(g, w, dy, &mut dx) };
        // SAFETY: the kernel writes every input.
        unsafe { fresh::written_matrix(g.input.size(), dy.ncols(), dx) }
    } else {
        DMatrix::zeros(g.input.size(), dy.ncols())
    };
    (dw, db, dx)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::arch::x86_64::{
        __m512, __m512d, __mmask16, _mm_maskz_loadu_epi8, _mm_storeu_si128, _mm256_loadu_si256, _mm512_abs_ps,
        _mm512_castps256_ps512, _mm512_castps512_ps256, _mm512_castsi256_si512, _mm512_cvtepi32_epi8,
        _mm512_cvtepi32_pd, _mm512_cvtepi32_ps, _mm512_cvtepu8_epi32, _mm512_cvtpd_epi32, _mm512_cvtpd_ps,
        _mm512_cvtps_pd, _mm512_extractf32x8_ps, _mm512_fmadd_pd, _mm512_insertf32x8, _mm512_inserti32x8,
        _mm512_loadu_pd, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mask_storeu_epi32, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_mul_pd, _mm512_reduce_max_ps, _mm512_set1_pd, _mm512_setzero_pd,
        _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_srai_epi32, _mm512_store_ps,
        _mm512_unpackhi_ps, _mm512_unpacklo_ps,
    };

    use std::mem::MaybeUninit;

    use nalgebra::DMatrix;
    use rayon::prelude::*;

    use crate::nn::amx::{self, LIMBS, Line, TILE, Tiles, ZERO, as_sums, limb, nearest, scales};
    use crate::nn::conv::ConvGeometry;
    use crate::spec::Shape;

    /// Columns per parallel block (and per filter-gradient scale).
    const BLOCK: usize = 8;

    /// Whether the tile passes take this convolution: stride 1, and sums that cannot overflow
    /// 32 bits (in a correlation at most 3 x 255 x 255 per term, three pairs of bytes adding to
    /// one sum; in the filter gradient 255 per output position of a block).
    pub(super) fn fits(g: &ConvGeometry) -> bool {
        let (Shape::Image { channels, .. }, Shape::Image { channels: filters, height, width }) = (g.input, g.output)
        else {
            return false;
        };
        let terms = g.kernel * g.kernel * channels.max(filters).next_power_of_two().max(64);
        let positions = BLOCK * height * (width + g.kernel);
        let bounded = terms * 3 * 255 * 255 < i32::MAX as usize && positions * 255 < i32::MAX as usize;
        amx::available() && g.stride == 1 && bounded && height * width > 0
    }

    /// Channels, height and width of the input, filters, height and width of the output.
    fn dims(g: &ConvGeometry) -> (usize, usize, usize, usize, usize, usize) {
        let (channels, height, width, oh, ow, _) = g.dims();
        (channels, height, width, g.output.channels(), oh, ow)
    }

    /// A stride-1 correlation `out[n, y, x] = sum over channels c and taps (ty, tx) of kernel[n,
    /// c, ty, tx] image[c, y + ty - offset, x + tx - offset]` on tiles: the image stored
    /// position by position, each position's row one or more lines holding `group` consecutive
    /// positions of `bytes` bytes (the channels, padded), so that one K step of the multiply
    /// reads `group` taps of a kernel row at once.
    struct Correlation {
        channels: usize,
        /// Bytes per position in a row: a power of two from 4 to 64, or a multiple of 64.
        bytes: usize,
        /// Positions per image row: 64 / bytes where a position takes less than a line, else 1.
        group: usize,
        /// Lines per image row: bytes / 64 where a position takes more than a line, else 1.
        row_lines: usize,
        kernel: usize,
        /// Image position (Y, X) holds source position (Y - offset, X - offset).
        offset: isize,
        /// The source image's size, and the output's.
        source: (usize, usize),
        out: (usize, usize),
        x_tiles: usize,
        /// Image size in positions: the output plus the kernel's reach, and one more row for a
        /// last tile of a pair that lies beyond the output.
        image: (usize, usize),
        /// Outputs per position: the filters, or the input channels for the input gradient.
        outputs: usize,
        /// K steps: (line of the image relative to the tile's first position, kernel row ty,
        /// first tap tx, first channel).
        steps: Vec<(usize, usize, usize, usize)>,
    }

    impl Correlation {
        fn new(
            channels: usize,
            source: (usize, usize),
            outputs: usize,
            out: (usize, usize),
            kernel: usize,
            offset: isize,
        ) -> Self {
            let bytes = if channels <= 64 { channels.next_power_of_two().max(4) } else { channels.div_ceil(64) * 64 };
            let (group, row_lines) = if bytes < 64 { (64 / bytes, 1) } else { (1, bytes / 64) };
            let x_tiles = out.1.div_ceil(TILE);
            let image = (out.0 + kernel, x_tiles * TILE + kernel - 1);
            let mut steps = Vec::new();
            for ty in 0..kernel {
                for tx in (0..kernel).step_by(group) {
                    for chunk in 0..row_lines {
                        steps.push(((ty * image.1 + tx) * row_lines + chunk, ty, tx, chunk * 64));
                    }
                }
            }
            Correlation {
                channels,
                bytes,
                group,
                row_lines,
                kernel,
                offset,
                source,
                out,
                x_tiles,
                image,
                outputs,
                steps,
            }
        }

        fn position_tiles(&self) -> usize {
            self.out.0 * self.x_tiles
        }

        /// Lines of one byte of the image.
        fn image_lines(&self) -> usize {
            self.image.0 * self.image.1 * self.row_lines
        }

        /// One column's image from its source values (channel-major), one image per byte of
        /// their fixed-point integers round(v inverse) (`limbs` 1: the values are 0 or 1, each a
        /// byte). `flat` is scratch space that keeps zeros where no source value lands, so it
        /// is zeroed only when it is first used.
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
        fn fill_image(&self, limbs: usize, source: Source, inverse: f64, flat: &mut Vec<f32>, image: &mut [Line]) {
            // The values position-major first, `bytes` per position (and zeros around), moved
            // 16 x 16 at a time; then each byte's rows of `group` positions from their own on.
            let (h, w) = self.source;
            let (ih, iw) = self.image;
            let size = (ih * iw + self.group) * self.bytes;
            if flat.len() != size {
                flat.clear();
                flat.resize(size, 0.0);
            }
            let inside = |at: usize, size: usize| (0..size as isize).contains(&(at as isize + self.offset));
            let xs = (0..w).filter(|&x| inside(x, iw)).collect::<Vec<_>>();
            let Some((&x_first, &x_last)) = xs.first().zip(xs.last()) else { return };
            let mask = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
            for y in (0..h).filter(|&y| inside(y, ih)) {
                let first = ((y as isize + self.offset) as usize * iw) as isize + self.offset;
                for c0 in (0..self.channels).step_by(16) {
                    let channels = (self.channels - c0).min(16);
                    for x0 in (x_first..=x_last).step_by(16) {
                        let width = (x_last + 1 - x0).min(16);
                        let rows: [__m512; 16] = std::array::from_fn(|i| {
                            let at = ((c0 + i.min(channels - 1)) * h + y) * w + x0;
                            // SAFETY: the masks read only the slices' values.
                            match source {
                                Source::Floats(v) => unsafe {
                                    _mm512_maskz_loadu_ps(mask(width), v[at..][..width].as_ptr())
                                },
                                Source::Bytes(v) => _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(unsafe {
                                    _mm_maskz_loadu_epi8(mask(width), v[at..][..width].as_ptr().cast())
                                })),
                            }
                        });
                        for (x, column) in transpose(rows).iter().enumerate().take(width) {
                            let at = (first + (x0 + x) as isize) as usize * self.bytes + c0;
                            let to = &mut flat[at..][..channels];
                            // SAFETY: the mask writes only the slice's values.
                            unsafe { _mm512_mask_storeu_ps(to.as_mut_ptr(), mask(channels), *column) };
                        }
                    }
                }
            }
            let (row, lines) = (self.group * self.bytes, self.image_lines());
            let inverse = _mm512_set1_pd(inverse);
            for p in 0..ih * iw {
                for i in (0..row).step_by(16) {
                    // SAFETY: 16 values of the slice.
                    let v = unsafe { _mm512_loadu_ps(flat[p * self.bytes + i..][..16].as_ptr()) };
                    let halves = [_mm512_castps512_ps256(v), _mm512_extractf32x8_ps::<1>(v)]
                        .map(|v| _mm512_cvtpd_epi32(_mm512_mul_pd(_mm512_cvtps_pd(v), inverse)));
                    let q = _mm512_inserti32x8::<1>(_mm512_castsi256_si512(halves[0]), halves[1]);
                    for l in 0..limbs {
                        let byte = match (limbs, l) {
                            (1, _) | (_, 2) => q,
                            (_, 1) => _mm512_srai_epi32::<8>(q),
                            _ => _mm512_srai_epi32::<16>(q),
                        };
                        let to = &mut amx::as_bytes_mut(&mut image[l * lines + p * self.row_lines..])[i..][..16];
                        // SAFETY: 16 bytes of the slice.
                        unsafe { _mm_storeu_si128(to.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(byte)) };
                    }
                }
            }
        }

        /// The kernel `value(n, c, ty, tx)` as the multiply's second operand: per byte of the
        /// fixed-point integers, per tile of 16 outputs (an even number), per K step, 16 lines;
        /// with each output's scale (over its channels and taps).
        fn pack_kernel(&self, value: impl Fn(usize, usize, usize, usize) -> f32 + Sync) -> (Vec<Line>, Vec<f64>) {
            let n_tiles = self.outputs.div_ceil(2 * TILE) * 2;
            let per_tile = self.steps.len() * TILE;
            let (k, c) = (self.kernel, self.channels);
            let taps =
                |n: usize| (0..c).flat_map(move |c| (0..k).flat_map(move |ty| (0..k).map(move |tx| (n, c, ty, tx))));
            let largest: Vec<f32> = (0..self.outputs)
                .map(|n| taps(n).map(|(n, c, ty, tx)| value(n, c, ty, tx).abs()).fold(0.0, f32::max))
                .collect();
            let mut lines = vec![ZERO; LIMBS * n_tiles * per_tile];
            for (s, &(_, ty, tx0, c0)) in self.steps.iter().enumerate() {
                for (n, &largest) in largest.iter().enumerate() {
                    let (inverse, _) = scales(largest);
                    for kk in 0..64 {
                        let (c, tx) =
                            if self.bytes < 64 { (kk % self.bytes, tx0 + kk / self.bytes) } else { (c0 + kk, tx0) };
                        if c >= self.channels || tx >= k {
                            continue;
                        }
                        let q = nearest(f64::from(value(n, c, ty, tx)) * inverse);
                        let byte = (n % TILE) * 4 + kk % 4;
                        for l in 0..LIMBS {
                            let line = ((l * n_tiles + n / TILE) * self.steps.len() + s) * TILE + kk / 4;
                            lines[line].0[byte] = limb(q, l);
                        }
                    }
                }
            }
            (lines, largest.into_iter().map(|m| scales(m).1).collect())
        }

        /// The correlation of one column into `out` (outputs x positions, channel-major): per
        /// pair of position tiles and pair of output tiles, the sums of each shift group g (the
        /// bytes of image and kernel whose weights add to 2^(8 (groups - 1 - g))), then at once,
        /// while they are in the L1 cache, `scale[n]` times the joined integers plus `bias[n]`
        /// (both padded to whole pairs of tiles). `image_limbs` is 1 (bytes 0/1) or [`LIMBS`];
        /// `block` holds `image_limbs + LIMBS - 1` blocks of 64 lines.
        ///
        /// # Safety
        /// The tile registers are configured; `image` and `kernel` as filled and packed.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
        unsafe fn correlate(
            &self,
            tiles: &mut Tiles,
            (image, image_limbs): (&[Line], usize),
            kernel: &[Line],
            (scale, bias): (&[f64], &[f64]),
            block: &mut [Line],
            out: &mut [MaybeUninit<f32>],
        ) {
            let n_pairs = self.outputs.div_ceil(2 * TILE);
            let per_tile = self.steps.len() * TILE;
            let groups = image_limbs + LIMBS - 1;
            let stride = self.row_lines * 64;
            let first = |t: usize| {
                let (y, xt) = (t / self.x_tiles, t % self.x_tiles);
                (y * self.image.1 + xt * TILE) * self.row_lines
            };
            for pp in 0..self.position_tiles().div_ceil(2) {
                let (t0, t1) = (first(2 * pp), first(2 * pp + 1));
                for np in 0..n_pairs {
                    for g in 0..groups {
                        tiles.zero();
                        for la in 0..image_limbs {
                            // Kernel byte lb with la + lb = g, most significant first.
                            let Some(lb) = (g + 1).checked_sub(la + 1).filter(|&lb| lb < LIMBS) else { continue };
                            let img = &image[la * self.image_lines()..];
                            let b = |t: usize| kernel[((lb * 2 * n_pairs) + t) * per_tile..].as_ptr().cast::<u8>();
                            let a = [img[t0..].as_ptr().cast::<u8>(), img[t1..].as_ptr().cast::<u8>()];
                            let steps = self.steps.iter().enumerate().map(|(s, &(at, ..))| (at * 64, s * TILE * 64));
                            let signed = (image_limbs > 1 && la == 0, lb == 0);
                            // SAFETY: the image holds every tile read (one spare row, the kernel's
                            // reach), the kernel every K step of both output tiles.
                            unsafe { tiles.multiply(signed, (a, stride), [b(2 * np), b(2 * np + 1)], steps) };
                        }
                        // SAFETY: 64 lines hold 1024 i32.
                        unsafe { tiles.store(block[g * 64..][..64].as_mut_ptr().cast()) };
                    }
                    self.join(as_sums(&block[..groups * 64]), (pp, np), (scale, bias), out);
                }
            }
        }

        /// The outputs of position tiles `2 pp, 2 pp + 1` and output tiles `2 np, 2 np + 1` from
        /// their groups' sums `sums` (1024 each): joined in f64 (exact below 2^53), scaled and
        /// shifted with one rounding, and each 16 x 16 tile turned in registers so that each
        /// output's 16 positions are one store.
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
        fn join(
            &self,
            sums: &[i32],
            (pp, np): (usize, usize),
            (scale, bias): (&[f64], &[f64]),
            out: &mut [MaybeUninit<f32>],
        ) {
            let groups = sums.len() / 1024;
            let weights: [__m512d; 2 * LIMBS - 1] =
                std::array::from_fn(|g| _mm512_set1_pd(2f64.powi(8 * (groups.max(g + 1) - 1 - g) as i32)));
            let (oh, ow) = self.out;
            for t in (2 * pp..2 * pp + 2).take_while(|&t| t < self.position_tiles()) {
                let (y, x0) = (t / self.x_tiles, t % self.x_tiles * TILE);
                let width = TILE.min(ow - x0);
                let valid: __mmask16 = ((1u32 << width) - 1) as u16;
                for nt in (2 * np..2 * np + 2).take_while(|&nt| nt * TILE < self.outputs) {
                    // SAFETY (the loads): eight values of slices that hold them.
                    let eight = |v: &[f64], i: usize| unsafe { _mm512_loadu_pd(v[nt * TILE + 8 * i..][..8].as_ptr()) };
                    let (scale, bias) = ([eight(scale, 0), eight(scale, 1)], [eight(bias, 0), eight(bias, 1)]);
                    let rows: [__m512; TILE] = std::array::from_fn(|i| {
                        let r = (t % 2) * TILE + i;
                        let halves = [0, 1].map(|h| {
                            let mut q = _mm512_setzero_pd();
                            for (g, sums) in sums.chunks_exact(1024).enumerate() {
                                let at = r * 32 + (nt % 2) * TILE + 8 * h;
                                // SAFETY: eight sums of the slice.
                                let s =
                                    _mm512_cvtepi32_pd(unsafe { _mm256_loadu_si256(sums[at..][..8].as_ptr().cast()) });
                                q = _mm512_fmadd_pd(s, weights[g], q);
                            }
                            _mm512_cvtpd_ps(_mm512_fmadd_pd(q, scale[h], bias[h]))
                        });
                        _mm512_insertf32x8::<1>(_mm512_castps256_ps512(halves[0]), halves[1])
                    });
                    let columns = transpose(rows);
                    for (e, column) in columns.iter().enumerate().take(self.outputs - nt * TILE) {
                        let to = &mut out[((nt * TILE + e) * oh + y) * ow + x0..][..width];
                        // SAFETY: the mask writes only the slice's positions.
                        unsafe { _mm512_mask_storeu_ps(to.as_mut_ptr().cast(), valid, *column) };
                    }
                }
            }
        }

        /// `per_output` padded with zeros to whole pairs of tiles.
        fn padded(&self, per_output: impl Fn(usize) -> f64) -> Vec<f64> {
            (0..self.outputs.div_ceil(2 * TILE) * 2 * TILE)
                .map(|n| if n < self.outputs { per_output(n) } else { 0.0 })
                .collect()
        }
    }

    /// `lanes` raised to the largest |v| of `values`, lane by lane (the values are finite).
    #[target_feature(enable = "avx512f")]
    fn largest_magnitudes(values: &[f32], mut lanes: __m512) -> __m512 {
        for v in values.chunks(16) {
            // SAFETY: the mask reads only the slice's values.
            let v = unsafe { _mm512_maskz_loadu_ps(((1u32 << v.len()) - 1) as __mmask16, v.as_ptr()) };
            lanes = _mm512_max_ps(lanes, _mm512_abs_ps(v));
        }
        lanes
    }

    /// The columns of 16 rows of 16 floats.
    #[target_feature(enable = "avx512f")]
    fn transpose(r: [__m512; 16]) -> [__m512; 16] {
        // Pairs of rows interleaved, then quadruples within each 128-bit lane: u[4 i + k],
        // lane l, holds column 4 l + k of rows 4 i..4 i + 4.
        let t: [__m512; 16] = std::array::from_fn(|j| {
            let (x, y) = (r[j / 2 * 2], r[j / 2 * 2 + 1]);
            if j % 2 == 0 { _mm512_unpacklo_ps(x, y) } else { _mm512_unpackhi_ps(x, y) }
        });
        let u: [__m512; 16] = std::array::from_fn(|j| {
            let (i, k) = (j / 4, j % 4);
            let (x, y) = (t[4 * i + k / 2], t[4 * i + 2 + k / 2]);
            if k % 2 == 0 { _mm512_shuffle_ps::<0x44>(x, y) } else { _mm512_shuffle_ps::<0xEE>(x, y) }
        });
        // Then lanes gathered across registers: column 4 l + k is lane l of u[k], u[4 + k],
        // u[8 + k], u[12 + k].
        let mut out = [_mm512_setzero_ps(); 16];
        for k in 0..4 {
            let (va, vb) = (_mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]), _mm512_shuffle_f32x4::<0xDD>(u[k], u[4 + k]));
            let (wa, wb) =
                (_mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]), _mm512_shuffle_f32x4::<0xDD>(u[8 + k], u[12 + k]));
            out[k] = _mm512_shuffle_f32x4::<0x88>(va, wa);
            out[8 + k] = _mm512_shuffle_f32x4::<0xDD>(va, wa);
            out[4 + k] = _mm512_shuffle_f32x4::<0x88>(vb, wb);
            out[12 + k] = _mm512_shuffle_f32x4::<0xDD>(vb, wb);
        }
        out
    }

    /// A column's values, channel-major: output gradients, or spikes as bytes.
    #[derive(Clone, Copy)]
    enum Source<'a> {
        Floats(&'a [f32]),
        Bytes(&'a [u8]),
    }

    fn forward_correlation(g: &ConvGeometry) -> Correlation {
        let (c, h, w, f, oh, ow) = dims(g);
        Correlation::new(c, (h, w), f, (oh, ow), g.kernel, g.padding as isize)
    }

    /// The input gradient as a correlation of the output gradient: dx[c, y, x] = sum over f,
    /// ky, kx of w[f, c, ky, kx] dy[f, y + p - ky, x + p - kx].
    fn input_correlation(g: &ConvGeometry) -> Correlation {
        let (c, h, w, f, oh, ow) = dims(g);
        Correlation::new(f, (oh, ow), c, (h, w), g.kernel, g.kernel as isize - 1 - g.padding as isize)
    }

    /// Writes every output into `y` (outputs x columns).
    ///
    /// # Safety
    /// `fits(g)`.
    pub(super) unsafe fn forward(
        g: &ConvGeometry,
        w: &DMatrix<f32>,
        bias: Option<&[f32]>,
        x: &[u8],
        y: &mut [MaybeUninit<f32>],
    ) {
        let corr = forward_correlation(g);
        let k = g.kernel;
        let (kernel, scales) = corr.pack_kernel(|f, c, ky, kx| w[(f, (c * k + ky) * k + kx)]);
        let (in_size, out_size) = (g.input.size(), g.output.size());
        let (scales, bias) = (corr.padded(|f| scales[f]), corr.padded(|f| bias.map_or(0.0, |b| f64::from(b[f]))));
        y.par_chunks_mut(out_size * BLOCK).zip(x.par_chunks(in_size * BLOCK)).for_each(|(y, x)| {
            // SAFETY: `fits` checked the CPU.
            let mut tiles = unsafe { Tiles::begin() };
            let (mut image, mut flat) = (vec![ZERO; corr.image_lines()], Vec::new());
            let mut block = vec![ZERO; LIMBS * 64];
            for (out, x) in y.chunks_mut(out_size).zip(x.chunks(in_size)) {
                // SAFETY: `fits` checked the CPU.
                unsafe { corr.fill_image(1, Source::Bytes(x), 1.0, &mut flat, &mut image) };
                // SAFETY: tiles configured; image and kernel as built.
                unsafe { corr.correlate(&mut tiles, (&image, 1), &kernel, (&scales, &bias), &mut block, out) };
            }
        });
    }

    /// Writes every input's gradient into `dx` (input size x columns).
    ///
    /// # Safety
    /// `fits(g)`.
    pub(super) unsafe fn input_gradient(
        g: &ConvGeometry,
        w: &DMatrix<f32>,
        dy: &DMatrix<f32>,
        dx: &mut [MaybeUninit<f32>],
    ) {
        let corr = input_correlation(g);
        let k = g.kernel;
        let (kernel, channel_scales) = corr.pack_kernel(|c, f, ty, tx| w[(f, (c * k + k - 1 - ty) * k + k - 1 - tx)]);
        let (in_size, out_size) = (g.input.size(), g.output.size());
        let zeros = corr.padded(|_| 0.0);
        dx.par_chunks_mut(in_size * BLOCK).zip(dy.as_slice().par_chunks(out_size * BLOCK)).for_each(|(dx, dy)| {
            // SAFETY: `fits` checked the CPU.
            let mut tiles = unsafe { Tiles::begin() };
            let (mut image, mut flat) = (vec![ZERO; LIMBS * corr.image_lines()], Vec::new());
            let mut block = vec![ZERO; (2 * LIMBS - 1) * 64];
            // Each column's scales: its channels' times the column's (zeros past the channels).
            let mut column_scales = zeros.clone();
            for (out, dy) in dx.chunks_mut(in_size).zip(dy.chunks(out_size)) {
                // SAFETY: `fits` checked the CPU.
                let (inverse, scale) =
                    scales(unsafe { _mm512_reduce_max_ps(largest_magnitudes(dy, _mm512_setzero_ps())) });
                // SAFETY: `fits` checked the CPU.
                unsafe { corr.fill_image(LIMBS, Source::Floats(dy), inverse, &mut flat, &mut image) };
                column_scales.iter_mut().zip(&channel_scales).for_each(|(s, &c)| *s = c * scale);
                let scaled = (&column_scales[..], &zeros[..]);
                // SAFETY: tiles configured; image and kernel as built.
                unsafe { corr.correlate(&mut tiles, (&image, LIMBS), &kernel, scaled, &mut block, out) };
            }
        });
    }

    /// The filter gradient: per block of columns, each tap's shifted input planes (bytes, rows
    /// (channel, ky, kx) of `reach` output positions on a grid as wide as the padded input)
    /// times the output gradient there (per filter's scale over the block), joined and added
    /// block after block.
    pub(super) fn filter_gradient(g: &ConvGeometry, filters: usize, x: &[u8], dy: &DMatrix<f32>) -> DMatrix<f32> {
        let (in_size, out_size) = (g.input.size(), g.output.size());
        let partial: Vec<DMatrix<f32>> = x
            .par_chunks(in_size * BLOCK)
            .zip(dy.as_slice().par_chunks(out_size * BLOCK))
            .map(|(x, dy)| {
                SCRATCH.with_borrow_mut(|kept| {
                    let (_, scratch) = match kept {
                        Some((geometry, _)) if geometry == g => kept.as_mut().expect("matched"),
                        _ => kept.insert((*g, Scratch::new(g))),
                    };
                    // SAFETY: `fits` checked the CPU.
                    unsafe { block_filter_gradient(g, x, dy, scratch) }
                })
            })
            .collect();
        let mut dw = DMatrix::zeros(filters, g.patch_shape().1);
        for part in &partial {
            dw += part;
        }
        dw
    }

    /// The sizes of [`filter_gradient`]'s operands: output positions on a grid as wide as the
    /// padded input, `reach` of them (whole K steps; x >= ow reads junk that meets an output
    /// gradient of zero), rows (channel, ky, kx), and lines per column of each operand.
    fn gradient_shape(g: &ConvGeometry) -> (usize, usize, usize, usize) {
        let (c, _, w, f, oh, _) = dims(g);
        let pw = w + 2 * g.padding;
        let reach = (oh * pw).div_ceil(64) * 64;
        let rows = c * g.kernel * g.kernel;
        let (m_pairs, n_pairs) = (rows.div_ceil(2 * TILE), f.div_ceil(2 * TILE));
        (reach, rows, 2 * m_pairs * TILE * reach / 64, LIMBS * 2 * n_pairs * reach / 4)
    }

    thread_local! {
        /// Each thread's [`Scratch`], kept for the geometry it was made for (about 1 MB).
        static SCRATCH: std::cell::RefCell<Option<(ConvGeometry, Scratch)>> = const { std::cell::RefCell::new(None) };
    }

    /// Buffers of [`block_filter_gradient`], made once per thread and geometry: every block
    /// writes the same parts of them, so the rest (borders, padding rows and filters) stays
    /// zero.
    struct Scratch {
        /// Per column, the shifted input planes (rows of `reach` bytes) and the output
        /// gradient's lines (per byte, per tile of 16 filters, reach / 4 lines).
        a: Vec<Line>,
        b: Vec<Line>,
        /// One input plane with its padding.
        padded: Vec<u8>,
        /// One filter's integers on the grid of `reach` positions.
        q: Vec<i32>,
        /// Per byte and filter of a tile, the bytes of its integers as words of 4 positions.
        words: Vec<u32>,
    }

    impl Scratch {
        fn new(g: &ConvGeometry) -> Self {
            let (_, h, w, _, _, _) = dims(g);
            let (k, p) = (g.kernel, g.padding);
            let (reach, _, a_lines, b_lines) = gradient_shape(g);
            let plane = (reach + (k - 1) * (w + 2 * p + 1)).max((h + 2 * p) * (w + 2 * p));
            Scratch {
                a: vec![ZERO; BLOCK * a_lines],
                b: vec![ZERO; BLOCK * b_lines],
                padded: vec![0; plane],
                q: vec![0; reach],
                words: vec![0; LIMBS * TILE * reach / 4],
            }
        }
    }

    /// One block's share of [`filter_gradient`].
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    fn block_filter_gradient(g: &ConvGeometry, x: &[u8], dy: &[f32], scratch: &mut Scratch) -> DMatrix<f32> {
        let (c, h, w, f, oh, ow) = dims(g);
        let (k, p) = (g.kernel, g.padding);
        let pw = w + 2 * p;
        let (reach, rows, a_lines, b_lines) = gradient_shape(g);
        let (m_pairs, n_pairs) = (rows.div_ceil(2 * TILE), f.div_ceil(2 * TILE));
        let (in_size, out_size, positions) = (g.input.size(), g.output.size(), oh * ow);
        let columns = x.len() / in_size;
        // Each filter's scale over the block's output gradients, 16 lanes at a time in
        // registers.
        let mut largest = vec![_mm512_setzero_ps(); f];
        for dy in dy.chunks_exact(out_size) {
            for (m, dy) in largest.iter_mut().zip(dy.chunks_exact(positions)) {
                *m = largest_magnitudes(dy, *m);
            }
        }
        let largest: Vec<f32> = largest.into_iter().map(|m| _mm512_reduce_max_ps(m)).collect();
        let (inverse, scale): (Vec<f64>, Vec<f64>) = largest.iter().map(|&m| scales(m)).unzip();
        let Scratch { a, b, padded, q, words } = scratch;
        for (j, (x, dy)) in x.chunks(in_size).zip(dy.chunks(out_size)).enumerate() {
            let a = amx::as_bytes_mut(&mut a[j * a_lines..][..a_lines]);
            for ci in 0..c {
                for y in 0..h {
                    padded[(y + p) * pw + p..][..w].copy_from_slice(&x[(ci * h + y) * w..][..w]);
                }
                for ky in 0..k {
                    for kx in 0..k {
                        let row = (ci * k + ky) * k + kx;
                        a[row * reach..][..reach].copy_from_slice(&padded[ky * pw + kx..][..reach]);
                    }
                }
            }
            // The output gradient's lines, per tile of 16 filters: each filter's integers on
            // the grid of `reach` positions, cut into bytes, then turned 16 x 16 words at a time
            // so that a line holds a word of 4 positions for each of the 16 filters.
            let b = &mut b[j * b_lines..][..b_lines];
            for nt in 0..f.div_ceil(TILE) {
                for e in 0..TILE.min(f - nt * TILE) {
                    let fi = nt * TILE + e;
                    let scale = _mm512_set1_pd(inverse[fi]);
                    for y in 0..oh {
                        for x0 in (0..ow).step_by(16) {
                            let n = (ow - x0).min(16);
                            let mask = ((1u32 << n) - 1) as __mmask16;
                            // SAFETY: the masks read and write only the slices' values.
                            unsafe {
                                let v = _mm512_maskz_loadu_ps(mask, dy[(fi * oh + y) * ow + x0..][..n].as_ptr());
                                let halves = [_mm512_castps512_ps256(v), _mm512_extractf32x8_ps::<1>(v)]
                                    .map(|v| _mm512_cvtpd_epi32(_mm512_mul_pd(_mm512_cvtps_pd(v), scale)));
                                let q512 = _mm512_inserti32x8::<1>(_mm512_castsi256_si512(halves[0]), halves[1]);
                                _mm512_mask_storeu_epi32(q[y * pw + x0..][..n].as_mut_ptr(), mask, q512);
                            }
                        }
                    }
                    for (k16, q) in q.chunks_exact(16).enumerate() {
                        // SAFETY: 16 values of the slice.
                        let v = unsafe { _mm512_loadu_si512(q.as_ptr().cast()) };
                        for (l, byte) in
                            [_mm512_srai_epi32::<16>(v), _mm512_srai_epi32::<8>(v), v].into_iter().enumerate()
                        {
                            let to = &mut words[(l * TILE + e) * reach / 4 + k16 * 4..][..4];
                            // SAFETY: 16 bytes of the slice.
                            unsafe { _mm_storeu_si128(to.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(byte)) };
                        }
                    }
                }
                for l in 0..LIMBS {
                    for blk in 0..reach / 64 {
                        let rows: [__m512; 16] = std::array::from_fn(|e| {
                            // SAFETY: 16 words of the slice.
                            unsafe {
                                _mm512_loadu_ps(words[(l * TILE + e) * reach / 4 + blk * 16..][..16].as_ptr().cast())
                            }
                        });
                        let first = (l * 2 * n_pairs + nt) * (reach / 4) + blk * 16;
                        for (line, v) in b[first..][..16].iter_mut().zip(transpose(rows)) {
                            // SAFETY: a line is 64 aligned bytes.
                            unsafe { _mm512_store_ps(line.0.as_mut_ptr().cast(), v) };
                        }
                    }
                }
            }
        }
        let mut sums = vec![ZERO; LIMBS * 64];
        let mut dw = DMatrix::<f32>::zeros(f, rows);
        // SAFETY: the caller checked the CPU.
        let mut tiles = unsafe { Tiles::begin() };
        for mp in 0..m_pairs {
            for np in 0..n_pairs {
                for l in 0..LIMBS {
                    tiles.zero();
                    for j in 0..columns {
                        let a = &a[j * a_lines + 2 * mp * TILE * reach / 64..];
                        let a = [a.as_ptr().cast::<u8>(), a[TILE * reach / 64..].as_ptr().cast()];
                        let b = |t: usize| b[j * b_lines + (l * 2 * n_pairs + t) * (reach / 4)..].as_ptr().cast();
                        let steps = (0..reach / 64).map(|kc| (kc * 64, kc * TILE * 64));
                        // SAFETY: rows of `reach` bytes, lines of every K step.
                        unsafe { tiles.multiply((false, l == 0), (a, reach), [b(2 * np), b(2 * np + 1)], steps) };
                    }
                    // SAFETY: 64 lines hold 1024 i32.
                    unsafe { tiles.store(sums[l * 64..].as_mut_ptr().cast()) };
                }
                let sums = as_sums(&sums);
                for r in 0..(2 * TILE).min(rows - 2 * TILE * mp) {
                    let row = 2 * TILE * mp + r;
                    for e in 0..(2 * TILE).min(f - 2 * TILE * np) {
                        let fi = 2 * TILE * np + e;
                        let at = r * 32 + e;
                        let q = (i64::from(sums[at]) << 16)
                            + (i64::from(sums[1024 + at]) << 8)
                            + i64::from(sums[2048 + at]);
                        dw[(fi, row)] = (q as f64 * scale[fi]) as f32;
                    }
                }
            }
        }
        dw
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use std::mem::MaybeUninit;

    use nalgebra::DMatrix;

    use crate::nn::conv::ConvGeometry;

    pub(super) fn fits(_: &ConvGeometry) -> bool {
        false
    }

    pub(super) unsafe fn forward(
        _: &ConvGeometry,
        _: &DMatrix<f32>,
        _: Option<&[f32]>,
        _: &[u8],
        _: &mut [MaybeUninit<f32>],
    ) {
        unreachable!("no tile multiply on this platform")
    }

    pub(super) unsafe fn input_gradient(
        _: &ConvGeometry,
        _: &DMatrix<f32>,
        _: &DMatrix<f32>,
        _: &mut [MaybeUninit<f32>],
    ) {
        unreachable!("no tile multiply on this platform")
    }

    pub(super) fn filter_gradient(_: &ConvGeometry, _: usize, _: &[u8], _: &DMatrix<f32>) -> DMatrix<f32> {
        unreachable!("no tile multiply on this platform")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Shape;

    /// The geometry of a stride-1 convolution.
    fn geometry(
        channels: usize,
        (height, width): (usize, usize),
        filters: usize,
        kernel: usize,
        padding: usize,
    ) -> ConvGeometry {
        let input = Shape::Image { channels, height, width };
        let (oh, ow) = (height + 2 * padding + 1 - kernel, width + 2 * padding + 1 - kernel);
        let output = Shape::Image { channels: filters, height: oh, width: ow };
        ConvGeometry { input, output, kernel, stride: 1, padding }
    }

    /// Calls `f(filter, channel, ky, kx, output index, input index)` for every term of the
    /// convolution of one column.
    fn for_each_term(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize, usize, usize, usize)) {
        let (Shape::Image { channels, height, width }, Shape::Image { channels: filters, height: oh, width: ow }) =
            (g.input, g.output)
        else {
            unreachable!()
        };
        let (k, p) = (g.kernel, g.padding as isize);
        for fi in 0..filters {
            for c in 0..channels {
                for ky in 0..k {
                    for kx in 0..k {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let (y, x) = (oy as isize + ky as isize - p, ox as isize + kx as isize - p);
                                if (0..height as isize).contains(&y) && (0..width as isize).contains(&x) {
                                    let input = (c * height + y as usize) * width + x as usize;
                                    f(fi, c, ky, kx, (fi * oh + oy) * ow + ox, input);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn assert_within(got: &DMatrix<f32>, exact: &[f64], bound: &[f64], what: &str) {
        for (i, ((&got, &exact), &bound)) in got.iter().zip(exact).zip(bound).enumerate() {
            let got = f64::from(got);
            assert!((got - exact).abs() <= bound, "{what}, element {i}: {got} against {exact} (bound {bound})");
        }
    }

    #[test]
    fn tile_convolution_gives_the_exact_sums_within_their_rounding() {
        // The spiking CNN's second convolution; few channels (several taps per line of the
        // image); more than 64 channels (two lines per position); rows wider than a tile;
        // padding beyond the kernel's reach; a 1 x 1 kernel. Columns beyond one block.
        let shapes = [
            (32, (14, 14), 64, 3, 1),
            (3, (7, 6), 5, 3, 1),
            (70, (5, 4), 17, 3, 1),
            (6, (9, 21), 33, 3, 0),
            (4, (5, 5), 8, 2, 2),
            (9, (6, 6), 16, 1, 0),
        ];
        for (channels, size, filters, kernel, padding) in shapes {
            let g = geometry(channels, size, filters, kernel, padding);
            let what = format!("{channels} channels {size:?}, {filters} filters, kernel {kernel} padding {padding}");
            let columns = 11;
            let taps = channels * kernel * kernel;
            // Filters of very different sizes (each has its own scale), a zero filter.
            let w = DMatrix::from_fn(filters, taps, |f, t| {
                let size = 10f32.powi(-((f % 3) as i32));
                if f == 1 { 0.0 } else { size * (((f * 31 + t * 17) % 23) as f32 / 11.0 - 1.0) }
            });
            let bias = DMatrix::from_fn(filters, 1, |f, _| f as f32 * 0.01);
            let x =
                DMatrix::from_fn(g.input.size(), columns, |i, c| f32::from(u8::from((i * 7 + c * 5 + i * c) % 3 == 0)));
            let Some((y, spikes)) = forward(&g, &w, Some(&bias), &x) else {
                assert!(!imp::fits(&g), "{what}: the tile multiply is there but was not taken");
                return;
            };
            let dy = DMatrix::from_fn(g.output.size(), columns, |o, c| {
                let size = 10f32.powi(-(((o + c) % 4) as i32));
                size * (((o * 13 + c * 7) % 29) as f32 / 14.0 - 1.0)
            });
            let (dw, db, dx) = backward(&g, &w, true, &spikes, &dy, true);
            let out = g.output.size() / filters;
            let step = |largest: f64| largest * 2f64.powi(-23);
            let w_max: Vec<f64> =
                (0..filters).map(|f| (0..taps).map(|t| f64::from(w[(f, t)].abs())).fold(0.0, f64::max)).collect();
            let wc_max: Vec<f64> = (0..channels)
                .map(|c| {
                    let of_c =
                        (0..filters).flat_map(|f| (0..kernel * kernel).map(move |t| (f, c * kernel * kernel + t)));
                    of_c.map(|(f, t)| f64::from(w[(f, t)].abs())).fold(0.0, f64::max)
                })
                .collect();
            let (mut y_exact, mut y_bound) = (vec![0.0; y.len()], vec![0.0; y.len()]);
            let (mut dw_exact, mut dw_bound) = (vec![0.0; dw.len()], vec![0.0; dw.len()]);
            let (mut dx_exact, mut dx_bound) = (vec![0.0; dx.len()], vec![0.0; dx.len()]);
            for c in 0..columns {
                let (xc, dyc) = (x.column(c), dy.column(c));
                let dy_max = dyc.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
                // The filter gradient's scale: per filter over the block of 8 columns.
                let block = (c / 8 * 8)..(c / 8 * 8 + 8).min(columns);
                let dyf_max = |f: usize| {
                    let cols = block.clone().flat_map(|b| (0..out).map(move |i| (f * out + i, b)));
                    cols.map(|at| f64::from(dy[at].abs())).fold(0.0, f64::max)
                };
                let dyf_max: Vec<f64> = (0..filters).map(dyf_max).collect();
                for_each_term(&g, |f, ch, ky, kx, o, i| {
                    let t = (ch * kernel + ky) * kernel + kx;
                    let (wv, xv, dv) = (f64::from(w[(f, t)]), f64::from(xc[i]), f64::from(dyc[o]));
                    y_exact[c * g.output.size() + o] += wv * xv;
                    y_bound[c * g.output.size() + o] += xv * step(w_max[f]);
                    dw_exact[t * filters + f] += dv * xv;
                    dw_bound[t * filters + f] += xv * step(dyf_max[f]) + (dv * xv).abs() * 2f64.powi(-21);
                    dx_exact[c * g.input.size() + i] += wv * dv;
                    dx_bound[c * g.input.size() + i] +=
                        2.0 * step(wc_max[ch]) * dy_max + (wv * dv).abs() * 2f64.powi(-22);
                });
            }
            for (o, e) in y_exact.iter_mut().enumerate() {
                *e += f64::from(bias[(o % g.output.size()) / out]);
            }
            let relative = |exact: &[f64], bound: &mut [f64]| {
                bound.iter_mut().zip(exact).for_each(|(b, e)| *b += e.abs() * 2f64.powi(-23) + 1e-30);
            };
            relative(&y_exact, &mut y_bound);
            relative(&dw_exact, &mut dw_bound);
            relative(&dx_exact, &mut dx_bound);
            assert_within(&y, &y_exact, &y_bound, &format!("{what}: forward"));
            assert_within(&dw, &dw_exact, &dw_bound, &format!("{what}: filter gradient"));
            assert_within(&dx, &dx_exact, &dx_bound, &format!("{what}: input gradient"));
            let db_exact: Vec<f32> = (0..filters)
                .map(|f| (0..columns).map(|c| (0..out).map(|i| dy[(f * out + i, c)]).sum::<f32>()).sum())
                .collect();
            let db = db.expect("a bias");
            for f in 0..filters {
                assert!((db[f] - db_exact[f]).abs() <= 1e-5 * (1.0 + db_exact[f].abs()), "{what}: bias gradient {f}");
            }
        }
    }

    #[test]
    fn values_other_than_spikes_are_left_to_the_float_kernels() {
        let g = geometry(3, (5, 5), 4, 3, 1);
        let w = DMatrix::from_element(4, 27, 0.5f32);
        let x = DMatrix::from_fn(g.input.size(), 2, |i, _| if i == 7 { 0.5 } else { 1.0 });
        assert!(forward(&g, &w, None, &x).is_none(), "a value of 0.5 is no spike");
        let strided = ConvGeometry { stride: 2, output: Shape::Image { channels: 4, height: 3, width: 3 }, ..g };
        let spikes = x.map(|v| v.round());
        assert!(forward(&strided, &w, None, &spikes).is_none(), "stride 2");
    }
}
