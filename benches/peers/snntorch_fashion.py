"""Training speed of snnTorch on the network of networks/fashion_snn.ron, for comparison with
`snn train`: 784 rate-coded inputs, 800 Leaky neurons (beta = 0.95, threshold 1, subtract
reset), a 10-neuron non-spiking leaky readout whose membrane, averaged over T = 25 steps, gives
the class scores; cross-entropy, Adam (lr 5e-4), batch 128. Rate coding with
snntorch.spikegen.rate, as `snn train` does it.

Prints samples per second over one epoch of the given training images (forward, backward and
update, input encoding included) and the process's peak resident memory, as JSON.

    benches/peers/.venv/bin/python benches/peers/snntorch_fashion.py --data tests/data/fashion-mnist
"""

import json
import resource
import time

import torch
import torch.nn as nn
import snntorch as snn

from fashion_data import arguments, training_images
from snntorch import spikegen

args = arguments(steps=25)
torch.manual_seed(1)


images, labels = training_images(args.data, args.samples)
images = images.reshape(len(images), -1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 800)
        self.lif1 = snn.Leaky(beta=0.95, threshold=1.0, reset_mechanism="subtract")
        self.fc2 = nn.Linear(800, 10)
        self.lif2 = snn.Leaky(beta=0.95, threshold=1.0, reset_mechanism="none")

    def forward(self, x):  # x: steps x batch x 784
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        total = 0
        for t in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[t]), mem1)
            _, mem2 = self.lif2(self.fc2(spk1), mem2)
            total = total + mem2
        return total / x.shape[0]


net = Net()
optimizer = torch.optim.Adam(net.parameters(), lr=5e-4)
loss_fn = nn.CrossEntropyLoss()
order = torch.randperm(len(images))
start = time.perf_counter()
seen = 0
for b in range(0, len(images), args.batch):
    index = order[b : b + args.batch]
    x = spikegen.rate(images[index], num_steps=args.steps)
    scores = net(x)
    loss = loss_fn(scores, labels[index])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    seen += len(index)
elapsed = time.perf_counter() - start
print(json.dumps({
    "peer": f"snntorch {snn.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads",
    "samples": seen,
    "batch": args.batch,
    "steps": args.steps,
    "seconds": elapsed,
    "samples_per_s": seen / elapsed,
    "last_loss": float(loss),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}, indent=1))
