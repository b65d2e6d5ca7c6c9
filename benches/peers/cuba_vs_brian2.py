"""CUBA (Vogels & Abbott 2005): Brian2's C++ standalone mode against `snn simulate`.

Brian2's network is its examples/CUBA.py; ours is networks/cuba.ron. Brian2 builds once, then
its compiled binary and `snn simulate` run alternately `--repeats` times, so that both see the
same machine load. Printed as JSON: for each, the median wall time of the whole process (setup +
--duration-s of simulated time, 1 s by default + writing spikes) and of the simulation loop alone (Brian2's own
results/last_run_info.txt; the "run ... s wall" line of snn's summary), the ratios, and
Brian2's spike statistics.

    cargo build --release
    benches/peers/.venv/bin/python benches/peers/cuba_vs_brian2.py --repeats 15 [--duration-s 10]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time

import numpy as np
from brian2 import (
    NeuronGroup, Synapses, SpikeMonitor, run, ms, mV, second, set_device, device, seed, defaultclock,
)

parser = argparse.ArgumentParser()
parser.add_argument("--repeats", type=int, default=7)
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--duration-s", type=float, default=1.0, help="simulated time")
parser.add_argument("--directory", default=os.path.join(tempfile.gettempdir(), "brian2_cuba"))
repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
parser.add_argument("--snn", default=os.path.join(repo, "target", "release", "snn"))
args = parser.parse_args()

set_device("cpp_standalone", directory=args.directory, build_on_run=False)
seed(args.seed)
defaultclock.dt = 0.1 * ms

taum, taue, taui = 20 * ms, 5 * ms, 10 * ms
Vt, Vr, El = -50 * mV, -60 * mV, -49 * mV
eqs = """
dv/dt  = (ge+gi-(v-El))/taum : volt (unless refractory)
dge/dt = -ge/taue : volt
dgi/dt = -gi/taui : volt
"""
P = NeuronGroup(4000, eqs, threshold="v>Vt", reset="v = Vr", refractory=5 * ms, method="exact")
P.v = "Vr + rand() * (Vt - Vr)"
P.ge = 0 * mV
P.gi = 0 * mV
we = (60 * 0.27 / 10) * mV
wi = (-20 * 4.5 / 10) * mV
Ce = Synapses(P, P, on_pre="ge += we")
Ci = Synapses(P, P, on_pre="gi += wi")
Ce.connect("i<3200", p=0.02)
Ci.connect("i>=3200", p=0.02)
s_mon = SpikeMonitor(P)
run(args.duration_s * second)

t0 = time.perf_counter()
device.build(directory=args.directory, compile=True, run=True)
first = time.perf_counter() - t0

i = np.asarray(s_mon.i)
t = np.asarray(s_mon.t / ms)
exc = i < 3200
rate_exc = exc.sum() / 3200 / args.duration_s
rate_inh = (~exc).sum() / 800 / args.duration_s

def cv_isi(i, t):
    cvs = []
    order = np.lexsort((t, i))
    i, t = i[order], t[order]
    for n in np.unique(i):
        ts = t[i == n]
        if len(ts) >= 3:
            d = np.diff(ts)
            cvs.append(d.std() / d.mean())
    return float(np.mean(cvs)) if cvs else float("nan")

whole, run_only, snn_whole, snn_run = [], [], [], []
snn_out = os.path.join(tempfile.gettempdir(), "snn_cuba")
snn_cmd = [args.snn, "simulate", os.path.join(repo, "networks", "cuba.ron"), "--no-figures",
           "--seed", str(args.seed), "--duration-ms", str(args.duration_s * 1000), "--out", snn_out]
for _ in range(args.repeats):
    t0 = time.perf_counter()
    subprocess.run(["./main"], cwd=args.directory, check=True, stdout=subprocess.DEVNULL)
    whole.append(time.perf_counter() - t0)
    with open(os.path.join(args.directory, "results", "last_run_info.txt")) as f:
        run_only.append(float(f.read().split()[0]))
    t0 = time.perf_counter()
    summary = subprocess.run(snn_cmd, check=True, capture_output=True, text=True).stdout
    snn_whole.append(time.perf_counter() - t0)
    snn_run.append(float(re.search(r"run ([0-9.]+) s wall", summary).group(1)))

print(json.dumps({
    "peer": "brian2 cpp_standalone",
    "synapses": int(len(Ce) + len(Ci)),
    "spikes": int(len(i)),
    "rate_exc_hz": rate_exc,
    "rate_inh_hz": rate_inh,
    "cv_isi_exc": cv_isi(i[exc], t[exc]),
    "brian2_first_build_and_run_s": first,
    "brian2_process_median_s": statistics.median(whole),
    "brian2_run_median_s": statistics.median(run_only),
    "snn_process_median_s": statistics.median(snn_whole),
    "snn_run_median_s": statistics.median(snn_run),
    "ratio_process": statistics.median(whole) / statistics.median(snn_whole),
    "ratio_run": statistics.median(run_only) / statistics.median(snn_run),
    "snn_summary_last": summary,
    "repeats": args.repeats,
    "duration_s": args.duration_s,
}, indent=1))
