"""Training speed of snnTorch on the network of networks/fashion_snn.ron, for comparison with
`snn train`: 784 rate-coded inputs, 800 Leaky neurons (beta = 0.95, threshold 1, subtract
reset), a 10-neuron non-spiking leaky readout whose membrane, averaged over T = 25 steps, gives
the class scores; cross-entropy, Adam (lr 5e-4), batch 128. Rate coding with
snntorch.spikegen.rate, as `snn train` does it.

Prints samples per second over one epoch of the given training images (forward, backward and
update, input encoding included) and the process's peak resident memory, as JSON.

    benches/peers/.venv/bin/python benches/peers/snntorch_fashion.py --data tests/data/fashion-mnist
"""


import torch
import torch.nn as nn
import snntorch as snn

from fashion_data import arguments, timed_epoch, training_images
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
timed_epoch(args, images, labels, net, optimizer, lambda x: spikegen.rate(x, num_steps=args.steps))
