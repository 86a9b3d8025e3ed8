"""The backing swap store: where zswap writes pages back, addressed by swap offset.

This module owns the tier *below* zswap.  A swap store is an array of 4 KiB
slots addressed by the swap offset (the kernel's ``swp_offset``), the same
offset zswap is keyed by, so writeback needs no block allocation: the page of
offset ``i`` goes to slot ``i``, as ``__swap_writepage`` does.

:class:`SwapStore` is the seam.  Its public methods (``write_page``,
``read_page``, ``discard``) validate, keep the occupancy map and the
statistics once, in the base, and call three small hooks a tier implements:
``_write``, ``_read`` and ``_discard``.  Tiers here: :class:`FileSwapStore`
(a real file, ``os.pwrite``/``os.pread`` at ``offset * 4096``, the default
under zswap) and :class:`MemorySwapStore` (a dict, for tests).  A zram device
or a remote store is one more subclass with the same three hooks.

Occupancy is one byte per slot (``bytearray``): 1 = the slot holds a page
written since its last discard.  Reading a slot that holds nothing raises
:class:`SwapSlotEmptyError` rather than returning whatever bytes are there, so
a bug above never turns into silently wrong data.

Thread safety: every public method may be called from any thread.  A small
lock guards the occupancy map and the counters; the I/O itself runs outside
it (``pread``/``pwrite`` at distinct offsets do not interfere).  Ordering of
two writes *to the same offset* is the caller's business, as it is for a
block device; zswap serialises them under its own lock.
"""

from __future__ import annotations

import errno as _errno
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ._classes import PAGE_SIZE
from ._errors import BackingDeviceError, InvalidHandleError, OutOfRangeError

__all__ = [
    "SwapStore",
    "FileSwapStore",
    "MemorySwapStore",
    "SwapStoreStats",
    "SwapSlotEmptyError",
    "SwapIOError",
]

PAGE_SHIFT = 12
#: Offsets index int32 link arrays in zswap; a swap device of 2^31 slots is 8 TiB.
MAX_OFFSET = (1 << 31) - 1


class SwapSlotEmptyError(InvalidHandleError):
    """``read_page`` of an offset the store holds no page for (never written, or discarded)."""


class SwapIOError(BackingDeviceError):
    """The backing store's I/O failed (a short or failed read or write: -EIO)."""

    errno = _errno.EIO


@dataclass(frozen=True, slots=True)
class SwapStoreStats:
    """Counters of one swap store (cumulative except ``stored_pages``)."""

    reads: int
    writes: int
    discards: int
    """Discards of a slot that held a page (discarding an empty slot is not counted)."""
    stored_pages: int
    """Slots holding a page now."""

    def as_dict(self) -> dict[str, int]:
        return {"reads": self.reads, "writes": self.writes, "discards": self.discards,
                "stored_pages": self.stored_pages}


class SwapStore(ABC):
    """A swap device: 4 KiB pages at integer offsets ``0 .. nr_slots-1``.

    Subclasses implement ``_write(offset, page)``, ``_read(offset) -> bytes``
    and ``_discard(offset)``; validation, occupancy and counting happen here.
    ``nr_slots=None`` means the store grows as offsets are written.
    """

    #: Tier name for reports ("file", "memory", ...).
    name: str = "swap"

    def __init__(self, nr_slots: int | None = None) -> None:
        if nr_slots is not None and not 0 < nr_slots <= MAX_OFFSET + 1:
            raise ValueError(f"nr_slots must be 1..{MAX_OFFSET + 1}, got {nr_slots}")
        self.nr_slots = nr_slots
        self._used = bytearray(nr_slots if nr_slots is not None else 0)
        self._stat_lock = threading.Lock()
        self._reads = 0
        self._writes = 0
        self._discards = 0
        self._stored = 0

    # -- the hooks a tier implements ---------------------------------------

    @abstractmethod
    def _write(self, offset: int, page: bytes) -> None:
        """Persist one page at ``offset`` (raise OSError or SwapIOError on failure)."""

    @abstractmethod
    def _read(self, offset: int) -> bytes:
        """The page at ``offset`` (only called for occupied slots)."""

    def _discard(self, offset: int) -> None:
        """Forget the page at ``offset`` (a tier may release its space); default: nothing."""

    # -- public API --------------------------------------------------------

    def _check_offset(self, offset: int) -> None:
        if type(offset) is not int:
            raise TypeError(f"offset must be an int, not {type(offset).__name__}")
        limit = self.nr_slots if self.nr_slots is not None else MAX_OFFSET + 1
        if not 0 <= offset < limit:
            raise OutOfRangeError(f"{self.name} swap store: offset {offset} is outside 0..{limit - 1}")

    def write_page(self, offset: int, page) -> None:
        """Write one 4 KiB page to slot ``offset`` (overwriting what it held)."""
        self._check_offset(offset)
        if len(page) != PAGE_SIZE:
            raise ValueError(f"a swap page is {PAGE_SIZE} bytes, got {len(page)}")
        try:
            self._write(offset, page)
        except SwapIOError:
            raise
        except OSError as exc:
            raise SwapIOError(f"{self.name} swap store: write of offset {offset} failed: {exc}") from exc
        with self._stat_lock:
            used = self._used
            if offset >= len(used):
                used.extend(bytes(max(offset + 1 - len(used), len(used))))
            if not used[offset]:
                used[offset] = 1
                self._stored += 1
            self._writes += 1

    def read_page(self, offset: int) -> bytes:
        """The page last written to ``offset``; :class:`SwapSlotEmptyError` if it holds none."""
        self._check_offset(offset)
        if not self.contains(offset):
            raise SwapSlotEmptyError(f"{self.name} swap store: offset {offset} holds no page")
        try:
            page = self._read(offset)
        except SwapIOError:
            raise
        except OSError as exc:
            raise SwapIOError(f"{self.name} swap store: read of offset {offset} failed: {exc}") from exc
        if len(page) != PAGE_SIZE:
            raise SwapIOError(f"{self.name} swap store: short read at offset {offset} ({len(page)} bytes)")
        with self._stat_lock:
            self._reads += 1
        return page

    def discard(self, offset: int) -> bool:
        """Release slot ``offset`` (swap slot free); return whether it held a page."""
        self._check_offset(offset)
        with self._stat_lock:
            used = self._used
            if offset >= len(used) or not used[offset]:
                return False
            used[offset] = 0
            self._stored -= 1
            self._discards += 1
        self._discard(offset)
        return True

    def contains(self, offset: int) -> bool:
        """Whether slot ``offset`` holds a page."""
        used = self._used
        return 0 <= offset < len(used) and used[offset] == 1

    @property
    def stored_pages(self) -> int:
        return self._stored

    def stats(self) -> SwapStoreStats:
        with self._stat_lock:
            return SwapStoreStats(self._reads, self._writes, self._discards, self._stored)

    def metadata_bytes(self) -> int:
        """Bytes of bookkeeping (the occupancy map)."""
        return len(self._used)

    def flush(self) -> None:
        """Make written pages durable (a no-op where that means nothing)."""

    def close(self) -> None:
        """Release the store's resources; it must not be used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FileSwapStore(SwapStore):
    """A swap file: slot ``i`` is bytes ``[i*4096, (i+1)*4096)`` of a real file.

    ``path=None`` makes an anonymous temporary file (created and unlinked at
    once, so nothing is left behind).  A given ``path`` is created if needed;
    its former contents are meaningless to the store (as after ``mkswap``),
    and with ``nr_slots`` it is sized to exactly that many slots (sparse).
    """

    name = "file"

    def __init__(self, path: str | os.PathLike | None = None, nr_slots: int | None = None,
                 *, dir: str | os.PathLike | None = None) -> None:
        super().__init__(nr_slots)
        if path is None:
            fd, tmp = tempfile.mkstemp(prefix="zmem-swap-", dir=dir)
            os.unlink(tmp)
            self.path: str | None = None
        else:
            self.path = os.fspath(path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._fd = fd
        if nr_slots is not None:
            os.ftruncate(fd, nr_slots << PAGE_SHIFT)

    def _write(self, offset: int, page: bytes) -> None:
        if os.pwrite(self._fd, page, offset << PAGE_SHIFT) != PAGE_SIZE:
            raise SwapIOError(f"short write to {self.path or 'swap file'} at offset {offset}")

    def _read(self, offset: int) -> bytes:
        return os.pread(self._fd, PAGE_SIZE, offset << PAGE_SHIFT)

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __repr__(self) -> str:
        return (f"<zmem.FileSwapStore {self.path or '(anonymous)'} "
                f"nr_slots={self.nr_slots} stored={self.stored_pages}>")


class MemorySwapStore(SwapStore):
    """A swap store in a dict (one bytes object per page): for tests, not for scale."""

    name = "memory"

    def __init__(self, nr_slots: int | None = None) -> None:
        super().__init__(nr_slots)
        self._pages: dict[int, bytes] = {}

    def _write(self, offset: int, page) -> None:
        self._pages[offset] = bytes(page)

    def _read(self, offset: int) -> bytes:
        return self._pages[offset]

    def _discard(self, offset: int) -> None:
        self._pages.pop(offset, None)

    def close(self) -> None:
        self._pages.clear()

    def __repr__(self) -> str:
        return f"<zmem.MemorySwapStore nr_slots={self.nr_slots} stored={self.stored_pages}>"
