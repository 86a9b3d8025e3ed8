"""zram's statistics files as values: ``mm_stat``, ``io_stat``, ``bd_stat``, ``debug_stat``.

Each is a frozen dataclass whose fields carry the kernel's names and whose
``str()`` is byte-for-byte the text of ``/sys/block/zramN/<file>`` in Linux
6.18 (numbers right-aligned in 8-character fields; ``io_stat``'s third field
is a literal, unpadded ``0``, where ``invalid_io`` used to be).  ``parse``
reads the kernel's text back, so a script can treat zmem and the kernel alike.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

__all__ = ["MmStat", "IoStat", "BdStat", "DebugStat"]


class _StatLine:
    @classmethod
    def parse(cls, text: str):
        """Build from the kernel's text (the inverse of ``str()``)."""
        nums = [int(x) for x in text.split()]
        names = [f.name for f in fields(cls)]
        if len(nums) != len(names):
            raise ValueError(f"{cls.__name__} needs {len(names)} numbers, got {len(nums)}: {text!r}")
        return cls(*nums)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class MmStat(_StatLine):
    """``/sys/block/zramN/mm_stat`` (all sizes in bytes)."""

    orig_data_size: int
    compr_data_size: int
    mem_used_total: int
    mem_limit: int
    mem_used_max: int
    same_pages: int
    pages_compacted: int
    huge_pages: int
    huge_pages_since: int

    def __str__(self) -> str:
        return "%8d %8d %8d %8d %8d %8d %8d %8d %8d\n" % astuple(self)

    @property
    def compr_ratio(self) -> float:
        """orig_data_size / mem_used_total: zramctl's COMP-RATIO (DATA/TOTAL)."""
        return self.orig_data_size / self.mem_used_total if self.mem_used_total else 0.0


@dataclass(frozen=True, slots=True)
class IoStat(_StatLine):
    """``/sys/block/zramN/io_stat``."""

    failed_reads: int
    failed_writes: int
    invalid_io: int
    notify_free: int

    def __str__(self) -> str:
        return "%8d %8d 0 %8d\n" % (self.failed_reads, self.failed_writes, self.notify_free)


@dataclass(frozen=True, slots=True)
class BdStat(_StatLine):
    """``/sys/block/zramN/bd_stat`` (counts in 4 KiB units)."""

    bd_count: int
    bd_reads: int
    bd_writes: int

    def __str__(self) -> str:
        return "%8d %8d %8d\n" % astuple(self)


@dataclass(frozen=True, slots=True)
class DebugStat:
    """``/sys/block/zramN/debug_stat``: ``version: 1`` then ``0`` (ex-writestall) and miss_free."""

    version: int
    miss_free: int

    def __str__(self) -> str:
        return "version: %d\n0 %8d\n" % (self.version, self.miss_free)

    @classmethod
    def parse(cls, text: str) -> "DebugStat":
        lines = text.strip().splitlines()
        version = int(lines[0].split(":")[1])
        return cls(version, int(lines[1].split()[1]))

    def as_dict(self) -> dict[str, int]:
        return {"version": self.version, "miss_free": self.miss_free}
