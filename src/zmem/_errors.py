"""The exception tree: one base, leaves that are also builtins, each with the kernel's errno.

Callers can catch ``ZmemError`` for everything zmem raises, or the builtin they
already expect (an oversized object is a ``ValueError``, an exhausted pool a
``MemoryError``, an unknown handle a ``KeyError``).  ``errno`` carries the code
the kernel returns for the same failure (``zs_malloc``: EINVAL for size 0,
ENOSPC above PAGE_SIZE, ENOMEM when out of memory), for surfaces that speak
errno (an NBD error reply); the CLI prints "Type: message" and exits 1.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "ZmemError",
    "InvalidSizeError",
    "ObjectTooLargeError",
    "InvalidHandleError",
    "DoubleFreeError",
    "WriteTooLargeError",
    "PoolExhaustedError",
    "MemLimitError",
    "OutOfRangeError",
    "UnsupportedAlgorithmError",
    "CompressionError",
    "DecompressionError",
    "DeviceBusyError",
    "NotInitializedError",
    "BackingDeviceError",
]


class ZmemError(Exception):
    """Base of every error zmem raises on purpose."""

    errno: int = _errno.EIO

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return Exception.__str__(self)


class InvalidSizeError(ZmemError, ValueError):
    """An allocation of size 0 or a negative size (zs_malloc: -EINVAL)."""

    errno = _errno.EINVAL


class ObjectTooLargeError(ZmemError, ValueError):
    """An allocation larger than the pool's largest object (zs_malloc: -ENOSPC)."""

    errno = _errno.ENOSPC


class InvalidHandleError(ZmemError, KeyError):
    """A handle the pool never returned, or one that was already freed."""

    errno = _errno.EINVAL


class DoubleFreeError(InvalidHandleError):
    """``free`` of a handle that is already free."""


class WriteTooLargeError(ZmemError, ValueError):
    """A write of more bytes than the object was allocated with."""

    errno = _errno.E2BIG


class PoolExhaustedError(ZmemError, MemoryError):
    """The pool could not get memory (its page limit, or the OS) (-ENOMEM)."""

    errno = _errno.ENOMEM


class MemLimitError(ZmemError, MemoryError):
    """A zram write that would take the pool over ``mem_limit`` (-ENOMEM)."""

    errno = _errno.ENOMEM


class OutOfRangeError(ZmemError, ValueError):
    """An offset or length outside the device (the block layer's -EIO)."""

    errno = _errno.EINVAL


class UnsupportedAlgorithmError(ZmemError, ValueError):
    """A compression algorithm zmem cannot provide."""

    errno = _errno.EINVAL


class CompressionError(ZmemError):
    """The compressor failed on a page."""


class DecompressionError(ZmemError):
    """Stored data failed to decompress (the kernel's ``decompress_fail``)."""


class DeviceBusyError(ZmemError):
    """A setting that can only change before the device is initialised (-EBUSY)."""

    errno = _errno.EBUSY


class NotInitializedError(ZmemError):
    """An operation that needs an initialised device (-EINVAL)."""

    errno = _errno.EINVAL


class BackingDeviceError(ZmemError, OSError):
    """Writeback without a backing device, or the backing store failed."""

    errno = _errno.ENODEV
