"""The kernels on CPUs this machine is not: their LLVM IR must lower for 64-bit Arm too.

Numba compiles for the host only, so the check takes the IR of each kernel called
from Python (in variants that hold every intrinsic), as compiled here, puts Arm's spin-wait hint where the host's is (the one
instruction intrinsics.py chooses by architecture), and asks LLVM for an AArch64
object file. Any intrinsic that does not lower there (an x86-only one, say) fails it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHECK = r"""
import re, sys
import llvmlite.binding as llvm
import numpy as np
from numba.core import codegen
from fastnet.kernels import intrinsics, numba_backend as nb
from fastnet.model import Network

# Each module of IR as Numba's lowering hands it over, before Numba optimises it for this CPU (its x86 passes
# bring in x86 intrinsics). Numba internals: the test fails loudly if they move.
add = codegen.CPUCodeLibrary.add_ir_module
modules = []
def keep(library, module):
    modules.append(str(module))
    add(library, module)
codegen.CPUCodeLibrary.add_ir_module = keep

rng = np.random.default_rng(0)
images = rng.integers(0, 256, (64, 784), dtype=np.uint8)
images[rng.random(images.shape) < 0.8] = 0
labels = rng.integers(0, 10, 64).astype(np.uint8)
from fastnet.kernels.common import Optimizer, new_state
# One variant of the epoch (10-20 s to compile each): W1's gradient pixel by pixel (the other ways and the other
# optimisers use no intrinsic this one lacks) and sigmoid (float32_from_bits).
network = Network.initialise((784, 96, 10), "sigmoid", rng)
optimizer = Optimizer("sgd", 0.1)
nb.train_epoch(network.params, new_state(network.params, optimizer), nb.prepare(images), labels, np.arange(64), 32,
               optimizer, 0)
from fastnet.kernels import predict
for compress in (True, None):  # both ways of listing ink in prediction
    predict._vector_compress.cache_clear()
    predict.has_vector_compress = lambda: compress is not None
    nb.predict(np.empty((64, 10), np.float32), images, network.params, 0)

host_name, host_argument = intrinsics.SPIN_HINTS[intrinsics.ARCH]
arm_name, arm_argument = intrinsics.SPIN_HINTS["aarch64"]
llvm.initialize_all_targets()
llvm.initialize_all_asmprinters()
arm = llvm.Target.from_triple("aarch64-unknown-linux-gnu").create_target_machine(cpu="generic")
spins = 0
for text in modules:
    host = r'@"?' + re.escape(host_name) + r'"?\(\)'  # llvmlite quotes names with dots
    spins += len(re.findall("call void " + host, text))
    text = re.sub("declare void " + host, f'declare void @"{arm_name}"(i32)', text)
    text = re.sub("call void " + host, f'call void @"{arm_name}"(i32 {arm_argument})', text)
    text = re.sub(r'"target-(cpu|features)"="[^"]*"', "", text)
    text = re.sub(r'^target (triple|datalayout) = .*$', "", text, flags=re.M)
    module = llvm.parse_assembly(text)
    module.triple = "aarch64-unknown-linux-gnu"
    module.data_layout = str(arm.target_data)
    module.verify()
    arm.emit_object(module)
print(len(modules), spins)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
                    reason="checks the x86-64 Linux build's IR")
def test_the_kernels_lower_for_64_bit_arm(tmp_path):
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_CACHE_DIR=str(tmp_path)))
    assert result.returncode == 0, result.stderr[-3000:]
    modules, spins = map(int, result.stdout.split())
    assert modules >= 3, "every kernel variant should have been compiled and checked"
    assert spins > 0, "the spin-wait loop should be in the epoch kernel's IR"
