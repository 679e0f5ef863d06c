#!/usr/bin/env python3
"""Upgrade in place: today's binary starts on storage directories written by older formats
(tests/fixtures/*.tar.gz, made by tests/fixtures/make_storage_fixture.py with the last
binary of each format) and reads every file back exactly: content, size, type, mode, links,
xattrs, the trash. Then it writes new versions over the old ones (a commit is now a delta
over an old-format version), deletes, collects garbage, restarts, and reads again.
"""
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Pod  # noqa: E402

FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "*.tar.gz")))
MIB = 1 << 20


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class UpgradeTest(unittest.TestCase):
    def check_tree(self, mnt, manifest, changed=()):
        for rel, want in manifest["files"].items():
            path = os.path.join(mnt, rel)
            if rel in changed:
                continue
            st = os.lstat(path)
            self.assertEqual(st.st_mode, want["mode"], rel)
            if "target" in want:
                self.assertEqual(os.readlink(path), want["target"], rel)
            elif "sha256" in want:
                self.assertEqual(st.st_size, want["size"], rel)
                self.assertEqual(st.st_nlink, want["nlink"], rel)
                self.assertEqual(sha(path), want["sha256"], rel)
        for rel, attrs in manifest.get("xattrs", {}).items():
            for name, value in attrs.items():
                self.assertEqual(os.getxattr(os.path.join(mnt, rel), name), value.encode(), rel)
        names = set()
        for root, dirs, files in os.walk(mnt):
            for n in dirs + files:
                names.add(os.path.relpath(os.path.join(root, n), mnt))
        self.assertEqual(names, set(manifest["files"]) | set(changed), "the tree's names")

    def test_every_fixture_reads_back_and_takes_new_versions(self):
        self.assertTrue(FIXTURES, "no fixture in tests/fixtures")
        for fixture in FIXTURES:
            with self.subTest(fixture=os.path.basename(fixture)):
                self.run_fixture(fixture)

    def run_fixture(self, fixture):
        work = tempfile.mkdtemp(prefix="wh-upgrade-")
        with tarfile.open(fixture) as tar:
            tar.extractall(work)
        with open(os.path.join(work, "manifest.json")) as f:
            manifest = json.load(f)
        # The fixture's deleted file must still be in the trash however old the fixture is
        # (the default retention, a day, purged it the day after it was made).
        pod = Pod(root=work, name=manifest["pod"], network=manifest["network"], chunk_size=manifest["chunk_size"],
                  storage=os.path.join(work, "storage"), extra_network='trash_retention = "36500d"')
        try:
            pod.start()
            m = pod.mnt
            self.check_tree(m, manifest)
            trash = json.loads(pod.cli("trash", "--json").stdout)
            self.assertIn("deleted.txt", [t["name"] for t in trash["trash"]])
            # New versions over old-format ones: a small edit (a delta), a truncate, an append.
            big = os.path.join(m, "dir/sub/big.bin")
            with open(big, "rb") as f:
                expected = bytearray(f.read())
            with open(big, "r+b") as f:
                f.seek(200 * 1024 + 3)
                f.write(b"new bytes")
            expected[200 * 1024 + 3:200 * 1024 + 12] = b"new bytes"
            with open(os.path.join(m, "dir/medium.bin"), "r+b") as f:
                f.truncate(1000)
            with open(os.path.join(m, "sparse.bin"), "ab") as f:
                f.write(b"tail")
            os.unlink(os.path.join(m, "dir/hardlink.txt"))
            pod.cli("gc", "--grace", "0s")
            pod.stop()
            pod.start()
            with open(big, "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), hashlib.sha256(expected).hexdigest())
            with open(os.path.join(m, "dir/medium.bin"), "rb") as f:
                self.assertEqual(len(f.read()), 1000)
            with open(os.path.join(m, "sparse.bin"), "rb") as f:
                f.seek(700 * 1024)
                self.assertEqual(f.read(6), b"island")
                f.seek(MIB)
                self.assertEqual(f.read(), b"tail")
            self.assertFalse(os.path.exists(os.path.join(m, "dir/hardlink.txt")))
            with open(os.path.join(m, "small.txt"), "rb") as f:
                self.assertEqual(f.read(), b"inline content, a few bytes\n")
            self.assertEqual(os.lstat(os.path.join(m, "small.txt")).st_nlink, 1)
        finally:
            pod.cleanup()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    harness.main()
