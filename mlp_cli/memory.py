"""The machine's memory: how much this process may still allocate, what a command's work takes,
and the one refusal when a command needs more (a :class:`ResourceError` giving both figures),
made before any of it is spent."""

from __future__ import annotations

from mlp_cli.errors import ResourceError

# A command's work beyond holding the checkpoint arrays it loaded, per entry of W1 b1 W2 b2.
# Measured (peak address space less that before loading, 784-20000-10, float64 / float32): export
# onnx 24.6 / 12.9 bytes (the graph's copies, then its serialisation), export safetensors 16.8 / 9.0,
# plot --weights 22.3 / 26.4 (its image grows with h, not with the dtype), eval 27.6 / 15.6 (which
# then checks its data split itself).
WORK_BYTES_PER_ENTRY = 32


def available_memory() -> int | None:
    """Bytes this process may still allocate: the kernel's MemAvailable, lowered by an address
    space limit (``ulimit -v``) less what is mapped already; None where neither can be read."""
    import resource

    found: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm", encoding="ascii") as handle:
                mapped = int(handle.read().split()[0]) * resource.getpagesize()
        except (OSError, ValueError, IndexError):
            mapped = 0
        found.append(max(0, limit - mapped))
    return min(found) if found else None


def require_memory(needed: int, what: str, advice: str, available: int | None = None, *, see: str = "") -> None:
    """ResourceError "``what`` needs N of memory (``see``) but M is available; ``advice``" when
    ``needed`` bytes exceed ``available`` (by default ``available_memory()``; unknown: no refusal)."""
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        where = f" ({see})" if see else ""
        raise ResourceError(f"{what} needs {gib(needed)} of memory{where} but {gib(available)} is available; {advice}")


def gib(nbytes: int) -> str:
    """``1.2 GiB``; ``300 MiB`` below one GiB; ``12 KiB`` below one MiB."""
    if nbytes < 2**20:
        return f"{nbytes / 2**10:.0f} KiB"
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"
