"""Test harness: runs real `wormhole` daemons on temporary storage with a FUSE mount.

Every pod started here is stopped by PID and unmounted with `fusermount3 -u` by the test
that started it, also when the test fails.
"""
import argparse
import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

BINARY = None  # set by main()


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--seed", type=int, default=None)
    args, rest = parser.parse_known_args()
    return args, rest


def main():
    global BINARY
    args, rest = parse_args()
    BINARY = os.path.abspath(args.binary)
    if args.seed is not None:
        os.environ["WORMHOLE_SEED"] = str(args.seed)
    # Daemons under test abort on a broken invariant instead of logging and repairing it.
    os.environ.setdefault("WORMHOLE_INVARIANTS", "fatal")
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


def tree(root):
    """Everything observable about a tree under `root`, as a sorted list: per entry its path,
    type, mode, and size, link count and SHA-256 (files), target (symlinks), xattrs."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            entry = [os.path.normpath(os.path.join(rel, n)), stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode)]
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    entry += [st.st_size, st.st_nlink, hashlib.sha256(fh.read()).hexdigest()]
            elif stat.S_ISLNK(st.st_mode):
                entry.append(os.readlink(p))
            try:
                entry.append(sorted((k, os.getxattr(p, k, follow_symlinks=False))
                                    for k in os.listxattr(p, follow_symlinks=False)))
            except OSError as e:
                entry.append(errno.errorcode.get(e.errno, e.errno))
            out.append(entry)
    return sorted(out, key=lambda e: e[0])


def unmount(path):
    if os.path.ismount(path) or _is_dead_mount(path):
        subprocess.run(["fusermount3", "-u", "-z", path], stderr=subprocess.DEVNULL, check=False)


def _is_dead_mount(path):
    try:
        os.stat(path)
        return False
    except OSError as e:
        return e.errno == 107  # ENOTCONN


class Pod:
    """One daemon with its own config, storage directory and mountpoint."""

    def __init__(self, root=None, name="a", network="test", chunk_size="4MiB", storage=None, extra_pod="",
                 extra_network="", config=None, prefix=None):
        self.root = root or tempfile.mkdtemp(prefix="wh-test-")
        os.chmod(self.root, 0o755)  # let permission tests reach the mount as another user
        self.name = name
        self.mnt = os.path.join(self.root, "mnt", name)
        self.storage = storage or os.path.join(self.root, "data", name)
        self.log_path = os.path.join(self.root, f"{name}.log")
        if config:  # a network file shared with other pods (see Cluster)
            self.config = config
        else:
            self.config = os.path.join(self.root, f"{name}.toml")
            with open(self.config, "w") as f:
                f.write(f'[network]\nname = "{network}"\nchunk_size = "{chunk_size}"\n{extra_network}\n'
                        f'[[pod]]\nname = "{name}"\nmountpoint = "{self.mnt}"\nstorage = "{self.storage}"\n'
                        f'{extra_pod}\n')
        self.proc = None
        # Run the daemon under this command, e.g. ["nsenter", "--net=/run/netns/x"] (its
        # FUSE mount and control socket stay visible here).
        self.prefix = prefix or []
        self.env = None  # extra environment of the daemon, e.g. {"WORMHOLE_JOIN_TOKEN": ...}

    def start(self, wait=True):
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                self.prefix + [BINARY, "run", "-c", self.config, "-p", self.name, "--log-level",
                 os.environ.get("WORMHOLE_LOG_LEVEL", "info")],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(self.env or {})})
        if wait:
            deadline = time.time() + 30
            while not self._mounted():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.read_log()}")
                if time.time() > deadline:
                    raise RuntimeError("mount did not appear: " + self.read_log())
                time.sleep(0.02)
        return self

    def _mounted(self):
        """True once this daemon reports its mount live (a dead mount left by a killed
        daemon can still look mounted to os.path.ismount)."""
        r = subprocess.run([BINARY, "status", "--json", "-c", self.config, "-p", self.name], capture_output=True,
                           text=True)
        return r.returncode == 0 and json.loads(r.stdout).get("mounted") is True

    def stop(self):
        """SIGTERM, then wait for a clean unmount; a daemon that does not exit 0 (a crash,
        a sanitizer report) is an error."""
        rc = 0
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.hung_stacks = thread_stacks(self.proc.pid)
                self.proc.kill()
                self.proc.wait()
                rc = "hung"
        elif self.proc:
            rc = self.proc.returncode
        unmount(self.mnt)
        self.proc = None
        if rc != 0:
            stacks = getattr(self, "hung_stacks", "")
            raise RuntimeError(f"daemon did not stop cleanly (exit {rc}): {self.read_log()[-3000:]}{stacks}")

    def kill9(self):
        """kill -9: leaves the dead mount behind, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self):
        try:
            self.stop()
        finally:
            unmount(self.mnt)
            shutil.rmtree(self.root, ignore_errors=True)

    def read_log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def cli(self, *args, check=True):
        r = subprocess.run([BINARY, *args, "-c", self.config, "-p", self.name], capture_output=True, text=True,
                           timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"wormhole {' '.join(args)} failed: {r.stderr}")
        return r

    def status(self):
        return json.loads(self.cli("status", "--json").stdout)

    def where(self, *parts):
        return json.loads(self.cli("where", "--json", self.path(*parts)).stdout)

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)


def thread_stacks(pid):
    """The stacks of every thread of a hung daemon (gdb, when installed), so that a hang in
    CI says where it waits instead of only that it did."""
    if not shutil.which("gdb"):
        return ""
    try:
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 30"],
                             capture_output=True, text=True, timeout=60).stdout
    except subprocess.TimeoutExpired:
        return ""
    return "\nthreads of the hung daemon:\n" + out[-20000:]


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scaled_failure_times(extra_network):
    """The failure times of a network under test, when WORMHOLE_TIMEOUT_SCALE is above 1 and
    the test sets none of its own: the defaults (suspect after 3 s, down after 10 s) times the
    scale. A sanitized build is several times slower; with the defaults its pods would see
    each other as silent (and their exchanges, whose deadline follows suspect_after, time out)
    while they are only slow."""
    scale = float(os.environ.get("WORMHOLE_TIMEOUT_SCALE", "1"))
    if scale <= 1 or "failure" in extra_network:
        return ""
    return (f'failure = {{ suspect_after = "{int(3 * scale)}s", '
            f'down_after = "{int(10 * scale)}s" }}\n')


class Cluster:
    """Several pods of one network on 127.0.0.1, described by one shared config file."""

    def __init__(self, names=("a", "b", "c"), network="test", chunk_size="4MiB", redundancy=2, roles=None,
                 root_dir=None, conflict="keep-both", delay="0s", mode="async", extra_network="", extra_pod=None,
                 listen=None, prefix=None):
        self.root = tempfile.mkdtemp(prefix="wh-cluster-", dir=root_dir)
        os.chmod(self.root, 0o755)
        self.config = os.path.join(self.root, "network.toml")
        roles = roles or {}
        extra_network += scaled_failure_times(extra_network)
        text = (f'[network]\nname = "{network}"\nchunk_size = "{chunk_size}"\nredundancy = {redundancy}\n'
                f'{extra_network}conflict = "{conflict}"\n[network.replication]\ndelay = "{delay}"\nmode = "{mode}"\n')
        for n in names:
            text += (f'\n[[pod]]\nname = "{n}"\nrole = "{roles.get(n, "storage")}"\n'
                     f'listen = "{(listen or {}).get(n) or f"127.0.0.1:{free_port()}"}"\n'
                     f'mountpoint = "{self.root}/mnt/{n}"\nstorage = "{self.root}/data/{n}"\n'
                     f'{(extra_pod or {}).get(n, "")}')
        with open(self.config, "w") as f:
            f.write(text)
        self.pods = {n: Pod(root=self.root, name=n, config=self.config, prefix=(prefix or {}).get(n)) for n in names}

    def start(self):
        for p in self.pods.values():
            p.start()
        return self

    def start_connected(self):
        """Starts every pod and waits until each sees every other alive (placement and
        repair need the peers known)."""
        self.start()
        for pod in self.pods.values():
            wait_for(lambda: all(p["state"] == "alive" for p in pod.status()["peers"]), what=f"peers of {pod.name}")
        return self

    def cleanup(self):
        errors = []
        for p in self.pods.values():
            try:
                p.stop()
            except RuntimeError as e:
                errors.append(str(e))
            unmount(p.mnt)
        shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise RuntimeError("\n".join(errors))


def wait_for(predicate, timeout_s=30, what="condition"):
    """Polls `predicate` until it returns a true value (returned) or the timeout passes
    (scaled by WORMHOLE_TIMEOUT_SCALE: sanitized builds are slower)."""
    deadline = time.time() + timeout_s * float(os.environ.get("WORMHOLE_TIMEOUT_SCALE", "1"))
    last_error = None
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError as e:  # e.g. ENODATA or ENOENT until the change arrives
            last_error = e
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error})")
