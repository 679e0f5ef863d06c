"""Cluster tests on real daemons: three pods on 127.0.0.1, each with its own mount and
storage directory. Changes made through one pod's mount appear on the others."""
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import time
import unittest

import harness
import netns
from harness import Cluster, wait_for


def slurp(path, mode="rb"):
    with open(path, mode) as fh:
        return fh.read()


def write_random(pod, name, size=1_000_000):
    data = os.urandom(size)
    with open(pod.path(name), "wb") as fh:
        fh.write(data)
    return data


def has_copy(pod, name):
    """Whether `pod` has the current version of `name` and all its chunks. The file's
    creation and its first version are two ops: a file may exist before its version."""
    info = pod.where(name) if os.path.exists(pod.path(name)) else {}
    return info.get("chunks", 0) > 0 and info.get("chunks_here") == info["chunks"]


class ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(chunk_size="64KiB").start()
        cls.a, cls.b, cls.c = (cls.cluster.pods[n] for n in "abc")
        for pod in (cls.a, cls.b, cls.c):  # every pod sees the two others
            wait_for(lambda: all(p["state"] == "alive" for p in pod.status()["peers"]), what=f"peers of {pod.name}")

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_a_file_written_on_a_is_read_on_b_and_c(self):
        small = b"hello from a\n"
        big = os.urandom(300_000)  # several 64 KiB chunks: fetched from a by the readers
        with open(self.a.path("small.txt"), "wb") as fh:
            fh.write(small)
        with open(self.a.path("big.bin"), "wb") as fh:
            fh.write(big)
        for pod in (self.b, self.c):
            wait_for(lambda: os.path.exists(pod.path("big.bin")) and os.stat(pod.path("big.bin")).st_size == len(big),
                     what=f"big.bin on {pod.name}")
            self.assertEqual(slurp(pod.path("small.txt")), small)  # committed before big.bin was created
            self.assertEqual(slurp(pod.path("big.bin")), big)

    def test_namespace_changes_propagate(self):
        os.makedirs(self.a.path("tree", "sub"))
        with open(self.a.path("tree", "f"), "w") as fh:
            fh.write("x")
        os.setxattr(self.a.path("tree", "f"), "user.tag", b"blue")
        wait_for(lambda: os.path.exists(self.b.path("tree", "f")), what="tree/f on b")
        # change it on b, see it on c and a
        os.rename(self.b.path("tree", "f"), self.b.path("tree", "sub", "g"))
        os.chmod(self.b.path("tree", "sub"), 0o700)
        for pod in (self.a, self.c):
            wait_for(lambda: os.path.exists(pod.path("tree", "sub", "g")), what=f"rename seen on {pod.name}")
            # The kernel forgets its cached "f" a moment after the op is applied (eventual, ms).
            wait_for(lambda: not os.path.exists(pod.path("tree", "f")), what=f"old name gone on {pod.name}")
            wait_for(lambda: stat.S_IMODE(os.stat(pod.path("tree", "sub")).st_mode) == 0o700, what="chmod")
            # The xattr op may arrive after the rename made on b (b may not have had it yet).
            wait_for(lambda: os.getxattr(pod.path("tree", "sub", "g"), "user.tag") == b"blue", what="xattr")
        os.unlink(self.c.path("tree", "sub", "g"))
        for pod in (self.a, self.b):
            wait_for(lambda: not os.path.exists(pod.path("tree", "sub", "g")), what=f"delete seen on {pod.name}")

    def test_close_to_open_holds_while_a_handle_is_open(self):
        # Once: `exec 7<f` on b kept b on the old content and size until 7 was closed.
        with open(self.a.path("held.txt"), "wb") as fh:
            fh.write(b"first version\n")
        wait_for(lambda: slurp(self.b.path("held.txt")) == b"first version\n", what="first version on b")
        held = open(self.b.path("held.txt"), "rb")
        try:
            self.assertEqual(held.read(), b"first version\n")
            for i in range(3):
                content = f"version {i} from a, longer than the first one\n".encode() * (i + 1)
                with open(self.a.path("held.txt"), "wb") as fh:
                    fh.write(content)
                # A new open on b sees the new content and size within a second...
                wait_for(lambda: slurp(self.b.path("held.txt")) == content, timeout_s=1,
                         what=f"version {i} on b while a handle is open")
                self.assertEqual(os.stat(self.b.path("held.txt")).st_size, len(content))
                # ...and so do reads through the handle that stayed open (its pages were dropped).
                held.seek(0)
                self.assertEqual(held.read(), content)
        finally:
            held.close()

    def test_concurrent_mkdir_of_one_path_gives_one_directory(self):
        for pod in (self.a, self.b):  # at once: neither has seen the other's mkdir (or did)
            os.makedirs(pod.path("shared"), exist_ok=True)
        with open(self.a.path("shared", "from-a"), "w") as fh:
            fh.write("a")
        with open(self.b.path("shared", "from-b"), "w") as fh:
            fh.write("b")
        for pod in (self.a, self.b, self.c):
            wait_for(lambda: sorted(os.listdir(pod.path("shared"))) == ["from-a", "from-b"], what=f"merge on {pod.name}")
            self.assertEqual([n for n in os.listdir(pod.mnt) if n == "shared"], ["shared"])

    def test_a_foreign_network_is_refused(self):
        # A pod of another network knocking on a's port is refused and logged; nothing breaks.
        other = Cluster(names=("x", "y"), network="elsewhere")
        try:
            text = slurp(other.config, "r")
            port_a = slurp(self.cluster.config, "r").split('listen = "')[1].split('"')[0]
            first = text.split('listen = "')[1].split('"')[0]
            text = text.replace(first, port_a, 1)  # x "listens" on a's address: y will talk to a
            with open(other.config, "w") as f:
                f.write(text)
            y = other.pods["y"]
            y.start(wait=False)
            # With TLS (the default), y asks a for a certificate: refused, and y gives up.
            wait_for(lambda: "refused a join" in self.a.read_log(), what="a refusing the foreign pod")
            self.assertIn('network "elsewhere"', self.a.read_log())
            self.assertNotEqual(y.proc.wait(timeout=30), 0)
            self.assertIn('network "elsewhere"', y.read_log())
            y.proc = None
        finally:
            other.cleanup()
        self.assertEqual(self.a.status()["pod"], "a")

    def test_garbage_on_the_pod_port_breaks_nothing(self):
        import socket
        port_a = int(slurp(self.cluster.config, "r").split('listen = "127.0.0.1:')[1].split('"')[0])
        for payload in (os.urandom(65536),  # not HTTP/2 at all
                        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(4096)):  # a preface, then junk frames
            with socket.create_connection(("127.0.0.1", port_a), timeout=5) as conn:
                try:
                    conn.sendall(payload)
                    conn.recv(1024)
                except OSError:
                    pass  # the pod may close the connection first: that is the point
        with open(self.a.path("after-garbage.txt"), "w") as fh:
            fh.write("fine")
        wait_for(lambda: os.path.exists(self.b.path("after-garbage.txt")), what="replication after garbage")
        self.assertEqual(self.a.status()["pod"], "a")


class FailureTest(unittest.TestCase):
    """Redundancy 2: a pod killed with -9 loses nothing that is readable elsewhere; it
    catches up when it comes back; a pod started later sees everything."""

    def setUp(self):
        self.cluster = Cluster(names=("a", "b", "c", "d"), chunk_size="64KiB", redundancy=2)
        self.addCleanup(self.cluster.cleanup)
        self.a, self.b, self.c, self.d = (self.cluster.pods[n] for n in "abcd")
        for pod in (self.a, self.b, self.c):  # d starts later
            pod.start()
        for pod in (self.a, self.b, self.c):
            wait_for(lambda: sum(p["state"] == "alive" for p in pod.status()["peers"]) == 2, what="peers alive")

    def test_kill9_one_pod_then_restart_and_a_late_pod(self):
        data = os.urandom(400_000)
        with open(self.a.path("precious.bin"), "wb") as fh:
            fh.write(data)
        info = self.a.where("precious.bin")
        holders = [h["name"] for h in info["holders"]]
        self.assertEqual(len(holders), 2)
        self.assertEqual(holders[0], "a")  # the writer holds the first copy
        second = self.cluster.pods[holders[1]]
        wait_for(lambda: os.path.exists(second.path("precious.bin")) and
                 second.where("precious.bin").get("chunks_here") == info["chunks"], what="second copy")
        self.a.kill9()
        harness.unmount(self.a.mnt)
        for pod in (self.b, self.c):
            self.assertEqual(slurp(pod.path("precious.bin")), data, pod.name)
        # New data goes to live pods: once b sees a as gone, a is not chosen as a holder.
        wait_for(lambda: any(p["name"] == "a" and p["state"] != "alive" for p in self.b.status()["peers"]),
                 what="b noticing that a is gone")
        with open(self.b.path("later.bin"), "wb") as fh:
            fh.write(os.urandom(200_000))
        self.assertEqual(sorted(h["name"] for h in self.b.where("later.bin")["holders"]), ["b", "c"])
        # Life goes on without a; then a comes back and catches up.
        os.mkdir(self.b.path("while-a-was-down"))
        wait_for(lambda: os.path.isdir(self.c.path("while-a-was-down")), what="directory on c")
        with open(self.c.path("while-a-was-down", "note.txt"), "w") as fh:
            fh.write("a missed this")
        wait_for(lambda: os.path.exists(self.b.path("while-a-was-down", "note.txt")), what="note on b")
        self.a.start()
        # The file's creation and its content are two ops: wait for the content.
        wait_for(lambda: os.path.exists(self.a.path("while-a-was-down", "note.txt")) and
                 slurp(self.a.path("while-a-was-down", "note.txt"), "r") == "a missed this", what="a catching up")
        # A pod that was never started sees the whole tree and reads every file.
        self.d.start()
        wait_for(lambda: os.path.exists(self.d.path("while-a-was-down", "note.txt")), what="d catching up")
        self.assertEqual(slurp(self.d.path("precious.bin")), data)


class ReclaimTest(unittest.TestCase):
    """Deleted and overwritten data is reclaimed on a network: once every pod has seen the
    delete (causal stability) and the trash retention passed, the entry, its versions and
    then its chunks go; idle pods do not hold this back (their heartbeats carry progress)."""

    def test_deleted_and_overwritten_data_is_reclaimed(self):
        chunk = 1 << 20
        cluster = Cluster(chunk_size="1MiB", redundancy=2, extra_network='trash_retention = "2s"\n')
        self.addCleanup(cluster.cleanup)
        cluster.start()
        pods = [cluster.pods[n] for n in "abc"]
        for pod in pods:
            wait_for(lambda: all(p["state"] == "alive" for p in pod.status()["peers"]), what=f"peers of {pod.name}")
        # 3 pods x 8 files x ~8.3 MB = 200 MB written; then half overwritten, a quarter deleted.
        size = 8_300_000
        names = []
        for i, pod in enumerate(pods):
            for j in range(8):
                name = f"r{i}-{j}.bin"
                write_random(pod, name, size)
                names.append(name)
        for k, name in enumerate(names):
            writer = pods[(k + 1) % 3]  # through another pod than the one that made it
            wait_for(lambda: os.path.exists(writer.path(name)) and os.stat(writer.path(name)).st_size == size,
                     what=f"{name} on {writer.name}")
            if k % 4 in (0, 1):
                write_random(writer, name, size)  # overwritten: the old version's chunks go
            elif k % 4 == 2:
                os.unlink(writer.path(name))      # deleted: kept in the trash, then purged
        live = [n for k, n in enumerate(names) if k % 4 != 2]
        for pod in pods:
            wait_for(lambda: sorted(n for n in os.listdir(pod.mnt) if n.startswith("r")) == sorted(live),
                     what=f"the final tree on {pod.name}")
        # Every pod purges the trash once the deletes are stable and 2 s old.
        for pod in pods:
            wait_for(lambda: json.loads(pod.cli("trash", "--json").stdout)["trash"] == [], timeout_s=60,
                     what=f"the trash of {pod.name} purged")

        def needed(pod):
            """Chunk bytes the live versions this pod has chunks of need (holders, and
            readers' cached copies: referenced, so kept)."""
            total = 0
            for name in live:
                info = pod.where(name)
                total += min(info["size"], info["chunks_here"] * chunk)
            return total

        for pod in pods:
            # The copies of new versions are pushed after close: wait until they are complete.
            wait_for(lambda: all(pod.where(n)["chunks_here"] in (0, pod.where(n)["chunks"]) for n in live),
                     what=f"copies settled on {pod.name}")
            pod.cli("gc", "--grace", "0s")
            have, need = pod.status()["chunk_bytes"], needed(pod)
            self.assertGreater(need, 0, pod.name)
            self.assertLessEqual(have, need * 1.05, f"{pod.name} keeps {have} chunk bytes, its live versions need {need}")
            self.assertGreaterEqual(have, need * 0.95, pod.name)
        for name in live:  # and nothing live was lost
            self.assertEqual(os.stat(pods[0].path(name)).st_size, size)
            self.assertEqual(len(slurp(pods[0].path(name))), size)


    def test_a_forgotten_pod_no_longer_holds_the_purge_back(self):
        cluster = Cluster(chunk_size="64KiB", redundancy=2, extra_network='trash_retention = "1s"\n')
        self.addCleanup(cluster.cleanup)
        cluster.start_connected()
        a, b, c = (cluster.pods[n] for n in "abc")
        c.kill9()
        harness.unmount(c.mnt)
        with open(a.path("gone.txt"), "w") as fh:
            fh.write("soon deleted")
        wait_for(lambda: os.path.exists(b.path("gone.txt")), what="gone.txt on b")
        os.unlink(a.path("gone.txt"))
        # c never saw the delete: it stays in the trash, however long we wait...
        time.sleep(3)
        self.assertEqual([t["name"] for t in json.loads(a.cli("trash", "--json").stdout)["trash"]], ["gone.txt"])
        # ...until c is forgotten (refused while it answers; here it is down).
        r = a.cli("forget", "a", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cannot forget itself", r.stderr)
        wait_for(lambda: any(p["name"] == "c" and p["state"] == "down" for p in a.status()["peers"]), what="c down")
        a.cli("forget", "c")
        for pod in (a, b):
            wait_for(lambda: any(p["name"] == "c" and p["state"] == "forgotten" for p in pod.status()["peers"]),
                     what=f"c forgotten on {pod.name}")
            wait_for(lambda: json.loads(pod.cli("trash", "--json").stdout)["trash"] == [], timeout_s=30,
                     what=f"the trash of {pod.name} purged without c")
        # A forgotten identity never comes back: its pods refuse it (it may join anew, empty).
        c.start(wait=False)
        refusal = "start it with an empty storage directory to join again"
        wait_for(lambda: refusal in a.read_log() or refusal in b.read_log(), what="c refused")
        time.sleep(2)
        self.assertTrue(all(p["state"] == "forgotten" for p in a.status()["peers"] if p["name"] == "c"))


class JoinTest(unittest.TestCase):
    """A pod that is in no one's configuration joins by contacting any member (the member
    list is replicated); it starts from a snapshot when the others trimmed their op logs."""

    def test_a_new_pod_joins_through_a_member(self):
        cluster = Cluster(chunk_size="64KiB", redundancy=2, extra_network='join = "token"\ntoken = "s3cret"\n')
        self.addCleanup(cluster.cleanup)
        a, b, c = (cluster.pods[n] for n in "abc")
        cluster.start_connected()
        os.makedirs(a.path("docs", "old"))
        for pod in (b, c):
            wait_for(lambda: os.path.isdir(pod.path("docs", "old")), what=f"docs on {pod.name}")
        data = os.urandom(300_000)
        with open(b.path("docs", "report.bin"), "wb") as fh:
            fh.write(data)
        with open(c.path("docs", "old", "note.txt"), "w") as fh:
            fh.write("from c")
        for pod in (a, b, c):
            wait_for(lambda: os.path.exists(pod.path("docs", "old", "note.txt")) and
                     os.path.exists(pod.path("docs", "report.bin")), what=f"tree on {pod.name}")
        # Every pod has every op, so each trims its op log: a newcomer then needs a snapshot.
        for pod in (a, b, c):
            wait_for(lambda: pod.status()["op_log_entries"] == 0, what=f"op log of {pod.name} trimmed")
        a_listen = slurp(cluster.config, "r").split('listen = "')[1].split('"')[0]

        def newcomer(name, token):
            return harness.Pod(root=cluster.root, name=name, chunk_size="64KiB",
                               extra_network=f'redundancy = 2\njoin = "token"\ntoken = "{token}"',
                               extra_pod=f'listen = "127.0.0.1:{harness.free_port()}"\npeers = ["{a_listen}"]')
        intruder = newcomer("x", "guess")
        with self.assertRaises(RuntimeError):
            intruder.start()  # refused: the daemon exits before mounting
        intruder.proc = None
        self.assertIn("wrong join token", intruder.read_log())
        self.assertIn("wrong join token", a.read_log())

        d = newcomer("d", "s3cret")
        self.addCleanup(d.cleanup)
        d.start()
        self.assertIn("installed a snapshot", d.read_log())
        self.assertEqual(slurp(d.path("docs", "old", "note.txt")), b"from c")  # mounted with the tree
        self.assertEqual(slurp(d.path("docs", "report.bin")), data)
        # The others learn of d from the replicated member list, and d's changes reach them.
        for pod in (b, c):
            wait_for(lambda: any(p["name"] == "d" and p["state"] == "alive" for p in pod.status()["peers"]),
                     what=f"{pod.name} talking to d")
        with open(d.path("docs", "from-d.txt"), "w") as fh:
            fh.write("hello")
        for pod in (a, b, c):
            wait_for(lambda: os.path.exists(pod.path("docs", "from-d.txt")) and
                     slurp(pod.path("docs", "from-d.txt")) == b"hello", what=f"d's file on {pod.name}")
        # d restarts while a, the pod it joined through, is down: it knows the others from
        # the replicated member list.
        d.stop()
        a.stop()
        d.start()
        with open(d.path("docs", "after-restart.txt"), "w") as fh:
            fh.write("still here")
        wait_for(lambda: os.path.exists(b.path("docs", "after-restart.txt")), what="d's new file on b")


class ReplicationModeTest(unittest.TestCase):
    """replication.mode: "sync" returns from close once every holder has the version durably
    (so the writer may die right after); "async" copies after close. Both send the chunks
    along a chain of holders: the writer sends each byte once."""

    def start(self, mode):
        cluster = Cluster(chunk_size="64KiB", redundancy=3, mode=mode)
        self.addCleanup(cluster.cleanup)
        cluster.start()
        pods = [cluster.pods[n] for n in "abc"]
        for pod in pods:
            wait_for(lambda: all(p["state"] == "alive" for p in pod.status()["peers"]), what=f"peers of {pod.name}")
        return pods

    def assert_chain(self, a, b, c, size):
        sent = a.status()["transfer"]["pushed_bytes"]
        self.assertGreaterEqual(sent, size)
        self.assertLess(sent, 1.5 * size, "the writer sent the data more than once")
        received = [p.status()["transfer"]["received_bytes"] for p in (b, c)]
        self.assertTrue(all(r >= size for r in received), received)

    def test_sync_close_returns_with_every_copy_in_place(self):
        a, b, c = self.start("sync")
        data = write_random(a, "sync.bin")
        # No waiting: once close returned, b and c have the version and its chunks.
        for pod in (b, c):
            info = pod.where("sync.bin")
            self.assertEqual(info["chunks_here"], info["chunks"], pod.name)
            self.assertEqual(len(info["holders"]), 3)
        self.assert_chain(a, b, c, len(data))
        a.kill9()
        harness.unmount(a.mnt)
        for pod in (b, c):
            self.assertEqual(slurp(pod.path("sync.bin")), data, pod.name)
            self.assertEqual(pod.status()["transfer"]["fetched_bytes"], 0, "nothing was pulled")

    def test_async_copies_follow_close(self):
        a, b, c = self.start("async")
        data = write_random(a, "async.bin")
        for pod in (b, c):
            wait_for(lambda: has_copy(pod, "async.bin"), what=f"copy on {pod.name}")
        # Pushed along the chain; whether a slow push (a sanitized build) was overtaken by a
        # holder's pull 3 s later is timing, so only the writer's side is asserted.
        sent = a.status()["transfer"]["pushed_bytes"]
        self.assertGreaterEqual(sent, len(data))
        self.assertLess(sent, 1.5 * len(data), "the writer sent the data more than once")


class RemoteReadTest(unittest.TestCase):
    """A pod that holds no copy (role client) reads from the holders: from both at once for a
    large file; from the one left when the other dies; EIO naming the file when none is left."""

    def test_reads_from_holders(self):
        cluster = Cluster(names=("h1", "h2", "r"), chunk_size="64KiB", redundancy=2, roles={"r": "client"})
        self.addCleanup(cluster.cleanup)
        cluster.start()
        h1, h2, r = (cluster.pods[n] for n in ("h1", "h2", "r"))
        for pod in (h1, h2, r):
            wait_for(lambda: all(p["state"] == "alive" for p in pod.status()["peers"]), what=f"peers of {pod.name}")
        files = {name: write_random(h1, name, 2_000_000) for name in ("one.bin", "two.bin", "three.bin")}
        for name in files:
            wait_for(lambda: has_copy(h2, name), what=f"{name} on h2")
            wait_for(lambda: os.path.exists(r.path(name)) and os.stat(r.path(name)).st_size == len(files[name]),
                     what=f"{name} on r")
        self.assertEqual(slurp(r.path("one.bin")), files["one.bin"])
        served = [p.status()["transfer"]["served_bytes"] for p in (h1, h2)]
        self.assertTrue(all(b > 0 for b in served), f"both holders serve a large read: {served}")
        self.assertGreaterEqual(r.status()["transfer"]["fetched_bytes"], len(files["one.bin"]))
        # One holder dies: the other serves.
        h2.kill9()
        harness.unmount(h2.mnt)
        self.assertEqual(slurp(r.path("two.bin")), files["two.bin"])
        # None left: EIO, and the log names the file.
        h1.kill9()
        harness.unmount(h1.mnt)
        with self.assertRaises(OSError) as caught:
            slurp(r.path("three.bin"))
        self.assertEqual(caught.exception.errno, errno.EIO)
        self.assertIn("three.bin", r.read_log())

    def test_random_reads_fetch_blocks_and_streaming_reads_fetch_chunks(self):
        """A pod without a copy reads a few scattered 4 KiB pieces of a file: it fetches the
        64 KiB blocks holding them (with the chunk's block table), not the 1 MiB chunks; a
        reader streaming through the file then gets whole chunks. Every byte is right."""
        cluster = Cluster(names=("h1", "r"), chunk_size="1MiB", redundancy=1, roles={"r": "client"})
        self.addCleanup(cluster.cleanup)
        cluster.start()
        h1, r = cluster.pods["h1"], cluster.pods["r"]
        data = write_random(h1, "db.bin", 8 << 20)
        wait_for(lambda: os.path.exists(r.path("db.bin")) and os.stat(r.path("db.bin")).st_size == len(data),
                 what="db.bin on r")
        before = r.status()["transfer"]["fetched_bytes"]
        offsets = [(i * 2_654_435_761) % (len(data) - 4096) // 4096 * 4096 for i in range(1, 25)]
        with open(r.path("db.bin"), "rb", buffering=0) as fh:
            for off in offsets:
                self.assertEqual(os.pread(fh.fileno(), 4096, off), data[off:off + 4096], f"at {off}")
        fetched = r.status()["transfer"]["fetched_bytes"] - before
        # One block and a table per read (the kernel may read a little around each).
        self.assertLessEqual(fetched, len(offsets) * (3 * 65536 + 1024), "random reads fetched whole chunks")
        self.assertGreater(fetched, 0)
        self.assertEqual(slurp(r.path("db.bin")), data)
        self.assertGreaterEqual(r.status()["transfer"]["fetched_bytes"] - before - fetched, len(data) // 2,
                                "a streaming reader gets whole chunks")


class ConflictTest(unittest.TestCase):
    """Two pods write one file at once (a 2 s replication delay makes the writes concurrent
    for sure): every pod ends with the same result, the one the strategy says."""

    def start_with_file(self, name, content, conflict="keep-both"):
        """Three pods with a 2 s replication delay and file `name`, written on a, on all."""
        cluster = Cluster(chunk_size="64KiB", conflict=conflict, delay="2s")
        self.addCleanup(cluster.cleanup)
        a, b, c = (cluster.pods[n] for n in "abc")
        cluster.start()
        with open(a.path(name), "w") as fh:
            fh.write(content)
        for pod in (b, c):
            wait_for(lambda: os.path.exists(pod.path(name)) and slurp(pod.path(name), "r") == content,
                     what=f"{name} on {pod.name}")
        return a, b, c

    def write_concurrently(self, conflict):
        a, b, c = self.start_with_file("doc.txt", "base", conflict)
        with open(a.path("doc.txt"), "w") as fh:
            fh.write("from a")
        time.sleep(0.05)  # b's version gets the later stamp
        with open(b.path("doc.txt"), "w") as fh:
            fh.write("from b")

        def view(pod):
            names = sorted(n for n in os.listdir(pod.mnt) if n.startswith("doc"))
            return [(n, slurp(pod.path(n))) for n in names]
        wait_for(lambda: view(a) == view(b) == view(c) and len({v for _, v in view(a)} - {b"base"}) ==
                 (2 if conflict == "keep-both" else 1) and slurp(a.path("doc.txt")) == b"from b",
                 timeout_s=30, what="all pods agreeing")
        return view(a)

    def test_keep_both(self):
        result = dict(self.write_concurrently("keep-both"))
        self.assertEqual(result.pop("doc.txt"), b"from b")
        self.assertEqual(len(result), 1)
        sibling, content = result.popitem()
        self.assertRegex(sibling, r"^doc\.conflict-a-\d{8}-\d{6}\.txt$")
        self.assertEqual(content, b"from a")

    def test_last_write_wins(self):
        self.assertEqual(self.write_concurrently("last-write-wins"), [("doc.txt", b"from b")])

    def test_a_write_concurrent_with_a_delete_keeps_the_file(self):
        a, b, c = self.start_with_file("notes.txt", "draft")
        os.unlink(a.path("notes.txt"))  # neither pod has seen the other's change yet
        with open(b.path("notes.txt"), "w") as fh:
            fh.write("final")
        for pod in (a, b, c):
            wait_for(lambda: os.path.exists(pod.path("notes.txt")) and slurp(pod.path("notes.txt")) == b"final",
                     timeout_s=30, what=f"the written file kept on {pod.name}")


class UnderReplicationTest(unittest.TestCase):
    """Sync mode, redundancy 3 on three pods: a holder that dies or hangs costs its copy, not
    minutes of close; the version is reported under-replicated (status, where, the log),
    never silently."""

    def setUp(self):
        self.cluster = Cluster(chunk_size="64KiB", redundancy=3, mode="sync")
        self.addCleanup(self.cluster.cleanup)
        self.cluster.start_connected()
        self.a, self.b, self.c = (self.cluster.pods[n] for n in "abc")

    def timed_write(self, name, size=1_000_000):
        start = time.monotonic()
        data = write_random(self.a, name, size)
        return data, time.monotonic() - start

    def assert_under_replicated(self, name, copies):
        for pod in (self.a, self.b):  # any pod that has the version knows its named holders
            info = pod.where(name)["replication"]
            self.assertTrue(info["under_replicated"], (pod.name, info))
            self.assertEqual((info["copies"], info["redundancy"]), (copies, 3), pod.name)
        listed = self.a.status()["replication"]
        self.assertIn("/" + name, [v["path"] for v in listed["versions"]])
        self.assertGreaterEqual(listed["under_replicated"], 1)
        self.assertRegex(self.a.read_log(), rf"{name}: version \S+ is under-replicated: {copies} of 3 copies")

    def test_a_killed_holder_costs_its_copy_and_is_reported(self):
        self.c.kill9()
        harness.unmount(self.c.mnt)
        # Right away: a may still think c alive and place a copy on it.
        data, took = self.timed_write("first.bin")
        self.assertLess(took, 15, "close waited on the dead pod")
        self.assertEqual(sorted(h["name"] for h in self.a.where("first.bin")["holders"]), ["a", "b"])
        self.assert_under_replicated("first.bin", 2)
        self.assertEqual(slurp(self.b.path("first.bin")), data)  # b has it: sync mode
        # Placement finding too few pods is said once per change of condition, not per file.
        wait_for(lambda: any(p["name"] == "c" and p["state"] != "alive" for p in self.a.status()["peers"]),
                 what="a noticing that c is gone")
        before = self.a.status()["replication"]["placements_short"]
        for i in range(3):
            self.timed_write(f"more-{i}.bin", 100_000)
        self.assertGreaterEqual(self.a.status()["replication"]["placements_short"], before + 3)
        self.assertEqual(self.a.read_log().count("placement: 2 of 3 wanted copies"), 1)
        self.assertGreaterEqual(self.a.status()["replication"]["under_replicated"], 4)
        # c comes back and catches up on metadata; repair gives it the copies it missed (the
        # versions written while it was away have 2 holders of 3), and a new version has 3.
        self.c.start()
        wait_for(lambda: os.path.exists(self.c.path("more-2.bin")), what="c catching up")
        wait_for(lambda: all(p["state"] == "alive" for p in self.a.status()["peers"]), what="a seeing c again")
        for name in ["first.bin"] + [f"more-{i}.bin" for i in range(3)]:
            wait_for(lambda: not self.a.where(name)["replication"]["under_replicated"], timeout_s=60,
                     what=f"repair of {name}")
            self.assertEqual(sorted(h["name"] for h in self.a.where(name)["holders"]), ["a", "b", "c"])
            self.assertTrue(has_copy(self.c, name), name)
        # The list is reviewed every sync round (a second).
        wait_for(lambda: self.a.status()["replication"]["under_replicated"] == 0, what="the list emptied")
        self.timed_write("after.bin")
        info = self.a.where("after.bin")
        self.assertEqual(len(info["holders"]), 3)
        self.assertFalse(info["replication"]["under_replicated"], info)
        self.assertIn("placement: enough reachable storage pods", self.a.read_log())

    def test_a_hung_holder_costs_seconds_not_minutes(self):
        # SIGSTOP: c's port accepts connections but nothing answers (a hung machine). a still
        # counts c alive and places a copy on it: the push to c times out (10 s + the data
        # at 8 MB/s), b's copy is kept, and close returns (was: 30 s per attempt, in series).
        os.kill(self.c.proc.pid, signal.SIGSTOP)
        try:
            data, took = self.timed_write("stuck.bin")
            self.assertLess(took, 25, "close waited too long on a hung pod")
            self.assertEqual(sorted(h["name"] for h in self.a.where("stuck.bin")["holders"]), ["a", "b"])
            self.assert_under_replicated("stuck.bin", 2)
            self.assertEqual(slurp(self.b.path("stuck.bin")), data)
        finally:
            os.kill(self.c.proc.pid, signal.SIGCONT)


class RebalanceTest(unittest.TestCase):
    """A storage pod that joins a network with data takes its share by placement: the
    versions that rank it among their first two holders get a copy on it (at
    failure.rebalance_rate), then the holder it displaces releases its copy; no version
    ever has fewer than two copies on the way."""

    def test_a_joining_pod_takes_its_share(self):
        cluster = Cluster(chunk_size="64KiB", redundancy=2, extra_network=(
            'join = "token"\ntoken = "s3cret"\n'
            'failure = { suspect_after = "2s", down_after = "3s", rebalance_rate = "16MiB" }\n'))
        self.addCleanup(cluster.cleanup)
        a, b, c = (cluster.pods[n] for n in "abc")
        cluster.start_connected()
        names = [f"r{i}.bin" for i in range(24)]
        data = {n: write_random(a, n, 100_000) for n in names}
        for n in names:
            for h in a.where(n)["holders"]:
                wait_for(lambda: has_copy(cluster.pods[h["name"]], n), what=f"{h['name']}'s copy of {n}")
        a_listen = slurp(cluster.config, "r").split('listen = "')[1].split('"')[0]
        d = harness.Pod(root=cluster.root, name="d", chunk_size="64KiB",
                        extra_network='redundancy = 2\njoin = "token"\ntoken = "s3cret"\n'
                                      'failure = { suspect_after = "2s", down_after = "3s" }',
                        extra_pod=f'listen = "127.0.0.1:{harness.free_port()}"\npeers = ["{a_listen}"]')
        self.addCleanup(d.cleanup)
        d.start()
        for pod in (a, b, c):
            wait_for(lambda: any(p["name"] == "d" and p["state"] == "alive" for p in pod.status()["peers"]),
                     what=f"{pod.name} talking to d")

        def holders(n):
            return sorted(h["name"] for h in a.where(n)["holders"])

        # d's share: about a third of the versions (it outranks the non-writer holder
        # among b, c and d for those); the writer a keeps every copy it wrote. Settled:
        # every version has two holders, no pod sees a surplus, d claimed what it copied.
        def settled():
            placement = {n: holders(n) for n in names}
            on_d = [n for n in names if "d" in placement[n]]
            return (all(len(h) == 2 for h in placement.values()) and len(on_d) >= 3 and
                    all(pod.status()["repair"]["surplus"] == 0 for pod in (a, b, c, d)) and
                    d.status()["repair"]["rebalanced_versions"] == len(on_d) and placement)
        try:
            placement = wait_for(settled, timeout_s=90, what="d taking its share")
        except AssertionError:
            print({n: holders(n) for n in names})
            for pod in (a, b, c, d):
                print(pod.name, pod.status()["repair"])
                print("\n".join(l for l in pod.read_log().splitlines() if "rebalance" in l)[-2000:])
            raise
        time.sleep(6)  # a survey later, nothing moves any more
        self.assertEqual({n: holders(n) for n in names}, placement)
        on_d = [n for n in names if "d" in placement[n]]
        self.assertLess(len(on_d), len(names) * 2 // 3, on_d)
        for n in names:
            self.assertIn("a", placement[n], n)
        for n in on_d:
            self.assertTrue(has_copy(d, n), n)
            self.assertEqual(slurp(d.path(n)), data[n], n)
        self.assertRegex(d.read_log(), r"rebalance: \d+ versions belong on this pod")
        self.assertRegex(d.cli("status").stdout,
                         rf"balance     0 versions with copies beyond the redundancy; since start, this pod took {len(on_d)} ")


class RepairTest(unittest.TestCase):
    """Redundancy 2 over three pods: a pod killed for good is declared lost after
    failure.repair_delay, and the survivors re-create every copy it held, so that each
    version has two copies on live pods again; status tells the story."""

    def setUp(self):
        self.cluster = Cluster(chunk_size="64KiB", redundancy=2, extra_network=(
            'failure = { suspect_after = "2s", down_after = "3s", repair_delay = "6s", repair_rate = "8MiB" }\n'))
        self.addCleanup(self.cluster.cleanup)
        self.cluster.start_connected()
        self.a, self.b, self.c = (self.cluster.pods[n] for n in "abc")

    def live_copies(self, pod, name):
        """Holders of `name`'s version, as `pod` sees them, that are not lost."""
        return sorted(h["name"] for h in pod.where(name)["holders"] if h["state"] in ("alive", "suspect"))

    def test_a_lost_pod_s_copies_are_re_created(self):
        names = [f"f{i}.bin" for i in range(24)]
        data = {n: write_random(self.a, n, 200_000) for n in names}
        on_c = [n for n in names if "c" in [h["name"] for h in self.a.where(n)["holders"]]]
        self.assertTrue(on_c, "placement put no copy on c (rendezvous over 24 files)")
        for n in on_c:
            wait_for(lambda: has_copy(self.c, n), what=f"c's copy of {n}")
        self.c.kill9()
        harness.unmount(self.c.mnt)
        # Down first (no repair yet: it may come back), then lost, then repaired.
        wait_for(lambda: any(p["name"] == "c" and p["state"] == "down" for p in self.a.status()["peers"]),
                 what="c down")
        self.assertEqual(self.a.status()["repair"].get("repaired_versions", 0), 0)
        wait_for(lambda: any(p["name"] == "c" and p["state"] == "lost" for p in self.a.status()["peers"]),
                 what="c lost")
        for n in on_c:
            wait_for(lambda: self.live_copies(self.a, n) == ["a", "b"] and has_copy(self.b, n), timeout_s=60,
                     what=f"repair of {n}")
        for n in names:
            self.assertEqual(len(self.live_copies(self.b, n)), 2, n)
            self.assertEqual(slurp(self.b.path(n)), data[n], n)
        # b made the copies (a held them all already) and says so; a's survey agrees
        # nothing is missing.
        for pod in (self.a, self.b):
            wait_for(lambda: pod.status()["repair"]["copies_missing"] == 0, what=f"{pod.name}'s survey seeing the repair")
        rb = self.b.status()["repair"]
        self.assertEqual(rb["repaired_versions"], len(on_c), rb)
        self.assertEqual(rb["lost"], ["c"])
        text = self.b.cli("status").stdout
        self.assertRegex(text, r"repair      0 of \d+ versions under-replicated, 0 unavailable; 0 copies")
        self.assertIn("lost pods   c", text)
        self.assertRegex(self.b.read_log(), r"repair: \d+ versions .* to copy to this pod")
        # `status --watch` on a pipe: one plain line a second until stopped.
        watch = subprocess.Popen([harness.BINARY, "status", "--watch", "-c", self.b.config, "-p", "b"],
                                 stdout=subprocess.PIPE, text=True)
        try:
            lines = [watch.stdout.readline() for _ in range(2)]
        finally:
            watch.kill()
            watch.wait()
        for line in lines:
            self.assertRegex(line, r"^\d\d:\d\d:\d\d favorable, operations open; 0 versions under-replicated, 0 copies")


class SurplusTest(unittest.TestCase):
    """c comes back after its copies were re-created: each version then has three copies;
    the lowest-ranked holder of each releases its copy once the two others confirm they
    hold it, and a pod that released (cache size 0) frees those chunks."""

    live_copies = RepairTest.live_copies

    def test_a_pod_back_after_its_repair_leaves_no_surplus(self):
        self.cluster = Cluster(chunk_size="64KiB", redundancy=2, extra_network=(
            'failure = { suspect_after = "2s", down_after = "3s", repair_delay = "6s", repair_rate = "8MiB" }\n'),
            extra_pod={n: '[pod.cache]\nsize = "0"\n' for n in "abc"})
        self.addCleanup(self.cluster.cleanup)
        self.cluster.start_connected()
        a, b, c = (self.cluster.pods[n] for n in "abc")
        names = [f"s{i}.bin" for i in range(16)]
        data = {n: write_random(a, n, 150_000) for n in names}
        on_c = [n for n in names if "c" in [h["name"] for h in a.where(n)["holders"]]]
        self.assertTrue(on_c, "placement put no copy on c (rendezvous over 16 files)")
        for n in on_c:
            wait_for(lambda: has_copy(c, n), what=f"c's copy of {n}")
        c.kill9()
        harness.unmount(c.mnt)
        for n in on_c:
            wait_for(lambda: self.live_copies(a, n) == ["a", "b"] and has_copy(b, n), timeout_s=60,
                     what=f"repair of {n}")
        c.start()
        # Three copies of each repaired version for a moment, then two: a (the writer)
        # keeps its own, one of b and c releases; every pod agrees.
        for n in on_c:
            for pod in (a, b, c):
                wait_for(lambda: len(self.live_copies(pod, n)) == 2, timeout_s=60, what=f"{n} back to 2 copies on {pod.name}")
            self.assertIn("a", self.live_copies(a, n))
        for pod in (a, b, c):
            wait_for(lambda: pod.status()["repair"]["surplus"] == 0, timeout_s=30, what=f"{pod.name} seeing no surplus")
        released = sum(pod.status()["repair"].get("released_versions", 0) for pod in (b, c))
        self.assertEqual(released, len(on_c))
        for n in names:
            holders = self.live_copies(a, n)
            self.assertEqual(len(holders), 2, n)
            for h in holders:
                self.assertTrue(has_copy(self.cluster.pods[h], n), (n, h))
            self.assertEqual(slurp(c.path(n)), data[n], n)
        # A pod that released a copy frees its chunks (no cache budget here); what it
        # holds stays. (Reading on c above fetched what it lacks: the cache budget of 0 makes
        # those garbage too.)
        for pod in (b, c):
            pod.cli("gc", "--grace", "0s")
            for n in names:
                self.assertEqual(has_copy(pod, n), pod.name in self.live_copies(a, n), (pod.name, n))
        self.assertRegex(b.read_log() + c.read_log(), r"rebalance: released \d+ surplus copies")


class SlowRepairTest(unittest.TestCase):
    """A repair slower than gc_grace: the copies made are cache to GC until their claim
    applies, so they must be claimed (after checking they are still here) well within the
    grace period; a claim naming a holder without data would hide the loss from repair."""

    live_copies = RepairTest.live_copies

    def test_copies_are_claimed_before_gc_may_take_them(self):
        gc = 'gc_grace = "2s"\ngc_interval = "1s"\n[pod.cache]\nsize = "0"\n'
        cluster = Cluster(chunk_size="64KiB", redundancy=2, extra_network=(
            'failure = { suspect_after = "2s", down_after = "3s", repair_delay = "5s", repair_rate = "256KiB" }\n'),
            extra_pod={n: gc for n in "abc"})
        self.addCleanup(cluster.cleanup)
        cluster.start_connected()
        a, b, c = (cluster.pods[n] for n in "abc")
        names = [f"w{i}.bin" for i in range(24)]
        data = {n: write_random(a, n, 200_000) for n in names}
        on_c = [n for n in names if "c" in [h["name"] for h in a.where(n)["holders"]]]
        self.assertGreaterEqual(len(on_c), 4, "placement put few copies on c (rendezvous over 24 files)")
        for n in on_c:
            wait_for(lambda: has_copy(c, n), what=f"c's copy of {n}")
        c.kill9()
        harness.unmount(c.mnt)
        # b re-creates c's copies at 256 KiB/s: several seconds, longer than gc_grace.
        for n in on_c:
            wait_for(lambda: self.live_copies(a, n) == ["a", "b"], timeout_s=90, what=f"repair of {n}")
        time.sleep(3)  # GC runs every second: anything claimed without its data is gone by now
        for n in on_c:
            self.assertTrue(has_copy(b, n), f"b is named a holder of {n} but lacks its chunks")
        a.stop()  # b alone must serve every file
        for n in names:
            self.assertEqual(slurp(b.path(n)), data[n], n)


class NoStormTest(unittest.TestCase):
    """A pod back before failure.repair_delay costs a catch-up, nothing else: no copy is
    re-created while it was down (no repair storm after a reboot)."""

    def test_a_pod_back_before_the_delay_costs_no_repair(self):
        cluster = Cluster(chunk_size="64KiB", redundancy=2, extra_network=(
            'failure = { suspect_after = "2s", down_after = "3s", repair_delay = "60s" }\n'))
        self.addCleanup(cluster.cleanup)
        cluster.start_connected()
        a, b, c = (cluster.pods[n] for n in "abc")
        names = [f"n{i}.bin" for i in range(12)]
        for n in names:
            write_random(a, n, 100_000)
        for n in names:
            for h in a.where(n)["holders"]:
                wait_for(lambda: has_copy(cluster.pods[h["name"]], n), what=f"{h['name']}'s copy of {n}")
        c.kill9()
        harness.unmount(c.mnt)
        wait_for(lambda: any(p["name"] == "c" and p["state"] == "down" for p in a.status()["peers"]), what="c down")
        time.sleep(8)  # several surveys while c is down
        for pod in (a, b):
            rp = pod.status()["repair"]
            self.assertEqual(rp["repaired_versions"], 0, (pod.name, rp))
            self.assertEqual(rp["copies_missing"], 0, (pod.name, rp))  # down still counts
            self.assertEqual(rp["lost"], [], (pod.name, rp))
        c.start()
        wait_for(lambda: all(p["state"] == "alive" for p in a.status()["peers"]), what="c back")
        time.sleep(6)
        for pod in (a, b, c):
            self.assertEqual(pod.status()["repair"]["repaired_versions"], 0, pod.name)


class DrainTest(unittest.TestCase):
    """`wormhole drain c`: c's copies move to a and b while c keeps serving them (no version
    below its two copies on the way), then c leaves the network; draining below the
    redundancy, unknown pods and forgetting a live pod are refused with clear messages."""

    def setUp(self):
        self.cluster = Cluster(chunk_size="64KiB", redundancy=2,
                               extra_network='failure = { suspect_after = "2s", down_after = "3s" }\n')
        self.addCleanup(self.cluster.cleanup)
        self.cluster.start_connected()
        self.a, self.b, self.c = (self.cluster.pods[n] for n in "abc")

    def test_drain_moves_every_copy_then_the_pod_leaves(self):
        names = [f"d{i}.bin" for i in range(16)]
        data = {n: write_random(self.a, n, 150_000) for n in names}
        on_c = [n for n in names if "c" in [h["name"] for h in self.a.where(n)["holders"]]]
        self.assertTrue(on_c, "placement put no copy on c (rendezvous over 16 files)")
        for n in on_c:
            wait_for(lambda: has_copy(self.c, n), what=f"c's copy of {n}")
        r = self.a.cli("drain", "nosuch", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("pods: a, b, c", r.stderr)
        r = self.a.cli("forget", "c", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--force", r.stderr)
        self.assertIn("draining", self.a.cli("drain", "c").stdout)
        # Nothing new goes to c while it drains.
        wait_for(lambda: any(p["name"] == "c" and p["draining"] for p in self.b.status()["peers"]), what="b sees it")
        write_random(self.b, "new.bin", 150_000)
        self.assertNotIn("c", [h["name"] for h in self.b.where("new.bin")["holders"]])
        # Draining b as well would leave one storage pod for two copies.
        r = self.a.cli("drain", "b", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("would leave 1 storage pods for 2 copies", r.stderr)
        # c leaves once every version has two copies on a and b.
        wait_for(lambda: self.c.status()["situation"]["left"], timeout_s=60, what="c leaving")
        for pod in (self.a, self.b):
            wait_for(lambda: any(p["name"] == "c" and p["state"] == "forgotten" for p in pod.status()["peers"]),
                     what=f"{pod.name} forgetting c")
        for n in names:
            holders = [h["name"] for h in self.a.where(n)["holders"] if h["name"] in ("a", "b")]
            self.assertEqual(sorted(holders), ["a", "b"], n)
            self.assertTrue(has_copy(self.b, n), n)
        self.assertIn("drain done", self.c.read_log())
        self.c.stop()
        for n in names:
            self.assertEqual(slurp(self.b.path(n)), data[n], n)
        # The network goes on with two pods.
        write_random(self.a, "after.bin", 150_000)
        self.assertEqual(sorted(h["name"] for h in self.a.where("after.bin")["holders"]), ["a", "b"])


class SituationTest(unittest.TestCase):
    """Situations and reactions: two of three pods gone makes versions without a live copy
    (grave), and the declared reaction (read-only) applies on the survivor, lifted when a pod
    returns; a pod cut off from every other applies its own disconnect strategy, lifted on
    reconnect."""

    def start(self, grave):
        self.cluster = Cluster(chunk_size="64KiB", redundancy=2, extra_network=(
            'failure = { suspect_after = "2s", down_after = "3s" }\n'
            f'reactions = {{ grave = "{grave}", mitigated = "continue" }}\n'),
            extra_pod={"c": 'disconnect = "read-only"\n'})
        self.addCleanup(self.cluster.cleanup)
        self.cluster.start_connected()
        self.a, self.b, self.c = (self.cluster.pods[n] for n in "abc")

    def situation(self, pod):
        return pod.status().get("situation", {})

    def test_two_of_three_pods_down_is_grave_and_read_only_until_one_returns(self):
        self.start(grave="read-only")
        # Files written on b: those placed on b and c have no live copy once both are gone.
        names = [f"g{i}.bin" for i in range(16)]
        for n in names:
            write_random(self.b, n, 100_000)
        away = [n for n in names if sorted(h["name"] for h in self.b.where(n)["holders"]) == ["b", "c"]]
        self.assertTrue(away, "no file placed on b and c (rendezvous over 16 files)")
        for n in names:
            wait_for(lambda: os.path.exists(self.a.path(n)) and self.a.where(n).get("chunks", 0) > 0,
                     what=f"{n} known on a")
        self.assertEqual(self.situation(self.a)["situation"], "favorable")
        with open(self.a.path("before.txt"), "w") as fh:
            fh.write("writable")
        for pod in (self.b, self.c):
            pod.kill9()
            harness.unmount(pod.mnt)
        wait_for(lambda: self.situation(self.a)["situation"] == "grave", what="grave on a")
        st = self.situation(self.a)
        self.assertEqual(st["operations"], "read-only", st)
        self.assertRegex(st["reason"], r"\d+ versions have no live copy")
        with self.assertRaises(OSError) as e:
            with open(self.a.path("after.txt"), "w") as fh:
                fh.write("x")
        self.assertEqual(e.exception.errno, errno.EROFS)
        with self.assertRaises(OSError) as e:
            os.mkdir(self.a.path("newdir"))
        self.assertEqual(e.exception.errno, errno.EROFS)
        self.assertEqual(slurp(self.a.path("before.txt"), "r"), "writable")  # reads go on
        with self.assertRaises(OSError) as e:  # no live copy: EIO naming the file, never garbage
            slurp(self.a.path(away[0]))
        self.assertEqual(e.exception.errno, errno.EIO)
        log = self.a.read_log()
        self.assertIn("situation: grave", log)
        self.assertIn("a change was refused (read-only)", log)
        self.assertIn("situation   grave", self.a.cli("status").stdout)
        # b returns: every version has a live copy again; the reaction is lifted by itself.
        self.b.start()
        wait_for(lambda: self.situation(self.a)["situation"] != "grave", timeout_s=40, what="grave lifted")
        self.assertEqual(self.situation(self.a)["operations"], "open")
        with open(self.a.path("after.txt"), "w") as fh:
            fh.write("writable again")

    def test_a_cut_off_pod_applies_its_disconnect_strategy_until_reconnected(self):
        self.start(grave="continue")  # so that only c's own strategy makes it read-only
        # a and b hang (SIGSTOP: as unreachable as a cut cable); c, with disconnect =
        # "read-only", refuses changes; a and b resume and c lifts it by itself.
        for pod in (self.a, self.b):
            os.kill(pod.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: self.situation(self.c).get("disconnected"), what="c cut off")
            st = self.situation(self.c)
            self.assertEqual(st["operations"], "read-only", st)
            self.assertIn("disconnected since", self.c.cli("status").stdout)
            with self.assertRaises(OSError) as e:
                with open(self.c.path("cut.txt"), "w") as fh:
                    fh.write("x")
            self.assertEqual(e.exception.errno, errno.EROFS)
        finally:
            for pod in (self.a, self.b):
                os.kill(pod.proc.pid, signal.SIGCONT)
        wait_for(lambda: not self.situation(self.c).get("disconnected"), what="c reconnected")
        self.assertEqual(self.situation(self.c)["operations"], "open")
        with open(self.c.path("cut.txt"), "w") as fh:
            fh.write("back")
        self.assertIn("cut off from every other pod", self.c.read_log())
        self.assertIn("connected again", self.c.read_log())


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("ip"), "network namespaces need root and iproute2")
class PartitionTest(unittest.TestCase):
    """Three pods in their own network namespaces; c's link is taken down (a real
    partition: its packets go nowhere, unlike a stopped process whose kernel still answers).
    c applies its disconnect strategy (read-only) and says so; a and b see it down and go on;
    once the link is back, c is writable again and catches up."""

    def test_a_partitioned_pod_applies_its_strategy_and_catches_up(self):
        links = netns.PodNet(["a", "b", "c"])
        self.addCleanup(links.close)
        names = ("a", "b", "c")
        cluster = Cluster(chunk_size="64KiB", redundancy=2,
                          extra_network='failure = { suspect_after = "2s", down_after = "3s" }\n',
                          extra_pod={"c": 'disconnect = "read-only"\n'},
                          listen={n: links.address(n) for n in names}, prefix={n: links.prefix(n) for n in names})
        self.addCleanup(cluster.cleanup)
        cluster.start_connected()
        a, b, c = (cluster.pods[n] for n in names)
        with open(c.path("before.txt"), "w") as fh:
            fh.write("from c")
        wait_for(lambda: os.path.exists(a.path("before.txt")), what="c's file on a")
        links.cut("c")
        wait_for(lambda: c.status()["situation"]["operations"] == "read-only", timeout_s=20, what="c read-only")
        self.assertTrue(c.status()["situation"]["disconnected"])
        with self.assertRaises(OSError) as e:
            with open(c.path("during.txt"), "w") as fh:
                fh.write("x")
        self.assertEqual(e.exception.errno, errno.EROFS)
        self.assertEqual(slurp(c.path("before.txt")), b"from c")  # reads go on
        wait_for(lambda: any(p["name"] == "c" and p["state"] == "down" for p in a.status()["peers"]), what="c down on a")
        data = write_random(a, "while-cut.bin", 200_000)  # a and b go on
        self.assertIn("cut off from every other pod", c.read_log())
        links.mend("c")
        wait_for(lambda: c.status()["situation"]["operations"] == "open", timeout_s=20, what="c writable again")
        wait_for(lambda: os.path.exists(c.path("while-cut.bin")) and slurp(c.path("while-cut.bin")) == data,
                 what="a's file on c")
        with open(c.path("after.txt"), "w") as fh:
            fh.write("back")
        wait_for(lambda: os.path.exists(b.path("after.txt")), what="c's new file on b")


class PullTest(unittest.TestCase):
    """A holder pulling a large version it missed keeps pushing its own ops meanwhile (was:
    the replication thread made the pull itself, so nothing left the pod until it ended)."""

    def test_a_large_pull_does_not_delay_metadata(self):
        cluster = Cluster(chunk_size="64KiB", redundancy=2)
        self.addCleanup(cluster.cleanup)
        cluster.start_connected()
        a, b, c = (cluster.pods[n] for n in "abc")
        size = 200 << 20
        with open(a.path("big.bin"), "wb") as fh:
            for _ in range(size >> 20):
                fh.write(os.urandom(1 << 20))
        holder = cluster.pods[[h["name"] for h in a.where("big.bin")["holders"]][1]]
        other = b if holder is c else c
        wait_for(lambda: has_copy(holder, "big.bin"), timeout_s=120, what="the holder's copy")
        # The holder loses its copy while stopped (as if a copy was interrupted): at start it
        # pulls the version again, 3200 chunks from a.
        holder.stop()
        chunk_dir = os.path.join(holder.storage, "chunks")
        for sub in os.listdir(chunk_dir):
            if len(sub) == 2:
                shutil.rmtree(os.path.join(chunk_dir, sub))
        holder.start()
        wait_for(lambda: holder.status()["transfer"]["fetched_bytes"] > 0, what="the pull starting")
        start = time.monotonic()
        with open(holder.path("small.txt"), "w") as fh:
            fh.write("made during the pull")
        wait_for(lambda: os.path.exists(other.path("small.txt")), timeout_s=10, what="small.txt on the other pod")
        took = time.monotonic() - start
        fetched = holder.status()["transfer"]["fetched_bytes"]
        self.assertLess(fetched, size, "the pull ended first: the test proves nothing (make it larger)")
        self.assertLess(took, 2, "a file made during a pull reached the other pod late")
        wait_for(lambda: has_copy(holder, "big.bin"), timeout_s=300, what="the pull completing")


if __name__ == "__main__":
    harness.main()
