//! One training step of networks/fashion_snn.ron (784-800-10, T = 25): forward, backward and
//! Adam update of a batch of 128 images of the shipped subset. `cargo bench --bench train`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use snn::data::idx;
use snn::spec::load_network;
use snn::train::trainer::{PassTotals, Run, load_data};

fn train_step(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("networks/fashion_snn.ron");
    let (network, text) = load_network(&path).expect("valid network");
    let training = network.training.clone().expect("training section");
    let data = load_data(&idx::shipped_subset(), &network, &training, None, None).expect("shipped subset");
    let mut run = Run::new(network, text, training, 1).expect("builds");
    let batch: Vec<usize> = (0..128).collect();
    c.bench_function("train_step_batch128", |b| {
        b.iter(|| {
            let mut totals = PassTotals::default();
            black_box(run.train_batch(&data.train, &batch, 0, &mut totals).expect("finite loss"))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(2));
    targets = train_step
}
criterion_main!(benches);
