"""Explicit SIMD vectors for numba kernels: one vector register of the compile target
(kernels/target.py: 64 bytes with AVX-512, 32 with AVX2, 16 with SSE or NEON; 16 float32 or
8 float64 lanes on AVX-512) as a value that lives in a register.

numba cannot tell LLVM that two arrays do not overlap, so a loop that accumulates a block of
outputs in an array reloads and stores it on every step, and a loop that accumulates in scalars
vectorises only along its reduction, paying a horizontal sum per output. Register-blocked
matrix kernels (a block of rows x a few vectors of outputs, each input broadcast against whole
vectors of weights) need vector values, which these intrinsics provide. LLVM lowers them for any
CPU; sized to the target's registers, no vector is split into halves.

Loads and stores take a C-contiguous array and a flat element index; the caller keeps
``i + lanes(a) <= a.size`` (no bounds check). Arithmetic follows IEEE rules, NaN included.
"""

from fastnn.kernels.target import VECTOR_BYTES
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.datamodel import models, register_default
from numba.core.errors import TypingError
from numba.extending import intrinsic

BYTES = VECTOR_BYTES


class Vec(types.Type):
    """A vector of BYTES bytes of one float dtype."""

    def __init__(self, dtype: types.Float) -> None:
        self.dtype = dtype
        self.lanes = BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"Vec({dtype} x {self.lanes})")


@register_default(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _llvm(builder, name, args, result=None, fastmath=()):
    """Call the LLVM intrinsic ``name`` overloaded on the last argument's vector type."""
    vt = args[-1].type
    bits = 32 if isinstance(vt.element, ir.FloatType) else 64
    fnty = ir.FunctionType(result or vt, [a.type for a in args])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"{name}.v{vt.count}f{bits}")
    return builder.call(fn, args, fastmath=fastmath)


def _element_pointer(context, builder, aryty, ary, index, vt):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [index]), context.get_value_type(vt).as_pointer())


def _splat(builder, vt, x):
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), vt.count), 0))


@intrinsic
def lanes(typingctx, a):
    """Lanes of a vector of a's dtype, a compile-time constant."""
    n = Vec(a.dtype).lanes

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, n)

    return types.intp(a), codegen


def _check_contiguous(a):
    if not (isinstance(a, types.Array) and a.layout == "C"):
        raise TypingError(f"vector loads and stores need a C-contiguous array, not {a}")


@intrinsic
def vload(typingctx, a, i):
    """a.flat[i : i + lanes] as a vector."""
    _check_contiguous(a)
    vt = Vec(a.dtype)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], vt)
        return builder.load(ptr, align=a.dtype.bitwidth // 8)

    return vt(a, i), codegen


@intrinsic
def vstore(typingctx, a, i, v):
    """a.flat[i : i + lanes] = v."""
    _check_contiguous(a)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[2])
        builder.store(args[2], ptr, align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(a, i, v), codegen


@intrinsic
def vsplat(typingctx, x):
    """A vector with x in every lane."""
    vt = Vec(x)

    def codegen(context, builder, sig, args):
        return _splat(builder, context.get_value_type(vt), args[0])

    return vt(x), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, rounded once."""

    def codegen(context, builder, sig, args):
        return _llvm(builder, "llvm.fma", args)

    return a(a, b, c), codegen


def _binary(op):
    def template(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(*args)

        return a(a, b), codegen

    return template


vadd = intrinsic(_binary("fadd"))
vsub = intrinsic(_binary("fsub"))
vmul = intrinsic(_binary("fmul"))


@intrinsic
def vmaximum(typingctx, a, b):
    """The larger of a and b, lane by lane; NaN where either is NaN."""

    def codegen(context, builder, sig, args):
        return _llvm(builder, "llvm.maximum", args)

    return a(a, b), codegen


@intrinsic
def vpositive(typingctx, v):
    """1 where v > 0, else 0 (NaN included), lane by lane."""

    def codegen(context, builder, sig, args):
        vt = args[0].type
        positive = builder.fcmp_ordered(">", args[0], ir.Constant(vt, None))
        return builder.select(positive, ir.Constant(vt, 1.0), ir.Constant(vt, 0.0))

    return v(v), codegen


@intrinsic
def vmax_lanes(typingctx, v):
    """The largest lane; NaN when any lane is NaN."""

    def codegen(context, builder, sig, args):
        return _llvm(builder, "llvm.vector.reduce.fmaximum", args, args[0].type.element)

    return v.dtype(v), codegen


@intrinsic
def vsum_lanes(typingctx, v):
    """The sum of the lanes, in any order."""

    def codegen(context, builder, sig, args):
        element = args[0].type.element
        start = ir.Constant(element, -0.0)
        return _llvm(builder, "llvm.vector.reduce.fadd", [start, args[0]], element, ("reassoc",))

    return v.dtype(v), codegen


@intrinsic
def vfirst_equal(typingctx, v, x):
    """The first lane equal to x, or ``lanes`` when none is."""

    def codegen(context, builder, sig, args):
        vt = args[0].type
        eq = builder.fcmp_ordered("==", args[0], _splat(builder, vt, args[1]))
        bits = builder.bitcast(eq, ir.IntType(vt.count))
        wide = builder.zext(bits, ir.IntType(64))
        first = builder.or_(wide, ir.Constant(ir.IntType(64), 1 << vt.count))
        fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64), ir.IntType(1)])
        cttz = cgutils.get_or_insert_function(builder.module, fnty, "llvm.cttz.i64")
        return builder.call(cttz, [first, ir.Constant(ir.IntType(1), 1)])

    return types.int64(v, x), codegen


# exp(x) = 2**n * exp(r), n = rint(x / ln 2), |r| <= ln(2) / 2: Cody-Waite ln 2 (a high part
# whose products with n are exact, then the low part), a Taylor polynomial whose truncation
# error is under half an ulp there, and 2**n built in the exponent bits
_EXP = {
    32: dict(ln2_hi=0.693359375, ln2_lo=-2.12194440e-4, degree=7, mantissa=23, bias=127,
             min_n=-126, max_n=127, underflow=-87.33654),
    64: dict(ln2_hi=6.93147180369123816490e-01, ln2_lo=1.90821492927058770002e-10, degree=13,
             mantissa=52, bias=1023, min_n=-1022, max_n=1023, underflow=-708.3964185322641),
}  # fmt: skip


@intrinsic
def vexp(typingctx, v):
    """exp of each lane to within 2 ulp for x up to log(the dtype's largest number) - 1 (the
    kernels use x <= 0); 0 below log(its smallest normal number); NaN stays NaN."""

    def codegen(context, builder, sig, args):
        import math

        x = args[0]
        vt = x.type
        bits = 32 if isinstance(vt.element, ir.FloatType) else 64
        c = _EXP[bits]
        const = lambda value: ir.Constant(vt, value)  # noqa: E731
        t = builder.fmul(x, const(1 / math.log(2)))
        t = _llvm(builder, "llvm.maxnum", [t, const(c["min_n"])])  # a NaN x gives min_n here
        t = _llvm(builder, "llvm.minnum", [t, const(c["max_n"])])
        n = _llvm(builder, "llvm.rint", [t])
        minus_n = builder.fneg(n)
        r = _llvm(builder, "llvm.fma", [minus_n, const(c["ln2_hi"]), x])
        r = _llvm(builder, "llvm.fma", [minus_n, const(c["ln2_lo"]), r])
        p = const(1 / math.factorial(c["degree"]))
        for k in range(c["degree"] - 1, -1, -1):
            p = _llvm(builder, "llvm.fma", [p, r, const(1 / math.factorial(k))])
        it = ir.VectorType(ir.IntType(bits), vt.count)
        exponent = builder.add(builder.fptosi(n, it), ir.Constant(it, c["bias"]))
        scale = builder.bitcast(builder.shl(exponent, ir.Constant(it, c["mantissa"])), vt)
        underflow = builder.fcmp_ordered("<", x, const(c["underflow"]))
        return builder.select(underflow, const(0.0), builder.fmul(p, scale))

    return v(v), codegen
