"""Whether a job fits in memory: asked before the work that would otherwise find out by failing."""

from __future__ import annotations

from .errors import FastnetError


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def check_fits(needed: int, what: str, advice: str) -> None:
    """One FastnetError, '<what> needs about N GiB of memory, more than the M GiB available; <advice>' (MiB,
    KiB for less), where needed bytes are more than are available (nothing where that is unknown)."""
    available = available_memory()
    if available is not None and needed > available:
        raise FastnetError(f"{what} needs about {_size(needed)} of memory, more than the {_size(available)} "
                           f"available; {advice}")


def _size(count: int) -> str:
    for unit, power in (("GiB", 30), ("MiB", 20)):
        if count >= 1 << power:
            return f"{count / (1 << power):,.1f} {unit}"
    return f"{count / 1024:,.1f} KiB"
