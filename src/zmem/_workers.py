"""Compression in worker processes: zram's per-CPU streams, as processes.

The kernel compresses a page in the writer's context on whatever CPU it runs;
a Python process has one interpreter lock, and at one 4 KiB page per call
threads gain little from the codecs releasing it.  Processes do: a worker
compresses a batch of pages while the device's own process allocates and
stores the previous batch.

Per worker there are two shared-memory buffer sets (double buffering), each:

  ``in``     the batch's pages (write) or compressed objects (read)
  ``out``    per page a slot of ``_OUT_STRIDE`` bytes of compressed data
             (write) or the 4096-byte decompressed page (read)
  ``meta``   int64 per page: compressed length, or -1 for a same-filled page
             (write); input offset and length (read)
  ``words``  uint64 per page: the fill word of a same-filled page

Messages on a pipe are tiny tuples ("C", buffer, count), ("D", buffer, count)
answered by ("ok",) or ("err", index, message).  Order of the device's work is
unchanged: the parent commits pages strictly in page order, so allocation
order (and ``mm_stat``) is the same as without workers.
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

__all__ = ["CodecWorkers"]

BATCH_PAGES = 32
#: Room for one compressed page: lzo's worst case is 4096 + 4096/16 + 64 + 3.
_OUT_STRIDE = 4480
_SAME = -1


def _layout(batch: int) -> tuple[list[tuple[int, int]], int]:
    """Offsets and sizes of (in, out, meta, words) for both buffer sets in one memfd."""
    sizes = (batch * (PAGE_SIZE + 64), batch * _OUT_STRIDE, batch * 16, batch * 8)
    regions = []
    off = 0
    for _ in range(2):
        for size in sizes:
            regions.append((off, size))
            off += -(-size // PAGE_SIZE) * PAGE_SIZE
    return regions, off


def _views(mm: mmap.mmap, batch: int) -> list[tuple]:
    regions, _ = _layout(batch)
    mv = memoryview(mm)
    sets = []
    for i in range(2):
        r = regions[4 * i:4 * i + 4]
        v = [mv[o:o + n] for o, n in r]
        sets.append((v[0], v[1], v[2].cast("q"), v[3].cast("Q")))
    return sets


def _serve(conn: Connection, sets: list[tuple], comps: list) -> None:
    """Worker loop: compress or decompress one batch per message."""
    compress = comps[0].compress
    while True:
        msg = conn.recv()
        if msg[0] == "Q":
            return
        kind, b, count = msg
        inb, outb, meta, words = sets[b]
        k = 0
        try:
            if kind == "C":
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
            else:  # "D": meta[2k] = offset in `in`, meta[2k+1] = length | prio << 32
                for k in range(count):
                    off = meta[2 * k]
                    ln = meta[2 * k + 1]
                    codec = comps[ln >> 32]
                    ln &= 0xFFFFFFFF
                    outb[k * PAGE_SIZE:(k + 1) * PAGE_SIZE] = codec.decompress(bytes(inb[off:off + ln]))
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
        self.send(codecs)

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
    """A set of codec worker processes serving one zram device.

    Used by :class:`~zmem.Zram` for writes and reads of at least
    ``min_pages`` pages; one caller at a time (others fall back to the
    in-process path rather than wait).
    """

    def __init__(self, nworkers: int, comps: list, *, batch: int = BATCH_PAGES,
                 min_pages: int = 64) -> None:
        if nworkers < 1:
            raise ValueError(f"workers must be >= 1, got {nworkers}")
        self.batch = batch
        self.min_pages = min_pages
        codecs = [(c.name, c.level, c.dictionary, c.winbits) if c is not None else None for c in comps]
        self._workers = [_Worker(codecs, batch) for _ in range(nworkers)]
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

    def _jobs(self, npages: int):
        """(job number, first page, count, worker, buffer set) in page order."""
        nw = len(self._workers)
        for j, first in enumerate(range(0, npages, self.batch)):
            w = self._workers[j % nw]
            yield j, first, min(self.batch, npages - first), w, (j // nw) & 1

    @staticmethod
    def _wait(w: _Worker) -> None:
        try:
            reply = w.recv()
        except (EOFError, OSError):
            raise ZmemError("a codec worker process died") from None
        if reply[0] != "ok":
            raise DecompressionError(f"codec worker failed at batch item {reply[1]}: {reply[2]}")

    def write_pages(self, zram, index: int, data: bytes, npages: int) -> None:
        """Compress in the workers, commit in page order here."""
        pending: deque = deque()
        max_pending = 2 * len(self._workers)
        lock = zram._lock
        commit, commit_same = zram._commit_page, zram._commit_same
        try:
            for job in self._jobs(npages):
                if len(pending) >= max_pending:
                    self._commit(pending.popleft(), index, data, lock, commit, commit_same)
                _, first, count, w, b = job
                inb = w.sets[b][0]
                inb[:count * PAGE_SIZE] = data[first * PAGE_SIZE:(first + count) * PAGE_SIZE]
                w.send(("C", b, count))
                pending.append(job)
            while pending:
                self._commit(pending.popleft(), index, data, lock, commit, commit_same)
        finally:
            while pending:  # an error: let the in-flight batches finish
                _, _, _, w, _ = pending.popleft()
                try:
                    w.recv()
                except EOFError:
                    pass

    def _commit(self, job, index, data, lock, commit, commit_same) -> None:
        _, first, count, w, b = job
        self._wait(w)
        inb, outb, meta, words = w.sets[b]
        lens = meta[:count].tolist()
        idx = index + first
        acquire, release = lock.acquire, lock.release
        for k in range(count):
            n = lens[k]
            acquire()
            try:
                if n == _SAME:
                    commit_same(idx + k, words[k])
                elif n <= _OUT_STRIDE:
                    o = k * _OUT_STRIDE
                    commit(idx + k, outb[o:o + n], n, inb[k * PAGE_SIZE:(k + 1) * PAGE_SIZE])
                else:  # beyond any huge threshold: stored raw
                    commit(idx + k, None, n, inb[k * PAGE_SIZE:(k + 1) * PAGE_SIZE])
            finally:
                release()

    def decompress(self, items: list[tuple[int, bytes, int]], out: bytearray) -> None:
        """Decompress ``(position, data, priority)`` items into ``out`` at ``position*4096``."""
        pending: deque = deque()
        max_pending = 2 * len(self._workers)
        try:
            for job in self._jobs(len(items)):
                if len(pending) >= max_pending:
                    self._collect(pending.popleft(), items, out)
                _, first, count, w, b = job
                inb, _, meta, _ = w.sets[b]
                off = 0
                for k in range(count):
                    _, d, prio = items[first + k]
                    ln = len(d)
                    inb[off:off + ln] = d
                    meta[2 * k] = off
                    meta[2 * k + 1] = ln | (prio << 32)
                    off += ln
                w.send(("D", b, count))
                pending.append(job)
            while pending:
                self._collect(pending.popleft(), items, out)
        finally:
            while pending:
                _, _, _, w, _ = pending.popleft()
                try:
                    w.recv()
                except EOFError:
                    pass

    def _collect(self, job, items, out: bytearray) -> None:
        _, first, count, w, b = job
        self._wait(w)
        outb = w.sets[b][1]
        mv = memoryview(out)
        for k in range(count):
            pos = items[first + k][0] * PAGE_SIZE
            mv[pos:pos + PAGE_SIZE] = outb[k * PAGE_SIZE:(k + 1) * PAGE_SIZE]



if __name__ == "__main__":
    _worker_main(sys.argv[1:])
