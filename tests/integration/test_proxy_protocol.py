"""The balancer's listener: a PROXY protocol v2 header, then the partner's TLS.

contoso.test's edge has two external listeners on 127.0.0.1: a plain one
(partners connecting directly) and one with proxy_protocol = true, which
takes connections only from proxy_from (the "balancer": this test, binding
127.0.0.77 as its source). The header names the partner's real address; the
edge must read exactly the header, hand the TLS bytes behind it to OpenSSL,
and from then on see the partner's address, not the balancer's: in its log
lines and in the received= it records in the partner's Via. Bad headers,
late headers and strangers are closed before any TLS, logged and counted in
GET /status. Headers are built here with struct, not by common/ppv2.c.
"""
import socket
import ssl
import struct
import subprocess
import time

import pytest

from edgepool import Edge, SipClient, SipUAS, edge_config, edged_binary, free_port, sip_request, wait_for

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
BALANCER = "127.0.0.77"       # in proxy_from
STRANGER = "127.0.0.1"        # not in proxy_from
PARTNER_IP = "127.0.0.99"     # what the headers say the partner is
TIMEOUT_MS = 1000             # limits.connect_timeout_ms: header and handshake


def v2_header(src, dst, command=0x21, family=None, tlvs=b""):
    """A PROXY v2 header for TCP from src to dst, (ip, port) each."""
    if ":" in src[0]:
        fam, addrs = 0x21, socket.inet_pton(socket.AF_INET6, src[0]) + \
            socket.inet_pton(socket.AF_INET6, dst[0])
    else:
        fam, addrs = 0x11, socket.inet_aton(src[0]) + socket.inet_aton(dst[0])
    body = addrs + struct.pack("!HH", src[1], dst[1]) + tlvs
    return SIG + bytes([command, family if family is not None else fam]) + \
        struct.pack("!H", len(body)) + body


def local_header():
    return SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)


class Lab:
    pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("proxy-protocol")
    lab = Lab()
    lab.pki = pki
    lab.fqdn = "sip.contoso.test"
    lab.cert, lab.key = pki.issue(lab.fqdn)
    lab.partner_cert, lab.partner_key = pki.issue("sip.fabrikam.test")
    lab.internal = ("127.0.0.1", free_port())
    lab.plain = ("127.0.0.1", free_port())
    lab.proxied = ("127.0.0.1", free_port())
    lab.status_port = free_port()
    lab.uas = SipUAS("127.0.0.1", free_port())
    text = edge_config(pool_fqdn=lab.fqdn, domains=["contoso.test"], ca=pki.ca_file,
                       cert=lab.cert, key=lab.key, internal=lab.internal, next_hop=lab.uas.addr,
                       external=lab.plain, status_port=lab.status_port,
                       partners=[{"domains": ["fabrikam.test"], "fqdn": "sip.fabrikam.test",
                                  "address": "127.0.0.2", "port": free_port("127.0.0.2")}],
                       limits={"connect_timeout_ms": TIMEOUT_MS}, proxy_listen=lab.proxied,
                       proxy_from=[BALANCER, "127.0.0.78"])
    lab.edge = Edge(work, "contoso.test", text, [lab.internal, lab.plain, lab.proxied])
    try:
        lab.edge.start()
        yield lab
    finally:
        code = lab.edge.stop()
        lab.uas.stop()
    # A sanitizer report or a crash at shutdown shows as a non-zero exit.
    assert code == 0, f"edged did not exit cleanly: {code}\n{lab.edge.log()[-3000:]}"


# ---- helpers ----

class BalancedClient(SipClient):
    """A partner's mutual-TLS SIP connection as the balancer relays it: from
    `source`, with `header` in front. The header and the ClientHello leave in
    one TCP segment (the socket is corked until both are written), so the
    edge must stop reading exactly at the header's end."""

    def __init__(self, lab, header, *, source=BALANCER, timeout=5.0):
        raw = socket.create_connection(lab.proxied, timeout=timeout, source_address=(source, 0))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        raw.sendall(header)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(lab.pki.ca_file))
        ctx.load_cert_chain(str(lab.partner_cert), str(lab.partner_key))
        self.sock = ctx.wrap_socket(raw, server_hostname=lab.fqdn, do_handshake_on_connect=False)
        self.sock.setblocking(False)
        try:
            self.sock.do_handshake()       # writes the ClientHello behind the header
        except ssl.SSLWantReadError:
            pass
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        self.sock.settimeout(timeout)
        self.sock.do_handshake()
        self.local_port = self.sock.getsockname()[1]
        self.buf = b""


def raw_connect(addr, source, data=b"", timeout=5.0):
    s = socket.create_connection(addr, timeout=timeout, source_address=(source, 0))
    if data:
        s.sendall(data)
    return s


def closed_silently(s, timeout=5.0):
    """Whether the edge closes s without sending a byte (no TLS at all)."""
    s.settimeout(timeout)
    try:
        return s.recv(4096) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    finally:
        s.close()


def log_line(edge, *words, timeout=5):
    """The first line of edge's log holding every word (polled)."""
    return wait_for(lambda: next((l for l in edge.log().splitlines() if all(w in l for w in words)),
                                 None), timeout, f"a log line with {words}")


def counter(lab, name):
    return lab.edge.status()[name]


def wait_counter(lab, name, value):
    wait_for(lambda: counter(lab, name) == value, 5, f"status {name} == {value}")


def message(call_id, via=("127.0.0.1", 5999)):
    return sip_request("MESSAGE", "sip:alice@contoso.test", from_uri="sip:bob@fabrikam.test",
                       to_uri="sip:alice@contoso.test", call_id=call_id, via=via,
                       headers=["Content-Type: text/plain"], body="hello")


def partner_via(lab, call_id):
    """The partner's Via (the second) on the request that reached the next hop."""
    reqs = wait_for(lambda: lab.uas.received(call_id), 5, f"{call_id} at the next hop")
    vias = [v for n, v in reqs[0].headers if n == "via"]
    assert len(vias) == 2, vias
    return vias[1]


# ---- through the balancer ----

def test_message_through_balancer_takes_partner_address(lab):
    before = counter(lab, "proxy_headers")
    header = v2_header((PARTNER_IP, 40123), ("127.0.0.10", 5061))
    c = BalancedClient(lab, header)
    try:
        c.send(message("pp-msg-1"))
        assert c.recv_final().status == 200
    finally:
        c.close()
    # What the proxy records and routes responses by: the partner's address.
    assert "received=127.0.0.99" in partner_via(lab, "pp-msg-1")
    log_line(lab.edge, "TLS connection from 127.0.0.99:40123 via balancer 127.0.0.77 accepted",
             "sip.fabrikam.test")
    wait_counter(lab, "proxy_headers", before + 1)


def test_ipv6_source_and_tlvs(lab):
    """A TCP6 header on an IPv4 connection, with TLVs (ALPN, authority, NOOP) to skip."""
    tlvs = b"\x01\x00\x02h2" + b"\x02\x00\x10sip.contoso.test" + b"\x04\x00\x00"
    c = BalancedClient(lab, v2_header(("2001:db8::99", 40000), ("fd00::10", 5061), tlvs=tlvs))
    try:
        c.send(message("pp-msg-v6"))
        assert c.recv_final().status == 200
    finally:
        c.close()
    assert "received=2001:db8::99" in partner_via(lab, "pp-msg-v6")
    log_line(lab.edge, "TLS connection from [2001:db8::99]:40000 via balancer 127.0.0.77 accepted")


def test_partner_address_in_bad_message_log(lab):
    """The malformed-message notice names the partner, and the balancer beside it."""
    c = BalancedClient(lab, v2_header((PARTNER_IP, 40124), ("127.0.0.10", 5061)))
    try:
        c.send(message("pp-bad-1").replace(b"CSeq: 1 MESSAGE", b"CSeq: one MESSAGE"))
        assert c.recv_final().status == 400
    finally:
        c.close()
    log_line(lab.edge, "malformed message from 127.0.0.99:40124 via balancer 127.0.0.77")


def test_local_keeps_balancer_address(lab):
    """LOCAL: the balancer's own connection (a health check) is its own peer."""
    before = counter(lab, "proxy_headers")
    c = BalancedClient(lab, local_header())
    try:
        c.send(message("pp-local-1"))
        assert c.recv_final().status == 200
    finally:
        c.close()
    assert "received=127.0.0.77" in partner_via(lab, "pp-local-1")
    log_line(lab.edge, f"TLS connection from 127.0.0.77:{c.local_port} accepted")
    wait_counter(lab, "proxy_headers", before + 1)


# ---- refused before any TLS ----

def test_stranger_closed_without_handshake(lab):
    before = counter(lab, "proxy_refused")
    s = raw_connect(lab.proxied, STRANGER, v2_header((PARTNER_IP, 40125), ("127.0.0.10", 5061)))
    port = s.getsockname()[1]
    assert closed_silently(s)
    log_line(lab.edge, f"connection from 127.0.0.1:{port} to a PROXY protocol listener refused",
             "proxy_from")
    wait_counter(lab, "proxy_refused", before + 1)
    assert lab.edge.running()


@pytest.mark.parametrize("data, reason", [
    (b"GET /status HTTP/1.0\r\n\r\n", "not a PROXY protocol v2 signature"),
    (b"PROXY TCP4 127.0.0.99 127.0.0.10 40000 5061\r\n", "v1 (text) header"),
    (SIG + b"\x21\x11\xff\xff" + b"\x00" * 64, "longer than 536 bytes"),
    (v2_header((PARTNER_IP, 1), ("127.0.0.10", 2), family=0x12), "another protocol than TCP"),
    (SIG + b"\x11\x11\x00\x0c" + b"\x00" * 12, "version other than 2"),
    (v2_header((PARTNER_IP, 40126), ("127.0.0.10", 5061))[:20], "timeout waiting for the PROXY header"),
], ids=["garbage", "v1", "oversized", "udp", "version", "truncated-then-silence"])
def test_bad_header_closed_logged_counted(lab, data, reason):
    before = counter(lab, "proxy_header_failures")
    failures_before = counter(lab, "connection_failures")
    start = time.monotonic()
    s = raw_connect(lab.proxied, BALANCER, data)
    port = s.getsockname()[1]
    assert closed_silently(s, timeout=TIMEOUT_MS / 1000 + 5)
    if "timeout" in reason:
        assert time.monotonic() - start >= TIMEOUT_MS / 1000 * 0.9
    log_line(lab.edge, f"connection from balancer 127.0.0.77:{port} closed: ", reason)
    wait_counter(lab, "proxy_header_failures", before + 1)
    # Counted once: a header failure is not also a connection failure.
    assert counter(lab, "connection_failures") == failures_before
    assert lab.edge.running()


def test_closed_before_header_not_counted(lab):
    """A TCP check that connects and closes is no bad header."""
    before = counter(lab, "proxy_header_failures")
    s = raw_connect(lab.proxied, BALANCER)
    port = s.getsockname()[1]
    s.close()
    log_line(lab.edge, f"connection from balancer 127.0.0.77:{port} closed: closed before the PROXY header")
    assert counter(lab, "proxy_header_failures") == before


# ---- the plain listener ----

def test_plain_listener_still_works(lab):
    c = SipClient(*lab.plain, tls_ca=lab.pki.ca_file, cert=lab.partner_cert, key=lab.partner_key,
                  server_name=lab.fqdn)
    try:
        c.send(message("pp-plain-1"))
        assert c.recv_final().status == 200
    finally:
        c.close()
    assert "received=" not in partner_via(lab, "pp-plain-1")   # 127.0.0.1 as the Via says


def test_plain_listener_rejects_proxy_header(lab):
    """Without proxy_protocol a header is just bytes that are not TLS."""
    before = counter(lab, "proxy_headers")
    raw = raw_connect(lab.plain, BALANCER, v2_header((PARTNER_IP, 40127), ("127.0.0.10", 5061)))
    port = raw.getsockname()[1]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(lab.pki.ca_file))
    ctx.load_cert_chain(str(lab.partner_cert), str(lab.partner_key))
    try:
        ctx.wrap_socket(raw, server_hostname=lab.fqdn).close()
    except (ssl.SSLError, OSError):
        pass
    else:
        pytest.fail("a TLS handshake passed after a PROXY header on the plain listener")
    finally:
        raw.close()
    log_line(lab.edge, f"TLS connection from 127.0.0.77:{port} (external side) failed")
    assert counter(lab, "proxy_headers") == before
    assert not lab.uas.received("pp-plain-2")


# ---- configuration ----

def check(path):
    return subprocess.run([edged_binary(), "-t", "-c", str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("external, internal_extra, line_of, message", [
    ('listen = ( { address = "127.0.0.1"; port = 5063; proxy_protocol = true; } );',
     "", "proxy_protocol", "needs external.proxy_from"),
    ('listen = ( { address = "127.0.0.1"; port = 5061; } ); proxy_from = [ "127.0.0.77" ];',
     "", "proxy_from", "only used with a listener that has proxy_protocol"),
    ('listen = ( { address = "127.0.0.1"; port = 5063; proxy_protocol = true; } );\n'
     '  proxy_from = [ "127.0.0.77", "balancer.contoso.test" ];',
     "", "proxy_from", "'balancer.contoso.test' is not a numeric"),
    ('listen = ( { address = "127.0.0.1"; port = 5063; proxy_protocol = "yes"; } );\n'
     '  proxy_from = [ "127.0.0.77" ];',
     "", "proxy_protocol", "must be true or false"),
    ('listen = ( { address = "127.0.0.1"; port = 5061; } );',
     " proxy_protocol = true;", "proxy_protocol", "only the balancer sends a PROXY header"),
], ids=["no-proxy-from", "proxy-from-alone", "proxy-from-name", "not-bool", "internal"])
def test_config_errors_name_the_line(lab, tmp_path, external, internal_extra, line_of, message):
    text = "\n".join([
        'node = { pool_fqdn = "sip.contoso.test"; sip_domains = [ "contoso.test" ]; };',
        f'tls = {{ ca_file = "{lab.pki.ca_file}"; cert_file = "{lab.cert}"; key_file = "{lab.key}"; }};',
        "internal = {",
        f'  listen = ( {{ address = "127.0.0.1"; port = 5060; transport = "tcp";{internal_extra} }} );',
        '  next_hop = { host = "127.0.0.1"; port = 5070; transport = "tcp"; };',
        "};",
        "external = {",
        f"  {external}",
        "};", ""])
    path = tmp_path / "bad.conf"
    path.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if line_of in l)
    r = check(path)
    assert r.returncode == 1, r
    assert f"{path}:{line}:" in r.stderr and message in r.stderr, r.stderr


def test_config_proxy_listener_ok(lab, tmp_path):
    text = "\n".join([
        'node = { pool_fqdn = "sip.contoso.test"; sip_domains = [ "contoso.test" ]; };',
        f'tls = {{ ca_file = "{lab.pki.ca_file}"; cert_file = "{lab.cert}"; key_file = "{lab.key}"; }};',
        'internal = { listen = ( { address = "127.0.0.1"; port = 5060; } );',
        '  next_hop = { host = "127.0.0.1"; port = 5070; transport = "tcp"; }; };',
        'external = { listen = ( { address = "127.0.0.1"; port = 5061; },',
        '  { address = "::1"; port = 5063; proxy_protocol = true; } );',
        '  proxy_from = [ "198.18.0.1", "fd00::1" ]; };', ""])
    path = tmp_path / "good.conf"
    path.write_text(text)
    r = check(path)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
