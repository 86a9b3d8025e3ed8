"""zmem: the Linux compressed-memory stack (zsmalloc, zram, zswap) rebuilt in Python."""

from ._classes import Geometry, SizeClassInfo
from ._errors import *  # noqa: F401,F403
from ._errors import __all__ as _errors_all
from ._pool import PoolBase
from ._zsmalloc import ClassStats, Pool

__all__ = ["Pool", "PoolBase", "ClassStats", "Geometry", "SizeClassInfo", *_errors_all]
__version__ = "0.1.0"
