"""Training speed of snnTorch on the row-by-row recurrent net of networks/fashion_rows.ron, for
comparison with `snn train`: each image as 28 steps of one 28-pixel row (currents) ->
Linear(256) -> RLeaky -> Dropout(0.2) -> Linear(256) -> RLeaky -> Dropout(0.2) -> Linear(10) ->
Leaky readout without reset (beta exp(-1/20)), its membrane averaged over the 28 steps as class
scores. Each RLeaky: all to all (256 x 256 recurrent Linear), one learnable beta per neuron from
exp(-1/10), subtract reset, threshold 1. Cross-entropy, Adam (lr 1e-3), batch 128.

snnTorch's RLeaky adds its recurrent Linear's bias at every step; snn's recurrent layer has no
bias (the arithmetic differs by one vector add per step).

Prints samples per second over one epoch of the given training images (forward, backward and
update) and the process's peak resident memory, as JSON.

    benches/peers/.venv/bin/python benches/peers/snntorch_rows.py --data /usr/share/datasets/fashion-mnist --samples 60000
"""

import math

import torch
import torch.nn as nn
import snntorch as snn

from fashion_data import arguments, timed_epoch, training_images

args = arguments(steps=28)
torch.manual_seed(1)
images, labels = training_images(args.data, args.samples)
decay = math.exp(-1 / 10)


def rleaky():
    return snn.RLeaky(beta=torch.full((256,), decay), learn_beta=True, linear_features=256, all_to_all=True,
                      reset_mechanism="subtract")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(28, 256)
        self.rlif1 = rleaky()
        self.fc2 = nn.Linear(256, 256)
        self.rlif2 = rleaky()
        self.fc3 = nn.Linear(256, 10)
        self.drop = nn.Dropout(0.2)
        self.readout = snn.Leaky(beta=math.exp(-1 / 20), reset_mechanism="none")

    def forward(self, x):  # x: batch x 28 x 28, row t at step t
        spk1, mem1 = self.rlif1.init_rleaky()
        spk2, mem2 = self.rlif2.init_rleaky()
        out = self.readout.init_leaky()
        # One dropout mask per sample for all steps, as snn keeps it.
        keep1 = self.drop(torch.ones(x.shape[0], 256))
        keep2 = self.drop(torch.ones(x.shape[0], 256))
        total = 0
        for t in range(args.steps):
            spk1, mem1 = self.rlif1(self.fc1(x[:, t, :]), spk1, mem1)
            spk2, mem2 = self.rlif2(self.fc2(spk1 * keep1), spk2, mem2)
            _, out = self.readout(self.fc3(spk2 * keep2), out)
            total = total + out
        return total / args.steps


net = Net()
optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
timed_epoch(args, images, labels, net, optimizer, lambda x: x)
