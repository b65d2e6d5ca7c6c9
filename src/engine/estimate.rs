//! What a network will cost before it is built: neurons, the expected number of synapses of
//! every connection rule, and the bytes the engine will hold, compared with the memory this
//! process may use. A network that cannot fit is refused in milliseconds instead of dying
//! minutes later in the allocator.

use std::fmt;
use std::path::Path;

use super::synapses::block_size;
use crate::error::{Error, Result};
use crate::spec::{Connect, Distribution, Model, SourceKind};

/// Bytes per neuron besides its synaptic variables: v, the first active step (refractoriness)
/// and the injected current, 8 bytes each.
const NEURON_BYTES: f64 = 24.0;
/// Bytes per synapse: a 16-bit target offset and an f32 weight, plus a 16-bit delay when the
/// delays vary; row starts are counted apart.
const SYNAPSE_BYTES: f64 = 6.0;
const DELAY_BYTES: f64 = 2.0;
/// A synapse while its block is drawn: (source, target, weight, delay).
const DRAWN_BYTES: f64 = 12.0;
/// The process itself: code, libraries, allocator, figures (CUBA, 0.3 million synapses, peaks
/// at 20 MB).
const BASE_BYTES: f64 = 15e6;

/// The estimate of one model's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub neurons: f64,
    pub synapses: f64,
    /// Peak bytes: network, build scratch, traces and rate bins (recorded spikes not included:
    /// they depend on the activity, 16 bytes each).
    pub bytes: f64,
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} neurons, {} synapses, about {} of memory",
            count(self.neurons),
            count(self.synapses),
            size(self.bytes)
        )
    }
}

/// `1234567` as `1234567`, `1.3e10` beyond a billion.
fn count(x: f64) -> String {
    if x < 1e9 { format!("{x:.0}") } else { format!("{x:.1e}") }
}

/// Bytes as MB or GB.
pub fn size(bytes: f64) -> String {
    match bytes {
        b if b >= 1e13 => format!("{:.1e} GB", b / 1e9),
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b => format!("{:.0} MB", (b / 1e6).max(1.0)),
    }
}

/// The expected synapses of one projection from `ns` to `nt` neurons.
fn expected_synapses(connect: &Connect, ns: f64, nt: f64, exclude_self: bool) -> f64 {
    let pairs = ns * nt - if exclude_self { nt } else { 0.0 };
    match connect {
        Connect::AllToAll => pairs,
        Connect::OneToOne => nt,
        Connect::FixedProbability(p) => p.clamp(0.0, 1.0) * pairs,
        Connect::FixedInDegree(k) => *k as f64 * nt,
        Connect::Explicit(pairs) => pairs.len() as f64,
    }
}

/// Estimates a checked model run for `steps` steps, with `threads` blocks built at once.
pub fn estimate(model: &Model, steps: u64, threads: usize) -> Estimate {
    let net = &model.network;
    let stim = &model.stimulus;
    let size_of = |name: &str| {
        let pop = net.populations.iter().find(|p| p.name == name).map(|p| p.size);
        pop.or_else(|| stim.sources.iter().find(|s| s.name == name).map(|s| s.size)).unwrap_or(0) as f64
    };
    let neurons: f64 = net.populations.iter().map(|p| p.size as f64).sum();
    let mut bytes = BASE_BYTES;
    for pop in &net.populations {
        let variables = super::synaptic_taus(model, &pop.name).len();
        bytes += pop.size as f64 * (NEURON_BYTES + 8.0 * variables as f64);
    }
    for src in &stim.sources {
        if let SourceKind::SpikeTimes { indices, .. } = &src.kind {
            bytes += indices.len() as f64 * 12.0;
        }
    }
    let mut synapses = 0.0;
    let mut largest_block = 0.0f64;
    for p in net.projections.iter().chain(&stim.projections) {
        let (ns, nt) = (size_of(&p.from), size_of(&p.to));
        let n = expected_synapses(&p.connect, ns, nt, p.from == p.to && !p.allow_autapses);
        let blocks = (nt / block_size(nt as usize) as f64).ceil().max(1.0);
        let per_block = n / blocks;
        let delay = if matches!(p.delay_ms, Distribution::Constant(_)) { 0.0 } else { DELAY_BYTES };
        // Each block keeps a row start per source present in it: at most all of them.
        bytes += n * (SYNAPSE_BYTES + delay) + blocks * 4.0 * (ns.min(per_block) + 1.0);
        largest_block = largest_block.max(per_block);
        synapses += n;
    }
    bytes += DRAWN_BYTES * largest_block * threads as f64;
    let traced: f64 = net.record.traces.iter().map(|t| t.ids.len() as f64).sum();
    bytes += steps as f64 * traced * 4.0;
    let bins = steps as f64 * net.dt_ms / net.record.rate_bin_ms.max(net.dt_ms);
    bytes += bins * (net.populations.len() + stim.sources.len()) as f64 * 4.0;
    Estimate { neurons, synapses, bytes }
}

/// Bytes this process may still allocate: the kernel's estimate of available memory, or the
/// cgroup's limit less its usage when that is smaller. None where neither can be read.
pub fn available_memory() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    });
    let read = |name: &str| std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(name)).ok();
    let cgroup = match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(current)) => match (max.trim().parse::<f64>(), current.trim().parse::<f64>()) {
            (Ok(max), Ok(current)) => Some((max - current).max(0.0)),
            _ => None, // "max": no limit
        },
        _ => None,
    };
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// Refuses a model whose estimate exceeds `available` bytes, naming the file.
pub fn check_fits(estimate: &Estimate, available: Option<f64>, path: &Path) -> Result<()> {
    match available {
        Some(free) if estimate.bytes > free => Err(Error::Data {
            path: path.to_path_buf(),
            message: format!(
                "needs about {} for {} synapses and {} neurons, {} available; make the network smaller",
                size(estimate.bytes),
                count(estimate.synapses),
                count(estimate.neurons),
                size(free)
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model_from_text;

    fn model(size: u32, connect: &str) -> Model {
        let network = format!(
            r#"Network(name: "m", populations: [(name: "n", size: {size},
                neuron: Lif(tau_mem_ms: 20.0, v_rest: 0.0, v_threshold: 1.0, v_reset: 0.0))],
                projections: [(from: "n", to: "n", connect: {connect}, weight: Constant(0.1),
                               synapse: Exponential(tau_ms: 5.0))])"#
        );
        model_from_text(&network, None).unwrap()
    }

    #[test]
    fn expected_synapses_follow_the_rule() {
        let e = estimate(&model(10_000, "FixedProbability(0.1)"), 10, 1);
        assert!((e.synapses - 1e7).abs() < 1.0);
        // Measured on benches/networks/synapses_10m.ron (the same with a drive): 179 MB peak
        // with 2 threads; this estimate is for 1.
        assert!(e.bytes > 1.0e8 && e.bytes < 2.5e8, "{}", e.bytes);
        let e = estimate(&model(4_000_000_000, "FixedProbability(0.02)"), 10, 2);
        assert!((e.synapses / 3.2e17 - 1.0).abs() < 1e-9);
        assert!(e.bytes > 1e18);
        assert_eq!(estimate(&model(100, "FixedInDegree(7)"), 10, 1).synapses, 700.0);
        assert_eq!(estimate(&model(100, "OneToOne"), 10, 1).synapses, 100.0);
    }

    #[test]
    fn too_large_is_refused_with_the_sizes() {
        let e = Estimate { neurons: 4e8, synapses: 1.3e10, bytes: 32e9 };
        let err = check_fits(&e, Some(22e9), Path::new("big.ron")).unwrap_err().to_string();
        assert!(err.contains("big.ron: needs about 32.0 GB for 1.3e10 synapses"), "{err}");
        assert!(err.contains("22.0 GB available"), "{err}");
        assert!(check_fits(&e, Some(40e9), Path::new("big.ron")).is_ok());
        assert!(check_fits(&e, None, Path::new("big.ron")).is_ok());
    }
}
