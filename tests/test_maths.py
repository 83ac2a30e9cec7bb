"""The reference maths: gradients against finite differences, stability, update rules."""

import dataclasses
import inspect

import numpy as np
import pytest

from fastnn.backends import available_backends, get_backend
from fastnn.backends.base import HIDDEN_ACTIVATIONS, Backend
from fastnn.model import init_params
from fastnn.optim import Optimizer, init_state

numpy_backend = get_backend("numpy")


def _network(rng, sizes, activation, dtype=np.float64):
    params = init_params(sizes, activation, dtype, rng)
    for b in params[1::2]:  # non-zero biases exercise the bias gradient
        b += rng.normal(0, 0.1, size=b.shape).astype(dtype)
    return params


def _loss(params, x, y, activation):
    return float(numpy_backend.softmax_xent(numpy_backend.forward(params, x, activation), y)[0])


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("hidden", [(), (5,), (4, 3), (3, 5, 2)])
def test_gradients_match_central_finite_differences(activation, hidden):
    rng = np.random.default_rng(len(hidden) * 7 + len(activation))
    sizes = (6, *hidden, 4)
    params = _network(rng, sizes, activation)
    x = rng.normal(size=(7, 6))
    y = rng.integers(0, 4, size=7)
    loss, _, grads = numpy_backend.loss_and_grads(params, x, y, activation)
    assert loss == pytest.approx(_loss(params, x, y, activation), rel=1e-12)
    eps = 1e-6
    for p, g in zip(params, grads, strict=True):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + eps
            up = _loss(params, x, y, activation)
            p[idx] = saved - eps
            down = _loss(params, x, y, activation)
            p[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_xent_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [3e4, 3e4, -3e4]], dtype=dtype)
    y = np.array([1, 2, 0])
    loss, dlogits = numpy_backend.softmax_xent(logits, y)
    assert np.isfinite(loss) and np.isfinite(dlogits).all()
    # row 0 puts all mass on the wrong class: loss of that row is 2e4
    assert float(loss) == pytest.approx((2e4 + np.log(3) + np.log(2)) / 3, rel=1e-5)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-6)
    probs = numpy_backend.softmax(logits)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)


def test_softmax_xent_matches_the_textbook_formula(rng):
    logits = rng.normal(size=(5, 3))
    y = rng.integers(0, 3, size=5)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    loss, dlogits = numpy_backend.softmax_xent(logits, y)
    assert loss == pytest.approx(-np.log(p[np.arange(5), y]).mean(), rel=1e-12)
    np.testing.assert_allclose(dlogits, (p - np.eye(3)[y]) / 5, rtol=1e-12)


def _run_updates(opt, grads_seq, p0=1.5, rates=None):
    """The parameter after updates with these gradients (at these learning rates: opt's)."""
    param = np.array([p0])
    state = init_state(numpy_backend, opt, [param, np.array([0.0])])
    for g, lr in zip(grads_seq, rates or [opt.lr] * len(grads_seq), strict=True):
        numpy_backend.apply_update([param, np.array([0.0])], [np.array([g]), np.array([0.0])],
                                   state, dataclasses.replace(opt, lr=lr))  # fmt: skip
    return float(param[0])


def test_sgd_momentum_nesterov_and_adam_follow_their_formulas():
    g1, g2, lr, wd = 0.4, -0.2, 0.1, 0.01
    p = 1.5 - lr * (g1 + wd * 1.5)
    assert _run_updates(Optimizer("sgd", lr, weight_decay=wd), [g1]) == pytest.approx(p)

    # scikit-learn's momentum, with the rate changing between the steps (invscaling): the
    # velocity holds the rate it was made with
    mu, lr2 = 0.9, 0.03
    v1 = -lr * g1
    v2 = mu * v1 - lr2 * g2
    got = _run_updates(Optimizer("sgd", lr, momentum=mu), [g1, g2], rates=[lr, lr2])
    assert got == pytest.approx(1.5 + v1 + v2, rel=1e-12)

    expected = 1.5 + (mu * v1 - lr * g1) + (mu * v2 - lr2 * g2)
    got = _run_updates(Optimizer("sgd", lr, momentum=mu, nesterov=True), [g1, g2],
                       rates=[lr, lr2])  # fmt: skip
    assert got == pytest.approx(expected, rel=1e-12)

    b1, b2, eps = 0.9, 0.999, 1e-3  # large enough that where it is added shows
    m = v = 0.0
    p = 1.5
    for t, g in enumerate([g1, g2], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)  # scikit-learn's
    assert _run_updates(Optimizer("adam", lr, eps=eps), [g1, g2]) == pytest.approx(p, rel=1e-12)


def test_weight_decay_applies_to_weights_not_biases():
    W, b = np.array([[2.0]]), np.array([2.0])
    state = init_state(numpy_backend, Optimizer("sgd", 0.5, weight_decay=0.1), [W, b])
    numpy_backend.apply_update(
        [W, b], [np.zeros((1, 1)), np.zeros(1)], state, Optimizer("sgd", 0.5, weight_decay=0.1)
    )
    assert W[0, 0] == pytest.approx(2.0 - 0.5 * 0.1 * 2.0)
    assert b[0] == 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maths_keeps_the_dtype(dtype, rng):
    params = _network(rng, (5, 4, 3), "tanh", dtype)
    x = rng.normal(size=(6, 5)).astype(dtype)
    y = rng.integers(0, 3, size=6)
    loss, _, grads = numpy_backend.loss_and_grads(params, x, y, "tanh")
    assert np.asarray(loss).dtype == dtype
    assert all(g.dtype == dtype for g in grads)
    opt = Optimizer("adam", 0.01, weight_decay=0.1)
    numpy_backend.apply_update(params, grads, init_state(numpy_backend, opt, params), opt)
    assert all(p.dtype == dtype for p in params)


@pytest.mark.parametrize("name", available_backends())
def test_every_backend_has_exactly_the_reference_interface(name):
    """A backend may override verbs but never add, drop or re-sign a public one."""
    backend = get_backend(name)

    def public(cls):
        return {
            n: [
                (p.name, p.kind, p.default)
                for p in inspect.signature(getattr(cls, n)).parameters.values()
            ]
            for n in dir(cls)
            if not n.startswith("_") and callable(getattr(cls, n))
        }

    assert public(type(backend)) == public(Backend)
