"""A real network partition of a pool of four edged nodes, in network namespaces.

Topology (built by the module fixture, all names from this process's pid):

    ep<pid>a 198.18.N.1 --+
    ep<pid>b 198.18.N.2 --+
    ep<pid>c 198.18.N.3 --+-- br0 in namespace ep<pid>s
    ep<pid>d 198.18.N.4 --+
    root ns  198.18.N.254 -+   (veth ep<pid>h: the test reads each node's /status)

Each node namespace runs one edged, its cluster (UDP gossip and TCP push-pull)
and status listener on its 198.18 address, its SIP listeners on the
namespace's own loopback. The four form one pool (fast timings, as in
test_cluster.py); iptables DROP rules inside the namespaces then cut {a, b}
off from {c, d}: each side must declare the other dead and keep itself alive.
When the rules go, every node must see all four alive again, each having
refuted its death with a higher incarnation, and then nothing may move.

Only 198.18.0.0/15 addresses are used, all created here. Everything made
here (rules, processes, namespaces, links) is removed at teardown, pass or
fail. Needs root; skipped only when network namespaces cannot be made.
"""
import base64
import os
import subprocess
import time
import urllib.error

import pytest

from edgepool import Edge, edge_config, free_port, wait_for

KEY = base64.b64encode(bytes(range(32))).decode()
NODES = ("a", "b", "c", "d")
SIDES = ({"a", "b"}, {"c", "d"})
TIMING = {"probe_interval_ms": 200, "probe_timeout_ms": 100,
          "gossip_interval_ms": 50, "pushpull_interval_s": 2}


def run(*cmd, check=True):
    """Runs a command; on failure (with check) raises with its output."""
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
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


class Topology:
    """Four host namespaces and a switch namespace; remembers what it made."""

    def __init__(self):
        self.tag = f"ep{os.getpid()}"
        self.switch = f"{self.tag}s"
        self.ns = {n: f"{self.tag}{n}" for n in NODES}
        self.host_link = f"{self.tag}h"      # the root namespace's leg into the switch
        self.net = pick_subnet()
        self.addr = {n: f"{self.net}.{i + 1}" for i, n in enumerate(NODES)}
        self.root_addr = f"{self.net}.254"
        self.namespaces = []                  # made by us, in order
        self.links = []                       # root-namespace links made by us
        self.rules = []                       # (namespace, chain, rule args) in place

    def add_ns(self, name):
        existing = run("ip", "netns", "list").stdout.split()
        if name in existing:
            raise RuntimeError(f"namespace {name} already exists: not ours, not touched")
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def build(self):
        self.add_ns(self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for n in NODES:
            ns, leg = self.ns[n], f"{self.ns[n]}p"
            self.add_ns(ns)
            # Both ends made straight in their namespaces: nothing lingers in ours.
            run("ip", "-n", ns, "link", "add", "eth0", "type", "veth",
                "peer", "name", leg, "netns", self.switch)
            run("ip", "-n", ns, "addr", "add", f"{self.addr[n]}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", self.switch, "link", "set", leg, "master", "br0", "up")
        run("ip", "link", "add", self.host_link, "type", "veth",
            "peer", "name", f"{self.host_link}p", "netns", self.switch)
        self.links.append(self.host_link)
        run("ip", "addr", "add", f"{self.root_addr}/24", "dev", self.host_link)
        run("ip", "link", "set", self.host_link, "up")
        run("ip", "-n", self.switch, "link", "set", f"{self.host_link}p", "master", "br0", "up")

    def exec_prefix(self, n):
        return ["ip", "netns", "exec", self.ns[n]]

    def iptables(self, n, op, chain, args):
        run(*self.exec_prefix(n), "iptables", "-w", op, chain, *args)

    def partition(self, left, right):
        """DROP, inside each namespace, everything to and from the other side."""
        for mine, theirs in ((left, right), (right, left)):
            for n in sorted(mine):
                for o in sorted(theirs):
                    for chain, args in (("INPUT", ["-s", self.addr[o], "-j", "DROP"]),
                                        ("OUTPUT", ["-d", self.addr[o], "-j", "DROP"])):
                        self.iptables(n, "-A", chain, args)
                        self.rules.append((n, chain, args))

    def heal(self):
        while self.rules:
            n, chain, args = self.rules[-1]
            self.iptables(n, "-D", chain, args)
            self.rules.pop()

    def teardown(self):
        """Removes what build() and partition() made; returns the errors met."""
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


class Pool:
    """The four edged nodes, one per namespace."""

    def __init__(self, work, pki, topo):
        self.work, self.topo = work, topo
        self.cert, self.key = pki.issue("sip.contoso.test", file_name="partition-pool")
        self.ca = pki.ca_file
        self.port = {n: free_port() for n in NODES}   # cluster port (UDP and TCP)
        self.nodes = {}

    def start(self, n, seeds=()):
        cluster = {"name": n, "address": self.topo.addr[n], "port": self.port[n], "keys": [KEY],
                   "join": [f"{self.topo.addr[s]}:{self.port[s]}" for s in seeds], **TIMING}
        # SIP on the namespace's own loopback; any port is free there.
        text = edge_config(pool_fqdn="sip.contoso.test", domains=["contoso.test"], ca=self.ca,
                           cert=self.cert, key=self.key, internal=("127.0.0.1", free_port()),
                           next_hop=("127.0.0.1", free_port()),
                           external=("127.0.0.1", free_port()), status_port=free_port(),
                           status_host=self.topo.addr[n], sections={"cluster": cluster})
        edge = Edge(self.work, n, text, [], wrapper=self.topo.exec_prefix(n),
                    status_host=self.topo.addr[n])
        self.nodes[n] = edge
        edge.start()
        wait_for(lambda: self._answers(edge), 10, f"the status of {n} from the root namespace")
        return edge

    @staticmethod
    def _answers(edge):
        try:
            return edge.status()
        except (OSError, urllib.error.URLError):
            return None

    def cluster(self, n):
        return self.nodes[n].status()["cluster"]

    def views(self):
        """{node: {member: (state, incarnation)}} and {node: own incarnation}, now."""
        views, own = {}, {}
        for n in NODES:
            c = self.cluster(n)
            views[n] = {m["name"]: (m["state"], m["incarnation"]) for m in c["members"]}
            own[n] = c["incarnation"]
        return views, own

    def stop_all(self):
        return {n: e.stop() for n, e in self.nodes.items() if e.proc is not None}

    def report(self):
        """The pool as each node sees it, and each log's cluster lines: for failures."""
        lines = []
        for n, e in self.nodes.items():
            try:
                c = self.cluster(n)
                members = ", ".join(f"{m['name']}={m['state']}/{m['incarnation']}"
                                    for m in c["members"])
                lines.append(f"{n} (incarnation {c['incarnation']}, awareness {c['awareness']}, "
                             f"stream_failures {c['stream_failures']}): {members}")
            except Exception as ex:
                lines.append(f"{n}: status unavailable ({ex})")
        for n, e in self.nodes.items():
            events = [ln for ln in e.log().splitlines() if "cluster" in ln]
            lines.append(f"--- {n} log, last cluster lines:")
            lines += events[-15:]
        return "\n".join(lines)

    def expect(self, predicate, timeout, what):
        try:
            return wait_for(predicate, timeout, what, interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.report()}") from None


def all_alive(views, own):
    """Every node sees all four alive, each at the incarnation that node says it has."""
    want = {m: ("alive", own[m]) for m in NODES}
    return all(views[n] == want for n in NODES)


def split_as_expected(views):
    for side in SIDES:
        for n in side:
            if any(views[n].get(m, (None,))[0] != ("alive" if m in side else "dead")
                   for m in NODES):
                return False
    return True


@pytest.fixture(scope="module")
def pool(tmp_path_factory, pki):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add is not permitted)")
    topo = Topology()
    p = Pool(tmp_path_factory.mktemp("partition"), pki, topo)
    codes, errors = {}, []
    try:
        topo.build()
        # a first, the others join through it: one pool, whatever the timing.
        p.start("a")
        for n in ("b", "c", "d"):
            p.start(n, seeds=["a"])
        yield p
    finally:
        try:
            topo.heal()
        except Exception as e:
            errors.append(f"removing iptables rules: {e}")
        codes = p.stop_all()
        errors += topo.teardown()
        left = topo.leftovers()
    assert not errors and not left, f"teardown: {errors}, still there: {left}"
    assert set(codes.values()) <= {0}, f"edged exit codes {codes}\n" + \
        "\n".join(e.log()[-2000:] for e in p.nodes.values())


def test_four_nodes_form_one_pool(pool):
    pool.expect(lambda: all_alive(*pool.views()), 15, "all four nodes to see each other alive")
    pool.formed = pool.views()[1]


def test_partition_splits_the_pool(pool):
    pool.topo.partition(*SIDES)
    seen = set()   # (node, member, state) for same-side members seen not alive

    def split():
        views, _ = pool.views()
        for side in SIDES:
            for n in side:
                seen.update((n, m, views[n][m][0]) for m in side
                            if views[n].get(m, ("gone",))[0] != "alive")
        return split_as_expected(views)

    pool.expect(split, 20, "{a, b} and {c, d} to declare each other dead")
    assert not seen, f"members on the same side left the alive state: {sorted(seen)}"
    pool.before_heal = pool.views()[1]


def test_heal_brings_everyone_back(pool):
    pool.topo.heal()
    t0 = time.monotonic()
    pool.expect(lambda: all_alive(*pool.views()), 15,
                "every node to see all four alive, at the same incarnations, after the heal")
    print(f"converged {time.monotonic() - t0:.1f} s after the heal")
    views, own = pool.views()
    # Each node was declared dead by the other side: only a refutation,
    # a higher incarnation than at the split, brings it back there.
    before = getattr(pool, "before_heal", None) or getattr(pool, "formed", None)
    assert before and all(own[n] > before[n] for n in NODES), (before, own)
    pool.converged = (views, own)


def test_nothing_flaps_after_the_heal(pool):
    converged = getattr(pool, "converged", None)
    assert converged, "the pool never converged after the heal (see the previous test)"
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        now = pool.views()
        assert now == converged, f"changed after convergence:\n{now}\nwas\n{converged}\n" \
                                 f"{pool.report()}"
        time.sleep(0.1)
