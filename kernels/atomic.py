"""Atomic integer updates and waits for numba kernels: threads of one run of steps claiming
work and meeting at barriers (kernels/step.py)."""

import sys

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

# the C library's "give this core to another runnable thread" call
_YIELD = "SwitchToThread" if sys.platform == "win32" else "sched_yield"
SPINS = 2000  # atomic reads (a few microseconds) before a waiting thread starts yielding its core


def _check_int64(a):
    if not (isinstance(a, types.Array) and a.dtype == types.int64 and a.layout == "C"):
        raise TypingError(f"atomics need a C-contiguous int64 array, not {a}")


@intrinsic
def fetch_add(typingctx, a, i, v):
    """a[i] += v as one atomic step (sequentially consistent); returns the old a[i].
    a is a C-contiguous int64 array, indexed flat."""
    _check_int64(a)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, value, "seq_cst")

    return types.int64(a, i, v), codegen


@intrinsic
def load(typingctx, a, i):
    """a[i], read atomically (sequentially consistent): a loop that waits on it rereads it."""
    _check_int64(a)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.load_atomic(builder.gep(ary.data, [args[1]]), "seq_cst", 8)

    return types.int64(a, i), codegen


@intrinsic
def yield_core(typingctx):
    """Let another runnable thread have this core (sched_yield), so that a thread waiting at a
    barrier does not hold a core that a busy machine needs."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), []), _YIELD
        )
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen
