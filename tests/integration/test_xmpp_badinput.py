"""Bad input on the edge's XMPP port (edge/xmpp_s2s.c on edge/xmpp_xml.c), from
raw sockets over plain TCP, then a real Prosody message each way to show the
edge still serves. The edge (contoso.test) has two XMPP partners:
fabrikam.test (Prosody; tls_negotiation and sasl_negotiation Optional, so a
raw stream may go on without TLS) and plain.test (TLS and SASL NotSupported);
max_stanza_kb = 2; limits.connect_timeout_ms = 500, so a stream must
authenticate within 1 s; a known dialback_secret.

What each input gets (a stream error is always preceded by our stream header,
as RFC 6120 4.9.1.1 wants, and followed by </stream:stream>; then the edge
closes the connection and logs the reason with the peer's address):

| input | answer |
|---|---|
| malformed XML (mismatched tags) | `<not-well-formed/>` |
| garbage bytes (a TLS ClientHello on the plain port), an HTTP request | `<not-well-formed/>` |
| a stanza over max_stanza_kb, or one element's text over it | `<policy-violation/>` |
| a DOCTYPE with an entity-expansion bomb | `<restricted-xml/>` |
| an entity reference without a DTD, a comment, a processing instruction | `<restricted-xml/>` |
| text between stanzas | `<bad-format/>` |
| a client-namespace (jabber:client) stream | `<invalid-namespace/>` |
| an unknown default namespace, or streams namespace | `<invalid-namespace/>` |
| stream version 2.0 | `<unsupported-version/>` |
| a stream to a domain we do not serve | `<host-unknown/>` |
| a stream from a domain that is no partner | `<not-authorized/>` |
| a stanza before authentication | `<not-authorized/>` |
| `<starttls/>` from a partner whose TLS is NotSupported | `<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`, then `</stream:stream>` (RFC 6120 5.4.2.2) |
| a third refused dialback key on one stream | stream error `not-authorized` |
| a forged dialback key | checked with fabrikam.test's authoritative server (Prosody): `<db:result type='invalid'/>`; the stream, never authenticated, ends at the deadline with `<connection-timeout/>` |
| `<db:verify/>` (the authoritative role) | `type='valid'` for our own key, `type='invalid'` for another; the stream ends at the deadline, as no failure |
| 50 connections that never send a header | each `<connection-timeout/>` and closed at the deadline; the edge serves on |
"""
import hashlib
import hmac
import socket
import time

import pytest

from edgepool import wait_for
from test_xmpp_negotiation import CONTOSO, FABRIKAM, XmppLab

SECRET = "the dialback secret of the bad input tests"
ERR_NS = "urn:ietf:params:xml:ns:xmpp-streams"


def header(frm=FABRIKAM, to=CONTOSO, ns="jabber:server",
           stream_ns="http://etherx.jabber.org/streams", version="1.0"):
    return (f"<?xml version='1.0'?><stream:stream xmlns='{ns}' xmlns:stream='{stream_ns}' "
            f"xmlns:db='jabber:server:dialback' from='{frm}' to='{to}' "
            f"version='{version}'>").encode()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, pki):
    partners = [{"domain": FABRIKAM, "partner_type": "Federated", "tls_negotiation": "Optional",
                 "sasl_negotiation": "Optional"},
                {"domain": "plain.test", "partner_type": "Federated",
                 "tls_negotiation": "NotSupported", "sasl_negotiation": "NotSupported"}]
    with XmppLab(tmp_path_factory.mktemp("xmpp-bad"), pki, partners=partners,
                 xmpp={"max_stanza_kb": 2, "dialback_secret": SECRET},
                 limits={"connect_timeout_ms": 500}) as lab:
        yield lab


@pytest.fixture(autouse=True)
def healthy(lab):
    """After every case the edge still runs and answers its status."""
    yield
    assert lab.edge.running(), lab.edge.log()[-3000:]
    assert "xmpp" in lab.edge.status()


class Raw:
    """A raw TCP connection to the edge's XMPP port."""

    def __init__(self, lab, timeout=5.0):
        self.sock = socket.create_connection(lab.xmpp, timeout=timeout)
        self.peer = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.data = b""
        self.closed = False

    def send(self, data):
        self.sock.sendall(data)

    def _recv(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
        self.data += chunk

    def read_until(self, text, timeout=5.0):
        """Reads until text (bytes) arrived; returns everything so far."""
        deadline = time.monotonic() + timeout
        while text not in self.data:
            assert not self.closed, f"closed before {text!r}: {self.data!r}"
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self._recv()
            except socket.timeout:
                raise AssertionError(f"no {text!r} within {timeout} s: {self.data!r}") from None
        return self.data

    def read_count(self, text, n, timeout=5.0):
        """Reads until text (bytes) arrived n times in all."""
        deadline = time.monotonic() + timeout
        while self.data.count(text) < n:
            assert not self.closed, f"closed before {n} x {text!r}: {self.data!r}"
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self._recv()
            except socket.timeout:
                raise AssertionError(f"not {n} x {text!r} within {timeout} s: {self.data!r}") from None
        return self.data

    def read_to_close(self, timeout=5.0):
        """Reads until the edge closes the connection; returns everything."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self._recv()
            except socket.timeout:
                raise AssertionError(f"not closed within {timeout} s: {self.data!r}") from None
        return self.data.decode(errors="replace")

    def close(self):
        self.sock.close()


def expect_stream_error(lab, raw, condition, why, timeout=5.0):
    """Our header, then exactly <stream:error><condition/></stream:error>
    </stream:stream>, then the close; the edge logs why with the peer."""
    text = raw.read_to_close(timeout)
    raw.close()
    assert text.startswith("<?xml version='1.0'?><stream:stream "), text
    assert text.endswith(f"<stream:error><{condition} xmlns='{ERR_NS}'/></stream:error>"
                         "</stream:stream>"), text
    assert text.count("<stream:error>") == 1, text
    lab.wait_log(f"({raw.peer}) failed: ", why)
    return text


BILLION_LAUGHS = (
    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    + "".join(f"<!ENTITY lol{i} '{('&lol%s;' % (i - 1 if i > 1 else '')) * 10}'>"
              for i in range(1, 10))
    + "]>").encode()

CASES = {
    # name: (bytes, condition, what the log says)
    "malformed": (header() + b"<message from='juliet@fabrikam.test' to='alice@contoso.test'>"
                  b"<body>x</bod></message>", "not-well-formed", "bad XML from the peer"),
    "tls-clienthello": (bytes.fromhex("160301020001000200fc0303") + bytes(range(0, 256, 7)),
                        "not-well-formed", "bad XML from the peer"),
    "http": (b"GET / HTTP/1.1\r\nHost: contoso.test\r\n\r\n", "not-well-formed",
             "bad XML from the peer"),
    "oversized-stanza": (header() + b"<message from='juliet@fabrikam.test' "
                         b"to='alice@contoso.test'><subject>" + b"s" * 1500 + b"</subject>"
                         b"<body>" + b"b" * 1500 + b"</body></message>", "policy-violation",
                         "a stanza of more than 2048 bytes"),
    "oversized-text": (header() + b"<message from='juliet@fabrikam.test' to='alice@contoso.test'>"
                       b"<body>" + b"x" * 4000 + b"</body></message>", "policy-violation",
                       "an element with more than 2048 bytes of text"),
    "entity-bomb": (BILLION_LAUGHS + header()[len("<?xml version='1.0'?>"):]
                    + b"<message><body>&lol9;</body></message>", "restricted-xml",
                    "a document type declaration"),
    "entity-reference": (header() + b"<message from='juliet@fabrikam.test' "
                         b"to='alice@contoso.test'><body>&lol9;</body></message>",
                         "restricted-xml", "bad XML from the peer"),
    "comment": (header() + b"<!-- hello -->", "restricted-xml", "an XML comment"),
    "processing-instruction": (header() + b"<?evil stuff?>", "restricted-xml",
                               "a processing instruction"),
    "text-between-stanzas": (header() + b"hello there", "bad-format", "text between stanzas"),
    "client-namespace": (header(ns="jabber:client"), "invalid-namespace",
                         "not a server-to-server stream"),
    "unknown-namespace": (header(ns="urn:example:unknown"), "invalid-namespace",
                          "default namespace"),
    "unknown-stream-namespace": (header(stream_ns="urn:example:streams"), "invalid-namespace",
                                 "not in the streams namespace"),
    "version-2": (header(version="2.0"), "unsupported-version", "stream version"),
    "host-unknown": (header(to="elsewhere.test"), "host-unknown",
                     "fabrikam.test -> elsewhere.test refused: not our domain"),
    "not-a-partner": (header(frm="stranger.test"), "not-authorized",
                      "stranger.test -> contoso.test refused: not an XMPP partner"),
    "stanza-before-auth": (header() + b"<message from='juliet@fabrikam.test' "
                           b"to='alice@contoso.test' type='chat'><body>hi</body></message>",
                           "not-authorized", "which this stream has not authenticated"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_stream_error(lab, case):
    data, condition, why = CASES[case]
    before = lab.xmpp_status()["stanzas_in"]
    raw = Raw(lab)
    raw.send(data)
    text = expect_stream_error(lab, raw, condition, why)
    assert lab.xmpp_status()["stanzas_in"] == before
    if case == "stanza-before-auth":
        # Our header and features came first: TLS offered (Optional), dialback.
        assert "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" in text, text
        assert "urn:xmpp:features:dialback" in text, text


def test_starttls_when_tls_not_supported(lab):
    raw = Raw(lab)
    raw.send(header(frm="plain.test"))
    features = raw.read_until(b"</stream:features>").decode()
    assert "starttls" not in features and "urn:xmpp:features:dialback" in features, features
    raw.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    text = raw.read_to_close()
    raw.close()
    assert text.endswith("</stream:features><failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
                         "</stream:stream>"), text
    lab.wait_log(f"({raw.peer}) failed: ", "STARTTLS is not allowed")


def our_key(receiving, originating, stream_id):
    """XEP-0185 under the configured secret, as edged derives it (SHA-256 of
    the configured text is the secret)."""
    secret = hashlib.sha256(SECRET.encode()).digest()
    hkey = hashlib.sha256(secret).hexdigest().encode()
    return hmac.new(hkey, f"{receiving} {originating} {stream_id}".encode(),
                    hashlib.sha256).hexdigest()


def test_authoritative_role(lab):
    """fabrikam.test asks whether keys are ours: ours valid, a wrong one invalid."""
    raw = Raw(lab)
    good = our_key(FABRIKAM, CONTOSO, "stream-17")
    raw.send(header() +
             f"<db:verify from='{FABRIKAM}' to='{CONTOSO}' id='stream-17'>{good}</db:verify>"
             f"<db:verify from='{FABRIKAM}' to='{CONTOSO}' id='stream-18'>{good}</db:verify>"
             .encode())
    raw.read_until(b"id='stream-18' type=")
    text = raw.read_to_close(timeout=5)
    raw.close()
    assert (f"<db:verify from='{CONTOSO}' to='{FABRIKAM}' id='stream-17' type='valid'/>"
            in text), text
    assert (f"<db:verify from='{CONTOSO}' to='{FABRIKAM}' id='stream-18' type='invalid'/>"
            in text), text
    # Only verifications: closed at the deadline without a stream error.
    assert "<stream:error>" not in text and text.endswith("</stream:stream>"), text
    lab.wait_log(f"({raw.peer}) closed: dialback verification stream done")


def test_forged_dialback_key(lab):
    """A key fabrikam.test's server never made: the edge asks it (Prosody, the
    authoritative server), which says invalid; so does the edge."""
    checks = lab.xmpp_status()["dialback_checks"]
    raw = Raw(lab)
    raw.send(header() + f"<db:result from='{FABRIKAM}' to='{CONTOSO}'>"
             f"{'0f' * 32}</db:result>".encode())
    raw.read_until(b"type='invalid'", timeout=10)
    assert lab.xmpp_status()["dialback_checks"] == checks + 1
    lab.wait_log("dialback key of fabrikam.test for contoso.test refused")
    lab.wait_prosody("Asked to verify a dialback key that was incorrect")
    text = raw.read_to_close(timeout=5)
    raw.close()
    assert f"<db:result from='{CONTOSO}' to='{FABRIKAM}' type='invalid'/>" in text, text
    assert text.endswith(f"<stream:error><connection-timeout xmlns='{ERR_NS}'/>"
                         "</stream:error></stream:stream>"), text
    lab.wait_log(f"({raw.peer}) failed: ", "not authenticated within")


def test_forged_keys_end_the_stream(lab):
    """Each key costs a connection to the sender's real server: the third
    refused key on one stream ends it with not-authorized."""
    checks = lab.xmpp_status()["dialback_checks"]
    raw = Raw(lab)
    raw.send(header())
    for i in range(3):
        raw.send(f"<db:result from='{FABRIKAM}' to='{CONTOSO}'>{('%02x' % i) * 32}"
                 "</db:result>".encode())
        if i < 2:
            raw.read_count(b"type='invalid'", i + 1, timeout=10)
    text = expect_stream_error(lab, raw, "not-authorized", "3 dialback keys refused on one stream")
    assert text.count("type='invalid'") == 3, text
    assert lab.xmpp_status()["dialback_checks"] == checks + 3


def test_flood_of_silent_connections(lab):
    """50 connections that never send a stream header: each is closed at the
    negotiation deadline (1 s) with connection-timeout; the edge serves on."""
    accepted = lab.xmpp_status()["streams_in"]
    raws = [Raw(lab, timeout=10) for _ in range(50)]
    try:
        wait_for(lambda: lab.xmpp_status()["streams_in"] >= accepted + 50, 5,
                 "the edge to accept them")
        started = time.monotonic()
        for raw in raws:
            text = raw.read_to_close(timeout=10)
            assert text.endswith(f"<stream:error><connection-timeout xmlns='{ERR_NS}'/>"
                                 "</stream:error></stream:stream>"), text
        assert time.monotonic() - started < 5
    finally:
        for raw in raws:
            raw.close()
    for raw in raws:
        lab.wait_log(f"({raw.peer}) failed: ", "not authenticated within 1 s")
    wait_for(lambda: not [s for s in lab.xmpp_status()["streams"] if s["direction"] == "in"
                          and not s["remote"]], 5, "the silent streams to be gone")


def test_real_messages_pass_afterwards(lab):
    """After all of the above, Prosody's streams negotiate and carry messages both ways."""
    with lab.juliet() as juliet:
        lab.xmpp_to_sip(juliet, "still there after the garbage?")
        lab.sip_to_juliet(juliet)
    out, inbound = lab.ready_stream("out"), lab.ready_stream("in")
    assert (out["tls"], out["auth"]) == (True, "SASL EXTERNAL"), out
    assert (inbound["tls"], inbound["auth"]) == (True, "SASL EXTERNAL"), inbound
