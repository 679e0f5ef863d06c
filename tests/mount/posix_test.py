"""POSIX behaviour of every supported operation on a real Wormhole mount, error cases
included, plus the bad-input cases of the daemon (config, corruption, full disk, second
daemon, stale mount)."""
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import signal
import stat
import subprocess
import tempfile
import time
import unittest

import harness
from harness import Pod

libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def renameat2(src, dst, flags):
    if libc.renameat2(AT_FDCWD, src.encode(), AT_FDCWD, dst.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), src)


def slurp(path, mode="r"):
    with open(path, mode) as fh:
        return fh.read()


def as_nobody(*cmd):
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd],
                          capture_output=True, text=True)


class MountTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # A small chunk size so that multi-chunk paths are exercised by small files.
        cls.pod = Pod(chunk_size="64KiB").start()
        cls.m = cls.pod.mnt

    @classmethod
    def tearDownClass(cls):
        cls.pod.cleanup()

    def p(self, *parts):
        return os.path.join(self.m, self._testMethodName, *parts)

    def setUp(self):
        os.mkdir(self.p())

    def assertErrno(self, code, fn, *args):
        with self.assertRaises(OSError) as cm:
            fn(*args)
        self.assertEqual(cm.exception.errno, code, f"{fn.__name__}{args}: {cm.exception}")

    # ---- files ------------------------------------------------------------------------
    def test_create_write_read_append(self):
        f = self.p("f")
        with open(f, "wb") as fh:
            fh.write(b"hello ")
        with open(f, "ab") as fh:
            fh.write(b"world")
        with open(f, "rb") as fh:
            self.assertEqual(fh.read(), b"hello world")
        self.assertEqual(os.stat(f).st_size, 11)
        fd = os.open(f, os.O_RDWR)
        os.pwrite(fd, b"W", 6)
        self.assertEqual(os.pread(fd, 5, 6), b"World")
        os.close(fd)
        self.assertErrno(errno.EEXIST, os.open, f, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        self.assertErrno(errno.ENOENT, os.open, self.p("missing"), os.O_RDONLY)
        self.assertErrno(errno.EISDIR, os.open, self.p(), os.O_WRONLY)
        self.assertErrno(errno.ENOTDIR, os.open, os.path.join(f, "x"), os.O_RDONLY)
        self.assertErrno(errno.ENAMETOOLONG, os.open, self.p("n" * 256), os.O_CREAT | os.O_WRONLY)

    def test_large_file_multi_chunk(self):
        data = os.urandom(3 * 1024 * 1024 + 777)
        f = self.p("big")
        with open(f, "wb") as fh:
            fh.write(data)
        with open(f, "rb") as fh:
            self.assertEqual(hashlib.sha256(fh.read()).digest(), hashlib.sha256(data).digest())
        # Overwrite across a chunk boundary, then read back around it.
        with open(f, "r+b") as fh:
            fh.seek(65536 - 3)
            fh.write(b"ABCDEF")
        with open(f, "rb") as fh:
            fh.seek(65536 - 5)
            self.assertEqual(fh.read(10), data[65531:65533] + b"ABCDEF" + data[65539:65541])

    def test_truncate_and_ftruncate(self):
        f = self.p("t")
        with open(f, "wb") as fh:
            fh.write(b"x" * 200000)
        os.truncate(f, 100)
        self.assertEqual(os.stat(f).st_size, 100)
        os.truncate(f, 150000)
        with open(f, "rb") as fh:
            d = fh.read()
        self.assertEqual(d, b"x" * 100 + b"\0" * 149900)
        fd = os.open(f, os.O_RDWR)
        os.ftruncate(fd, 5)
        os.close(fd)
        with open(f, "rb") as fh:
            self.assertEqual(fh.read(), b"xxxxx")
        with open(f, "wb") as fh:  # O_TRUNC
            pass
        self.assertEqual(os.stat(f).st_size, 0)
        self.assertErrno(errno.EISDIR, os.truncate, self.p(), 0)
        # Past the largest file (chunk size x 2^20; ext4: 16 TiB): EFBIG, and the pod lives on.
        self.assertErrno(errno.EFBIG, os.truncate, f, 1 << 62)
        self.assertErrno(errno.EINVAL, os.truncate, f, -1)
        self.assertEqual(os.stat(f).st_size, 0)

    def test_huge_sparse_files_and_efbig(self):
        # `truncate -s 1E` once killed the daemon (a chunk list of 2^38 entries).
        f = self.p("huge")
        open(f, "wb").close()
        self.assertErrno(errno.EFBIG, os.truncate, f, 1 << 60)
        fd = os.open(f, os.O_RDWR)
        try:
            # With the kernel's write-back cache (a pod alone) the write is accepted into the
            # page cache and its EFBIG surfaces when the pages are written (fsync, close).
            with self.assertRaises(OSError) as cm:
                os.pwrite(fd, b"x", (1 << 50) + 5)
                os.fsync(fd)
            self.assertIn(cm.exception.errno, (errno.EFBIG, errno.EIO))
            os.ftruncate(fd, 1 << 40)  # 1 TiB of hole: stores nothing
            os.pwrite(fd, b"tail", (1 << 40) - 4)
            self.assertEqual(os.pread(fd, 8, (1 << 40) - 8), b"\0\0\0\0tail")
            self.assertEqual(os.pread(fd, 8, 1 << 39), b"\0" * 8)
        finally:
            os.close(fd)
        self.assertEqual(os.stat(f).st_size, 1 << 40)
        where = self.pod.where(self._testMethodName, "huge")
        self.assertEqual(where["chunks"] + where["inline_chunks"], 1)  # one chunk, not 2^24
        self.assertEqual(subprocess.run(["truncate", "-s", "1E", f], capture_output=True).returncode, 1)
        self.assertTrue(os.path.exists(f))  # the daemon is alive and answers

    def test_fallocate(self):
        f = self.p("fa")
        fd = os.open(f, os.O_CREAT | os.O_RDWR)
        os.posix_fallocate(fd, 0, 300000)
        self.assertEqual(os.fstat(fd).st_size, 300000)
        self.assertEqual(os.pread(fd, 10, 299990), b"\0" * 10)
        os.pwrite(fd, b"end", 299997)
        os.posix_fallocate(fd, 1000, 5000)  # inside the file: nothing changes
        self.assertEqual(os.fstat(fd).st_size, 300000)
        self.assertEqual(os.pread(fd, 3, 299997), b"end")
        os.close(fd)
        with open(f, "rb") as fh:
            self.assertEqual(len(fh.read()), 300000)

    def test_unlinked_open_file_stays_readable(self):
        f = self.p("u")
        with open(f, "wb") as fh:
            fh.write(b"still here")
        fh = open(f, "rb")
        os.unlink(f)
        self.assertFalse(os.path.exists(f))
        self.assertEqual(fh.read(), b"still here")
        fh.close()
        self.assertErrno(errno.ENOENT, os.unlink, f)
        self.assertErrno(errno.EISDIR, os.unlink, self.p())

    # ---- directories ------------------------------------------------------------------
    def test_mkdir_rmdir_readdir(self):
        d = self.p("d")
        os.mkdir(d, 0o750)
        self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o750)
        self.assertErrno(errno.EEXIST, os.mkdir, d)
        self.assertErrno(errno.ENOENT, os.mkdir, self.p("no", "such"))
        names = {f"n{i:04d}" for i in range(1500)}
        for n in names:
            open(os.path.join(d, n), "w").close()
        self.assertEqual(set(os.listdir(d)), names)
        self.assertEqual(len(list(os.scandir(d))), 1500)
        self.assertErrno(errno.ENOTEMPTY, os.rmdir, d)
        for n in names:
            os.unlink(os.path.join(d, n))
        os.mkdir(os.path.join(d, "sub"))
        self.assertEqual(os.stat(d).st_nlink, 3)
        os.rmdir(os.path.join(d, "sub"))
        os.rmdir(d)
        self.assertErrno(errno.ENOENT, os.rmdir, d)
        open(self.p("file"), "w").close()
        self.assertErrno(errno.ENOTDIR, os.rmdir, self.p("file"))
        self.assertErrno(errno.ENOTDIR, os.mkdir, self.p("file", "x"))

    def test_directory_made_again_where_it_was_removed_is_new(self):
        d = self.p("again")
        os.mkdir(d, 0o700)
        os.setxattr(d, "user.old", b"1")
        os.rmdir(d)
        os.mkdir(d, 0o750)
        self.assertEqual(stat.S_IMODE(os.stat(d).st_mode), 0o750)
        self.assertEqual(os.listxattr(d), [])
        with open(os.path.join(d, "x"), "w") as fh:
            fh.write("inside")
        self.assertEqual(os.listdir(d), ["x"])

    # ---- rename -----------------------------------------------------------------------
    def test_rename(self):
        a, b = self.p("a"), self.p("b")
        with open(a, "w") as fh:
            fh.write("A")
        with open(b, "w") as fh:
            fh.write("B")
        self.assertErrno(errno.EEXIST, renameat2, a, b, RENAME_NOREPLACE)
        renameat2(a, b, RENAME_EXCHANGE)
        self.assertEqual(slurp(a), "B")
        self.assertEqual(slurp(b), "A")
        os.rename(a, b)  # replaces b
        self.assertFalse(os.path.exists(a))
        self.assertEqual(slurp(b), "B")
        self.assertErrno(errno.ENOENT, renameat2, a, b, RENAME_EXCHANGE)
        d1, d2 = self.p("d1"), self.p("d2")
        os.makedirs(os.path.join(d1, "in"))
        os.mkdir(d2)
        self.assertErrno(errno.EINVAL, os.rename, d1, os.path.join(d1, "in", "x"))
        self.assertErrno(errno.EISDIR, os.rename, b, d2)
        self.assertErrno(errno.ENOTDIR, os.rename, d2, b)
        os.rename(d2, d1 + "x")
        open(os.path.join(d1 + "x", "f"), "w").close()
        self.assertErrno(errno.ENOTEMPTY, os.rename, d1 + "x", d1)
        os.rename(d1, self.p("moved"))
        self.assertTrue(os.path.isdir(self.p("moved", "in")))
        self.assertErrno(errno.ENOENT, os.rename, self.p("nothing"), self.p("x"))

    # ---- links ------------------------------------------------------------------------
    def test_hard_links(self):
        a = self.p("a")
        with open(a, "w") as fh:
            fh.write("data")
        os.link(a, self.p("b"))
        self.assertEqual(os.stat(a).st_nlink, 2)
        self.assertEqual(os.stat(a).st_ino, os.stat(self.p("b")).st_ino)
        with open(self.p("b"), "a") as fh:
            fh.write("+")
        self.assertEqual(slurp(a), "data+")
        os.unlink(a)
        self.assertEqual(os.stat(self.p("b")).st_nlink, 1)
        self.assertErrno(errno.EEXIST, os.link, self.p("b"), self.p("b"))
        self.assertErrno(errno.EPERM, os.link, self.p(), self.p("dirlink"))

    def test_symlinks(self):
        os.symlink("target/path", self.p("l"))
        self.assertEqual(os.readlink(self.p("l")), "target/path")
        self.assertTrue(stat.S_ISLNK(os.lstat(self.p("l")).st_mode))
        with open(self.p("real"), "w") as fh:
            fh.write("R")
        os.symlink("real", self.p("l2"))
        self.assertEqual(slurp(self.p("l2")), "R")
        self.assertErrno(errno.EEXIST, os.symlink, "x", self.p("l"))
        self.assertErrno(errno.EINVAL, os.readlink, self.p("real"))

    def test_fifo_and_mknod(self):
        os.mkfifo(self.p("fifo"))
        self.assertTrue(stat.S_ISFIFO(os.stat(self.p("fifo")).st_mode))
        os.mknod(self.p("reg"), 0o600 | stat.S_IFREG)
        self.assertTrue(stat.S_ISREG(os.stat(self.p("reg")).st_mode))

    @unittest.skipUnless(os.geteuid() == 0, "creating device nodes needs root")
    def test_device_nodes(self):
        # Stored with their type and number, as ext4 does; never opened (the mount is nodev).
        os.mknod(self.p("null"), 0o640 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(self.p("disk"), 0o600 | stat.S_IFBLK, os.makedev(259, 65537))
        st = os.stat(self.p("null"))
        self.assertTrue(stat.S_ISCHR(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        self.assertEqual((os.major(st.st_rdev), os.minor(st.st_rdev)), (1, 3))
        st = os.stat(self.p("disk"))
        self.assertTrue(stat.S_ISBLK(st.st_mode))
        self.assertEqual((os.major(st.st_rdev), os.minor(st.st_rdev)), (259, 65537))
        kinds = {e.name: stat.S_IFMT(e.stat(follow_symlinks=False).st_mode) for e in os.scandir(self.p())}
        self.assertEqual(kinds, {"null": stat.S_IFCHR, "disk": stat.S_IFBLK})
        self.assertErrno(errno.EEXIST, os.mknod, self.p("null"), 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        # Renamed, linked, chmod-ed and removed like any other node.
        os.rename(self.p("null"), self.p("null2"))
        os.link(self.p("null2"), self.p("null3"))
        self.assertEqual(os.stat(self.p("null3")).st_nlink, 2)
        os.chmod(self.p("null2"), 0o600)
        os.chown(self.p("null2"), 7, 8)
        st = os.stat(self.p("null3"))
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, os.minor(st.st_rdev)), (0o600, 7, 8, 3))
        self.assertErrno(errno.EACCES, os.open, self.p("null2"), os.O_RDONLY)  # nodev
        # Only root may create one (CAP_MKNOD), as on a local disk; fifos stay open to all.
        os.chmod(self.p(), 0o777)
        r = as_nobody("python3", "-c", f"import os; os.mknod({self.p('c')!r}, 0o600 | 0o020000, os.makedev(1, 3))")
        self.assertIn("PermissionError", r.stderr)
        self.assertFalse(os.path.lexists(self.p("c")))
        r = as_nobody("python3", "-c", f"import os; os.mkfifo({self.p('fifo')!r})")
        self.assertEqual(r.returncode, 0, r.stderr)
        for name in ("null2", "null3", "disk", "fifo"):
            os.unlink(self.p(name))
        self.assertEqual(os.listdir(self.p()), [])

    # ---- attributes -------------------------------------------------------------------
    def test_chmod_chown_utimens(self):
        f = self.p("f")
        open(f, "w").close()
        os.chmod(f, 0o640)
        self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o640)
        os.chown(f, 1234, 5678)
        st = os.stat(f)
        self.assertEqual((st.st_uid, st.st_gid), (1234, 5678))
        os.utime(f, ns=(1_000_000_123, 2_000_000_456))
        st = os.stat(f)
        self.assertEqual(st.st_atime_ns, 1_000_000_123)
        self.assertEqual(st.st_mtime_ns, 2_000_000_456)
        before = os.stat(f).st_mtime_ns
        time.sleep(0.01)
        with open(f, "w") as fh:
            fh.write("x")
        self.assertGreater(os.stat(f).st_mtime_ns, before)

    def test_xattrs(self):
        f = self.p("f")
        open(f, "w").close()
        os.setxattr(f, "user.color", b"blue")
        self.assertEqual(os.getxattr(f, "user.color"), b"blue")
        self.assertIn("user.color", os.listxattr(f))
        self.assertErrno(errno.EEXIST, os.setxattr, f, "user.color", b"red", os.XATTR_CREATE)
        self.assertErrno(errno.ENODATA, os.setxattr, f, "user.size", b"1", os.XATTR_REPLACE)
        os.setxattr(f, "user.color", b"red", os.XATTR_REPLACE)
        self.assertEqual(os.getxattr(f, "user.color"), b"red")
        os.removexattr(f, "user.color")
        self.assertErrno(errno.ENODATA, os.getxattr, f, "user.color")
        self.assertErrno(errno.ENODATA, os.removexattr, f, "user.color")
        os.setxattr(self.p(), "user.on-dir", b"1")
        self.assertEqual(os.getxattr(self.p(), "user.on-dir"), b"1")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to switch to an unprivileged uid")
    def test_permissions_for_a_non_root_user(self):
        secret = self.p("secret")
        with open(secret, "w") as fh:
            fh.write("s")
        os.chmod(secret, 0o600)
        os.chmod(self.p(), 0o755)
        r = as_nobody("cat", secret)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Permission denied", r.stderr)
        r = as_nobody("touch", self.p("new"))
        self.assertIn("Permission denied", r.stderr)
        r = as_nobody("python3", "-c", f"import os; os.chown({secret!r}, 65534, 65534)")
        self.assertIn("PermissionError", r.stderr)
        os.chmod(secret, 0o644)
        r = as_nobody("cat", secret)
        self.assertEqual((r.returncode, r.stdout), (0, "s"))

    @unittest.skipUnless(os.geteuid() == 0, "needs root to switch to an unprivileged uid")
    def test_setuid_bits_are_cleared_like_on_a_local_disk(self):
        f = self.p("suid")
        with open(f, "w") as fh:
            fh.write("#!/bin/sh\n")
        os.chmod(f, 0o6777)
        os.chown(f, 65534, 65534)  # a change of owner clears both bits (group-exec is set)
        self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o777)
        os.chmod(f, 0o6777)
        r = as_nobody("sh", "-c", f"echo more >> {f}")  # an unprivileged write clears them
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o777)
        os.chmod(f, 0o4755)
        with open(f, "a") as fh:  # root keeps them (CAP_FSETID)
            fh.write("root\n")
        self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o4755)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to switch to an unprivileged uid")
    def test_setuid_bits_on_truncate_and_truncating_open(self):
        # With FUSE_HANDLE_KILLPRIV_V2 the kernel leaves these to the file system, flagging
        # the SETATTR and the OPEN; the results must stay those of a local disk.
        f = self.p("suid-trunc")
        with open(f, "w") as fh:
            fh.write("#!/bin/sh\n")
        os.chmod(f, 0o6777)
        r = as_nobody("python3", "-c", f"import os; os.truncate({f!r}, 3)")  # unprivileged truncate
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o777)
        os.chmod(f, 0o6777)
        r = as_nobody("sh", "-c", f": > {f}")  # unprivileged open with O_TRUNC
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o777)
        os.chmod(f, 0o2766)  # set-group-ID without group-exec is not a privilege: kept
        r = as_nobody("sh", "-c", f"echo more >> {f}")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o766 | 0o2000)
        os.chmod(f, 0o6777)
        os.truncate(f, 1)  # root keeps them (CAP_FSETID)
        with open(f, "w"):
            pass
        self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o6777)

    # ---- locks and statfs ---------------------------------------------------------------
    def test_local_locks(self):
        f = self.p("lock")
        open(f, "w").close()
        code = ("import fcntl,sys\nfh=open(sys.argv[1],'r+')\n"
                "try:\n  fcntl.{}(fh, fcntl.{} | fcntl.LOCK_NB)\n  print('got')\nexcept OSError:\n  print('busy')\n")
        for fn, mode in (("flock", "LOCK_EX"), ("lockf", "LOCK_EX")):
            with open(f, "r+") as fh:
                getattr(fcntl, fn)(fh, getattr(fcntl, mode))
                r = subprocess.run(["python3", "-c", code.format(fn, mode), f], capture_output=True, text=True)
                self.assertEqual(r.stdout.strip(), "busy", fn)
            r = subprocess.run(["python3", "-c", code.format(fn, mode), f], capture_output=True, text=True)
            self.assertEqual(r.stdout.strip(), "got", fn)

    def test_statfs(self):
        sv = os.statvfs(self.m)
        self.assertEqual(sv.f_namemax, 255)
        self.assertGreater(sv.f_blocks, 0)

    def test_fsync_and_status(self):
        f = self.p("synced")
        fd = os.open(f, os.O_CREAT | os.O_WRONLY)
        os.write(fd, b"z" * 100000)
        os.fsync(fd)
        os.close(fd)
        dfd = os.open(self.p(), os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        s = self.pod.status()
        self.assertEqual(s["network"], "test")
        self.assertEqual(s["pod"], "a")
        self.assertEqual(s["mountpoint"], self.m)
        self.assertGreaterEqual(s["files"], 1)
        self.assertGreaterEqual(s["chunks"], 2)


class DaemonTest(unittest.TestCase):
    """Restarts, crashes and bad input: each test runs its own pod."""

    def setUp(self):
        self.pod = Pod(chunk_size="64KiB")
        self.addCleanup(self.pod.cleanup)

    def assert_refused(self, message, **pod_settings):
        """Starts a second daemon on this test's storage directory (with `pod_settings`
        changed) and checks that it refuses to run, saying `message`."""
        other = Pod(root=tempfile.mkdtemp(prefix="wh-test-"), storage=self.pod.storage, **pod_settings)
        self.addCleanup(other.cleanup)
        r = subprocess.run([harness.BINARY, "run", "-c", other.config], capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(message, r.stdout + r.stderr)
        return other

    @unittest.skipUnless(os.geteuid() == 0, "creating device nodes needs root")
    def test_device_nodes_survive_restart(self):
        self.pod.start()
        os.mknod(self.pod.path("tty"), 0o640 | stat.S_IFCHR, os.makedev(4, 64))
        os.mknod(self.pod.path("sda"), 0o660 | stat.S_IFBLK, os.makedev(8, 0))
        self.pod.stop()
        self.pod.start()
        st = os.stat(self.pod.path("tty"))
        self.assertEqual((stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_rdev),
                         (stat.S_IFCHR, 0o640, os.makedev(4, 64)))
        st = os.stat(self.pod.path("sda"))
        self.assertEqual((stat.S_IFMT(st.st_mode), st.st_rdev), (stat.S_IFBLK, os.makedev(8, 0)))

    def test_data_survives_restart(self):
        self.pod.start()
        data = os.urandom(500000)
        with open(self.pod.path("f"), "wb") as fh:
            fh.write(data)
        os.makedirs(self.pod.path("a", "b"))
        os.symlink("f", self.pod.path("a", "l"))
        os.setxattr(self.pod.path("f"), "user.k", b"v")
        ino = os.stat(self.pod.path("f")).st_ino
        self.pod.stop()
        self.pod.start()
        with open(self.pod.path("f"), "rb") as fh:
            self.assertEqual(fh.read(), data)
        self.assertEqual(os.stat(self.pod.path("f")).st_ino, ino)
        self.assertEqual(os.readlink(self.pod.path("a", "l")), "f")
        self.assertTrue(os.path.isdir(self.pod.path("a", "b")))
        self.assertEqual(os.getxattr(self.pod.path("f"), "user.k"), b"v")

    def test_stale_mount_after_kill9_is_cleaned(self):
        self.pod.start()
        with open(self.pod.path("f"), "w") as fh:
            fh.write("before crash")
        self.pod.kill9()
        with self.assertRaises(OSError) as cm:
            os.stat(self.pod.mnt)
        self.assertEqual(cm.exception.errno, errno.ENOTCONN)
        self.pod.start()
        self.assertEqual(slurp(self.pod.path("f")), "before crash")

    def test_second_daemon_on_same_storage_is_refused(self):
        self.pod.start()
        other = self.assert_refused("already used by another wormhole daemon")
        self.assertFalse(os.path.ismount(other.mnt))

    def test_storage_of_another_network_is_refused(self):
        self.pod.start()
        self.pod.stop()
        self.assert_refused('belongs to network "test"', network="elsewhere")

    def test_control_socket_rejects_garbage_and_survives(self):
        import socket
        self.pod.start()
        for payload in (b"\x00\xff garbage\n", b"[1,2,3]\n", b'{"cmd": "explode"}\n', b"{" * 70000 + b"\n"):
            s = socket.socket(socket.AF_UNIX)
            s.connect(os.path.join(self.pod.storage, "control.sock"))
            try:
                s.sendall(payload)
                reply = s.recv(4096)
            except (BrokenPipeError, ConnectionResetError):
                reply = b"error (connection dropped by the daemon)"  # an oversized request
            s.close()
            self.assertIn(b"error", reply)
        self.assertEqual(self.pod.status()["pod"], "a")
        out = self.pod.cli("status").stdout
        self.assertIn("(mounted)", out)

    def test_changed_chunk_size_is_refused(self):
        self.pod.start()
        self.pod.stop()
        self.assert_refused("cannot change", chunk_size="1MiB")

    def test_malformed_config_names_file_and_line(self):
        with open(self.pod.config, "a") as fh:
            fh.write("colour = 'blue'\n")
        r = subprocess.run([harness.BINARY, "run", "-c", self.pod.config], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn(self.pod.config + ":", r.stderr)
        self.assertIn("colour: unknown key", r.stderr)
        self.assertFalse(os.path.ismount(self.pod.mnt))
        for sub in (["status"], ["gc"]):
            r = subprocess.run([harness.BINARY, *sub, "-c", self.pod.config], capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)

    def test_corrupt_chunk_gives_eio_and_names_the_file(self):
        self.pod.start()
        with open(self.pod.path("victim.bin"), "wb") as fh:
            fh.write(os.urandom(200000))
        self.pod.stop()
        chunks = []
        for dirpath, _, files in os.walk(os.path.join(self.pod.storage, "chunks")):
            chunks += [os.path.join(dirpath, f) for f in files if len(f) == 64]
        self.assertEqual(len(chunks), 3)  # 200000 bytes: 3 chunks of 64 KiB, the 3392-byte tail inline
        for c in chunks:
            with open(c, "r+b") as fh:
                fh.seek(100)
                b = fh.read(1)
                fh.seek(100)
                fh.write(bytes([b[0] ^ 0xFF]))
        self.pod.start()
        with self.assertRaises(OSError) as cm:
            with open(self.pod.path("victim.bin"), "rb") as fh:
                fh.read()
        self.assertEqual(cm.exception.errno, errno.EIO)
        log = self.pod.read_log()
        self.assertIn("/victim.bin", log)
        self.assertIn("corrupt", log)

    def test_deleted_data_waits_in_the_trash_and_can_be_restored(self):
        self.pod.start()  # default network.trash_retention: a day
        data = os.urandom(300000)
        os.mkdir(self.pod.path("d"))
        with open(self.pod.path("d", "f"), "wb") as fh:
            fh.write(data)
        self.assertEqual(self.pod.status()["chunks"], 5)
        os.unlink(self.pod.path("d", "f"))
        self.assertIn("removed 0 chunks", self.pod.cli("gc", "--grace", "0s").stdout)
        trash = json.loads(self.pod.cli("trash", "--json").stdout)["trash"]
        self.assertEqual([(t["name"], t["from"], t["size"]) for t in trash], [("f", "/d", 300000)])
        with open(self.pod.path("d", "f"), "wb") as fh:  # the name is taken again meanwhile
            fh.write(b"new")
        out = self.pod.cli("trash", "restore", trash[0]["id"]).stdout
        self.assertIn("/d/f.restored-1", out)
        self.assertEqual(slurp(self.pod.path("d", "f.restored-1"), "rb"), data)
        self.assertEqual(slurp(self.pod.path("d", "f"), "rb"), b"new")
        self.assertEqual(json.loads(self.pod.cli("trash", "--json").stdout)["trash"], [])
        r = self.pod.cli("trash", "restore", trash[0]["id"], check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not in the trash", r.stderr)

    def test_deleted_data_is_garbage_collected_after_the_retention(self):
        self.pod = Pod(chunk_size="64KiB", extra_network='trash_retention = "0s"')
        self.addCleanup(self.pod.cleanup)
        self.pod.start()
        with open(self.pod.path("f"), "wb") as fh:
            fh.write(os.urandom(300000))
        self.assertEqual(self.pod.status()["chunks"], 5)
        os.unlink(self.pod.path("f"))
        with open(self.pod.path("keep"), "wb") as fh:
            fh.write(b"k" * 1000)
        out = self.pod.cli("gc", "--grace", "0s").stdout
        self.assertIn("removed 5 chunks", out)
        self.assertEqual(self.pod.status()["chunks"], 0)  # small files live inline in metadata
        self.assertEqual(slurp(self.pod.path("keep"), "rb"), b"k" * 1000)
        self.assertEqual(json.loads(self.pod.cli("trash", "--json").stdout)["trash"], [])

    @unittest.skipUnless(os.geteuid() == 0, "needs root to mount a small tmpfs")
    def test_full_disk_gives_enospc_and_corrupts_nothing(self):
        small = tempfile.mkdtemp(prefix="wh-small-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", small], check=True)
        self.addCleanup(lambda: (subprocess.run(["umount", "-l", small]), os.rmdir(small)))
        pod = Pod(storage=os.path.join(small, "data"), chunk_size="1MiB")
        self.addCleanup(pod.cleanup)
        pod.start()
        keep = os.urandom(3 << 20)
        with open(pod.path("keep"), "wb") as fh:
            fh.write(keep)
        with self.assertRaises(OSError) as cm:
            with open(pod.path("filler"), "wb") as fh:
                for _ in range(100):
                    fh.write(os.urandom(1 << 20))
                    fh.flush()
                os.fsync(fh.fileno())
        self.assertEqual(cm.exception.errno, errno.ENOSPC)
        self.assertEqual(slurp(pod.path("keep"), "rb"), keep)
        os.unlink(pod.path("filler"))
        pod.cli("gc", "--grace", "0s")
        with open(pod.path("after"), "wb") as fh:
            fh.write(b"a" * 100000)
        self.assertEqual(slurp(pod.path("after"), "rb"), b"a" * 100000)
        pod.stop()
        pod.start()
        self.assertEqual(slurp(pod.path("keep"), "rb"), keep)



class StopTest(unittest.TestCase):
    """A stop request ends the daemon in bounded time, whichever thread the signal lands on
    (libfuse only sets a flag; a SIGTERM that hit a RocksDB or gRPC thread used to leave the
    FUSE loop waiting for a request that never came: a CI run saw 30 s)."""

    def test_sigterm_on_a_helper_thread_stops_the_daemon(self):
        pod = Pod()
        self.addCleanup(pod.cleanup)
        pod.start()
        with open(os.path.join(pod.mnt, "f"), "w") as fh:
            fh.write("x")
        pid = pod.proc.pid
        # A thread that is not the loop's and does not block SIGTERM (libfuse's workers do):
        # kill() on its id prefers it as the receiver of the process's signal.
        helper = None
        for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
            if tid == pid:
                continue
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                blocked = int(next(line for line in fh if line.startswith("SigBlk:")).split()[1], 16)
            if not blocked & (1 << (signal.SIGTERM - 1)):
                helper = tid
                break
        self.assertIsNotNone(helper, "no helper thread takes SIGTERM: the test proves nothing")
        os.kill(helper, signal.SIGTERM)
        try:
            pod.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.fail("the daemon ignored a SIGTERM that landed on a helper thread")
        self.assertEqual(pod.proc.returncode, 0, pod.read_log())
        self.assertIn("stopped", pod.read_log())

if __name__ == "__main__":
    harness.main()
