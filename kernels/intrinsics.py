"""LLVM operations Numba does not expose, as Numba intrinsics: atomics, spin-wait and prefetch hints,
bit casts, scratch arrays on the stack, sums across vector lanes, vector compress and trailing zeros."""

from __future__ import annotations

import platform

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# The architecture the kernels are compiled for (Numba compiles for the host): "x86_64", "aarch64" or other.
# Read when a kernel is compiled, so a check can compile for another one (tests/test_portability.py).
ARCH = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())


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


# The CPU's spin-wait hint per architecture: (LLVM intrinsic, its immediate argument or None).
SPIN_HINTS = {"x86_64": ("llvm.x86.sse2.pause", None), "aarch64": ("llvm.aarch64.hint", 1)}  # 1: Arm's YIELD


@intrinsic
def spin_pause(typingctx):
    """The CPU's spin-wait hint (x86 PAUSE, Arm YIELD), so a waiting core yields resources to its sibling and
    saves power; elsewhere nothing."""
    def codegen(context, builder, signature, args):
        if ARCH in SPIN_HINTS:
            name, immediate = SPIN_HINTS[ARCH]
            i32 = ir.IntType(32)
            arguments = [] if immediate is None else [ir.Constant(i32, immediate)]
            hint_type = ir.FunctionType(ir.VoidType(), [argument.type for argument in arguments])
            builder.call(cgutils.get_or_insert_function(builder.module, hint_type, name), arguments)
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


@intrinsic(prefer_literal=True)
def stack_floats(typingctx, size):
    """A pointer to `size` float32 on the stack (64-byte aligned; size a compile-time constant).

    Wrapped by numba.carray, it is a scratch array that nothing else can point to,
    so LLVM may keep it in vector registers across a loop that writes other arrays;
    an ordinary array's stores must go to memory in case they alias what the loop reads.
    """
    if not isinstance(size, types.IntegerLiteral):
        return None

    def codegen(context, builder, signature, args):
        with builder.goto_entry_block():
            scratch = builder.alloca(ir.ArrayType(ir.FloatType(), size.literal_value))
            scratch.align = 64
        return builder.bitcast(scratch, ir.FloatType().as_pointer())
    return types.CPointer(types.float32)(size), codegen


@intrinsic(prefer_literal=True)
def sum_lanes(typingctx, rows, sums, n_sums, lanes):
    """sums[s] = the sum of rows[lanes * s:lanes * (s + 1)] for s < n_sums (float32 pointers, such as
    stack_floats'; both counts powers of two, n_sums <= lanes).

    By a tree of vector adds across all the rows at once: each level shuffles the lanes of two vectors into
    their low and high halves and adds those, halving the lanes per sum, so n_sums sums of 16 lanes take
    about 2 n_sums shuffles and n_sums adds. LLVM reduces each row on its own (~8 operations a row, and for
    the later layers' short dot products as many operations as multiply-adds). The tree's adds carry no
    fastmath flags: its order of adding is the same on every CPU.
    """
    if not (isinstance(n_sums, types.IntegerLiteral) and isinstance(lanes, types.IntegerLiteral)):
        return None
    count, width = n_sums.literal_value, lanes.literal_value
    if not (0 < count <= width and count & (count - 1) == 0 and width & (width - 1) == 0):
        return None

    def codegen(context, builder, signature, args):
        f32, i32 = ir.FloatType(), ir.IntType(32)
        first_row = builder.bitcast(args[0], ir.VectorType(f32, width).as_pointer())
        vectors = [builder.load(builder.gep(first_row, [ir.Constant(i32, s)]), align=4) for s in range(count)]

        def add_halves(a, b, runs, run):
            """a (and b, unless b is a) hold `runs` runs of `run` partial sums each: the runs' low halves, then
            their high halves, added (a vector of both inputs' runs, each half as long)."""
            inputs = (0,) if b is a else (0, a.type.count)  # where each input's lanes start in the shuffle
            starts = [offset + i * run for offset in inputs for i in range(runs)]
            low = [start + j for start in starts for j in range(run // 2)]
            high = [i + run // 2 for i in low]
            return builder.fadd(builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, len(low)), low)),
                                builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, len(high)), high)))

        runs, run = 1, width
        while len(vectors) > 1:  # pair the vectors: twice the runs per vector, half as long
            vectors = [add_halves(vectors[2 * q], vectors[2 * q + 1], runs, run) for q in range(len(vectors) // 2)]
            runs, run = 2 * runs, run // 2
        vector = vectors[0]
        while run > 1:  # one vector left: halve its runs
            vector = add_halves(vector, vector, runs, run)
            run //= 2
        builder.store(vector, builder.bitcast(args[1], vector.type.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.void(rows, sums, n_sums, lanes), codegen


def has_vector_compress() -> bool:
    """Whether append_nonzero64 is worth using: the CPU Numba compiles for compresses vectors in one instruction
    (AVX-512 VBMI2 vpcompressb; elsewhere LLVM expands it element by element, slower than a plain loop).

    Decided by compiling a probe with Numba's own target machine and reading its assembly: the target, not the
    host, decides (NUMBA_CPU_NAME and NUMBA_CPU_FEATURES may name another CPU), and an LLVM too old to know
    the operation (before 19) says no by failing to parse it.
    """
    from numba.core.registry import cpu_target

    module = ir.Module("vector_compress_probe")
    bytes64 = ir.VectorType(ir.IntType(8), 64)
    compress = ir.Function(module, ir.FunctionType(bytes64, [bytes64, ir.VectorType(ir.IntType(1), 64), bytes64]),
                           "llvm.experimental.vector.compress.v64i8")
    probe = ir.Function(module, ir.FunctionType(ir.VoidType(), [bytes64.as_pointer()]), "probe")
    builder = ir.IRBuilder(probe.append_basic_block())
    data = builder.load(probe.args[0])
    ink = builder.icmp_unsigned("!=", data, ir.Constant(bytes64, None))
    builder.store(builder.call(compress, [data, ink, ir.Constant(bytes64, ir.Undefined)]), probe.args[0])
    builder.ret_void()
    try:
        parsed = llvm.parse_assembly(str(module))
        parsed.verify()
        assembly = cpu_target.target_context.codegen()._tm.emit_assembly(parsed)  # Numba internals, hence the guard
    except (RuntimeError, AttributeError):
        return False
    return "vpcompressb" in assembly


@intrinsic
def append_nonzero64(typingctx, row, offset, positions, values, count):
    """Append the nonzero bytes of row[offset:offset+64] to values[count:] and their indices in row
    to positions[count:] (in order); returns count plus how many there were.

    Whole vectors are stored: positions and values need 64 spare places beyond count.
    Indices are uint16: rows up to 65,536 pixels.
    """
    arrays = (row, positions, values)
    if not (all(isinstance(array, types.Array) for array in arrays) and row.layout == "C"
            and (row.dtype, positions.dtype, values.dtype) == (types.uint8, types.uint16, types.uint8)):
        return None

    def codegen(context, builder, signature, args):
        row_array, position_array, value_array = (context.make_array(signature.args[i])(context, builder, args[i])
                                                  for i in (0, 2, 3))
        offset, count = args[1], args[4]
        i1, i16, i32, i64 = ir.IntType(1), ir.IntType(16), ir.IntType(32), ir.IntType(64)
        bytes64, shorts32 = ir.VectorType(ir.IntType(8), 64), ir.VectorType(i16, 32)

        def intrinsic_function(name, return_type, *argument_types):
            return cgutils.get_or_insert_function(builder.module, ir.FunctionType(return_type, argument_types), name)

        def store(vector, array, at):
            builder.store(vector, builder.bitcast(builder.gep(array.data, [at]), vector.type.as_pointer()), align=1)

        compress_bytes = intrinsic_function("llvm.experimental.vector.compress.v64i8", bytes64, bytes64,
                                            ir.VectorType(i1, 64), bytes64)
        # v32i16, twice: splitting a v64i16 compress itself, LLVM 22 stored to a misaligned stack slot
        # with an aligned store (a crash).
        compress_shorts = intrinsic_function("llvm.experimental.vector.compress.v32i16", shorts32, shorts32,
                                             ir.VectorType(i1, 32), shorts32)
        popcount = intrinsic_function("llvm.ctpop.i64", i64, i64)

        data = builder.load(builder.bitcast(builder.gep(row_array.data, [offset]), bytes64.as_pointer()), align=1)
        ink = builder.icmp_unsigned("!=", data, ir.Constant(bytes64, None))
        store(builder.call(compress_bytes, [data, ink, ir.Constant(bytes64, ir.Undefined)]), value_array, count)
        first = builder.insert_element(ir.Constant(shorts32, ir.Undefined), builder.trunc(offset, i16),
                                       ir.Constant(i32, 0))
        first = builder.shuffle_vector(first, first, ir.Constant(ir.VectorType(i32, 32), [0] * 32))
        ink_bits = builder.bitcast(ink, i64)
        at = count
        for half in (0, 32):
            lanes = list(range(half, half + 32))
            half_ink = builder.shuffle_vector(ink, ink, ir.Constant(ir.VectorType(i32, 32), lanes))
            indices = builder.add(first, ir.Constant(shorts32, lanes))
            store(builder.call(compress_shorts, [indices, half_ink, ir.Constant(shorts32, ir.Undefined)]),
                  position_array, at)
            if half == 0:
                at = builder.add(at, builder.call(popcount, [builder.and_(ink_bits, ir.Constant(i64, 0xFFFFFFFF))]))
        return builder.add(count, builder.call(popcount, [ink_bits]))
    return types.int64(row, types.int64, positions, values, types.int64), codegen


@intrinsic
def trailing_zeros(typingctx, bits):
    """The index of the lowest set bit of bits (uint64, not 0). Unsigned, so that as an array index it
    needs no negative-index check."""
    def codegen(context, builder, signature, args):
        i1, i64 = ir.IntType(1), ir.IntType(64)
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64, i1]), "llvm.cttz.i64")
        return builder.call(function, [args[0], ir.Constant(i1, 1)])  # 1: the result for 0 may be anything
    return types.uint64(types.uint64), codegen
