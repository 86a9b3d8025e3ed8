"""Driver for a real kernel zram device, so zmem can be compared with the kernel side by side.

This module owns the whole life of the zram devices it creates: it hot-adds a new
device through /sys/class/zram-control (it never touches zram0 or any device it did
not create), configures the compressor, disk size and memory limit through sysfs,
does page I/O on /dev/zramN with O_DIRECT so every write reaches zram at once (no page
cache in between), reads the mm_stat/io_stat counters, and resets and hot-removes the
device again on close, on garbage collection or at interpreter exit.
``kernel_compressed_sizes`` builds on it to measure the kernel's compressed size of
each page of a buffer.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Union

PAGE_SIZE = 4096
Buffer = Union[bytes, bytearray, memoryview]

_CONTROL = Path("/sys/class/zram-control")
_BLKDISCARD = 0x1277  # _IO(0x12, 119); argument: u64 start, u64 length (bytes)
# Scratch size for kernel_compressed_sizes: big enough to amortise the discard
# between chunks, small enough that the logical slot table stays modest.
_SCRATCH_SLOTS = 16384

MM_STAT_FIELDS = (
    "orig_data_size",
    "compr_data_size",
    "mem_used_total",
    "mem_limit",
    "mem_used_max",
    "same_pages",
    "pages_compacted",
    "huge_pages",
    "huge_pages_since",
)
# The third io_stat field is a literal 0 since invalid_io was removed; kept for shape.
IO_STAT_FIELDS = ("failed_reads", "failed_writes", "invalid_io", "notify_free")


def kernel_zram_available() -> tuple[bool, str]:
    """(True, "") if this process can create and drive its own zram devices."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "not running as root"
    hot_add, hot_remove = _CONTROL / "hot_add", _CONTROL / "hot_remove"
    if not hot_add.exists():
        return False, f"{hot_add} missing (zram not built in or module not loaded)"
    # hot_add is mode 0400 (reading it creates a device); hot_remove is 0200.
    # os.access also reports EROFS, which catches a read-only /sys in containers.
    if not os.access(hot_add, os.R_OK) or not os.access(hot_remove, os.W_OK):
        return False, "zram-control not accessible (read-only /sys?)"
    if not os.path.isdir("/dev") or not os.access("/dev", os.W_OK):
        return False, "/dev missing or not writable"
    return True, ""


@dataclass
class _Device:
    """What cleanup needs; kept apart from KernelZram so the finalizer holds no cycle."""

    id: int
    fd: int = -1
    stat_fd: int = -1
    made_node: str = ""


def _write_attr(path: Path, value: str) -> None:
    # Unbuffered single write: sysfs stores see exactly one write() call, and the
    # errno (EBUSY, EINVAL, ...) surfaces as OSError instead of at close time.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _retry_busy(path: Path, value: str) -> None:
    # A udev/blkid probe may briefly hold the new disk open: reset and
    # hot_remove then fail with EBUSY, so give it a moment.
    for attempt in range(50):
        try:
            _write_attr(path, value)
            return
        except OSError as e:
            if e.errno != errno.EBUSY or attempt == 49:
                raise
            time.sleep(0.02)


def _destroy(dev: _Device) -> None:
    for fd in (dev.fd, dev.stat_fd):
        if fd >= 0:
            os.close(fd)
    dev.fd = dev.stat_fd = -1
    block = Path(f"/sys/block/zram{dev.id}")
    try:
        if block.exists():
            _retry_busy(block / "reset", "1")
            _retry_busy(_CONTROL / "hot_remove", str(dev.id))
    finally:
        if dev.made_node:
            try:
                os.unlink(dev.made_node)
            except FileNotFoundError:
                pass


def _open_node(dev: _Device) -> int:
    node = f"/dev/zram{dev.id}"
    deadline = time.monotonic() + 2.0
    while not os.path.exists(node) and time.monotonic() < deadline:
        time.sleep(0.01)
    if not os.path.exists(node):
        # /dev without devtmpfs (some containers): make the node ourselves from
        # the major:minor sysfs reports, and remember to remove it.
        major, minor = (Path(f"/sys/block/zram{dev.id}/dev").read_text().split(":"))
        os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(int(major), int(minor)))
        dev.made_node = node
    return os.open(node, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)


class KernelZram:
    """A freshly hot-added /dev/zramN, configured and opened with O_DIRECT."""

    def __init__(self, disksize: int, comp_algorithm: str = "lzo", mem_limit: int = 0) -> None:
        ok, why = kernel_zram_available()
        if not ok:
            raise OSError(errno.EPERM, f"kernel zram unavailable: {why}")
        if disksize <= 0:
            raise ValueError("disksize must be positive")
        self.disksize = -(-disksize // PAGE_SIZE) * PAGE_SIZE
        self.comp_algorithm = comp_algorithm
        self._dev = _Device(int((_CONTROL / "hot_add").read_text()))
        # From here on the device exists: any failure must remove it again.
        self._finalizer = weakref.finalize(self, _destroy, self._dev)
        self._sys = Path(f"/sys/block/zram{self._dev.id}")
        # All I/O goes through this page-aligned anonymous mmap (grown on demand).
        # The block layer accepts O_DIRECT buffers aligned to only 512 bytes
        # (dma_alignment 511), but zram on 4 KiB pages handles each bio segment as
        # one whole page: from a buffer that is not page aligned, 6.18 stores the
        # wrong page and reads spill over the neighbouring user memory, silently.
        self._buf = mmap.mmap(-1, PAGE_SIZE)
        try:
            # The algorithm must be chosen before disksize: disksize initialises
            # the device, after which comp_algorithm is EBUSY.
            _write_attr(self._sys / "comp_algorithm", comp_algorithm)
            _write_attr(self._sys / "disksize", str(self.disksize))
            if mem_limit:
                self.set_mem_limit(mem_limit)
            self._dev.fd = _open_node(self._dev)
            self._dev.stat_fd = os.open(self._sys / "mm_stat", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            self.close()
            raise

    # -- lifecycle -------------------------------------------------------

    def close(self) -> None:
        """Close the device, reset it and hot-remove it. Idempotent."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> KernelZram:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def id(self) -> int:
        return self._dev.id

    @property
    def name(self) -> str:
        return f"zram{self._dev.id}"

    @property
    def path(self) -> str:
        return f"/dev/zram{self._dev.id}"

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<KernelZram {self.name} {self.disksize} B {self.comp_algorithm} {state}>"

    # -- page I/O --------------------------------------------------------

    def _fd(self) -> int:
        if self._dev.fd < 0:
            raise ValueError(f"{self.name} is closed")
        return self._dev.fd

    def _check_range(self, offset: int, length: int) -> None:
        if offset % PAGE_SIZE or length % PAGE_SIZE or offset < 0 or length <= 0:
            raise ValueError(f"offset {offset} / length {length} not whole pages")
        if offset + length > self.disksize:
            raise ValueError(f"range {offset}+{length} beyond disksize {self.disksize}")

    def _aligned(self, length: int) -> memoryview:
        if len(self._buf) < length:
            self._buf.close()
            self._buf = mmap.mmap(-1, length)
        return memoryview(self._buf)[:length]

    def write(self, offset: int, data: Buffer) -> None:
        """Store whole pages at a page-aligned offset with one pwritev.

        Raises OSError (EIO) if zram refuses the write, e.g. at mem_limit. zram
        processes the range page by page and stops at the first failure, so
        the pages before it are stored when that happens.
        """
        src = memoryview(data).cast("B")
        self._check_range(offset, len(src))
        buf = self._aligned(len(src))
        buf[:] = src
        done = 0
        while done < len(buf):
            n = os.pwritev(self._fd(), [buf[done:]], offset + done)
            if n <= 0:
                raise OSError(errno.EIO, f"{self.name}: write returned {n}")
            done += n

    def write_page(self, index: int, page: Buffer) -> None:
        """Store one 4 KiB page in slot ``index``."""
        if len(memoryview(page).cast("B")) != PAGE_SIZE:
            raise ValueError("a page is exactly 4096 bytes")
        self.write(index * PAGE_SIZE, page)

    def read(self, offset: int, length: int) -> bytes:
        """Read whole pages (unwritten or discarded slots read as zeros)."""
        self._check_range(offset, length)
        buf = self._aligned(length)
        done = 0
        while done < length:
            n = os.preadv(self._fd(), [buf[done:]], offset + done)
            if n <= 0:
                raise OSError(errno.EIO, f"{self.name}: read returned {n}")
            done += n
        return bytes(buf)

    def discard(self, offset: int, length: int) -> None:
        """Free the slots of the range (BLKDISCARD); counted in io_stat notify_free."""
        self._check_range(offset, length)
        fcntl.ioctl(self._fd(), _BLKDISCARD, struct.pack("=QQ", offset, length))

    # -- sysfs controls and statistics -------------------------------------

    def compact(self) -> None:
        _write_attr(self._sys / "compact", "1")

    def set_mem_limit(self, limit: int) -> None:
        """Limit pool memory in bytes (the kernel rounds up to pages; 0 = none)."""
        _write_attr(self._sys / "mem_limit", str(limit))

    def reset_mem_used_max(self) -> None:
        """Reset the high-water mark, which the kernel sets to current usage, not 0."""
        _write_attr(self._sys / "mem_used_max", "0")

    def mm_stat_line(self) -> str:
        if self._dev.stat_fd < 0:
            return (self._sys / "mm_stat").read_text()
        # kernfs regenerates the text on every read at offset 0, so one kept-open
        # fd is enough and saves an open/close per sample.
        return os.pread(self._dev.stat_fd, 4096, 0).decode()

    def mm_stat(self) -> dict[str, int]:
        return dict(zip(MM_STAT_FIELDS, map(int, self.mm_stat_line().split())))

    def io_stat(self) -> dict[str, int]:
        text = (self._sys / "io_stat").read_text()
        return dict(zip(IO_STAT_FIELDS, map(int, text.split())))

    def compr_data_size(self) -> int:
        return int(self.mm_stat_line().split()[1])


def kernel_compressed_sizes(pages: Buffer, comp_algorithm: str = "lzo") -> list[int]:
    """The kernel's stored size of each 4 KiB page of ``pages``, compressed alone.

    Each page goes into an empty slot of a scratch device and its size is the change
    of compr_data_size: 0 for same-filled pages, PAGE_SIZE for pages zram stores
    uncompressed (huge), else the compressor's output length.
    """
    src = memoryview(pages).cast("B")
    if len(src) % PAGE_SIZE:
        raise ValueError("pages must be a whole number of 4096-byte pages")
    n = len(src) // PAGE_SIZE
    sizes: list[int] = []
    if n == 0:
        return sizes
    slots = min(n, _SCRATCH_SLOTS)
    with KernelZram(slots * PAGE_SIZE, comp_algorithm) as dev:
        for first in range(0, n, slots):
            if first:
                # Empty every slot again so no write below frees an old object.
                dev.discard(0, slots * PAGE_SIZE)
            before = dev.compr_data_size()
            for i in range(first, min(n, first + slots)):
                dev.write_page(i - first, src[i * PAGE_SIZE : (i + 1) * PAGE_SIZE])
                after = dev.compr_data_size()
                sizes.append(after - before)
                before = after
    return sizes
