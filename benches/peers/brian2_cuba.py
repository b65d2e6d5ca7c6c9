"""CUBA (Vogels & Abbott 2005) in Brian2's C++ standalone mode, as in Brian2's examples/CUBA.py.

Builds once, then runs the compiled binary `--repeats` times and prints, as JSON, the median
wall time of the whole binary (setup + 1 s simulation + writing the spike monitor) and of the
network run alone (Brian2's own `last_run_info.txt`), plus the spike statistics.

    benches/peers/.venv/bin/python benches/peers/brian2_cuba.py --repeats 7
"""

import argparse
import json
import os
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
parser.add_argument("--directory", default=os.path.join(tempfile.gettempdir(), "brian2_cuba"))
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
run(1 * second)

t0 = time.perf_counter()
device.build(directory=args.directory, compile=True, run=True)
first = time.perf_counter() - t0

i = np.asarray(s_mon.i)
t = np.asarray(s_mon.t / ms)
exc = i < 3200
rate_exc = exc.sum() / 3200 / 1.0
rate_inh = (~exc).sum() / 800 / 1.0

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

whole, run_only = [], []
for _ in range(args.repeats):
    t0 = time.perf_counter()
    subprocess.run(["./main"], cwd=args.directory, check=True, stdout=subprocess.DEVNULL)
    whole.append(time.perf_counter() - t0)
    with open(os.path.join(args.directory, "results", "last_run_info.txt")) as f:
        run_only.append(float(f.read().split()[0]))

print(json.dumps({
    "peer": "brian2 cpp_standalone",
    "synapses": int(len(Ce) + len(Ci)),
    "spikes": int(len(i)),
    "rate_exc_hz": rate_exc,
    "rate_inh_hz": rate_inh,
    "cv_isi_exc": cv_isi(i[exc], t[exc]),
    "first_build_and_run_s": first,
    "binary_wall_median_s": statistics.median(whole),
    "run_only_median_s": statistics.median(run_only),
    "repeats": args.repeats,
}, indent=1))
