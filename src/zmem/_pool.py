"""The one interface every allocator offers (the role zpool played in the kernel).

A pool stores opaque objects of 1..max_alloc_size bytes and hands out an int
handle for each.  Front-ends (zram, zswap, cleancache) are written against this
class only, so zsmalloc and its rivals (zbud, z3fold, zblock, variable-length
zspages) can be swapped under them.  Capabilities are declared, not probed:
``supports_compaction`` and ``supports_reclaim``.

Batch entry points default to loops over the single-object methods; an
allocator overrides them where it can do better.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

from ._classes import PAGE_SIZE

__all__ = ["PoolBase"]


class PoolBase(ABC):
    """Abstract allocator: malloc / write / read / free on opaque int handles."""

    #: Allocator name as a user would pick it ("zsmalloc", "zbud", ...).
    name: str = "pool"
    #: ``compact()`` can free pages by moving objects.
    supports_compaction: bool = False
    #: The allocator can evict whole pages through a callback (zbud-style reclaim).
    supports_reclaim: bool = False
    #: Largest object the pool accepts.
    max_alloc_size: int = PAGE_SIZE

    @abstractmethod
    def malloc(self, size: int) -> int:
        """Allocate an object of ``size`` bytes; return its handle."""

    @abstractmethod
    def free(self, handle: int) -> None:
        """Release the object; the handle becomes invalid."""

    @abstractmethod
    def write(self, handle: int, data) -> None:
        """Copy ``data`` (at most the allocated size) to the start of the object."""

    @abstractmethod
    def read(self, handle: int, length: int | None = None) -> bytes:
        """A copy of the object's first ``length`` bytes (default: its allocated size)."""

    @abstractmethod
    def read_into(self, handle: int, buf, length: int | None = None) -> int:
        """Copy the object into the caller's writable buffer; return bytes copied."""

    @property
    @abstractmethod
    def total_pages(self) -> int:
        """Pages the pool holds (``zs_get_total_pages``), fragmentation included."""

    def store(self, data) -> int:
        """``malloc(len(data))`` then ``write``; the common case in one call."""
        handle = self.malloc(len(data))
        try:
            self.write(handle, data)
        except BaseException:
            self.free(handle)
            raise
        return handle

    def store_many(self, items: Iterable) -> list[int]:
        """``store`` for each item, in order."""
        return [self.store(d) for d in items]

    def take(self, handle: int) -> bytes:
        """Read the whole object and free it (zswap's exclusive load)."""
        data = self.read(handle)
        self.free(handle)
        return data

    def free_many(self, handles: Sequence[int]) -> None:
        """``free`` for each handle, in order."""
        for h in handles:
            self.free(h)

    def compact(self) -> int:
        """Move objects to free pages; return pages freed (0 if unsupported)."""
        return 0

    @property
    def pages_compacted(self) -> int:
        """Cumulative pages freed by compaction."""
        return 0

    def metadata_bytes(self) -> int:
        """Bytes of bookkeeping the pool keeps outside its pages."""
        return 0

    def close(self) -> None:
        """Release the pool's memory; the pool must not be used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
