"""Brunel (2000) balanced network, model A: NEST 3.10 against `snn simulate`, side by side.

The network is set by one number, --neurons N: 0.8 N excitatory and 0.2 N inhibitory
iaf_psc_delta neurons (tau_m 20 ms, threshold 20 mV, reset 10 mV, refractory 2 ms), each
receiving C_E = 1000 excitatory (J = 0.1 mV) and C_I = 250 inhibitory (-g J, g = 5) synapses
with a fixed in-degree, no multapses, delay 1.5 ms, and Poisson input of C_E x 20 Hz = 20 kHz
(weight J). Synapses: 1250 N. NEST runs pynest's examples/brunel_delta_nest.py network with
`allow_multapses: False` (as snn's FixedInDegree); snn runs the same network written as RON
(benches/networks/brunel.ron is this script's output for N = 80 000).

For each thread count, NEST and snn run alternately --repeats times, each in a fresh process;
printed as JSON per run: build time, simulation time, peak resident memory of the process,
bytes per synapse and the mean rates. NEST's times are its own Connect and Simulate calls;
snn's are the "build ... s, run ... s" of its summary.

    cargo build --release
    python3 -m venv /tmp/nest && /tmp/nest/bin/pip install "numpy<2.4" nest-simulator==3.10
    /tmp/nest/bin/python benches/peers/brunel.py --neurons 80000 --threads 1 2 --repeats 3
    /tmp/nest/bin/python benches/peers/brunel.py --neurons 80000 --write benches/networks/brunel.ron
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CE, CI, J, G, ETA_RATE_HZ = 1000, 250, 0.1, 5.0, 20.0
DELAY_MS, DT_MS = 1.5, 0.1

NETWORK = """// Brunel (2000) balanced network, model A in the synchronous-irregular regime as NEST ships it
// (pynest examples/brunel_delta_nest.py): delta (instantaneous) synapses, J = 0.1 mV, g = 5,
// every neuron receives C_E = 1000 excitatory and C_I = 250 inhibitory inputs (fixed
// in-degree) and C_E independent Poisson inputs at eta * nu_th = 2 * 10 Hz = 20 Hz each
// (20 kHz in all), drawn per neuron as one binomial count per step.
//
// {neurons} neurons, {synapses:.2e} synapses. benches/peers/brunel.py writes this file for any
// number of neurons (the in-degrees stay fixed) and runs the same network in NEST:
//   python3 benches/peers/brunel.py --neurons {neurons} --write {path}
Network(
    name: "brunel",
    dt_ms: {dt},
    duration_ms: {duration},
    seed: 1,
    stimulus: "brunel_drive.ron",
    populations: [
        (name: "exc", size: {ne},
         neuron: Lif(tau_mem_ms: 20.0, v_rest: 0.0, v_threshold: 20.0, v_reset: 10.0, refractory_ms: 2.0),
         init_v: Uniform(low: 0.0, high: 20.0)),
        (name: "inh", size: {ni},
         neuron: Lif(tau_mem_ms: 20.0, v_rest: 0.0, v_threshold: 20.0, v_reset: 10.0, refractory_ms: 2.0),
         init_v: Uniform(low: 0.0, high: 20.0)),
    ],
    projections: [
        (from: "exc", to: "exc", connect: FixedInDegree({ce}), weight: Constant({j}), synapse: Instantaneous, delay_ms: Constant({delay})),
        (from: "exc", to: "inh", connect: FixedInDegree({ce}), weight: Constant({j}), synapse: Instantaneous, delay_ms: Constant({delay})),
        (from: "inh", to: "exc", connect: FixedInDegree({ci}), weight: Constant({ji}), synapse: Instantaneous, delay_ms: Constant({delay})),
        (from: "inh", to: "inh", connect: FixedInDegree({ci}), weight: Constant({ji}), synapse: Instantaneous, delay_ms: Constant({delay})),
    ],
    record: (spikes: Only(["exc"]), rate_bin_ms: 1.0),
)
"""

DRIVE = """// External drive of the Brunel network beside this file (brunel.ron or another name the script
// was given): C_E = {ce} Poisson inputs per neuron at {rate} Hz each.
Stimulus(
    poisson_inputs: [
        (population: "exc", inputs: {ce}, rate_hz: {rate}, weight: {j}, synapse: Instantaneous),
        (population: "inh", inputs: {ce}, rate_hz: {rate}, weight: {j}, synapse: Instantaneous),
    ],
)
"""


def sizes(neurons):
    ne = int(round(0.8 * neurons))
    return ne, neurons - ne


def write_network(path, neurons, duration_ms):
    ne, ni = sizes(neurons)
    text = NETWORK.format(
        neurons=neurons, synapses=float((CE + CI) * neurons), path=os.path.relpath(path, REPO), dt=DT_MS,
        duration=duration_ms, ne=ne, ni=ni, ce=CE, ci=CI, j=J, ji=-G * J, delay=DELAY_MS,
    )
    with open(path, "w") as f:
        f.write(text)
    with open(os.path.join(os.path.dirname(path), "brunel_drive.ron"), "w") as f:
        f.write(DRIVE.format(ce=CE, rate=ETA_RATE_HZ, j=J))


def run_nest(neurons, threads, duration_ms, seed):
    """One NEST run in this process (call in a fresh process)."""
    import nest

    nest.set_verbosity("M_ERROR")
    nest.ResetKernel()
    nest.SetKernelStatus({"resolution": DT_MS, "local_num_threads": threads, "rng_seed": seed})
    ne, ni = sizes(neurons)
    t0 = time.perf_counter()
    params = {"C_m": 1.0, "tau_m": 20.0, "t_ref": 2.0, "E_L": 0.0, "V_reset": 10.0, "V_th": 20.0}
    exc = nest.Create("iaf_psc_delta", ne, params=params)
    inh = nest.Create("iaf_psc_delta", ni, params=params)
    for pop in (exc, inh):
        pop.V_m = nest.random.uniform(0.0, 20.0)
    noise = nest.Create("poisson_generator", params={"rate": ETA_RATE_HZ * CE})
    recorder = nest.Create("spike_recorder")
    nest.CopyModel("static_synapse", "excitatory", {"weight": J, "delay": DELAY_MS})
    nest.CopyModel("static_synapse", "inhibitory", {"weight": -G * J, "delay": DELAY_MS})
    nest.Connect(noise, exc + inh, syn_spec="excitatory")
    nest.Connect(exc, recorder)
    rule_e = {"rule": "fixed_indegree", "indegree": CE, "allow_multapses": False}
    rule_i = {"rule": "fixed_indegree", "indegree": CI, "allow_multapses": False}
    nest.Connect(exc, exc + inh, rule_e, "excitatory")
    nest.Connect(inh, exc + inh, rule_i, "inhibitory")
    build = time.perf_counter() - t0
    synapses = nest.GetKernelStatus("num_connections")
    t0 = time.perf_counter()
    nest.Simulate(duration_ms)
    sim = time.perf_counter() - t0
    events = nest.GetStatus(recorder, "n_events")[0]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "build_s": build,
        "run_s": sim,
        "synapses": synapses,
        "exc_rate_hz": events / ne / (duration_ms / 1000.0),
        "peak_rss_mib": peak_kib / 1024,
    }


def run_snn(binary, network, threads, duration_ms):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = tempfile.mkdtemp(prefix="snn_brunel_")
    proc = subprocess.Popen(
        [binary, "simulate", network, "--no-figures", "--duration-ms", str(duration_ms), "--out", out],
        env=env, stdout=subprocess.PIPE, text=True,
    )
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"snn failed with exit code {proc.returncode}")
    peak_kib = usage.ru_maxrss
    build, run = map(float, re.search(r"build ([\d.]+) s, run ([\d.]+) s wall", text).groups())
    synapses = int(re.search(r"neurons, (\d+) synapses", text).group(1))
    exc = re.search(r"^exc\s+(\d+)\s+(\d+)\s+([\d.]+)", text, re.M)
    return {
        "build_s": build,
        "run_s": run,
        "synapses": synapses,
        "exc_rate_hz": float(exc.group(3)),
        "peak_rss_mib": peak_kib / 1024,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--neurons", type=int, default=80000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--duration-ms", type=float, default=200.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", help="only write the snn network (and brunel_drive.ron beside it) here")
    parser.add_argument("--snn", default=os.path.join(REPO, "target", "release", "snn"))
    parser.add_argument("--nest-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.write:
        write_network(args.write, args.neurons, args.duration_ms)
        return
    if args.nest_only:
        print(json.dumps(run_nest(args.neurons, args.threads[0], args.duration_ms, args.seed)))
        return
    folder = tempfile.mkdtemp(prefix="brunel_")
    network = os.path.join(folder, "brunel.ron")
    write_network(network, args.neurons, args.duration_ms)
    results = []
    for threads in args.threads:
        for repeat in range(args.repeats):
            for tool in ("nest", "snn"):
                if tool == "nest":
                    cmd = [sys.executable, __file__, "--nest-only", "--neurons", str(args.neurons),
                           "--threads", str(threads), "--duration-ms", str(args.duration_ms), "--seed", str(args.seed)]
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                    r = json.loads(out.strip().splitlines()[-1])
                else:
                    r = run_snn(args.snn, network, threads, args.duration_ms)
                r.update(tool=tool, threads=threads, repeat=repeat, neurons=args.neurons,
                         bytes_per_synapse=r["peak_rss_mib"] * 2**20 / max(r["synapses"], 1))
                print(json.dumps(r), flush=True)
                results.append(r)


if __name__ == "__main__":
    main()
