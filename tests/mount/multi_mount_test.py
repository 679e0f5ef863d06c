"""Multi-mount test (issue 7): three real pods (redundancy 2, 64 KiB chunks, keep-both),
one worker thread per mount doing seeded random operations on a small set of shared names
(so they collide), reader threads polling random files on random mounts; then the trees
must converge, no closed version may be lost, no read may return bytes that were never a
closed version, and a closed write must be visible on every pod within 1 s.

Reproduce with --seed N or WORMHOLE_SEED=N (printed in every failure). The seed fixes each
worker's and reader's choices, not the interleaving of the threads and daemons, so a seed
reproduces a workload, not a schedule. WORMHOLE_MULTI_MOUNT_SECONDS sets the length of the
random phase (default 20 s; e.g. 600 for a long run). WORMHOLE_MULTI_MOUNT_RACE_S is the
propagation bound used by the loss check (default 5 s).

Content. Every content a worker writes is self-describing and unique: a segment
`gen(id, n)` is the first n bytes of the lines "<id>#<line number>\\n", id = "<pod>:<counter>"
(so any byte read names the write it came from). `write` makes a file's content one
segment; `append` adds one to the base; `truncate` cuts or zero-extends the base. Every
content a close may commit is registered (its sha256, 4 KiB block hashes, zlib-compressed
bytes) *before* the write starts, so a remote reader that sees it an instant after close
finds it; the empty content is always registered (a creation, an O_TRUNC).

What each operation knows of its base. `append`, `truncate` and the "rmw" form of `write`
open the file O_RDWR, read the current content through that handle and then modify it
through the same handle: the handle's base is what it read (Vfs loads it at open/read, and
OpenFile::write/truncate never reload a handle that holds changes), so the committed
content is exactly base + change, and the new version records that base ("was seen").
The "trunc" form of `write` (open O_TRUNC) and `unlink`/`rename` first read the target
through the mount in a separate open (an *observation*), then act.

Assertions.
1. Reads (readers, at any time during the random phase). A read is: open O_RDONLY on mount
   M, one pread of the whole file, close. If the worker of M was inside a content-changing
   operation at any moment of the read, the read is not checked (a reader on the writer's
   pod sees writes before close: POSIX, not a version). Every other read must be exactly a
   registered content, except a *torn* read: close-to-open gives a read that overlaps the
   arrival of a new version no atomicity (the open handle reloads the new version at its
   next FUSE read, and the kernel drops the pages), so such a read may be made of page-sized
   pieces of different versions. A read that is not a registered content is accepted as
   torn when each of its aligned 4 KiB blocks is the block at the same offset of some
   registered content (the last, shorter block: that content's own tail, or a prefix of a
   block when the read's length is the size of another registered content: the kernel's
   size of one version over the bytes of another); torn reads are counted and printed.
   Any other read is an anomaly, and any anomaly fails the test
   (WORMHOLE_MULTI_MOUNT_TOLERANT_READS=1 tolerates up to 1 in 200 checked reads, at least
   5, to look past them at the rest of a run). Until 2026-12-01 a few per run were
   tolerated: they came from creates renumbered by undo/redo (kernel handles and caches then
   named a dead inode number); since that fix, ten strict runs had none, but on 2026-12-01
   about one run in five (the previous day's binary alike) had one read of the known race
   of the README's Limits: a version's bytes, then zeros up to a larger size the kernel
   still held (on 2026-12-02 also seen as a longer version's first pages, up to the end of
   a shorter concurrent version that arrived during the read, then zero pages: the same
   reload during a read). Up to 3 such reads, and only those, are tolerated and printed
   (WORMHOLE_MULTI_MOUNT_STRICT_READS=1 fails on them). Anomalies are classified at the end against the whole run's
   registry: "early commit" (the bytes are a content, a prefix of a content or pieces of
   contents that their writer had not begun to close when the read returned: a version
   made before its writer's close), "zeros past a shorter version" (a content cut and
   filled with zeros up to another version's size), or "garbage". `write_steps` writes a
   content in several writes with pauses, so that a version made before close shows.
2. Convergence: after the workers stop, within 60 s the three mounts show identical trees
   (names, types, modes, sizes, nlink, sha256 of contents, symlink targets, xattrs).
3. No closed version lost. Every closed version (close returned 0, non-empty) must be
      (a) the content of a file in the final tree (any name, conflict siblings included), or
      (b) (nothing is hidden: a second entry of one name shows as name.conflict-<tag>.ext
          and a file made in a directory removed meanwhile under lost+found, so both are
          in the final tree and count as (a));
      (c) the recorded base of a later version (a write that had seen it), or
      (d) observed by a worker just before an unlink, a rename over it, or an O_TRUNC
          overwrite of it (destroyed by a pod that had seen it), or
      (e) raced: an unlink / rename over / rename away / O_TRUNC overwrite of one of the
          names the version may have had (its name at close, followed through every rename
          and hard link of the run, whatever they moved: an over-approximation) that ended
          after the version's write began - WORMHOLE_MULTI_MOUNT_RACE_S and whose
          observation began before the close ended + WORMHOLE_MULTI_MOUNT_RACE_S. Such a
          pod may have applied the version between its observation and its act: it may
          legitimately have destroyed it without the test knowing. And the writer's pod may
          apply a destroy made elsewhere only after it opened the name: its handle then
          writes a file that pod deletes before the close commits (as open, unlink by
          another process, write, close on a local disk), and the version is in the trash
          only (seen: a rename over f3.txt ended 80 ms before another pod's truncate of
          f3.txt began; that pod committed the truncate to "(deleted)/f3.txt"). This is
          the weaker check: a client cannot know which versions a pod had applied when it
          acted, so a loss is only asserted when the destroying op came long enough after
          the close for the pod to have seen it, and long enough before the write for the
          writer's pod to have seen it.
   Not accepted as raced: a version lost with a directory (rmdir, or a rename of a
   directory over another): the pod that removed the directory saw it empty, so it never
   saw the file, and a delete that has not seen a write must not destroy it.
   Known unsoundness (microseconds wide): a handle that reloads a new version between the
   test's read through it and its first change would make (c)'s recorded base wrong.
4. Propagation, in a quiet phase after convergence (not under the random load, where the
   Python threads, three daemons and their FUSE threads share two cores): each pod in turn
   writes a new file (small/inline or multi-chunk) while the other two poll it; the time
   from close returning to the full content being read there must be under 1 s for every
   sample (the sample is small: max, not p99). Latencies under load are measured on a
   sample of closes and printed only.
5. Early commit, deterministically (check_no_early_commit): a writer on a has written half
   of a new content; another handle on a opens and closes the file; b must go on showing
   the closed version until the writer closes.
6. The daemons stay up and stop cleanly (exit 0; invariants are fatal under test).

All failures of one run are gathered and reported together (with the seed, the cluster
directory and the pods' log tails); the bytes of bad reads are saved under
WORMHOLE_MULTI_MOUNT_DUMP (default /tmp/wh-multi-mount-failures).
"""
import errno
import hashlib
import os
import random
import stat
import threading
import time
import traceback
import unittest
import zlib

import harness
from harness import Cluster, tree, wait_for

SECONDS = float(os.environ.get("WORMHOLE_MULTI_MOUNT_SECONDS", "20"))
RACE_S = float(os.environ.get("WORMHOLE_MULTI_MOUNT_RACE_S", "5"))
# Every read that is no closed version fails the test (see the read check above), except
# at most KNOWN_RACE_READS_MAX reads of the known race (README, Limits): a version's bytes
# followed by zeros up to a larger size the kernel still held (1 run in about 5 on the CI
# machine, the code of 2026-12-01 and the day before alike). WORMHOLE_MULTI_MOUNT_STRICT_READS=1
# fails on those too.
STRICT_READS = os.environ.get("WORMHOLE_MULTI_MOUNT_TOLERANT_READS") != "1"
STRICT_ZEROS = os.environ.get("WORMHOLE_MULTI_MOUNT_STRICT_READS") == "1"
KNOWN_RACE_READS_MAX = 3
KNOWN_RACE = "zeros past a shorter version"
PODS = ("a", "b", "c")
BLOCK = 4096
WORK = "w"  # the shared directory under every mount
DIRS = ["d1", "d2", "d1/s", "d2/s"]
PARENTS = ["", "d1", "d2", "d1/s"]
LEAVES = ["f1", "f2", "f3.txt"]
FILES = [os.path.join(p, n) if p else n for p in PARENTS for n in LEAVES]
READ_MAX = 8 << 20


def sha(data):
    return hashlib.sha256(data).hexdigest()


def gen(ident, n):
    """n bytes of lines "<ident>#<k>\\n": unique per ident, and every line names its write."""
    out = []
    total = 0
    k = 0
    while total < n:
        line = f"{ident}#{k}\n".encode()
        out.append(line)
        total += len(line)
        k += 1
    return b"".join(out)[:n]


def now():
    return time.monotonic()


class Registry:
    """Every content that a close may commit, and what happened to them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.hashes = set()
        self.blocks = set()  # (offset, sha of a full 4 KiB block)
        self.tails = set()  # (offset, length, sha) of each content's last, shorter block
        self.contents = {}  # sha -> zlib(content)
        self.versions = []  # dicts: closed versions
        self.close_started = {}  # sha -> when a close that commits it first began
        self.sizes = {0}
        self.events = []  # dicts: observed destructive / moving ops
        self.register(b"")

    def register(self, data):
        h = sha(data)
        with self.lock:
            if h in self.hashes:
                return h
        blocks = set()
        tail = None
        for o in range(0, len(data), BLOCK):
            blk = data[o:o + BLOCK]
            if len(blk) == BLOCK:
                blocks.add((o, sha(blk)))
            else:
                tail = (o, len(blk), sha(blk))
        packed = zlib.compress(data, 1)
        with self.lock:
            self.sizes.add(len(data))
            self.blocks |= blocks
            if tail:
                self.tails.add(tail)
            self.contents[h] = packed
            self.hashes.add(h)
        return h

    def closing(self, h):
        with self.lock:
            self.close_started.setdefault(h, now())

    def known(self, h):
        with self.lock:
            return h in self.hashes

    def similar(self, data):
        """Registered contents made of the same writes, for failure messages."""
        mine = ids_of(data)
        with self.lock:
            packed = list(self.contents.values())
        out = []
        for p in packed:
            c = zlib.decompress(p)
            if ids_of(c) & mine:
                common = 0
                while common < min(len(c), len(data)) and c[common] == data[common]:
                    common += 1
                out.append(f"\n    registered {len(c)} bytes: {describe(c, 8)} (same first {common} bytes)")
        return "".join(out[:12])

    def classify(self, data, read_end):
        """Names what a bad read looks like, with the whole run's registry: a content that its
        writer had not begun to close when it was read elsewhere (an early commit), a prefix
        of a content being written, a content whose end was replaced by zeros up to the size
        of another content (the kernel's size of one version, the daemon's bytes of a
        shorter one: the kernel fills the rest with zeros), or anything else."""
        h = sha(data)
        with self.lock:
            if h in self.hashes:
                return ("early commit: visible before its writer began to close it"
                        if self.close_started.get(h, float("inf")) > read_end else "registered late")
        with self.lock:
            packed = list(self.contents.values())
        for p in packed:
            c = zlib.decompress(p)
            if len(c) > len(data) and c[:len(data)] == data and len(data) not in self.sizes:
                return "early commit: a prefix of a content its writer was still writing"
        # Before the torn check: a run of zero pages matches a block of any content with
        # zeros in it (one written later, above all), a weak explanation; a version's first
        # bytes followed by zero pages is the known race (a reload to a shorter version
        # during the read: the pages past its end come back as zeros).
        body = data.rstrip(b"\0")
        sizes = set()
        prefix_of = False
        for p in packed:
            c = zlib.decompress(p)
            sizes.add(len(c))
            if not prefix_of and len(c) >= len(body) and c[:len(body)] == body:
                prefix_of = True
        zeros_past = body != data and prefix_of
        if zeros_past and len(data) - len(body) >= BLOCK or zeros_past and not self.explain_torn(data):
            return ("zeros past a shorter version, up to another version's size" if len(data) in sizes else
                    "zeros past a shorter version, up to a size no closed version had")
        if self.explain_torn(data):
            return "early commit: pieces of contents registered after the read"
        return "garbage"

    def find_base(self, got, apply):
        """The registered content that `apply` turns into `got`, or None."""
        with self.lock:
            packed = list(self.contents.items())
        for h, p in packed:
            if apply(zlib.decompress(p)) == got:
                return h
        return None

    def explain_torn(self, data):
        """True if every aligned block of `data` is the same block of some content."""
        for o in range(0, len(data), BLOCK):
            blk = data[o:o + BLOCK]
            if len(blk) == BLOCK:
                with self.lock:
                    if (o, sha(blk)) in self.blocks:
                        continue
                return False
            with self.lock:
                if (o, len(blk), sha(blk)) in self.tails:
                    continue
                if len(data) not in self.sizes:  # cut short only at the size of another version
                    return False
                packed = list(self.contents.values())
            if not any(zlib.decompress(p)[o:o + len(blk)] == blk for p in packed):
                return False
        return True


def ids_of(data):
    return {line.split(b"#")[0] for line in data.split(b"\n") if b"#" in line}


def describe(data, limit=6):
    """The writes the bytes of `data` come from: runs of line ids, for failure messages."""
    runs = []
    for line in data.split(b"\n"):
        ident = line.split(b"#")[0].decode(errors="replace") if b"#" in line else repr(line[:20])
        if not runs or runs[-1][0] != ident:
            runs.append([ident, 0])
        runs[-1][1] += len(line) + 1
    text = ", ".join(f"{i}x{n}" for i, n in runs[:limit])
    return text + (f", ... ({len(runs)} runs)" if len(runs) > limit else "")


def read_all(fd):
    chunks = []
    off = 0
    while True:
        b = os.pread(fd, 1 << 20, off)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
        off += len(b)


def observe(path):
    """The content at `path` as this mount shows it (sha), or None (absent, not a file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return sha(read_all(fd))
    except OSError:
        return None
    finally:
        os.close(fd)




class Worker(threading.Thread):
    def __init__(self, test, pod, seed, stop):
        super().__init__(name=f"worker-{pod.name}", daemon=True)
        self.t = test
        self.pod = pod
        self.rng = random.Random(f"{seed}-worker-{pod.name}")
        self.stop_ev = stop
        self.root = pod.path(WORK)
        self.counter = 0
        self.ops = {}
        self.errors = {}
        self.exc = None

    def p(self, rel):
        return os.path.join(self.root, rel)

    def busy(self):
        self.t.epoch[self.pod.name] += 1  # odd: an O_TRUNC open/write in progress on this mount

    def new_id(self):
        self.counter += 1
        return f"{self.pod.name}:{self.counter}"

    def size(self):
        r = self.rng.random()
        if r < 0.55:
            return self.rng.randint(1, 6000)  # inline
        if r < 0.8:
            return self.rng.randint(6000, 70000)  # one chunk, maybe two
        return self.rng.randint(70000, 260000)  # several 64 KiB chunks

    def record_version(self, data_hash, rel, cs, base):
        self.t.reg.versions.append(dict(hash=data_hash, path=rel, pod=self.pod.name, cs=cs, ce=now(), base=base))
        if self.rng.random() < 0.15:
            self.t.sample_propagation(self.pod.name, rel, data_hash, now())

    def event(self, kind, obs_start, **kw):
        self.note += f" EV {kind} " + " ".join(f"{k}={v if k != 'seen' else {a: (b or '')[:8] for a, b in v.items()}}" for k, v in kw.items())
        self.t.reg.events.append(dict(kind=kind, pod=self.pod.name, obs_start=obs_start, end=now(), **kw))

    def run(self):
        try:
            while not self.stop_ev.is_set():
                kind = self.rng.choices(
                    ["write_rmw", "write_trunc", "write_steps", "append", "truncate", "unlink", "rename_file", "rename_dir",
                     "mkdir", "rmdir", "link", "symlink", "chmod", "setxattr", "removexattr"],
                    weights=[12, 6, 4, 10, 5, 6, 8, 3, 6, 3, 2, 2, 3, 3, 1])[0]
                self.note = ""
                t_s = now()
                try:
                    self.t.history.append((t_s, self.pod.name, "start", kind, ""))
                    getattr(self, "op_" + kind)()
                    self.t.history.append((now(), self.pod.name, "end", kind, self.note))
                    self.ops[kind] = self.ops.get(kind, 0) + 1
                except OSError as e:
                    self.t.history.append((now(), self.pod.name, "err", kind, self.note + " " + repr(e)))
                    key = f"{kind}:{errno.errorcode.get(e.errno, e.errno)}"
                    self.errors[key] = self.errors.get(key, 0) + 1
                    if e.errno in (errno.ENOTCONN, errno.EIO):
                        raise
        except BaseException as e:  # reported by the test
            self.exc = f"{e!r}\n{traceback.format_exc()}"

    def rfile(self):
        return self.rng.choice(FILES)

    def rany(self):
        return self.rng.choice(FILES + DIRS)

    # Content changes through one handle (O_DIRECT: every read reaches the daemon, no page
    # cache in between). The handle may load a newer version between the test's read of the
    # base and its first change (Vfs reloads an unmodified handle at a read or getattr, e.g.
    # of a reader thread on this mount): so the content is read back through the handle
    # after the change, which is exactly what close commits (a modified handle is never
    # reloaded). It must be the change applied to the base read, or to another registered
    # content (the handle's true base); anything else is a failure.
    def _modify(self, rel, change):
        cs = now()
        self.note = f"stage=open rel={rel}"
        fd = os.open(self.p(rel), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_DIRECT, 0o644)
        ino = None
        try:
            ino = os.fstat(fd).st_ino
            self.t.inode_busy(self.pod.name, ino)
            self.note = f"stage=read-base rel={rel} ino={ino}"
            base = read_all(fd)
            self.note = f"stage=change rel={rel} ino={ino} base={len(base)}"
            apply = change(fd, base)
            self.note += " stage=readback"
            if apply is None:
                return
            got = read_all(fd)
            base_hash = sha(base)
            if got != apply(base):
                base_hash = self.t.reg.find_base(got, apply)
                self.t.reloads += 1
                if base_hash is None:
                    self.t.read_failures.append(
                        f"{self.pod.name}: {rel} through the writing handle ({len(got)} bytes): the change is "
                        f"applied to no closed version: {describe(got)}" + self.t.reg.similar(got))
            self.t.reg.register(got)
            self.t.reg.closing(sha(got))
            self.note = f"stage=close rel={rel} ino={ino} base={len(base)}:{describe(base,4)} got={len(got)}:{describe(got,4)} closing_at={now()}"
        finally:
            os.close(fd)
            if ino is not None:
                self.t.inode_busy(self.pod.name, ino)
        self.record_version(sha(got), rel, cs, base_hash)

    def op_write_rmw(self):
        ident, n = self.new_id(), self.size()
        data = gen(ident, n)

        def change(fd, base):
            self.t.reg.register(data)
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            return lambda b: data
        self._modify(self.rfile(), change)

    def op_append(self):
        ident, n = self.new_id(), self.size() // 2 + 1
        seg = gen(ident, n)
        o_append = self.rng.random() < 0.5

        def change(fd, base):
            if len(base) > 600000:
                return None
            off = len(base)
            self.t.reg.register(base + seg)
            if o_append:  # the kernel picks the offset: its idea of the size
                os.write(fd, seg)
                off = os.lseek(fd, 0, os.SEEK_CUR) - len(seg)
            else:
                os.pwrite(fd, seg, off)
            return lambda b: b[:off] + b"\0" * max(0, off - len(b)) + seg + b[off + len(seg):]
        self._modify(self.rfile(), change)

    def op_truncate(self):
        size = self.rng.choice([0, self.rng.randint(0, 5000), self.rng.randint(0, 300000)])

        def change(fd, base):
            self.t.reg.register(base[:size] + b"\0" * max(0, size - len(base)))
            os.ftruncate(fd, size)
            return lambda b: b[:size] + b"\0" * max(0, size - len(b))
        self._modify(self.rfile(), change)

    def op_write_steps(self):
        self.op_write_trunc(steps=self.rng.randint(1, 3))

    def op_write_trunc(self, steps=0):
        rel = self.rfile()
        obs_start = now()
        seen = observe(self.p(rel))
        ident, n = self.new_id(), self.size()
        data = gen(ident, n)
        self.t.reg.register(data)
        cs = now()
        self.note = f"rel={rel} id={ident} n={n} steps={steps}"
        self.busy()
        try:
            fd = os.open(self.p(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                if steps:  # several writes with pauses: a version exists only once close begins
                    cuts = sorted(self.rng.sample(range(1, n), min(steps, n - 1))) if n > 1 else []
                    start = 0
                    for cut in cuts + [n]:
                        os.pwrite(fd, data[start:cut], start)
                        start = cut
                        time.sleep(self.rng.uniform(0.002, 0.01))
                else:
                    os.pwrite(fd, data, 0)
                self.t.reg.closing(sha(data))
            finally:
                os.close(fd)
        finally:
            self.busy()
            self.event("overwrite", obs_start, path=rel, seen={rel: seen})
        self.record_version(sha(data), rel, cs, None)

    def op_unlink(self):
        rel = self.rfile()
        obs_start = now()
        seen = observe(self.p(rel))
        try:
            os.unlink(self.p(rel))
        finally:
            self.event("unlink", obs_start, path=rel, seen={rel: seen})

    def op_rename_file(self):
        a, b = self.rfile(), self.rfile()
        obs_start = now()
        seen = {a: observe(self.p(a)), b: observe(self.p(b))}
        try:
            os.rename(self.p(a), self.p(b))
        finally:
            self.event("rename", obs_start, src=a, dst=b, seen=seen)

    def op_rename_dir(self):
        a, b = self.rng.choice(DIRS), self.rng.choice(DIRS)
        obs_start = now()
        try:
            os.rename(self.p(a), self.p(b))
        finally:
            self.event("rename", obs_start, src=a, dst=b, seen={})

    def op_mkdir(self):
        os.mkdir(self.p(self.rng.choice(DIRS)))

    def op_rmdir(self):
        rel = self.rng.choice(DIRS)
        obs_start = now()
        try:
            os.rmdir(self.p(rel))
        finally:
            self.event("rmdir", obs_start, path=rel, seen={})

    def op_link(self):
        a, b = self.rfile(), self.rfile()
        obs_start = now()
        try:
            os.link(self.p(a), self.p(b))
        finally:
            self.event("link", obs_start, src=a, dst=b, seen={})

    def op_symlink(self):
        os.symlink(self.rng.choice(LEAVES + ["../d1", "nowhere"]), self.p(self.rfile()))

    def op_chmod(self):
        os.chmod(self.p(self.rany()), self.rng.choice([0o600, 0o644, 0o755, 0o700]))

    def op_setxattr(self):
        os.setxattr(self.p(self.rany()), "user." + self.rng.choice(["k1", "k2"]),
                    f"{self.new_id()}".encode() * self.rng.randint(1, 20), follow_symlinks=False)

    def op_removexattr(self):
        os.removexattr(self.p(self.rany()), "user." + self.rng.choice(["k1", "k2"]), follow_symlinks=False)


class Reader(threading.Thread):
    def __init__(self, test, index, seed, stop):
        super().__init__(name=f"reader-{index}", daemon=True)
        self.t = test
        self.rng = random.Random(f"{seed}-reader-{index}")
        self.stop_ev = stop
        self.stats = dict(checked=0, torn=0, skipped_local_write=0, not_a_file=0, errors=0)
        self.exc = None

    def run(self):
        try:
            while not self.stop_ev.is_set():
                name = self.rng.choice(PODS)
                pod = self.t.cluster.pods[name]
                rel = self.rng.choice(FILES + self.t.extra_files)
                self.read_one(name, pod.path(WORK, rel), rel)
        except BaseException as e:
            self.exc = f"{e!r}\n{traceback.format_exc()}"

    def read_one(self, name, path, rel):
        rs = now()
        e1 = self.t.epoch[name]
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            self.stats["not_a_file"] += 1
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.stats["not_a_file"] += 1
                return
            g1 = self.t.busy_inodes[name].get(st.st_ino, 0)
            data = os.pread(fd, READ_MAX, 0)  # one read(2): no gap between syscalls
            g2 = self.t.busy_inodes[name].get(st.st_ino, 0)
        except OSError as e:
            if e.errno in (errno.ENOTCONN, errno.EIO):
                self.t.read_failures.append(f"read of {rel} on {name}: {e!r}")
            self.stats["errors"] += 1
            return
        finally:
            os.close(fd)
        e2 = self.t.epoch[name]
        if e1 % 2 == 1 or e1 != e2 or g1 % 2 == 1 or g1 != g2:
            self.stats["skipped_local_write"] += 1
            return
        self.stats["checked"] += 1
        if self.t.reg.known(sha(data)):
            return
        if self.t.reg.explain_torn(data):
            self.stats["torn"] += 1
            return
        self.t.bad_reads.append(dict(data=data, pod=name, rel=rel, end=now(), start=rs, ino=st.st_ino, st_size=st.st_size))


class MultiMountTest(unittest.TestCase):
    def setUp(self):
        self.seed = int(os.environ.get("WORMHOLE_SEED") or random.SystemRandom().randrange(1, 1 << 30))
        print(f"\nmulti-mount seed {self.seed} ({SECONDS:.0f} s; reproduce with WORMHOLE_SEED={self.seed})",
              flush=True)
        self.cluster = Cluster(chunk_size="64KiB", redundancy=2, conflict="keep-both")
        self.addCleanup(self.cluster.cleanup)
        self.cluster.start()
        self.pods = [self.cluster.pods[n] for n in PODS]
        for pod in self.pods:
            wait_for(lambda: all(p["state"] == "alive" for p in pod.status()["peers"]), what=f"peers of {pod.name}")
        os.mkdir(self.pods[0].path(WORK))
        for pod in self.pods:
            wait_for(lambda: os.path.isdir(pod.path(WORK)), what=f"{WORK} on {pod.name}")
        self.reg = Registry()
        self.epoch = {n: 0 for n in PODS}
        self.busy_inodes = {n: {} for n in PODS}  # inode -> generation, odd while a handle changes it
        self.reloads = 0
        self.read_failures = []
        self.bad_reads = []
        self.extra_files = []  # conflict siblings seen so far, for the readers
        self.latencies_under_load = []
        self.prop_lock = threading.Lock()
        self.prop_active = 0
        self.history = []

    def inode_busy(self, pod, ino):
        d = self.busy_inodes[pod]
        d[ino] = d.get(ino, 0) + 1

    def dump(self, label, data):
        """Keeps bytes of a failure where the cluster's cleanup does not remove them."""
        d = os.environ.get("WORMHOLE_MULTI_MOUNT_DUMP", "/tmp/wh-multi-mount-failures")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"seed{self.seed}-{label}")
        with open(path, "wb") as fh:
            fh.write(data)
        return path

    def save_history(self):
        """Every worker op (start, end or error, with what it did) and every bad read, by time:
        kept beside the dumps and the pods' logs for a failed run."""
        d = os.environ.get("WORMHOLE_MULTI_MOUNT_DUMP", "/tmp/wh-multi-mount-failures")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"seed{self.seed}-history")
        with open(path, "w") as fh:
            for h in self.history:
                fh.write(f"{h[0]:.4f} {h[1]} {h[2]} {h[3]} {h[4]}\n")
            for i, r in enumerate(self.bad_reads):
                fh.write(f"BAD {i} {r['start']:.4f}..{r['end']:.4f} pod={r['pod']} rel={r['rel']} ino={r['ino']} "
                         f"st_size={r['st_size']} len={len(r['data'])} {describe(r['data'], 8)}\n")
        for p in self.pods:
            with open(os.path.join(d, f"seed{self.seed}-{p.name}.log"), "w") as fh:
                fh.write(p.read_log())
        return path

    def fail_with(self, msg):
        msg += f"\n(history of the run and the pods' logs: {self.save_history()} and beside it)"
        logs = "\n".join(f"--- {p.name}.log (tail) ---\n" + p.read_log()[-2500:] for p in self.pods)
        self.fail(f"seed {self.seed}: {msg}\n(cluster dir {self.cluster.root})\n{logs}")

    # --- propagation under load: a sample of closes, measured by short-lived pollers ---
    def sample_propagation(self, writer, rel, data_hash, closed_at):
        with self.prop_lock:
            if self.prop_active >= 2:
                return
            self.prop_active += 1

        def poll():
            try:
                others = [n for n in PODS if n != writer]
                pending = set(others)
                while pending and now() - closed_at < 5:
                    for n in list(pending):
                        if observe(self.cluster.pods[n].path(WORK, rel)) == data_hash:
                            self.latencies_under_load.append(now() - closed_at)
                            pending.discard(n)
                    time.sleep(0.005)
            finally:
                with self.prop_lock:
                    self.prop_active -= 1
        threading.Thread(target=poll, daemon=True).start()

    def test_random_operations_on_three_mounts(self):
        stop = threading.Event()
        workers = [Worker(self, pod, self.seed, stop) for pod in self.pods]
        readers = [Reader(self, i, self.seed, stop) for i in range(2)]
        for t in workers + readers:
            t.start()
        deadline = now() + SECONDS
        while now() < deadline:
            time.sleep(0.5)
            for pod in self.pods:
                if pod.proc.poll() is not None:
                    stop.set()
                    self.fail_with(f"daemon {pod.name} died (exit {pod.proc.returncode})")
            # conflict siblings become reader targets
            try:
                sib = [os.path.relpath(os.path.join(d, f), self.pods[0].path(WORK))
                       for d, _, fs in os.walk(self.pods[0].path(WORK)) for f in fs if ".conflict-" in f]
                self.extra_files = sib[-20:]
            except OSError:
                pass
        stop.set()
        for t in workers + readers:
            t.join(timeout=120)
            self.assertFalse(t.is_alive(), f"seed {self.seed}: {t.name} hangs")
        for t in workers + readers:
            if t.exc:
                self.fail_with(f"{t.name} failed: {t.exc}")
        ops = {}
        for w in workers:
            for k, v in w.ops.items():
                ops[k] = ops.get(k, 0) + v
        read_stats = {k: sum(r.stats[k] for r in readers) for k in readers[0].stats}
        print(f"ops done: {dict(sorted(ops.items()))}", flush=True)
        print(f"op errors: {dict(sorted(sum((list(w.errors.items()) for w in workers), [])))}", flush=True)
        print(f"reads: {read_stats}; handles that loaded a newer version before their change: {self.reloads}",
              flush=True)
        if self.latencies_under_load:
            lat = sorted(self.latencies_under_load)
            print(f"propagation under load: {len(lat)} samples, median {lat[len(lat) // 2] * 1000:.0f} ms, "
                  f"max {lat[-1] * 1000:.0f} ms (not asserted)", flush=True)
        failures = []
        # Classifying scans the whole registry: a sample, unless every bad read may be the
        # known race (then each is classified: only that race is tolerated).
        sample = self.bad_reads if len(self.bad_reads) <= KNOWN_RACE_READS_MAX else self.bad_reads[:12]
        for r in sample:
            data = r["data"]
            kind = self.reg.classify(data, r["end"])
            dump = self.dump(f"read-{len(self.read_failures)}-{r['pod']}-{r['rel'].replace('/', '_')}", data)
            self.read_failures.append(
                f"[{kind}] read of {r['rel']} on {r['pod']} (saved in {dump}): {len(data)} bytes that were no "
                f"closed version (nor pieces of ones) when read: {describe(data)}; first bytes {data[:60]!r}" +
                self.reg.similar(data))
        if self.read_failures:
            kinds = {}
            for f in self.read_failures:
                k = f[1:f.index("]")] if f.startswith("[") else "other"
                kinds[k] = kinds.get(k, 0) + 1
            report = (f"{len(self.bad_reads)} reads returned bytes that were never a closed version "
                      f"(of the first {len(self.read_failures)}: {kinds}):\n" + "\n".join(self.read_failures[:8]))
            # WORMHOLE_MULTI_MOUNT_TOLERANT_READS=1: a systematic failure (such as every close of
            # a reader committing a writer's half-written data, once) is far above this bound.
            checked = max(1, read_stats.get("checked", 0))
            known_race_only = (not STRICT_ZEROS and len(self.bad_reads) <= KNOWN_RACE_READS_MAX and
                               all(f.startswith("[" + KNOWN_RACE) for f in self.read_failures))
            if known_race_only:
                print("tolerated, the known race (README, Limits; WORMHOLE_MULTI_MOUNT_STRICT_READS=1 "
                      "fails on it): " + report, flush=True)
            elif STRICT_READS or len(self.bad_reads) > max(5, checked // 200):
                failures.append(report)
            else:
                print("tolerated (WORMHOLE_MULTI_MOUNT_TOLERANT_READS): " + report, flush=True)

        # --- convergence ---
        roots = [p.path(WORK) for p in self.pods]
        trees = None
        deadline = now() + 60 * float(os.environ.get("WORMHOLE_TIMEOUT_SCALE", "1"))
        while now() < deadline:
            try:
                trees = [tree(r) for r in roots]
            except OSError:
                trees = None
            if trees and trees[0] == trees[1] == trees[2]:
                break
            time.sleep(0.25)
        else:
            diff = []
            if trees:
                sets = [{repr(e) for e in t} for t in trees]
                for i, n in enumerate(PODS):
                    only = sorted(sets[i] - sets[(i + 1) % 3] - sets[(i + 2) % 3])[:10]
                    diff.append(f"only on {n}: {only}")
            self.fail_with("\n\n".join(failures + ["the three trees did not converge within 60 s:\n" +
                                                     "\n".join(diff)]))
        final = trees[0]
        print(f"converged: {len(final)} entries, "
              f"{sum(1 for e in final if '.conflict-' in e[0])} conflict siblings", flush=True)

        # --- no lost version ---
        present = {e[5] for e in final if e[1] == stat.S_IFREG}
        lost, counts = self.lost_versions(present)
        print(f"closed versions: {counts}", flush=True)
        if lost:
            failures.append(f"{len(lost)} closed versions lost:\n" + "\n".join(lost[:15]))

        # --- propagation in a quiet moment ---
        failures += self.check_quiet_propagation()
        failures += self.check_no_early_commit()
        if failures:
            self.fail_with("\n\n".join(failures))

    def lost_versions(self, present):
        events = self.reg.events
        base_of = {v["base"] for v in self.reg.versions if v["base"]}
        seen_destroyed = set()
        for e in events:
            if e["kind"] in ("unlink", "overwrite"):
                seen_destroyed.add(e["seen"].get(e["path"]))
            elif e["kind"] == "rename" and e["seen"]:
                seen_destroyed.add(e["seen"].get(e["dst"]))
        seen_destroyed.discard(None)
        empty = sha(b"")
        counts = {}
        lost = []

        moves = sorted((e for e in events if e["kind"] in ("rename", "link")), key=lambda e: e["end"])

        def lineage(v):
            """Every name the version may have had: its name at close, carried through every
            later rename (of it or of a directory above it) and hard link, whatever they
            moved (old names kept too: an over-approximation)."""
            if "names" not in v:
                names = {v["path"]}
                for e in moves:
                    if e["end"] <= v["cs"]:
                        continue
                    pairs = [(e["src"], e["dst"])] + ([(e["dst"], e["src"])] if e["kind"] == "link" else [])
                    for x, y in pairs:
                        for q in list(names):
                            if q == x:
                                names.add(y)
                            elif q.startswith(x + "/") and (y + q[len(x):]).count("/") < 8:
                                names.add(y + q[len(x):])
                v["names"] = names
            return v["names"]

        def raced(v):
            names = lineage(v)
            for e in events:
                if e["end"] <= v["cs"] - RACE_S or e["obs_start"] >= v["ce"] + RACE_S:
                    continue
                if e["kind"] in ("unlink", "overwrite") and e["path"] in names:
                    return True
                if e["kind"] == "rename" and (e["src"] in names or e["dst"] in names):
                    return True
            return False

        for v in self.reg.versions:
            h = v["hash"]
            if h == empty:
                why = "empty"
            elif h in present:
                why = "present"
            elif h in base_of:
                why = "superseded by a write that read it"
            elif h in seen_destroyed:
                why = "destroyed by a pod that had observed it"
            elif raced(v):
                why = "raced (destroyed by an op that may have seen it)"
            else:
                why = "LOST"
                content = zlib.decompress(self.reg.contents[h])
                rel = [e for e in events if e["end"] > v["cs"] and
                       any(n in lineage(v) or any(x.startswith(n + "/") for x in lineage(v))
                           for n in (e.get("path"), e.get("src"), e.get("dst")) if n)]
                t0 = self.t0()
                lost.append(f"version {describe(content, 3)} ({len(content)} bytes) written by {v['pod']} at "
                            f"{v['path']} [close {v['cs'] - t0:.3f}..{v['ce'] - t0:.3f}], base "
                            f"{'none' if not v['base'] else v['base'][:12]}; later ops on its names: " +
                            "; ".join(f"{e['pod']} {e['kind']} {e.get('path') or (e.get('src'), e.get('dst'))} "
                                      f"[{e['obs_start'] - t0:.3f}..{e['end'] - t0:.3f}]" for e in rel[:6]))
            counts[why] = counts.get(why, 0) + 1
        return lost, counts

    def t0(self):
        return min([v["cs"] for v in self.reg.versions] + [now()])

    def check_no_early_commit(self):
        """Deterministic form of what the readers look for: a writer on pod a has written
        part of a new content and not closed; a reader on a opens and closes the file; pod b
        must keep showing the closed version (close-to-open: a version is made by its
        writer's close), then show the whole new content once the writer closed."""
        a, b = self.pods[0], self.pods[1]
        closed = gen("early-v1", 3000)
        with open(a.path("prop", "early"), "wb") as fh:
            fh.write(closed)
        wait_for(lambda: observe(b.path("prop", "early")) == sha(closed), what="early on b")
        whole = gen("early-v2", 100000)
        seen = set()
        fd = os.open(a.path("prop", "early"), os.O_WRONLY | os.O_TRUNC)
        try:
            os.pwrite(fd, whole[:50000], 0)
            r = os.open(a.path("prop", "early"), os.O_RDONLY)  # another handle on the writer's pod
            os.close(r)
            deadline = now() + 1.0
            while now() < deadline:
                seen.add(observe(b.path("prop", "early")))
                time.sleep(0.01)
            os.pwrite(fd, whole[50000:], 50000)
        finally:
            os.close(fd)
        wait_for(lambda: observe(b.path("prop", "early")) == sha(whole), what="the whole content on b")
        unexpected = seen - {sha(closed), None}
        if unexpected:
            return ["early commit: while a writer on a had not closed (it had written 50000 of 100000 bytes), "
                    "a reader on a opened and closed the file, and b then showed a version nobody closed "
                    f"({'the first 50000 bytes' if sha(whole[:50000]) in unexpected else 'unknown bytes'}; "
                    "tests/mount/multi_mount_test.py check_no_early_commit)"]
        return []

    def check_quiet_propagation(self):
        os.mkdir(self.pods[0].path("prop"))
        for pod in self.pods:
            wait_for(lambda: os.path.isdir(pod.path("prop")), what=f"prop on {pod.name}")
        rng = random.Random(f"{self.seed}-prop")
        latencies = []
        for i in range(30):
            writer = self.pods[i % 3]
            others = [p for p in self.pods if p is not writer]
            n = rng.choice([rng.randint(1, 6000), rng.randint(70000, 300000)])
            data = gen(f"prop-{i}", n)
            h = sha(data)
            result = {}
            started = threading.Event()
            closed = [None]

            def poll(pod):
                started.wait()
                while now() - (closed[0] or now()) < 5:
                    if closed[0] is not None and observe(pod.path("prop", f"p{i}")) == h:
                        result[pod.name] = now() - closed[0]
                        return
                    time.sleep(0.002)
            threads = [threading.Thread(target=poll, args=(p,)) for p in others]
            for t in threads:
                t.start()
            started.set()
            with open(writer.path("prop", f"p{i}"), "wb") as fh:
                fh.write(data)
            closed[0] = now()
            for t in threads:
                t.join()
            for p in others:
                latencies.append((result.get(p.name, float("inf")), f"p{i} ({n} bytes) {writer.name}->{p.name}"))
        latencies.sort()
        print(f"propagation (quiet): median {latencies[len(latencies) // 2][0] * 1000:.0f} ms, "
              f"max {latencies[-1][0] * 1000:.0f} ms ({latencies[-1][1]})", flush=True)
        slow = [f"{what}: {t:.3f} s" for t, what in latencies if t >= 1.0]
        return ["closed writes not visible within 1 s: " + "; ".join(slow)] if slow else []


if __name__ == "__main__":
    harness.main()
