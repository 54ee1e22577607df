"""Shared fixtures: tiny datasets written in the real on-disk formats (so torchvision's
own readers load them), and a helper that runs a script the way a user does."""
import contextlib
import io
import os
import pickle
import runpy
import struct
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the tests import tldr and the scripts
N_TRAIN, N_TEST = 200, 100

# torchvision checks the md5 of the CIFAR-10 and SVHN files (CIFAR10._check_integrity,
# SVHN._check_integrity and CIFAR10._load_meta all call their module's check_integrity),
# which fake files cannot pass. In the script's own process only, the check becomes
# "the file exists", so missing files still fail as they would for a user. (Only for
# those two datasets: importing torchvision costs a second or two.)
PRELUDE = """
import os, runpy, sys
if {"svhn", "cifar10"} & set(sys.argv):
    import torchvision.datasets.cifar as c, torchvision.datasets.svhn as s
    c.check_integrity = s.check_integrity = lambda path, md5=None: os.path.isfile(path)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def script_command(script, *args):
    """The command line that runs `script` (e.g. 'invert.py') with `args`."""
    return [sys.executable, "-c", PRELUDE, os.path.join(REPO, script), *map(str, args)]


def script_env():
    # one thread: on a busy 2-core machine two threads per process can be ten times slower
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def run_script(script, *args, timeout=120):
    """Run a script to completion; returns the CompletedProcess (stdout, stderr as text)."""
    return subprocess.run(script_command(script, *args), cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=timeout)


def run_in_process(script, *args):
    """Run a script as __main__ inside this process, without an interpreter's start-up
    (for bad-input runs and short runs). Returns a CompletedProcess like run_script's."""
    argv, out, err, code = sys.argv, io.StringIO(), io.StringIO(), 0
    sys.argv = [os.path.join(REPO, script), *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def one_line_error(p, *needles):
    """A failed run: non-zero exit, one line on stderr, no traceback, naming each needle."""
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def fake_images(n, channels, side, seed):
    """n uint8 images [n, side, side, channels] and labels [n] (every class, shuffled):
    dark noise with a bright square whose place depends on the class."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10)
    images = rng.integers(0, 60, (n, side, side, channels), dtype=np.uint8)
    s = side // 5
    for image, c in zip(images, labels):
        top, left = 2 + (c // 5) * (side // 2), (c % 5) * s
        image[top:top + s, left:left + s] = rng.integers(200, 256, (s, s, channels), dtype=np.uint8)
    return images, labels


def write_idx(folder, prefix, images, labels):
    # IDX: magic (0x0803 images / 0x0801 labels, uint8), then big-endian int32 sizes, then the bytes
    with open(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">iiii", 0x803, *images.shape[:3]) + images.tobytes())
    with open(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">ii", 0x801, len(labels)) + labels.astype(np.uint8).tobytes())


def write_mnist_like(root, name, seed):
    folder = os.path.join(root, name, "raw")
    os.makedirs(folder)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images, labels = fake_images(n, 1, 28, seed + n)
        write_idx(folder, prefix, images[..., 0], labels)


def write_cifar10(root, seed):
    # Pickled dicts {"data": uint8 [n, 3072] (channel-major rows), "labels": [n ints]};
    # the train split in five batches. (The official files are Python 2 pickles whose
    # keys load as str under torchvision's encoding="latin1", as these do.)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)

    def dump(name, obj):
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(obj, f, protocol=2)

    for name, n, chunks in (("data_batch_{}", N_TRAIN, 5), ("test_batch", N_TEST, 1)):
        images, labels = fake_images(n, 3, 32, seed + n)
        rows = images.transpose(0, 3, 1, 2).reshape(n, 3072)
        for i, (x, y) in enumerate(zip(np.array_split(rows, chunks), np.array_split(labels, chunks))):
            dump(name.format(i + 1), {"batch_label": name.format(i + 1), "data": x, "labels": y.tolist()})
    dump("batches.meta", {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                          "frog", "horse", "ship", "truck"]})


def write_svhn(root, seed):
    # .mat files: X uint8 [32, 32, 3, n], y [n, 1] with labels 1..10 (10 is the digit 0)
    import scipy.io
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        images, labels = fake_images(n, 3, 32, seed + n)
        y = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]
        scipy.io.savemat(os.path.join(root, f"{split}_32x32.mat"), {"X": images.transpose(1, 2, 3, 0), "y": y})


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A --data-root with tiny mnist, fmnist, svhn and cifar10 (200 train, 100 test images)."""
    root = str(tmp_path_factory.mktemp("data"))
    write_mnist_like(root, "MNIST", 0)
    write_mnist_like(root, "FashionMNIST", 1000)
    write_cifar10(root, 2000)
    write_svhn(root, 3000)
    return root
