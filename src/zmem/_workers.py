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

Messages on a pipe are tiny tuples ("C" or "D", buffer set, count) answered
by ("ok", seconds the batch took there) or ("err", index, message), each
sent as one fixed-size struct in one ``write`` (pickled ``Connection``
messages cost about 7 us a round, a tenth of a batch's overhead budget,
against 1 us).  A pipe round trip costs about 100 us on this
virtual machine when the worker sleeps, 30 us when it is awake, against
about 200 us of work in a batch, so:

* a worker spins for a moment (``_SPIN``) before it sleeps on the pipe, when
  there is a CPU for each worker and the device's process (spinning on a
  shared CPU takes it from the process that would send the next batch:
  two workers on this 2-CPU machine ran at half the speed of one);
* the device's process never blocks while there is work left: whenever the
  oldest batch out is not back yet, it compresses the next ``STEAL_PAGES``
  pages itself (stealing from the front, so they are committed soon after);
* a worker is handed only as many pages as make both sides finish
  together, by the per-page times measured so far (``_Rates``): towards
  the end of a call that is less than a batch.

Pages are committed strictly in page order either way, so allocation order
(and ``mm_stat``) is the same as without workers.  Large reads work the
same way the other way round: the device's process copies objects out of
the pool straight into a worker's buffer, workers decompress them, and the
pages go straight into the caller's buffer for ``read_into``.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection

from ._classes import PAGE_SIZE
from ._errors import DecompressionError, ZmemError
from ._zram import compress_pages

__all__ = ["CodecWorkers", "WorkerDiedError"]


class WorkerDiedError(ZmemError):
    """A codec worker process is gone (killed, or out of memory); the device
    carries on without workers."""

BATCH_PAGES = 32
#: pages the device's process compresses at a time while a worker's batch is not back
STEAL_PAGES = 8
#: Room for one compressed page: lzo's worst case is 4096 + 4096/16 + 64 + 3.
_OUT_STRIDE = 4480
_SAME = -1


_SETS = 3
_SPIN = 0.002  # seconds a worker polls before it sleeps on the pipe
_now = time.perf_counter


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


#: a command: kind ("C" compress, "D" decompress, "Q" quit), buffer set, page count
_CMD = struct.Struct("<cBI")
#: a reply: 0 ok or 1 error, failing item, seconds the batch took, error text length
_REPLY = struct.Struct("<BIdI")


def _read_exact(fd: int, n: int) -> bytes:
    """``n`` bytes from the pipe; EOFError if the other end is gone."""
    buf = os.read(fd, n)
    while len(buf) < n:
        more = os.read(fd, n - len(buf))
        if not more:
            raise EOFError("codec pipe closed")
        buf += more
    return buf


class _Channel:
    """One end of a worker's pipes, speaking the fixed-size messages above
    (the codecs, sent once at start, go through a pickling ``Connection``)."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        poller = select.poll()
        poller.register(rfd, select.POLLIN)
        ready = poller.poll
        # select.poll: a tenth of Connection.poll's cost, and the device's
        # process calls it between every few pages it does itself
        self.poll = lambda: bool(ready(0))

    def send(self, msg: tuple) -> None:
        if msg[0] == "ok":
            os.write(self.wfd, _REPLY.pack(0, 0, msg[1], 0))
        elif msg[0] == "err":
            # one message, one atomic write: at most PIPE_BUF bytes
            text = msg[2].encode("utf-8", "replace")[:select.PIPE_BUF - _REPLY.size]
            os.write(self.wfd, _REPLY.pack(1, msg[1], 0.0, len(text)) + text)
        else:
            os.write(self.wfd, _CMD.pack(msg[0].encode(), *(msg[1:] or (0, 0))))

    def recv_command(self) -> tuple:
        kind, b, count = _CMD.unpack(_read_exact(self.rfd, _CMD.size))
        return (kind.decode(), b, count)

    def recv(self) -> tuple:
        status, k, seconds, n = _REPLY.unpack(_read_exact(self.rfd, _REPLY.size))
        if status == 0:
            return ("ok", seconds)
        return ("err", k, _read_exact(self.rfd, n).decode("utf-8", "replace") if n else "")


def _serve(conn: _Channel, sets: list[tuple], comps: list, spin: float = _SPIN) -> None:
    """Worker loop: compress ("C") or decompress ("D") one batch per message."""
    compress = comps[0].compress
    fast = [c.decompress_page if c is not None else None for c in comps]
    # a codec that takes a view reads the object where the device put it
    views = [c is not None and c.takes_views for c in comps]
    poll = conn.poll
    while True:
        # spin a little before sleeping: the next batch usually follows
        # within a batch's time, and a wake-up costs ~50 us on a VM
        deadline = _now() + spin
        while not poll() and _now() < deadline:
            pass
        try:
            msg = conn.recv_command()
        except (EOFError, OSError):  # the device's process is gone
            return
        if msg[0] == "Q":
            return
        t0 = _now()
        kind, b, count = msg
        inb, outb, meta, words = sets[b]
        k = 0
        try:
            if kind == "D":  # meta[2k]: offset in `in`; meta[2k+1]: length | priority << 32
                for k in range(count):
                    off = meta[2 * k]
                    ln = meta[2 * k + 1]
                    obj = inb[off:off + (ln & 0xFFFFFFFF)]
                    page = fast[ln >> 32](obj if views[ln >> 32] else bytes(obj))
                    if len(page) != PAGE_SIZE:
                        raise ValueError(f"decompressed to {len(page)} bytes, expected {PAGE_SIZE}")
                    outb[k * PAGE_SIZE:(k + 1) * PAGE_SIZE] = page
                conn.send(("ok", _now() - t0))
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
            conn.send(("ok", _now() - t0))
        except Exception as exc:  # reported to the parent, which raises
            conn.send(("err", k, f"{type(exc).__name__}: {exc}"))


def _worker_main(argv: list[str]) -> None:
    """Entry point of ``python -m zmem._workers RFD WFD SHMFD BATCH SPIN``."""
    from ._compress import get_codec

    rfd, wfd, shmfd, batch = (int(x) for x in argv[:4])
    spin = float(argv[4])
    conn_in, conn_out = Connection(rfd, writable=False), Connection(wfd, readable=False)
    codecs = conn_in.recv()
    comps = [get_codec(*a) if a else None for a in codecs]
    _, total = _layout(batch)
    mm = mmap.mmap(shmfd, total)
    conn_out.send(("ready",))
    _serve(_Channel(rfd, wfd), _views(mm, batch), comps, spin)


class _Rate:
    """A moving average of microseconds per page for one kind of work."""

    __slots__ = ("us",)

    def __init__(self, us: float) -> None:
        self.us = us

    def add(self, seconds: float, pages: int) -> None:
        if pages:
            self.us += 0.25 * (seconds * 1e6 / pages - self.us)


class _Rates:
    """Per-page times of a pipeline: in a worker, done here, and finishing
    (committing or copying out) here; they start at what this machine
    measured with lzo and follow the device's codec and the machine."""

    __slots__ = ("worker", "here", "finish")

    def __init__(self, worker: float, here: float, finish: float) -> None:
        self.worker, self.here, self.finish = _Rate(worker), _Rate(here), _Rate(finish)


class _Worker:
    """One codec process and the memfd it shares with the device's process."""

    def __init__(self, codecs: list, batch: int, spin: float) -> None:
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
            [sys.executable, "-m", "zmem._workers", str(p2c_r), str(c2p_w), str(self.shmfd), str(batch),
             repr(spin)],
            pass_fds=(p2c_r, c2p_w, self.shmfd), env=env, stdin=subprocess.DEVNULL)
        os.close(p2c_r)
        os.close(c2p_w)
        self._out = Connection(p2c_w, readable=False)
        self._in = Connection(c2p_r, writable=False)
        self._out.send(codecs)
        channel = _Channel(c2p_r, p2c_w)
        self.send, self.recv, self.poll = channel.send, channel.recv, channel.poll

    def wait_ready(self) -> None:
        """Block until the worker has imported its codecs (so it does not
        compete for the CPU with the first write)."""
        try:
            reply = self._in.recv()
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
        self.steal = STEAL_PAGES
        self.write_rates = _Rates(worker=7.0, here=6.5, finish=2.5)
        self.read_rates = _Rates(worker=4.5, here=4.6, finish=1.0)
        self.min_pages = min_pages
        codecs = [(c.name, c.level, c.dictionary, c.winbits) if c is not None else None for c in comps]
        spin = _SPIN if nworkers + 1 <= (os.cpu_count() or 1) else 0.0
        self._workers = [_Worker(codecs, batch, spin) for _ in range(nworkers)]
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
    def _send(w: _Worker, msg: tuple) -> None:
        try:
            w.send(msg)
        except (OSError, ValueError):  # broken pipe, or closed
            raise WorkerDiedError("a codec worker process died") from None

    @staticmethod
    def _wait(w: _Worker) -> float:
        """The reply to the oldest batch sent to ``w``: the seconds it took there."""
        try:
            reply = w.recv()
        except (EOFError, OSError):
            raise WorkerDiedError("a codec worker process died") from None
        if reply[0] != "ok":
            raise ZmemError(f"codec worker failed at batch item {reply[1]}: {reply[2]}")
        return reply[1]

    def write_pages(self, zram, index: int, data: bytes, npages: int) -> None:
        """Compress batches in the workers and here, commit all in page order."""
        S = self.steal
        rates = self.write_rates
        free_sets = deque((w, b) for b in range(_SETS) for w in self._workers)
        # work handed out, in page order: (first, count, worker, buffer set)
        # for a worker's batch, (first, count, None, objs) for pages done here
        units: deque = deque()
        front = 0  # pages [front, npages) are not handed out yet
        done = 0  # pages [0, done) are committed
        queued = 0  # pages handed to workers and not back yet
        compress = zram._comps[0].compress
        commit = zram._commit_batch
        view = memoryview(data)  # slices of bytes would be copies

        def here(n: int) -> None:
            nonlocal front
            t = _now()
            units.append((front, n, None, compress_pages(compress, data, front, n)))
            rates.here.add(_now() - t, n)
            front += n

        try:
            while units or front < npages:
                while front < npages and free_sets:  # keep the workers fed
                    count = self._share(npages - front, queued, front - done, rates)
                    if not count:
                        break
                    w, b = free_sets.popleft()
                    queued += count
                    w.sets[b][0][:count * PAGE_SIZE] = view[front * PAGE_SIZE:(front + count) * PAGE_SIZE]
                    self._send(w, ("C", b, count))
                    units.append((front, count, w, b))
                    front += count
                if not units:  # too little left to hand out
                    here(min(S, npages - front))
                first, count, w, x = units[0]
                if w is not None:
                    if front < npages and not w.poll():
                        # the oldest batch is not back: compress the next
                        # few pages here, then look again (and feed the
                        # workers first, if it is their turn)
                        here(min(S, npages - front))
                        continue
                    # off the list before the reply is read: a failed batch
                    # has answered, and must not be waited for again
                    units.popleft()
                    queued -= count
                    rates.worker.add(self._wait(w), count)
                    t = _now()
                    self._commit(zram, index + first, count, w.sets[x])
                    free_sets.append((w, x))
                else:
                    units.popleft()
                    t = _now()
                    commit(index + first, x, data, first * PAGE_SIZE)
                rates.finish.add(_now() - t, count)
                done = first + count
        finally:
            self._drain([(w, x) for _, _, w, x in units if w is not None])
            view.release()

    #: pages read under one hold of the device's lock
    READ_WINDOW = 1024

    def read_pages(self, zram, index: int, npages: int, out=None) -> list | None:
        """Pages ``index..index+npages``, decompressed in the workers and here:
        a list of page bytes, or written into ``out`` (a writable byte view
        of ``npages`` pages) when given.

        A window of pages at a time, under the device's lock: the objects are
        located in one pass, each batch's objects are copied straight into a
        worker's buffer, and while the oldest batch is not back this process
        decompresses the next few pages itself.
        """
        pages: list = []
        W = self.READ_WINDOW
        for first in range(0, npages, W):
            count = min(W, npages - first)
            with zram._located(index + first, count) as win:
                self._read_window(zram, win, count, pages, out, first * PAGE_SIZE)
        return pages if out is None else None

    def _read_window(self, zram, win, npages: int, pages: list, out, base: int) -> None:
        S = self.steal
        free_sets = deque((w, b) for b in range(_SETS) for w in self._workers)
        # in page order: (first, parts, worker, buffer set): parts as
        # zram._objects_into gives them, or the pages done here (worker None)
        units: deque = deque()
        front = 0
        queued = 0
        rates = self.read_rates
        read_here, objects_into = zram._read_located, zram._objects_into

        def emit(first: int, parts: list, outb) -> None:
            # runs of pages a worker decompressed are copied in one slice
            k = 0
            pos = base + first * PAGE_SIZE
            run = 0
            for part in parts:
                if part is None:
                    run += 1
                    continue
                if run:
                    flush(outb, k, run, pos)
                    k += run
                    pos += run * PAGE_SIZE
                    run = 0
                if out is None:
                    pages.append(part)
                else:
                    out[pos:pos + PAGE_SIZE] = part
                pos += PAGE_SIZE
            if run:
                flush(outb, k, run, pos)

        def flush(outb, k: int, run: int, pos: int) -> None:
            src = outb[k * PAGE_SIZE:(k + run) * PAGE_SIZE]
            if out is None:
                pages.append(bytes(src))
            else:
                out[pos:pos + run * PAGE_SIZE] = src

        def here(n: int) -> None:
            nonlocal front
            t = _now()
            units.append((front, read_here(win, front, front + n), None, None))
            rates.here.add(_now() - t, n)
            front += n

        try:
            while units or front < npages:
                while front < npages and free_sets:
                    count = self._share(npages - front, queued, queued, rates)
                    if not count:
                        break
                    w, b = free_sets.popleft()
                    inb, _, meta, _ = w.sets[b]
                    t = _now()
                    parts, k = objects_into(win, front, front + count, inb, meta)
                    rates.finish.add(_now() - t, count)
                    self._send(w, ("D", b, k))
                    units.append((front, parts, w, b))
                    front += count
                    queued += count
                if not units:  # too little left to hand out
                    here(min(S, npages - front))
                first, parts, w, b = units[0]
                if w is None:  # pages done here: all bytes, one copy
                    units.popleft()
                    if out is None:
                        pages += parts
                    else:
                        pos = base + first * PAGE_SIZE
                        out[pos:pos + len(parts) * PAGE_SIZE] = b"".join(parts)
                    continue
                if front < npages and not w.poll():
                    here(min(S, npages - front))  # and look again
                    continue
                units.popleft()
                queued -= len(parts)
                try:
                    rates.worker.add(self._wait(w), len(parts))
                except ZmemError as exc:
                    zram._failed_reads += 1
                    raise DecompressionError(f"{zram.name}: {exc}") from None
                emit(first, parts, w.sets[b][1])
                free_sets.append((w, b))
        finally:
            self._drain([(w, b) for _, _, w, b in units if w is not None])

    def _share(self, left: int, queued: int, pending: int, rates: _Rates) -> int:
        """Pages to hand a worker next, of ``left`` not handed out yet, when
        ``queued`` pages are out with workers and ``pending`` pages handed
        out (by either side) are not finished here yet.

        As many as make both sides finish together, by the per-page times
        measured so far: the workers' queue, with the ``n`` new pages, takes
        ``(queued + n) * worker / nworkers``; this process must finish the
        ``pending`` pages and the ``n`` (``finish`` each) and do the rest
        itself (``here + finish`` each).  At most a batch; less than a
        steal's worth is not worth the trip.  A timeline of 1 MiB writes
        showed why it matters: with whole batches to the end, a worker sat
        idle for the last fifth of each call while this process caught up.
        """
        cw = rates.worker.us / len(self._workers)
        ch, cf = rates.here.us, rates.finish.us
        n = (pending * cf + left * (ch + cf) - queued * cw) / (cw + ch)
        n = min(self.batch, left, int(n))
        return n if n >= self.steal else 0

    @staticmethod
    def _drain(inflight) -> None:
        """After an error, let the batches still in flight finish, so every
        worker is idle and its buffers free for the next call."""
        for w, _ in inflight:
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
