"""Compression in a worker process: zram's per-CPU streams, as processes.

The kernel compresses a page in the writer's context on whatever CPU it runs;
a Python process has one interpreter lock, and at one 4 KiB page per call
threads gain little from the codecs releasing it.  Processes do: a worker
compresses batches of pages while the device's own process commits (allocates
and stores) earlier batches.

Per worker there are ``_SETS`` shared-memory buffer sets in one memfd, each:

  ``in``     the batch's pages
  ``out``    per page a slot of ``_OUT_STRIDE`` bytes of compressed data
  ``meta``   int64 per page: compressed length, or -1 for a same-filled page
  ``words``  uint64 per page: the fill word of a same-filled page

Messages on a pipe are tiny tuples ("C", buffer, count) answered by ("ok",)
or ("err", index, message).  A pipe round trip costs about 100 us on a
virtual machine, as much as a batch of work, so the device's process never
blocks while there is work left: workers take batches from the front of the
write, and whenever the next result is not ready the device's process
compresses the last unassigned batch itself (work stealing from the back).
Pages are committed strictly in page order either way, so allocation order
(and ``mm_stat``) is the same as without workers.  Large reads work the
same way the other way round: the device's process copies objects out of
the pool, workers decompress them.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import threading
from collections import deque
from multiprocessing.connection import Connection

from ._classes import PAGE_SIZE
from ._errors import DecompressionError, ZmemError
from ._zram import compress_pages

__all__ = ["CodecWorkers"]

BATCH_PAGES = 32
#: Room for one compressed page: lzo's worst case is 4096 + 4096/16 + 64 + 3.
_OUT_STRIDE = 4480
_SAME = -1


_SETS = 3


def _layout(batch: int) -> tuple[list[tuple[int, int]], int]:
    """Offsets and sizes of (in, out, meta, words) for every buffer set in one memfd."""
    sizes = (batch * (PAGE_SIZE + 64), batch * _OUT_STRIDE, batch * 16, batch * 8)
    regions = []
    off = 0
    for _ in range(_SETS):
        for size in sizes:
            regions.append((off, size))
            off += -(-size // PAGE_SIZE) * PAGE_SIZE
    return regions, off


def _views(mm: mmap.mmap, batch: int) -> list[tuple]:
    regions, _ = _layout(batch)
    mv = memoryview(mm)
    sets = []
    for i in range(_SETS):
        r = regions[4 * i:4 * i + 4]
        v = [mv[o:o + n] for o, n in r]
        sets.append((v[0], v[1], v[2].cast("q"), v[3].cast("Q")))
    return sets


def _serve(conn: Connection, sets: list[tuple], comps: list) -> None:
    """Worker loop: compress ("C") or decompress ("D") one batch per message."""
    compress = comps[0].compress
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the device's process is gone
            return
        if msg[0] == "Q":
            return
        kind, b, count = msg
        inb, outb, meta, words = sets[b]
        k = 0
        try:
            if kind == "D":  # meta[2k]: offset in `in`; meta[2k+1]: length | priority << 32
                for k in range(count):
                    off = meta[2 * k]
                    ln = meta[2 * k + 1]
                    page = comps[ln >> 32].decompress(bytes(inb[off:off + (ln & 0xFFFFFFFF)]))
                    outb[k * PAGE_SIZE:(k + 1) * PAGE_SIZE] = page
                conn.send(("ok",))
                continue
            for k in range(count):
                p = bytes(inb[k * PAGE_SIZE:(k + 1) * PAGE_SIZE])
                w = p[:8]
                if w == p[4088:] and p == w * 512:
                    meta[k] = _SAME
                    words[k] = int.from_bytes(w, "little")
                    continue
                c = compress(p)
                n = len(c)
                meta[k] = n
                if n <= _OUT_STRIDE:
                    o = k * _OUT_STRIDE
                    outb[o:o + n] = c
            conn.send(("ok",))
        except Exception as exc:  # reported to the parent, which raises
            conn.send(("err", k, f"{type(exc).__name__}: {exc}"))


def _worker_main(argv: list[str]) -> None:
    """Entry point of ``python -m zmem._workers RFD WFD SHMFD BATCH``."""
    from ._compress import get_codec

    rfd, wfd, shmfd, batch = (int(x) for x in argv)
    conn_in, conn_out = Connection(rfd, writable=False), Connection(wfd, readable=False)
    codecs = conn_in.recv()
    comps = [get_codec(*a) if a else None for a in codecs]
    _, total = _layout(batch)
    mm = mmap.mmap(shmfd, total)
    conn_out.send(("ready",))

    class _Duplex:
        recv = conn_in.recv
        send = conn_out.send

    _serve(_Duplex(), _views(mm, batch), comps)  # type: ignore[arg-type]


class _Worker:
    """One codec process and the memfd it shares with the device's process."""

    def __init__(self, codecs: list, batch: int) -> None:
        _, total = _layout(batch)
        self.shmfd = os.memfd_create("zmem-codec")
        os.ftruncate(self.shmfd, total)
        self.mm = mmap.mmap(self.shmfd, total)
        self.sets = _views(self.mm, batch)
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        env = dict(os.environ)
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_parent, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zmem._workers", str(p2c_r), str(c2p_w), str(self.shmfd), str(batch)],
            pass_fds=(p2c_r, c2p_w, self.shmfd), env=env, stdin=subprocess.DEVNULL)
        os.close(p2c_r)
        os.close(c2p_w)
        self._out = Connection(p2c_w, readable=False)
        self._in = Connection(c2p_r, writable=False)
        self.send = self._out.send
        self.recv = self._in.recv
        self.poll = self._in.poll
        self.send(codecs)

    def wait_ready(self) -> None:
        """Block until the worker has imported its codecs (so it does not
        compete for the CPU with the first write)."""
        try:
            reply = self.recv()
        except (EOFError, OSError):
            raise ZmemError("a codec worker process failed to start") from None
        if reply != ("ready",):
            raise ZmemError(f"codec worker sent {reply!r} instead of ready")

    def close(self) -> None:
        try:
            self.send(("Q",))
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._in.close()
        for s in self.sets:
            for v in s:
                v.release()
        self.sets = []
        self.mm.close()
        os.close(self.shmfd)


class CodecWorkers:
    """Codec worker processes serving one zram device's large writes.

    Used by :class:`~zmem.Zram` for writes of at least ``min_pages`` pages;
    one caller at a time (others take the in-process path rather than wait).
    """

    def __init__(self, nworkers: int, comps: list, *, batch: int = BATCH_PAGES,
                 min_pages: int = 64) -> None:
        if nworkers < 1:
            raise ValueError(f"workers must be >= 1, got {nworkers}")
        self.batch = batch
        self.min_pages = min_pages
        codecs = [(c.name, c.level, c.dictionary, c.winbits) if c is not None else None for c in comps]
        self._workers = [_Worker(codecs, batch) for _ in range(nworkers)]
        try:
            for w in self._workers:
                w.wait_ready()
        except BaseException:
            for w in self._workers:
                w.close()
            raise
        self._busy = threading.Lock()

    def try_acquire(self) -> bool:
        return self._busy.acquire(blocking=False)

    def release(self) -> None:
        self._busy.release()

    def close(self) -> None:
        with self._busy:
            for w in self._workers:
                w.close()
            self._workers = []

    @staticmethod
    def _wait(w: _Worker) -> None:
        try:
            reply = w.recv()
        except (EOFError, OSError):
            raise ZmemError("a codec worker process died") from None
        if reply[0] != "ok":
            raise ZmemError(f"codec worker failed at batch item {reply[1]}: {reply[2]}")

    def write_pages(self, zram, index: int, data: bytes, npages: int) -> None:
        """Compress batches in the workers and here, commit all in page order."""
        B = self.batch
        nb = -(-npages // B)
        free_sets = deque((w, b) for b in range(_SETS) for w in self._workers)
        inflight: dict[int, tuple[_Worker, int]] = {}
        stolen: dict[int, list] = {}
        front, back = 0, nb  # batches [front, back) are not assigned yet
        compress = zram._comps[0].compress
        try:
            for j in range(nb):
                while front < back and free_sets:  # keep the workers fed
                    w, b = free_sets.popleft()
                    first = front * B
                    count = min(B, npages - first)
                    w.sets[b][0][:count * PAGE_SIZE] = data[first * PAGE_SIZE:(first + count) * PAGE_SIZE]
                    w.send(("C", b, count))
                    inflight[front] = (w, b)
                    front += 1
                first = j * B
                count = min(B, npages - first)
                if j in inflight:
                    w, b = inflight[j]
                    while front < back and not w.poll():
                        back -= 1  # steal the last unassigned batch
                        stolen[back] = compress_pages(compress, data, back * B, min(B, npages - back * B))
                    self._wait(w)
                    del inflight[j]
                    self._commit(zram, index + first, count, w.sets[b])
                    free_sets.append((w, b))
                elif j in stolen:
                    zram._commit_batch(index + first, stolen.pop(j), data, first * PAGE_SIZE)
                else:  # not handed out (no worker was free): do it here
                    front = max(front, j + 1)
                    zram._write_pages_local(index + first,
                                            data[first * PAGE_SIZE:(first + count) * PAGE_SIZE], count)
        finally:
            self._drain(inflight)

    def read_pages(self, zram, index: int, npages: int) -> list:
        """Pages ``index..index+npages`` (a list of page bytes), decompressed in the
        workers and here.

        The device's process copies each batch's objects out of the pool
        (under its lock), hands the front batches to the workers and, while
        the next result is not ready, does the last unassigned batch itself.
        """
        B = self.batch
        nb = -(-npages // B)
        free_sets = deque((w, b) for b in range(_SETS) for w in self._workers)
        inflight: dict[int, tuple[_Worker, int]] = {}
        parts: list = [None] * nb  # per batch: its list of pages (or pairs to decompress)
        front, back = 0, nb

        def collect(j: int) -> list:
            first = j * B
            parts[j] = zram._collect(index + first, min(B, npages - first))
            return parts[j]

        try:
            for j in range(nb):
                while front < back and free_sets:
                    w, b = free_sets.popleft()
                    inb, _, meta, _ = w.sets[b]
                    off = k = 0
                    for part in collect(front):
                        if type(part) is bytes:
                            continue
                        data, prio = part
                        ln = len(data)
                        inb[off:off + ln] = data
                        meta[2 * k] = off
                        meta[2 * k + 1] = ln | (prio << 32)
                        off += ln
                        k += 1
                    w.send(("D", b, k))
                    inflight[front] = (w, b)
                    front += 1
                if j in inflight:
                    w, b = inflight[j]
                    while front < back and not w.poll():
                        back -= 1  # do the last unassigned batch here
                        zram._decompress_parts(collect(back))
                    del inflight[j]
                    try:
                        self._wait(w)
                    except ZmemError as exc:
                        zram._failed_reads += 1
                        raise DecompressionError(f"{zram.name}: {exc}") from None
                    outb = w.sets[b][1]
                    pj = parts[j]
                    k = 0
                    for i, part in enumerate(pj):
                        if type(part) is not bytes:
                            pj[i] = bytes(outb[k * PAGE_SIZE:(k + 1) * PAGE_SIZE])
                            k += 1
                    free_sets.append((w, b))
                elif parts[j] is None:  # not handed out (no worker was free): do it here
                    front = max(front, j + 1)
                    zram._decompress_parts(collect(j))
        finally:
            self._drain(inflight)
        return [page for batch in parts for page in batch]

    @staticmethod
    def _drain(inflight: dict) -> None:
        """After an error, let the batches still in flight finish, so every
        worker is idle and its buffers free for the next call."""
        for w, _ in inflight.values():
            try:
                w.recv()
            except (EOFError, OSError):
                pass

    @staticmethod
    def _commit(zram, idx: int, count: int, bufs) -> None:
        """Commit a batch a worker compressed, straight from the shared buffers."""
        inb, outb, meta, words = bufs
        objs: list = []
        for k, n in enumerate(meta[:count].tolist()):
            if n == _SAME:
                objs.append(words[k])
            elif n <= _OUT_STRIDE:
                objs.append(outb[k * _OUT_STRIDE:k * _OUT_STRIDE + n])
            else:  # beyond any huge threshold: stored raw
                objs.append(None)
        zram._commit_batch(idx, objs, inb, 0)


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
