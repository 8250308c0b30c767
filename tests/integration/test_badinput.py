"""Bad input gets a named outcome and loses nothing: a SIP status, a closed
connection, a log line. Afterwards the edge still relays."""
import pytest

from conftest import make_org, start_edge
from edgepool import SipClient, sip_request, wait_for
from test_relay import relay


def message(org, call_id, ruri=None, **kw):
    return sip_request("MESSAGE", ruri or "sip:bob@fabrikam.test",
                       from_uri=f"sip:alice@{org.domain}", to_uri="sip:bob@fabrikam.test",
                       call_id=call_id, **kw)


@pytest.fixture
def client(orgs):
    contoso, _ = orgs
    c = SipClient(*contoso.internal)
    yield c
    c.close()


def expect(client, data, status):
    client.send(data)
    r = client.recv_final()
    assert r.status == status, r
    return r


@pytest.mark.parametrize("broken", [
    lambda m: m.replace(b"Call-ID: ", b"X-Call-ID: "),          # mandatory header missing
    lambda m: m.replace(b"CSeq: 1 MESSAGE", b"CSeq: one MESSAGE"),
    lambda m: m.replace(b"CSeq: 1 MESSAGE", b"CSeq: 1 INVITE"),  # method mismatch
    lambda m: m.replace(b"Max-Forwards: 70", b"Max-Forwards 70"),  # no colon
    lambda m: m.replace(b"Max-Forwards: 70", b"Max-Forwards: 7000"),
], ids=["no-call-id", "bad-cseq", "cseq-method", "no-colon", "max-forwards"])
def test_malformed_gets_400_and_connection_stays(orgs, client, broken):
    r = expect(client, broken(message(orgs[0], "bad-1")), 400)
    assert r.header("warning") and "sip.contoso.test" in r.header("warning")
    # Same connection, next request: still served (403: a domain that is no partner).
    expect(client, message(orgs[0], "bad-2", ruri="sip:bob@nowhere.test"), 403)


def test_oversized_gets_513_then_close(orgs, client):
    body = "x" * (129 * 1024)   # internal side limit: 128 KB
    client.send(message(orgs[0], "big-1", body=body))
    assert client.recv().status == 513
    assert client.closed_by_peer()
    assert orgs[0].edge.running()


def log_line(edge, *words, timeout=5):
    """The first line of edge's log holding every word (polled)."""
    return wait_for(lambda: next((l for l in edge.log().splitlines() if all(w in l for w in words)),
                                 None), timeout, f"a log line with {words}")


def test_broken_framing_closes_and_logs(orgs, client):
    port = client.sock.getsockname()[1]
    client.send(message(orgs[0], "frame-1", content_length="abc"))
    client.sock.settimeout(5)
    assert client.sock.recv(65536) == b"", "the edge answered a request it cannot frame"
    log_line(orgs[0].edge, f"127.0.0.1:{port}", "framing")


def test_garbage_closes(orgs, client):
    client.send(b"\x16\x03\x01 this is not SIP at all\r\n\r\n")
    assert client.closed_by_peer()


def test_keepalive_ping_pong(orgs, client):
    client.send(b"\r\n\r\n")
    assert client.read_raw(2) == b"\r\n"
    expect(client, message(orgs[0], "ka-1", ruri="sip:bob@nowhere.test"), 403)


def test_unknown_domain_403_names_it(orgs, client):
    r = expect(client, message(orgs[0], "dom-1", ruri="sip:bob@nowhere.test"), 403)
    assert r.header("warning").startswith('399 sip.contoso.test "'), r
    assert "nowhere.test" in r.header("warning")
    assert "not an allowed federation partner" in r.header("warning")


def test_sender_domain_not_ours_403(orgs, client):
    data = sip_request("MESSAGE", "sip:bob@fabrikam.test", from_uri="sip:mallory@fabrikam.test",
                       to_uri="sip:bob@fabrikam.test", call_id="spoof-1")
    r = expect(client, data, 403)
    assert "fabrikam.test" in r.header("warning")


@pytest.mark.parametrize("method", ["MESSAGE", "INVITE", "SUBSCRIBE"])
def test_max_forwards_zero_483(orgs, client, method):
    """OPTIONS with Max-Forwards 0 is answered 200 instead: test_options.py."""
    data = sip_request(method, "sip:bob@fabrikam.test", from_uri="sip:alice@contoso.test",
                       to_uri="sip:bob@fabrikam.test", call_id=f"mf-{method}", max_forwards=0,
                       headers=["Contact: <sip:alice@127.0.0.1:5999;transport=tcp>"])
    expect(client, data, 483)


def test_proxy_require_420(orgs, client):
    r = expect(client, message(orgs[0], "pr-1", headers=["Proxy-Require: foo"]), 420)
    assert r.header("unsupported") == "foo"


def test_partner_requests_checked(orgs, pki):
    """A verified partner may speak only for its own domains, only to ours."""
    contoso, fabrikam = orgs
    c = SipClient(*contoso.external, tls_ca=pki.ca_file, cert=fabrikam.cert, key=fabrikam.key,
                  server_name=contoso.fqdn)
    try:
        relay_req = sip_request("MESSAGE", "sip:eve@litware.test", from_uri="sip:bob@fabrikam.test",
                                to_uri="sip:eve@litware.test", call_id="in-1")
        r = expect(c, relay_req, 403)
        assert "relay denied" in r.header("warning")
        spoof = sip_request("MESSAGE", "sip:alice@contoso.test", from_uri="sip:ceo@northwind.test",
                            to_uri="sip:alice@contoso.test", call_id="in-2")
        r = expect(c, spoof, 403)
        assert "northwind.test" in r.header("warning") and "sip.fabrikam.test" in r.header("warning")
        preloaded = sip_request("MESSAGE", "sip:eve@litware.test", from_uri="sip:bob@fabrikam.test",
                                to_uri="sip:eve@litware.test", call_id="in-3",
                                headers=["Route: <sip:proxy.litware.test;lr>"])
        expect(c, preloaded, 403)
    finally:
        c.close()


def test_unknown_peer_certificate_403(orgs, pki):
    """A certificate from the right CA that names no partner: TLS passes, requests do not."""
    contoso, _ = orgs
    cert, key = pki.issue("sip.evil.test")
    c = SipClient(*contoso.external, tls_ca=pki.ca_file, cert=cert, key=key, server_name=contoso.fqdn)
    try:
        req = sip_request("MESSAGE", "sip:alice@contoso.test", from_uri="sip:eve@evil.test",
                          to_uri="sip:alice@contoso.test", call_id="evil-1")
        r = expect(c, req, 403)
        assert "sip.evil.test" in r.header("warning")
    finally:
        c.close()


def test_pipelined_requests_all_answered(orgs, client):
    client.send(b"".join(message(orgs[0], f"pipe-{i}", ruri="sip:bob@nowhere.test") for i in range(3)))
    assert [client.recv_final().header("call-id") for _ in range(3)] == ["pipe-0", "pipe-1", "pipe-2"]


def test_request_in_single_bytes(orgs, client):
    for b in message(orgs[0], "bytes-1", ruri="sip:bob@nowhere.test", body="hi"):
        client.sock.sendall(bytes([b]))
    assert client.recv_final().status == 403


def test_compact_header_names(orgs, client):
    data = message(orgs[0], "compact-1", ruri="sip:bob@nowhere.test", body="hi")
    for long, short in ((b"Via:", b"v:"), (b"From:", b"f:"), (b"To:", b"t:"), (b"Call-ID:", b"i:"),
                        (b"Content-Length:", b"l:")):
        data = data.replace(long, short, 1)
    r = expect(client, data, 403)
    assert r.header("call-id") == "compact-1"


def test_overlong_header_line_400(orgs, client):
    """limits.max_line_bytes (8192): a 400, and the connection stays."""
    expect(client, message(orgs[0], "long-1", headers=["X-Long: " + "a" * 9000]), 400)
    expect(client, message(orgs[0], "long-2", ruri="sip:bob@nowhere.test"), 403)


@pytest.fixture
def partner_client(orgs, pki):
    contoso, fabrikam = orgs
    c = SipClient(*contoso.external, tls_ca=pki.ca_file, cert=fabrikam.cert, key=fabrikam.key,
                  server_name=contoso.fqdn)
    yield c
    c.close()


def inbound(call_id, **kw):
    return sip_request("MESSAGE", "sip:alice@contoso.test", from_uri="sip:bob@fabrikam.test",
                       to_uri="sip:alice@contoso.test", call_id=call_id, **kw)


def test_external_malformed_400_ping_and_framing(orgs, partner_client):
    """The same rules on the mutual-TLS side."""
    c = partner_client
    expect(c, inbound("ext-1").replace(b"CSeq: 1 MESSAGE", b"CSeq: x MESSAGE"), 400)
    c.send(b"\r\n\r\n")
    assert c.read_raw(2) == b"\r\n"
    expect(c, inbound("ext-2", max_forwards=0), 483)
    port = c.sock.getsockname()[1]
    c.send(inbound("ext-3", content_length="abc"))
    assert c.closed_by_peer()
    log_line(orgs[0].edge, f"127.0.0.1:{port}", "framing")


@pytest.fixture(scope="module")
def small_edge(tmp_path_factory, pki):
    """An edge whose internal side takes at most 64 KB per message (Lync's least)."""
    org = make_org("contoso.test", "127.0.0.1", pki)
    partner = make_org("fabrikam.test", "127.0.0.6", pki)   # nothing listens there
    try:
        start_edge(tmp_path_factory.mktemp("small"), org, [partner], pki, internal_max_kb=64)
        yield org
    finally:
        code = org.edge.stop() if org.edge else 0
    assert code == 0, org.edge.log()[-3000:]


def test_configured_limit_513_then_close(small_edge):
    c = SipClient(*small_edge.internal)
    try:
        # Under the limit: parsed and judged (403, a domain that is no partner).
        expect(c, message(small_edge, "small-1", ruri="sip:bob@nowhere.test", body="x" * (63 * 1024)),
               403)
        c.send(message(small_edge, "small-2", ruri="sip:bob@nowhere.test", body="x" * (65 * 1024)))
        assert c.recv().status == 513
        assert c.closed_by_peer()
    finally:
        c.close()
    assert small_edge.edge.running()


def test_still_relays_after_bad_input(orgs, tmp_path):
    contoso, fabrikam = orgs
    assert contoso.edge.running() and fabrikam.edge.running()
    assert contoso.edge.status()["malformed"] >= 5
    relay(tmp_path, "message", contoso, fabrikam, calls=3)
