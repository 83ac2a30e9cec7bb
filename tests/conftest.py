"""Shared fixtures. Tests never touch the network: connections to anything but this machine's
loopback (a local Dask cluster) fail here."""

import os
import socket

import numpy as np
import pytest

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
LOCAL_BIND = {None, "", "0.0.0.0", "::"}  # addresses a server listens on: no lookup, no traffic


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def refuse() -> OSError:
        return OSError("network access is disabled in fastnn's tests")

    def connect(sock, address):
        if sock.family == socket.AF_UNIX or address[0] in LOOPBACK:
            return real_connect(sock, address)
        raise refuse()

    def getaddrinfo(host, *args, **kwargs):
        if host in LOOPBACK or host in LOCAL_BIND:
            return real_getaddrinfo(host, *args, **kwargs)
        raise refuse()

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled handwritten digits, split as ``fastnn.data.load`` does."""
    from fastnn.data import load

    return load("digits", seed=0)


@pytest.fixture
def special_file(tmp_path):
    """``make(name, kind)``: a path in tmp_path that is not a regular file: a "directory", a
    "fifo", or a "dev-zero" link (endless zeros), for readers that must refuse it unread."""

    def make(name: str, kind: str):
        target = tmp_path / name
        if kind == "directory":
            target.mkdir()
        elif kind == "fifo":
            os.mkfifo(target)
        else:
            target.symlink_to("/dev/zero")
        return target

    return make


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def pytest_collection_modifyitems(items):
    """A test module may mark its own items one by one with a ``mark_item(item)`` function
    (tests/test_sklearn_suite.py marks the scikit-learn tests it loads)."""
    for item in items:
        mark = getattr(getattr(item, "module", None), "mark_item", None)
        if mark is not None:
            mark(item)


_SUMMARY = pytest.StashKey[list]()


@pytest.fixture
def summary_line(request):
    """Add a line to the run's terminal summary: figures a test measured, for the record
    (tests/test_accel_suite.py: scikit-learn's suite under the accelerator)."""
    return request.config.stash.setdefault(_SUMMARY, []).append


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.write_sep("=", "fastnn figures")
        for line in lines:
            terminalreporter.write_line(line)
