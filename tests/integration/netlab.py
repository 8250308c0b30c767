"""Hosts in network namespaces on one bridge, for the tests that need real
interfaces (a VIP, VRRP, partitions), as FRRouting's topotests do.

    Topology({"a": ["198.18.N.1"], "b": ["198.18.N.2"]}).build()

makes a switch namespace with a bridge, one namespace per host with eth0 on
that bridge and the host's addresses, and a leg of the root namespace on
the bridge (198.18.N.254) so the test reads each daemon's status. Names
come from this process's pid; only 198.18.0.0/15 addresses are used, on a
/24 that nothing in the root namespace touches. teardown() removes
everything build() and the rules made, pass or fail.
"""
import os
import subprocess


def run(*cmd, check=True, timeout=30):
    """Runs a command; on failure (with check) raises with its output."""
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


def pick_subnet():
    """A 198.18.N.0/24 that no address or route of the root namespace touches."""
    used = run("ip", "-o", "-4", "addr", "show").stdout + run("ip", "-4", "route", "show").stdout
    for i in range(256):
        n = (os.getpid() + i) % 256
        if f"198.18.{n}." not in used:
            return f"198.18.{n}"
    raise RuntimeError("no free /24 in 198.18.0.0/16 on this host")


def can_make_namespaces():
    """Whether this process may create network namespaces (root, a kernel that has them)."""
    if os.geteuid() != 0:
        return False
    name = f"epprobe{os.getpid()}"
    if run("ip", "netns", "add", name, check=False).returncode != 0:
        return False
    run("ip", "netns", "del", name, check=False)
    return True


class Topology:
    """Host namespaces and a switch namespace; remembers what it made."""

    def __init__(self, hosts, tag=None):
        """hosts: {name: host number on the /24 (1-253)}."""
        self.tag = tag or f"ep{os.getpid()}"
        self.switch = f"{self.tag}s"
        self.net = pick_subnet()
        self.ns = {h: f"{self.tag}{h}" for h in hosts}
        self.addr = {h: f"{self.net}.{i}" for h, i in hosts.items()}
        self.host_link = f"{self.tag}h"      # the root namespace's leg into the switch
        self.root_addr = f"{self.net}.254"
        self.namespaces = []                  # made by us, in order
        self.links = []                       # root-namespace links made by us
        self.rules = []                       # (host, chain, rule args) in place

    def ip(self, n):
        """An address of the /24 by host number (a VIP, say)."""
        return f"{self.net}.{n}"

    def _add_ns(self, name):
        if name in run("ip", "netns", "list").stdout.split():
            raise RuntimeError(f"namespace {name} already exists: not ours, not touched")
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def build(self):
        self._add_ns(self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for h, ns in self.ns.items():
            leg = f"{ns}p"
            self._add_ns(ns)
            # Both ends made straight in their namespaces: nothing lingers in ours.
            run("ip", "-n", ns, "link", "add", "eth0", "type", "veth",
                "peer", "name", leg, "netns", self.switch)
            run("ip", "-n", ns, "addr", "add", f"{self.addr[h]}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", self.switch, "link", "set", leg, "master", "br0", "up")
        run("ip", "link", "add", self.host_link, "type", "veth",
            "peer", "name", f"{self.host_link}p", "netns", self.switch)
        self.links.append(self.host_link)
        run("ip", "addr", "add", f"{self.root_addr}/24", "dev", self.host_link)
        run("ip", "link", "set", self.host_link, "up")
        run("ip", "-n", self.switch, "link", "set", f"{self.host_link}p", "master", "br0", "up")

    def exec_prefix(self, h):
        return ["ip", "netns", "exec", self.ns[h]]

    def iptables(self, h, op, chain, args):
        run(*self.exec_prefix(h), "iptables", "-w", op, chain, *args)

    def add_rule(self, h, chain, args):
        self.iptables(h, "-A", chain, args)
        self.rules.append((h, chain, args))

    def partition(self, left, right):
        """DROP, inside each namespace, everything to and from the other side."""
        for mine, theirs in ((left, right), (right, left)):
            for h in sorted(mine):
                for o in sorted(theirs):
                    self.add_rule(h, "INPUT", ["-s", self.addr[o], "-j", "DROP"])
                    self.add_rule(h, "OUTPUT", ["-d", self.addr[o], "-j", "DROP"])

    def heal(self):
        while self.rules:
            h, chain, args = self.rules[-1]
            self.iptables(h, "-D", chain, args)
            self.rules.pop()

    def has_address(self, h, address):
        return f" {address}/" in run("ip", "-n", self.ns[h], "-o", "addr", "show").stdout

    def teardown(self):
        """Removes what build() and the rules made; returns the errors met."""
        errors = []
        try:
            self.heal()
        except Exception as e:  # the namespaces' deletion below drops them anyway
            errors.append(f"removing iptables rules: {e}")
            self.rules.clear()
        for link in reversed(self.links):
            if run("ip", "link", "show", link, check=False).returncode == 0:
                out = run("ip", "link", "del", link, check=False)
                if out.returncode:
                    errors.append(f"ip link del {link}: {out.stderr.strip()}")
        self.links.clear()
        for ns in reversed(self.namespaces):
            out = run("ip", "netns", "del", ns, check=False)
            if out.returncode:
                errors.append(f"ip netns del {ns}: {out.stderr.strip()}")
        self.namespaces.clear()
        return errors

    def leftovers(self):
        """What of ours is still there (should be nothing after teardown)."""
        left = [ns for ns in run("ip", "netns", "list").stdout.split()
                if ns in (self.switch, *self.ns.values())]
        if run("ip", "link", "show", self.host_link, check=False).returncode == 0:
            left.append(self.host_link)
        return left
