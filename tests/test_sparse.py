"""Sparse X (scipy CSR or any format scikit-learn converts to it): the same model as from the
dense matrix, densified a minibatch or a bounded chunk at a time, never whole."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

import fastnn.model
from fastnn import MLPClassifier
from fastnn.backends import available_backends
from fastnn.model import chunk_rows

BACKENDS = [b for b in ("numpy", "numba") if b in available_backends()]


def _fit(X, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier((16,), max_iter=8, random_state=0, **params).fit(X, y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("params", [{"solver": "sgd"}, {"solver": "adam", "batch_size": 50},
                                    {"solver": "lbfgs"}, {"early_stopping": True}])  # fmt: skip
def test_sparse_fit_is_the_dense_fit(digits, backend, params):
    X, y = digits.X_train[:400], digits.y_train[:400]
    dense = _fit(X, y, backend=backend, **params)
    sparse = _fit(sp.csr_matrix(X), y, backend=backend, **params)
    # numpy: the same computation; numba trains a dense X on its fused kernel, a sparse one on
    # its BLAS layers: float32 rounding apart
    tol = 0 if backend == "numpy" else 2e-5
    for p, q in zip(dense.coefs_ + dense.intercepts_, sparse.coefs_ + sparse.intercepts_,
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(q, p, rtol=tol, atol=tol)
    X_test = digits.X_test
    np.testing.assert_allclose(sparse.predict_proba(sp.csr_matrix(X_test)),
                               dense.predict_proba(X_test), rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(sparse.predict(sp.csc_matrix(X_test)), sparse.predict(X_test))


def test_sparse_x_is_never_densified_whole(digits, monkeypatch):
    densified = []
    real = sp.csr_matrix.toarray

    def toarray(self, *args, **kwargs):
        densified.append(self.shape[0])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(sp.csr_matrix, "toarray", toarray)
    monkeypatch.setattr(fastnn.model, "SPARSE_CHUNK_BYTES", 100 * 64 * 4)  # 100 rows of 64
    X = sp.csr_matrix(digits.X_train)
    for solver in ("adam", "lbfgs"):
        densified.clear()
        model = _fit(X, digits.y_train, solver=solver, batch_size=64)
        model.predict(sp.csr_matrix(digits.X_test))
        assert densified and max(densified) <= 100 < X.shape[0]


def test_chunk_rows_bounds_wide_sparse_rows():
    assert chunk_rows(np.zeros((3, 10**6), np.float32)) == fastnn.model.INFERENCE_CHUNK
    wide = sp.csr_matrix((10, 10**6), dtype=np.float32)
    assert chunk_rows(wide) == fastnn.model.SPARSE_CHUNK_BYTES // (4 * 10**6)
