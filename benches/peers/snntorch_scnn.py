"""Training speed of snnTorch on the spiking CNN of networks/fashion_scnn.ron, for comparison
with `snn train`: Conv2d(32) -> BatchNorm -> Leaky -> MaxPool -> Conv2d(64) -> BatchNorm ->
Leaky -> MaxPool -> Flatten -> Dropout(0.25) -> Linear(128) -> Leaky -> Linear(10) -> Leaky
without reset (the leaky-integrator readout), T = 4 steps of direct-current input, the readout
membrane averaged over the steps as class scores; cross-entropy, Adam (lr 1e-3), batch 128.
Hidden Leaky layers learn one beta per channel (per neuron after Linear) from 0.5, subtract
reset, threshold 1, as in the network file; the readout's beta is exp(-1/20), fixed.

The loop over steps is snnTorch's idiom, so the second batch norm takes its statistics per step;
`snn` takes them over batch and time (the arithmetic is the same size). The first convolution and
batch norm, whose input is the same at every step, run once before the loop, in both.

Prints samples per second over one epoch of the given training images (forward, backward and
update) and the process's peak resident memory, as JSON.

    benches/peers/.venv/bin/python benches/peers/snntorch_scnn.py --data tests/data/fashion-mnist
"""

import math

import torch
import torch.nn as nn
import snntorch as snn

from fashion_data import arguments, timed_epoch, training_images

args = arguments(steps=4)
torch.manual_seed(1)


images, labels = training_images(args.data, args.samples)
images = images.reshape(len(images), 1, 28, 28)


def leaky(shape):
    return snn.Leaky(beta=torch.full(shape, 0.5), learn_beta=True, threshold=1.0, reset_mechanism="subtract")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.lif1 = leaky((32, 1, 1))
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.lif2 = leaky((64, 1, 1))
        self.drop = nn.Dropout(0.25)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.lif3 = leaky((128,))
        self.fc2 = nn.Linear(128, 10)
        self.readout = snn.Leaky(beta=math.exp(-1 / 20), reset_mechanism="none")

    def forward(self, x):  # x: batch x 1 x 28 x 28, the same current at every step
        mems = [self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky(), self.readout.init_leaky()]
        total = 0
        # The input is the same at every step, and so are the first convolution and batch norm
        # (in training mode too: the same batch, the same statistics); computed once, as snn does.
        current = self.bn1(self.conv1(x))
        for _ in range(args.steps):
            spk, mems[0] = self.lif1(current, mems[0])
            spk, mems[1] = self.lif2(self.bn2(self.conv2(nn.functional.max_pool2d(spk, 2))), mems[1])
            spk = self.drop(nn.functional.max_pool2d(spk, 2).flatten(1))
            spk, mems[2] = self.lif3(self.fc1(spk), mems[2])
            _, mems[3] = self.readout(self.fc2(spk), mems[3])
            total = total + mems[3]
        return total / args.steps


net = Net()
optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
timed_epoch(args, images, labels, net, optimizer, lambda x: x)
