//! Training of networks/fashion_snn.ron (784-800-10, T = 25, compiled onto the layer stack) on
//! the shipped subset: one whole training step (forward, backward and Adam update of a batch
//! of 128 images), and for 16 samples the encoding, the input's rows in deviation form and the
//! two event-driven products a step is mostly made of, and the currents of rows drawn uniformly
//! over all inputs or over a block of them that fits the L1 cache; and for a training chunk of
//! 32 images the input layer's currents by the tile multiply, with the weights packed or
//! packing them; and networks/fashion_scnn.ron's second convolution on spikes, forward and
//! backward (by the tile multiply where the CPU has one; `SNN_NO_TILES=1` for the events).
//! `cargo bench --bench train`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nalgebra::DMatrix;
use rand::{RngExt, SeedableRng};
use snn::data::encode::encoding_stream;
use snn::data::events::Events;
use snn::data::idx;
use snn::data::spike_trains::SpikeTrains;
use snn::models::trainer::LayerRun;
use snn::nn::conv::{self, ConvGeometry};
use snn::nn::event_products::{self, ByInput, Row, Summing};
use snn::nn::spike_input;
use snn::nn::tiles::{self, TileCache};
use snn::records::PassTotals;
use snn::rng::Stream;
use snn::spec::{Shape, load_network};
use snn::train::setup::load_data;

fn train_step(c: &mut Criterion) {
    snn::process::set_up();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("networks/fashion_snn.ron");
    let (network, text) = load_network(&path).expect("valid network");
    let training = network.training.clone().expect("training section");
    let data = load_data(&idx::shipped_subset(), &network, &training, None, None).expect("shipped subset");
    let mut run = LayerRun::new(network, text, training.clone(), 1).expect("builds");
    let batch: Vec<usize> = (0..128).collect();
    c.bench_function("train_step_batch128", |b| {
        b.iter(|| {
            let mut totals = PassTotals::default();
            black_box(
                run.train_batch(&data.train, &batch, 0, 1.0, &mut totals, &snn::ranks::Alone).expect("finite loss"),
            )
        })
    });

    // The input layer's products for 16 rate-coded images: 16 x 25 rows of about 220 spikes.
    let steps = training.steps as usize;
    let encode = || {
        let mut trains = SpikeTrains::new(784, steps);
        for i in 0..16 {
            let mut stream = encoding_stream(1, Some(0), i);
            training.encoder.encode_spikes(data.train.images.image(i), steps, &mut stream, trains.push_sample());
        }
        trains
    };
    let trains = encode();
    c.bench_function("encode_chunk16", |b| b.iter(|| black_box(encode().total())));
    c.bench_function("deviation_rows_chunk16", |b| {
        b.iter(|| {
            let base = spike_input::deviation_base(&trains).expect("rate-coded images take deviations");
            black_box(spike_input::rows::<f32>(&trains, (0, steps), Some(&base)).events.total())
        })
    });
    let base = spike_input::deviation_base(&trains).expect("rate-coded images take deviations");
    let values = spike_input::rows::<f32>(&trains, (0, steps), None).events;
    let deviations = spike_input::rows::<f32>(&trains, (0, steps), Some(&base)).events;
    let rows_of = |e: &Events<f32>| -> Vec<(Vec<u32>, Vec<f32>)> {
        (0..e.steps()).map(|c| (e.step(c).0.to_vec(), e.step(c).1.to_vec())).collect()
    };
    let (values, deviations) = (rows_of(&values), rows_of(&deviations));
    println!(
        "chunk of 16 images: {} rows, {} input events, {} events as deviations",
        values.len(),
        values.iter().map(|r| r.0.len()).sum::<usize>(),
        deviations.iter().map(|r| r.0.len()).sum::<usize>()
    );
    let weights = DMatrix::<f32>::from_fn(800, 784, |o, i| ((o * 31 + i * 17) % 101) as f32 * 1e-3 - 0.05);
    let mut currents = vec![0.0f32; deviations.len() * 800];
    let mut grouped = ByInput::default();
    let mut grad = DMatrix::<f32>::zeros(800, 784);
    // Where the products' floor is: rows as long as the deviations' (85 events), drawn uniformly
    // over all 784 inputs (a tile of 200 KiB, read from L2) or over the first 96 (24 KiB, in L1).
    let uniform = |inputs: u32| -> Vec<(Vec<u32>, Vec<f32>)> {
        let mut draws = Stream::seed_from_u64(7);
        (0..deviations.len())
            .map(|_| {
                let mut idx: Vec<u32> = (0..85).map(|_| draws.random_range(0..inputs)).collect();
                idx.sort_unstable();
                let val = idx.iter().map(|_| if draws.random::<bool>() { 1.0 } else { -1.0 }).collect();
                (idx, val)
            })
            .collect()
    };
    for inputs in [784, 96] {
        let rows = uniform(inputs);
        let rows: Vec<Row<f32>> = rows.iter().map(|(i, v)| (&i[..], &v[..])).collect();
        let currents = &mut currents[..rows.len() * 800];
        c.bench_function(&format!("currents_chunk16_uniform_over_{inputs}_inputs"), |b| {
            b.iter(|| event_products::currents(&weights, &rows, 0, None, black_box(&mut *currents)))
        });
    }
    for (name, rows) in [("values", &values), ("deviations", &deviations)] {
        let rows: Vec<Row<f32>> = rows.iter().map(|(i, v)| (&i[..], &v[..])).collect();
        let currents = &mut currents[..rows.len() * 800];
        c.bench_function(&format!("currents_chunk16_{name}"), |b| {
            b.iter(|| event_products::currents(&weights, &rows, 0, None, black_box(&mut *currents)))
        });
        c.bench_function(&format!("weight_gradient_chunk16_{name}"), |b| {
            b.iter(|| {
                grouped.group(784, &rows);
                event_products::weight_gradient(black_box(&mut grad), &grouped, &[&*currents], Summing::Write)
            })
        });
    }

    // The input layer's currents for a training chunk (32 images) by the tile multiply, where
    // the CPU has one.
    let mut trains = SpikeTrains::new(784, steps);
    for i in 0..32 {
        let mut stream = encoding_stream(1, Some(0), i);
        training.encoder.encode_spikes(data.train.images.image(i), steps, &mut stream, trains.push_sample());
    }
    let bias = vec![0.01f32; 800];
    let cache = TileCache::default();
    if tiles::available() {
        c.bench_function("tile_currents_chunk32_packed", |b| {
            b.iter(|| black_box(tiles::spike_currents(&weights, Some(&bias), &trains, (0, steps), &cache)))
        });
        c.bench_function("tile_currents_chunk32_packing", |b| {
            b.iter(|| {
                let fresh = TileCache::default();
                black_box(tiles::spike_currents(&weights, Some(&bias), &trains, (0, steps), &fresh))
            })
        });
    }
}

/// The spiking CNN's second convolution (networks/fashion_scnn.ron: 32 channels of 14 x 14
/// pooled spikes, 64 filters of 3 x 3) on 16 samples of 4 steps, about 29% of the inputs
/// firing: the forward pass and the backward pass (filter and input gradients). With the tile
/// multiply where the CPU has one; `SNN_NO_TILES=1` measures the event-driven passes.
fn spike_convolution(c: &mut Criterion) {
    let input = Shape::Image { channels: 32, height: 14, width: 14 };
    let output = Shape::Image { channels: 64, height: 14, width: 14 };
    let g = ConvGeometry { input, output, kernel: 3, stride: 1, padding: 1 };
    let (steps, samples) = (4, 16);
    let mut rng = Stream::seed_from_u64(7);
    // Spikes mostly held from step to step, as a spiking layer's are.
    let held = DMatrix::from_fn(input.size(), samples, |_, _| f32::from(u8::from(rng.random::<f32>() < 0.29)));
    let x = DMatrix::from_fn(input.size(), steps * samples, |i, col| {
        let flip = rng.random::<f32>() < 0.1;
        if flip { 1.0 - held[(i, col % samples)] } else { held[(i, col % samples)] }
    });
    let w = DMatrix::from_fn(64, 288, |_, _| rng.random::<f32>() * 0.2 - 0.1);
    let dy = DMatrix::from_fn(output.size(), steps * samples, |_, _| rng.random::<f32>() * 2e-3 - 1e-3);
    c.bench_function("conv2_forward_16x4", |b| b.iter(|| black_box(conv::forward_events(&g, &w, None, &x, steps))));
    let (_, kept) = conv::forward_events(&g, &w, None, &x, steps);
    c.bench_function("conv2_backward_16x4", |b| b.iter(|| black_box(conv::backward(&g, &w, false, &kept, &dy, true))));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(2));
    targets = train_step, spike_convolution
}
criterion_main!(benches);
