"""zmem: the Linux compressed-memory stack (zsmalloc, zram, zswap) rebuilt in Python.

Layers, bottom up, each in its own private module re-exported here:

* memory: :mod:`zmem._arena` (4 KiB frames of an anonymous mmap);
* allocators behind :class:`PoolBase`: :class:`Pool` (zsmalloc);
* front-ends: :class:`Zram`, :class:`Zswap` over a :class:`SwapStore`,
  :class:`Cleancache` (zcache's role);
* surfaces: the ``zmem`` command (:mod:`zmem.cli`), :mod:`zmem.bench`.

Lock ordering (outermost first): a front-end's post-processing lock
(zram writeback/recompress) -> the pool lock (which a front-end owning the
pool also uses for its own table) -> nothing below it.  Compaction takes the
pool lock one zspage at a time.
"""

from ._classes import Geometry, SizeClassInfo
from ._cleancache import Cleancache, CleancacheStats
from ._compress import ALGORITHMS, Codec, available_algorithms, get_codec
from ._errors import *  # noqa: F401,F403
from ._errors import __all__ as _errors_all
from ._pool import PoolBase
from ._swapstore import FileSwapStore, MemorySwapStore, SwapIOError, SwapSlotEmptyError, SwapStore
from ._zram import SlotFlag, Zram, parse_size
from ._zram_stats import BdStat, DebugStat, IoStat, MmStat
from ._zsmalloc import ClassStats, Pool
from ._zswap import EntryState, Zswap, ZswapStats

__all__ = [
    "Pool", "PoolBase", "ClassStats", "Geometry", "SizeClassInfo",
    "Zram", "SlotFlag", "MmStat", "IoStat", "BdStat", "DebugStat", "parse_size",
    "Zswap", "ZswapStats", "EntryState", "Cleancache", "CleancacheStats",
    "SwapStore", "FileSwapStore", "MemorySwapStore", "SwapSlotEmptyError", "SwapIOError",
    "Codec", "get_codec", "available_algorithms", "ALGORITHMS",
    *_errors_all,
]
__version__ = "0.1.0"
