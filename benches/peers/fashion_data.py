"""The first training images and labels of an MNIST-format folder, as the peer scripts read them:
intensities in [0, 1] (pixel / 255, as `snn` encodes them), one image per row."""

import argparse
import gzip
import os
import struct

import numpy as np
import torch


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    sizes = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data[4 + 4 * dims:], dtype=np.uint8).reshape(sizes)


def training_images(folder, samples):
    """(images: samples x 28 x 28 float32 tensor, labels: samples long tensor)."""
    images = torch.tensor(idx(os.path.join(folder, "train-images-idx3-ubyte.gz"))[:samples], dtype=torch.float32) / 255.0
    labels = torch.tensor(idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"))[:samples], dtype=torch.long)
    return images, labels


def arguments(steps):
    """The command line both scripts take: --data, --batch, --steps (default `steps`), --samples."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="tests/data/fashion-mnist")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--samples", type=int, default=3000)
    return parser.parse_args()
