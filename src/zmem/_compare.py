"""Replay one trace of block operations on a zmem Zram and on the kernel's zram, side by side.

A trace is a list of :class:`Op` (write a run of pages, discard a run, compact,
reset the high-water mark).  :func:`replay` applies each op to both devices and
records both ``mm_stat`` lines after it, so a difference is pinned to the op
that introduced it.  :func:`synthetic_pages` makes pages of random bytes
followed by zeros, whose lzo sizes python-lzo and the kernel agree on exactly;
:func:`standard_trace` is the write / discard / compact / overwrite sequence
the tests and ``zmem compare`` use.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ._classes import PAGE_SIZE
from ._zram import Zram
from ._zram_stats import MmStat

__all__ = ["Op", "StepResult", "synthetic_pages", "standard_trace", "replay", "EXACT_FIELDS"]

#: mm_stat fields that must match exactly when compressed sizes agree.
EXACT_FIELDS = ("orig_data_size", "compr_data_size", "mem_used_total", "same_pages",
                "pages_compacted", "huge_pages", "huge_pages_since")


@dataclass(frozen=True)
class Op:
    """One block operation: ``write`` (pages at ``index``), ``discard``, ``compact``."""

    kind: str
    index: int = 0
    count: int = 0
    data: bytes = field(default=b"", repr=False)

    def describe(self) -> str:
        if self.kind == "write":
            return f"write {self.count} pages at {self.index}"
        if self.kind == "discard":
            return f"discard {self.count} pages at {self.index}"
        return self.kind


@dataclass
class StepResult:
    op: Op
    zmem: MmStat
    kernel: MmStat | None

    def diff(self, names: Sequence[str] = EXACT_FIELDS) -> dict[str, tuple[int, int]]:
        """Fields that differ: name -> (zmem, kernel)."""
        if self.kernel is None:
            return {}
        return {n: (getattr(self.zmem, n), getattr(self.kernel, n))
                for n in names if getattr(self.zmem, n) != getattr(self.kernel, n)}


def synthetic_pages(n: int, seed: int = 0, same_share: float = 0.05,
                    huge_share: float = 0.03) -> bytes:
    """``n`` pages of random bytes followed by zeros, plus some same-filled and huge ones.

    The random prefix length is spread so that objects land in every size class.
    """
    rnd = random.Random(seed)
    out = bytearray()
    for _ in range(n):
        r = rnd.random()
        if r < same_share:
            out += rnd.getrandbits(64).to_bytes(8, "little") * 512 if rnd.random() < 0.5 else bytes(PAGE_SIZE)
        elif r < same_share + huge_share:
            out += rnd.randbytes(PAGE_SIZE)
        else:
            k = rnd.randint(1, 3600)
            out += rnd.randbytes(k) + bytes(PAGE_SIZE - k)
    return bytes(out)


def standard_trace(pages: bytes, rounds: int = 3, seed: int = 1, chunk: int = 512,
                   discard_share: float = 0.6, overwrite_share: float = 0.3) -> list[Op]:
    """Write all pages, then ``rounds`` of (discard a share, compact, overwrite a share, compact).

    Discards and overwrites hit scattered single pages and short runs, so
    zspages empty out unevenly and compaction has work to do.
    """
    rnd = random.Random(seed)
    npages = len(pages) // PAGE_SIZE
    ops: list[Op] = []
    for i in range(0, npages, chunk):
        k = min(chunk, npages - i)
        ops.append(Op("write", i, k, pages[i * PAGE_SIZE:(i + k) * PAGE_SIZE]))
    for _ in range(rounds):
        slots = list(range(npages))
        rnd.shuffle(slots)
        for s in slots[:int(npages * discard_share)]:
            run = min(rnd.choice((1, 1, 1, 2, 4)), npages - s)
            ops.append(Op("discard", s, run))
        ops.append(Op("compact"))
        rnd.shuffle(slots)
        for s in slots[:int(npages * overwrite_share)]:
            src = rnd.randrange(npages)
            ops.append(Op("write", s, 1, pages[src * PAGE_SIZE:(src + 1) * PAGE_SIZE]))
        ops.append(Op("compact"))
    return ops


def _coalesce(ops: Iterable[Op], every: int) -> list[list[Op]]:
    """Group consecutive ops into steps of at most ``every`` ops; compaction ends a step."""
    steps: list[list[Op]] = []
    cur: list[Op] = []
    for op in ops:
        cur.append(op)
        if op.kind == "compact" or len(cur) >= every:
            steps.append(cur)
            cur = []
    if cur:
        steps.append(cur)
    return steps


def _apply(dev, op: Op) -> None:
    if op.kind == "write":
        dev.write(op.index * PAGE_SIZE, op.data)
    elif op.kind == "discard":
        dev.discard(op.index * PAGE_SIZE, op.count * PAGE_SIZE)
    elif op.kind == "compact":
        dev.compact()
    else:
        raise ValueError(f"unknown op {op.kind!r}")


def replay(ops: Sequence[Op], disksize: int, comp_algorithm: str = "lzo", *,
           kernel: bool = True, every: int = 64,
           progress: Callable[[int, int], None] | None = None) -> list[StepResult]:
    """Apply ``ops`` to a fresh zmem Zram (and a kernel zram if ``kernel``).

    ``mm_stat`` of both is read after every ``every`` ops and after each
    compaction.  Returns one :class:`StepResult` per step.
    """
    from ._kernel import KernelZram

    steps = _coalesce(ops, every)
    results: list[StepResult] = []
    kdev = KernelZram(disksize, comp_algorithm) if kernel else None
    try:
        with Zram(disksize, comp_algorithm) as z:
            for i, group in enumerate(steps):
                for op in group:
                    _apply(z, op)
                    if kdev is not None:
                        _apply(kdev, op)
                km = MmStat(**kdev.mm_stat()) if kdev is not None else None
                results.append(StepResult(group[-1], z.mm_stat(), km))
                if progress is not None:
                    progress(i + 1, len(steps))
    finally:
        if kdev is not None:
            kdev.close()
    return results
