#!/usr/bin/python3
"""fs_bench: traincache's file-system workloads beside native ext4, in one run.

Run it through tests/bench/run.sh (installs dependencies, builds). It starts a
traincache-server and a traincache-node (project:bench mounted) with every
folder under the work dir, so the traincache figures and the native baseline
use the same disk, then runs each workload on both and prints a table (and the
same as JSON). Optionally a third column: libfuse's passthrough_ll example
mounted over the native folder, the ceiling of the kernel's FUSE path here.

Needs root (mounts, drop_caches) and /dev/fuse. Nothing fails on speed: the
exit code is 0 when every workload ran (and read back the right bytes), 1 when
one failed, 2 on bad usage or too little free disk.

Every process it starts is stopped by its PID and every mount it made is
unmounted, on success, failure, Ctrl-C or SIGTERM; the big files go at the end
(--keep leaves them).
"""

import argparse
import dataclasses
import datetime
import json
import mmap
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
MB = 1e6  # Throughputs are printed in decimal MB/s, as dd and fio do.
BLOCK = 1 * MiB  # Size of each read() and write() of the streaming workloads.
PAGE = 4 * KiB
SCOPE = "project:bench"
# The node daemon's attr and entry timeout without the change feed
# (FilesystemOptions); while the feed is followed they are cached for
# --metadata-ttl-ms (30 s by default) instead.
ATTR_TTL_S = 1.0
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSTHROUGH_LL = "/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c"
MARKER = ".fs_bench-work-dir"  # A work dir we may wipe holds this file.

# Execution order: w6 first, because the checkpoint it writes is the file the
# read workloads read (one 4 GiB write through the mount less). Rows are
# printed in workload-number order.
WORKLOADS = ["w6", "w1", "w1b", "w2", "w3", "w5", "w4", "w7", "w8", "w9"]


@dataclasses.dataclass(frozen=True)
class Sizes:
    big: int  # w1, w1b, w2, w3, w5, w6: one file
    multi_files: int  # w4: readers, one file each
    multi_size: int
    small_files: int  # w7: creates and stats
    readdir_entries: int  # w7: one folder
    tree_files: int  # w8: tar extract
    fio_seconds: int  # w5
    latency_files: int  # w9
    # Time limits of the traincache side of w7's creates and w8's tar, so the
    # whole run stays bounded while creates are slow (see README): past it the
    # rate so far is reported (creates), or the limit as a lower bound (tar).
    create_limit_s: float
    tar_limit_s: float


DEFAULT_SIZES = Sizes(4 * GiB, 8, 512 * MiB, 10_000, 100_000, 20_000, 20, 2_000, 60, 120)
QUICK_SIZES = Sizes(256 * MiB, 8, 32 * MiB, 1_000, 5_000, 1_000, 5, 300, 15, 30)


class BenchError(Exception):
    """A workload could not run or read back wrong bytes."""


# --------------------------------------------------------------------------
# File contents


class Content:
    """Deterministic bytes for a file: a random 16 MiB pattern repeated, with
    the first 8 bytes of every 4 KiB page replaced by (seed << 40 | page
    number). So no two pages of any file are equal (no chunk of a file is
    deduplicated against another), and a reader checks cheaply that every page
    it got is the right one: zeros, stale or misplaced data fail."""

    PATTERN_BYTES = 16 * MiB

    def __init__(self, seed):
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.pattern = rng.integers(0, 1 << 63, size=self.PATTERN_BYTES // 8, dtype=np.uint64)

    def block(self, offset, length):
        """The bytes at [offset, offset + length) as a uint8 array; offset is
        page-aligned and length at most PATTERN_BYTES."""
        assert offset % PAGE == 0 and length <= self.PATTERN_BYTES
        pages = -(-length // PAGE)
        start, count = (offset % self.PATTERN_BYTES) // 8, pages * PAGE // 8
        if start + count <= len(self.pattern):
            words = self.pattern[start : start + count].copy()
        else:
            words = np.take(self.pattern, np.arange(start, start + count), mode="wrap")
        words[:: PAGE // 8] = self._headers(offset, pages)
        return words.view(np.uint8)[:length]

    def check_headers(self, data, offset):
        """Whether every page header in `data` (read at page-aligned `offset`)
        is this file's."""
        words = np.frombuffer(data, dtype=np.uint64, count=len(data) // 8)
        heads = words[:: PAGE // 8]
        return np.array_equal(heads, self._headers(offset, len(heads)))

    def _headers(self, offset, pages):
        first = offset // PAGE
        return (np.uint64(self.seed) << np.uint64(40)) | np.arange(
            first, first + pages, dtype=np.uint64
        )


def write_file(path, content, size, fsync=False):
    """Writes `size` bytes of `content` in 1 MiB writes, then fsync (if asked)
    and close. Returns the seconds from open until close returned."""
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset in range(0, size, BLOCK):
            data = memoryview(content.block(offset, min(BLOCK, size - offset)))
            while data:
                data = data[os.write(fd, data) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def read_file(path, content, size, verify="headers"):
    """Reads the whole file in 1 MiB reads; returns the seconds from open to
    close. verify="headers" checks every page header (cheap, done in the timed
    loop, on native too); "full" compares every byte with what was written."""
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    offset = 0
    try:
        while True:
            n = _read_full(fd, view)
            if n == 0:
                break
            _verify(content, view[:n], offset, verify, path)
            offset += n
    finally:
        os.close(fd)
    seconds = time.perf_counter() - start
    if offset != size:
        raise BenchError(f"{path}: read {offset} bytes, expected {size}")
    return seconds


def mmap_read_file(path, content, size):
    """Maps the file and copies it out in 1 MiB slices into one buffer, as a
    loader of safetensors weights does (every page faulted in, headers
    checked). Returns the seconds from open to close."""
    dst = bytearray(BLOCK)
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapped:
            with memoryview(mapped) as whole:
                for offset in range(0, size, BLOCK):
                    n = min(BLOCK, size - offset)
                    dst[:n] = whole[offset : offset + n]
                    _verify(content, memoryview(dst)[:n], offset, "headers", path)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def _read_full(fd, view):
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got


def _verify(content, data, offset, how, path):
    if how == "headers":
        ok = content.check_headers(data, offset)
    else:
        # As uint64 words: numpy compares those ~10x faster than bytes.
        dtype = np.uint64 if len(data) % 8 == 0 else np.uint8
        ok = np.array_equal(np.frombuffer(data, dtype=dtype),
                            content.block(offset, len(data)).view(dtype))
    if not ok:
        raise BenchError(f"{path}: wrong bytes at offset {offset} ({how} check)")


# --------------------------------------------------------------------------
# Processes and mounts


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def mounts_under(root):
    """Mount points at or below `root`, deepest first (from mountinfo)."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == root or point.startswith(root + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def is_mounted(point):
    return point in mounts_under(point)


def unmount(point):
    """Unmounts one of our mounts; lazily if it is busy or its daemon died."""
    if is_mounted(point):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


class Daemons:
    """Every long-running process this run starts. Each is stopped by its
    PID (SIGTERM, then SIGKILL after a grace period), in reverse start order;
    their PIDs and command lines are also kept in <work>/pids.json, so a run
    killed with SIGKILL is cleaned up by the next one."""

    def __init__(self, work):
        self.pid_file = os.path.join(work, "pids.json")
        self.procs = []  # (name, Popen, mountpoint or None)

    def start(self, name, argv, log_path, mountpoint=None, env=None):
        log = open(log_path, "ab")
        # A session of its own: Ctrl-C reaches only this script, which then
        # stops the daemons in order (node before server).
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **env} if env else None)
        log.close()
        self.procs.append((name, proc, mountpoint))
        self._save()
        return proc

    def stop(self, proc, grace_s=120):
        for i, (name, p, mountpoint) in enumerate(self.procs):
            if p is proc:
                del self.procs[i]
                break
        else:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                print(f"  {name} (pid {proc.pid}) ignored SIGTERM for {grace_s} s: SIGKILL")
                proc.kill()
                proc.wait()
        if mountpoint:
            unmount(mountpoint)
        self._save()

    def stop_all(self):
        for _, proc, _ in reversed(list(self.procs)):
            self.stop(proc)

    def _save(self):
        with open(self.pid_file, "w") as f:
            json.dump([{"pid": p.pid, "cmdline": p.args} for _, p, _ in self.procs], f)

    @staticmethod
    def stop_leftovers(work):
        """Stops processes a killed earlier run left, by the PIDs it wrote,
        if that PID still runs the same command line."""
        path = os.path.join(work, "pids.json")
        try:
            with open(path) as f:
                left = json.load(f)
        except (OSError, ValueError):
            return
        for entry in reversed(left):
            try:
                with open(f"/proc/{entry['pid']}/cmdline", "rb") as f:
                    cmdline = f.read().split(b"\0")[:-1]
            except OSError:
                continue
            if [c.decode() for c in cmdline] == entry["cmdline"]:
                print(f"stopping pid {entry['pid']} left by an earlier run")
                os.kill(entry["pid"], signal.SIGTERM)
                for _ in range(600):
                    if not os.path.exists(f"/proc/{entry['pid']}"):
                        break
                    time.sleep(0.1)
                else:
                    os.kill(entry["pid"], signal.SIGKILL)
        os.remove(path)


def wait_for(what, ready, proc, log_path, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = ""
    with open(log_path, errors="replace") as f:
        tail = "".join(f.readlines()[-15:])
    raise BenchError(f"{what} did not come up (exit code {proc.poll()}); log {log_path}:\n{tail}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A traincache-server and its node daemons, all on folders under work."""

    def __init__(self, bench):
        self.b = bench
        self.work = bench.work
        self.address = f"unix:{self.work}/server.sock"
        self.token = os.path.join(self.work, "token")
        self.server = None
        self.nodes = {}  # name -> (proc, mountpoint, admin socket)
        self.metrics_port = None

    def bin(self, name):
        return os.path.join(self.b.build_dir, "src", "cli", name)

    def cli(self, *args, node=None):
        argv = [self.bin("traincache"), "--server", self.address, "--token-file", self.token]
        if node:
            argv += ["--node-socket", self.nodes[node][2]]
        return subprocess.run(argv + list(args), capture_output=True, text=True)

    def start_server(self):
        with open(self.token, "w") as f:
            f.write(os.urandom(24).hex())
        os.chmod(self.token, 0o600)
        log = os.path.join(self.work, "server.log")
        argv = [self.bin("traincache-server"), "--data-dir", f"{self.work}/server",
                "--listen", self.address, "--token-file", self.token, "--log-level", "warn"]
        self.server = self.b.daemons.start("traincache-server", argv, log)
        wait_for("traincache-server", lambda: self.cli("ping").returncode == 0, self.server, log)

    def start_node(self, name, metrics=False):
        root = f"{self.work}/{name}"
        mountpoint = f"{root}/mnt/project/bench"
        sock = f"{root}/admin.sock"
        log = f"{self.work}/{name}.log"
        argv = [self.bin("traincache-node"), "--server", self.address, "--token-file", self.token,
                "--mount-root", f"{root}/mnt", "--tier-dir", f"{root}/tier",
                "--staging-dir", f"{root}/staging", "--admin-socket", sock, "--scope", SCOPE]
        if metrics:
            self.metrics_port = free_port()
            argv += ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        argv += self.b.args.node_arg
        proc = self.b.daemons.start(f"traincache-node {name}", argv, log, mountpoint)
        self.nodes[name] = (proc, mountpoint, sock)
        wait_for(f"traincache-node {name}",
                 lambda: is_mounted(mountpoint) and os.path.isdir(mountpoint), proc, log)
        return mountpoint

    def stop_node(self, name):
        proc, _, _ = self.nodes.pop(name)
        self.b.daemons.stop(proc)
        shutil.rmtree(f"{self.work}/{name}", ignore_errors=True)

    def node_stats(self, name):
        """The summary lines of `traincache stats` (the counters follow)."""
        out = self.cli("stats", node=name)
        if out.returncode != 0:
            return f"(stats failed: {out.stderr.strip()})"
        return out.stdout.split("counters:")[0].rstrip()

    def ops_since(self, before):
        """'op n, ...' of the FUSE requests node1 answered since `before`."""
        after = self.fuse_op_counts()
        asked = {op: n - before.get(op, 0) for op, n in after.items() if n > before.get(op, 0)}
        return ", ".join(f"{op} {n:,}" for op, n in sorted(asked.items())) or "none"

    def fuse_op_counts(self):
        """FUSE requests node1 answered so far, by op (from /metrics)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        counts = {}
        prefix = 'traincache_node_fuse_op_duration_seconds_count{op="'
        with urllib.request.urlopen(url, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(prefix):
                    op, value = line[len(prefix) :].split('"}')
                    counts[op] = int(float(value))
        return counts


# traincache-node's allocator settings (src/common/malloc_tuning.cc), given
# to passthrough_ll through glibc's tunables. Without them glibc hands out
# each 128 KiB read buffer as a fresh mmap, whose page faults are expensive on
# a VM: the example then reads ~75 MB/s here, a floor rather than a ceiling.
CEILING_ENV = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=67108864:"
                                 "glibc.malloc.trim_threshold=1073741824:"
                                 "glibc.malloc.top_pad=67108864"}


class Ceiling:
    """libfuse's passthrough_ll example (-o cache=always) mounted over the
    native folder: the kernel FUSE path with a daemon doing nothing but
    pread/pwrite on the native files (as shipped, but with CEILING_ENV)."""

    def __init__(self, bench):
        self.b = bench
        self.mountpoint = f"{bench.work}/ceiling"
        self.proc = None
        self.error = None

    def path(self, native_path):
        """The ceiling mount's path for a file under the native folder."""
        if self.proc is None and self.error is None:
            self._mount()
        if self.error:
            return None
        return self.mountpoint + native_path[len(self.b.native) :]

    def _mount(self):
        binary = f"{self.b.work}/passthrough_ll"
        cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"],
                                capture_output=True, text=True)
        if not os.path.exists(PASSTHROUGH_LL) or cflags.returncode != 0:
            self.error = f"no {PASSTHROUGH_LL} or no fuse3 pkg-config: ceiling skipped"
            print("  " + self.error)
            return
        # passthrough_helpers.h sits next to it in the examples folder.
        cc = subprocess.run(["gcc", "-O2", "-Wall", PASSTHROUGH_LL, "-o", binary]
                            + cflags.stdout.split(), capture_output=True, text=True)
        if cc.returncode != 0:
            self.error = "cannot compile passthrough_ll: ceiling skipped"
            print(f"  {self.error}\n{cc.stderr}")
            return
        os.makedirs(self.mountpoint, exist_ok=True)
        log = f"{self.b.work}/ceiling.log"
        # -f: foreground, so the PID we hold is the daemon's.
        argv = [binary, "-f", "-o", f"source={self.b.native},cache=always", self.mountpoint]
        self.proc = self.b.daemons.start("passthrough_ll", argv, log, self.mountpoint,
                                         env=CEILING_ENV)
        wait_for("passthrough_ll", lambda: is_mounted(self.mountpoint), self.proc, log)


# --------------------------------------------------------------------------
# Results


@dataclasses.dataclass
class Target:
    kind: str  # "ratio": traincache/native >= value; "abs": traincache >= value;
    #            "time": traincache time <= value x native time
    value: float
    text: str


@dataclasses.dataclass
class Row:
    id: str
    workload: str
    unit: str
    native: float
    traincache: float
    higher_is_better: bool = True
    ceiling: float = None
    target: Target = None
    note: str = ""
    # The traincache figure is a bound (a time limit hit): the truth is worse.
    bound: bool = False

    @property
    def ratio(self):
        """traincache's speed as a fraction of native's (1.0: as fast)."""
        if not self.native or not self.traincache:
            return None
        if self.higher_is_better:
            return self.traincache / self.native
        return self.native / self.traincache

    @property
    def met(self):
        t = self.target
        if t is None or self.ratio is None:
            return None
        if t.kind == "ratio":
            return self.ratio >= t.value
        if t.kind == "abs":
            return self.traincache >= t.value
        if self.traincache <= t.value * self.native:
            return None if self.bound else True  # A bound under the target says nothing.
        return False

    def to_json(self):
        d = dataclasses.asdict(self)
        d["target"] = self.target.text if self.target else None
        d["ratio"] = self.ratio
        d["met"] = self.met
        return d


def fmt_value(value, unit):
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "µs":
        return f"{value:,.0f} µs" if value >= 100 else f"{value:.1f} µs"
    return f"{value:,.0f} {unit}"


def fmt_ratio(ratio):
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.3f}"


def order_key(row_id):
    """Workload-number order; rows of one workload keep their order (stable sort)."""
    return WORKLOADS_PRINT_ORDER.index(row_id.split(".")[0])


WORKLOADS_PRINT_ORDER = ["w1", "w1b", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9"]


def print_table(rows):
    header = ["workload", "native", "traincache", "ratio", "fuse ceiling", "target", "result"]
    lines = []
    for r in sorted(rows, key=lambda r: order_key(r.id)):
        result = {True: "met", False: "MISSED", None: ""}[r.met]
        bound = ("> " if not r.higher_is_better else "< ") if r.bound else ""
        lines.append([r.workload, fmt_value(r.native, r.unit),
                      bound + fmt_value(r.traincache, r.unit),
                      (("< " if r.bound else "") + fmt_ratio(r.ratio)) if r.ratio is not None else "-",
                      fmt_value(r.ceiling, r.unit) if r.ceiling is not None else "",
                      r.target.text if r.target else "", result])
    widths = [max(len(x[i]) for x in lines + [header]) for i in range(len(header))]
    right = {1, 2, 3, 4}

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    print(line(header))
    print("|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                         for i, w in enumerate(widths)) + "|")
    for cells in lines:
        print(line(cells))


# --------------------------------------------------------------------------
# The benchmark


def mbps(size, seconds):
    return size / seconds / MB


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class Bench:
    def __init__(self, args):
        self.args = args
        self.sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
        self.work = os.path.abspath(args.work_dir)
        self.build_dir = os.path.abspath(args.build_dir)
        self.native = f"{self.work}/native"
        self.selected = args.only
        self.daemons = Daemons(self.work)
        self.cluster = Cluster(self)
        self.ceiling = Ceiling(self) if not args.no_ceiling else None
        self.rows = []
        self.info = []  # (workload id, text)
        self.stats = {}
        self.mnt = None  # node1's mount of project:bench
        self.prepared = False  # The work dir is ours to wipe.
        # What exists already (a later workload reuses an earlier one's files).
        self.big = Content(1)
        self.have_big = False
        self.big_in_tier = False
        self.multi = [Content(100 + i) for i in range(self.sizes.multi_files)]
        self.multi_in_tier = False

    # ---- setup and teardown

    def prepare_work_dir(self):
        os.makedirs(self.work, exist_ok=True)
        marker = os.path.join(self.work, MARKER)
        if os.listdir(self.work) and not os.path.exists(marker):
            raise UsageError(f"{self.work} is not empty and is not an fs_bench work dir "
                             f"(no {MARKER}); pick another --work-dir")
        Daemons.stop_leftovers(self.work)
        for point in mounts_under(self.work):
            print(f"unmounting {point}, left by an earlier run")
            unmount(point)
        open(marker, "w").close()
        self.prepared = True
        self.remove_data(keep_results=False)

    def remove_data(self, keep_results=True):
        """Everything in the work dir but the marker (and, unless asked, the
        logs and results.json). Only in a work dir prepare_work_dir accepted."""
        if not self.prepared:
            return
        for name in os.listdir(self.work):
            path = os.path.join(self.work, name)
            if name == MARKER or (keep_results and (name.endswith(".log") or name == "results.json")):
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                if mounts_under(path):
                    continue  # Never delete through a live mount.
                shutil.rmtree(path)
            else:
                os.remove(path)

    def check_free_space(self):
        s = self.sizes
        sel = set(self.selected)
        tree = sum(size for _, size in tree_spec(s.tree_files)) if "w8" in sel else 0
        # Kept until the end: native copy, server chunks, node1 tier image.
        need = 0
        if sel & {"w1", "w1b", "w2", "w3", "w5", "w6"}:
            need += 3 * s.big
        if "w4" in sel:
            need += 3 * s.multi_files * s.multi_size
        need += 4 * tree  # tarball, native copy, server chunks, staging
        # Transient, one at a time: write staging, w6's unsynced copy, node2's tier.
        need += s.big if sel & {"w1", "w1b", "w2", "w3", "w5", "w6"} else s.multi_size
        need += 2 * GiB  # metadata, logs, small files, slack
        st = os.statvfs(self.work)
        free = st.f_bavail * st.f_frsize
        print(f"free space in {self.work}: {free / GiB:.1f} GiB, needed: {need / GiB:.1f} GiB")
        if free < need:
            raise UsageError(f"not enough free space in {self.work}: {free / GiB:.1f} GiB free, "
                             f"{need / GiB:.1f} GiB needed (try --quick or another --work-dir)")

    def start(self):
        os.makedirs(self.native)
        os.makedirs(f"{self.work}/server")
        # Big folders of empty files, for w7's listing and w9's latencies:
        # written into the server's store before it starts (creates through
        # the mount are one at a time in a folder: minutes), plain creates on
        # native. Neither is timed.
        fills = {"w7": ("readdir", self.sizes.readdir_entries),
                 "w9": ("lat", self.sizes.latency_files)}
        for wid, (name, entries) in fills.items():
            if wid not in self.selected:
                continue
            fill = subprocess.run(
                [os.path.join(self.build_dir, "tests", "bench", "bench_fill_dir"),
                 "--data-dir", f"{self.work}/server", "--scope", SCOPE, "--dir", name,
                 "--entries", str(entries)],
                capture_output=True, text=True)
            if fill.returncode != 0:
                raise BenchError(f"bench_fill_dir failed: {fill.stderr.strip()}")
            print("  " + fill.stdout.strip())
            os.mkdir(f"{self.native}/{name}")
            for i in range(entries):
                os.close(os.open(f"{self.native}/{name}/{entry_name(i)}",
                                 os.O_CREAT | os.O_WRONLY, 0o644))
        self.cluster.start_server()
        self.mnt = self.cluster.start_node("node1", metrics=True)
        print(f"  traincache-server pid {self.cluster.server.pid}, traincache-node pid "
              f"{self.cluster.nodes['node1'][0].pid}, {SCOPE} mounted at {self.mnt}")

    def stop(self):
        if "node1" in self.cluster.nodes:
            self.stats["node1"] = self.cluster.node_stats("node1")
        self.daemons.stop_all()
        for point in mounts_under(self.work):
            unmount(point)

    # ---- helpers

    def note(self, wid, text):
        self.info.append((wid, text))
        print(f"  {text}")

    def add(self, row):
        self.rows.append(row)
        print(f"  {row.workload}: native {fmt_value(row.native, row.unit)}, traincache "
              f"{fmt_value(row.traincache, row.unit)}"
              + (f", fuse ceiling {fmt_value(row.ceiling, row.unit)}" if row.ceiling else ""))

    def compare(self, fn, rel="", ceiling=True):
        """The runner of a native-vs-traincache pair: fn(path) on the native
        folder, then on node1's mount, then (if asked and there is one) on
        the ceiling mount, `rel` being the same path under each. Returns
        (native, traincache, ceiling or None), whatever fn returns."""
        native = fn(self.native + rel)
        tc = fn(self.mnt + rel)
        ceiling_root = self.ceiling.path(self.native) if ceiling and self.ceiling else None
        return native, tc, fn(ceiling_root + rel) if ceiling_root else None

    def ensure_big(self):
        """The big file, natively and on traincache (written through the mount)."""
        if self.have_big:
            return
        size = self.sizes.big
        print(f"  writing big.bin ({size / GiB:g} GiB) natively and through the mount")
        write_file(f"{self.native}/big.bin", self.big, size)
        write_file(f"{self.mnt}/big.bin", self.big, size)
        self.have_big = True

    def ensure_big_in_tier(self):
        """A file written through a mount is not in the writer's tier: one
        read through the mount fetches it there. That read compares every
        byte with what was written, so the tier holds the right content."""
        self.ensure_big()
        if self.big_in_tier:
            return
        drop_caches()
        seconds = read_file(f"{self.mnt}/big.bin", self.big, self.sizes.big, verify="full")
        self.note("w1", f"first read of big.bin on node1 (tier miss, fills the tier, every byte "
                        f"compared): {mbps(self.sizes.big, seconds):,.0f} MB/s")
        self.big_in_tier = True

    def ensure_multi_in_tier(self):
        if self.multi_in_tier:
            return
        s = self.sizes
        print(f"  writing {s.multi_files} x {s.multi_size / MiB:g} MiB natively and through the "
              f"mount, then reading them once through the mount (fills node1's tier)")
        # One file after the other where the layout on disk may matter (the
        # native files, the tier images); 8 writers at once through the mount
        # only to save time (the writer's tier is not filled).
        for i in range(s.multi_files):
            write_file(f"{self.native}/multi-{i}.bin", self.multi[i], s.multi_size)
        run_threads([lambda i=i: write_file(f"{self.mnt}/multi-{i}.bin", self.multi[i],
                                            s.multi_size)
                     for i in range(s.multi_files)])
        drop_caches()
        for i in range(s.multi_files):
            read_file(f"{self.mnt}/multi-{i}.bin", self.multi[i], s.multi_size, verify="full")
        self.multi_in_tier = True

    # ---- workloads: one function each

    def w1(self):
        """Sequential read of the big file, in node1's tier, page cache cold."""
        self.ensure_big_in_tier()
        size = self.sizes.big

        def cold(path):
            drop_caches()
            return mbps(size, read_file(path, self.big, size))

        native, tc, ceiling = self.compare(cold, "/big.bin")
        self.add(Row("w1", f"1 seq read {size / GiB:g} GiB, tier hit, cold", "MB/s",
                     native, tc, ceiling=ceiling, target=Target("ratio", 0.9, "≥ 0.90 × native")))

    def w1b(self):
        """The same file through mmap, every page copied out, cold."""
        self.ensure_big_in_tier()
        size = self.sizes.big

        def cold(path):
            drop_caches()
            return mbps(size, mmap_read_file(path, self.big, size))

        native, tc, ceiling = self.compare(cold, "/big.bin")
        self.add(Row("w1b", f"1b mmap read {size / GiB:g} GiB, tier hit, cold", "MB/s",
                     native, tc, ceiling=ceiling, target=Target("ratio", 0.8, "≥ 0.80 × native")))

    def w2(self):
        """The same file read again: a first read warms the page cache, then
        the best of 3 reads (on a shared machine another job's drop_caches
        can land in one)."""
        self.ensure_big_in_tier()
        size = self.sizes.big

        def warm(path):
            before = self.cluster.fuse_op_counts() if path.startswith(self.mnt) else None
            read_file(path, self.big, size)
            best = max(mbps(size, read_file(path, self.big, size)) for _ in range(3))
            if before is not None:
                self.note("w2", f"FUSE requests node1 answered during the traincache warm reads "
                                f"(1 warming + 3 timed): {self.cluster.ops_since(before)}")
            return best

        native, tc, ceiling = self.compare(warm, "/big.bin")
        self.add(Row("w2", f"2 seq re-read {size / GiB:g} GiB, page cache warm", "MB/s",
                     native, tc, ceiling=ceiling, target=Target("ratio", 0.9, "≥ 0.90 × native")))

    def w3(self):
        """The big file read on a second node daemon with an empty tier, which
        fetches every chunk from the server over the loopback Unix socket."""
        self.ensure_big()
        size = self.sizes.big
        mnt2 = self.cluster.start_node("node2")
        try:
            drop_caches()
            tc = mbps(size, read_file(f"{mnt2}/big.bin", self.big, size))
            self.stats["node2 (after w3)"] = self.cluster.node_stats("node2")
        finally:
            self.cluster.stop_node("node2")
        drop_caches()
        native = mbps(size, read_file(f"{self.native}/big.bin", self.big, size))
        self.add(Row("w3", f"3 seq read {size / GiB:g} GiB, tier miss (server)", "MB/s",
                     native, tc, target=Target("abs", 1000, "≥ 1,000 MB/s")))

    def w4(self):
        """Several readers at once, each its own file, in the tier, cold."""
        self.ensure_multi_in_tier()
        s = self.sizes
        total = s.multi_files * s.multi_size

        def cold(root):
            drop_caches()
            start = time.perf_counter()
            run_threads([lambda i=i: read_file(f"{root}/multi-{i}.bin", self.multi[i],
                                               s.multi_size)
                         for i in range(s.multi_files)])
            return mbps(total, time.perf_counter() - start)

        native, tc, ceiling = self.compare(cold)
        self.add(Row("w4", f"4 {s.multi_files} readers x {s.multi_size / MiB:g} MiB, tier hit, "
                           f"cold", "MB/s", native, tc, ceiling=ceiling))

    def w5(self):
        """fio random 4 KiB reads of the big file (in the tier), cold."""
        self.ensure_big_in_tier()
        seconds = self.sizes.fio_seconds

        def fio(path):
            drop_caches()
            out = subprocess.run(
                ["fio", "--name=randread", f"--filename={path.replace(':', chr(92) + ':')}",
                 "--thread",  # One process: killed whole if the run is interrupted.
                 "--readonly", "--ioengine=libaio", "--direct=0", "--iodepth=16",
                 "--rw=randread", "--bs=4k", "--invalidate=1", "--randrepeat=1",
                 f"--runtime={seconds}", "--time_based", "--output-format=json"],
                capture_output=True, text=True)
            if out.returncode != 0:
                raise BenchError(f"fio on {path} failed: {out.stderr.strip()}")
            return json.loads(out.stdout)["jobs"][0]["read"]["iops"]

        native, tc, ceiling = self.compare(fio, "/big.bin")
        self.add(Row("w5", f"5 fio randread 4 KiB, QD16, {seconds} s, tier hit, cold", "IOPS",
                     native, tc, ceiling=ceiling, target=Target("ratio", 0.8, "≥ 0.80 × native")))

    def w6(self):
        """A checkpoint written sequentially, timed until close returns (on
        traincache: committed to the server). Native: write + fsync + close;
        write + close without fsync is printed as well. The file written is
        big.bin, which the read workloads then read."""
        size = self.sizes.big
        content, name = self.big, "big.bin"
        if self.have_big:  # Same bytes again would upload nothing: new ones.
            content, name = Content(2), "ckpt.bin"
        nofsync = f"{self.native}/ckpt-nofsync.bin"
        os.sync()
        no_fsync_s = write_file(nofsync, content, size)
        os.remove(nofsync)
        os.sync()
        native = mbps(size, write_file(f"{self.native}/{name}", content, size, fsync=True))
        os.sync()
        tc = mbps(size, write_file(f"{self.mnt}/{name}", content, size))
        self.note("w6", f"native write + close without fsync: {mbps(size, no_fsync_s):,.0f} MB/s "
                        f"(page cache only; the target compares with write + fsync + close)")
        self.add(Row("w6", f"6 checkpoint write {size / GiB:g} GiB (until committed)", "MB/s",
                     native, tc, target=Target("ratio", 0.6, "≥ 0.60 × native")))
        if name == "big.bin":
            self.have_big = True
        else:
            os.remove(f"{self.native}/{name}")
            os.remove(f"{self.mnt}/{name}")

    def w7(self):
        """Small files: creates (open, write 4 KiB, close) in one folder, then
        stat of each (warm: a first untimed pass looks them up); then the
        listing of a folder of many entries, cold."""
        s = self.sizes
        content = Content(3)
        blocks = [content.block(i * PAGE, PAGE).tobytes() for i in range(s.small_files)]
        created = {}

        def creates(root):
            limit_s = s.create_limit_s if root == self.mnt else None
            os.mkdir(f"{root}/small")
            start = time.perf_counter()
            for i, data in enumerate(blocks):
                fd = os.open(f"{root}/small/f{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, data)
                os.close(fd)
                if limit_s and time.perf_counter() - start > limit_s:
                    break
            created[root] = i + 1
            return created[root] / (time.perf_counter() - start)

        def stats(root):
            n = created.get(root, created[self.native])  # The ceiling shows native's files.
            paths = [f"{root}/small/f{i:06d}" for i in range(n)]
            for p in paths:
                os.stat(p)
            before = self.cluster.fuse_op_counts() if root == self.mnt else None
            start = time.perf_counter()
            for p in paths:
                if os.stat(p).st_size != PAGE:
                    raise BenchError(f"{p}: size is not {PAGE}")
            seconds = time.perf_counter() - start
            if before is not None:
                self.note("w7", f"FUSE requests node1 answered during the timed traincache stat "
                                f"pass ({n:,} stats, {seconds:.2f} s; entries and attrs are cached "
                                f"{ATTR_TTL_S:g} s, or --metadata-ttl-ms while the change feed is "
                                f"followed): {self.cluster.ops_since(before)}")
            return n / seconds

        native, tc, _ = self.compare(creates, ceiling=False)
        if created[self.mnt] < s.small_files:
            self.note("w7", f"traincache creates stopped at the {s.create_limit_s:g} s limit after "
                            f"{created[self.mnt]:,} of {s.small_files:,} files; the rate is over "
                            f"those (and the stats below too)")
        self.add(Row("w7.1", f"7 create+write 4 KiB+close, {s.small_files:,} files", "files/s",
                     native, tc, target=Target("abs", 5000, "≥ 5,000/s")))
        native, tc, ceiling = self.compare(stats)
        self.add(Row("w7.2", "7 stat of each of those files, warm", "stats/s", native, tc,
                     ceiling=ceiling, target=Target("abs", 50000, "≥ 50,000/s")))

        def listing(root):
            drop_caches()
            start = time.perf_counter()
            n = sum(1 for _ in os.scandir(f"{root}/readdir"))
            seconds = time.perf_counter() - start
            if n != s.readdir_entries:
                raise BenchError(f"{root}/readdir: {n} entries, expected {s.readdir_entries}")
            return n / seconds

        native, tc, ceiling = self.compare(listing)
        self.add(Row("w7.3", f"7 readdir of {s.readdir_entries:,} entries, cold", "entries/s",
                     native, tc, ceiling=ceiling))

    def w8(self):
        """tar -xf of a pip-cache-like tree (tarred once on native), then find
        over it, cold."""
        s = self.sizes
        spec = tree_spec(s.tree_files)
        tarball = f"{self.work}/tree.tar"
        make_tree(f"{self.work}/tree-src", spec)
        subprocess.run(["tar", "-cf", tarball, "-C", f"{self.work}/tree-src", "."], check=True)
        shutil.rmtree(f"{self.work}/tree-src")
        total = sum(size for _, size in spec)
        print(f"  tree: {len(spec):,} files, {total / MB:,.0f} MB, tarball {tarball}")

        def extract(root):
            """Seconds of tar -xf, or None past traincache's time limit."""
            limit_s = s.tar_limit_s if root == self.mnt else None
            os.mkdir(f"{root}/tree")
            drop_caches()
            start = time.perf_counter()
            try:
                subprocess.run(["tar", "-xf", tarball, "-C", f"{root}/tree"], check=True,
                               timeout=limit_s)  # On timeout run() kills tar and waits.
            except subprocess.TimeoutExpired:
                return None
            seconds = time.perf_counter() - start
            if root == self.native:
                # Also so that its writeback does not run into traincache's turn.
                os.sync()
                self.note("w8", f"native tar -xf then sync: {time.perf_counter() - start:.2f} s "
                                f"(the target compares with tar -xf alone)")
            return seconds

        def find(root):
            drop_caches()
            start = time.perf_counter()
            out = subprocess.run(["find", f"{root}/tree"], capture_output=True, check=True)
            seconds = time.perf_counter() - start
            return out.stdout.count(b"\n"), seconds

        native, tc, _ = self.compare(extract, ceiling=False)
        (native_entries, native_s), (tc_entries, tc_s), _ = self.compare(find, ceiling=False)
        if tc is None:
            files = sum(1 for _, _, names in os.walk(f"{self.mnt}/tree") for _ in names)
            self.note("w8", f"traincache tar -xf stopped at the {s.tar_limit_s:g} s limit with "
                            f"{files:,} of {len(spec):,} files out (whole tree at that pace: "
                            f"~{s.tar_limit_s * len(spec) / max(files, 1):,.0f} s); find ran over "
                            f"those {tc_entries:,} entries")
        elif tc_entries != native_entries:
            raise BenchError(f"find: {tc_entries} entries on traincache, {native_entries} native")
        self.add(Row("w8.1", f"8 tar -xf {len(spec):,} files ({total / MB:,.0f} MB)", "s",
                     native, tc or s.tar_limit_s, higher_is_better=False, bound=tc is None,
                     target=Target("time", 3, "≤ 3 × native time")))
        self.add(Row("w8.2", f"8 find over the tree ({native_entries:,} entries), cold",
                     "entries/s", native_entries / native_s, tc_entries / tc_s))

    def w9(self):
        """Latency of single metadata operations on empty files, from the
        caller (Python's os.stat/os.fstat/os.open: ~1 µs of interpreter in
        each). lookup = stat of a name the kernel has not looked up (page,
        dentry and inode caches dropped): on traincache a FUSE LOOKUP.
        getattr = fstat of an open fd 1.5 s later: a FUSE GETATTR once the
        1 s attr TTL expired (a stat by name would revalidate the expired
        dentry with a LOOKUP instead); with the change feed followed the
        kernel still holds the attributes and answers it itself. open+close = open(O_RDONLY) + close right after an
        untimed stat of the name (a fresh dentry): FUSE OPEN, FLUSH, RELEASE."""
        n = self.sizes.latency_files
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < n + 100:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))

        def timed(fn, items):
            lat = []
            for item in items:
                start = time.perf_counter_ns()
                fn(item)
                lat.append((time.perf_counter_ns() - start) / 1000)
            return lat

        def measure(root):
            paths = [f"{root}/lat/{entry_name(i)}" for i in range(n)]
            drop_caches()
            lookup = timed(os.stat, paths)
            fds = [os.open(p, os.O_RDONLY) for p in paths]
            time.sleep(ATTR_TTL_S + 0.5)
            try:
                getattr_ = timed(os.fstat, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            open_close = []
            for p in paths:
                os.stat(p)  # Untimed: a fresh dentry, so open does not revalidate it.
                open_close += timed(lambda p: os.close(os.open(p, os.O_RDONLY)), [p])
            return {"lookup": lookup, "getattr": getattr_, "open+close": open_close}

        native = measure(self.native)
        before = self.cluster.fuse_op_counts()
        tc = measure(self.mnt)
        self.note("w9", f"FUSE requests node1 answered for the traincache side ({n:,} files: "
                        f"stat; open, fstat after {ATTR_TTL_S + 0.5:g} s, close; stat then "
                        f"open+close): {self.cluster.ops_since(before)}")
        for op in ("lookup", "getattr", "open+close"):
            for p in (50, 99):
                self.add(Row(f"w9.{op}.p{p}", f"9 {op} p{p} ({n:,} files)", "µs",
                             percentile(native[op], p), percentile(tc[op], p),
                             higher_is_better=False))

    # ---- run

    def run(self):
        for wid in WORKLOADS:
            if wid not in self.selected:
                continue
            doc = getattr(self, wid).__doc__.split("\n")[0]
            print(f"\n[{wid}] {doc}")
            start = time.perf_counter()
            getattr(self, wid)()
            print(f"  ({time.perf_counter() - start:.0f} s)")


def entry_name(i):
    """Names bench_fill_dir gives (fill_dir.cc)."""
    return f"entry-{i:07d}"


def run_threads(fns):
    """Runs each fn in its own thread, all started together; re-raises the
    first error."""
    errors = []
    barrier = threading.Barrier(len(fns))

    def body(fn):
        try:
            barrier.wait()
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            errors.append(e)

    threads = [threading.Thread(target=body, args=(fn,), daemon=True) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def tree_spec(files):
    """A pip-cache-like tree, the same on every run: [(relative path, size)].
    Mostly small files (1-16 KiB: http cache entries, metadata), 5% of
    64-512 KiB (wheels of small packages), 0.1% of 2-8 MiB (large wheels),
    under http-v2/<h>/<h>/ and wheels/<hh>/<hh>/ folders."""
    rng = random.Random(20_000)
    spec = []
    for i in range(files):
        h = f"{rng.getrandbits(64):016x}"
        roll = rng.random()
        if roll < 0.001:
            path, size = f"wheels/{h[:2]}/{h[2:4]}/pkg{i}-1.0-py3-none-any.whl", rng.randint(2 * MiB, 8 * MiB)
        elif roll < 0.05:
            path, size = f"wheels/{h[:2]}/{h[2:4]}/pkg{i}-1.0-py3-none-any.whl", rng.randint(64 * KiB, 512 * KiB)
        else:
            path, size = f"http-v2/{h[0]}/{h[1]}/{h[2]}/{h}", rng.randint(1 * KiB, 16 * KiB)
        spec.append((path, size))
    return spec


def make_tree(root, spec):
    """Writes the tree: the files are consecutive page-aligned pieces of one
    Content stream, so no two files (and no two pages) are equal."""
    content = Content(5)
    offset = 0
    for path, size in spec:
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            for start in range(0, size, 8 * MiB):
                f.write(content.block(offset + start, min(8 * MiB, size - start)).tobytes())
        offset += -(-size // PAGE) * PAGE


def machine_info(work):
    def first(path, key):
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        return "?"

    df = subprocess.run(["df", "--output=source,fstype", work], capture_output=True,
                        text=True).stdout.splitlines()[-1].split()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host": platform.node(),
        "cpu": first("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "memory": first("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "disk": f"{df[0]} ({df[1]})",
        "load_average_at_start": os.getloadavg()[0],
    }


class UsageError(Exception):
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="tests/bench/run.sh",
        description="traincache file-system benchmark: each workload on a traincache mount and "
                    "on native ext4 on the same disk (README: Benchmarks).")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (256 MiB files, 1,000 small files, 5 s fio) for a fast check")
    p.add_argument("--only", default=",".join(WORKLOADS_PRINT_ORDER),
                   help="comma-separated workloads to run, e.g. w1,w5 (default: all: "
                        + ",".join(WORKLOADS_PRINT_ORDER) + ")")
    p.add_argument("--work-dir", default=os.path.join(REPO, "build", "bench-work"),
                   help="where the server, node and native files live (default build/bench-work)")
    p.add_argument("--build-dir", default=os.path.join(REPO, "build"),
                   help="the CMake build folder holding the programs (default build)")
    p.add_argument("--json", help="where to write the results (default <work-dir>/results.json)")
    p.add_argument("--node-arg", action="append", default=[], metavar="ARG",
                   help="extra traincache-node flag, repeatable (e.g. --node-arg=--log-level=warn)")
    p.add_argument("--no-ceiling", action="store_true",
                   help="skip the passthrough_ll 'fuse ceiling' column")
    p.add_argument("--keep", action="store_true", help="leave the data in the work dir")
    args = p.parse_args(argv)
    only = [w.strip() if w.strip().startswith("w") else "w" + w.strip()
            for w in args.only.split(",") if w.strip()]
    unknown = [w for w in only if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {', '.join(unknown)}; known: "
                + ",".join(WORKLOADS_PRINT_ORDER))
    args.only = only
    return args


def main(argv):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("fs_bench: needs root (FUSE mounts, drop_caches)", file=sys.stderr)
        return 2
    run_start = time.perf_counter()
    bench = Bench(args)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # Also when started with SIGINT ignored (&).
    code = 0
    try:
        bench.prepare_work_dir()
        machine = machine_info(bench.work)
        print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
        bench.check_free_space()
        bench.start()
        bench.run()
    except UsageError as e:
        print(f"fs_bench: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nfs_bench: interrupted; stopping daemons and unmounting", file=sys.stderr)
        code = 1
    except (BenchError, OSError, subprocess.CalledProcessError) as e:
        print(f"\nfs_bench: FAILED: {e}", file=sys.stderr)
        code = 1
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        bench.stop()
        if not args.keep:
            bench.remove_data()
    if not bench.rows:
        return code

    machine["load_average_at_end"] = os.getloadavg()[0]
    duration = time.perf_counter() - run_start
    print(f"\n## fs_bench results ({'quick' if args.quick else 'default'} sizes, "
          f"{duration:.0f} s)\n")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + "\n")
    print("ratio: traincache's speed as a fraction of native (1.00 = as fast; for times and "
          "latencies native/traincache). MB = 10^6 bytes.\n")
    print_table(bench.rows)
    if bench.info:
        print()
        for wid, text in bench.info:
            print(f"- {wid}: {text}")
    for name, text in bench.stats.items():
        print(f"\ntraincache stats, {name}:\n{text}")
    results = {
        "machine": machine,
        "sizes": dataclasses.asdict(bench.sizes),
        "quick": args.quick,
        "workloads": args.only,
        "node_args": args.node_arg,
        "duration_s": round(duration, 1),
        "complete": code == 0,
        "rows": [r.to_json() for r in sorted(bench.rows, key=lambda r: order_key(r.id))],
        "info": [{"workload": w, "text": t} for w, t in bench.info],
        "node_stats": bench.stats,
    }
    path = args.json or os.path.join(bench.work, "results.json")
    text = json.dumps(results, indent=2, ensure_ascii=False)
    with open(path, "w") as f:
        f.write(text + "\n")
    print(f"\nJSON (also in {path}):")
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
