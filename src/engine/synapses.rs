//! Synapse storage: one compressed row per presynaptic neuron (CSR), with targets and weights as
//! parallel arrays (4 + 4 bytes per synapse) and delays either shared by the whole projection
//! or stored per synapse (2 more bytes), each row sorted by (delay, target) so that a spike's
//! writes into one delay slot are contiguous. Built once, then frozen.

use rand::seq::index;

use crate::rng::{Stream, geometric_skip};
use crate::spec::{Connect, Distribution};

#[derive(Debug, Clone, PartialEq)]
pub enum Delays {
    /// Every synapse of the projection has this delay (in steps).
    Uniform(u16),
    /// Delay in steps of each synapse, parallel to `targets`.
    PerSynapse(Vec<u16>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    /// Row `i` holds synapses `row_start[i]..row_start[i + 1]`.
    pub row_start: Vec<usize>,
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
    pub delays: Delays,
}

impl Csr {
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn row(&self, source: usize) -> std::ops::Range<usize> {
        self.row_start[source]..self.row_start[source + 1]
    }

    pub fn max_delay(&self) -> u16 {
        match &self.delays {
            Delays::Uniform(d) => *d,
            Delays::PerSynapse(ds) => ds.iter().copied().max().unwrap_or(0),
        }
    }

    /// Bytes held per synapse by the arrays that grow with the synapse count.
    pub fn bytes_per_synapse(&self) -> usize {
        let delay = if matches!(self.delays, Delays::PerSynapse(_)) { 2 } else { 0 };
        std::mem::size_of::<u32>() + std::mem::size_of::<f32>() + delay
    }
}

/// What a projection connects and how its synapses are initialised.
pub struct ConnectionPlan<'a> {
    pub connect: &'a Connect,
    pub n_source: usize,
    pub n_target: usize,
    /// True when source and target are the same population and autapses are not allowed.
    pub exclude_self: bool,
    pub weight: &'a Distribution,
    pub delay_ms: &'a Distribution,
    pub dt_ms: f64,
}

fn delay_steps(delay_ms: f64, dt_ms: f64) -> u16 {
    (delay_ms.max(0.0) / dt_ms).round().min(u16::MAX as f64) as u16
}

/// Builds the CSR of a projection: structure first, then weights and delays in row order, all
/// from one stream, so the result depends only on the stream's seed.
pub fn build(plan: &ConnectionPlan, rng: &mut Stream) -> Csr {
    let (row_start, targets) = structure(plan, rng);
    let weights: Vec<f32> = (0..targets.len()).map(|_| plan.weight.sample(rng) as f32).collect();
    let delays = match plan.delay_ms {
        Distribution::Constant(d) => Delays::Uniform(delay_steps(*d, plan.dt_ms)),
        dist => Delays::PerSynapse((0..targets.len()).map(|_| delay_steps(dist.sample(rng), plan.dt_ms)).collect()),
    };
    let mut csr = Csr { row_start, targets, weights, delays };
    sort_rows_by_delay(&mut csr);
    csr
}

/// Row structure (row starts and targets, targets ascending within a row).
fn structure(plan: &ConnectionPlan, rng: &mut Stream) -> (Vec<usize>, Vec<u32>) {
    let (ns, nt) = (plan.n_source, plan.n_target);
    let skip = |i: usize, j: usize| plan.exclude_self && i == j;
    match plan.connect {
        Connect::AllToAll => {
            rows_from(ns, ns * nt, |i, out| out.extend((0..nt).filter(|&j| !skip(i, j)).map(|j| j as u32)))
        }
        Connect::OneToOne => rows_from(ns, ns, |i, out| {
            if !skip(i, i) {
                out.push(i as u32)
            }
        }),
        Connect::FixedProbability(p) => {
            let p = *p;
            let expected = (ns as f64 * nt as f64 * p * 1.01 + 1024.0) as usize;
            if p <= 0.0 {
                return rows_from(ns, 0, |_, _| {});
            }
            if p >= 1.0 {
                return structure(&ConnectionPlan { connect: &Connect::AllToAll, ..*plan }, rng);
            }
            let ln_q = (-p).ln_1p();
            rows_from(ns, expected, |i, out| {
                let mut j = geometric_skip(rng, ln_q);
                while j < nt as u64 {
                    if !skip(i, j as usize) {
                        out.push(j as u32);
                    }
                    j = j.saturating_add(1 + geometric_skip(rng, ln_q));
                }
            })
        }
        Connect::FixedInDegree(k) => {
            let k = *k as usize;
            // Sources are drawn per target, so pairs come out column-wise and are transposed.
            let mut pairs = Vec::with_capacity(nt * k);
            for j in 0..nt {
                let pool = if plan.exclude_self { ns - 1 } else { ns };
                for s in index::sample(rng, pool, k).into_iter() {
                    // Excluding self: indices at or past j shift up by one.
                    let s = if plan.exclude_self && s >= j { s + 1 } else { s };
                    pairs.push((s as u32, j as u32));
                }
            }
            transpose(ns, pairs)
        }
        Connect::Explicit(pairs) => {
            transpose(ns, pairs.iter().copied().filter(|&(s, t)| !skip(s as usize, t as usize)).collect())
        }
    }
}

fn rows_from(ns: usize, capacity: usize, mut fill_row: impl FnMut(usize, &mut Vec<u32>)) -> (Vec<usize>, Vec<u32>) {
    let mut row_start = Vec::with_capacity(ns + 1);
    let mut targets = Vec::with_capacity(capacity);
    row_start.push(0);
    for i in 0..ns {
        fill_row(i, &mut targets);
        row_start.push(targets.len());
    }
    targets.shrink_to_fit();
    (row_start, targets)
}

/// (source, target) pairs into rows, by counting sort; targets ascending within each row.
fn transpose(ns: usize, mut pairs: Vec<(u32, u32)>) -> (Vec<usize>, Vec<u32>) {
    pairs.sort_unstable();
    let mut row_start = vec![0usize; ns + 1];
    for &(s, _) in &pairs {
        row_start[s as usize + 1] += 1;
    }
    for i in 0..ns {
        row_start[i + 1] += row_start[i];
    }
    let targets = pairs.into_iter().map(|(_, t)| t).collect();
    (row_start, targets)
}

/// Orders each row by (delay, target); rows built in target order stay so when delays are shared.
fn sort_rows_by_delay(csr: &mut Csr) {
    let Delays::PerSynapse(delays) = &mut csr.delays else {
        return;
    };
    let mut scratch: Vec<(u16, u32, f32)> = Vec::new();
    for i in 0..csr.row_start.len() - 1 {
        let r = csr.row_start[i]..csr.row_start[i + 1];
        scratch.clear();
        scratch.extend(r.clone().map(|k| (delays[k], csr.targets[k], csr.weights[k])));
        scratch.sort_by_key(|&(d, t, _)| (d, t));
        for (k, &(d, t, w)) in r.zip(&scratch) {
            delays[k] = d;
            csr.targets[k] = t;
            csr.weights[k] = w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, stream};

    fn plan<'a>(
        connect: &'a Connect,
        ns: usize,
        nt: usize,
        exclude_self: bool,
        delay: &'a Distribution,
    ) -> ConnectionPlan<'a> {
        static W: Distribution = Distribution::Constant(1.0);
        ConnectionPlan { connect, n_source: ns, n_target: nt, exclude_self, weight: &W, delay_ms: delay, dt_ms: 0.1 }
    }

    fn pairs(csr: &Csr) -> Vec<(usize, u32)> {
        (0..csr.row_start.len() - 1)
            .flat_map(|i| csr.row(i).map(move |k| (i, k)))
            .map(|(i, k)| (i, csr.targets[k]))
            .collect()
    }

    #[test]
    fn rules_produce_the_expected_pairs() {
        let d0 = Distribution::Constant(0.0);
        let mut rng = stream(1, Purpose::Connectivity, 0);
        let all = build(&plan(&Connect::AllToAll, 3, 2, false, &d0), &mut rng);
        assert_eq!(pairs(&all), vec![(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]);
        let no_self = build(&plan(&Connect::AllToAll, 3, 3, true, &d0), &mut rng);
        assert!(pairs(&no_self).iter().all(|&(i, j)| i != j as usize));
        assert_eq!(no_self.len(), 6);
        let one = build(&plan(&Connect::OneToOne, 4, 4, false, &d0), &mut rng);
        assert_eq!(pairs(&one), vec![(0, 0), (1, 1), (2, 2), (3, 3)]);
        let explicit = build(&plan(&Connect::Explicit(vec![(2, 0), (0, 1), (2, 1)]), 3, 2, false, &d0), &mut rng);
        assert_eq!(pairs(&explicit), vec![(0, 1), (2, 0), (2, 1)]);
    }

    #[test]
    fn fixed_in_degree_gives_every_target_k_distinct_sources() {
        let d0 = Distribution::Constant(0.0);
        let mut rng = stream(3, Purpose::Connectivity, 0);
        let csr = build(&plan(&Connect::FixedInDegree(5), 20, 30, true, &d0), &mut rng);
        let mut per_target = vec![Vec::new(); 30];
        for (i, j) in pairs(&csr) {
            per_target[j as usize].push(i);
        }
        for (j, sources) in per_target.iter_mut().enumerate() {
            sources.sort();
            sources.dedup();
            assert_eq!(sources.len(), 5, "target {j}");
            assert!(!sources.contains(&j));
        }
    }

    #[test]
    fn fixed_probability_density_matches_p() {
        let d0 = Distribution::Constant(0.0);
        let mut rng = stream(5, Purpose::Connectivity, 0);
        let csr = build(&plan(&Connect::FixedProbability(0.02), 2000, 2000, false, &d0), &mut rng);
        let expected: f64 = 0.02 * 2000.0 * 2000.0;
        let sd = (expected * 0.98).sqrt();
        assert!((csr.len() as f64 - expected).abs() < 4.0 * sd, "{} synapses", csr.len());
        for i in 0..2000 {
            assert!(csr.targets[csr.row(i)].windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn per_synapse_delays_are_rounded_and_grouped() {
        let delay = Distribution::Uniform { low: 0.0, high: 1.0 };
        let mut rng = stream(9, Purpose::Connectivity, 0);
        let csr = build(&plan(&Connect::AllToAll, 5, 50, false, &delay), &mut rng);
        let Delays::PerSynapse(ds) = &csr.delays else { panic!("expected per-synapse delays") };
        assert!(ds.iter().all(|&d| d <= 10));
        for i in 0..5 {
            let r = csr.row(i);
            assert!(ds[r].windows(2).all(|w| w[0] <= w[1]));
        }
        assert_eq!(csr.bytes_per_synapse(), 10);
    }
}
