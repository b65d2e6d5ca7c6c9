//! Training steps of layered models on the shipped subset: forward, backward, Adam update and
//! clipping of one batch of 128 images, for networks/fashion_bnn.ron (784-2048-2048-2048-10,
//! binary), networks/fashion_dhn.ron (784-1024-1024-10, Heaviside), networks/fashion_scnn.ron
//! (the spiking CNN over T = 4 steps) and benches/networks/fashion_snn_stack.ron (fashion_snn as
//! a stack: rate-coded input, event-driven Dense layers, T = 25).
//! `cargo bench --bench layered`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use snn::data::idx;
use snn::models::trainer::LayerRun;
use snn::records::PassTotals;
use snn::spec::load_network;
use snn::train::setup::load_data;

fn train_step(c: &mut Criterion) {
    snn::process::set_up();
    let networks =
        ["networks/fashion_bnn", "networks/fashion_dhn", "networks/fashion_scnn", "benches/networks/fashion_snn_stack"];
    for file in networks {
        let name = file.rsplit('/').next().expect("a file name");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{file}.ron"));
        let (network, text) = load_network(&path).expect("valid network");
        let training = network.training.clone().expect("training section");
        let data = load_data(&idx::shipped_subset(), &network, &training, None, None).expect("shipped subset");
        let mut run = LayerRun::new(network, text, training, 1).expect("builds");
        let batch: Vec<usize> = (0..128).collect();
        c.bench_function(&format!("{name}_train_step_batch128"), |b| {
            b.iter(|| {
                let mut totals = PassTotals::default();
                black_box(
                    run.train_batch(&data.train, &batch, 0, 1.0, &mut totals, &snn::ranks::Alone).expect("finite loss"),
                )
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    targets = train_step
}
criterion_main!(benches);
