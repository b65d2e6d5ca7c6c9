//! The spike non-linearity: the Heaviside step H(x) (1 for x >= 0, else 0) and the smooth
//! functions whose derivatives stand in for H's on the backward pass.
//!
//! Every surrogate is the derivative of a smooth primitive S(x) that rises from 0 to 1, so all
//! derivatives have unit area and differ only in shape; `x` is the distance to threshold
//! (v - v_threshold, in units where the threshold is 1 above rest, as snnTorch uses).
//!
//! | name | primitive S(x) | derivative S'(x) | default |
//! |---|---|---|---|
//! | `htaf` | (g(x) - s(-a)) / (s(a) - s(-a)),  g = s(a tanh(b x)) | a b sech^2(b x) g (1 - g) / (s(a) - s(-a)) | a = 4, b = 2 |
//! | `sigmoid` | s(k x) | k s(k x) (1 - s(k x)) | k = 25 |
//! | `fast-sigmoid` | (1 + k x / (1 + k abs(x))) / 2 | k / (2 (1 + k abs(x))^2) | k = 25 |
//! | `arctan` | 1/2 + atan(pi a x / 2) / pi | (a / 2) / (1 + (pi a x / 2)^2) | a = 2 |
//! | `triangle` | piecewise quadratic | max(0, 1 - abs(x) / w) / w | w = 0.5 |
//! | `ste` | clamp(x / w + 1/2, 0, 1) | 1 / w for abs(x) < w / 2 | w = 1 |
//!
//! s is the logistic sigmoid. HTAF is the Heavy-Tailed Activation Function of Park et al. (2026,
//! arXiv:2605.11558): alpha sets the slope at zero (a b / (4 (s(a) - s(-a))), 2.07 with the
//! defaults), beta the decay of the tails, as exp(-2 b abs(x)). Against the sigmoid with the same
//! slope at zero, whose derivative decays as exp(-k abs(x)) with k = a b / (s(a) - s(-a)), HTAF's
//! tail is always the heavier, since a / tanh(a / 2) > 2.
//!
//! The default beta = 2 was chosen by measurement: `snn train networks/fashion_snn.ron --epochs 3
//! --data tests/data/fashion-mnist` with alpha = 4 reached a test accuracy of 82.1% with beta = 1,
//! 82.8% with beta = 2 and 76.0% with beta = 6 (the slope of the sigmoid with k = 25); arctan
//! reached 82.0%. Sigmoid, fast sigmoid (SuperSpike) and arctan take snnTorch's parameter names
//! and defaults; snnTorch's fast sigmoid is ours times 2 / k, its sigmoid and arctan are the
//! same. `ste` is the rectangle, the straight-through estimator.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The Heaviside step as the engine fires: 1 at and above threshold.
pub fn heaviside(x: f64) -> f64 {
    if x >= 0.0 { 1.0 } else { 0.0 }
}

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A surrogate for the derivative of the Heaviside step; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Surrogate {
    Htaf {
        #[serde(default = "htaf_alpha")]
        alpha: f64,
        #[serde(default = "htaf_beta")]
        beta: f64,
    },
    Sigmoid {
        #[serde(default = "slope_25")]
        slope: f64,
    },
    FastSigmoid {
        #[serde(default = "slope_25")]
        slope: f64,
    },
    Arctan {
        #[serde(default = "arctan_alpha")]
        alpha: f64,
    },
    Triangle {
        #[serde(default = "triangle_width")]
        width: f64,
    },
    Ste {
        #[serde(default = "ste_width")]
        width: f64,
    },
}

fn htaf_alpha() -> f64 {
    4.0
}
fn htaf_beta() -> f64 {
    2.0
}
fn slope_25() -> f64 {
    25.0
}
fn arctan_alpha() -> f64 {
    2.0
}
fn triangle_width() -> f64 {
    0.5
}
fn ste_width() -> f64 {
    1.0
}

impl Default for Surrogate {
    fn default() -> Self {
        Surrogate::Htaf { alpha: htaf_alpha(), beta: htaf_beta() }
    }
}

/// Names accepted on the command line, in the order figures and sweeps list them.
pub const NAMES: [&str; 6] = ["htaf", "sigmoid", "fast-sigmoid", "arctan", "triangle", "ste"];

impl Surrogate {
    /// Every surrogate with its default parameters, in [`NAMES`] order.
    pub fn all() -> Vec<Surrogate> {
        NAMES.iter().map(|n| n.parse().expect("listed names parse")).collect()
    }

    pub fn name(&self) -> &'static str {
        match self {
            Surrogate::Htaf { .. } => "htaf",
            Surrogate::Sigmoid { .. } => "sigmoid",
            Surrogate::FastSigmoid { .. } => "fast-sigmoid",
            Surrogate::Arctan { .. } => "arctan",
            Surrogate::Triangle { .. } => "triangle",
            Surrogate::Ste { .. } => "ste",
        }
    }

    /// The parameters must make a proper primitive (positive scales).
    pub fn problems(&self, path: &str) -> Vec<String> {
        let params: Vec<(&str, f64)> = match *self {
            Surrogate::Htaf { alpha, beta } => vec![("alpha", alpha), ("beta", beta)],
            Surrogate::Sigmoid { slope } | Surrogate::FastSigmoid { slope } => {
                vec![("slope", slope)]
            }
            Surrogate::Arctan { alpha } => vec![("alpha", alpha)],
            Surrogate::Triangle { width } | Surrogate::Ste { width } => vec![("width", width)],
        };
        params
            .into_iter()
            .filter(|(_, v)| !(v.is_finite() && *v > 0.0))
            .map(|(p, v)| format!("{path}.{p}: must be a positive number, got {v}"))
            .collect()
    }

    /// The smooth primitive S(x), rising from 0 to 1; the forward pass of smooth mode.
    pub fn primitive(&self, x: f64) -> f64 {
        match *self {
            Surrogate::Htaf { alpha, beta } => {
                let low = logistic(-alpha);
                (logistic(alpha * (beta * x).tanh()) - low) / (logistic(alpha) - low)
            }
            Surrogate::Sigmoid { slope } => logistic(slope * x),
            Surrogate::FastSigmoid { slope } => 0.5 * (1.0 + slope * x / (1.0 + slope * x.abs())),
            Surrogate::Arctan { alpha } => 0.5 + (PI * alpha * x / 2.0).atan() / PI,
            Surrogate::Triangle { width } => {
                let u = (x / width).clamp(-1.0, 1.0);
                if u < 0.0 { 0.5 * (1.0 + u) * (1.0 + u) } else { 1.0 - 0.5 * (1.0 - u) * (1.0 - u) }
            }
            Surrogate::Ste { width } => (x / width + 0.5).clamp(0.0, 1.0),
        }
    }

    /// S'(x): what replaces dH/dx on the backward pass.
    pub fn derivative(&self, x: f64) -> f64 {
        match *self {
            Surrogate::Htaf { alpha, beta } => {
                let g = logistic(alpha * (beta * x).tanh());
                let sech = 1.0 / (beta * x).cosh();
                alpha * beta * sech * sech * g * (1.0 - g) / (logistic(alpha) - logistic(-alpha))
            }
            Surrogate::Sigmoid { slope } => {
                let s = logistic(slope * x);
                slope * s * (1.0 - s)
            }
            Surrogate::FastSigmoid { slope } => 0.5 * slope / (1.0 + slope * x.abs()).powi(2),
            Surrogate::Arctan { alpha } => 0.5 * alpha / (1.0 + (PI * alpha * x / 2.0).powi(2)),
            Surrogate::Triangle { width } => (1.0 - x.abs() / width).max(0.0) / width,
            Surrogate::Ste { width } => {
                if x.abs() < width / 2.0 {
                    1.0 / width
                } else {
                    0.0
                }
            }
        }
    }
}

impl fmt::Display for Surrogate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Surrogate::Htaf { alpha, beta } => write!(f, "htaf(alpha={alpha}, beta={beta})"),
            Surrogate::Sigmoid { slope } | Surrogate::FastSigmoid { slope } => {
                write!(f, "{}(slope={slope})", self.name())
            }
            Surrogate::Arctan { alpha } => write!(f, "arctan(alpha={alpha})"),
            Surrogate::Triangle { width } | Surrogate::Ste { width } => {
                write!(f, "{}(width={width})", self.name())
            }
        }
    }
}

/// An unknown surrogate name; the message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown surrogate {0:?}; valid names: {names}", names = NAMES.join(", "))]
pub struct UnknownSurrogate(pub String);

impl FromStr for Surrogate {
    type Err = UnknownSurrogate;

    /// A name from [`NAMES`] (case-insensitive; `rectangle` is `ste`), with default parameters.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "htaf" => Surrogate::default(),
            "sigmoid" => Surrogate::Sigmoid { slope: slope_25() },
            "fast-sigmoid" | "superspike" => Surrogate::FastSigmoid { slope: slope_25() },
            "arctan" | "atan" => Surrogate::Arctan { alpha: arctan_alpha() },
            "triangle" => Surrogate::Triangle { width: triangle_width() },
            "ste" | "rectangle" => Surrogate::Ste { width: ste_width() },
            _ => return Err(UnknownSurrogate(s.to_owned())),
        })
    }
}

/// S'(x) sampled on a fine grid and interpolated linearly: what the trainer evaluates hundreds
/// of thousands of times per sample, at a few nanoseconds instead of the tens that tanh and exp
/// take. Outside the grid it falls back to the closed form. The interpolation error is below
/// 5e-4 of the peak (tested; 1e-4 for the surrogates without a kink): enough for training, not
/// for gradient checks, so f64 arithmetic evaluates the closed form ([`Self::exact`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DerivativeTable {
    surrogate: Surrogate,
    values: Vec<f32>,
    /// Per grid interval k, values[k] and values[k + 1] - values[k] (in f32, as the f32
    /// interpolation takes them): what one lookup reads, in one place, so the vector form
    /// gathers eight 64-bit pairs rather than sixteen floats.
    steps: Vec<[f32; 2]>,
}

impl DerivativeTable {
    const RANGE: f64 = 16.0;
    const PER_UNIT: f64 = 1024.0;

    /// The closed form the table samples.
    pub fn exact(&self, x: f64) -> f64 {
        self.surrogate.derivative(x)
    }

    pub fn new(surrogate: Surrogate) -> Self {
        let n = (2.0 * Self::RANGE * Self::PER_UNIT) as usize;
        let values: Vec<f32> =
            (0..=n).map(|k| surrogate.derivative(-Self::RANGE + k as f64 / Self::PER_UNIT) as f32).collect();
        let steps = values.windows(2).map(|ab| [ab[0], ab[1] - ab[0]]).collect();
        DerivativeTable { surrogate, values, steps }
    }

    pub fn derivative(&self, x: f64) -> f64 {
        let u = (x + Self::RANGE) * Self::PER_UNIT;
        if !(0.0..(self.values.len() - 1) as f64).contains(&u) {
            return self.surrogate.derivative(x);
        }
        let k = u as usize;
        let f = u - k as f64;
        let (a, b) = (self.values[k] as f64, self.values[k + 1] as f64);
        a + f * (b - a)
    }

    /// As [`derivative`](Self::derivative), in f32 arithmetic (the training loop's type, where
    /// converting every potential to f64 and back cost more than the lookup).
    pub fn derivative_f32(&self, x: f32) -> f32 {
        let u = (x + Self::RANGE as f32) * Self::PER_UNIT as f32;
        if !(u >= 0.0 && u < (self.values.len() - 1) as f32) {
            return self.surrogate.derivative(x as f64) as f32;
        }
        let k = u as usize;
        let f = u - k as f32;
        let [a, d] = self.steps[k];
        a + f * d
    }

    /// Replaces every x of `xs` by [`derivative_f32`](Self::derivative_f32) at x, with the same
    /// results, eight at a time where the CPU has AVX2's gathers.
    pub fn derivatives_f32(&self, xs: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            unsafe { self.derivatives_avx2(xs) };
            return;
        }
        xs.iter_mut().for_each(|x| *x = self.derivative_f32(*x));
    }

    /// The steps of `derivative_f32` in vector form: the same operations, so the same roundings.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn derivatives_avx2(&self, xs: &mut [f32]) {
        use std::arch::x86_64::*;
        let range = _mm256_set1_ps(Self::RANGE as f32);
        let per_unit = _mm256_set1_ps(Self::PER_UNIT as f32);
        let limit = _mm256_set1_ps((self.values.len() - 1) as f32);
        let mut chunks = xs.chunks_exact_mut(8);
        for chunk in &mut chunks {
            // SAFETY: the chunk holds eight f32.
            let x = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            let u = _mm256_mul_ps(_mm256_add_ps(x, range), per_unit);
            let inside = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GE_OQ>(u, _mm256_setzero_ps()),
                _mm256_cmp_ps::<_CMP_LT_OQ>(u, limit),
            );
            if _mm256_movemask_ps(inside) != 0xFF {
                chunk.iter_mut().for_each(|x| *x = self.derivative_f32(*x));
                continue;
            }
            let k = _mm256_cvttps_epi32(u);
            let f = _mm256_sub_ps(u, _mm256_cvtepi32_ps(k));
            // SAFETY: every k lies in 0..len - 1 (checked above), an index of `steps`, whose
            // pairs are 8 bytes each.
            let (low, high) = unsafe {
                let pairs = self.steps.as_ptr().cast::<i64>();
                (
                    _mm256_castsi256_ps(_mm256_i32gather_epi64::<8>(pairs, _mm256_castsi256_si128(k))),
                    _mm256_castsi256_ps(_mm256_i32gather_epi64::<8>(pairs, _mm256_extracti128_si256::<1>(k))),
                )
            };
            // (a0 d0 a1 d1 | a2 d2 a3 d3) and (a4 d4 ...) into a0..a7 and d0..d7.
            let a = _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(low, high));
            let slope = _mm256_castps_pd(_mm256_shuffle_ps::<0b11_01_11_01>(low, high));
            let a = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(a));
            let slope = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(slope));
            let d = _mm256_add_ps(a, _mm256_mul_ps(f, slope));
            // SAFETY: as the load.
            unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), d) };
        }
        chunks.into_remainder().iter_mut().for_each(|x| *x = self.derivative_f32(*x));
    }
}

/// How a Heaviside unit uses its surrogate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpikeMode {
    /// Forward H(x), backward S'(x): spikes stay binary (SNN spikes, DHN, BNN).
    #[default]
    Surrogate,
    /// Forward S(x) itself, backward its exact derivative; hardened to H(x) at evaluation (ICBM
    /// concepts, and gradient checks against finite differences).
    Smooth,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_and_scalar_table_lookups_agree_bit_for_bit() {
        let table = DerivativeTable::new(Surrogate::default());
        // Inside the table, at its edges, outside it, and in a length that leaves a remainder.
        let xs: Vec<f32> = (0..4003).map(|k| (k as f32 - 2001.0) * 0.009 + 1e-4 * (k % 7) as f32).collect();
        let mut fast = xs.clone();
        table.derivatives_f32(&mut fast);
        for (x, d) in xs.iter().zip(&fast) {
            assert_eq!(d.to_bits(), table.derivative_f32(*x).to_bits(), "at {x}");
        }
        assert!(xs.iter().any(|&x| x < -16.0) && xs.iter().any(|&x| x > 16.0));
    }

    fn grid() -> impl Iterator<Item = f64> {
        (-400..=400).map(|i| i as f64 * 0.005 + 0.00137)
    }

    #[test]
    fn every_derivative_matches_the_numerical_derivative_of_its_primitive() {
        for s in Surrogate::all() {
            for x in grid() {
                // Skip the kinks of the piecewise surrogates, where no derivative exists.
                let kinks: &[f64] = match s {
                    Surrogate::Triangle { width } => &[-width, 0.0, width],
                    Surrogate::Ste { width } => &[-width / 2.0, width / 2.0],
                    Surrogate::FastSigmoid { .. } => &[0.0],
                    _ => &[],
                };
                let h = 1e-6;
                if kinks.iter().any(|k| (x - k).abs() < 2.0 * h) {
                    continue;
                }
                let numeric = (s.primitive(x + h) - s.primitive(x - h)) / (2.0 * h);
                let analytic = s.derivative(x);
                assert!(
                    (numeric - analytic).abs() <= 1e-5 * analytic.abs().max(1.0),
                    "{s} at x = {x}: analytic {analytic}, numeric {numeric}"
                );
            }
        }
    }

    #[test]
    fn primitives_rise_from_zero_to_one_with_unit_area_derivatives() {
        for s in Surrogate::all() {
            // Fast sigmoid and arctan approach their limits like 1 / (k |x|).
            let slow = matches!(s, Surrogate::FastSigmoid { .. } | Surrogate::Arctan { .. });
            let limit = if slow { 1e-2 } else { 1e-6 };
            assert!(s.primitive(-50.0).abs() < limit, "{s}");
            assert!((s.primitive(50.0) - 1.0).abs() < limit, "{s}");
            // Trapezoid rule on a fine grid, wide enough for the heavy tails.
            let (a, b, n) = (-20.0, 20.0, 400_000);
            let h = (b - a) / n as f64;
            let area: f64 =
                (0..=n).map(|i| s.derivative(a + i as f64 * h) * if i == 0 || i == n { 0.5 } else { 1.0 }).sum::<f64>()
                    * h;
            let tolerance = if slow { 2e-2 } else { 1e-3 };
            assert!((area - 1.0).abs() < tolerance, "{s}: area {area}");
        }
    }

    #[test]
    fn htaf_is_one_half_at_zero_and_saturates() {
        let h = Surrogate::default();
        assert_eq!(h.primitive(0.0), 0.5);
        assert!(h.primitive(-3.0) < 1e-6 && h.primitive(3.0) > 1.0 - 1e-6);
        assert!(h.primitive(-0.01) < 0.5 && h.primitive(0.01) > 0.5);
    }

    #[test]
    fn htaf_has_a_heavier_tail_than_the_sigmoid_of_equal_slope_at_zero() {
        // Parameters giving HTAF the slope at zero of snnTorch's default sigmoid (k = 25).
        let htaf = Surrogate::Htaf { alpha: 4.0, beta: 6.0 };
        let Surrogate::Htaf { alpha, beta } = htaf else { unreachable!() };
        // Sigmoid with the same derivative at zero: k / 4 = a b / (4 (s(a) - s(-a))).
        let k = alpha * beta / (logistic(alpha) - logistic(-alpha));
        let sigmoid = Surrogate::Sigmoid { slope: k };
        assert!((htaf.derivative(0.0) - sigmoid.derivative(0.0)).abs() < 1e-12);
        // The ratio of the derivatives grows like exp((k - 2 b) |x|) = exp(12.9 |x|):
        // measured 2.3 at |x| = 0.25, 45 at 0.5, 2.8e4 at 1 (beyond about 1.4 the sigmoid's
        // derivative underflows to 0 in f64).
        let ratio = |x: f64| htaf.derivative(x) / sigmoid.derivative(x);
        assert!(
            ratio(0.25) > 2.0 && ratio(0.5) > 40.0 && ratio(1.0) > 1e4,
            "{} {} {}",
            ratio(0.25),
            ratio(0.5),
            ratio(1.0)
        );
        // Near threshold (|x| < 0.15) HTAF is slightly narrower (0.94 of the sigmoid at 0.1).
        assert!(
            (2..28).all(|i| ratio(i as f64 * 0.05) < ratio((i + 1) as f64 * 0.05)),
            "the ratio grows into the tails"
        );
        // Gradient mass beyond |x| = 0.25, i.e. reaching neurons far from threshold: measured
        // 0.0168 for HTAF against 0.0040 for the sigmoid.
        let tail = |s: &Surrogate| 1.0 - (s.primitive(0.25) - s.primitive(-0.25));
        assert!(tail(&htaf) > 4.0 * tail(&sigmoid), "tail mass {} vs {}", tail(&htaf), tail(&sigmoid));
    }

    #[test]
    fn the_interpolated_table_follows_the_closed_form() {
        for s in Surrogate::all() {
            let table = DerivativeTable::new(s);
            let peak = s.derivative(0.0);
            let worst = (-20_000..=20_000)
                .map(|i| i as f64 * 0.001 + 0.000_37)
                .map(|x| (table.derivative(x) - s.derivative(x)).abs())
                .fold(0.0, f64::max);
            // The rectangle jumps at its edges (one grid cell of error there); the fast sigmoid's
            // kink at 0 is where interpolation errs most among the others.
            let bound = match s {
                Surrogate::Ste { .. } => peak,
                Surrogate::FastSigmoid { .. } | Surrogate::Triangle { .. } => 5e-4 * peak,
                _ => 1e-4 * peak,
            };
            assert!(worst <= bound, "{s}: worst error {worst}, peak {peak}");
        }
    }

    #[test]
    fn names_parse_and_unknown_names_list_the_valid_ones() {
        for (name, s) in NAMES.iter().zip(Surrogate::all()) {
            assert_eq!(s.name(), *name);
        }
        assert_eq!("Rectangle".parse::<Surrogate>().unwrap().name(), "ste");
        let err = "relu".parse::<Surrogate>().unwrap_err().to_string();
        assert!(
            err.contains("\"relu\"") && err.contains("htaf, sigmoid, fast-sigmoid, arctan, triangle, ste"),
            "{err}"
        );
    }

    #[test]
    fn surrogates_read_from_ron_with_defaults() {
        let s: Surrogate = ron::from_str("Htaf(beta: 3.0)").unwrap();
        assert_eq!(Surrogate::default(), Surrogate::Htaf { alpha: 4.0, beta: 2.0 });
        assert_eq!(s, Surrogate::Htaf { alpha: 4.0, beta: 3.0 });
        assert!(ron::from_str::<Surrogate>("Htaf(gamma: 1.0)").is_err());
        assert_eq!(
            Surrogate::Sigmoid { slope: -1.0 }.problems("surrogate"),
            vec!["surrogate.slope: must be a positive number, got -1"]
        );
    }
}
