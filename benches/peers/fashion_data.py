"""What the snnTorch peer scripts share: the first training images and labels of an MNIST-format
folder (intensities in [0, 1], pixel / 255, as `snn` encodes them), their command line, and the
timed epoch with its JSON report."""

import argparse
import gzip
import json
import os
import resource
import struct
import time

import numpy as np
import snntorch
import torch


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    sizes = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data[4 + 4 * dims:], dtype=np.uint8).reshape(sizes)


def training_images(folder, samples, split="train"):
    """(images: samples x 28 x 28 float32 tensor, labels: samples long tensor) of the training
    split, or of the test split ("t10k")."""
    images = torch.tensor(idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"))[:samples], dtype=torch.float32) / 255.0
    labels = torch.tensor(idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"))[:samples], dtype=torch.long)
    return images, labels


def arguments(steps):
    """The command line both scripts take: --data, --batch, --steps (default `steps`), --samples."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="tests/data/fashion-mnist")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--test-samples", type=int, default=0,
                        help="after the epoch, also score this many test images (as `snn train` does)")
    return parser.parse_args()


def timed_epoch(args, images, labels, net, optimizer, encode):
    """One epoch of forward, backward and update over `images` in batches of `args.batch`,
    `encode` turning a batch of images into the network's input; prints samples per second and
    peak memory as JSON."""
    loss_fn = torch.nn.CrossEntropyLoss()
    order = torch.randperm(len(images))
    start = time.perf_counter()
    seen = 0
    for b in range(0, len(images), args.batch):
        index = order[b : b + args.batch]
        loss = loss_fn(net(encode(images[index])), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(index)
    elapsed = time.perf_counter() - start
    test = {}
    if args.test_samples > 0:
        # The test pass `snn train` ends its epoch with: the forward pass over the test split.
        test_images, test_labels = training_images(args.data, args.test_samples, "t10k")
        test_images = test_images.reshape(len(test_images), *images.shape[1:])
        tested = time.perf_counter()
        correct = 0
        with torch.no_grad():
            for b in range(0, len(test_images), args.batch):
                scores = net(encode(test_images[b : b + args.batch]))
                correct += int((scores.argmax(1) == test_labels[b : b + args.batch]).sum())
        test = {"test_samples": len(test_images), "test_seconds": time.perf_counter() - tested,
                "test_accuracy": correct / len(test_images)}
    print(json.dumps({
        "peer": f"snntorch {snntorch.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "samples": seen,
        "batch": args.batch,
        "steps": args.steps,
        "seconds": elapsed,
        "samples_per_s": seen / elapsed,
        "last_loss": float(loss.detach()),
        **test,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }, indent=1))
