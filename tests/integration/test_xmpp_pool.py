"""XMPP across a pool: contoso.test has two edge nodes, A and B, in one
cluster; BIND's _xmpp-server._tcp.contoso.test sends partners to A first
(priority 0) and to B when A is gone (priority 10). fabrikam.test is a real
Prosody, with juliet on a real XMPP client; contoso's front end is a
recording SIP server (SipUAS).

juliet subscribes to alice's presence through A, which holds the SIP
subscription and the stream to fabrikam.test. A is killed (SIGKILL): B,
which knows both from the pool's store, opens the stream to fabrikam.test
again and refreshes the subscription in the same SIP dialog, and alice's
next NOTIFY, sent to the pool's internal name, reaches juliet through B.
"""
import base64
import os
import re
import signal

import pytest

from dnslab import Bind
from edgepool import Edge, SipClient, SipUAS, edge_config, free_port, sip_request, wait_for
from prosodylab import Prosody
from test_cluster import udp_free_port

KEY = base64.b64encode(bytes(range(32))).decode()
CONTOSO, FABRIKAM = "contoso.test", "fabrikam.test"
INTERNAL_POOL = "edge-int.contoso.test"
PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\n'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@contoso.test">'
        '<tuple id="t"><status><basic>open</basic></status><note>Back after lunch</note></tuple>'
        '<dm:person id="p"><rpid:activities><rpid:meal/></rpid:activities></dm:person>'
        '</presence>')


class Node:
    def __init__(self, name, pki, cert, key, xcert, xkey, fe, dns, ports, seeds):
        self.name = name
        self.internal = ("127.0.0.1", free_port())
        self.external = ("127.0.0.1", free_port())
        self.xmpp = ("127.0.0.1", ports[name + "-xmpp"])
        self.status_port = free_port()
        cluster = {"name": name, "address": "127.0.0.1", "port": ports[name], "keys": [KEY],
                   "join": [f"127.0.0.1:{ports[s]}" for s in seeds],
                   "probe_interval_ms": 200, "probe_timeout_ms": 100,
                   "gossip_interval_ms": 50, "pushpull_interval_s": 2}
        self.text = edge_config(
            pool_fqdn="sip.contoso.test", domains=[CONTOSO], ca=pki.ca_file, cert=cert, key=key,
            internal=self.internal, next_hop=fe.addr, external=self.external,
            status_port=self.status_port, dns=dns,
            policies=[{"identity": "global", "enable_federation_access": True,
                       "enable_xmpp_access": True}],
            sections={"cluster": cluster,
                      "xmpp": {"listen": [{"address": self.xmpp[0], "port": self.xmpp[1]}],
                               "cert_file": str(xcert), "key_file": str(xkey)},
                      "xmpp_partners": [{"domain": FABRIKAM, "partner_type": "Federated"}]})
        self.text = self.text.replace("internal = {", f'internal = {{\n  pool_fqdn = "{INTERNAL_POOL}";', 1)
        self.edge = None

    def start(self, work):
        self.edge = Edge(work, self.name, self.text, [self.internal, self.xmpp]).start()
        return self

    def xmpp_status(self):
        return self.edge.status()["xmpp"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("xmpp-pool")
    ports = {"edge-a": udp_free_port(), "edge-b": udp_free_port(),
             "edge-a-xmpp": free_port(), "edge-b-xmpp": free_port()}
    prosody_port = free_port("127.0.0.2")
    zones = {
        FABRIKAM: [f"_xmpp-server._tcp 1 IN SRV 0 0 {prosody_port} xmpp.{FABRIKAM}.",
                   "xmpp 1 IN A 127.0.0.2"],
        CONTOSO: [f"_xmpp-server._tcp 1 IN SRV 0 0 {ports['edge-a-xmpp']} edge-a.{CONTOSO}.",
                  f"_xmpp-server._tcp 1 IN SRV 10 0 {ports['edge-b-xmpp']} edge-b.{CONTOSO}.",
                  "edge-a 1 IN A 127.0.0.1", "edge-b 1 IN A 127.0.0.1"],
    }
    cert, key = pki.issue("sip.contoso.test", file_name="contoso-xmpp-pool")
    xcert, xkey = pki.issue(CONTOSO, file_name="contoso-xmpp-pool-domain")
    fe = SipUAS("127.0.0.1", free_port(), contact="<sip:alice@127.0.0.1;transport=tcp>",
                headers=["Expires: 600"])
    nodes = []
    with Bind(work / "dns", zones) as dns, \
         Prosody(work / "prosody", FABRIKAM, "127.0.0.2", prosody_port, pki=pki,
                 dns=dns.address, users={"juliet": "pw-j"}) as prosody:
        try:
            a = Node("edge-a", pki, cert, key, xcert, xkey, fe, dns.address, ports, [])
            b = Node("edge-b", pki, cert, key, xcert, xkey, fe, dns.address, ports, ["edge-a"])
            nodes = [a.start(work), b.start(work)]
            wait_for(lambda: all(n.edge.status()["cluster"]["alive"] == 2 for n in nodes), 10,
                     "the pool of two")
            yield a, b, fe, prosody
        finally:
            codes = [n.edge.stop() for n in nodes if n.edge and n.edge.running()]
            fe.stop()
    assert set(codes) <= {0}, codes


def subscribes(fe):
    with fe._lock:
        return [r for r in fe.requests if r.start.startswith("SUBSCRIBE ")]


def test_subscription_and_stream_survive_the_holder(pool):
    a, b, fe, prosody = pool
    with prosody.client("juliet") as juliet:
        juliet.subscribe("alice@contoso.test")
        juliet.wait_presence("alice@contoso.test", "subscribed", timeout=15)
        first = subscribes(fe)
        assert len(first) == 1, first
        call_id = first[0].header("call-id")
        gw_tag = re.search(r"tag=([^;>\s]+)", first[0].header("from")).group(1)
        # A took it (SRV priority 0); B knows the watch and the stream's holder from the store.
        assert a.xmpp_status()["watches"]["xmpp"] == 1
        wait_for(lambda: b.xmpp_status()["watches"]["xmpp"] == 1, 10, "B to know the watch")
        assert not [s for s in b.xmpp_status()["streams"] if s["direction"] == "out"]

        os.kill(a.edge.proc.pid, signal.SIGKILL)
        a.edge.proc.wait(10)

        # B takes over: the stream to fabrikam.test and the subscription's refresh.
        wait_for(lambda: b.xmpp_status()["takeovers"] >= 2, 15, "B to take over A's work")
        wait_for(lambda: any(s["direction"] == "out" and s["remote"] == FABRIKAM and s["ready"]
                             for s in b.xmpp_status()["streams"]), 15, "B's stream to fabrikam")
        wait_for(lambda: len(subscribes(fe)) >= 2, 15, "the refresh through B")
        refresh = subscribes(fe)[1]
        assert refresh.header("call-id") == call_id
        assert re.search(rf"tag={gw_tag}\b", refresh.header("from"))
        assert "tag=uas" in refresh.header("to")
        assert f"sip:xmpp-gw@{INTERNAL_POOL}" in refresh.header("contact")

        # alice's presence, to the pool's name, through B (A is gone).
        notify = sip_request("NOTIFY", f"sip:xmpp-gw@{INTERNAL_POOL}:{b.internal[1]};transport=tcp",
                             from_uri="sip:alice@contoso.test", to_uri="sip:juliet@fabrikam.test",
                             call_id=call_id, to_tag=gw_tag, cseq=2,
                             headers=["Event: presence", "Subscription-State: active;expires=500",
                                      "Content-Type: application/pidf+xml"], body=PIDF)
        notify = notify.replace(f"tag=f-{call_id}".encode(), b"tag=uas", 1)
        c = SipClient(*b.internal)
        try:
            c.send(notify)
            resp = c.recv_final()
        finally:
            c.close()
        assert resp.status == 200, resp.start
        ptype, show, status = juliet.wait_presence("alice@contoso.test", None, timeout=15,
                                                   show="away")
        assert status == "Back after lunch"
    assert b.xmpp_status()["notifies_in"] >= 1
