"""Atomic integer updates for numba kernels: threads of one parallel region claiming work."""

from numba import types
from numba.core.errors import TypingError
from numba.extending import intrinsic


@intrinsic
def fetch_add(typingctx, a, i, v):
    """a[i] += v as one atomic step (sequentially consistent); returns the old a[i].
    a is a C-contiguous int64 array, indexed flat."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64 and a.layout == "C"):
        raise TypingError(f"fetch_add needs a C-contiguous int64 array, not {a}")

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, value, "seq_cst")

    return types.int64(a, i, v), codegen
