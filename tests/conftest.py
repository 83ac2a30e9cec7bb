"""Shared fixtures. Tests never touch the network: outbound connections fail here."""

import socket

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in fastnn's tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled handwritten digits, split as ``fastnn.data.load`` does."""
    from fastnn.data import load

    return load("digits", seed=0)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
