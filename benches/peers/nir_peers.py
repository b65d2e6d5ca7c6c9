"""NIR side by side: graphs made by snnTorch 1.0.0 and Norse 1.1.0 (nir 1.0.8), run by their own
framework and by `snn nir run`, compared array by array.

    # make the fixtures (NIR files plus each framework's own run) in tests/data/nir
    benches/peers/.venv/bin/python benches/peers/nir_peers.py make --out tests/data/nir
    # run `snn nir run` on every fixture and compare spikes (exact) and membranes (1e-5)
    benches/peers/.venv/bin/python benches/peers/nir_peers.py check --snn target/release/snn
    # a model trained in snn and exported (`snn nir export`): load it with nir.read, import it
    # with snntorch.import_from_nir, run the test set, compare with `snn eval`'s predictions.csv
    benches/peers/.venv/bin/python benches/peers/nir_peers.py predictions MODEL.nir \
        --predictions predictions.csv --data /usr/share/datasets/fashion-mnist --steps 4

Each fixture is NAME.nir (written by the framework's exporter and nir.write) and NAME.h5 with
`input` (T x B x input shape, 0/1 spikes), `dt` (the exporter's time step, for --dt) and, per
stateful node, `spk_<node>` and `mem_<node>`: the framework's own spikes and membranes after the
step's reset. Nodes inside a subgraph are named `<graph>.<node>`.

What the frameworks do and NIR says differently, and how the fixtures stay comparable:
- snnTorch writes reset to zero for every Leaky, whatever its reset mechanism, and keeps no
  reset delay: the models here reset to zero with `reset_delay=False`, as snnTorch's own
  `import_from_nir` builds them.
- snnTorch's RLeaky adds its recurrent bias at the first step (spk starts at 0, recurrent(0) =
  bias); NIR delivers nothing over a cycle at the first step. The recurrent bias here is 0.
- Norse's LIFCell (exported as CubaLIF) updates the membrane with the previous step's current and
  adds its input to the current undecayed; NIR's CubaLIF decays the current first and scales the
  input by dt/tau_syn. The Norse fixture uses LIFBoxCell and LIBoxCell (exported as LIF and LI),
  whose dynamics NIR states exactly. Norse 1.1.0 writes tau = dt * tau_true (its issue #411):
  the fixture records dt = 1e-6, which reproduces its runs.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import h5py
import nir
import numpy as np
import torch
import torch.nn as nn

STEPS, BATCH = 30, 4


def spikes(shape, p, generator):
    return (torch.rand(shape, generator=generator) < p).float()


def scaled(module, factor):
    with torch.no_grad():
        module.weight.mul_(factor)
    return module


# ---------------------------------------------------------------- snnTorch graphs

def snntorch_models():
    import snntorch as snn

    # Parameters per neuron: NIR wants every neuron parameter in the layer's shape, and snnTorch
    # exports them as given.
    def full(shape, value):
        return torch.full(shape, value)

    def leaky(shape, beta, threshold=1.0):
        return snn.Leaky(beta=full(shape, beta), threshold=full(shape, threshold), reset_mechanism="zero",
                         reset_delay=False, init_hidden=True)

    def synaptic(shape, alpha, beta, threshold=1.0):
        return snn.Synaptic(alpha=full(shape, alpha), beta=full(shape, beta), threshold=full(shape, threshold),
                            reset_mechanism="zero", reset_delay=False, init_hidden=True)

    torch.manual_seed(1)
    ff = nn.Sequential(scaled(nn.Linear(12, 16), 3.0), leaky((16,), 0.9), scaled(nn.Linear(16, 5), 2.0), leaky((5,), 0.8, 0.7))

    torch.manual_seed(2)
    conv = nn.Sequential(
        scaled(nn.Conv2d(1, 4, 3, padding=1), 2.0),
        leaky((4, 8, 8), 0.85),
        nn.AvgPool2d(2),
        nn.Flatten(),
        scaled(nn.Linear(4 * 4 * 4, 5), 3.0),
        leaky((5,), 0.9),
    )

    torch.manual_seed(3)
    rleaky = snn.RLeaky(beta=0.9, linear_features=10, all_to_all=True, reset_mechanism="zero",
                        reset_delay=False, init_hidden=True)
    with torch.no_grad():
        rleaky.recurrent.weight.mul_(2.0)
        rleaky.recurrent.bias.zero_()
    recurrent = nn.Sequential(scaled(nn.Linear(12, 10), 3.0), rleaky, scaled(nn.Linear(10, 5), 2.0), leaky((5,), 0.8))

    torch.manual_seed(4)
    synaptic = nn.Sequential(
        scaled(nn.Linear(12, 16), 1.5),
        synaptic((16,), 0.7, 0.9),
        scaled(nn.Linear(16, 5), 1.0),
        synaptic((5,), 0.8, 0.85, 0.8),
    )
    return {
        "snntorch_ff": (ff, (12,)),
        "snntorch_conv": (conv, (1, 8, 8)),
        "snntorch_recurrent": (recurrent, (12,)),
        "snntorch_synaptic": (synaptic, (12,)),
    }


def snntorch_spikes(model, inputs):
    """Every neuron layer's spikes: the layer outputs, caught by forward hooks."""
    import snntorch as snn
    from snntorch import utils

    utils.reset(model)
    caught = {}
    hooks = []
    for i, m in enumerate(model):
        if isinstance(m, snn.SpikingNeuron):
            caught[str(i)] = []
            hooks.append(m.register_forward_hook(lambda mod, inp, out, k=str(i): caught[k].append(out.clone())))
    mems = {k: [] for k in caught}
    with torch.no_grad():
        for x in inputs:
            model(x)
            for i, m in enumerate(model):
                if str(i) in mems:
                    mems[str(i)].append(m.mem.clone())
    for h in hooks:
        h.remove()
    return {k: torch.stack(v) for k, v in caught.items()}, {k: torch.stack(v) for k, v in mems.items()}


def snntorch_export(model, shape):
    from snntorch.export_nir import export_to_nir

    import snntorch.utils as utils

    utils.reset(model)
    graph = export_to_nir(model, torch.zeros(BATCH, *shape), ignore_dims=[0])
    utils.reset(model)
    return graph


# ---------------------------------------------------------------- Norse graph

def norse_model():
    import norse.torch as norse

    torch.manual_seed(5)
    model = norse.SequentialState(
        scaled(nn.Linear(12, 16), 4.0),
        norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.full((16,), 100.0), v_leak=torch.zeros(16),
                                                v_th=torch.full((16,), 0.5), v_reset=torch.zeros(16))),
        scaled(nn.Linear(16, 5), 2.0),
        norse.LIBoxCell(norse.LIBoxParameters(tau_mem_inv=torch.full((5,), 50.0), v_leak=torch.zeros(5))),
    )
    return model


def norse_run(model, inputs):
    """Norse's own run, with the state of every stateful module after each step."""
    import norse.torch as norse

    names = [str(i) for i, m in enumerate(model) if isinstance(m, (norse.LIFBoxCell, norse.LIBoxCell))]
    spk, mem = {k: [] for k in names}, {k: [] for k in names}
    state = None
    with torch.no_grad():
        for x in inputs:
            h = x
            states = [None] * len(model) if state is None else state
            new_states = []
            for i, m in enumerate(model):
                if str(i) in names:
                    h, s = m(h, states[i])
                    new_states.append(s)
                    mem[str(i)].append(s.v.clone())
                    if isinstance(m, norse.LIFBoxCell):
                        spk[str(i)].append(h.clone())
                else:
                    h = m(h)
                    new_states.append(None)
            state = new_states
    return {k: torch.stack(v) for k, v in spk.items() if v}, {k: torch.stack(v) for k, v in mem.items()}


# ---------------------------------------------------------------- every node type

def every_node_graph(rng):
    """A graph using every NIR 1.0 node type the frameworks above do not make (IF, I, CubaLI,
    Linear, Scale, Threshold, Conv1d with dilation, SumPool2d, AvgPool2d with padding, Delay,
    string padding, several outputs, a nested graph with a cycle), for the NumPy reference below."""
    f = lambda *shape: rng.uniform(-1, 1, shape).astype(np.float32)
    dt = 1e-3
    sub = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([6])),
            "lif": nir.LIF(tau=np.full(6, 5e-3), r=np.full(6, 5.0), v_leak=np.zeros(6), v_threshold=np.full(6, 0.4),
                           v_reset=np.full(6, -0.1)),
            "rec": nir.Linear(weight=f(6, 6)),
            "output": nir.Output(output_type=np.array([6])),
        },
        edges=[("input", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")],
        type_check=False,
    )
    nodes = {
        "input": nir.Input(input_type=np.array([1, 6, 6])),
        "conv2": nir.Conv2d(input_shape=np.array([6, 6]), weight=f(2, 1, 3, 3), stride=1, padding="same", dilation=1,
                            groups=1, bias=f(2)),
        "sumpool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "avgpool": nir.AvgPool2d(kernel_size=np.array([3, 3]), stride=np.array([1, 1]), padding=np.array([1, 1])),
        "flat": nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=0, end_dim=-1),
        "scale": nir.Scale(scale=f(18) * 2),
        "cubali": nir.CubaLI(tau_syn=np.full(18, 2e-3), tau_mem=np.full(18, 4e-3), r=np.full(18, 2.0),
                             v_leak=np.full(18, 0.05), w_in=np.full(18, 1.5)),
        "thr": nir.Threshold(threshold=np.full(18, 0.02)),
        "delay": nir.Delay(delay=np.array([0, 1, 2, 3, 1, 2] * 3) * dt),
        "lin": nir.Linear(weight=f(6, 18)),
        "if": nir.IF(r=np.full(6, 300.0), v_threshold=np.full(6, 0.5), v_reset=np.zeros(6)),
        "integ": nir.I(r=np.full(6, 100.0)),
        "aff": nir.Affine(weight=f(8, 6), bias=f(8)),
        "conv1": nir.Conv1d(input_shape=4, weight=f(3, 2, 2), stride=1, padding=0, dilation=2, groups=1, bias=f(3)),
        "sub": sub,
        "out_spikes": nir.Output(output_type=np.array([6])),
        "out_integ": nir.Output(output_type=np.array([6])),
        "out_conv": nir.Output(output_type=np.array([3, 2])),
    }
    edges = [("input", "conv2"), ("conv2", "sumpool"), ("sumpool", "avgpool"), ("avgpool", "flat"),
             ("flat", "scale"), ("scale", "cubali"), ("cubali", "thr"), ("thr", "delay"), ("delay", "lin"),
             ("lin", "if"), ("if", "sub"), ("sub", "out_spikes"), ("lin", "integ"), ("integ", "out_integ"),
             ("lin", "aff"), ("aff", "conv1"), ("conv1", "out_conv")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), dt


def every_node_reference(graph, dt, inputs):
    """NIR's definitions written out in NumPy (float64), step by step."""
    n = graph.nodes
    T, B = inputs.shape[:2]
    f64 = lambda a: np.asarray(a, dtype=np.float64)

    def conv2d(x, node):  # x: B x C x H x W, padding "same", stride 1
        w, b = f64(node.weight), f64(node.bias)
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((x.shape[0], w.shape[0], x.shape[2], x.shape[3]))
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                out[:, :, i, j] = np.einsum("bchw,ochw->bo", xp[:, :, i:i + 3, j:j + 3], w) + b
        return out

    def pool(x, k, s, p, average):
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        oh = (x.shape[2] + 2 * p - k) // s + 1
        out = np.zeros((x.shape[0], x.shape[1], oh, oh))
        for i in range(oh):
            for j in range(oh):
                out[:, :, i, j] = xp[:, :, i * s:i * s + k, j * s:j * s + k].sum(axis=(2, 3))
        return out / (k * k) if average else out

    def conv1d(x, node):  # x: B x 2 x 4, dilation 2, kernel 2
        w, b = f64(node.weight), f64(node.bias)
        out = np.zeros((x.shape[0], 3, 2))
        for j in range(2):
            out[:, :, j] = np.einsum("bck,ock->bo", x[:, :, [j, j + 2]], w) + b
        return out

    sub = n["sub"].nodes
    state = {k: np.zeros((B, 18)) for k in ("syn", "v_cubali")}
    state.update({"v_if": np.zeros((B, 6)), "v_integ": np.zeros((B, 6)), "v_lif": np.zeros((B, 6)),
                  "rec_prev": np.zeros((B, 6))})
    steps_back = np.round(f64(n["delay"].delay) / dt).astype(int)
    history = []
    rec = {k: [] for k in ("spk_if", "mem_if", "mem_integ", "mem_cubali", "spk_sub.lif", "mem_sub.lif",
                           "output_out_spikes", "output_out_integ", "output_out_conv")}
    for t in range(T):
        x = f64(inputs[t])
        y = pool(pool(conv2d(x, n["conv2"]), 2, 2, 0, False), 3, 1, 1, True).reshape(B, 18)
        y = y * f64(n["scale"].scale)
        c = n["cubali"]
        state["syn"] += dt / f64(c.tau_syn) * (-state["syn"] + f64(c.w_in) * y)
        state["v_cubali"] += dt / f64(c.tau_mem) * (f64(c.v_leak) - state["v_cubali"] + f64(c.r) * state["syn"])
        y = (state["v_cubali"] > f64(n["thr"].threshold)).astype(np.float64)
        history.append(y)
        y = np.stack([history[t - d][:, k] if t - d >= 0 else np.zeros(B) for k, d in enumerate(steps_back)], axis=1)
        lin = y @ f64(n["lin"].weight).T
        state["v_if"] += dt * f64(n["if"].r) * lin
        spk_if = (state["v_if"] > f64(n["if"].v_threshold)).astype(np.float64)
        state["v_if"] = np.where(spk_if > 0, f64(n["if"].v_reset), state["v_if"])
        state["v_integ"] += dt * f64(n["integ"].r) * lin
        lif = sub["lif"]
        drive = spk_if + state["rec_prev"]
        state["v_lif"] += dt / f64(lif.tau) * (f64(lif.v_leak) - state["v_lif"] + f64(lif.r) * drive)
        spk_lif = (state["v_lif"] > f64(lif.v_threshold)).astype(np.float64)
        state["v_lif"] = np.where(spk_lif > 0, f64(lif.v_reset), state["v_lif"])
        state["rec_prev"] = spk_lif @ f64(sub["rec"].weight).T
        aff = lin @ f64(n["aff"].weight).T + f64(n["aff"].bias)
        conv = conv1d(aff.reshape(B, 2, 4), n["conv1"])
        for key, value in (("spk_if", spk_if), ("mem_if", state["v_if"]), ("mem_integ", state["v_integ"]),
                           ("mem_cubali", state["v_cubali"]), ("spk_sub.lif", spk_lif), ("mem_sub.lif", state["v_lif"]),
                           ("output_out_spikes", spk_lif), ("output_out_integ", state["v_integ"]),
                           ("output_out_conv", conv)):
            rec[key].append(value.copy())
    return {k: torch.from_numpy(np.stack(v)) for k, v in rec.items()}


# ---------------------------------------------------------------- files

def write_fixture(out, name, graph, dt, inputs, spk, mem, extra=None):
    nir.write(os.path.join(out, f"{name}.nir"), graph)
    with h5py.File(os.path.join(out, f"{name}.h5"), "w") as f:
        f.create_dataset("input", data=inputs.numpy().astype(np.float32), compression="gzip")
        f.create_dataset("dt", data=np.float64(dt))
        for k, v in spk.items():
            f.create_dataset(f"spk_{k}", data=v.numpy().astype(np.float32), compression="gzip")
        for k, v in mem.items():
            f.create_dataset(f"mem_{k}", data=v.numpy().astype(np.float32), compression="gzip")
        for k, v in (extra or {}).items():
            f.create_dataset(k, data=v.numpy().astype(np.float32), compression="gzip")
    fired = {k: int(v.sum()) for k, v in spk.items()}
    print(f"{name}: nodes {sorted(graph.nodes)}, spikes per layer {fired}")


def make(out):
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    for name, (model, shape) in snntorch_models().items():
        inputs = spikes((STEPS, BATCH, *shape), 0.3, g)
        graph = snntorch_export(model, shape)
        spk, mem = snntorch_spikes(model, inputs)
        # The exporter flattens the recurrent layer into nodes `<index>.lif` and `<index>.w_rec`.
        rename = {k: (k if k in graph.nodes else f"{k}.lif") for k in spk}
        write_fixture(out, name, graph, 1e-4, inputs, {rename[k]: v for k, v in spk.items()},
                      {rename[k]: v for k, v in mem.items()})

    from norse.torch.utils.export_nir import to_nir

    model = norse_model()
    inputs = spikes((STEPS, BATCH, 12), 0.3, g)
    spk, mem = norse_run(model, inputs)
    # A sample without the batch dimension: Norse writes the sample's whole shape as the Input's.
    graph = to_nir(model, torch.zeros(12))
    write_fixture(out, "norse_ff", graph, 1e-6, inputs, spk, mem)

    rng = np.random.default_rng(11)
    graph, dt = every_node_graph(rng)
    inputs = torch.from_numpy(rng.uniform(0, 1, (STEPS, BATCH, 1, 6, 6)).astype(np.float32))
    ref = every_node_reference(graph, dt, inputs.numpy())
    spk = {k[4:]: v for k, v in ref.items() if k.startswith("spk_")}
    mem = {k[4:]: v for k, v in ref.items() if k.startswith("mem_")}
    outputs = {k: v for k, v in ref.items() if k.startswith("output_")}
    write_fixture(out, "numpy_every_node", graph, dt, inputs, spk, mem, outputs)


def check(snn, folder):
    worst = 0.0
    failed = False
    for file in sorted(f for f in os.listdir(folder) if f.endswith(".nir")):
        name = file[:-4]
        expected = h5py.File(os.path.join(folder, f"{name}.h5"), "r")
        with tempfile.TemporaryDirectory() as tmp:
            result = os.path.join(tmp, "out.h5")
            subprocess.run([snn, "nir", "run", os.path.join(folder, file), "--dt", str(expected["dt"][()]),
                            "--input", os.path.join(folder, f"{name}.h5"), "--out", result], check=True)
            got = h5py.File(result, "r")
            for key in expected:
                if not key.startswith(("spk_", "mem_", "output_")):
                    continue
                a, b = expected[key][()], got[key][()]
                if key.startswith("spk_"):
                    differ = int((a != b).sum())
                    print(f"{name} {key}: {int(a.sum())} spikes, {differ} differ")
                    failed |= differ > 0
                else:
                    err = float(np.abs(a - b).max())
                    worst = max(worst, err)
                    print(f"{name} {key}: largest membrane difference {err:.2e}")
                    failed |= err > 1e-5
    print(f"worst membrane difference {worst:.2e}; {'FAILED' if failed else 'all spikes equal'}")
    return 1 if failed else 0


def import_into_snntorch(path):
    """nir.read (type-checked) and snntorch.import_from_nir, with two shims for gaps in
    snnTorch 1.0.0's importer, neither of which changes what the graph computes:
    - it has no LI node: an LI is given to it as a LIF whose threshold is +inf, which never
      fires and so integrates exactly as the LI;
    - it builds Flatten as torch.nn.Flatten(start_dim, end_dim) with NIR's dimensions, which
      count without the batch; the built modules get start_dim + 1.
    Returns the module and the name of the readout node (the Output's source)."""
    import snntorch as snn
    from snntorch.import_nir import import_from_nir

    graph = nir.read(path)
    for name, node in list(graph.nodes.items()):
        if isinstance(node, nir.LI):
            graph.nodes[name] = nir.LIF(tau=node.tau, r=node.r, v_leak=node.v_leak,
                                        v_threshold=np.full_like(node.tau, np.inf), v_reset=np.zeros_like(node.tau))
    readout = next(a for a, b in graph.edges if isinstance(graph.nodes[b], nir.Output))
    net = import_from_nir(graph)
    for module in net.modules():
        if isinstance(module, nn.Flatten) and module.start_dim >= 0:
            module.start_dim += 1
    leaky = {name: m for name, m in net.named_modules() if isinstance(m, snn.SpikingNeuron)}
    return net, leaky, readout


def test_set(folder):
    import gzip

    def idx(name):
        with gzip.open(os.path.join(folder, name)) as f:
            data = f.read()
        dims = data[3]
        shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)

    images = idx("t10k-images-idx3-ubyte.gz").astype(np.float32) / np.float32(255.0)
    return torch.from_numpy(images).reshape(-1, 1, 28, 28), idx("t10k-labels-idx1-ubyte.gz")


def predictions(args):
    from snntorch import utils

    net, leaky, readout = import_into_snntorch(args.model)
    module = leaky.get(readout) or leaky.get(readout.replace(".", "_"))
    if module is None:
        sys.exit(f"no spiking module for the readout node {readout}: modules {sorted(leaky)}")
    images, labels = test_set(args.data)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    ours = np.loadtxt(args.predictions, delimiter=",", skiprows=1, dtype=np.int64)[: len(labels)]
    predicted = []
    with torch.no_grad():
        for start in range(0, len(images), 500):
            x = images[start:start + 500]
            utils.reset(net)
            for m in leaky.values():
                m.mem = torch.zeros(0)
            total = 0
            for _ in range(args.steps):
                net(x)
                total = total + module.mem
            predicted.append((total / args.steps).argmax(1).numpy())
    predicted = np.concatenate(predicted)
    same = int((predicted == ours[:, 2]).sum())
    accuracy = float((predicted == labels).mean())
    print(f"snnTorch on the exported graph: test accuracy {100 * accuracy:.2f}%; "
          f"same prediction as snn for {same} of {len(labels)} images ({100 * same / len(labels):.2f}%)")
    differ = np.nonzero(predicted != ours[:, 2])[0]
    if len(differ):
        print("differing images:", ", ".join(map(str, differ[:20])))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", default="tests/data/nir")
    c = sub.add_parser("check")
    c.add_argument("--snn", default="target/release/snn")
    c.add_argument("--fixtures", default="tests/data/nir")
    p = sub.add_parser("predictions")
    p.add_argument("model")
    p.add_argument("--predictions", required=True, help="predictions.csv written by `snn eval`")
    p.add_argument("--data", default="tests/data/fashion-mnist")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    if args.command == "make":
        make(args.out)
    elif args.command == "predictions":
        sys.exit(predictions(args))
    else:
        sys.exit(check(args.snn, args.fixtures))


if __name__ == "__main__":
    main()
