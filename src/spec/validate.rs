//! Semantic checks: everything serde cannot see. Each problem starts with its field path
//! (`populations[1].neuron.Lif.tau_mem_ms`) and shows the offending value; all problems of a file
//! are collected before reporting, so a user fixes them in one go.

use crate::data::encode::Encoder;
use std::collections::HashMap;

use super::common::{Connect, Distribution, Projection, Synapse};
use super::layers::{Shape, check_layers};
use super::network::{Network, Neuron, SpikeRecord};
use super::stimulus::{Current, SourceKind, Stimulus};
use super::training::{Optimizer, Readout, Schedule, Training};

/// What a projection or monitor may refer to: a population's size and whether it is made of
/// neurons (a valid projection target) or of spike generators.
#[derive(Debug, Clone, Copy)]
pub struct PopulationInfo {
    pub size: u32,
    pub is_neuron: bool,
}

pub type PopulationTable = HashMap<String, PopulationInfo>;

fn positive(problems: &mut Vec<String>, path: &str, value: f64) {
    if !(value.is_finite() && value > 0.0) {
        problems.push(format!("{path}: must be a positive number, got {value}"));
    }
}

fn non_negative(problems: &mut Vec<String>, path: &str, value: f64) {
    if !(value.is_finite() && value >= 0.0) {
        problems.push(format!("{path}: must be a finite number >= 0, got {value}"));
    }
}

fn finite(problems: &mut Vec<String>, path: &str, value: f64) {
    if !value.is_finite() {
        problems.push(format!("{path}: must be a finite number, got {value}"));
    }
}

/// Checks a network file on its own; returns the table of its populations for later checks.
pub fn check_network(net: &Network) -> (PopulationTable, Vec<String>) {
    let mut problems = Vec::new();
    positive(&mut problems, "dt_ms", net.dt_ms);
    positive(&mut problems, "duration_ms", net.duration_ms);
    if net.is_layered() {
        check_layered(net, &mut problems);
        return (PopulationTable::new(), problems);
    }
    if net.populations.is_empty() {
        problems.push("populations: the network has no population".into());
    }
    let mut table = PopulationTable::new();
    for (i, pop) in net.populations.iter().enumerate() {
        let path = format!("populations[{i}]");
        if pop.name.trim().is_empty() {
            problems.push(format!("{path}.name: must not be empty"));
        }
        if table.insert(pop.name.clone(), PopulationInfo { size: pop.size, is_neuron: true }).is_some() {
            problems.push(format!("{path}.name: population name {:?} is used twice", pop.name));
        }
        if pop.size == 0 {
            problems.push(format!("{path}.size: population {:?} is empty (size 0)", pop.name));
        }
        match pop.neuron {
            Neuron::Lif { tau_mem_ms, v_rest, v_threshold, v_reset, refractory_ms, r_mem_mohm, .. } => {
                let lif = format!("{path}.neuron.Lif");
                positive(&mut problems, &format!("{lif}.tau_mem_ms"), tau_mem_ms);
                non_negative(&mut problems, &format!("{lif}.refractory_ms"), refractory_ms);
                positive(&mut problems, &format!("{lif}.r_mem_mohm"), r_mem_mohm);
                finite(&mut problems, &format!("{lif}.v_rest"), v_rest);
                finite(&mut problems, &format!("{lif}.v_reset"), v_reset);
                finite(&mut problems, &format!("{lif}.v_threshold"), v_threshold);
                if v_threshold <= v_reset {
                    problems
                        .push(format!("{lif}.v_threshold: threshold {v_threshold} must be above v_reset {v_reset}"));
                }
            }
        }
        if let Some(init) = &pop.init_v {
            problems.extend(init.problems(&format!("{path}.init_v")));
        }
    }
    for (i, input) in net.inputs.iter().enumerate() {
        let path = format!("inputs[{i}]");
        if table.insert(input.name.clone(), PopulationInfo { size: input.size, is_neuron: false }).is_some() {
            problems.push(format!("{path}.name: population name {:?} is used twice", input.name));
        }
        if input.size == 0 {
            problems.push(format!("{path}.size: input {:?} is empty (size 0)", input.name));
        }
    }
    for (i, proj) in net.projections.iter().enumerate() {
        check_projection(proj, &format!("projections[{i}]"), &table, net.dt_ms, &mut problems);
    }
    if let Some(training) = &net.training {
        check_training(net, training, &mut problems);
    }
    check_record(net, &table, &mut problems);
    (table, problems)
}

/// The input's shape for a layered model: its `shape` if given, else a flat vector.
pub fn input_shape(net: &Network) -> Option<Shape> {
    let input = net.inputs.first()?;
    Some(match input.shape {
        Some((c, h, w)) => Shape::Image { channels: c as usize, height: h as usize, width: w as usize },
        None => Shape::Flat(input.size as usize),
    })
}

fn check_layered(net: &Network, problems: &mut Vec<String>) {
    if !net.populations.is_empty() || !net.projections.is_empty() {
        problems.push("layers: a layered model has no populations or projections; describe it with layers only".into());
    }
    if net.inputs.len() != 1 {
        problems.push(format!("inputs: a layered model needs exactly one input, found {}", net.inputs.len()));
        return;
    }
    let input = &net.inputs[0];
    if let Some((c, h, w)) = input.shape
        && c as u64 * h as u64 * w as u64 != input.size as u64
    {
        problems.push(format!(
            "inputs[0].shape: {c} x {h} x {w} = {} values, but size is {}",
            c as u64 * h as u64 * w as u64,
            input.size
        ));
        return;
    }
    if input.size == 0 {
        problems.push("inputs[0].size: must be at least 1".into());
        return;
    }
    let shape = input_shape(net).expect("one input");
    problems.extend(check_layers(shape, &net.layers).1);
    match &net.training {
        None => problems.push("training: a layered model needs a training section".into()),
        Some(t) => {
            check_training_settings(t, problems);
            let (expanded, _) = super::layers::expand(&net.layers);
            if t.steps == 0
                && let Some((path, layer)) = expanded.iter().find(|(_, l)| l.is_stateful())
            {
                problems.push(format!(
                    "{path} ({}): a stateful layer runs over the training section's steps, but training.steps is 0",
                    layer.kind()
                ));
            }
            if t.readout == Readout::SpikeCount && !expanded.last().is_some_and(|(_, l)| l.fires()) {
                let last = expanded.last().map_or("nothing".to_owned(), |(path, l)| format!("{path} ({})", l.kind()));
                problems.push(format!(
                    "training.readout: SpikeCount scores the last layer's spikes, but the model ends in {last}; \
                     end it in Lif or CubaLif, or leave readout out"
                ));
            }
        }
    }
}

fn check_record(net: &Network, table: &PopulationTable, problems: &mut Vec<String>) {
    positive(problems, "record.rate_bin_ms", net.record.rate_bin_ms);
    if let SpikeRecord::Only(names) = &net.record.spikes {
        for (i, name) in names.iter().enumerate() {
            if !table.contains_key(name) {
                problems.push(format!("record.spikes.Only[{i}]: unknown population {name:?}"));
            }
        }
    }
    let mut traced = std::collections::HashSet::new();
    for (i, trace) in net.record.traces.iter().enumerate() {
        let path = format!("record.traces[{i}]");
        if !traced.insert(trace.population.as_str()) {
            problems.push(format!("{path}.population: {:?} is traced twice; list all its ids once", trace.population));
        }
        match table.get(&trace.population) {
            None => problems.push(format!("{path}.population: unknown population {:?}", trace.population)),
            Some(info) => {
                if let Some(bad) = trace.ids.iter().find(|&&id| id >= info.size) {
                    problems.push(format!(
                        "{path}.ids: neuron id {bad} is out of range for population {:?} of size {}",
                        trace.population, info.size
                    ));
                }
            }
        }
    }
}

/// Checks one projection against the populations it may name.
pub fn check_projection(
    proj: &Projection,
    path: &str,
    table: &PopulationTable,
    dt_ms: f64,
    problems: &mut Vec<String>,
) {
    let from = table.get(&proj.from);
    let to = table.get(&proj.to);
    if from.is_none() {
        problems.push(format!("{path}.from: unknown population {:?}", proj.from));
    }
    match to {
        None => problems.push(format!("{path}.to: unknown population {:?}", proj.to)),
        Some(info) if !info.is_neuron => {
            problems.push(format!("{path}.to: {:?} is a spike source and cannot receive synapses", proj.to))
        }
        _ => {}
    }
    problems.extend(proj.weight.problems(&format!("{path}.weight")));
    problems.extend(proj.delay_ms.problems(&format!("{path}.delay_ms")));
    let min_delay = proj.delay_ms.lower_bound();
    if min_delay.is_finite() && min_delay < 0.0 {
        problems.push(format!("{path}.delay_ms: delays must be >= 0, got {min_delay}"));
    }
    if let Synapse::Exponential { tau_ms } = proj.synapse {
        positive(problems, &format!("{path}.synapse.Exponential.tau_ms"), tau_ms);
    }
    // Max delay sets the ring buffer; a typo like 1e9 ms should not allocate gigabytes.
    let max_delay_steps = match proj.delay_ms {
        super::common::Distribution::Constant(d) => d / dt_ms,
        super::common::Distribution::Uniform { high, .. } => high / dt_ms,
        super::common::Distribution::Normal { mean, std } => (mean + 6.0 * std) / dt_ms,
    };
    if max_delay_steps.is_finite() && max_delay_steps > 65_535.0 {
        problems.push(format!(
            "{path}.delay_ms: delays of up to {:.0} steps exceed the supported 65535 steps",
            max_delay_steps
        ));
    }
    let (Some(from), Some(to)) = (from, to) else {
        return;
    };
    let same = proj.from == proj.to;
    match &proj.connect {
        Connect::AllToAll => {}
        Connect::OneToOne => {
            if from.size != to.size {
                problems.push(format!(
                    "{path}.connect: OneToOne needs equal sizes, but {:?} has {} and {:?} has {}",
                    proj.from, from.size, proj.to, to.size
                ));
            }
        }
        Connect::FixedProbability(p) => {
            if !(0.0..=1.0).contains(p) {
                problems.push(format!("{path}.connect.FixedProbability: probability {p} is outside [0, 1]"));
            }
        }
        Connect::FixedInDegree(k) => {
            let available = if same && !proj.allow_autapses { from.size.saturating_sub(1) } else { from.size };
            if *k > available {
                problems.push(format!(
                    "{path}.connect.FixedInDegree: in-degree {k} exceeds the {available} distinct sources available in {:?}",
                    proj.from
                ));
            }
        }
        Connect::Explicit(pairs) => {
            if let Some((k, (s, t))) = pairs.iter().enumerate().find(|(_, (s, t))| *s >= from.size || *t >= to.size) {
                problems.push(format!(
                    "{path}.connect.Explicit[{k}]: pair ({s}, {t}) is out of range for sizes {} -> {}",
                    from.size, to.size
                ));
            }
        }
    }
}

/// Checks a stimulus file on its own (no network known).
pub fn check_stimulus_alone(stim: &Stimulus) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, src) in stim.sources.iter().enumerate() {
        let path = format!("sources[{i}]");
        if src.name.trim().is_empty() {
            problems.push(format!("{path}.name: must not be empty"));
        }
        if !names.insert(src.name.as_str()) {
            problems.push(format!("{path}.name: source name {:?} is used twice", src.name));
        }
        if src.size == 0 {
            problems.push(format!("{path}.size: source {:?} is empty (size 0)", src.name));
        }
        match &src.kind {
            SourceKind::Image { encoder, .. } => {
                problems.extend(encoder.problems(&format!("{path}.kind.Image.encoder")));
            }
            SourceKind::Poisson { rate_hz } => {
                non_negative(&mut problems, &format!("{path}.kind.Poisson.rate_hz"), *rate_hz)
            }
            SourceKind::SpikeTimes { indices, times_ms } => {
                let st = format!("{path}.kind.SpikeTimes");
                if indices.len() != times_ms.len() {
                    problems.push(format!(
                        "{st}: {} indices but {} times_ms; they pair up one to one",
                        indices.len(),
                        times_ms.len()
                    ));
                }
                if let Some(bad) = indices.iter().find(|&&i| i >= src.size) {
                    problems.push(format!("{st}.indices: index {bad} is out of range for size {}", src.size));
                }
                if let Some(bad) = times_ms.iter().find(|t| !(t.is_finite() && **t >= 0.0)) {
                    problems.push(format!("{st}.times_ms: spike time {bad} must be a finite number >= 0"));
                }
            }
        }
    }
    for (i, current) in stim.currents.iter().enumerate() {
        let path = format!("currents[{i}]");
        match current {
            Current::Constant { amplitude_na, .. } => {
                finite(&mut problems, &format!("{path}.Constant.amplitude_na"), *amplitude_na)
            }
            Current::Step { amplitude_na, start_ms, stop_ms, .. } => {
                finite(&mut problems, &format!("{path}.Step.amplitude_na"), *amplitude_na);
                non_negative(&mut problems, &format!("{path}.Step.start_ms"), *start_ms);
                if let Some(stop) = stop_ms
                    && !(stop.is_finite() && stop >= start_ms)
                {
                    problems
                        .push(format!("{path}.Step.stop_ms: stop {stop} must be a finite time >= start_ms {start_ms}"));
                }
            }
        }
    }
    problems
}

/// Checks a stimulus against the network it drives.
pub fn check_stimulus(stim: &Stimulus, network: &Network, network_table: &PopulationTable) -> Vec<String> {
    let mut problems = check_stimulus_alone(stim);
    // An analog source's values scale the weights of the synapses its ids reach when they
    // arrive; synapses queued one by one (per-synapse delays) carry no value.
    let analog = |name: &str| {
        stim.sources.iter().any(|src| {
            src.name == name
                && matches!(src.kind, SourceKind::Image { encoder: Encoder::Current | Encoder::Sequence { .. }, .. })
        })
    };
    let projections = stim
        .projections
        .iter()
        .map(|p| ("projections", p))
        .chain(network.projections.iter().map(|p| ("network projections", p)));
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (list, p) in projections {
        let k = counts.entry(list).or_default();
        if analog(&p.from) && !matches!(p.delay_ms, Distribution::Constant(_)) {
            problems.push(format!(
                "{list}[{k}].delay_ms: {:?} carries analog values (Current or Sequence), which need one delay for all \
                 its synapses, got {:?}",
                p.from, p.delay_ms
            ));
        }
        *k += 1;
    }
    let mut table = network_table.clone();
    for (i, src) in stim.sources.iter().enumerate() {
        match network.inputs.iter().find(|input| input.name == src.name) {
            Some(input) if input.size != src.size => problems.push(format!(
                "sources[{i}].size: source {:?} feeds the network input of that name, of size {}, but has size {}",
                src.name, input.size, src.size
            )),
            Some(_) => {}
            None if network_table.contains_key(&src.name) => problems.push(format!(
                "sources[{i}].name: {:?} is already a population of network {:?}",
                src.name, network.name
            )),
            None => {}
        }
        table.insert(src.name.clone(), PopulationInfo { size: src.size, is_neuron: false });
        if let SourceKind::Poisson { rate_hz } = src.kind
            && rate_hz * network.dt_ms / 1000.0 > 1.0
        {
            problems.push(format!(
                "sources[{i}].kind.Poisson.rate_hz: {rate_hz} Hz fires more than once per step of {} ms",
                network.dt_ms
            ));
        }
        if let SourceKind::SpikeTimes { indices, times_ms } = &src.kind {
            let mut seen = std::collections::HashSet::new();
            for (&index, &t) in indices.iter().zip(times_ms) {
                let step = (t / network.dt_ms).round() as u64;
                if !seen.insert((index, step)) {
                    problems.push(format!(
                        "sources[{i}].kind.SpikeTimes: generator {index} fires twice in the step of {t} ms (dt = {} ms)",
                        network.dt_ms
                    ));
                    break;
                }
            }
        }
    }
    for (i, input) in network.inputs.iter().enumerate() {
        if !stim.sources.iter().any(|src| src.name == input.name) {
            problems.push(format!(
                "sources: the network's input {:?} (inputs[{i}]) needs a source of that name and size {}",
                input.name, input.size
            ));
        }
    }
    for (i, proj) in stim.projections.iter().enumerate() {
        check_projection(proj, &format!("projections[{i}]"), &table, network.dt_ms, &mut problems);
    }
    for (i, drive) in stim.poisson_inputs.iter().enumerate() {
        let path = format!("poisson_inputs[{i}]");
        if !network_table.contains_key(&drive.population) {
            problems.push(format!("{path}.population: unknown population {:?}", drive.population));
        }
        if drive.inputs == 0 {
            problems.push(format!("{path}.inputs: must be at least 1"));
        }
        non_negative(&mut problems, &format!("{path}.rate_hz"), drive.rate_hz);
        if drive.rate_hz * network.dt_ms / 1000.0 > 1.0 {
            problems.push(format!(
                "{path}.rate_hz: {} Hz fires more than once per step of {} ms; use more inputs at a lower rate",
                drive.rate_hz, network.dt_ms
            ));
        }
        finite(&mut problems, &format!("{path}.weight"), drive.weight);
        if let Synapse::Exponential { tau_ms } = drive.synapse {
            positive(&mut problems, &format!("{path}.synapse.Exponential.tau_ms"), tau_ms);
        }
    }
    for (i, current) in stim.currents.iter().enumerate() {
        let (Current::Constant { population, neurons, .. } | Current::Step { population, neurons, .. }) = current;
        let path = format!("currents[{i}]");
        match network_table.get(population) {
            None => problems.push(format!("{path}.population: unknown population {population:?}")),
            Some(info) => {
                if let Some(bad) = neurons.iter().flatten().find(|&&id| id >= info.size) {
                    problems.push(format!(
                        "{path}.neurons: neuron id {bad} is out of range for population {population:?} of size {}",
                        info.size
                    ));
                }
            }
        }
    }
    problems
}

/// What the trainer supports: one input, then a chain of LIF populations each fed by exactly one
/// all-to-all, instantaneous, zero-delay projection from the one before (the last is the
/// readout), and recurrent projections ([`check_chain`]).
fn check_training(net: &Network, t: &Training, problems: &mut Vec<String>) {
    check_training_settings(t, problems);
    check_chain(net, t.readout, problems);
}

/// The settings every trainable network shares (optimizer, schedule, surrogate, ...).
fn check_training_settings(t: &Training, problems: &mut Vec<String>) {
    if t.steps == 0 {
        problems.push("training.steps: must be at least 1".into());
    }
    if t.batch_size == 0 {
        problems.push("training.batch_size: must be at least 1".into());
    }
    if t.epochs == 0 {
        problems.push("training.epochs: must be at least 1".into());
    }
    problems.extend(t.surrogate.problems("training.surrogate"));
    problems.extend(t.encoder.problems("training.encoder"));
    match t.optimizer {
        Optimizer::Adam { lr, beta1, beta2, eps } => {
            positive(problems, "training.optimizer.Adam.lr", lr);
            positive(problems, "training.optimizer.Adam.eps", eps);
            for (name, b) in [("beta1", beta1), ("beta2", beta2)] {
                if !(0.0..1.0).contains(&b) {
                    problems.push(format!("training.optimizer.Adam.{name}: must lie in [0, 1), got {b}"));
                }
            }
        }
        Optimizer::Sgd { lr, momentum } => {
            positive(problems, "training.optimizer.Sgd.lr", lr);
            if !(0.0..1.0).contains(&momentum) {
                problems.push(format!("training.optimizer.Sgd.momentum: must lie in [0, 1), got {momentum}"));
            }
        }
    }
    non_negative(problems, "training.weight_decay", t.weight_decay);
    if let Some(n) = t.scored_steps
        && !(1..=t.steps).contains(&n)
    {
        problems.push(format!("training.scored_steps: must lie in 1 ..= steps ({}), got {n}", t.steps));
    }
    if let Some(max) = t.clip_grad_norm {
        positive(problems, "training.clip_grad_norm", max);
    }
    if let Schedule::Step { every_epochs, factor } = t.schedule
        && (every_epochs == 0 || !(factor.is_finite() && factor > 0.0))
    {
        problems.push(format!(
            "training.schedule.Step: needs every_epochs >= 1 and factor > 0, got {every_epochs} and {factor}"
        ));
    }
}

/// A spiking network trains as a chain: input, layer 1, ..., readout, each layer fed by one
/// projection from the one before, plus at most one projection from a layer onto itself.
fn check_chain(net: &Network, readout: Readout, problems: &mut Vec<String>) {
    if net.inputs.len() != 1 {
        problems.push(format!("inputs: training needs exactly one input population, found {}", net.inputs.len()));
        return;
    }
    let position = |name: &str| net.populations.iter().position(|p| p.name == name);
    let mut previous = net.inputs[0].name.as_str();
    for (i, pop) in net.populations.iter().enumerate() {
        let path = format!("populations[{i}]");
        let mut feed_forward = 0;
        let mut self_loops = 0;
        for (k, p) in net.projections.iter().enumerate().filter(|(_, p)| p.to == pop.name) {
            let ppath = format!("projections[{k}]");
            if p.connect != Connect::AllToAll {
                problems.push(format!("{ppath}.connect: training layers are AllToAll, got {:?}", p.connect));
            }
            if p.synapse != super::common::Synapse::Instantaneous {
                problems
                    .push(format!("{ppath}.synapse: training layers use Instantaneous synapses, got {:?}", p.synapse));
            }
            match position(&p.from) {
                Some(source) if source == i => {
                    if p.delay_ms != super::common::Distribution::Constant(0.0) {
                        problems.push(format!(
                            "{ppath}.delay_ms: a population's projection onto itself trains with delay 0 (its \
                             spikes arrive one step later), got {:?}",
                            p.delay_ms
                        ));
                    }
                    if source + 1 == net.populations.len() && readout == Readout::MeanMembrane {
                        problems.push(format!(
                            "{ppath}.from: the readout {:?} does not fire (readout: MeanMembrane), so it cannot \
                             feed a recurrent projection",
                            p.from
                        ));
                    }
                    if self_loops > 0 {
                        problems.push(format!(
                            "{ppath}: a second projection {:?} -> {:?}; training takes one per population",
                            p.from, p.to
                        ));
                    }
                    self_loops += 1;
                }
                Some(source) if source > i => problems.push(format!(
                    "{ppath}.from: training takes recurrence within a population only (a projection from a \
                     population onto itself); {:?} is fed back from the later population {:?}",
                    pop.name, p.from
                )),
                _ if p.from == previous => {
                    feed_forward += 1;
                    if p.delay_ms != super::common::Distribution::Constant(0.0) {
                        problems.push(format!(
                            "{ppath}.delay_ms: feed-forward training layers have no delay, got {:?}",
                            p.delay_ms
                        ));
                    }
                }
                _ => problems.push(format!(
                    "{ppath}.from: training needs a chain of layers; {:?} should be fed from {previous:?} (or \
                     recurrently from itself), not {:?}",
                    pop.name, p.from
                )),
            }
        }
        if feed_forward != 1 {
            problems.push(format!(
                "{path}: training needs exactly one projection {previous:?} -> {:?}, found {feed_forward}",
                pop.name
            ));
        }
        let Neuron::Lif { refractory_ms, v_rest, v_reset, .. } = pop.neuron;
        if refractory_ms != 0.0 {
            problems.push(format!("{path}.neuron.Lif.refractory_ms: training supports 0 only, got {refractory_ms}"));
        }
        // The trained neurons rest at 0 and reset to 0 or by the threshold (models::chain).
        for (field, value) in [("v_rest", v_rest), ("v_reset", v_reset)] {
            if value != 0.0 {
                problems.push(format!("{path}.neuron.Lif.{field}: training supports 0 only, got {value}"));
            }
        }
        previous = pop.name.as_str();
    }
}
