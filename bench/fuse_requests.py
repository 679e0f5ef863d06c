#!/usr/bin/env python3
"""FUSE requests per operation on a Wormhole mount, counted from libfuse's debug log
(WORMHOLE_FUSE_DEBUG=1 makes the daemon log every request it receives).

Each operation runs on --files files (or 4 KiB writes) in turn; the requests logged during
that phase, divided by the count, are its cost. Prints one table per configuration: a pod
alone (the kernel's write-back cache on) and pod a of a two-pod network (write-back off,
as with any peer), and for comparison a bindfs mount of a local directory (libfuse's debug
log too: a passthrough FUSE file system, which sends what FUSE alone needs). The figures go into docs/benchmarks.md ("FUSE requests per operation").

Usage: bench/fuse_requests.py [--binary build/wormhole] [--files 200]
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "mount"))
import harness  # noqa: E402
from harness import Cluster, Pod, wait_for  # noqa: E402

OPCODE = re.compile(r"opcode: (\w+) \(\d+\)")


def drop_kernel_caches():
    """Forget the kernel's dentries, inodes and pages (root only), as a cold access finds."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


class RequestLog:
    """Counts the opcodes the daemon logged since the last call."""

    def __init__(self, path):
        self.path = path
        self.offset = os.path.getsize(path)

    def take(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
            self.offset = f.tell()
        return collections.Counter(OPCODE.findall(text))


def phases(mnt, n, tarball):
    """(name, per, function) of each measured operation; `per` is what the count divides by."""
    d = os.path.join(mnt, "req")
    data = os.urandom(4096)

    def names():
        return [os.path.join(d, f"f{i:05d}") for i in range(n)]

    def create():
        for p in names():
            os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))

    def write_4k():
        fd = os.open(os.path.join(d, "f00000"), os.O_WRONLY)
        for i in range(n):
            os.pwrite(fd, data, i * 4096)
        os.close(fd)

    def create_write_close():  # bench's "create": a new 4 KiB file
        for p in names():
            fd = os.open(p + "w", os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(fd, data)
            os.close(fd)

    def stat_warm():
        for p in names():
            os.stat(p + "w")

    def stat_cold():
        for p in names():
            os.stat(p + "w")

    def read_cold():  # bench's "small read"
        for p in names():
            fd = os.open(p + "w", os.O_RDONLY)
            os.read(fd, 8192)
            os.close(fd)

    def list_long():  # ls -l: the listing, then every entry's attributes
        for entry in os.scandir(d):
            entry.stat(follow_symlinks=False)

    def unlink():
        for p in names():
            os.unlink(p)
            os.unlink(p + "w")

    def do_untar():
        os.makedirs(os.path.join(mnt, "tree"))
        subprocess.run(["tar", "xf", tarball, "-C", os.path.join(mnt, "tree")], check=True)

    tar_entries = len(subprocess.run(["tar", "tf", tarball], check=True, capture_output=True,
                                     text=True).stdout.splitlines())
    os.makedirs(d)
    return [
        ("create (open O_CREAT + close)", n, create, None),
        ("write 4 KiB (pwrite, file open)", n, write_4k, None),
        ("create + write 4 KiB + close", n, create_write_close, None),
        ("stat, cached", n, stat_warm, None),
        ("stat, cold", n, stat_cold, drop_kernel_caches),
        ("read 4 KiB file, cold (open, read, close)", n, read_cold, drop_kernel_caches),
        ("ls -l, cold, per entry", 2 * n, list_long, drop_kernel_caches),
        ("unlink", 2 * n, unlink, None),
        (f"untar, per entry ({tar_entries})", tar_entries, do_untar, None),
    ]


class Bindfs:
    """bindfs -f -d: a passthrough mount logging every request it receives."""

    def __init__(self, root):
        self.src, self.mnt = os.path.join(root, "src"), os.path.join(root, "mnt")
        os.makedirs(self.src)
        os.makedirs(self.mnt)
        self.log_path = os.path.join(root, "bindfs.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(["bindfs", "-f", "-d", self.src, self.mnt], stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.ismount(self.mnt) or self.proc.poll() is not None, what="bindfs mount")

    def cleanup(self):
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], check=False)
        self.proc.wait(timeout=30)


def measure(pod, n, tarball):
    rows = []
    log = RequestLog(pod.log_path)
    for name, per, fn, before in phases(pod.mnt, n, tarball):
        if before:
            before()
        log.take()
        fn()
        counts = log.take()
        rows.append((name, sum(counts.values()) / per,
                     ", ".join(f"{op} {c / per:.2f}" for op, c in counts.most_common() if c / per >= 0.005)))
    return rows


def print_rows(title, rows):
    print(f"\n{title}\n\n| operation | requests | by opcode |\n|---|---|---|")
    for name, total, detail in rows:
        print(f"| {name} | {total:.2f} | {detail} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="build/wormhole")
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    harness.BINARY = os.path.abspath(args.binary)
    os.environ["WORMHOLE_FUSE_DEBUG"] = "1"
    work = tempfile.mkdtemp(prefix="fuse-req-")
    tarball = os.path.join(work, "linux.tar")
    subprocess.run(["tar", "cf", tarball, "-C", "/usr/include", "linux"], check=True)

    os.makedirs(os.path.join(work, "one"))
    pod = Pod(root=os.path.join(work, "one"), name="one")
    try:
        pod.start()
        print_rows("One pod (write-back cache on)", measure(pod, args.files, tarball))
    finally:
        pod.cleanup()
    os.makedirs(os.path.join(work, "bindfs"))
    bindfs = Bindfs(os.path.join(work, "bindfs"))
    try:
        print_rows("bindfs (for comparison)", measure(bindfs, args.files, tarball))
    finally:
        bindfs.cleanup()
    net = Cluster(names=("a", "b"), redundancy=2, root_dir=work)
    try:
        net.start()
        for p in net.pods.values():
            wait_for(lambda: all(q["state"] == "alive" for q in p.status()["peers"]), what="peers alive")
        print_rows("Pod a of two (write-back cache off)", measure(net.pods["a"], args.files, tarball))
    finally:
        net.cleanup()
        subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
