"""e-prop in NEST 3.10 against snn's, on snn's store-and-recall task.

The task is `networks/recall.ron`'s (Bellec et al. 2018): 50 inputs, four cue groups of 10 and a
recall group of 10; the cue's group fires at 0.5 per step for 20 steps, then D steps of noise
(every input at 0.01 per step throughout), then the recall group fires for 20 steps; the label
is the cue, read from the readout in the recall window. The trials are drawn here with numpy
(the same statistics as snn's encoder, not the same draws).

The net is `benches/networks/recall_eprop.ron`'s: 100 adaptive LIF neurons, recurrent without
autapses, 4 leaky readouts, batch 64, Adam with learning rate 2e-3, one epoch of 4096 training
trials, scored on 1024 test trials. In NEST: `eprop_iaf_adapt_bsshslm_2020` (tau_m 20 ms,
threshold 1, adaptation beta 0.5 per spike decaying with 800 ms, reset by subtraction, no
refractory period, no firing-rate regularisation: snn's Alif), `eprop_readout_bsshslm_2020`
with cross-entropy, `eprop_synapse_bsshslm_2020` with Adam over batches of 64 update intervals,
gradients averaged over the learning window (the recall window). What stays NEST's own:
its surrogate (piecewise linear, height 0.3, width 1, where snn uses HTAF), its weight initialisation
(normal / sqrt(fan in), as NEST's e-prop examples), and the feedback weights of the learning
signal, here the readout weights at initialisation transposed and fixed (snn's e-prop uses the
current readout weights). Each trial ends with a few silent-recall steps so that the readout's
recall window, delayed by the connections, lies inside NEST's update interval.

Usage (NEST from PyPI; keep it out of the repository):

    python3 -m venv /tmp/nest && /tmp/nest/bin/pip install "numpy<2.4" nest-simulator==3.10
    /tmp/nest/bin/python benches/peers/eprop_nest.py --delay 100 --seed 1
    snn train benches/networks/recall_eprop.ron --epochs 1 --delay 100

Prints one JSON object: NEST's test accuracy, its training simulation time and the whole run.
"""

import argparse
import json
import time

import nest
import numpy as np

CLASSES, GROUP, CUE_STEPS, RECALL_STEPS = 4, 10, 20, 20
P_CUE, P_NOISE = 0.5, 0.01
N_IN, N_REC = (CLASSES + 1) * GROUP, 100
# Steps after the recall window so that its readout, delayed by generator -> parrot -> recurrent
# -> readout, still falls in the trial's update interval.
LAG = 4


def draw_trials(n, delay, rng):
    """Input spikes (trials x steps x inputs, bool) and labels of n trials."""
    steps = CUE_STEPS + delay + RECALL_STEPS + LAG
    labels = rng.integers(CLASSES, size=n)
    prob = np.full((n, steps, N_IN), P_NOISE)
    for k, c in enumerate(labels):
        prob[k, :CUE_STEPS, c * GROUP : (c + 1) * GROUP] = P_CUE
    recall = slice(CUE_STEPS + delay, CUE_STEPS + delay + RECALL_STEPS)
    prob[:, recall, CLASSES * GROUP :] = P_CUE
    spikes = rng.random(prob.shape) < prob
    spikes[:, 0, :] = False  # NEST's e-prop examples leave a trial's first step silent
    return spikes, labels


def spike_times(spikes, start_ms):
    """Per input neuron, the times (ms) of its spikes over consecutive trials from start_ms."""
    flat = spikes.reshape(-1, N_IN)
    times = start_ms + 1.0 + np.arange(flat.shape[0], dtype=float)  # generators emit from 1 ms
    return [{"spike_times": times[flat[:, i]]} for i in range(N_IN)]


def targets(labels, start_ms, steps):
    """One-hot target rates per readout, switched at each trial's start (plus the lag)."""
    onehot = np.zeros((CLASSES, len(labels)))
    onehot[labels, np.arange(len(labels))] = 1.0
    times = start_ms + np.arange(len(labels)) * steps + 3.0
    return [{"amplitude_times": times, "amplitude_values": onehot[k]} for k in range(CLASSES)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-trials", type=int, default=4096)
    parser.add_argument("--test-trials", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    wall = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    steps = CUE_STEPS + args.delay + RECALL_STEPS + LAG
    train_in, train_labels = draw_trials(args.train_trials, args.delay, rng)
    test_in, test_labels = draw_trials(args.test_trials, args.delay, rng)

    nest.ResetKernel()
    nest.set(
        resolution=1.0,
        rng_seed=args.seed,
        local_num_threads=args.threads,
        print_time=False,
        eprop_update_interval=float(steps),
        eprop_learning_window=float(RECALL_STEPS),
        eprop_reset_neurons_on_update=True,
    )
    neuron = {
        "C_m": 1.0, "E_L": 0.0, "I_e": 0.0, "V_m": 0.0, "V_th": 1.0, "tau_m": 20.0, "t_ref": 0.0,
        "adapt_tau": 800.0, "adapt_beta": 0.5, "adaptation": 0.0, "c_reg": 0.0, "f_target": 10.0,
        "surrogate_gradient_function": "piecewise_linear", "surrogate_gradient_height": 0.3,
        "surrogate_gradient_width": 1.0, "regular_spike_arrival": True,
    }
    readout = {"C_m": 1.0, "E_L": 0.0, "I_e": 0.0, "V_m": 0.0, "tau_m": 20.0, "loss": "cross_entropy",
               "regular_spike_arrival": False}
    generators = nest.Create("spike_generator", N_IN)
    inputs = nest.Create("parrot_neuron", N_IN)
    hidden = nest.Create("eprop_iaf_adapt_bsshslm_2020", N_REC, neuron)
    outputs = nest.Create("eprop_readout_bsshslm_2020", CLASSES, readout)
    target_rates = nest.Create("step_rate_generator", CLASSES)

    w_in = rng.standard_normal((N_REC, N_IN)) / np.sqrt(N_IN)
    w_rec = rng.standard_normal((N_REC, N_REC)) / np.sqrt(N_REC)
    np.fill_diagonal(w_rec, 0.0)
    w_out = rng.standard_normal((CLASSES, N_REC)) / np.sqrt(N_REC)
    optimizer = {"type": "adam", "batch_size": args.batch, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8,
                 "eta": args.lr, "Wmin": -100.0, "Wmax": 100.0}
    nest.SetDefaults("eprop_synapse_bsshslm_2020", {"optimizer": optimizer, "average_gradient": True})
    eprop = {"synapse_model": "eprop_synapse_bsshslm_2020", "delay": 1.0, "tau_m_readout": 20.0}
    all_to_all = {"rule": "all_to_all", "allow_autapses": False}
    nest.Connect(generators, inputs, "one_to_one", {"synapse_model": "static_synapse", "delay": 1.0})
    nest.Connect(inputs, hidden, all_to_all, {**eprop, "weight": w_in.astype(np.float32)})
    nest.Connect(hidden, hidden, all_to_all, {**eprop, "weight": w_rec.astype(np.float32)})
    nest.Connect(hidden, outputs, all_to_all, {**eprop, "weight": w_out.astype(np.float32)})
    feedback = {"synapse_model": "eprop_learning_signal_connection_bsshslm_2020", "delay": 1.0,
                "weight": w_out.T.astype(np.float32)}
    nest.Connect(outputs, hidden, all_to_all, feedback)
    nest.Connect(target_rates, outputs, "one_to_one",
                 {"synapse_model": "rate_connection_delayed", "delay": 1.0, "receptor_type": 2})
    nest.Connect(outputs, outputs, all_to_all,
                 {"synapse_model": "rate_connection_delayed", "delay": 1.0, "receptor_type": 1, "weight": 1.0})

    train_ms = float(args.train_trials * steps)
    test_ms = float(args.test_trials * steps)
    nest.SetStatus(generators, spike_times(train_in, 0.0))
    nest.SetStatus(target_rates, targets(train_labels, 0.0, steps))
    started = time.perf_counter()
    nest.Simulate(train_ms)
    train_s = time.perf_counter() - started

    # Test: no more learning; the readout's signal in each trial's recall window decides.
    nest.SetDefaults("eprop_synapse_bsshslm_2020", {"optimizer": {**optimizer, "eta": 0.0}})
    nest.SetStatus(generators, spike_times(test_in, train_ms))
    nest.SetStatus(target_rates, targets(test_labels, train_ms, steps))
    monitor = nest.Create("multimeter", {"interval": 1.0, "record_from": ["readout_signal"],
                                         "start": train_ms, "stop": train_ms + test_ms})
    nest.Connect(monitor, outputs)
    nest.Simulate(test_ms + 2.0)
    events = monitor.get("events")
    senders, times, signal = events["senders"], events["times"], events["readout_signal"]
    scores = np.zeros((CLASSES, args.test_trials))
    for k, node in enumerate(outputs.tolist()):
        mine = senders == node
        step = (times[mine] - train_ms - 1.0).astype(int)  # the test's steps, from 0
        trial, within = step // steps, step % steps
        window = (within >= steps - RECALL_STEPS) & (trial < args.test_trials)
        np.add.at(scores[k], trial[window], signal[mine][window])
    accuracy = float(np.mean(np.argmax(scores, axis=0) == test_labels))
    print(json.dumps({
        "simulator": f"NEST {nest.__version__}", "delay": args.delay, "seed": args.seed,
        "train_trials": args.train_trials, "test_trials": args.test_trials, "threads": args.threads,
        "test_accuracy": accuracy, "train_simulate_s": round(train_s, 3),
        "whole_run_s": round(time.perf_counter() - wall, 3),
    }, indent=1))


if __name__ == "__main__":
    main()
