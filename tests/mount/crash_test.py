"""Crash test: a writer works on the mount while the daemon is killed with -9 in a loop and
restarted; after each restart every file the writer saw fsynced or closed must read back
exactly, and every file in the tree must be readable (no chunk referenced by metadata is
missing). The writer creates, renames and removes files and patches large ones with small
writes (stored as pieces). It keeps its journal on local disk. Reproduce with --seed N."""
import hashlib
import os
import random
import subprocess
import sys
import time
import unittest

import harness
from harness import Pod

CYCLES = int(os.environ.get("WORMHOLE_CRASH_CYCLES", "8"))


def content(name, size):
    """Deterministic bytes for a file name."""
    seed = hashlib.sha256(name.encode()).digest()
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    reps = size // len(block) + 1
    return (seed + block * reps)[:size]


def patch_bytes(tag, length):
    """Deterministic bytes of a small write."""
    block = hashlib.sha256(tag.encode()).digest() * 256  # 8 KiB
    return block[:length]


def expected_content(base, size, patches):
    data = bytearray(content(base, size))
    for off, length, tag in patches:
        data[off:off + length] = patch_bytes(tag, length)
    return bytes(data)


def writer(root, journal_path, seed):
    """Runs until the mount fails. Journal lines: 'B op args' before, 'A' after success."""
    rng = random.Random(seed)
    journal = open(journal_path, "a")

    def log(line):
        journal.write(line + "\n")
        journal.flush()
        os.fsync(journal.fileno())

    acked = []
    sizes = {}
    i = 0
    try:
        os.makedirs(root, exist_ok=True)
        while True:
            i += 1
            r = rng.random()
            if r < 0.15 and acked:
                old = rng.choice(acked)
                new = f"{old.split('.')[0]}.r{seed}-{i}"
                log(f"B mv {old} {new}")
                os.rename(os.path.join(root, old), os.path.join(root, new))
                log("A")
                acked[acked.index(old)] = new
                sizes[new] = sizes.pop(old)
            elif r < 0.40 and any(sizes[n] > 65536 for n in acked):
                # A small write into a large file: a piece, with or without fsync.
                name = rng.choice([n for n in acked if sizes[n] > 65536])
                off = rng.randrange(sizes[name])
                length = min(rng.randint(1, 8192), sizes[name] - off)
                tag = f"p{seed}-{i}"
                log(f"B patch {name} {off} {length} {tag}")
                fd = os.open(os.path.join(root, name), os.O_WRONLY)
                os.pwrite(fd, patch_bytes(tag, length), off)
                if rng.random() < 0.6:
                    os.fsync(fd)
                os.close(fd)
                log("A")
            elif r < 0.47 and acked:
                old = rng.choice(acked)
                log(f"B rm {old}")
                os.unlink(os.path.join(root, old))
                log("A")
                acked.remove(old)
                sizes.pop(old)
            else:
                name = f"f{seed}-{i}"
                size = rng.choice([0, 1, 4096, 100000, 700000, rng.randint(1, 2_500_000)])
                sync = rng.random() < 0.6
                data = content(name, size)
                log(f"B write {name} {size}")
                fd = os.open(os.path.join(root, name), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
                for off in range(0, size, 128 * 1024):
                    os.write(fd, data[off:off + 128 * 1024])
                if sync:
                    os.fsync(fd)
                os.close(fd)
                log("A")
                acked.append(name)
                sizes[name] = size
    except OSError:
        return  # the daemon died under us: expected


def expected_state(journal_path):
    """Replays the journal: name -> (size, patches) for acked files, plus names the last op
    touched."""
    files, uncertain = {}, set()
    pending = None
    with open(journal_path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "B":
                if pending:  # the op in flight when an earlier cycle's daemon died
                    uncertain.update(in_flight_names(pending))
                pending = parts[1:]
                continue
            if parts[0] == "A" and pending:
                op = pending
                if op[0] == "write":
                    files[op[1]] = (int(op[2]), [])
                elif op[0] == "patch":
                    files[op[1]][1].append((int(op[2]), int(op[3]), op[4]))
                elif op[0] == "mv":
                    files[op[2]] = files.pop(op[1])
                elif op[0] == "rm":
                    files.pop(op[1], None)
                pending = None
    if pending:  # in flight when the daemon died: either outcome is fine
        uncertain.update(in_flight_names(pending))
    return files, uncertain


def in_flight_names(op):
    return set(op[1:3]) if op[0] == "mv" else {op[1]}


class CrashTest(unittest.TestCase):
    def test_kill9_loop(self):
        seed = int(os.environ.get("WORMHOLE_SEED", "7"))
        rng = random.Random(seed)
        pod = Pod(chunk_size="256KiB")
        self.addCleanup(pod.cleanup)
        journal = os.path.join(pod.root, "journal")
        root = pod.path("w")
        for cycle in range(CYCLES):
            pod.start()
            self.verify(pod, root, journal, cycle)
            w = subprocess.Popen([sys.executable, __file__, "--writer", root, journal, str(seed * 1000 + cycle)])
            time.sleep(rng.uniform(0.3, 1.5))
            pod.kill9()
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        pod.start()
        self.verify(pod, root, journal, CYCLES)
        # Garbage collection must not take anything a file still references.
        pod.cli("gc", "--grace", "0s")
        self.verify(pod, root, journal, CYCLES + 1)
        files, _ = expected_state(journal)
        self.assertGreater(len(files), 10, "the writer should have got work done")

    def verify(self, pod, root, journal, cycle):
        try:
            self.check_files(root, journal, cycle)
        except Exception:
            print(f"--- daemon log, cycle {cycle} ---\n{pod.read_log()[-4000:]}")
            raise

    def check_files(self, root, journal, cycle):
        if not os.path.exists(journal):
            return
        files, uncertain = expected_state(journal)
        for name, (size, patches) in files.items():
            if name in uncertain:
                continue
            path = os.path.join(root, name)
            base = name.split(".")[0]  # renamed files keep their original content
            with open(path, "rb") as fh:
                data = fh.read()
            self.assertEqual(len(data), size, f"cycle {cycle}: {name}")
            self.assertEqual(data, expected_content(base, size, patches), f"cycle {cycle}: {name} content")
        present = set(os.listdir(root)) if os.path.isdir(root) else set()
        for name in present - set(files) - uncertain:
            # Only a write in flight may leave an unacknowledged file; it must be readable.
            self.fail(f"cycle {cycle}: unexpected file {name}")
        for name in present:  # every file readable: no chunk missing
            with open(os.path.join(root, name), "rb") as fh:
                while fh.read(1 << 20):
                    pass


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    harness.main()
