"""LLVM operations Numba does not expose, as Numba intrinsics: atomics, spin-wait and prefetch hints."""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_PAUSE = "llvm.x86.sse2.pause" if platform.machine().lower() in ("x86_64", "amd64") else None


def _element_pointer(context, builder, signature, args):
    array = context.make_array(signature.args[0])(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])


@intrinsic
def load_acquire(typingctx, counters, index):
    """counters[index], read with acquire ordering."""
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_element_pointer(context, builder, signature, args), ordering="acquire", align=8)
    return types.int64(counters, index), codegen


@intrinsic
def store_release(typingctx, counters, index, value):
    """counters[index] = value, with release ordering (value must be int64)."""
    def codegen(context, builder, signature, args):
        builder.store_atomic(args[2], _element_pointer(context, builder, signature, args), ordering="release",
                             align=8)
        return context.get_dummy_value()
    return types.void(counters, index, value), codegen


@intrinsic
def spin_pause(typingctx):
    """The CPU's spin-wait hint (x86 PAUSE), so a waiting core yields resources to its sibling."""
    def codegen(context, builder, signature, args):
        if _PAUSE:
            builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), _PAUSE),
                         [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Start loading the cache line of array[index] (a hint: no effect on results, never faults)."""
    def codegen(context, builder, signature, args):
        i8_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8_pointer, i32, i32, i32]),
                                                  "llvm.prefetch.p0i8")
        pointer = builder.bitcast(_element_pointer(context, builder, signature, args), i8_pointer)
        # read (0), keep in all cache levels (3), data (1)
        builder.call(function, [pointer, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(array, index), codegen


@intrinsic
def float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 bits (a reinterpretation, no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen
