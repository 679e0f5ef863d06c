"""Pods in network namespaces: links that can be cut (`ip link set ... down`) or shaped
(`tc ... tbf`; this kernel has no netem), for tests and benchmarks that loopback cannot show.

Each pod runs in its own network namespace, joined to a bridge that lives in a namespace of
its own by a veth pair; addresses are in 198.18.0.0/24 (the benchmarking range). A pod's
link can be shaped with `tc ... tbf` on its side of the pair (egress: what it sends, e.g.
a holder serving chunks). Everything is removed by `close()` (namespaces, and with them
their interfaces). Needs root and `ip`/`tc` (iproute2).
"""
import os
import subprocess


def sh(*args):
    subprocess.run(list(args), check=True, capture_output=True)


class PodNet:
    """Namespaces `<tag>-<pod>` and `<tag>-br`; `address(pod)`, `prefix(pod)` for harness."""

    def __init__(self, pods, tag=None):
        self.tag = tag or f"wh{os.getpid() % 100000}"
        self.bridge_ns = f"{self.tag}-br"
        self.pods = list(pods)
        self.created = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def ns(self, pod):
        return f"{self.tag}-{pod}"

    def address(self, pod, port=7701):
        return f"198.18.0.{self.pods.index(pod) + 1}:{port}"

    def prefix(self, pod):
        return ["nsenter", f"--net=/run/netns/{self.ns(pod)}"]

    def _build(self):
        sh("ip", "netns", "add", self.bridge_ns)
        self.created.append(self.bridge_ns)
        sh("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, pod in enumerate(self.pods):
            ns = self.ns(pod)
            sh("ip", "netns", "add", ns)
            self.created.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # The pair is made in the pod's namespace, then one end moves to the bridge's.
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}")
            sh("ip", "-n", ns, "link", "set", f"p{i}", "netns", self.bridge_ns)
            sh("ip", "-n", self.bridge_ns, "link", "set", f"p{i}", "master", "br0")
            sh("ip", "-n", self.bridge_ns, "link", "set", f"p{i}", "up")
            sh("ip", "-n", ns, "addr", "add", f"198.18.0.{i + 1}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def cut(self, pod):
        """Takes `pod`'s link down: a partition (it reaches nobody, nobody reaches it)."""
        sh("ip", "-n", self.ns(pod), "link", "set", "eth0", "down")

    def mend(self, pod):
        sh("ip", "-n", self.ns(pod), "link", "set", "eth0", "up")

    def shape(self, pod, mbit):
        """Caps what `pod` sends at `mbit` Mbit/s (token bucket; this kernel has no netem)."""
        sh("ip", "netns", "exec", self.ns(pod), "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
           "rate", f"{mbit}mbit", "burst", "256kb", "latency", "100ms")

    def shape_towards(self, pod, mbit):
        """Caps what reaches `pod` at `mbit` Mbit/s: its bridge port's egress (a pod on a slow
        link receiving)."""
        sh("ip", "netns", "exec", self.bridge_ns, "tc", "qdisc", "replace", "dev", f"p{self.pods.index(pod)}", "root",
           "tbf", "rate", f"{mbit}mbit", "burst", "256kb", "latency", "100ms")

    def close(self):
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created = []
