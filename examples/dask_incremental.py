"""Out-of-core training: dask-ml's ``Incremental`` calls a fastnn MLPClassifier's ``partial_fit``
on each block of a chunked dask array (one pass per epoch), then scores it on held-out blocks. The
rows are MNIST-shaped (784 float32 pixels): scikit-learn's 8x8 digits upscaled to 28x28 with fresh
noise, made block by block so that no array is ever whole in memory; held-out rows come from digit
images that training never sees (10 classes, chance 10%). Run it (offline) with

    python examples/dask_incremental.py --rows 60000 --chunk 10000 --epochs 3
"""

import argparse
import time

import dask
import dask.array as da
import numpy as np
from dask_ml.wrappers import Incremental
from sklearn.datasets import load_digits

import fastnn
from fastnn.backends import backend_names, get_backend

DIGITS = load_digits()
IMAGES = np.pad(np.kron(DIGITS.images / 16, np.ones((1, 3, 3))), ((0, 0), (2, 2), (2, 2)))
IMAGES = IMAGES.reshape(len(IMAGES), -1).astype(np.float32)  # 1797 rows of 784 pixels
POOLS = np.split(np.random.default_rng(0).permutation(len(IMAGES)), [1200])  # train, held out
CLASSES, NOISE = np.arange(10), 0.5


def _rows(seed: int, held_out: bool, rows: int, chunk: int, block_id: tuple) -> tuple:
    """Block ``block_id``'s generator and image indices: any block can be remade alone."""
    rng = np.random.default_rng([seed, int(held_out), block_id[0]])
    return rng, rng.choice(POOLS[held_out], min(chunk, rows - block_id[0] * chunk))


def _pixels(*args, block_id: tuple) -> np.ndarray:
    """A block of X: its digit images plus Gaussian noise, clipped to [0, 1]."""
    rng, idx = _rows(*args, block_id=block_id)
    noise = NOISE * rng.standard_normal((len(idx), IMAGES.shape[1]), dtype=np.float32)
    return np.clip(IMAGES[idx] + noise, 0, 1)


def _labels(*args, block_id: tuple) -> np.ndarray:
    """A block of y, from the same indices as X's (no pixels made)."""
    return DIGITS.target[_rows(*args, block_id=block_id)[1]]


def make_data(rows: int, chunk: int, seed: int, held_out: bool = False) -> tuple:
    """Lazy (X, y) dask arrays in blocks of ``chunk`` rows, computed only when a block is used."""
    sizes, args = da.core.normalize_chunks(chunk, (rows,))[0], (seed, held_out, rows, chunk)
    X = da.map_blocks(_pixels, *args, chunks=(sizes, (IMAGES.shape[1],)), meta=IMAGES[:0])
    return X, da.map_blocks(_labels, *args, chunks=(sizes,), meta=DIGITS.target[:0])


def main(argv: list[str] | None = None) -> dict:
    """Train for ``--epochs`` passes; print and return the accuracy, times and the Incremental."""
    parser = argparse.ArgumentParser(description="fastnn trained out of core by dask-ml")
    parser.add_argument("--rows", type=int, default=60000, help="training rows")
    parser.add_argument("--chunk", type=int, default=10000, help="rows per dask block")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the data")
    parser.add_argument("--backend", default="auto", choices=backend_names(), help="fastnn's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    X, y = make_data(args.rows, args.chunk, args.seed)
    X_test, y_test = make_data(10000, args.chunk, args.seed, held_out=True)
    model = fastnn.MLPClassifier(backend=args.backend, random_state=args.seed)
    # scoring="accuracy": dask-ml's block-by-block scorer (also its pick for None here); a
    # RandomState, unlike an int, shuffles the block order anew each epoch, reproducibly
    inc = Incremental(model, scoring="accuracy", random_state=np.random.RandomState(args.seed))
    # synchronous: the partial_fit calls are a chain and fastnn already uses every core, so a
    # thread pool would only make blocks ahead of the model, holding most of them in memory
    with dask.config.set(scheduler="synchronous"):
        start = time.perf_counter()
        for _ in range(args.epochs):
            inc.partial_fit(X, y, classes=CLASSES)  # one partial_fit(block, classes=) per block
        seconds = time.perf_counter() - start
        accuracy = float(inc.score(X_test, y_test))
    rows, train = args.rows * args.epochs, sum(h["seconds"] for h in inc.history_)
    print(
        f"{args.rows} rows x {args.epochs} epochs in blocks of {args.chunk}, "
        f"{get_backend(args.backend).name} backend: {seconds:.2f} s, {rows / seconds:,.0f} rows/s; "
        f"fastnn's training {train:.2f} s of it ({rows / train:,.0f} rows/s; the rest: making "
        f"the data, dask, loading kernels); held-out accuracy {accuracy:.3f} (chance 0.100)"
    )
    return {"accuracy": accuracy, "seconds": seconds, "train_seconds": train, "model": inc}


if __name__ == "__main__":
    main()
