"""How every kernel is compiled: float32 fastmath (so sums over units vectorise), nogil (threads), cached.

Helpers are inlined (in Numba's IR) into the few functions called from Python, so each of those carries one
fixed copy of them. As separate functions, every caller linked its own optimised copy and the JIT bound calls to
whichever loaded first: with fastmath reassociating sums differently in each copy, a freshly compiled run and a
cached run differed in the last bits.

error_model="numpy" drops the zero-divisor check Numba adds to every float division, which kept loops scalar.
"""

from numba import njit

jit = njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
inline_jit = njit(cache=True, fastmath=True, nogil=True, error_model="numpy", inline="always")
