"""The pool's gossip cluster, with real edged processes on loopback: three
nodes join through one seed, a kill -9 is detected and the node comes back,
a graceful leave is seen as such, and garbage, foreign keys and oversized
packets on the gossip port are dropped without harm.

Timings are shortened (probe every 200 ms) so that the tests are quick; the
assertions poll the JSON status with deadlines.
"""
import base64
import os
import signal
import socket

import pytest

from conftest import make_org
from edgepool import Edge, edge_config, free_port, wait_for

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()


def udp_free_port(host="127.0.0.1"):
    while True:
        port = free_port(host)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port))
                return port
            except OSError:
                continue


class Pool:
    def __init__(self, work, pki):
        self.work, self.pki = work, pki
        self.nodes = {}
        self.cluster_port = {}

    def config(self, name, seeds=(), key=KEY):
        """key: one key, or the keyring as a list (the first seals)."""
        org = make_org("contoso.test", "127.0.0.1", self.pki)
        port = self.cluster_port.setdefault(name, udp_free_port())
        keys = key if isinstance(key, list) else [key]
        cluster = {"name": name, "address": "127.0.0.1", "port": port, "keys": keys,
                   "join": [f"127.0.0.1:{self.cluster_port[s]}" for s in seeds],
                   "probe_interval_ms": 200, "probe_timeout_ms": 100,
                   "gossip_interval_ms": 50, "pushpull_interval_s": 2}
        text = edge_config(pool_fqdn=org.fqdn, domains=[org.domain], ca=self.pki.ca_file,
                           cert=org.cert, key=org.key, internal=org.internal,
                           next_hop=org.peer, external=org.external,
                           status_port=org.status_port, sections={"cluster": cluster})
        return Edge(self.work, name, text, [org.internal, org.external])

    def start(self, name, seeds=(), key=KEY):
        self.nodes[name] = self.config(name, seeds, key).start()
        return self.nodes[name]

    def restart(self, name, seeds, key):
        assert self.nodes[name].stop() == 0
        return self.start(name, seeds, key)

    def view(self, name):
        """{member: state} as node `name` sees the cluster."""
        status = self.nodes[name].status()["cluster"]
        return {m["name"]: m["state"] for m in status["members"]}

    def stop_all(self):
        codes = {}
        for name, edge in self.nodes.items():
            if edge.running():
                codes[name] = edge.stop()
        return codes


@pytest.fixture(scope="module")
def pool(tmp_path_factory, pki):
    p = Pool(tmp_path_factory.mktemp("cluster"), pki)
    try:
        p.start("edge-1")
        p.start("edge-2", seeds=["edge-1"])
        p.start("edge-3", seeds=["edge-1"])
        yield p
    finally:
        codes = p.stop_all()
    assert set(codes.values()) <= {0}, codes


def everyone_sees(pool, expected, among=None):
    names = among or [n for n, e in pool.nodes.items() if e.running()]
    return all(pool.view(n) == expected for n in names)


def test_nodes_join_through_a_seed(pool):
    alive = {f"edge-{i}": "alive" for i in (1, 2, 3)}
    wait_for(lambda: everyone_sees(pool, alive), 10, "three nodes to see each other alive")
    status = pool.nodes["edge-2"].status()["cluster"]
    assert status["alive"] == 3 and status["dropped"] == 0, status


def test_kill_9_is_detected_and_the_node_comes_back(pool):
    """Lifelines (idle TCP connections between members) end when a process dies:
    its port then refuses, and the member is declared dead at once, not after
    a suspicion. It restarts, learns it was declared dead, and refutes."""
    victim = pool.nodes["edge-3"]
    def lifeline_to_victim(n):
        return any(m["name"] == "edge-3" and m["lifeline"]
                   for m in pool.nodes[n].status()["cluster"]["members"])
    for n in ("edge-1", "edge-2"):
        wait_for(lambda: lifeline_to_victim(n), 10, f"{n}'s lifeline to edge-3")
    before = next(m for m in pool.nodes["edge-1"].status()["cluster"]["members"]
                  if m["name"] == "edge-3")["incarnation"]
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait()
    victim.proc = None
    wait_for(lambda: all(pool.view(n).get("edge-3") == "dead" for n in ("edge-1", "edge-2")),
             15, "edge-3 to be declared dead")
    for n in ("edge-1", "edge-2"):
        assert "edge-3 is dead (was alive" in pool.nodes[n].log(), pool.nodes[n].log()[-2000:]
        assert "edge-3 is suspect" not in pool.nodes[n].log()
    # One proved it (its check was refused); the other may have heard it first.
    assert sum(pool.nodes[n].status()["cluster"]["deaths_seen"] for n in ("edge-1", "edge-2")) >= 1
    pool.start("edge-3", seeds=["edge-1"])
    alive = {f"edge-{i}": "alive" for i in (1, 2, 3)}
    wait_for(lambda: everyone_sees(pool, alive), 15, "edge-3 to be alive again everywhere")
    after = next(m for m in pool.nodes["edge-1"].status()["cluster"]["members"]
                 if m["name"] == "edge-3")["incarnation"]
    assert after > before


def test_garbage_on_the_gossip_port_is_dropped(pool):
    port = pool.cluster_port["edge-1"]
    dropped = pool.nodes["edge-1"].status()["cluster"]["dropped"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for payload in (b"", b"\x00", b"\x01" * 40, os.urandom(1400), b"\x01" + os.urandom(60000)):
            s.sendto(payload, ("127.0.0.1", port))
    # And on the push-pull port: garbage, then a stream that stops halfway.
    for junk in (b"\xff" * 64, b"\x00\x00\x00\x40" + b"x" * 10):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(junk)
    wait_for(lambda: pool.nodes["edge-1"].status()["cluster"]["dropped"] >= dropped + 5, 5,
             "the datagrams to be dropped")
    assert pool.nodes["edge-1"].running()
    alive = {f"edge-{i}": "alive" for i in (1, 2, 3)}
    assert everyone_sees(pool, alive)


def test_a_flood_of_connections_on_the_gossip_port_is_bounded(pool):
    """Connections past the bound are closed at once (counted); the pool
    goes on, and push-pull works again once the flood ends."""
    port = pool.cluster_port["edge-1"]
    before = pool.nodes["edge-1"].status()["cluster"]
    flood = []
    try:
        for _ in range(100):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        wait_for(lambda: pool.nodes["edge-1"].status()["cluster"]["streams_refused"]
                 >= before["streams_refused"] + 60, 5, "the flood past the bound to be refused")
        assert pool.nodes["edge-1"].running()
        assert everyone_sees(pool, {f"edge-{i}": "alive" for i in (1, 2, 3)})
    finally:
        for c in flood:
            c.close()
    streams_in = pool.nodes["edge-1"].status()["cluster"]["streams_in"]
    wait_for(lambda: pool.nodes["edge-1"].status()["cluster"]["streams_in"] > streams_in, 30,
             "a member's push-pull to be accepted again")
    assert pool.nodes["edge-1"].status()["cluster"]["streams_refused"] >= before["streams_refused"] + 60


def test_a_node_with_another_key_cannot_join(pool):
    stranger = pool.start("edge-9", seeds=["edge-1"], key=OTHER_KEY)
    try:
        wait_for(lambda: stranger.status()["cluster"]["stream_failures"] >= 2, 10,
                 "the stranger's joins to fail")
        assert pool.view("edge-9") == {"edge-9": "alive"}
        assert "edge-9" not in pool.view("edge-1")
    finally:
        assert stranger.stop() == 0
        del pool.nodes["edge-9"]


def test_graceful_leave(pool):
    leaver = pool.nodes["edge-2"]
    assert leaver.stop() == 0
    wait_for(lambda: all(pool.view(n).get("edge-2") == "left" for n in ("edge-1", "edge-3")),
             10, "edge-2 to be seen as left")
    for n in ("edge-1", "edge-3"):
        # Its lifelines ended as it left: the leave, told first, is not taken for a death.
        assert "edge-2 is dead" not in pool.nodes[n].log(), pool.nodes[n].log()[-2000:]


def test_key_rotation_without_downtime(tmp_path, pki):
    """Rolling restarts rotate the cluster key: every node accepts the new key,
    then every node seals with it, then the old one goes; at every step the
    pool stays whole, and a node left on the old key alone is shut out."""
    p = Pool(tmp_path, pki)
    names = ["r-1", "r-2", "r-3"]
    whole = {n: "alive" for n in names}
    try:
        p.start("r-1")
        p.start("r-2", seeds=["r-1"])
        p.start("r-3", seeds=["r-1"])
        wait_for(lambda: everyone_sees(p, whole), 10, "the pool")
        for keyring in ([KEY, OTHER_KEY], [OTHER_KEY, KEY], [OTHER_KEY]):
            for i, name in enumerate(names):
                p.restart(name, [names[(i + 1) % 3]], keyring)
                wait_for(lambda: everyone_sees(p, whole), 15,
                         f"the pool whole after restarting {name} with {len(keyring)} key(s)")
        # A node with only the retired key cannot join any more.
        stale = p.start("r-9", seeds=["r-1"], key=KEY)
        wait_for(lambda: stale.status()["cluster"]["stream_failures"] >= 1, 10, "the stale node shut out")
        assert "r-9" not in p.view("r-1")
    finally:
        codes = p.stop_all()
    assert set(codes.values()) <= {0}, codes
