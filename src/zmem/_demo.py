"""What the ``zmem`` command runs: the demo, filling a device from a source, the compare report.

``cli.py`` only parses arguments, calls one function of this module and maps
errors to exit codes.  Here live the steps that take time or tell a story:

* sources of pages: a file, a shared corpus, a live process (``--pid``) or the
  child workload of :mod:`zmem._capture` (``--workload MB``), and
  :func:`load_device`, which writes one into a fresh :class:`~zmem.Zram`;
* :func:`run_demo`, the project's showcase: a live process's memory stored,
  half freed and compacted, in zmem and (root only) in a kernel zram device
  fed the same pages and the same operations, with both ``mm_stat`` side by side;
* :func:`run_compare`, :func:`compare_report` and :func:`plot_compare` for
  ``zmem compare``.

Progress bars (tqdm) go to stderr, only when it is a terminal, and erase
themselves when done, so stdout carries the report alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TextIO

from ._capture import Workload, capture_pages
from ._compare import EXACT_FIELDS, StepResult, replay, standard_trace, synthetic_pages
from ._compress import get_codec
from ._corpus import corpus_names, load_corpus
from ._kernel import KernelZram, kernel_zram_available
from ._zram import Zram, parse_size
from ._zram_stats import MmStat
from ._zramctl import DeviceInfo, build_row, format_table

__all__ = ["KernelUnavailable", "PLOT_HINT", "rss_bytes", "read_file", "corpus_pages",
           "capture_pid", "capture_workload", "load_device", "fill", "run_demo", "run_compare",
           "compare_report", "plot_compare"]

PAGE_SIZE = 4096
MiB = 1 << 20
_CHUNK = 1 << 20  # bytes per write call: a progress step, and what KernelZram copies at once
#: Fields of mm_stat counted in bytes (the others are page counts).
_BYTE_FIELDS = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_limit", "mem_used_max")
PLOT_HINT = "plotting needs matplotlib: pip install 'zmem[plot]' (or pip install matplotlib)"


class KernelUnavailable(Exception):
    """``zmem compare`` cannot drive a kernel zram device (not root, no zram, algorithm)."""


# ----------------------------------------------------------------------
# small helpers

def rss_bytes() -> int:
    """This process's resident set (``VmRSS`` of /proc/self/status), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)


@contextlib.contextmanager
def _ticking(desc: str) -> Iterator[None]:
    """An elapsed-time bar for a step that reports no progress of its own."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, bar_format="{desc}: {elapsed}", file=sys.stderr,
               disable=None, leave=False)
    if bar.disable:
        yield
        return
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.2):
            bar.refresh()

    t = threading.Thread(target=tick, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        bar.close()


def fill(dev, data, desc: str, offset: int = 0) -> None:
    """Write ``data`` at ``offset`` in 1 MiB calls, with a progress bar.

    ``dev`` is a :class:`~zmem.Zram` or a :class:`~zmem._kernel.KernelZram`.
    """
    view = memoryview(data)
    with _bar(len(view), desc) as bar:
        for pos in range(0, len(view), _CHUNK):
            piece = view[pos:pos + _CHUNK]
            dev.write(offset + pos, piece)
            bar.update(len(piece))


# ----------------------------------------------------------------------
# sources of pages

def read_file(path: str) -> bytes:
    """A file's bytes (refuses an empty file: there would be nothing to store)."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError(f"{path}: the file is empty")
    return data


def corpus_pages(name: str) -> bytes:
    """The pages of a shared corpus, with an error naming the available ones."""
    names = corpus_names()
    if name not in names:
        if not names:
            raise ValueError(f"unknown corpus {name!r}: no corpora found (set ZMEM_CORPORA "
                             "to a directory of <name>.pages.zst files)")
        raise ValueError(f"unknown corpus {name!r}; available: {', '.join(names)}")
    return load_corpus(name)


def capture_pid(pid: int, max_pages: int | None = None, seed: int = 1) -> bytes:
    """The touched private anonymous pages of a live process (a sample if ``max_pages``)."""
    if pid <= 0 or not os.path.isdir(f"/proc/{pid}"):
        raise ProcessLookupError(f"no process with pid {pid}")
    with _ticking(f"capturing the anonymous memory of pid {pid}"):
        try:
            data = capture_pages(pid, max_pages=max_pages, seed=seed)
        except ProcessLookupError:
            if os.path.isdir(f"/proc/{pid}"):  # still there: it has no user memory
                raise ProcessLookupError(f"pid {pid} has no user address space "
                                         "(a kernel thread?)") from None
            raise ProcessLookupError(f"pid {pid} exited during the capture") from None
    if not data:
        raise ValueError(f"pid {pid} has no private anonymous memory to capture "
                         "(a kernel thread?)")
    return data


@dataclass
class WorkloadCapture:
    data: bytes
    pid: int
    rss_anon: int  # bytes of anonymous memory the child held when captured
    passes: int
    seconds: float  # time the child took to build its data


def capture_workload(mb: int, seed: int = 1) -> WorkloadCapture:
    """Run the child workload (~``mb`` MiB), capture at most ``mb`` MiB of it, stop it.

    The child's heap usually overshoots its target (it grows in whole passes),
    so the capture is capped at ``mb`` MiB by a uniform stratified sample.
    """
    t0 = time.monotonic()
    with _ticking(f"starting a Python workload of about {mb} MiB"):
        work = Workload(mb=mb)
    with work:
        seconds = time.monotonic() - t0
        data = capture_pid(work.pid, max_pages=mb * (MiB // PAGE_SIZE), seed=seed)
        return WorkloadCapture(data, work.pid, work.rss_anon_kb * 1024, work.passes, seconds)


def load_device(*, file: str | None = None, corpus: str | None = None, pid: int | None = None,
                workload: int | None = None, size: str | int | None = None,
                algorithm: str = "lzo", seed: int = 1, name: str = "zmem0") -> Zram:
    """A fresh zmem :class:`~zmem.Zram` holding the pages of one source.

    At most one source may be given; with none the device is empty and ``size``
    is required.  ``size`` defaults to the data rounded up to whole pages.
    """
    get_codec(algorithm)  # an unknown algorithm fails before any slow step
    disksize = parse_size(size) if size is not None else None
    if disksize is not None and disksize <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    if file is not None:
        data = read_file(file)
    elif corpus is not None:
        data = corpus_pages(corpus)
    elif pid is not None:
        data = capture_pid(pid, seed=seed)
    elif workload is not None:
        data = capture_workload(workload, seed=seed).data
    elif disksize is None:
        raise ValueError("nothing to load: give --load FILE, --corpus NAME, --pid N or "
                         "--workload MB (or --size SIZE for an empty device)")
    else:
        data = b""
    if disksize is None:
        disksize = -(-len(data) // PAGE_SIZE) * PAGE_SIZE
    elif disksize < len(data):
        raise ValueError(f"size {size} ({disksize} bytes) is smaller than the data "
                         f"({len(data)} bytes)")
    dev = Zram(disksize, algorithm, name=name)
    try:
        if data:
            fill(dev, data, f"writing to {name}")
    except BaseException:
        dev.close()
        raise
    return dev


# ----------------------------------------------------------------------
# the demo

def _signed(n: int) -> str:
    return f"{n:+d}" if n else "0"


def _stat_table(zm: MmStat, km: MmStat | None, indent: str = "   ") -> str:
    """mm_stat field by field: zmem, and the kernel with the difference if there is one."""
    rows = [("mm_stat", "zmem") + (("kernel", "zmem - kernel") if km else ())]
    for name, zv in zm.as_dict().items():
        row = (name, str(zv))
        if km is not None:
            kv = getattr(km, name)
            d = zv - kv
            diff = _signed(d)
            if d and name in _BYTE_FIELDS and kv:
                diff += f" ({100 * d / kv:+.2f}%)"
            row += (str(kv), diff)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append(indent + "  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _zramctl_rows(devs: Sequence[DeviceInfo], indent: str = "   ") -> str:
    table = format_table([build_row(d) for d in devs])
    return "".join(indent + line + "\n" for line in table.splitlines())


def _pct_drop(before: int, after: int) -> str:
    return f"{100 * (before - after) / before:.1f}%" if before else "0%"


class _Demo:
    """One run of the demo; prints to ``out`` as it goes."""

    def __init__(self, out: TextIO, algorithm: str, kernel: KernelZram | None) -> None:
        self.out = out
        self.algorithm = algorithm
        self.kdev = kernel
        self.zdev: Zram | None = None
        self.zname = "zmem0"
        self.history: list[tuple[str, MmStat, MmStat | None]] = []

    def p(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def stats(self) -> tuple[MmStat, MmStat | None]:
        assert self.zdev is not None
        zm = self.zdev.mm_stat()
        km = MmStat(**self.kdev.mm_stat()) if self.kdev is not None else None
        return zm, km

    def report(self, label: str) -> tuple[MmStat, MmStat | None]:
        zm, km = self.stats()
        self.history.append((label, zm, km))
        self.out.write(_stat_table(zm, km))
        self.p()
        devs = [DeviceInfo(self.zname, self.algorithm, self.zdev.disksize, zm)]
        if km is not None:
            devs.append(DeviceInfo(self.kdev.path, self.algorithm, self.kdev.disksize, km))
        self.out.write(_zramctl_rows(devs))
        self.p()
        return zm, km


def _open_kernel(disksize: int, algorithm: str, want: bool) -> tuple[KernelZram | None, str]:
    """A kernel device to compare with, or None and why not."""
    if not want:
        return None, "--no-kernel"
    ok, why = kernel_zram_available()
    if not ok:
        return None, why
    try:
        dev = KernelZram(disksize, algorithm)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return None, f"the kernel refused {algorithm}: {reason}"
    return dev, ""


def _discard_runs(npages: int, share: float, seed: int) -> tuple[int, list[tuple[int, int]]]:
    """``share`` of the pages picked at random, as (first page, count) runs."""
    k = round(npages * share)
    picked = sorted(random.Random(seed).sample(range(npages), k))
    runs: list[tuple[int, int]] = []
    for p in picked:
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return k, runs


def run_demo(*, mb: int = 64, pid: int | None = None, algorithm: str = "lzo",
             free_share: float = 0.5, kernel: bool = True, seed: int = 1,
             out: TextIO | None = None) -> int:
    """Store a live process's memory, free part of it, compact; print each step.

    Returns the exit status (0).  Raises ZmemError/OSError/ValueError on user
    mistakes (unknown algorithm, no such process, ...).
    """
    out = out if out is not None else sys.stdout
    if mb <= 0:
        raise ValueError(f"--mb must be positive, got {mb}")
    if not 0.0 <= free_share <= 1.0:
        raise ValueError(f"--free-share must be between 0 and 1, got {free_share}")
    get_codec(algorithm)
    max_pages = mb * (MiB // PAGE_SIZE)

    print("zmem demo: a live process's memory in zram's stack (zsmalloc), "
          "zmem next to the kernel's zram", file=out)
    print(file=out)

    # -- the pages --------------------------------------------------------
    if pid is None:
        cap = capture_workload(mb, seed=seed)
        data = cap.data
        print(f"workload   Python child pid {cap.pid}: {_mib(cap.rss_anon)} of anonymous "
              f"memory after {cap.seconds:.1f} s of real parsing and indexing", file=out)
        source = f"pid {cap.pid}"
    else:
        t0 = time.monotonic()
        data = capture_pid(pid, max_pages=max_pages, seed=seed)
        print(f"process    pid {pid} ({_comm(pid)}), captured in {time.monotonic() - t0:.1f} s",
              file=out)
        source = f"pid {pid}"
    npages = len(data) // PAGE_SIZE
    data = data[:npages * PAGE_SIZE]
    how = (f"a stratified sample (--mb {mb})" if npages >= max_pages
           else "all its touched pages")
    print(f"capture    {npages} pages = {_mib(len(data))} of {source}'s private anonymous "
          f"memory, {how}", file=out)

    disksize = -(-len(data) // MiB) * MiB
    with contextlib.ExitStack() as stack:
        kdev, why = _open_kernel(disksize, algorithm, kernel)
        if kdev is not None:
            stack.enter_context(kdev)
        demo = _Demo(out, algorithm, kdev)
        demo.zdev = stack.enter_context(Zram(disksize, algorithm, name=demo.zname))
        ksz = f"{disksize // MiB}M"
        kdesc = (f"{kdev.path}: kernel {os.uname().release} zram, {algorithm}, disksize {ksz}"
                 if kdev is not None else f"kernel zram: not compared ({why})")
        demo.p(f"devices    {demo.zname}: zmem, {algorithm}, disksize {ksz}")
        demo.p(f"           {kdesc}")
        demo.p()

        # -- 1. store -------------------------------------------------------
        demo.p(f"1. Store: write the {npages} pages into "
               + ("each device" if kdev is not None else "the device"))
        demo.p()
        fill(demo.zdev, data, f"writing to {demo.zname}")
        if kdev is not None:
            fill(kdev, data, f"writing to {kdev.path}")
        zm1, km1 = demo.report("stored")
        stored = zm1.orig_data_size // PAGE_SIZE
        ratio_c = zm1.orig_data_size / zm1.compr_data_size if zm1.compr_data_size else 0.0
        meta = demo.zdev.metadata_bytes()
        demo.p(f"   compression ratio  {ratio_c:.2f} compressed (DATA/COMPR), "
               f"{zm1.compr_ratio:.2f} with zsmalloc's slack (DATA/TOTAL = COMP-RATIO)")
        demo.p(f"   zmem metadata      {meta} bytes for {stored} stored pages = "
               f"{meta / stored if stored else 0:.1f} bytes per page (slot table and pool)")
        demo.p(f"   zmem process RSS   {_mib(rss_bytes())} (Python, the captured pages "
               f"and the pool's {_mib(zm1.mem_used_total)})")
        demo.p()

        # -- 2. free --------------------------------------------------------
        nfree, runs = _discard_runs(npages, free_share, seed)
        demo.p(f"2. Free: discard {nfree} random pages ({free_share:.0%}), as swap does "
               "when pages are read back or freed")
        demo.p()
        for first, count in runs:
            demo.zdev.discard(first * PAGE_SIZE, count * PAGE_SIZE)
            if kdev is not None:
                kdev.discard(first * PAGE_SIZE, count * PAGE_SIZE)
        zm2, km2 = demo.report("freed")
        data_drop = _pct_drop(zm1.orig_data_size, zm2.orig_data_size)
        used_drop = _pct_drop(zm1.mem_used_total, zm2.mem_used_total)
        demo.p(f"   fragmentation      the data fell {data_drop}, mem_used_total only "
               f"{used_drop}: freed objects leave holes")
        demo.p("                      in zspages, which stay allocated until compaction")
        demo.p(f"   zmem process RSS   {_mib(rss_bytes())}")
        demo.p()

        # -- 3. compact -----------------------------------------------------
        demo.p("3. Compact: echo 1 > compact (zs_compact moves objects out of sparse zspages)")
        demo.p()
        rss_before = rss_bytes()
        freed = demo.zdev.compact()
        rss_after = rss_bytes()
        if kdev is not None:
            kdev.compact()
        zm3, km3 = demo.report("compacted")
        kfreed = ""
        if km3 is not None:
            kfreed = f"; the kernel freed {km3.pages_compacted - km2.pages_compacted} pages"
        demo.p(f"   compaction freed   {freed} pages = {_mib(freed * PAGE_SIZE)} "
               f"(pages_compacted){kfreed}")
        demo.p(f"   zmem process RSS   {_mib(rss_before)} -> {_mib(rss_after)}: "
               f"{_mib(rss_before - rss_after)} returned to the OS (madvise DONTNEED)")
        demo.p()

        # -- summary --------------------------------------------------------
        demo.p("Summary")
        demo.p(f"   {_mib(zm1.orig_data_size)} of live process memory took "
               f"{_mib(zm1.mem_used_total)} in zmem ({zm1.compr_ratio:.2f}x). After freeing "
               f"{free_share:.0%}, {_mib(zm2.mem_used_total)}")
        demo.p(f"   stayed allocated until compaction brought it down to "
               f"{_mib(zm3.mem_used_total)}.")
        for line in _kernel_verdict(demo.history, algorithm, why):
            demo.p("   " + line)
    return 0


def _worst(history, field: str) -> float:
    """Largest relative difference zmem vs kernel of one field over the steps, in %."""
    return max((100 * abs(getattr(z, field) - getattr(k, field)) / getattr(k, field)
                for _, z, k in history if k is not None and getattr(k, field)), default=0.0)


def _kernel_verdict(history, algorithm: str, why: str) -> list[str]:
    """The summary's sentences on how zmem compared with the kernel."""
    if not history or history[0][2] is None:
        return [f"Kernel zram not compared ({why})."]
    exact = all(getattr(z, f) == getattr(k, f) for _, z, k in history for f in EXACT_FIELDS)
    if exact:
        return ["The kernel, fed the same pages and operations, gave the same "
                f"{', '.join(EXACT_FIELDS)} at every step."]
    lines = ["The kernel, fed the same pages and operations, agrees on mem_used_total "
             f"within {_worst(history, 'mem_used_total'):.2f}%",
             "at every step"]
    compr = _worst(history, "compr_data_size")
    if compr:
        lines[-1] += (f"; compr_data_size differs by up to {compr:.2f}%, as zmem's {algorithm} "
                      "binding and the")
        lines.append(f"kernel's {algorithm} compress some pages to a few bytes more or less.")
    else:
        lines[-1] += (" with equal compressed sizes: a difference in the allocator "
                      "(see zmem compare).")
    return lines


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


# ----------------------------------------------------------------------
# zmem compare

def run_compare(*, corpus: str | None = None, synthetic: int = 8192, algorithm: str = "lzo",
                rounds: int = 3, seed: int = 1, plot: str | None = None,
                out: TextIO | None = None) -> int:
    """Replay :func:`~zmem._compare.standard_trace` on zmem and the kernel; print the summary.

    Raises :class:`KernelUnavailable` when there is no kernel zram to compare with.
    """
    out = out if out is not None else sys.stdout
    ok, why = kernel_zram_available()
    if not ok:
        raise KernelUnavailable(f"compare needs the kernel's zram: {why}")
    get_codec(algorithm)
    try:  # the kernel may lack the algorithm (zstd, deflate are build options)
        KernelZram(PAGE_SIZE, algorithm).close()
    except OSError as exc:
        raise KernelUnavailable(f"the kernel's zram refused {algorithm}: "
                                f"{exc.strerror or exc}") from None
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError(PLOT_HINT) from None
        folder = os.path.dirname(os.path.abspath(plot))
        if not os.path.isdir(folder):
            raise FileNotFoundError(errno.ENOENT, "no such directory for --plot", folder)
    if corpus is not None:
        pages, what = corpus_pages(corpus), f"corpus {corpus}"
    else:
        pages, what = synthetic_pages(synthetic, seed=seed), f"{synthetic} synthetic pages"
    ops = standard_trace(pages, rounds=rounds, seed=seed)

    from tqdm import tqdm

    with tqdm(desc="replaying", unit="step", file=sys.stderr, disable=None, leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        results = replay(ops, max(len(pages), PAGE_SIZE), algorithm, progress=progress)
    print(f"replayed {len(ops)} operations on {what} ({algorithm}, {rounds} "
          f"round{'s' if rounds != 1 else ''} of discard/compact/overwrite/compact) "
          "on zmem and the kernel's zram", file=out)
    out.write("".join("  " + line + "\n" for line in compare_report(results).splitlines()))
    if plot:
        plot_compare(results, plot, title=f"mem_used_total: zmem vs kernel zram, {what}")
        print(f"plot written to {plot}", file=out)
    return 0


def compare_report(results: Sequence[StepResult]) -> str:
    """The summary ``zmem compare`` prints for a replay's steps."""
    if not results:
        return "no steps\n"
    differing = [r for r in results if r.diff()]
    last = results[-1]
    drifts = [100 * (r.zmem.mem_used_total - r.kernel.mem_used_total) / r.kernel.mem_used_total
              for r in results if r.kernel is not None and r.kernel.mem_used_total]
    pad = " " * 18
    lines = [
        f"{'steps':<18}{len(results)} (mm_stat of both read after each)",
        f"{'steps that differ':<18}{len(differing)} of {len(results)}, in any of "
        f"{', '.join(EXACT_FIELDS[:3])},",
        f"{pad}{', '.join(EXACT_FIELDS[3:])}",
    ]
    if differing:
        first = differing[0]
        diff = first.diff()
        lines.append(f"{'first difference':<18}step {results.index(first) + 1}, ending with "
                     f"{first.op.describe()}:")
        lines += [f"{pad}{n}: zmem {z}, kernel {k}" for n, (z, k) in diff.items()]
        if "compr_data_size" in diff:
            lines.append(f"{pad}(the compressed sizes differ: zmem's binding and the kernel's "
                         "compressor")
            lines.append(f"{pad}encode some pages differently; --synthetic pages avoid that "
                         "for lzo)")
    lines.append("final mm_stat")
    lines.append(f"{'  zmem':<18}" + str(last.zmem).rstrip("\n"))
    if last.kernel is not None:
        lines.append(f"{'  kernel':<18}" + str(last.kernel).rstrip("\n"))
    if drifts:
        worst = max(drifts, key=abs)
        lines.append(f"{'mem_used_total':<18}zmem vs kernel {drifts[-1]:+.3f}% at the end, "
                     f"{worst:+.3f}% at worst")
    return "\n".join(lines) + "\n"


def plot_compare(results: Sequence[StepResult], path: str, title: str = "") -> None:
    """mem_used_total of zmem and the kernel over the steps, saved to ``path``."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(PLOT_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(1, len(results) + 1))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(x, [r.zmem.mem_used_total / MiB for r in results], label="zmem", lw=2)
    if any(r.kernel is not None for r in results):
        ax.plot(x, [r.kernel.mem_used_total / MiB if r.kernel else float("nan") for r in results],
                label="kernel zram", lw=1, ls="--")
    for i, r in enumerate(results, 1):
        if r.op.kind == "compact":
            ax.axvline(i, color="grey", lw=0.5, alpha=0.5)
    ax.set_xlabel("step (grey lines: compaction)")
    ax.set_ylabel("mem_used_total (MiB)")
    ax.set_title(title or "zmem vs kernel zram: mem_used_total")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
