//! Synapse storage on the target side. A projection's targets are cut into fixed blocks
//! ([`block_size`], decided by the target population's size alone, never by the thread count);
//! each block holds, per source neuron, the row of its synapses onto that block's targets
//! (CSR), with targets as 16-bit offsets within the block and weights as parallel arrays
//! (2 + 4 bytes per synapse), and delays either shared by the whole projection or stored per
//! synapse (2 more bytes), each row sorted by (delay, target). A block is written by one task
//! only, so spikes are delivered in parallel without atomics and in the same order for any
//! number of threads (NEST and GeNN keep synapses with their targets for the same reason).
//!
//! Construction is per target neuron: target `j` draws its sources, then their weights, then
//! their delays from its own stream (seed, projection, j), so blocks build in parallel and the
//! network a seed gives does not depend on threads, on build order or on how neurons are
//! shared among processes.

use std::ops::Range;

use rand::RngExt;
use rand::seq::index;
use rayon::prelude::*;

use crate::rng::{Stream, geometric_skip};
use crate::spec::{Connect, Distribution};

/// Smallest and largest number of targets per block; the largest keeps offsets within 16 bits.
pub const MIN_BLOCK: usize = 4096;
pub const MAX_BLOCK: usize = 1 << 16;

/// Targets per block for a population of `n` neurons: at most about 64 blocks (a spike looks up
/// its row in every block), at least [`MIN_BLOCK`] targets each (a block is one parallel task).
pub fn block_size(n: usize) -> usize {
    (n / 64).next_power_of_two().clamp(MIN_BLOCK, MAX_BLOCK)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Delays {
    /// Every synapse of the projection has this delay (in steps).
    Uniform(u16),
    /// Delays are stored per synapse; these are the distinct values present, ascending.
    PerSynapse { values: Vec<u16> },
}

/// The synapses of one projection onto one block of targets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Block {
    /// Rows are kept for sources `first_source..first_source + row_start.len() - 1` only (the
    /// others have no synapse here), so a one-to-one projection costs no row per source.
    pub first_source: u32,
    /// Row `r` (source `first_source + r`) holds synapses `row_start[r]..row_start[r + 1]`.
    pub row_start: Vec<u32>,
    /// Target of each synapse, as an offset from the block's first target.
    pub targets: Vec<u16>,
    pub weights: Vec<f32>,
    /// Delay in steps of each synapse; empty when the projection's delays are uniform.
    pub delays: Vec<u16>,
}

impl Block {
    /// Synapses of `source` in this block (empty when it has none).
    #[inline]
    pub fn row(&self, source: usize) -> Range<usize> {
        let r = source.wrapping_sub(self.first_source as usize);
        if r < self.row_start.len().saturating_sub(1) {
            self.row_start[r] as usize..self.row_start[r + 1] as usize
        } else {
            0..0
        }
    }

    /// Asks the processor to fetch `source`'s row start into cache (a hint only).
    #[inline]
    pub fn prefetch_row_start(&self, source: usize) {
        let r = source.wrapping_sub(self.first_source as usize);
        if r < self.row_start.len() {
            prefetch(&self.row_start[r]);
        }
    }

    /// Asks the processor to fetch `source`'s row into cache: rows lie at random places in
    /// memory, so without the hint every row costs a few memory latencies in turn.
    #[inline]
    pub fn prefetch_row(&self, source: usize) {
        let row = self.row(source);
        for k in row.clone().step_by(32) {
            prefetch(&self.targets[k]);
        }
        for k in row.step_by(16) {
            prefetch(&self.weights[k]);
        }
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(self.row_start.as_slice())
            + std::mem::size_of_val(self.targets.as_slice())
            + std::mem::size_of_val(self.weights.as_slice())
            + std::mem::size_of_val(self.delays.as_slice())
    }
}

/// A cache-line prefetch hint; nothing where the architecture has none.
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch never faults and does not change memory; SSE is part of x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// The synapses of one projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Synapses {
    pub n_source: usize,
    pub n_target: usize,
    /// Targets per block: block `b` holds targets `b * block..`.
    pub block: usize,
    pub blocks: Vec<Block>,
    pub delays: Delays,
}

/// One synapse, as [`Synapses::iter`] lists them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Synapse {
    pub source: u32,
    pub target: u32,
    pub weight: f32,
    pub delay: u16,
}

impl Synapses {
    pub fn len(&self) -> usize {
        self.blocks.iter().map(|b| b.targets.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn max_delay(&self) -> u16 {
        match &self.delays {
            Delays::Uniform(d) => *d,
            Delays::PerSynapse { values } => values.last().copied().unwrap_or(0),
        }
    }

    /// Bytes held by the arrays, row starts included: the memory that grows with the network.
    pub fn heap_bytes(&self) -> usize {
        self.blocks.iter().map(Block::heap_bytes).sum()
    }

    /// Every synapse, block by block, then by source, then by (delay, target).
    pub fn iter(&self) -> impl Iterator<Item = Synapse> + '_ {
        self.blocks.iter().enumerate().flat_map(move |(b, blk)| {
            (0..blk.row_start.len().saturating_sub(1)).flat_map(move |r| {
                let source = blk.first_source + r as u32;
                blk.row(source as usize).map(move |k| Synapse {
                    source,
                    target: (b * self.block) as u32 + blk.targets[k] as u32,
                    weight: blk.weights[k],
                    delay: match &self.delays {
                        Delays::Uniform(d) => *d,
                        Delays::PerSynapse { .. } => blk.delays[k],
                    },
                })
            })
        })
    }

    /// Replaces every weight by `weight(source, target)`.
    pub fn set_weights(&mut self, weight: impl Fn(usize, usize) -> f32) {
        let block = self.block;
        for (b, blk) in self.blocks.iter_mut().enumerate() {
            for r in 0..blk.row_start.len().saturating_sub(1) {
                let source = blk.first_source as usize + r;
                for k in blk.row_start[r] as usize..blk.row_start[r + 1] as usize {
                    blk.weights[k] = weight(source, b * block + blk.targets[k] as usize);
                }
            }
        }
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

/// A delay in whole steps: rounded, negative clipped to 0.
pub fn delay_steps(delay_ms: f64, dt_ms: f64) -> u16 {
    (delay_ms.max(0.0) / dt_ms).round().min(u16::MAX as f64) as u16
}

/// One incoming synapse of a target while it is being drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Incoming {
    pub source: u32,
    pub weight: f32,
    pub delay: u16,
}

/// The incoming synapses of one target, with scratch space reused from target to target.
#[derive(Debug, Clone, Default)]
pub struct Drawn {
    pub synapses: Vec<Incoming>,
    /// A bit per source, all clear between targets.
    seen: Vec<u64>,
}

/// A connection rule ready to draw the incoming synapses of any target.
pub struct Rule<'a> {
    plan: &'a ConnectionPlan<'a>,
    /// For explicit pairs: sources sorted by (target, source), and where each target's start.
    explicit: Option<(Vec<u32>, Vec<usize>)>,
}

impl<'a> Rule<'a> {
    pub fn new(plan: &'a ConnectionPlan<'a>) -> Self {
        let explicit = match plan.connect {
            Connect::Explicit(pairs) => {
                let mut by_target: Vec<(u32, u32)> =
                    pairs.iter().filter(|&&(s, t)| !(plan.exclude_self && s == t)).map(|&(s, t)| (t, s)).collect();
                by_target.sort_unstable();
                let mut start = vec![0usize; plan.n_target + 1];
                for &(t, _) in &by_target {
                    start[t as usize + 1] += 1;
                }
                for j in 0..plan.n_target {
                    start[j + 1] += start[j];
                }
                Some((by_target.into_iter().map(|(_, s)| s).collect(), start))
            }
            _ => None,
        };
        Rule { plan, explicit }
    }

    /// Replaces `drawn.synapses` by the incoming synapses of target `j`: sources first (ascending,
    /// except for a sparse fixed in-degree, in draw order), then a weight per synapse, then a
    /// delay per synapse, all from `rng` (target `j`'s stream).
    pub fn incoming(&self, j: usize, rng: &mut Stream, drawn: &mut Drawn) {
        let out = &mut drawn.synapses;
        out.clear();
        let plan = self.plan;
        let ns = plan.n_source;
        let skip = |i: usize| plan.exclude_self && i == j;
        let mut push = |i: usize| out.push(Incoming { source: i as u32, weight: 0.0, delay: 0 });
        match plan.connect {
            Connect::AllToAll => (0..ns).filter(|&i| !skip(i)).for_each(push),
            Connect::OneToOne => {
                if j < ns && !skip(j) {
                    push(j)
                }
            }
            Connect::FixedProbability(p) => {
                let p = *p;
                if p >= 1.0 {
                    (0..ns).filter(|&i| !skip(i)).for_each(push);
                } else if p > 0.0 {
                    let ln_q = (-p).ln_1p();
                    let mut i = geometric_skip(rng, ln_q);
                    while i < ns as u64 {
                        if !skip(i as usize) {
                            push(i as usize);
                        }
                        i = i.saturating_add(1 + geometric_skip(rng, ln_q));
                    }
                }
            }
            Connect::FixedInDegree(k) => {
                let (k, pool) = (*k as usize, if plan.exclude_self { ns - 1 } else { ns });
                if 4 * k > pool {
                    index::sample(rng, pool, k).into_iter().for_each(push);
                    out.sort_unstable_by_key(|x| x.source);
                } else {
                    // Few of many: draw with replacement, skipping values already drawn, until
                    // k are distinct. This is a uniform k-subset (the first k distinct values
                    // of a uniform sequence), in draw order; `seen` marks the drawn values and
                    // is cleared again afterwards, so it costs O(k), not O(pool).
                    let seen = &mut drawn.seen;
                    seen.resize(seen.len().max(pool.div_ceil(64)), 0);
                    while out.len() < k {
                        let s = rng.random_range(0..pool as u32);
                        let (word, bit) = (s as usize / 64, 1u64 << (s % 64));
                        if seen[word] & bit == 0 {
                            seen[word] |= bit;
                            out.push(Incoming { source: s, weight: 0.0, delay: 0 });
                        }
                    }
                    for x in out.iter() {
                        seen[x.source as usize / 64] = 0;
                    }
                }
                // Excluding self: indices at or past j shift up by one.
                if plan.exclude_self {
                    out.iter_mut().filter(|x| x.source as usize >= j).for_each(|x| x.source += 1);
                }
            }
            Connect::Explicit(_) => {
                let (sources, start) = self.explicit.as_ref().expect("indexed in Rule::new");
                sources[start[j]..start[j + 1]].iter().for_each(|&s| push(s as usize));
            }
        }
        for x in out.iter_mut() {
            x.weight = plan.weight.sample(rng) as f32;
        }
        if !matches!(plan.delay_ms, Distribution::Constant(_)) {
            for x in out.iter_mut() {
                x.delay = delay_steps(plan.delay_ms.sample(rng), plan.dt_ms);
            }
        }
    }
}

/// Builds a projection's synapses, blocks in parallel; `target_stream(j)` is target `j`'s
/// random stream, and only blocks `b` with `owned(b)` are built (the others stay empty: another
/// rank holds them). Fails only when one block would hold more than 2^32 synapses.
pub fn build(
    plan: &ConnectionPlan,
    target_stream: impl Fn(usize) -> Stream + Sync,
    owned: impl Fn(usize) -> bool + Sync,
) -> Result<Synapses, String> {
    let rule = Rule::new(plan);
    let block = block_size(plan.n_target);
    let uniform = match plan.delay_ms {
        Distribution::Constant(d) => Some(delay_steps(*d, plan.dt_ms)),
        _ => None,
    };
    let blocks = (0..plan.n_target.div_ceil(block))
        .into_par_iter()
        .map(|b| match owned(b) {
            true => {
                build_block(&rule, b * block..((b + 1) * block).min(plan.n_target), uniform.is_none(), &target_stream)
            }
            false => Ok(Block::default()),
        })
        .collect::<Result<Vec<_>, String>>()?;
    let delays = match uniform {
        Some(d) => Delays::Uniform(d),
        None => {
            let mut values: Vec<u16> = blocks.iter().flat_map(|b| b.delays.iter().copied()).collect();
            values.sort_unstable();
            values.dedup();
            Delays::PerSynapse { values }
        }
    };
    Ok(Synapses { n_source: plan.n_source, n_target: plan.n_target, block, blocks, delays })
}

/// The block of targets `targets`: each target's incoming synapses, then sorted into rows by
/// source (a counting sort; targets stay ascending), each row by delay when delays vary.
fn build_block(
    rule: &Rule,
    targets: Range<usize>,
    per_synapse_delays: bool,
    target_stream: &(impl Fn(usize) -> Stream + Sync),
) -> Result<Block, String> {
    let first_target = targets.start;
    let mut drawn: Vec<(u32, u16, f32, u16)> = Vec::new();
    let mut buf = Drawn::default();
    for j in targets.clone() {
        rule.incoming(j, &mut target_stream(j), &mut buf);
        if drawn.is_empty() {
            drawn.reserve(buf.synapses.len() * targets.len());
        }
        drawn.extend(buf.synapses.iter().map(|x| (x.source, (j - first_target) as u16, x.weight, x.delay)));
    }
    if drawn.len() > u32::MAX as usize {
        return Err(format!(
            "targets {}..{} would receive {} synapses, more than one block can index (2^32)",
            targets.start,
            targets.end,
            drawn.len()
        ));
    }
    if drawn.is_empty() {
        return Ok(Block::default());
    }
    let first = drawn.iter().map(|x| x.0).min().expect("not empty");
    let last = drawn.iter().map(|x| x.0).max().expect("not empty");
    let rows = (last - first) as usize + 1;
    let mut row_start = vec![0u32; rows + 1];
    for x in &drawn {
        row_start[(x.0 - first) as usize + 1] += 1;
    }
    for r in 0..rows {
        row_start[r + 1] += row_start[r];
    }
    let mut next: Vec<u32> = row_start[..rows].to_vec();
    let n = drawn.len();
    let (mut tgt, mut w, mut d) = (vec![0u16; n], vec![0f32; n], vec![0u16; if per_synapse_delays { n } else { 0 }]);
    for &(s, t, weight, delay) in &drawn {
        let slot = &mut next[(s - first) as usize];
        let k = *slot as usize;
        *slot += 1;
        tgt[k] = t;
        w[k] = weight;
        if per_synapse_delays {
            d[k] = delay;
        }
    }
    drop(drawn);
    if per_synapse_delays {
        let mut scratch: Vec<(u16, u16, f32)> = Vec::new();
        for r in 0..rows {
            let range = row_start[r] as usize..row_start[r + 1] as usize;
            scratch.clear();
            scratch.extend(range.clone().map(|k| (d[k], tgt[k], w[k])));
            scratch.sort_by_key(|&(delay, t, _)| (delay, t));
            for (k, &(delay, t, weight)) in range.zip(&scratch) {
                (d[k], tgt[k], w[k]) = (delay, t, weight);
            }
        }
    }
    Ok(Block { first_source: first, row_start, targets: tgt, weights: w, delays: d })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, item_stream};

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

    fn build_all(plan: &ConnectionPlan, streams: impl Fn(usize) -> Stream + Sync) -> Result<Synapses, String> {
        build(plan, streams, |_| true)
    }

    fn streams(seed: u64) -> impl Fn(usize) -> Stream + Sync {
        move |j| item_stream(seed, Purpose::Connectivity, 0, j as u64)
    }

    fn pairs(syn: &Synapses) -> Vec<(u32, u32)> {
        let mut p: Vec<_> = syn.iter().map(|s| (s.source, s.target)).collect();
        p.sort();
        p
    }

    #[test]
    fn rules_produce_the_expected_pairs() {
        let d0 = Distribution::Constant(0.0);
        let all = build_all(&plan(&Connect::AllToAll, 3, 2, false, &d0), streams(1)).unwrap();
        assert_eq!(pairs(&all), vec![(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]);
        let no_self = build_all(&plan(&Connect::AllToAll, 3, 3, true, &d0), streams(1)).unwrap();
        assert!(pairs(&no_self).iter().all(|&(i, j)| i != j));
        assert_eq!(no_self.len(), 6);
        let one = build_all(&plan(&Connect::OneToOne, 4, 4, false, &d0), streams(1)).unwrap();
        assert_eq!(pairs(&one), vec![(0, 0), (1, 1), (2, 2), (3, 3)]);
        let explicit =
            build_all(&plan(&Connect::Explicit(vec![(2, 0), (0, 1), (2, 1)]), 3, 2, false, &d0), streams(1)).unwrap();
        assert_eq!(pairs(&explicit), vec![(0, 1), (2, 0), (2, 1)]);
    }

    #[test]
    fn fixed_in_degree_gives_every_target_k_distinct_sources() {
        let d0 = Distribution::Constant(0.0);
        let syn = build_all(&plan(&Connect::FixedInDegree(5), 20, 30, true, &d0), streams(3)).unwrap();
        let mut per_target = vec![Vec::new(); 30];
        for (i, j) in pairs(&syn) {
            per_target[j as usize].push(i);
        }
        for (j, sources) in per_target.iter_mut().enumerate() {
            sources.dedup();
            assert_eq!(sources.len(), 5, "target {j}");
            assert!(!sources.contains(&(j as u32)));
        }
    }

    #[test]
    fn fixed_probability_density_matches_p_across_blocks() {
        let d0 = Distribution::Constant(0.0);
        let syn = build_all(&plan(&Connect::FixedProbability(0.02), 2000, 9000, false, &d0), streams(5)).unwrap();
        assert_eq!(syn.blocks.len(), 3);
        let expected: f64 = 0.02 * 2000.0 * 9000.0;
        let sd = (expected * 0.98).sqrt();
        assert!((syn.len() as f64 - expected).abs() < 4.0 * sd, "{} synapses", syn.len());
        for blk in &syn.blocks {
            for i in 0..2000 {
                assert!(blk.targets[blk.row(i)].windows(2).all(|w| w[0] < w[1]));
            }
        }
    }

    #[test]
    fn a_target_draws_the_same_synapses_in_any_block_layout() {
        // Target j's synapses depend on its own stream only: building 5000 targets or just the
        // first 100 gives those 100 the same sources and weights.
        let d = Distribution::Uniform { low: 0.0, high: 1.0 };
        let w = Distribution::Normal { mean: 1.0, std: 0.5 };
        let connect = Connect::FixedProbability(0.1);
        let mk = |nt| ConnectionPlan {
            connect: &connect,
            n_source: 300,
            n_target: nt,
            exclude_self: false,
            weight: &w,
            delay_ms: &d,
            dt_ms: 0.1,
        };
        let big = build_all(&mk(5000), streams(4)).unwrap();
        let small = build_all(&mk(100), streams(4)).unwrap();
        let key = |s: &Synapse| (s.target, s.source);
        let mut a: Vec<Synapse> = big.iter().filter(|s| s.target < 100).collect();
        let mut b: Vec<Synapse> = small.iter().collect();
        a.sort_by_key(key);
        b.sort_by_key(key);
        assert_eq!(a, b);
    }

    #[test]
    fn per_synapse_delays_are_rounded_and_grouped() {
        let delay = Distribution::Uniform { low: 0.0, high: 1.0 };
        let syn = build_all(&plan(&Connect::AllToAll, 5, 50, false, &delay), streams(9)).unwrap();
        let Delays::PerSynapse { values } = &syn.delays else { panic!("expected per-synapse delays") };
        assert!(values.iter().all(|&d| d <= 10) && values.windows(2).all(|w| w[0] < w[1]));
        let blk = &syn.blocks[0];
        for i in 0..5 {
            assert!(blk.delays[blk.row(i)].windows(2).all(|w| w[0] <= w[1]));
            assert!(blk.delays[blk.row(i)].iter().all(|d| values.contains(d)));
        }
    }

    #[test]
    fn one_to_one_keeps_rows_only_for_its_own_sources() {
        let d0 = Distribution::Constant(0.0);
        let syn = build_all(&plan(&Connect::OneToOne, 10_000, 10_000, false, &d0), streams(1)).unwrap();
        assert_eq!(syn.blocks.len(), 3);
        assert_eq!(syn.blocks[1].first_source, 4096);
        assert_eq!(syn.blocks[1].row_start.len(), 4097);
        assert_eq!(syn.blocks[1].row(4096), 0..1);
        assert_eq!(syn.blocks[1].row(10), 0..0);
        assert_eq!(syn.heap_bytes(), 10_000 * 6 + (10_000 + 3) * 4);
    }
}
