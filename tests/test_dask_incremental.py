"""examples/dask_incremental.py: dask-ml's Incremental trains fastnn out of core, one
partial_fit per block per epoch with one block in memory at a time, exactly as calling
partial_fit block by block by hand."""

import importlib.util
import weakref
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dask_ml")

import dask  # noqa: E402
from dask_ml.wrappers import Incremental  # noqa: E402

import fastnn  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dask_incremental.py"


@pytest.fixture(scope="module")
def example():
    """The example script as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("dask_incremental", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_learns_out_of_core(example, monkeypatch, capsys):
    """Well above chance; every block once per epoch; at most two blocks alive at a time (a
    thread pool would make blocks ahead of the model)."""
    alive, peak, make = set(), [0], example._pixels

    def tracked(*args, block_id):
        block, key = make(*args, block_id=block_id), (args[1], block_id[0])
        alive.add(key)
        peak[0] = max(peak[0], len(alive))
        weakref.finalize(block, alive.discard, key)
        return block

    monkeypatch.setattr(example, "_pixels", tracked)
    argv = ["--rows", "2800", "--chunk", "500", "--epochs", "2", "--backend", "numpy"]
    result = example.main(argv)
    assert "held-out accuracy" in capsys.readouterr().out
    assert result["accuracy"] > 0.5  # chance: 0.1
    inc = result["model"]
    assert inc.t_ == 2800 * 2
    rows = [h["samples"] for h in inc.history_]  # one entry per partial_fit: one per block
    assert sorted(rows[:6]) == sorted(rows[6:]) == [300, 500, 500, 500, 500, 500]
    assert 1 <= peak[0] <= 2


def test_incremental_is_partial_fit_block_by_block(example):
    """Incremental (blocks in order) gives bit for bit the model of partial_fit by hand."""
    X, y = example.make_data(1100, 250, seed=3)
    params = dict(hidden_layer_sizes=(32,), dtype="float64", backend="numpy", shuffle=False,
                  random_state=0)  # fmt: skip
    inc = Incremental(fastnn.MLPClassifier(**params), shuffle_blocks=False)
    by_hand = fastnn.MLPClassifier(**params)
    with dask.config.set(scheduler="synchronous"):
        for _ in range(2):
            inc.partial_fit(X, y, classes=example.CLASSES)
        blocks = [(X.blocks[i].compute(), y.blocks[i].compute()) for i in range(X.numblocks[0])]
        X_test = example.make_data(500, 250, seed=3, held_out=True)[0]
        predicted = inc.predict(X_test).compute()
    for _ in range(2):
        for X_block, y_block in blocks:
            by_hand.partial_fit(X_block, y_block, classes=example.CLASSES)
    assert len(inc.loss_curve_) == 2 * len(blocks) and inc.t_ == 2 * 1100
    for a, b in zip(inc.estimator_.coefs_ + inc.estimator_.intercepts_,
                    by_hand.coefs_ + by_hand.intercepts_, strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(predicted, by_hand.predict(X_test.compute()))
