"""How every kernel is compiled: float32 fastmath (so sums over units vectorise), nogil (threads), cached.

Three kinds of function:
- jit: the functions called from Python (the epoch worker, prediction, the tests' entry points);
- llvm_inline_jit: the functions those call for a layer's block or a share of a batch (layers.py, the augment
  transform). Each is compiled on its own, once per argument types, and shared by every kernel variant that
  calls it (SGD and Adam workers read the same forward); LLVM then inlines it into each caller (forceinline:
  its alwaysinline attribute). Inlined, no call is left to bind: left as calls, a freshly compiled process
  bound them to the function's own compiled copy and a process loading from the cache to the copy linked into
  the caller, and with fastmath reassociating sums differently in the two, their weights differed in the last
  bits;
- inline_jit: small helpers (an activation, an optimiser's rule), inlined in Numba's IR into the function
  above them, where LLVM needs them to vectorise the loop they sit in. Numba copies an inlined function's IR
  with its caller's whole scope, which is why the big functions are not inlined this way: into the epoch
  worker, that copying took a third of its compile.

error_model="numpy" drops the zero-divisor check Numba adds to every float division, which kept loops scalar.
"""

from numba import njit

_SETTINGS = dict(cache=True, fastmath=True, nogil=True, error_model="numpy")

jit = njit(**_SETTINGS)
llvm_inline_jit = njit(**_SETTINGS, forceinline=True)
inline_jit = njit(**_SETTINGS, inline="always")
