"""Differential test: the same seeded random sequence of file-system operations runs on the
Wormhole mount and on a local temporary directory; every result (value or errno) and the
final trees must be identical. Reproduce a failure with --seed N (or WORMHOLE_SEED=N)."""
import errno
import hashlib
import os
import random
import shutil
import stat
import tempfile
import unittest

import harness
from harness import Pod, tree

NAMES = ["a", "b", "c", "dir1", "dir2", "x.txt"]
STEPS = int(os.environ.get("WORMHOLE_DIFF_STEPS", "2000"))


def outcome(fn, *args):
    try:
        r = fn(*args)
        return ("ok", r)
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


def rel_paths(rng, depth=3):
    parts = [rng.choice(NAMES) for _ in range(rng.randint(1, depth))]
    return os.path.join(*parts)


class Ops:
    """Operations with deterministic results, applied under one root."""

    def __init__(self, root):
        self.root = root

    def p(self, rel):
        return os.path.join(self.root, rel)

    def write(self, rel, offset, data, trunc):
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if trunc else 0)
        fd = os.open(self.p(rel), flags, 0o644)
        try:
            return os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def patch(self, rel, writes, sync):
        """Small writes at scattered offsets of one open file (a database's or a VM image's
        pattern: pieces inside large spans), then the hash of each patched range read back
        through the same handle."""
        fd = os.open(self.p(rel), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for offset, data in writes:
                os.pwrite(fd, data, offset)
                if sync:
                    os.fsync(fd)
            return [hashlib.sha256(os.pread(fd, len(data) + 100, max(0, offset - 50))).hexdigest()
                    for offset, data in writes]
        finally:
            os.close(fd)

    def read(self, rel, offset, size):
        fd = os.open(self.p(rel), os.O_RDONLY)
        try:
            return hashlib.sha256(os.pread(fd, size, offset)).hexdigest()
        finally:
            os.close(fd)

    def append(self, rel, data):
        fd = os.open(self.p(rel), os.O_WRONLY | os.O_APPEND)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)

    def mkdir(self, rel):
        return os.mkdir(self.p(rel), 0o755)

    def rmdir(self, rel):
        return os.rmdir(self.p(rel))

    def unlink(self, rel):
        return os.unlink(self.p(rel))

    def rename(self, a, b):
        return os.rename(self.p(a), self.p(b))

    def link(self, a, b):
        return os.link(self.p(a), self.p(b))

    def symlink(self, target, rel):
        return os.symlink(target, self.p(rel))

    def readlink(self, rel):
        return os.readlink(self.p(rel))

    def truncate(self, rel, size):
        return os.truncate(self.p(rel), size)

    def chmod(self, rel, mode):
        return os.chmod(self.p(rel), mode)

    def stat(self, rel):
        st = os.lstat(self.p(rel))
        size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
        return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), size,
                st.st_nlink if not stat.S_ISDIR(st.st_mode) else None)

    def listdir(self, rel):
        return sorted(os.listdir(self.p(rel)))

    def setxattr(self, rel, name, value):
        return os.setxattr(self.p(rel), name, value, follow_symlinks=False)

    def getxattr(self, rel, name):
        return os.getxattr(self.p(rel), name, follow_symlinks=False)


def random_op(rng):
    kind = rng.choices(
        ["write", "read", "append", "mkdir", "rmdir", "unlink", "rename", "link", "symlink", "readlink",
         "truncate", "chmod", "stat", "listdir", "setxattr", "getxattr", "patch"],
        weights=[14, 8, 4, 8, 4, 5, 8, 3, 3, 2, 4, 3, 8, 4, 2, 2, 5])[0]
    a, b = rel_paths(rng), rel_paths(rng)
    big = rng.random() < 0.1
    size = rng.randint(1, 300000 if big else 5000)
    if kind == "write":
        data = rng.randbytes(size)
        return kind, (a, rng.randint(0, 200000 if big else 8000), data, rng.random() < 0.3)
    if kind == "patch":
        # Random small writes into a file of up to 3 MiB: many spans, pieces inside them.
        writes = [(rng.randint(0, 3 << 20), rng.randbytes(rng.randint(1, 8192))) for _ in range(rng.randint(1, 8))]
        return kind, (a, writes, rng.random() < 0.2)
    if kind == "read":
        return kind, (a, rng.randint(0, 10000), rng.randint(0, 400000))
    if kind == "append":
        return kind, (a, rng.randbytes(size))
    if kind in ("mkdir", "rmdir", "unlink", "readlink", "stat", "listdir"):
        return kind, (a if kind != "listdir" or rng.random() < 0.8 else ".",)
    if kind in ("rename", "link"):
        return kind, (a, b)
    if kind == "symlink":
        return kind, (rng.choice(NAMES), a)
    if kind == "truncate":
        return kind, (a, rng.randint(0, 300000))
    if kind == "chmod":
        return kind, (a, rng.choice([0o600, 0o644, 0o755, 0o700]))
    if kind == "setxattr":
        return kind, (a, "user." + rng.choice(["k1", "k2"]), rng.randbytes(rng.randint(0, 50)))
    return kind, (a, "user." + rng.choice(["k1", "k2"]))




class DifferentialTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # WORMHOLE_DIFF_CHUNK: chunks larger than a 64 KiB block exercise pieces (ctest
        # mount_differential_pieces).
        cls.pod = Pod(chunk_size=os.environ.get("WORMHOLE_DIFF_CHUNK", "64KiB")).start()

    @classmethod
    def tearDownClass(cls):
        cls.pod.cleanup()

    def run_seed(self, seed):
        rng = random.Random(seed)
        mount_root = self.pod.path(f"seed{seed}")
        local_root = tempfile.mkdtemp(prefix=f"wh-diff-{seed}-")
        self.addCleanup(shutil.rmtree, local_root, True)
        os.mkdir(mount_root)
        mount, local = Ops(mount_root), Ops(local_root)
        for step in range(STEPS):
            kind, args = random_op(rng)
            got = outcome(getattr(mount, kind), *args)
            want = outcome(getattr(local, kind), *args)
            shown = tuple(a if not isinstance(a, (bytes, list)) else len(a) for a in args)
            self.assertEqual(got, want, f"seed {seed} step {step}: {kind}{shown}")
            if step % int(os.environ.get("WORMHOLE_DIFF_CHECK_EVERY", "250")) == 0:
                self.assertEqual(tree(mount_root), tree(local_root), f"seed {seed} step {step}")
        self.assertEqual(tree(mount_root), tree(local_root), f"seed {seed} final tree")
        # And after a restart of the daemon, the tree is still the same.
        self.pod.stop()
        self.pod.start()
        self.assertEqual(tree(mount_root), tree(local_root), f"seed {seed} after restart")

    def test_random_sequences(self):
        if os.environ.get("WORMHOLE_SEED"):
            seeds = [int(os.environ["WORMHOLE_SEED"])]
        else:
            seeds = list(range(1, 9))
        for seed in seeds:
            with self.subTest(seed=seed):
                self.run_seed(seed)


if __name__ == "__main__":
    harness.main()
