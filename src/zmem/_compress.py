"""Compression backends under the kernel's names: lzo, lz4, lz4hc, zstd, deflate.

Each backend wraps a well-kept C binding and compresses one page at a time, as
zram's per-CPU streams do.  ``Codec.compress`` and ``Codec.decompress`` are
plain callables bound at construction (no per-call dispatch), because they run
once per page on the hot path.

Kernel defaults (``drivers/block/zram/backend_*.c``): lzo is LZO1X-1 and takes
no parameters; lz4's level is its acceleration (default 1); lz4hc's level
defaults to 9; zstd's to 3, with the content size in the frame header as
``zstd_get_params`` sets it; deflate is raw deflate with window bits -11 and
memLevel 9 (``DEFLATE_DEF_WINBITS``, ``DEFLATE_DEF_MEMLEVEL``) at zlib's
default level.  Dictionaries work where the codec has them (zstd, lz4, lz4hc,
deflate).  ``lzo-rle`` and ``842`` exist in the kernel but have no maintained
Python binding; asking for them is an error that lists what is available.
"""

from __future__ import annotations

import threading
import zlib
from functools import partial
from dataclasses import dataclass, field

from ._classes import PAGE_SIZE
from ._errors import CompressionError, DecompressionError, UnsupportedAlgorithmError

__all__ = ["Codec", "ALGORITHMS", "KERNEL_ONLY_ALGORITHMS", "get_codec", "available_algorithms"]

ALGORITHMS = ("lzo", "lz4", "lz4hc", "zstd", "deflate")
#: Kernel backends zmem cannot provide (no maintained binding).
KERNEL_ONLY_ALGORITHMS = ("lzo-rle", "842")


def available_algorithms() -> list[str]:
    """The algorithm names whose binding imports on this machine."""
    out = []
    for name in ALGORITHMS:
        try:
            get_codec(name)
        except UnsupportedAlgorithmError:
            continue
        out.append(name)
    return out


@dataclass(frozen=True)
class Codec:
    """One configured algorithm: ``compress(page) -> bytes``, ``decompress(data) -> page``."""

    name: str
    level: int | None
    dictionary: bytes | None = field(repr=False)
    winbits: int | None
    compress: object = field(repr=False, compare=False)
    decompress: object = field(repr=False, compare=False)
    decompress_page: object = field(repr=False, compare=False, default=None)
    """Fast path: ``decompress_page(data) -> bytes`` of at most one page, no checks;
    raises one of ``errors`` on corrupt input.  The caller checks the length."""
    errors: tuple = field(repr=False, compare=False, default=())
    takes_views: bool = field(repr=False, compare=False, default=True)
    """Whether ``decompress_page`` accepts a memoryview of writable memory
    (python-lzo wants read-only bytes)."""

    @property
    def params(self) -> str:
        """The parameters in ``algorithm_params`` syntax."""
        parts = [f"algo={self.name}"]
        if self.level is not None:
            parts.append(f"level={self.level}")
        if self.dictionary is not None:
            parts.append(f"dict=<{len(self.dictionary)} bytes>")
        if self.winbits is not None:
            parts.append(f"deflate.winbits={self.winbits}")
        return " ".join(parts)


def _unknown(name: str) -> UnsupportedAlgorithmError:
    avail = ", ".join(ALGORITHMS)
    if name in KERNEL_ONLY_ALGORITHMS:
        return UnsupportedAlgorithmError(
            f"{name!r} is a kernel zram algorithm that zmem cannot provide "
            f"(no maintained Python binding); available: {avail}")
    return UnsupportedAlgorithmError(f"unknown compression algorithm {name!r}; available: {avail}")


def _checked(fast, name: str, errors: tuple):
    """``decompress(data) -> page`` that raises DecompressionError on any failure."""
    def decompress(data) -> bytes:
        try:
            out = fast(data)
        except errors as exc:
            raise DecompressionError(f"{name}: stored data does not decompress: {exc}") from exc
        if len(out) != PAGE_SIZE:
            raise DecompressionError(f"{name}: decompressed to {len(out)} bytes, expected {PAGE_SIZE}")
        return out
    return decompress


def get_codec(name: str, level: int | None = None, dictionary: bytes | None = None,
              winbits: int | None = None) -> Codec:
    """Build the backend ``name`` with the kernel's parameter names and defaults."""
    if not isinstance(name, str):
        raise UnsupportedAlgorithmError(f"algorithm name must be a string, not {type(name).__name__}")
    if name not in ALGORITHMS:
        raise _unknown(name)
    if winbits is not None and name != "deflate":
        raise UnsupportedAlgorithmError(f"deflate.winbits applies to deflate, not {name}")
    if dictionary is not None:
        dictionary = bytes(dictionary)
        if not dictionary:
            dictionary = None
    try:
        comp, fast, errors = _BUILDERS[name](level, dictionary, winbits)
    except ImportError as exc:
        raise UnsupportedAlgorithmError(
            f"{name}: its binding is not installed ({exc}); pip install zmem's dependencies") from exc
    return Codec(name, level, dictionary, winbits, comp, _checked(fast, name, errors), fast, errors,
                 takes_views=name != "lzo")


def _lzo(level, dictionary, winbits):
    import lzo

    if level is not None:
        raise UnsupportedAlgorithmError("lzo takes no level (the kernel's lzo is LZO1X-1)")
    if dictionary is not None:
        raise UnsupportedAlgorithmError("lzo does not support a dictionary")
    lc, ld = lzo.compress, lzo.decompress

    def compress(page) -> bytes:
        return lc(page, 1, False)

    def decompress(data) -> bytes:
        return ld(data, False, PAGE_SIZE)

    return compress, decompress, (lzo.error,)


def _lz4(level, dictionary, winbits, hc: bool = False):
    import lz4.block as b

    kw: dict = {"store_size": False}
    if hc:
        kw["mode"] = "high_compression"
        kw["compression"] = 9 if level is None else level
        if not 1 <= kw["compression"] <= 12:
            raise UnsupportedAlgorithmError(f"lz4hc level must be 1..12, got {level}")
    elif level is not None:
        if level < 1:
            raise UnsupportedAlgorithmError(f"lz4 level (acceleration) must be >= 1, got {level}")
        kw["mode"] = "fast"
        kw["acceleration"] = level
    dkw: dict = {}
    if dictionary is not None:
        kw["dict"] = dictionary
        dkw["dict"] = dictionary
    # partial() keeps the per-page call in C: no Python frame on the hot path
    return (partial(b.compress, **kw), partial(b.decompress, uncompressed_size=PAGE_SIZE, **dkw),
            (b.LZ4BlockError,))


def _lz4hc(level, dictionary, winbits):
    return _lz4(level, dictionary, winbits, hc=True)


def _zstd(level, dictionary, winbits):
    import zstandard as zs

    lvl = 3 if level is None else level
    if not -131072 <= lvl <= 22:
        raise UnsupportedAlgorithmError(f"zstd level must be at most 22, got {level}")
    zdict = zs.ZstdCompressionDict(dictionary) if dictionary is not None else None
    # zstd contexts are not thread-safe: one pair per thread, as zram keeps one
    # stream per CPU.
    local = threading.local()

    def contexts():
        try:
            return local.ctx
        except AttributeError:
            local.ctx = (zs.ZstdCompressor(level=lvl, dict_data=zdict, write_checksum=False,
                                           write_content_size=True, write_dict_id=False),
                         zs.ZstdDecompressor(dict_data=zdict))
            return local.ctx

    def compress(page) -> bytes:
        return contexts()[0].compress(page)

    def decompress(data) -> bytes:
        return contexts()[1].decompress(data, max_output_size=PAGE_SIZE)

    return compress, decompress, (zs.ZstdError,)


def _deflate(level, dictionary, winbits):
    lvl = zlib.Z_DEFAULT_COMPRESSION if level is None else level
    if not -1 <= lvl <= 9:
        raise UnsupportedAlgorithmError(f"deflate level must be -1..9, got {level}")
    wb = -11 if winbits is None else winbits  # DEFLATE_DEF_WINBITS: raw, 2 KiB window
    if not (-15 <= wb <= -9 or 9 <= wb <= 15):
        raise UnsupportedAlgorithmError(f"deflate.winbits must be 9..15 or -15..-9, got {winbits}")
    zkw = {"zdict": dictionary} if dictionary is not None else {}
    compressobj, decompressobj = zlib.compressobj, zlib.decompressobj

    def compress(page) -> bytes:
        c = compressobj(lvl, zlib.DEFLATED, wb, 9, **zkw)  # DEFLATE_DEF_MEMLEVEL = MAX_MEM_LEVEL
        return c.compress(page) + c.flush()

    def decompress(data) -> bytes:
        return decompressobj(wb, **zkw).decompress(data, PAGE_SIZE)

    return compress, decompress, (zlib.error,)


_BUILDERS = {"lzo": _lzo, "lz4": _lz4, "lz4hc": _lz4hc, "zstd": _zstd, "deflate": _deflate}

_ = CompressionError  # re-exported through zmem._errors; compressors raise it via zram
