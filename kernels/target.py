"""The CPU that numba compiles the kernels for, and the SIMD shape that follows from it.

numba targets ``NUMBA_CPU_NAME`` (else the host CPU) with ``NUMBA_CPU_FEATURES`` (else the
host's features: ``NUMBA_CPU_NAME=haswell`` alone still has AVX-512 on an AVX-512 host; add
``NUMBA_CPU_FEATURES=`` for the CPU's own features). The vector width is read from what LLVM
makes of that target: one 64-byte vector operation compiled for it runs on zmm (64 bytes),
ymm (32) or xmm / NEON (16) registers. Read once at import, so every kernel of a process,
and numba's on-disk cache (keyed on the same CPU name and features), agree.
"""

from __future__ import annotations

import functools
import platform

import llvmlite.binding as ll
from numba.core import config
from numba.core.codegen import get_host_cpu_features

ARM = platform.machine().lower() in ("arm64", "aarch64")

_PROBE = """
define void @probe(<{n} x {t}>* %a, <{n} x {t}>* %b) {{
  %x = load <{n} x {t}>, <{n} x {t}>* %a
  %y = load <{n} x {t}>, <{n} x {t}>* %b
  %z = {op} <{n} x {t}> %x, %y
  store <{n} x {t}> %z, <{n} x {t}>* %a
  ret void
}}
"""


def cpu_name() -> str:
    """The CPU numba compiles for, as LLVM names it (znver5, haswell, ...)."""
    return config.CPU_NAME or ll.get_host_cpu_name()


def cpu_features() -> str:
    """numba's feature string for that CPU ('' means the CPU's own features)."""
    return config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()


@functools.cache
def _machine() -> ll.TargetMachine:
    """An LLVM target machine for numba's target."""
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    return ll.Target.from_default_triple().create_target_machine(
        cpu=cpu_name(), features=cpu_features(), opt=3
    )


def _emit(ir: str) -> str:
    """The assembly LLVM makes of an IR module for numba's target."""
    return _machine().emit_assembly(ll.parse_assembly(ir))


def _assembly(n: int, element: str, op: str) -> str:
    """Assembly of one n-lane vector operation compiled for the target."""
    return _emit(_PROBE.format(n=n, t=element, op=op))


@functools.cache
def vector_bytes() -> int:
    """The widest vector register LLVM uses for this target's float vectors: 64, 32 or 16."""
    asm = _assembly(16, "float", "fadd")
    return 64 if "zmm" in asm else 32 if "ymm" in asm else 16


_FMA_PROBE = """
declare <4 x float> @llvm.fma.v4f32(<4 x float>, <4 x float>, <4 x float>)
define void @probe(<4 x float>* %a) {
  %x = load <4 x float>, <4 x float>* %a
  %y = call <4 x float> @llvm.fma.v4f32(<4 x float> %x, <4 x float> %x, <4 x float> %x)
  store <4 x float> %y, <4 x float>* %a
  ret void
}
"""


@functools.cache
def has_fma() -> bool:
    """Whether the target has fused multiply-add instructions; without them LLVM calls libm's
    fma for each lane, which makes the fused kernel 10-40x slower."""
    asm = _emit(_FMA_PROBE)
    return "fmadd" in asm or "fmla" in asm


def vector_registers() -> int:
    """How many vector registers the target has: 32 with AVX-512 and on 64-bit ARM, else 16."""
    return 32 if vector_bytes() == 64 or ARM else 16


def isa() -> str:
    """A short name for the target's vector instruction set."""
    if ARM:
        return "NEON"
    if vector_bytes() == 32:  # AVX has 32-byte float vectors, AVX2 32-byte integer ones too
        return "AVX2" if "ymm" in _assembly(8, "i32", "add") else "AVX"
    return {64: "AVX-512", 16: "SSE"}[vector_bytes()]


VECTOR_BYTES = vector_bytes()
VECTOR_REGISTERS = vector_registers()
