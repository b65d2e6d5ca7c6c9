//! Inference of the binary hidden layers of networks/fashion_bnn.ron (two blocks of
//! Dense(2048 x 2048, binary) -> BatchNorm -> Sign), a batch of 500 +-1 inputs: float (matrix
//! product, batch norm, sign) against bit-packed (XNOR + popcount against thresholds).
//! `cargo bench --bench bnn`. The two give identical outputs (tests/layered.rs).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nalgebra::DMatrix;
use snn::models::LayerNet;
use snn::models::binary::PackedNet;
use snn::spec::load_network;

fn binary_layers(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("networks/fashion_bnn.ron");
    let (network, _) = load_network(&path).expect("valid network");
    let training = network.training.clone().expect("training section");
    let net = LayerNet::<f32>::from_spec(&network, &training, 1).expect("builds");
    let packed = PackedNet::new(&net).expect("the BNN has packable blocks");
    let range = packed.packed_layers.clone();
    let inputs = net.layers[range.start].input.size();
    // Deterministic +-1 inputs.
    let x = DMatrix::from_fn(inputs, 500, |i, j| if (i * 31 + j * 17) % 7 < 3 { 1.0f32 } else { -1.0 });
    let mut group = c.benchmark_group("bnn_hidden_layers_batch500");
    group.bench_function("float", |b| b.iter(|| black_box(net.eval_layers(x.clone(), range.clone(), false))));
    group.bench_function("bit_packed", |b| b.iter(|| black_box(packed.forward_blocks(&packed.pack_input(&x)))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = binary_layers
}
criterion_main!(benches);
