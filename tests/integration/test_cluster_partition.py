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
import time
import urllib.error

import pytest

from edgepool import Edge, edge_config, free_port, wait_for
from netlab import Topology

KEY = base64.b64encode(bytes(range(32))).decode()
NODES = ("a", "b", "c", "d")
SIDES = ({"a", "b"}, {"c", "d"})
TIMING = {"probe_interval_ms": 200, "probe_timeout_ms": 100,
          "gossip_interval_ms": 50, "pushpull_interval_s": 2}


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
    topo = Topology({n: i + 1 for i, n in enumerate(NODES)})
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
