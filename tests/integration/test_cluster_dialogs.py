"""A dialog and a subscription survive the death of the node that saw them
begin, with asynchronous replication (after the dialogs have spread) and
with synchronous replication (at once: a 2xx waits until a peer holds its
dialog): fabrikam.test's pool has two edges, A (127.0.0.2) and B (127.0.0.3),
in one cluster, sharing one certificate and one internal next hop. A call
from a partner and a subscription of an internal user go through A; A is
killed (SIGKILL); the re-INVITE, the BYE and the NOTIFY then go through B,
which knows the dialogs from the pool's replicated store. A request in a
dialog that never crossed the pool gets 481, even at B.
"""
import base64
import os
import signal

import pytest

from edgepool import (Edge, SipClient, SipUAS, edge_config, free_port, sip_request, wait_for)
from test_cluster import udp_free_port

KEY = base64.b64encode(bytes(range(32))).decode()
INTERNAL_POOL = "edge-int.fabrikam.test"


class Node:
    def __init__(self, name, host, pki, cert, key, uas, contoso, seeds, ports, replication="async"):
        self.name, self.host = name, host
        self.internal = (host, free_port(host))
        self.external = (host, free_port(host))
        self.status_port = free_port()
        cluster = {"name": name, "address": "127.0.0.1", "port": ports[name], "keys": [KEY],
                   "join": [f"127.0.0.1:{ports[s]}" for s in seeds],
                   "probe_interval_ms": 200, "probe_timeout_ms": 100,
                   "gossip_interval_ms": 50, "pushpull_interval_s": 2,
                   "replication": replication}
        self.text = edge_config(
            pool_fqdn="sip.fabrikam.test", domains=["fabrikam.test"], ca=pki.ca_file, cert=cert,
            key=key, internal=self.internal, next_hop=uas.addr, external=self.external,
            status_port=self.status_port,
            partners=[{"domains": ["contoso.test"], "fqdn": "sip.contoso.test",
                       "address": contoso.addr[0], "port": contoso.addr[1]}],
            sections={"cluster": cluster})
        # The pool's name on the internal side: the front ends' in-dialog requests reach any node.
        self.text = self.text.replace("internal = {", f'internal = {{\n  pool_fqdn = "{INTERNAL_POOL}";', 1)
        self.edge = None

    def start(self, work):
        self.edge = Edge(work, self.name, self.text, [self.internal, self.external]).start()
        return self

    def records(self):
        return self.edge.status()["cluster"]["store"]["records"]


def make_pool(work, pki, replication):
    cert, key = pki.issue("sip.fabrikam.test", file_name=f"fabrikam-pool-{replication}")
    ccert, ckey = pki.issue("sip.contoso.test", file_name=f"contoso-partner-{replication}")
    uas = SipUAS("127.0.0.2", free_port("127.0.0.2"))               # fabrikam's front end
    contoso = SipUAS("127.0.0.1", free_port(), tls=(ccert, ckey, pki.ca_file))  # contoso's edge
    ports = {"edge-a": udp_free_port(), "edge-b": udp_free_port()}
    a = Node("edge-a", "127.0.0.2", pki, cert, key, uas, contoso, [], ports, replication)
    b = Node("edge-b", "127.0.0.3", pki, cert, key, uas, contoso, ["edge-a"], ports, replication)
    return a, b, uas, contoso, (ccert, ckey)


@pytest.fixture(scope="module", params=["async", "sync"])
def pool(request, tmp_path_factory, pki):
    work = tmp_path_factory.mktemp(f"pool-{request.param}")
    a, b, uas, contoso, creds = make_pool(work, pki, request.param)
    try:
        a.start(work)
        b.start(work)
        wait_for(lambda: a.edge.status()["cluster"]["alive"] == 2 and
                 b.edge.status()["cluster"]["alive"] == 2, 10, "the pool of two")
        yield a, b, uas, contoso, creds, pki, request.param
    finally:
        codes = [n.edge.stop() for n in (a, b) if n.edge and n.edge.running()]
        uas.stop()
        contoso.stop()
    assert set(codes) <= {0}, codes


def partner(node, creds, pki):
    """contoso's edge, connecting to one node of fabrikam's pool."""
    return SipClient(*node.external, tls_ca=pki.ca_file, cert=creds[0], key=creds[1],
                     server_name="sip.fabrikam.test")


def exchange(c, data):
    c.send(data)
    return c.recv_final()


def test_dialogs_survive_the_node_that_saw_them_begin(pool):
    a, b, uas, contoso, creds, pki, replication = pool
    before = b.records()
    # A call from contoso through A.
    c = partner(a, creds, pki)
    try:
        r = exchange(c, sip_request("INVITE", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                                    to_uri="sip:bob@fabrikam.test", call_id="call-1"))
        assert r.status == 200, r
        c.send(sip_request("ACK", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                           to_uri="sip:bob@fabrikam.test", call_id="call-1", to_tag="uas"))
    finally:
        c.close()
    # A subscription of fabrikam's carol to contoso's dave, through A.
    i = SipClient(*a.internal)
    try:
        r = exchange(i, sip_request("SUBSCRIBE", "sip:dave@contoso.test",
                                    from_uri="sip:carol@fabrikam.test", to_uri="sip:dave@contoso.test",
                                    call_id="sub-1", via=(a.internal[0], 5999),
                                    headers=["Event: presence", "Expires: 600"]))
        assert r.status == 200, r
    finally:
        i.close()
    assert contoso.received("sub-1")
    # Both dialogs reach B through the pool's store; then A dies. With synchronous
    # replication, B held the call before its 200 reached the partner: no wait.
    if replication == "sync":
        assert b.records() >= before + 2
    else:
        wait_for(lambda: b.records() >= before + 2, 10, "the dialogs to reach edge-b")
    os.kill(a.edge.proc.pid, signal.SIGKILL)
    a.edge.proc.wait()
    a.edge.proc = None

    c = partner(b, creds, pki)
    try:
        r = exchange(c, sip_request("INVITE", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                                    to_uri="sip:bob@fabrikam.test", call_id="call-1", cseq=2,
                                    to_tag="uas", branch="z9hG4bK-reinvite"))
        assert r.status == 200, r                                      # the re-INVITE
        r = exchange(c, sip_request("NOTIFY", "sip:carol@fabrikam.test", from_uri="sip:dave@contoso.test",
                                    to_uri="sip:carol@fabrikam.test", call_id="sub-1", cseq=1,
                                    to_tag="f-sub-1", headers=["Event: presence",
                                                               "Subscription-State: active"]))
        assert r.status == 200, r                                      # the NOTIFY
        r = exchange(c, sip_request("BYE", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                                    to_uri="sip:bob@fabrikam.test", call_id="call-1", cseq=3,
                                    to_tag="uas"))
        assert r.status == 200, r                                      # the BYE
        # A dialog that never crossed the pool, and the call once it is over.
        r = exchange(c, sip_request("BYE", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                                    to_uri="sip:bob@fabrikam.test", call_id="never", to_tag="uas"))
        assert r.status == 481 and "no such dialog" in r.header("warning"), r
        r = exchange(c, sip_request("INFO", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                                    to_uri="sip:bob@fabrikam.test", call_id="call-1", cseq=4,
                                    to_tag="uas"))
        assert r.status == 481, r
    finally:
        c.close()
    # The front end refreshes carol's subscription through B, along the route set
    # A recorded: its entry for the internal side names the pool, not A.
    route_set = [v for n, v in reversed(contoso.received("sub-1")[0].headers) if n == "record-route"]
    assert INTERNAL_POOL in route_set[0] and "sip.fabrikam.test" in route_set[1], route_set
    i = SipClient(*b.internal)
    try:
        r = exchange(i, sip_request("SUBSCRIBE", "sip:dave@contoso.test",
                                    from_uri="sip:carol@fabrikam.test", to_uri="sip:dave@contoso.test",
                                    call_id="sub-1", cseq=2, to_tag="uas", via=(b.internal[0], 5999),
                                    headers=[f"Route: {v}" for v in route_set] +
                                            ["Event: presence", "Expires: 600"]))
        assert r.status == 200, r
    finally:
        i.close()
    assert [m.start.split()[0] for m in contoso.received("sub-1")] == ["SUBSCRIBE", "SUBSCRIBE"]
    methods = [m.start.split()[0] for m in uas.received("call-1")]
    assert methods.count("INVITE") == 2 and "BYE" in methods and "INFO" not in methods, methods
    assert [m.start.split()[0] for m in uas.received("sub-1")] == ["NOTIFY"]
    assert not uas.received("never")


def test_drain(tmp_path, pki):
    """SIGUSR1: the node takes no new dialogs (503), hands its state to the pool,
    and stops once nothing is under way (or at drain_timeout_s), leaving the pool."""
    a, b, uas, contoso, creds = make_pool(tmp_path, pki, "async")
    # edge-a's front end never answers call "pending": the node stays busy until its deadline.
    uas.status = lambda m: None if "pending" in (m.header("call-id") or "") else 200
    a.text = a.text.replace("limits = {", "limits = { drain_timeout_s = 2;") \
        if "limits = {" in a.text else a.text + "limits = { drain_timeout_s = 2; };\n"
    try:
        a.start(tmp_path)
        b.start(tmp_path)
        wait_for(lambda: a.edge.status()["cluster"]["alive"] == 2 and
                 b.edge.status()["cluster"]["alive"] == 2, 10, "the pool of two")
        c = partner(a, creds, pki)
        try:
            assert exchange(c, sip_request("INVITE", "sip:bob@fabrikam.test",
                                           from_uri="sip:alice@contoso.test",
                                           to_uri="sip:bob@fabrikam.test",
                                           call_id="drain-1")).status == 200
            c.send(sip_request("MESSAGE", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                               to_uri="sip:bob@fabrikam.test", call_id="pending"))
            wait_for(lambda: uas.received("pending"), 5, "the pending request at the front end")
            a.edge.proc.send_signal(signal.SIGUSR1)
            wait_for(lambda: "draining" in a.edge.log(), 5, "edge-a to drain")
            r = exchange(c, sip_request("INVITE", "sip:bob@fabrikam.test",
                                        from_uri="sip:alice@contoso.test",
                                        to_uri="sip:bob@fabrikam.test", call_id="drain-2"))
            assert r.status == 503 and "draining" in r.header("warning"), r
        finally:
            c.close()
        assert a.edge.proc.wait(10) == 0                    # stopped by itself
        assert "the deadline came first" in a.edge.log()
        wait_for(lambda: b.edge.status()["cluster"]["members"] and
                 {m["name"]: m["state"] for m in b.edge.status()["cluster"]["members"]}
                 .get("edge-a") == "left", 10, "edge-b to see edge-a leave")
        # The call goes on through edge-b: the handoff gave it the dialog.
        c = partner(b, creds, pki)
        try:
            r = exchange(c, sip_request("BYE", "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                                        to_uri="sip:bob@fabrikam.test", call_id="drain-1", cseq=2,
                                        to_tag="uas"))
            assert r.status == 200, r
        finally:
            c.close()
    finally:
        codes = [n.edge.stop() for n in (a, b) if n.edge and n.edge.running()]
        uas.stop()
        contoso.stop()
    assert set(codes) <= {0}, codes


def test_drain_with_nothing_under_way_stops_at_once(tmp_path, pki):
    """A drained node whose transactions are answered stops when its handoff
    is done, long before drain_timeout_s (the lifelines it keeps are not work)."""
    a, b, uas, contoso, creds = make_pool(tmp_path, pki, "async")
    a.text = a.text.replace("limits = {", "limits = { drain_timeout_s = 120;") \
        if "limits = {" in a.text else a.text + "limits = { drain_timeout_s = 120; };\n"
    try:
        a.start(tmp_path)
        b.start(tmp_path)
        wait_for(lambda: a.edge.status()["cluster"]["lifelines"] >= 1 and
                 b.edge.status()["cluster"]["lifelines"] >= 1, 10, "the pool of two, linked")
        a.edge.proc.send_signal(signal.SIGUSR1)
        assert a.edge.proc.wait(60) == 0
        assert "drained: stopping" in a.edge.log(), a.edge.log()[-2000:]
    finally:
        codes = [n.edge.stop() for n in (a, b) if n.edge and n.edge.running()]
        uas.stop()
        contoso.stop()
    assert set(codes) <= {0}, codes
