//! Training of networks/fashion_snn.ron (784-800-10, T = 25, compiled onto the layer stack) on
//! the shipped subset: one whole training step (forward, backward and Adam update of a batch
//! of 128 images), and the two event-driven products a step is mostly made of, for 16 samples.
//! `cargo bench --bench train`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nalgebra::DMatrix;
use snn::data::encode::encoding_stream;
use snn::data::events::Events;
use snn::data::idx;
use snn::nn::event_products::{self, ByInput, ChangeState, Form, Row, Summing};
use snn::records::PassTotals;
use snn::spec::load_network;
use snn::train::fit;
use snn::train::setup::load_data;

fn train_step(c: &mut Criterion) {
    snn::process::set_up();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("networks/fashion_snn.ron");
    let (network, text) = load_network(&path).expect("valid network");
    let training = network.training.clone().expect("training section");
    let data = load_data(&idx::shipped_subset(), &network, &training, None, None).expect("shipped subset");
    let mut run = fit::start(network, text, training.clone(), 1).expect("builds");
    let batch: Vec<usize> = (0..128).collect();
    c.bench_function("train_step_batch128", |b| {
        b.iter(|| {
            let mut totals = PassTotals::default();
            black_box(
                run.train_batch(&data.train, &batch, 0, 1.0, &mut totals, &snn::ranks::Alone).expect("finite loss"),
            )
        })
    });

    // The input layer's products for 16 rate-coded images: 16 x 25 rows of about 220 events.
    let steps = training.steps as usize;
    let inputs: Vec<Events<f32>> = (0..16)
        .map(|i| {
            let mut events = Events::default();
            training.encoder.encode(
                data.train.images.image(i),
                steps,
                &mut encoding_stream(1, Some(0), i),
                &mut events,
            );
            events
        })
        .collect();
    let rows: Vec<Row<f32>> = inputs.iter().flat_map(|e| (0..steps).map(move |n| e.step(n))).collect();
    let mut state = ChangeState::default();
    let changed_events: Vec<Events<f32>> = rows
        .chunks(steps)
        .map(|sample| {
            let mut changed = Events::default();
            event_products::changes(sample, 784, &mut state, &mut changed);
            changed
        })
        .collect();
    let changed: Vec<Row<f32>> = changed_events.iter().flat_map(|e| (0..steps).map(move |n| e.step(n))).collect();
    let changes: usize = changed.iter().map(|r| r.0.len()).sum();
    let events: usize = rows.iter().map(|r| r.0.len()).sum();
    println!("chunk of 16 images: {} rows, {events} input events, {changes} changes", rows.len());
    let weights = DMatrix::<f32>::from_fn(800, 784, |o, i| ((o * 31 + i * 17) % 101) as f32 * 1e-3 - 0.05);
    let mut currents = vec![0.0f32; rows.len() * 800];
    let mut grouped = ByInput::default();
    let mut grad = DMatrix::<f32>::zeros(800, 784);
    for (name, form, rows) in [("values", Form::Values, &rows), ("changes", Form::Changes { steps }, &changed)] {
        c.bench_function(&format!("currents_chunk16_{name}"), |b| {
            b.iter(|| event_products::currents(&weights, form, rows, black_box(&mut currents)))
        });
        c.bench_function(&format!("weight_gradient_chunk16_{name}"), |b| {
            b.iter(|| {
                grouped.group(784, rows);
                event_products::weight_gradient(black_box(&mut grad), form, &grouped, &currents, Summing::Write)
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(2));
    targets = train_step
}
criterion_main!(benches);
