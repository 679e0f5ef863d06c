#!/usr/bin/env python3
"""Only members get in (issue 9), tried from outside on real daemons over 127.0.0.1:
join tokens (uses, expiry, revocation), joins waiting for an admin's approval, admin
signatures on approve / drain / forget, pods with a foreign CA or without TLS refused and
reading nothing, an expired certificate renewed at start, the control socket's group."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

import harness
from harness import Cluster, Pod, wait_for


def slurp(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


def wh(*args, env=None, check=True):
    r = subprocess.run([harness.BINARY, *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if check and r.returncode != 0:
        raise AssertionError(f"wormhole {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r


def listen_of(config, name):
    text = slurp(config, "r")
    block = text.split(f'name = "{name}"')[1]
    return block.split('listen = "')[1].split('"')[0]


def newcomer(cluster, name, peer, extra_network=""):
    """A pod in no one's [[pod]] list that joins through `peer` (an address)."""
    return Pod(root=cluster.root, name=name, extra_network=extra_network,
               extra_pod=f'listen = "127.0.0.1:{harness.free_port()}"\npeers = ["{peer}"]')


def refused(pod, timeout_s=30):
    """Waits for the daemon of `pod` to give up (it found no way in); its exit code."""
    deadline = time.time() + timeout_s
    while pod.proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    rc = pod.proc.poll()
    if rc is None:
        pod.proc.kill()
        pod.proc.wait()
    pod.proc = None
    harness.unmount(pod.mnt)
    return rc


class TokenTest(unittest.TestCase):
    """join = "token": tokens made on the CA pod, checked inside TLS, counted there."""

    def test_a_token_lets_in_as_many_pods_as_its_uses_until_it_expires(self):
        # The pods of the [[pod]] list present network.token; newcomers a token of their own.
        cluster = Cluster(names=("a", "b"), extra_network='join = "token"\ntoken = "s3cret-of-the-file"\n')
        self.addCleanup(cluster.cleanup)
        a, b = cluster.pods["a"], cluster.pods["b"]
        cluster.start_connected()
        with open(a.path("hello.txt"), "w") as fh:
            fh.write("members only")
        ca_fp = re.search(r"TLS: this pod holds the CA of network \"test\", fingerprint ([0-9a-f]{64})",
                          a.read_log()).group(1)
        # Tokens are made on the CA pod; b says where that is.
        r = wh("token", "create", "-c", cluster.config, "-p", "b", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("does not hold the network CA", r.stderr)
        token = wh("token", "create", "--uses", "1", "-c", cluster.config, "-p", "a").stdout.strip()
        self.assertTrue(token.startswith("wh1-") and token.endswith(ca_fp), token)
        network = f'join = "token"\nca_fingerprint = "{ca_fp}"'
        # d joins through b (not the CA: redirected to a) with the token, and mounts the tree.
        d = newcomer(cluster, "d", listen_of(cluster.config, "b"), network)
        self.addCleanup(d.cleanup)
        d.env = {"WORMHOLE_JOIN_TOKEN": token}
        d.start()
        wait_for(lambda: os.path.exists(d.path("hello.txt")), what="a's file on d")
        self.assertEqual(slurp(d.path("hello.txt")), b"members only")
        # The token's one use is spent: e is refused, and a says why.
        e = newcomer(cluster, "e", listen_of(cluster.config, "a"), network)
        e.env = {"WORMHOLE_JOIN_TOKEN": token}
        e.start(wait=False)
        self.assertNotEqual(refused(e), 0)
        self.assertIn("used up", e.read_log())
        # An expired token, a revoked one, a forged one, none: refused.
        brief = wh("token", "create", "--ttl", "1s", "-c", cluster.config, "-p", "a").stdout.strip()
        revoked = wh("token", "create", "--uses", "5", "-c", cluster.config, "-p", "a").stdout.strip()
        wh("token", "revoke", revoked.split("-")[1], "-c", cluster.config, "-p", "a")
        forged = revoked[:13] + ("0" if revoked[13] != "0" else "1") + revoked[14:]
        time.sleep(1.5)
        for i, (tok, why) in enumerate(((brief, "expired"), (revoked, "revoked"), (forged, "wrong join token"),
                                        ("", "wrong join token"))):
            x = newcomer(cluster, f"x{i}", listen_of(cluster.config, "a"), network)
            if tok:
                x.env = {"WORMHOLE_JOIN_TOKEN": tok}
            x.start(wait=False)
            self.assertNotEqual(refused(x), 0, why)
            self.assertIn(why, x.read_log())
        listed = wh("token", "list", "--json", "-c", cluster.config, "-p", "a").stdout
        self.assertNotIn(token.split("-")[2], listed)  # secrets are never shown
        self.assertIn("used up", listed)
        # A pod whose file names another CA does not send its token to this one.
        y = newcomer(cluster, "y", listen_of(cluster.config, "a"), f'join = "token"\nca_fingerprint = "{"0" * 64}"')
        y.env = {"WORMHOLE_JOIN_TOKEN": token}
        y.start(wait=False)
        wait_for(lambda: "does not show the network CA" in y.read_log(), what="y refusing a's CA")
        refused(y, timeout_s=0)


class ApprovalTest(unittest.TestCase):
    """join = "approval" with network.admins: a pod waits as pending until an admin
    approves it (signed), or is denied; unsigned or non-admin decisions, drains and forgets
    are refused on every pod, naming the rule."""

    def test_pending_pods_wait_for_a_signed_approval(self):
        keys = harness.tempfile.mkdtemp(prefix="wh-admin-")
        self.addCleanup(shutil.rmtree, keys, True)
        alice_key, mallory_key = os.path.join(keys, "alice.admin.key"), os.path.join(keys, "mallory.admin.key")
        out = wh("admin", "key", "create", "alice", "--out", alice_key).stdout
        alice_line = re.search(r'"(alice:[A-Za-z0-9+/=]{44})"', out).group(1)
        wh("admin", "key", "create", "mallory", "--out", mallory_key)
        self.assertEqual(os.stat(alice_key).st_mode & 0o777, 0o600)
        cluster = Cluster(names=("a", "b", "c"), extra_network=f'join = "approval"\nadmins = ["{alice_line}"]\n')
        self.addCleanup(cluster.cleanup)
        a, b, c = (cluster.pods[n] for n in "abc")
        a.start()
        b.start(wait=False)  # asks a for its certificate: pending
        c.start(wait=False)
        def pending_names():
            r = wh("pending", "--json", "-c", cluster.config, "-p", "a")
            return {p["pod"] for p in json.loads(r.stdout)["pending"]}
        wait_for(lambda: pending_names() == {"b", "c"}, what="b and c pending")
        pending = wh("pending", "-c", cluster.config, "-p", "a").stdout
        b_key = re.search(r"^b .* key ([0-9a-f]{64})", pending, re.M).group(1)
        self.assertIn(b_key, slurp(b.log_path, "r"))  # the fingerprint the joining pod can show its admin
        self.assertFalse(b._mounted())
        # Not signed, signed by a key that is not an admin's, or by mallory claiming to be alice.
        for args in ([], ["--admin-key", mallory_key], ["--admin-key", mallory_key, "--admin", "alice"]):
            r = wh("approve", "b", *args, "-c", cluster.config, "-p", "a", check=False)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertIn("network.admins", r.stderr)
        time.sleep(2)
        self.assertFalse(b._mounted())
        # The key the admin saw, pinned: a wrong one is refused, the right one approves.
        r = wh("approve", "b", "--key", "0" * 16 if not b_key.startswith("0" * 16) else "1" * 16, "--admin-key",
               alice_key, "-c", cluster.config, "-p", "a", check=False)
        self.assertIn("now asks with key", r.stderr)
        wh("approve", "b", "--key", b_key[:16], "--admin-key", alice_key, "-c", cluster.config, "-p", "a")
        wait_for(lambda: b._mounted(), what="b mounted once approved")
        wh("deny", "c", "--admin-key", alice_key, "-c", cluster.config, "-p", "a")
        self.assertNotEqual(refused(c), 0)
        self.assertIn("denied", c.read_log())
        with open(a.path("after.txt"), "w") as fh:
            fh.write("x")
        wait_for(lambda: os.path.exists(b.path("after.txt")), what="replication to the approved pod")
        # Drains and forgets: refused unless an admin signs, on every pod.
        for pod in (a, b):
            for cmd in (["drain", "b"], ["forget", "c", "--force"]):
                r = wh(*cmd, "-c", cluster.config, "-p", pod.name, check=False)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("network.admins lists who may", r.stderr)
                r = wh(*cmd, "--admin-key", mallory_key, "-c", cluster.config, "-p", pod.name, check=False)
                self.assertIn("not an admin", r.stderr)
        self.assertTrue(all(p["state"] != "forgotten" for p in a.status()["peers"]))


class StrangerTest(unittest.TestCase):
    """Pods without the network's certificates: refused and reading nothing."""

    def test_a_pod_with_a_foreign_ca_or_without_tls_reads_nothing(self):
        cluster = Cluster(names=("a", "b", "c"), redundancy=2)
        self.addCleanup(cluster.cleanup)
        a, b, c = (cluster.pods[n] for n in "abc")
        cluster.start_connected()
        with open(a.path("secret.txt"), "w") as fh:
            fh.write("for members")
        wait_for(lambda: os.path.exists(c.path("secret.txt")), what="the file on c")
        c.stop()
        harness.unmount(c.mnt)
        # c's certificates replaced by those of another network's CA (same network name).
        other = harness.tempfile.mkdtemp(prefix="wh-other-ca-", dir=cluster.root)
        other_cfg = os.path.join(other, "o.toml")
        with open(other_cfg, "w") as fh:
            fh.write(f'[network]\nname = "test"\n[[pod]]\nname = "c"\nlisten = "127.0.0.1:1"\n'
                     f'mountpoint = "{other}/m"\nstorage = "{other}/s"\n')
        wh("network", "init", "-c", other_cfg)
        shutil.rmtree(os.path.join(c.storage, "tls"))
        shutil.copytree(os.path.join(other, "s", "tls"), os.path.join(c.storage, "tls"))
        c.start(wait=False)
        with open(a.path("later.txt"), "w") as fh:
            fh.write("not for c")
        wait_for(lambda: "certificate verify failed" in a.read_log() or "certificate verify failed" in c.read_log(),
                 what="the handshake refused")
        time.sleep(3)
        self.assertFalse(os.path.exists(os.path.join(c.mnt, "later.txt")))
        self.assertNotIn("later.txt", subprocess.run(["grep", "-rl", "not for c", c.storage],
                                                     capture_output=True, text=True).stdout)
        refused(c, timeout_s=0)
        # a speaks TLS 1.3 and shows the network CA (the unit tests send plaintext gRPC).
        r = subprocess.run(["openssl", "s_client", "-connect", listen_of(cluster.config, "a"), "-tls1_3",
                            "-alpn", "h2"], input=b"", capture_output=True, timeout=10)
        out = r.stdout.decode(errors="replace")  # the server's HTTP/2 frames follow the handshake
        self.assertIn("TLSv1.3", out)
        self.assertIn("Wormhole network CA test", out)  # the chain shows the CA

    def test_an_expired_certificate_is_renewed_at_start(self):
        cluster = Cluster(names=("a", "b"))
        self.addCleanup(cluster.cleanup)
        a, b = cluster.pods["a"], cluster.pods["b"]
        cluster.start_connected()
        b.stop()
        tls = os.path.join(b.storage, "tls")
        ca_tls = os.path.join(a.storage, "tls")
        # An expired certificate for b's key, signed by the network CA (openssl ca sets dates).
        work = os.path.join(cluster.root, "ca-work")
        os.makedirs(work)
        open(os.path.join(work, "index.txt"), "w").close()
        with open(os.path.join(work, "ca.cnf"), "w") as fh:
            fh.write(f"[ca]\ndefault_ca = d\n[d]\ndatabase = {work}/index.txt\nnew_certs_dir = {work}\n"
                     f"serial = {work}/serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n"
                     f"[p]\norganizationName = supplied\ncommonName = supplied\nserialNumber = supplied\n")
        with open(os.path.join(work, "serial"), "w") as fh:
            fh.write("1000\n")
        subj = subprocess.run(["openssl", "x509", "-in", os.path.join(tls, "pod.crt"), "-noout", "-subject",
                               "-nameopt", "compat"], capture_output=True, text=True, check=True).stdout
        subject = subj.split("subject=", 1)[1].strip()
        subprocess.run(["openssl", "req", "-new", "-key", os.path.join(tls, "pod.key"), "-subj", subject,
                        "-out", os.path.join(work, "b.csr")], check=True, capture_output=True)
        subprocess.run(["openssl", "ca", "-batch", "-config", os.path.join(work, "ca.cnf"), "-cert",
                        os.path.join(ca_tls, "ca.crt"), "-keyfile", os.path.join(ca_tls, "ca.key"),
                        "-in", os.path.join(work, "b.csr"), "-out", os.path.join(tls, "pod.crt"),
                        "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-notext"],
                       check=True, capture_output=True)
        b.start()
        self.assertIn("certificate is not valid any more", b.read_log())
        self.assertIn("got this pod's certificate", b.read_log())
        with open(a.path("renewed.txt"), "w") as fh:
            fh.write("ok")
        wait_for(lambda: os.path.exists(b.path("renewed.txt")), what="replication after renewal")


class UpgradeToTlsTest(unittest.TestCase):
    """A network running in clear switches to TLS by a rolling restart (README, Security)."""

    def test_a_clear_network_switches_to_tls_with_a_rolling_restart(self):
        cluster = Cluster(names=("a", "b", "c"), extra_network="tls = false\n")
        self.addCleanup(cluster.cleanup)
        a, b, c = (cluster.pods[n] for n in "abc")
        cluster.start_connected()
        with open(b.path("before.txt"), "w") as fh:
            fh.write("written in clear")
        for pod in (a, c):
            wait_for(lambda: os.path.exists(pod.path("before.txt")), what=f"before.txt on {pod.name}")
        self.assertIn("pod-to-pod traffic is in clear", a.read_log())
        text = slurp(cluster.config, "r").replace("tls = false", "tls = true")
        with open(cluster.config, "w") as fh:
            fh.write(text)
        for pod in (a, b, c):  # the first pod makes the CA; the others ask it as they restart
            pod.stop()
            pod.start()
        for pod in (a, b, c):
            wait_for(lambda: all(p["state"] == "alive" for p in pod.status()["peers"]), what=f"peers of {pod.name}")
        self.assertIn("holds the CA", a.read_log())
        self.assertIn("got this pod's certificate", c.read_log())
        with open(c.path("after.txt"), "w") as fh:
            fh.write("written over TLS")
        for pod in (a, b):
            wait_for(lambda: os.path.exists(pod.path("after.txt")), what=f"after.txt on {pod.name}")
            self.assertEqual(slurp(pod.path("before.txt")), b"written in clear")


class ControlGroupTest(unittest.TestCase):
    """The control socket admits root, the daemon's user and members of pod.control_group."""

    def test_only_the_control_group_may_ask(self):
        if os.geteuid() != 0:
            self.skipTest("needs root (runs the CLI as another user)")
        pod = Pod(extra_pod='control_group = "users"\n')
        self.addCleanup(pod.cleanup)
        pod.start()
        os.chmod(pod.storage, 0o755)
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        in_group = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--groups=users"]
        r = subprocess.run(as_nobody + [harness.BINARY, "status", "-c", pod.config], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("EACCES", r.stderr)
        r = subprocess.run(in_group + [harness.BINARY, "status", "-c", pod.config], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="build/wormhole")
    args, rest = parser.parse_known_args()
    harness.BINARY = os.path.abspath(args.binary)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
