"""Physical memory for the allocators: 4 KiB frames of one anonymous mmap.

The arena plays the page allocator.  A frame is identified by its *pfn*, its
index in the mapping, so its bytes live at ``pfn << PAGE_SHIFT``.  Frames are
handed out singly (order-0, as zsmalloc asks for them) from a LIFO free list,
like the page allocator's per-cpu lists, or from the never-used top of the
mapping.  A freed frame is given back to the OS with ``madvise(MADV_DONTNEED)``, so the
process's RSS follows the pool.  Like the page allocator's per-cpu lists, a
small number of freed frames (at most 1/64 of the frames in use, and at most
``cache_frames``) stay resident and are handed out first: a page fault costs
more than zsmalloc's own work per object, and churn (overwrites, compaction)
would otherwise fault the same frames back in again and again.  Frames are
therefore *not* guaranteed to be zero when handed out; the allocators never
read a byte they have not written.

Frames from the never-used top are faulted in ahead, ``_PREFAULT`` at a time,
with one ``madvise(MADV_POPULATE_WRITE)``: one call per 64 frames costs about
two thirds of 64 separate page faults on this machine's VM.  At most
``_PREFAULT - 1`` such frames are resident and not yet handed out; ``trim``
gives them back.

The mapping grows by ``mremap`` (``mmap.resize``), doubling, so pfns stay valid
across growth although the virtual address may move.  Growth needs that no
buffer of the mapping is exported at that moment; the owner of the arena calls
every method with its own lock held and never lets a view escape it.

Not thread-safe by itself: the owning pool serialises access.
"""

from __future__ import annotations

import contextlib
import mmap
from array import array

from ._classes import PAGE_SIZE
from ._errors import PoolExhaustedError

__all__ = ["Arena"]

PAGE_SHIFT = 12
_INITIAL_FRAMES = 256  # 1 MiB of address space; nothing is touched until used
_PREFAULT = 64
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14


class Arena:
    """A growable pool of 4 KiB frames backed by one anonymous private mapping."""

    def __init__(self, max_frames: int | None = None, initial_frames: int = _INITIAL_FRAMES,
                 cache_frames: int = 256) -> None:
        self.max_frames = max_frames
        self.cache_frames = cache_frames
        self._cache = array("i")  # freed frames kept resident (LIFO)
        self._capacity = max(1, initial_frames)
        if max_frames is not None:
            self._capacity = min(self._capacity, max_frames) or 1
        self.mm = mmap.mmap(-1, self._capacity << PAGE_SHIFT,
                            flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        # frames are 4 KiB pages: a transparent huge page (THP "always")
        # would make RSS move 2 MiB at a time and split on every free
        with contextlib.suppress(AttributeError, OSError):
            self.mm.madvise(mmap.MADV_NOHUGEPAGE)
        self._free = array("i")  # LIFO of freed pfns
        self._top = 0  # frames [0, _top) have been handed out at least once
        self._populated = 0  # frames [_top, _populated) are faulted in ahead
        self._prefault = _PREFAULT
        self.frames_in_use = 0
        self.frames_peak = 0

    # -- allocation -------------------------------------------------------

    def alloc_frame(self) -> int:
        """One frame; its contents are undefined."""
        return self.alloc_frames(1)[0]

    def alloc_frames(self, n: int) -> list[int]:
        """``n`` frames (order-0 each, not contiguous); contents undefined.

        Cached frames first (resident, no fault), then the free list, then the
        never-used top of the mapping.
        """
        if self.max_frames is not None and self.frames_in_use + n > self.max_frames:
            raise PoolExhaustedError(
                f"arena limit of {self.max_frames} frames reached ({self.frames_in_use} in use)")
        out: list[int] = []
        for src in (self._cache, self._free):
            if src:
                take = min(n - len(out), len(src))
                out += src[len(src) - take:]
                del src[len(src) - take:]
                if len(out) == n:
                    break
        if len(out) < n:
            k = n - len(out)
            top = self._top
            if top + k > self._capacity:
                self._grow(top + k)
            if top + k > self._populated:
                self._populate(top + k)
            out += range(top, top + k)
            self._top = top + k
        self.frames_in_use += n
        if self.frames_in_use > self.frames_peak:
            self.frames_peak = self.frames_in_use
        return out

    def free_frames(self, pfns) -> None:
        """Release frames: a few stay cached, the rest go back to the OS.

        Runs of consecutive pfns are given back with one madvise call.
        """
        self.frames_in_use -= len(pfns)
        cache = self._cache
        room = min(self.cache_frames, self.frames_in_use >> 6) - len(cache)
        if room > 0:
            cache.extend(pfns[:room])
            pfns = pfns[room:]
            if not pfns:
                return
        elif room < 0:
            # the pool shrank: the cache gives back its excess too
            pfns = list(pfns) + [cache.pop() for _ in range(-room)]
        mm = self.mm
        free = self._free
        run_start = run_end = -2
        for pfn in sorted(pfns):
            if pfn == run_end:
                run_end += 1
            else:
                if run_start >= 0:
                    mm.madvise(mmap.MADV_DONTNEED, run_start << PAGE_SHIFT,
                               (run_end - run_start) << PAGE_SHIFT)
                run_start, run_end = pfn, pfn + 1
            free.append(pfn)
        if run_start >= 0:
            mm.madvise(mmap.MADV_DONTNEED, run_start << PAGE_SHIFT,
                       (run_end - run_start) << PAGE_SHIFT)

    def _populate(self, need: int) -> None:
        """Fault in frames up to ``need`` and ahead of it, in one call."""
        start = max(self._populated, self._top)
        if not self._prefault:
            self._populated = need
            return
        end = min(self._capacity, max(need, start + self._prefault))
        try:
            self.mm.madvise(_MADV_POPULATE_WRITE, start << PAGE_SHIFT, (end - start) << PAGE_SHIFT)
        except OSError:
            # an older kernel (EINVAL), or no memory now: fault on first touch
            self._prefault = 0
            end = need
        self._populated = end

    def trim(self) -> int:
        """Give every cached frame, and the frames faulted in ahead, back to
        the OS; return how many."""
        ahead = self._populated - self._top
        if ahead > 0:
            self.mm.madvise(mmap.MADV_DONTNEED, self._top << PAGE_SHIFT, ahead << PAGE_SHIFT)
        self._populated = self._top
        n = len(self._cache)
        if n:
            pfns = self._cache.tolist()
            del self._cache[:]
            self.frames_in_use += n  # free_frames subtracts them again
            saved, self.cache_frames = self.cache_frames, 0
            try:
                self.free_frames(pfns)
            finally:
                self.cache_frames = saved
        return n

    @property
    def resident_frames(self) -> int:
        """Frames that may be resident: in use, cached and faulted in ahead."""
        return self.frames_in_use + len(self._cache) + max(0, self._populated - self._top)

    def can_alloc(self, n: int) -> bool:
        """Whether ``n`` more frames fit under ``max_frames``."""
        return self.max_frames is None or self.frames_in_use + n <= self.max_frames

    def _grow(self, need: int) -> None:
        new = self._capacity
        while new < need:
            new *= 2
        if self.max_frames is not None:
            if need > self.max_frames:
                raise PoolExhaustedError(
                    f"arena limit of {self.max_frames} frames reached")
            new = min(new, self.max_frames)
        try:
            self.mm.resize(new << PAGE_SHIFT)
        except OSError as exc:  # ENOMEM from mremap
            raise PoolExhaustedError(f"cannot grow the arena to {new} frames: {exc}") from exc
        self._capacity = new

    # -- accounting -------------------------------------------------------

    @property
    def top(self) -> int:
        """Frames ever handed out: pfns are below this."""
        return self._top

    @property
    def capacity_frames(self) -> int:
        """Frames of address space mapped (touched or not)."""
        return self._capacity

    def metadata_bytes(self) -> int:
        """Bytes of Python-side bookkeeping (the free-frame list)."""
        return sum(a.buffer_info()[1] * a.itemsize for a in (self._free, self._cache))

    def frame_bytes(self, pfn: int) -> bytes:
        """A copy of one frame's contents (for tests and dumps)."""
        return self.mm[pfn << PAGE_SHIFT:(pfn + 1) << PAGE_SHIFT]

    def close(self) -> None:
        self.mm.close()


assert PAGE_SIZE == 1 << PAGE_SHIFT
