"""The kernel's zswap on the swapsim workload, for a side-by-side with zmem's Zswap.

This module owns everything it changes on the machine, and puts it all back:

* a swap file under ``/var/tmp`` (``fallocate``d; 2.5x the pages that will
  be swapped out, so swap stays under half full as in zmem's model), on a
  loop device with direct I/O (so swap I/O reaches the disk instead of being
  charged to the workload's memory cgroup as page cache), ``mkswap`` +
  ``swapon``;
* zswap's module parameters (``enabled``, ``compressor``,
  ``max_pool_percent``; every one of the five is saved and restored);
* a memory cgroup for the workload (cgroup v2 ``memory.max`` where the v2
  hierarchy has the memory controller, else the v1 ``memory.limit_in_bytes``
  in a child of this process's own v1 memory cgroup);
* a private debugfs mount (a temporary mount point; ``/sys/kernel/debug`` is
  used as is when zswap's directory is already visible there).

Teardown runs in reverse order on success, on errors, on Ctrl-C and SIGTERM
(turned into KeyboardInterrupt for the duration), and from ``atexit``; a
state file in ``/run`` records what was changed, so a run that was killed
outright is cleaned up by the next one (:func:`recover_stale`).  An
exclusive ``flock`` keeps two zmem runs from sharing zswap.  When swap is
already configured or zswap is already enabled, somebody else owns them:
the run is skipped with that reason rather than disturbing them.

The workload child (:func:`_child_main`, ``python -c``) joins the cgroup,
writes the process's pages into an anonymous mapping (``MADV_NOHUGEPAGE``:
4 KiB pages as in zmem), reports, and waits; the parent then lowers the
cgroup limit to the child's overhead plus the budget, which makes the
kernel reclaim the pages that do not fit (the fill's swap-out), and lets
the child replay :func:`zmem._swapsim.access_chunks`, touching one byte per
read and stamping the page's version into its first four bytes per write,
exactly what zmem's driver generates.  Counters: ``/proc/vmstat``
(``zswpin``, ``zswpout``, ``zswpwb``, ``pswpin``, ``pswpout``), the
debugfs files, the cgroup's ``memory.stat``, the child's major faults; a
thread samples ``pool_total_size`` and ``stored_pages`` for the ratio over
time.  Time per fault = (access loop time - accesses x the same loop's cost
on resident memory) / major faults.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PAGE_SIZE = 4096
ZSWAP_PARAMS = Path("/sys/module/zswap/parameters")
PARAM_NAMES = ("enabled", "compressor", "max_pool_percent", "accept_threshold_percent",
               "shrinker_enabled")
LOCK_PATH = Path("/run/lock/zmem-kzswap.lock")
STATE_PATH = Path("/run/zmem-kzswap.state.json")
VMSTAT_FIELDS = ("zswpin", "zswpout", "zswpwb", "pswpin", "pswpout", "pgmajfault", "swap_ra",
                 "swap_ra_hit")
DEBUGFS_ZSWAP = ("pool_limit_hit", "reject_reclaim_fail", "reject_alloc_fail",
                 "reject_kmemcache_fail", "reject_compress_fail", "reject_compress_poor",
                 "decompress_fail", "written_back_pages", "pool_total_size", "stored_pages",
                 "stored_incompressible_pages")

__all__ = ["KernelSwapSetup", "format_kernel", "kernel_zswap_available", "recover_stale",
           "run_kernel_zswap"]


class KernelZswapUnavailable(RuntimeError):
    """This machine (or this moment) does not allow the kernel run; the message says why."""


# ----------------------------------------------------------------------
# small helpers


def _read(path: Path | str) -> str:
    with open(path) as f:
        return f.read().strip()


def _write(path: Path | str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _run(*cmd: str) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if p.returncode:
        raise OSError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout.strip()


def _vmstat() -> dict[str, int]:
    out = {}
    with open("/proc/vmstat") as f:
        for line in f:
            k, v = line.split()
            if k in VMSTAT_FIELDS:
                out[k] = int(v)
    return out


def _swaps_in_use() -> list[str]:
    with open("/proc/swaps") as f:
        return [line.split()[0] for line in f.read().splitlines()[1:] if line.strip()]


def _mounts() -> list[tuple[str, str, str, str]]:
    with open("/proc/self/mounts") as f:
        return [tuple(line.split()[:4]) for line in f]  # type: ignore[misc]


def _memory_cgroup_base() -> tuple[str, Path] | None:
    """("v2", dir) or ("v1", dir): where to create the workload's memory cgroup."""
    v1 = v2 = None
    for _dev, mnt, fstype, opts in _mounts():
        if fstype == "cgroup2":
            try:
                if "memory" in _read(Path(mnt) / "cgroup.controllers").split():
                    v2 = Path(mnt)
            except OSError:
                pass
        elif fstype == "cgroup" and "memory" in opts.split(","):
            v1 = Path(mnt)
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _id, ctrls, path = line.rstrip("\n").split(":", 2)
            own[ctrls] = path
    if v2 is not None:
        rel = own.get("", "/").lstrip("/")
        base = v2 / rel if rel else v2
        # a v2 child needs the memory controller enabled in its parent's subtree_control
        try:
            if "memory" in _read(base / "cgroup.subtree_control").split():
                return "v2", base
        except OSError:
            pass
        return "v2", v2
    if v1 is not None:
        rel = next((p for c, p in own.items() if "memory" in c.split(",")), "/").lstrip("/")
        return "v1", (v1 / rel if rel else v1)
    return None


def _debugfs_zswap() -> Path | None:
    p = Path("/sys/kernel/debug/zswap")
    return p if p.is_dir() else None


def kernel_zswap_available() -> tuple[bool, str]:
    """(True, "") if this process can run the kernel side now; else (False, why)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "not running as root"
    if not ZSWAP_PARAMS.is_dir():
        return False, "zswap not built in (/sys/module/zswap/parameters missing)"
    if not os.access(ZSWAP_PARAMS / "enabled", os.W_OK):
        return False, "zswap parameters not writable (read-only /sys?)"
    for tool in ("losetup", "mkswap", "swapon", "swapoff", "mount", "umount"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found"
    if not os.path.exists("/dev/loop-control"):
        return False, "no loop device support (/dev/loop-control missing)"
    if _memory_cgroup_base() is None:
        return False, "no memory cgroup (neither cgroup v2 with memory nor a v1 memory mount)"
    if "debugfs" not in _read("/proc/filesystems"):
        return False, "debugfs not supported by this kernel"
    stale = _stale_state()
    if stale is not None:
        return True, ""  # a dead zmem run's leftovers: the next setup undoes them first
    swaps = _swaps_in_use()
    if swaps:
        return False, f"swap already configured by someone else ({', '.join(swaps)}); not touching it"
    try:
        if _read(ZSWAP_PARAMS / "enabled") == "Y":
            return False, "zswap already enabled by someone else; not touching it"
    except OSError as exc:
        return False, f"cannot read zswap parameters: {exc}"
    return True, ""


def _stale_state() -> dict | None:
    """The state file of a zmem run whose process is gone, if there is one."""
    try:
        state = json.loads(STATE_PATH.read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("pid")
    if not pid or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
        return None  # alive: a live run (the lock decides)
    except ProcessLookupError:
        return state
    except PermissionError:
        return None


# ----------------------------------------------------------------------
# setup and teardown


class KernelSwapSetup:
    """Swap on a loop device, zswap enabled with the given parameters, a memory cgroup, debugfs.

    A context manager; ``close()`` undoes everything it did, in reverse
    order, and is safe to call twice.  ``swap_bytes`` is the swap size.
    """

    def __init__(self, swap_bytes: int, *, compressor: str = "lzo", max_pool_percent: int = 1,
                 accept_threshold_percent: int | None = None, shrinker_enabled: bool | None = None,
                 swap_dir: str = "/var/tmp") -> None:
        ok, why = kernel_zswap_available()
        if not ok:
            raise KernelZswapUnavailable(why)
        self._undo: list[tuple[str, object]] = []
        self._closed = False
        self._lock_fd = -1
        self.state: dict = {"pid": os.getpid(), "params": {}, "swap_file": None, "loop": None,
                            "cgroup": None, "debugfs_mount": None}
        self.notes: list[str] = []
        atexit.register(self.close)
        try:
            self._take_lock()
            errors = recover_stale(locked=True)
            if errors:
                raise KernelZswapUnavailable("could not undo a dead run's changes: " + "; ".join(errors))
            ok, why = kernel_zswap_available()
            if not ok:
                raise KernelZswapUnavailable(why)
            self._setup(swap_bytes, compressor, max_pool_percent, accept_threshold_percent,
                        shrinker_enabled, swap_dir)
        except BaseException:
            self.close()
            raise

    # -- lock and state file

    def _take_lock(self) -> None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise KernelZswapUnavailable("another zmem kernel-zswap run holds "
                                             f"{LOCK_PATH}") from None
            raise
        self._lock_fd = fd

    def _save_state(self) -> None:
        tmp = STATE_PATH.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, STATE_PATH)

    # -- setup

    def _setup(self, swap_bytes, compressor, pct, accept, shrinker, swap_dir) -> None:
        # zswap parameters: all saved before any is changed
        for name in PARAM_NAMES:
            self.state["params"][name] = _read(ZSWAP_PARAMS / name)
        self._save_state()
        self._undo.append(("params", None))
        # a scratch directory (the workload's base pages)
        self.workdir = tempfile.mkdtemp(prefix="zmem-kzswap-")
        self.state["workdir"] = self.workdir
        self._save_state()
        self._undo.append(("workdir", self.workdir))
        # swap file on a loop device (direct I/O)
        fd, path = tempfile.mkstemp(prefix="zmem-kswap-", suffix=".img", dir=swap_dir)
        self.state["swap_file"] = path
        self._save_state()
        self._undo.append(("swap_file", path))
        try:
            os.posix_fallocate(fd, 0, swap_bytes)
        finally:
            os.close(fd)
        try:
            loop = _run("losetup", "--find", "--show", "--direct-io=on", path)
        except OSError:
            for dev in _loops_of(path):  # a half-done setup may have left one attached
                _run("losetup", "-d", dev)
            loop = _run("losetup", "--find", "--show", path)
            self.notes.append("loop device without direct I/O (the backing file refused it)")
        self.state["loop"] = loop
        self._save_state()
        self._undo.append(("loop", loop))
        _run("mkswap", loop)
        _run("swapon", loop)
        self.state["swapon"] = loop
        self._save_state()
        self._undo.append(("swapon", loop))
        # zswap
        if compressor and self.state["params"]["compressor"] != compressor:
            _write(ZSWAP_PARAMS / "compressor", compressor)
        _write(ZSWAP_PARAMS / "max_pool_percent", str(pct))
        if accept is not None:
            _write(ZSWAP_PARAMS / "accept_threshold_percent", str(accept))
        if shrinker is not None:
            _write(ZSWAP_PARAMS / "shrinker_enabled", "Y" if shrinker else "N")
        _write(ZSWAP_PARAMS / "enabled", "Y")
        self.params = {n: _read(ZSWAP_PARAMS / n) for n in PARAM_NAMES}
        if self.params["compressor"] != compressor:
            self.notes.append(f"kernel compressor is {self.params['compressor']}, not {compressor}")
        # debugfs
        zdir = _debugfs_zswap()
        if zdir is None:
            mnt = tempfile.mkdtemp(prefix="zmem-debugfs-")
            self._undo.append(("rmdir", mnt))
            _run("mount", "-t", "debugfs", "debugfs", mnt)
            self.state["debugfs_mount"] = mnt
            self._save_state()
            self._undo.append(("umount", mnt))
            zdir = Path(mnt) / "zswap"
            if not zdir.is_dir():
                raise KernelZswapUnavailable("debugfs has no zswap directory even with zswap enabled")
        self.debugfs = zdir
        # memory cgroup
        kind, base = _memory_cgroup_base()  # type: ignore[misc]
        cg = Path(tempfile.mkdtemp(prefix="zmem-", dir=base))  # mkdir in cgroupfs makes a cgroup
        self.state["cgroup"] = str(cg)
        self._save_state()
        self._undo.append(("cgroup", str(cg)))
        self.cgroup = cg
        self.cgroup_kind = kind

    # -- cgroup controls

    def cgroup_usage(self) -> int:
        f = "memory.current" if self.cgroup_kind == "v2" else "memory.usage_in_bytes"
        return int(_read(self.cgroup / f))

    def reset_limit(self) -> None:
        """No limit (as a new cgroup)."""
        if self.cgroup_kind == "v2":
            _write(self.cgroup / "memory.max", "max")
        else:
            _write(self.cgroup / "memory.limit_in_bytes", "-1")

    def set_limit(self, nbytes: int) -> None:
        f = "memory.max" if self.cgroup_kind == "v2" else "memory.limit_in_bytes"
        for attempt in range(8):
            try:
                _write(self.cgroup / f, str(nbytes))
                return
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.EINTR) or attempt == 7:
                    raise
                time.sleep(0.2)

    def memory_stat(self) -> dict[str, int]:
        out = {}
        for line in _read(self.cgroup / "memory.stat").splitlines():
            k, _, v = line.partition(" ")
            if v.strip().lstrip("-").isdigit():
                out[k] = int(v)
        return out

    def debugfs_values(self) -> dict[str, int]:
        out = {}
        for name in DEBUGFS_ZSWAP:
            try:
                out[name] = int(_read(self.debugfs / name))
            except (OSError, ValueError):
                pass
        return out

    # -- teardown

    def close(self) -> None:
        """Undo everything, last change first; errors are collected in ``notes``, never raised."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        errors = _undo_all(self._undo, self.state)
        self.notes += errors
        if not errors:
            with contextlib.suppress(OSError):
                STATE_PATH.unlink()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _loops_of(path: str) -> list[str]:
    """Loop devices backed by ``path``."""
    try:
        out = _run("losetup", "-j", path)
    except OSError:
        return []
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


def _kill_cgroup(cg: Path) -> None:
    for _ in range(50):
        try:
            pids = [int(x) for x in _read(cg / "cgroup.procs").split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _undo_all(undo: list[tuple[str, object]], state: dict) -> list[str]:
    errors = []
    for what, arg in reversed(undo):
        try:
            if what == "cgroup":
                cg = Path(str(arg))
                _kill_cgroup(cg)
                for attempt in range(50):
                    try:
                        os.rmdir(cg)
                        break
                    except FileNotFoundError:
                        break
                    except OSError as exc:
                        if exc.errno != errno.EBUSY or attempt == 49:
                            raise
                        time.sleep(0.1)
            elif what == "umount":
                _run("umount", str(arg))
            elif what == "rmdir":
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(str(arg))
            elif what == "swapon":
                if str(arg) in _swaps_in_use():
                    _run("swapoff", str(arg))
            elif what == "loop":
                # detach what is still backed by our file (never a device reused since)
                for dev in _loops_of(str(state.get("swap_file") or "")) if state.get("swap_file") else ():
                    _run("losetup", "-d", dev)
            elif what == "workdir":
                shutil.rmtree(str(arg), ignore_errors=True)
            elif what == "swap_file":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(arg))
            elif what == "params":
                saved = state.get("params", {})
                # disable first, so that restoring the compressor creates no pool
                if "enabled" in saved:
                    _write(ZSWAP_PARAMS / "enabled", saved["enabled"])
                for name in PARAM_NAMES:
                    if name != "enabled" and name in saved and _read(ZSWAP_PARAMS / name) != saved[name]:
                        _write(ZSWAP_PARAMS / name, saved[name])
        except Exception as exc:  # noqa: BLE001 - keep undoing the rest
            errors.append(f"cleanup of {what} {arg or ''} failed: {exc}")
    return errors


def recover_stale(locked: bool = False) -> list[str]:
    """Undo a previous run that died without cleaning up (its state file, its pid gone)."""
    if not STATE_PATH.exists():
        return []
    try:
        state = json.loads(STATE_PATH.read_text())
    except (OSError, ValueError):
        return ["unreadable state file " + str(STATE_PATH)]
    pid = state.get("pid")
    if pid and pid != os.getpid():
        try:
            os.kill(pid, 0)
            if not locked:
                return [f"run {pid} is still alive"]
            # we hold the lock, so that process is not a live run any more
        except ProcessLookupError:
            pass
    undo: list[tuple[str, object]] = [("params", None)]
    if state.get("workdir"):
        undo.append(("workdir", state["workdir"]))
    if state.get("swap_file"):
        undo.append(("swap_file", state["swap_file"]))
    if state.get("loop"):
        undo.append(("loop", state["loop"]))
    if state.get("swapon"):
        undo.append(("swapon", state["swapon"]))
    if state.get("debugfs_mount"):
        undo.append(("rmdir", state["debugfs_mount"]))
        undo.append(("umount", state["debugfs_mount"]))
    if state.get("cgroup"):
        undo.append(("cgroup", state["cgroup"]))
    errors = _undo_all(undo, state)
    if not errors:
        with contextlib.suppress(OSError):
            STATE_PATH.unlink()
    return errors


@contextlib.contextmanager
def _signals_as_interrupt():
    """SIGTERM and SIGHUP raise KeyboardInterrupt while the kernel side is set up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------
# the workload child


_CHILD = "import sys; from zmem._kzswap import _child_main; sys.exit(_child_main(sys.argv[1:]))"


def _child_main(argv: list[str]) -> int:
    """The workload process: join the cgroup, fill, then replay the accesses on command."""
    import gc
    import mmap
    import resource
    import struct
    from array import array

    cg_procs, base_path, npages_s, accesses_s, zipf_s, hot_s, wf_s, seed_s = argv
    _write(cg_procs, str(os.getpid()))
    from ._swapsim import access_chunks

    N, A, seed = int(npages_s), int(accesses_s), int(seed_s)
    zipf, wf = float(zipf_s), float(wf_s)
    hot = tuple(float(x) for x in hot_s.split(":")) if hot_s != "-" else None
    out = sys.stdout

    def say(*words) -> None:
        out.write(" ".join(str(w) for w in words) + "\n")
        out.flush()

    def wait(expect: str) -> list[str]:
        line = sys.stdin.readline().split()
        if not line or line[0] != expect:
            raise SystemExit(f"child: expected {expect!r}, got {line!r}")
        return line[1:]

    # everything the access phase allocates is made before "filled", so that the
    # parent's overhead measurement (usage - N pages) includes it
    version = array("I", [0]) * N
    pack_into = struct.Struct("<I").pack_into
    chunks = access_chunks(N, A, zipf=zipf, write_fraction=wf, seed=seed, hot=hot)
    t = time.perf_counter_ns()
    first = next(chunks, None)
    gen_ns = time.perf_counter_ns() - t
    small = mmap.mmap(-1, 256 * PAGE_SIZE)
    small.write(b"\1" * (256 * PAGE_SIZE))
    sver = array("I", [0]) * 256

    buf = mmap.mmap(-1, N * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(AttributeError, OSError):
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    t0 = time.perf_counter_ns()
    fd = os.open(base_path, os.O_RDONLY)
    C = os.fstat(fd).st_size // PAGE_SIZE
    for i in range(N):
        buf[i * PAGE_SIZE:(i + 1) * PAGE_SIZE] = os.pread(fd, PAGE_SIZE, (i % C) * PAGE_SIZE)
    gc.collect()
    say("filled", time.perf_counter_ns() - t0)
    wait("go")

    def loop(b, pl, wl, ver, mask) -> int:
        s = 0
        for p, w in zip(pl, wl):
            p &= mask
            off = p << 12
            if w:
                v = ver[p] + 1
                ver[p] = v
                pack_into(b, off, v)
            else:
                s += b[off]
        return s

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    loop_ns = 0
    chunk = first
    while chunk is not None:
        t = time.perf_counter_ns()
        loop(buf, chunk[0], chunk[1], version, -1)
        t1 = time.perf_counter_ns()
        loop_ns += t1 - t
        chunk = next(chunks, None)
        gen_ns += time.perf_counter_ns() - t1
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    # the same loop on resident memory: the per-access cost without faults
    n0 = 0
    base_ns = 0
    if first is not None:
        loop(small, first[0], first[1], sver, 255)  # warm
        for _ in range(3):
            t = time.perf_counter_ns()
            loop(small, first[0], first[1], sver, 255)
            dt = time.perf_counter_ns() - t
            base_ns = dt if not n0 else min(base_ns, dt)
            n0 = len(first[0])
    say("done", loop_ns, gen_ns, r1.ru_majflt - r0.ru_majflt, r1.ru_minflt - r0.ru_minflt, base_ns, n0)
    (k_s,) = wait("verify")
    k = int(k_s)
    step = max(1, N // k) if k else N + 1
    checked = bad = 0
    for i in range(0, N, step):
        want = os.pread(fd, PAGE_SIZE, (i % C) * PAGE_SIZE)
        v = version[i]
        if v:
            want = v.to_bytes(4, "little") + want[4:]
        checked += 1
        if buf[i * PAGE_SIZE:(i + 1) * PAGE_SIZE] != want:
            bad += 1
    os.close(fd)
    say("verified", checked, bad)
    wait("exit")
    return 0


class _Child:
    def __init__(self, argv: list[str], timeout: float) -> None:
        self.timeout = timeout
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        env = dict(os.environ)
        env.pop("ZMEM_DEBUG", None)
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, env=env)

    def expect(self, word: str, timeout: float | None = None) -> list[str]:
        out = self.proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout or self.timeout)
        if not ready:
            raise TimeoutError(f"kernel workload child: no {word!r} within {timeout or self.timeout:.0f} s")
        line = out.readline().decode().split()
        if not line or line[0] != word:
            self.err.seek(0)
            tail = self.err.read().decode(errors="replace")[-1500:]
            raise RuntimeError(f"kernel workload child: expected {word!r}, got {line!r} "
                               f"(exit {self.proc.poll()}): {tail}")
        return line[1:]

    def send(self, *words) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((" ".join(str(w) for w in words) + "\n").encode())
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send("exit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in (self.proc.stdin, self.proc.stdout):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self.err.close()


class _Sampler(threading.Thread):
    """Samples the pool's size and stored pages every ``period`` seconds."""

    def __init__(self, setup: KernelSwapSetup, period: float = 0.2) -> None:
        super().__init__(daemon=True, name="kzswap-sampler")
        self.setup = setup
        self.period = period
        self.phase = "fill"
        self.rows: list[tuple[str, float, int, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        d = self.setup.debugfs
        while not self._halt.is_set():
            try:
                size = int(_read(d / "pool_total_size"))
                stored = int(_read(d / "stored_pages"))
                self.rows.append((self.phase, time.monotonic(), size // PAGE_SIZE, stored))
            except (OSError, ValueError):
                pass
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def add(self, phase: str, d: dict) -> None:
        """A sample from a debugfs snapshot (phase boundaries)."""
        self.rows.append((phase, time.monotonic(), d.get("pool_total_size", 0) // PAGE_SIZE,
                          d.get("stored_pages", 0)))

    def samples(self) -> list[list[float]]:
        """As zmem's: x in [-1, 0] over the fill's reclaim, [0, 1] over the access phase."""
        out = []
        for phase, lo in (("fill", -1.0), ("run", 0.0)):
            rows = sorted((r for r in self.rows if r[0] == phase), key=lambda r: r[1])
            if not rows:
                continue
            t0, t1 = rows[0][1], rows[-1][1]
            span = (t1 - t0) or 1.0
            for _, t, pages, stored in rows:
                out.append([lo + (t - t0) / span, pages, stored,
                            round(stored / pages, 4) if pages else 0.0])
        return out


def _delta(a: dict, b: dict) -> dict:
    return {k: b[k] - a.get(k, 0) for k in b}


def _run_child(setup: KernelSwapSetup, base_path: str, npages: int, budget: int, accesses: int,
               zipf: float, hot, write_fraction: float, seed: int, verify: int,
               progress: bool) -> dict:
    timeout = 120 + npages * 50e-6 + accesses * 300e-6
    procs = setup.cgroup / "cgroup.procs"
    child = _Child([str(procs), base_path, str(npages), str(accesses), repr(zipf),
                    f"{hot[0]}:{hot[1]}" if hot else "-", repr(write_fraction), str(seed)], timeout)
    sampler = _Sampler(setup)
    res: dict = {}
    setup.reset_limit()
    try:
        (fill_ns,) = child.expect("filled")
        usage = setup.cgroup_usage()
        overhead = usage - npages * PAGE_SIZE
        limit = overhead + budget * PAGE_SIZE
        res.update(fill_seconds=int(fill_ns) / 1e9, usage_after_fill=usage, overhead_bytes=overhead,
                   limit_bytes=limit)
        v0, d0 = _vmstat(), setup.debugfs_values()
        sampler.add("fill", d0)
        sampler.start()
        if progress:
            print(f"kernel: reclaiming {npages - budget} pages into swap (limit {limit >> 20} MiB)",
                  file=sys.stderr, flush=True)
        t = time.perf_counter()
        setup.set_limit(limit)
        res["fill_reclaim_seconds"] = time.perf_counter() - t
        v1, d1 = _vmstat(), setup.debugfs_values()
        sampler.add("fill", d1)
        sampler.phase = "run"
        sampler.add("run", d1)
        if progress:
            print(f"kernel: {accesses} accesses", file=sys.stderr, flush=True)
        child.send("go")
        loop_ns, gen_ns, majflt, minflt, base_ns, n0 = (int(x) for x in child.expect("done"))
        v2, d2 = _vmstat(), setup.debugfs_values()
        sampler.stop()
        sampler.add("run", d2)
        res["memory_stat"] = setup.memory_stat()
        setup.reset_limit()  # verification reads pages back: no reclaim needed for that
        child.send("verify", verify)
        checked, bad = (int(x) for x in child.expect("verified"))
        child.send("exit")
        fill_v, run_v = _delta(v0, v1), _delta(v1, v2)
        fill_d, run_d = _delta(d0, d1), _delta(d1, d2)
        per_access = base_ns / n0 if n0 else 0.0
        swapins = run_v["zswpin"] + run_v["pswpin"]
        fault_ns = loop_ns - per_access * accesses
        res.update(
            vmstat_fill=fill_v, vmstat_run=run_v, debugfs_fill=fill_d, debugfs_run=run_d,
            debugfs_end=d2, loop_seconds=loop_ns / 1e9, gen_seconds=gen_ns / 1e9,
            majflt=majflt, minflt=minflt, per_access_ns=per_access,
            swapins=swapins, hits=run_v["zswpin"], store_reads=run_v["pswpin"],
            hit_rate=run_v["zswpin"] / swapins if swapins else 0.0,
            written_back=fill_v["zswpwb"] + run_v["zswpwb"], written_back_run=run_v["zswpwb"],
            written_back_fill=fill_v["zswpwb"],
            pool_limit_hit=fill_d.get("pool_limit_hit", 0) + run_d.get("pool_limit_hit", 0),
            fault_us=fault_ns / majflt / 1e3 if majflt else 0.0,
            us_per_swapin=fault_ns / swapins / 1e3 if swapins else 0.0,
            verified_pages=checked, verify_mismatches=bad)
        pool = d2.get("pool_total_size", 0) // PAGE_SIZE
        res["pool_pages_final"] = pool
        res["ratio_final"] = d2.get("stored_pages", 0) / pool if pool else 0.0
        samples = sampler.samples()
        res["samples"] = samples
        run_r = [s[3] for s in samples if s[0] >= 0 and s[1] > 0]
        res["ratio_min"] = min(run_r) if run_r else 0.0
        pool_fill = d1.get("pool_total_size", 0) // PAGE_SIZE
        res["ratio_after_fill"] = d1.get("stored_pages", 0) / pool_fill if pool_fill else 0.0
        res["pool_pages_max"] = max((s[1] for s in samples), default=0)
        return res
    finally:
        if sampler.is_alive():
            sampler.stop()
        child.close()


def run_kernel_zswap(pages, *, budget: int, accesses: int, zipf: float = 1.0, hot=None,
                     write_fraction: float = 0.1, seed: int = 1, pool_percent: int = 1,
                     compressor: str = "lzo", plain: bool = False, verify: int = 4096,
                     swap_dir: str = "/var/tmp", progress: bool = False) -> dict:
    """The swapsim workload on the kernel's zswap; ``{"skipped": why}`` where it cannot run.

    ``pages`` is a :class:`zmem._swapsim.PageSet`.  With ``plain`` the
    workload runs a second time with zswap disabled (plain swap on the same
    loop device), for the kernel's own zswap-vs-swap ratio.
    """
    ok, why = kernel_zswap_available()
    if not ok:
        return {"skipped": why}
    npages = pages.npages
    swapped = npages - budget
    swap_bytes = max(64 << 20, int(2.5 * swapped) * PAGE_SIZE + (16 << 20))
    out: dict = {"pages": npages, "budget": budget, "accesses": accesses, "zipf": zipf,
                 "write_fraction": write_fraction, "seed": seed, "swap_bytes": swap_bytes}
    with _signals_as_interrupt():
        try:
            setup = KernelSwapSetup(swap_bytes, compressor=compressor, max_pool_percent=pool_percent,
                                    swap_dir=swap_dir)
        except KernelZswapUnavailable as exc:
            return {"skipped": str(exc)}
        with setup:
            base_path = os.path.join(setup.workdir, "base.pages")
            with open(base_path, "wb") as f:
                f.write(pages.base)
            out["params"] = dict(setup.params)
            out["cgroup_kind"] = setup.cgroup_kind
            out["totalram_bytes"] = _meminfo("MemTotal")
            out["max_pages"] = out["totalram_bytes"] // PAGE_SIZE * pool_percent // 100
            out["page_cluster"] = int(_read("/proc/sys/vm/page-cluster"))
            with contextlib.suppress(OSError):
                out["vma_ra_enabled"] = _read("/sys/kernel/mm/swap/vma_ra_enabled")
            out.update(_run_child(setup, base_path, npages, budget, accesses, zipf, hot,
                                  write_fraction, seed, verify, progress))
            if plain:
                _write(ZSWAP_PARAMS / "enabled", "N")
                # the first run's entries went with its process; same cgroup, limit reset
                out["plain"] = {k: v for k, v in _run_child(
                    setup, base_path, npages, budget, accesses, zipf, hot, write_fraction,
                    seed, verify, progress).items() if k != "samples"}
        out["notes"] = list(setup.notes)
        out["cleaned_up"] = not any("cleanup" in n for n in setup.notes)
    return out


def _meminfo(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {key} in /proc/meminfo")


# ----------------------------------------------------------------------
# report


def format_kernel(k: dict, ref: dict | None = None, results=()) -> str:
    """The kernel's counters beside zmem's runs of the same workload."""
    if "skipped" in k:
        return f"kernel zswap: skipped: {k['skipped']}\n"
    cols = [("kernel zswap", k)]
    for key in ("kernel", "compact", "zspage"):
        r = next((r for r in results if r.get("config") == key), None)
        if r is not None:
            cols.append((f"zmem {key}", r))
    plain_k = k.get("plain")
    lines = [(f"kernel zswap side by side ({k['params']['compressor']}, max_pool_percent "
              f"{k['params']['max_pool_percent']} of {k['totalram_bytes'] >> 20} MiB = "
              f"{k['max_pages']} pages; memory cgroup {k['cgroup_kind']}, limit "
              f"{k['limit_bytes'] >> 20} MiB = budget + {k['overhead_bytes'] >> 20} MiB child "
              f"overhead; page-cluster {k.get('page_cluster')}):")]
    w = 16
    lines.append(f"{'':34}" + "".join(f"{name:>{w}}" for name, _ in cols))

    def row(label, fn, fmt="{:>16}"):
        cells = []
        for name, r in cols:
            try:
                v = fn(r, name == "kernel zswap")
            except (KeyError, TypeError, ZeroDivisionError):
                v = "-"
            cells.append(fmt.format(v) if not isinstance(v, str) else f"{v:>{w}}")
        lines.append(f"{label:34}" + "".join(cells))

    row("faults (kernel: major faults)", lambda r, kk: r["majflt"] if kk else r["faults"])
    row("swap-ins (zswpin + pswpin)", lambda r, kk: r["swapins"] if kk else r["faults"])
    row("  from zswap (zswpin)", lambda r, kk: r["hits"])
    row("  from disk (pswpin)", lambda r, kk: r["store_reads"])
    row("hit rate %", lambda r, kk: f"{100 * r['hit_rate']:.1f}")
    # the kernel's pswpout counts writeback too: rejected stores = pswpout - zswpwb
    row("swap-outs during the run", lambda r, kk: (
        r["vmstat_run"]["zswpout"] + r["vmstat_run"]["pswpout"] - r["vmstat_run"]["zswpwb"])
        if kk else r["swap_outs"])
    row("  into zswap (zswpout)", lambda r, kk: r["vmstat_run"]["zswpout"] if kk
        else r["run_deltas"]["zswpout"])
    row("  rejected, to disk: run", lambda r, kk: (r["vmstat_run"]["pswpout"] - r["vmstat_run"]["zswpwb"])
        if kk else r["rejected"])
    row("rejected, to disk: fill", lambda r, kk: (r["vmstat_fill"]["pswpout"] - r["vmstat_fill"]["zswpwb"])
        if kk else r["fill_rejected"])
    row("written back: fill", lambda r, kk: r["written_back_fill"])
    row("written back: run", lambda r, kk: r["written_back_run"])
    row("pool_limit_hit", lambda r, kk: r["pool_limit_hit"])
    row("pool pages at the end", lambda r, kk: r["pool_pages_final"])
    row("pool ratio after fill", lambda r, kk: f"{r['ratio_after_fill']:.2f}")
    row("pool ratio final", lambda r, kk: f"{r['ratio_final']:.2f}")
    row("pool ratio min (run)", lambda r, kk: f"{r['ratio_min']:.2f}")
    row("µs per fault", lambda r, kk: f"{r['fault_us']:.1f}")
    lines.append(f"kernel: fill reclaim {k['fill_reclaim_seconds']:.1f} s, access loop "
                 f"{k['loop_seconds']:.1f} s ({k['per_access_ns']:.0f} ns/access without faults), "
                 f"{k['us_per_swapin']:.1f} µs per swap-in, swap readahead {k['vmstat_run'].get('swap_ra', 0)} "
                 f"pages ({k['vmstat_run'].get('swap_ra_hit', 0)} hit); verified "
                 f"{k['verified_pages']} pages, {k['verify_mismatches']} wrong")
    d = k.get("debugfs_end", {})
    lines.append("kernel debugfs at the end: " + ", ".join(f"{n}={d[n]}" for n in DEBUGFS_ZSWAP if n in d))
    ms = k.get("memory_stat", {})
    keys = [x for x in ("rss", "anon", "swap", "pgmajfault", "zswap", "zswapped", "zswpin", "zswpout",
                        "zswpwb") if x in ms]
    if keys:
        lines.append("cgroup memory.stat: " + ", ".join(f"{x}={ms[x]}" for x in keys))
    if plain_k:
        sp = plain_k["fault_us"] / k["fault_us"] if k["fault_us"] else 0.0
        lines.append(f"kernel plain swap (zswap off, same workload): {plain_k['fault_us']:.1f} µs per "
                     f"fault, {plain_k['majflt']} faults; kernel zswap is {sp:.2f}x faster")
    if k["max_pages"] * 2 > k["pages"] - k["budget"]:
        lines.append(f"note: the pool limit ({k['max_pages']} pages) is at least half the pages swapped "
                     f"out ({k['pages'] - k['budget']}): at ~3x compression it cannot bite; the kernel's "
                     "limit is a whole percent of totalram, so use more --pages")
    for n in k.get("notes", []):
        lines.append("note: " + n)
    return "\n".join(lines) + "\n"
