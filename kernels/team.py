"""Helper threads that run a multithreaded kernel's threads beside the calling thread
(kernels/step.py's fused_steps): the caller runs thread 0 at once and never waits for a
helper, which joins the job when it wakes and takes whatever work is left unclaimed.

Between jobs a helper waits in compiled code without the GIL, reading the job count and
yielding its core after a few microseconds, for about IDLE_YIELDS yields (a few ms, longer
than the Python between two calls of a short training loop), then sleeps on a condition. A
helper that slept takes a scheduler wake-up (about 0.1 ms on these VMs) to join; one that
waits joins within microseconds, as OpenMP's threads do, and gives its core to any other
runnable thread meanwhile.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np
from fastnn.kernels.activations import KERNEL
from fastnn.kernels.atomic import SPINS, fetch_add, load, yield_core
from numba import njit

IDLE_YIELDS = 4000  # then yields (about 0.5 us each when nothing else runs) before it sleeps
OWNER_CHECK = 1.0  # seconds a sleeping helper waits between looks at whether its caller lives


@njit(nogil=True, **KERNEL)
def _next_job(board, seen, yields):
    """board[0] once it is no longer ``seen``; ``seen`` if it still was after SPINS reads and
    ``yields`` yields of the core."""
    spins = 0
    while True:
        jobs = load(board, 0)
        if jobs != seen:
            return jobs
        spins += 1
        if spins > SPINS:
            if spins - SPINS > yields:
                return seen
            yield_core()


@njit(**KERNEL)
def _post(board):
    """Post the next job: its number."""
    return fetch_add(board, 0, 1) + 1


@njit(nogil=True, **KERNEL)
def linger(board, job):
    """Wait, as a helper between jobs does, until a job after ``job`` is posted or the idle
    wait is over."""
    _next_job(board, job, IDLE_YIELDS)


class Team:
    """``helpers`` threads that run the threads t >= 1 of the jobs this thread posts."""

    def __init__(self, helpers: int) -> None:
        self.pid = os.getpid()
        self.helpers = helpers
        self._owner = threading.current_thread()  # its helpers end soon after it does
        self._board = np.zeros(8, dtype=np.int64)  # the job count, alone on its cache line
        self._job: tuple[int, Callable[..., object], Callable[[BaseException], None]] | None
        self._job = None
        self._posted = threading.Condition()
        for t in range(1, helpers + 1):
            threading.Thread(target=self._serve, args=(t,), name=f"fastnn-{t}", daemon=True).start()

    def run(self, T: int, run: Callable[[int, np.ndarray, int], object],
            failed: Callable[[BaseException], None]):  # fmt: skip
        """run(t, board, job) for t < T: run(0, ...) here, whose result this returns, and each
        other t on a helper as it comes (failed(exception) where one raises). The caller's
        run(0, ...) must finish the whole job alone if need be, and leave nothing for late
        helpers to do. A helper's run should end in ``linger(board, job)``, still without
        the GIL: it returns when the next job is posted (or after the idle wait), so that
        the helper does not take the GIL back while the caller needs it between jobs (each
        handover of the GIL costs a thread wake-up: 0.5-0.9 ms a call of 8 digits steps)."""
        self._job = (T, run, failed)
        job = _post(self._board)
        with self._posted:
            self._posted.notify_all()
        try:
            return run(0, self._board, job)
        finally:  # the job's arrays are the caller's again: no helper keeps them alive
            self._job = None

    def _serve(self, t: int) -> None:
        seen = 0
        while True:
            jobs = _next_job(self._board, seen, IDLE_YIELDS)
            while jobs == seen:
                if not self._owner.is_alive():
                    return  # no job can come: a thread per request must not leave helpers
                with self._posted:
                    self._posted.wait_for(lambda seen=seen: self._board[0] != seen, OWNER_CHECK)
                    jobs = int(self._board[0])
            seen = jobs
            job = self._job  # None: the caller finished it alone
            if job is not None and t < job[0]:
                try:
                    job[1](t, self._board, jobs)
                except BaseException as e:  # noqa: BLE001 (the caller re-raises it)
                    job[2](e)
            job = None  # nothing of a finished job stays referenced while this thread waits


_teams = threading.local()  # per calling thread: its team


def team(helpers: int) -> Team:
    """This thread's team of at least ``helpers`` helper threads: runs started from several
    threads at once never wait on each other's helpers. New in a forked child, which has none
    of its parent's threads."""
    current = getattr(_teams, "team", None)
    if current is None or current.pid != os.getpid() or current.helpers < helpers:
        current = _teams.team = Team(helpers)
    return current
