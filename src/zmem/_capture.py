"""Capture of real anonymous memory pages from live processes.

This module owns turning a running process into a buffer of real 4 KiB pages, the
data zram stores in practice: it selects the private anonymous mappings from
/proc/PID/maps, keeps the pages /proc/PID/pagemap reports as present or swapped,
reads them from /proc/PID/mem with the process frozen (SIGSTOP/SIGCONT), and can
draw a uniform stratified sample as the shared corpora do. It also owns a
self-contained workload (a child Python process doing real text and data-structure
work on files any Debian system has) so captures work on machines without the
shared corpora.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from types import TracebackType

import numpy as np

PAGE_SIZE = 4096
_PM_PRESENT = np.uint64(1 << 63)
_PM_SWAPPED = np.uint64(1 << 62)
# Pagemap is read this many entries at a time, so a huge sparse mapping (a
# MAP_NORESERVE arena, a sanitizer shadow) costs time but not memory.
_PAGEMAP_CHUNK = 1 << 18
# Longest run of pages read from /proc/PID/mem in one pread.
_READ_RUN = 256


def _anon_mappings(maps_text: str) -> list[tuple[int, int]]:
    """(start, end) of readable, writable, private anonymous mappings."""
    ranges = []
    for line in maps_text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            continue
        perms = fields[1]
        path = fields[5].strip() if len(fields) == 6 else ""
        if perms[0] != "r" or perms[1] != "w" or perms[3] != "p":
            continue
        if path in ("", "[heap]", "[stack]") or path.startswith("[anon:"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def _touched_pages(pid: int, ranges: list[tuple[int, int]]) -> np.ndarray:
    """Virtual page numbers, ascending, of the pages present in RAM or in swap."""
    found = []
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:
        for start, end in ranges:
            for first in range(start // PAGE_SIZE, end // PAGE_SIZE, _PAGEMAP_CHUNK):
                count = min(_PAGEMAP_CHUNK, end // PAGE_SIZE - first)
                raw = os.pread(pagemap.fileno(), count * 8, first * 8)
                entries = np.frombuffer(raw, dtype="<u8")
                hit = np.nonzero(entries & (_PM_PRESENT | _PM_SWAPPED))[0]
                found.append(hit.astype(np.uint64) + np.uint64(first))
    return np.concatenate(found) if found else np.zeros(0, dtype=np.uint64)


def _stratified_sample(total: int, k: int, seed: int) -> np.ndarray:
    """Indices, ascending: ``total`` cut into ``k`` equal strata, one draw from each."""
    if k >= total:
        return np.arange(total)
    bounds = np.arange(k + 1, dtype=np.int64) * total // k
    lo, width = bounds[:-1], np.diff(bounds)  # every width >= 1 because k < total
    rng = np.random.default_rng(seed)
    return lo + (rng.random(k) * width).astype(np.int64)


def _read_pages(pid: int, vpns: np.ndarray) -> bytes:
    """Contents of the given pages; pages that cannot be read are left out."""
    out = bytearray(len(vpns) * PAGE_SIZE)
    view = memoryview(out)
    filled = 0
    # Split into runs of consecutive pages so most memory comes in few preads.
    breaks = np.nonzero(np.diff(vpns) != 1)[0] + 1
    starts = np.concatenate(([0], breaks)).tolist()
    ends = np.concatenate((breaks, [len(vpns)])).tolist()
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        fd = mem.fileno()
        for run_start, run_end in zip(starts, ends):
            for a in range(run_start, run_end, _READ_RUN):
                b = min(run_end, a + _READ_RUN)
                addr = int(vpns[a]) * PAGE_SIZE
                dest = view[filled : filled + (b - a) * PAGE_SIZE]
                try:
                    got = os.preadv(fd, [dest], addr) // PAGE_SIZE * PAGE_SIZE
                except OSError:
                    got = 0
                filled += got
                # Some page of the run failed (EIO/EFAULT, e.g. unmapped since
                # pagemap was read): retry the rest one page at a time.
                for i in range(a + got // PAGE_SIZE, b):
                    page = view[filled : filled + PAGE_SIZE]
                    try:
                        n = os.preadv(fd, [page], int(vpns[i]) * PAGE_SIZE)
                    except OSError:
                        continue
                    if n == PAGE_SIZE:
                        filled += PAGE_SIZE
    return bytes(view[:filled])


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # comm may contain spaces and parentheses: the state follows the last ')'.
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3].decode()


def _freeze(pid: int) -> bool:
    """SIGSTOP pid and wait until it is stopped; True if we must SIGCONT it later."""
    if _proc_state(pid) in "Tt":
        return False  # someone else stopped it; leave it as we found it
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 2.0
    while _proc_state(pid) not in "Tt" and time.monotonic() < deadline:
        time.sleep(0.001)
    return True


def capture_pages(pid: int, max_pages: int | None = None, seed: int = 1) -> bytes:
    """The touched private anonymous pages of ``pid``, concatenated in address order.

    With ``max_pages``, a uniform stratified sample of that many pages (same seed,
    same strata). Pages unreadable at capture time are skipped, so the result may
    hold slightly fewer pages than selected.
    """
    own = pid == os.getpid()
    resume = False if own else _freeze(pid)
    try:
        with open(f"/proc/{pid}/maps") as f:
            ranges = _anon_mappings(f.read())
        vpns = _touched_pages(pid, ranges)
        if max_pages is not None and len(vpns) > max_pages:
            vpns = vpns[_stratified_sample(len(vpns), max_pages, seed)]
        return _read_pages(pid, vpns)
    finally:
        if resume:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


# The child workload. It runs with an empty environment under -I, so nothing of the
# caller's environment lands in its stack, and it reads only files every Debian
# system (or any CPython install) has. It works in passes, keeps the results of
# every pass until its anonymous RSS reaches the target, then keeps churning
# (dropping the oldest pass per new one) until the minimum time has passed, so the
# heap holds freed and reused memory as a real long-running program would.
_WORKLOAD = r'''
import ast, collections, glob, gzip, json, os, random, sys, sysconfig, time, warnings
warnings.simplefilter("ignore")
target_kb, seconds = int(sys.argv[1]) * 1024, float(sys.argv[2])
t0 = time.monotonic()

def rss_anon_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0

def read(path):
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.read(4 << 20)
    except OSError:
        return ""

stdlib = sysconfig.get_paths()["stdlib"]
sources = sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True))
docs = sorted(glob.glob("/usr/share/doc/*/copyright") + glob.glob("/usr/share/doc/*/changelog*.gz"))
status = read("/var/lib/dpkg/status") or read("/var/lib/dpkg/status-old")
if not sources and not docs and not status:
    docs_text = [m.__doc__ or "" for m in list(sys.modules.values())]
else:
    docs_text = []

def packages(text):
    recs = []
    for para in text.split("\n\n"):
        rec, key = {}, None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                rec[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, val = line.partition(":")
                rec[key] = val.strip()
        if "Package" in rec:
            recs.append(rec)
    return recs

def one_pass(n, rng):
    out = {}
    recs = json.loads(json.dumps(packages(status)))
    for r in recs:
        r["pass"] = n
        r["deps"] = [d.split()[0] for d in r.get("Depends", "").split(",") if d.strip()]
    out["by_name"] = {r["Package"]: r for r in recs}
    out["by_section"] = collections.defaultdict(list)
    for r in recs:
        out["by_section"][r.get("Section", "?")].append(r["Package"])
    rdeps = collections.defaultdict(set)
    for r in recs:
        for d in r["deps"]:
            rdeps[d].add(r["Package"])
    out["rdeps"] = dict(rdeps)
    out["by_size"] = sorted(recs, key=lambda r: int(r.get("Installed-Size", "0") or 0))
    words = collections.Counter()
    texts = [read(p) for p in rng.sample(docs, min(40, len(docs)))] + docs_text
    for t in texts:
        words.update(t.split())
    out["doc_lines"] = [line for t in texts for line in t.splitlines() if line.strip()]
    mods = {}
    for path in rng.sample(sources, min(60, len(sources))):
        src = read(path)
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError):
            continue
        names = [node.name for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        words.update(src.split())
        mods[path] = {"lines": src.splitlines(), "defs": sorted(names), "size": len(src)}
    out["modules"] = mods
    out["words"] = words.most_common()
    out["report"] = json.dumps({"pass": n, "top": out["words"][:500],
                                "sections": {k: len(v) for k, v in out["by_section"].items()}})
    return out

rng = random.Random(1)
kept = collections.deque()
n = 0
while rss_anon_kb() < target_kb or time.monotonic() - t0 < seconds:
    if rss_anon_kb() >= target_kb and kept:
        kept.popleft()
    kept.append(one_pass(n, rng))
    n += 1
sys.stdout.write(f"ready {rss_anon_kb()} {n}\n")
sys.stdout.flush()
sys.stdin.buffer.read()  # hold everything alive until the parent closes stdin
'''


class Workload:
    """A child Python process holding about ``mb`` MiB of real heap data.

    Ready (constructed) once the child has built its data; it then idles, blocked
    on stdin, until ``stop()``. Its anonymous RSS at that point is ``rss_anon_kb``.
    """

    def __init__(self, seconds: float = 2.0, mb: int = 64, timeout: float = 300.0) -> None:
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _WORKLOAD, str(mb), str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={},
            close_fds=True,
        )
        try:
            line = self._ready_line(timeout)
            fields = line.split()
            if not fields or fields[0] != b"ready":
                self._stderr.seek(0)
                err = self._stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"workload failed (exit {self._proc.poll()}): {err}")
            self.rss_anon_kb = int(fields[1])
            self.passes = int(fields[2])
        except BaseException:
            self.stop()
            raise

    def _ready_line(self, timeout: float) -> bytes:
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"workload not ready after {timeout} s")
        # The child writes exactly one line and flushes it, so this cannot block
        # beyond the select (EOF returns b"" if the child died).
        return self._proc.stdout.readline()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self) -> None:
        """End the child: EOF on its stdin, then SIGKILL if it does not exit soon."""
        if self._proc.returncode is None:
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()
            try:
                os.kill(self._proc.pid, signal.SIGCONT)  # in case a capture left it stopped
                self._proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()

    def __enter__(self) -> Workload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_workload(seconds: float = 2.0, mb: int = 64) -> Workload:
    """Start the workload and return it once it holds about ``mb`` MiB."""
    return Workload(seconds=seconds, mb=mb)


def capture_workload(mb: int = 64, max_pages: int | None = None, seed: int = 1) -> bytes:
    """Run the workload, capture its anonymous pages, and stop it."""
    with run_workload(mb=mb) as work:
        return capture_pages(work.pid, max_pages=max_pages, seed=seed)
