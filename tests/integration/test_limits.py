"""Connection limits and the internal TLS listener."""
import socket
import ssl

import pytest

from conftest import make_org, org_config
from edgepool import Edge, SipClient, sip_request, wait_for


def start(tmp_path, pki, org, partners, config_edit=lambda t: t, **kw):
    text = config_edit(org_config(org, partners, pki, **kw))
    org.edge = Edge(tmp_path, org.domain, text, [org.internal, org.external])
    return org.edge.start()


@pytest.fixture
def limited(tmp_path, pki):
    """contoso with an idle timeout of 1 s and room for 2 connections."""
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", "127.0.0.2", pki)
    start(tmp_path, pki, contoso, [fabrikam],
          limits={"max_keep_alive_interval_s": 1, "max_connections": 2})
    yield contoso
    assert contoso.edge.stop() == 0, contoso.edge.log()[-3000:]


def test_idle_connection_is_closed(limited):
    """A quiet peer gets a CRLFCRLF ping after the interval; unanswered, it is closed."""
    c = SipClient(*limited.internal)
    try:
        assert c.read_raw(4) == b"\r\n\r\n"
        assert c.closed_by_peer(timeout=5), "an unanswered keep-alive left the connection open"
    finally:
        c.close()
    wait_for(lambda: "no answer to a keep-alive ping" in limited.edge.log(), 5, "the log line")


def test_answered_keep_alives_keep_the_connection(limited):
    """Answering each ping with a pong keeps a connection without SIP open past 3 intervals."""
    c = SipClient(*limited.internal)
    try:
        for _ in range(3):
            assert c.read_raw(4) == b"\r\n\r\n"
            c.send(b"\r\n")
        c.send(sip_request("OPTIONS", f"sip:{limited.fqdn}", from_uri="sip:alice@contoso.test",
                           to_uri=f"sip:{limited.fqdn}", call_id="ka-1"))
        assert c.recv().status == 200
    finally:
        c.close()


def test_without_white_space_keep_alive_only_sip_counts(tmp_path, pki):
    """enable_white_space_keep_alive = false: pings are answered, but a peer that only
    pings is closed after the interval, and the edge sends no ping of its own."""
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", "127.0.0.2", pki)
    start(tmp_path, pki, contoso, [fabrikam],
          limits={"max_keep_alive_interval_s": 1, "enable_white_space_keep_alive": "false"})
    c = SipClient(*contoso.internal)
    try:
        closed = False
        for _ in range(40):      # at most 40 rounds of 0.3 s: bounded
            try:
                c.send(b"\r\n\r\n")
                assert c.read_raw(2) == b"\r\n"
                c.sock.settimeout(0.3)
                extra = c.sock.recv(16)      # nothing unsolicited may come
                closed = extra == b""
                assert closed, f"the edge sent {extra!r}"
                break
            except socket.timeout:
                continue
            except (ConnectionResetError, EOFError, ssl.SSLError):
                closed = True
                break
        assert closed, "pings alone kept the connection open"
    finally:
        c.close()
        assert contoso.edge.stop() == 0, contoso.edge.log()[-3000:]
    assert "idle timeout" in contoso.edge.log()


def test_connection_limit(limited):
    first, second = SipClient(*limited.internal), SipClient(*limited.internal)
    third = SipClient(*limited.internal)
    port = third.sock.getsockname()[1]
    try:
        assert third.closed_by_peer(timeout=5)
        wait_for(lambda: f"127.0.0.1:{port}" in limited.edge.log()
                 and "connection limit" in limited.edge.log(), 5, "the refusal in the log")
        # The two within the limit still work.
        req = sip_request("OPTIONS", "sip:sip.contoso.test", from_uri="sip:alice@contoso.test",
                          to_uri="sip:sip.contoso.test", call_id="limit-1")
        first.send(req)
        assert first.recv_final().status == 200
    finally:
        for c in (first, second, third):
            c.close()


def test_internal_tls_listener(tmp_path, pki):
    """The organization's servers may connect over mutual TLS too."""
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", "127.0.0.2", pki)
    front_end = pki.issue("fe.contoso.test")
    start(tmp_path, pki, contoso, [fabrikam],
          config_edit=lambda t: t.replace('transport = "tcp"; } );', 'transport = "tls"; } );', 1))
    try:
        c = SipClient(*contoso.internal, tls_ca=pki.ca_file, cert=front_end[0], key=front_end[1],
                      server_name=contoso.fqdn)
        try:
            c.send(sip_request("OPTIONS", "sip:sip.contoso.test", from_uri="sip:alice@contoso.test",
                               to_uri="sip:sip.contoso.test", call_id="itls-1"))
            assert c.recv_final().status == 200
            c.send(sip_request("MESSAGE", "sip:bob@nowhere.test", from_uri="sip:alice@contoso.test",
                               to_uri="sip:bob@nowhere.test", call_id="itls-2"))
            assert c.recv_final().status == 403
        finally:
            c.close()
        # Without a client certificate the internal TLS listener refuses too.
        raw = socket.create_connection(contoso.internal, timeout=5)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(pki.ca_file))
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, EOFError, OSError)):
            s = ctx.wrap_socket(raw, server_hostname=contoso.fqdn)
            s.sendall(b"\r\n\r\n")
            if not s.recv(2):
                raise EOFError("closed")
        raw.close()
    finally:
        assert contoso.edge.stop() == 0, contoso.edge.log()[-3000:]
