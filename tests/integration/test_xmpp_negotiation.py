"""The XMPP negotiation matrix against a real Prosody (fabrikam.test, 127.0.0.2)
and edged (contoso.test, 127.0.0.1), with BIND answering _xmpp-server._tcp for
both. TLS + SASL EXTERNAL both ways is test_xmpp.py's default case; here the
partner settings and Prosody's set-up vary:

| case | edge's partner entry | Prosody | edge -> Prosody | Prosody -> edge |
|---|---|---|---|---|
| dialback over TLS, certificate vouches | sasl NotSupported | TLS, test CA | TLS, dialback (Prosody asks our authoritative role) | TLS, "dialback (certificate)" (XEP-0344, no check) |
| dialback over TLS, certificate cannot vouch | sasl Optional | TLS, certificate from a CA the edge does not trust | TLS, dialback | TLS, dialback checked with Prosody's authoritative role (dialback_checks) |
| dialback over plain TCP | tls NotSupported, sasl NotSupported | no TLS | TCP, dialback | TCP, dialback checked with Prosody |
| TLS required, Prosody has none | tls Required | no TLS | refused: SIP 504, logged | refused (policy-violation): Prosody's user gets an error |
| SASL required, certificate untrusted | sasl Required | certificate from another CA | refused: SIP 504, logged | refused (not-authorized): Prosody's user gets an error |
| not a partner | only northwind.test | fabrikam.test | - | refused (not-authorized): Prosody's user gets an error |

Each case sends real messages: sipp as the internal user (a UAC to the edge, a
UAS as its next hop), a slixmpp client as Prosody's user; the edge's JSON
status gives each stream's direction, tls and auth; Prosody's debug log
(Prosody.s2s_sessions()) gives its own view.
"""
import contextlib
import re
import uuid

import pytest

from dnslab import Bind
from edgepool import (Edge, SipClient, Sipp, edge_config, free_port, run_uac, sip_request,
                      wait_for)
from prosodylab import Prosody, XmppClient

CONTOSO, FABRIKAM = "contoso.test", "fabrikam.test"


class ProsodyPKI:
    """What Prosody is given as its PKI: its certificate from `issuer`, while it
    trusts `trusted`'s CA (the edge's), so Prosody can verify the edge but the
    edge cannot verify Prosody."""

    def __init__(self, issuer, trusted):
        self.issuer, self.ca_file = issuer, trusted.ca_file

    def issue(self, name, **kw):
        return self.issuer.issue(name, **kw)


class XmppLab:
    """BIND, Prosody for fabrikam.test, edged for contoso.test (as test_xmpp.Lab),
    with Prosody's PKI, the edge's limits and more partners as a test needs."""

    def __init__(self, tmp, pki, *, partner=None, partners=None, prosody=None,
                 prosody_pki=None, xmpp=None, limits=None):
        self.tmp, self.pki = tmp, pki
        self.internal = ("127.0.0.1", free_port("127.0.0.1"))
        self.next_hop = ("127.0.0.1", free_port("127.0.0.1"))
        self.external = ("127.0.0.1", free_port("127.0.0.1"))
        self.xmpp = ("127.0.0.1", free_port("127.0.0.1"))
        self.status_port = free_port("127.0.0.1")
        self.prosody_port = free_port("127.0.0.2")
        self.partners = partners or [{"domain": FABRIKAM, "partner_type": "Federated",
                                      **(partner or {})}]
        self.prosody_kw = prosody or {}
        self.prosody_pki = prosody_pki or pki
        self.xmpp_kw = xmpp or {}
        self.limits = limits
        self.stack = contextlib.ExitStack()

    def __enter__(self):
        zones = {
            FABRIKAM: [f"_xmpp-server._tcp 1 IN SRV 0 0 {self.prosody_port} xmpp.{FABRIKAM}.",
                       "xmpp 1 IN A 127.0.0.2"],
            CONTOSO: [f"_xmpp-server._tcp 1 IN SRV 0 0 {self.xmpp[1]} edge.{CONTOSO}.",
                      "edge 1 IN A 127.0.0.1"],
        }
        try:
            self.dns = self.stack.enter_context(Bind(self.tmp / "dns", zones))
            self.prosody = Prosody(self.tmp / "prosody", FABRIKAM, "127.0.0.2", self.prosody_port,
                                   pki=self.prosody_pki, dns=self.dns.address,
                                   users={"juliet": "pw-j"}, **self.prosody_kw)
            self.stack.callback(self.prosody.stop)
            self.prosody.start()
            sip_cert, sip_key = self.pki.issue("sip.contoso.test")
            xmpp_cert, xmpp_key = self.pki.issue(CONTOSO)
            xmpp = {"listen": [{"address": self.xmpp[0], "port": self.xmpp[1]}],
                    "cert_file": str(xmpp_cert), "key_file": str(xmpp_key), **self.xmpp_kw}
            text = edge_config(pool_fqdn="sip.contoso.test", domains=[CONTOSO],
                               ca=self.pki.ca_file, cert=sip_cert, key=sip_key,
                               internal=self.internal, next_hop=self.next_hop,
                               external=self.external, status_port=self.status_port,
                               dns=self.dns.address, limits=self.limits,
                               policies=[{"identity": "global", "enable_federation_access": True,
                                          "enable_xmpp_access": True}],
                               sections={"xmpp": xmpp, "xmpp_partners": self.partners})
            self.edge = Edge(self.tmp, "contoso", text, [self.internal, self.external, self.xmpp])
            self.stack.callback(self._stop_edge)
            self.edge.start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def _stop_edge(self):
        code = self.edge.stop()
        assert code == 0, f"edged did not exit cleanly ({code}):\n{self.edge.log()[-4000:]}"

    def __exit__(self, *exc):
        self.stack.close()

    # ---- the edge's view ----

    def xmpp_status(self):
        return self.edge.status()["xmpp"]

    def streams(self, direction, mode="stanzas"):
        return [s for s in self.xmpp_status()["streams"]
                if s["direction"] == direction and s.get("mode", "stanzas") == mode]

    def ready_stream(self, direction, timeout=10):
        """The first ready stanza stream of that direction, waited for."""
        return wait_for(lambda: next((s for s in self.streams(direction) if s["ready"]), None),
                        timeout, f"a ready {direction}bound XMPP stream")

    def log_has(self, *parts):
        """Whether one line of the edge's log holds every part."""
        return any(all(p in line for p in parts) for line in self.edge.log().splitlines())

    def wait_log(self, *parts, timeout=10):
        """Waits for a line of the edge's log that holds every part."""
        wait_for(lambda: self.log_has(*parts), timeout, f"the edge to log {parts}")

    # ---- messages ----

    def sip_to_xmpp(self, user="alice", to="juliet"):
        """sipp sends one MESSAGE user@contoso.test -> to@fabrikam.test: (code, ok, failed)."""
        return run_uac(self.tmp, "uac_message.xml", local=("127.0.0.1", free_port("127.0.0.1")),
                       remote=self.internal,
                       extra=["-key", "from_user", user, "-key", "from_domain", CONTOSO,
                              "-key", "to_user", to, "-key", "to_domain", FABRIKAM])

    def sip_message(self, to=f"juliet@{FABRIKAM}", body="are you there?"):
        """One MESSAGE from alice@contoso.test over raw SIP/TCP: the final response."""
        call_id = uuid.uuid4().hex
        c = SipClient(*self.internal, timeout=30)
        try:
            c.send(sip_request("MESSAGE", f"sip:{to}", from_uri=f"sip:alice@{CONTOSO}",
                               to_uri=f"sip:{to}", call_id=call_id,
                               headers=["Content-Type: text/plain"], body=body))
            return c.recv_final()
        finally:
            c.close()

    def uas(self):
        """A sipp UAS on the edge's next hop that answers one MESSAGE 200 and logs it."""
        self.uas_log = self.tmp / f"uas-{free_port()}.log"
        return Sipp(self.tmp, "uas_message.xml", local=self.next_hop, calls=1,
                    extra=["-trace_msg", "-message_file", str(self.uas_log)])

    def xmpp_to_sip(self, juliet, text):
        """juliet writes to alice@contoso.test; sipp, the next hop, must get it."""
        uas = self.uas().start()
        try:
            juliet.send_message(f"alice@{CONTOSO}", text)
            code, ok, failed = uas.wait(30)
        finally:
            uas.stop()
        assert (code, ok, failed) == (0, 1, 0), self.edge.log()[-3000:]
        log = self.uas_log.read_text(errors="replace")
        assert text in log and re.search(r"From: <sip:juliet@fabrikam\.test>", log), log

    def sip_to_juliet(self, juliet):
        code, ok, failed = self.sip_to_xmpp("alice", "juliet")
        assert (code, ok, failed) == (0, 1, 0), self.edge.log()[-3000:]
        m = juliet.wait_message(f"alice@{CONTOSO}", timeout=15)
        assert m.body == "hello across the federation\n" and m.type == "chat", m

    def wait_prosody(self, text, timeout=10):
        wait_for(lambda: text in self.prosody.log(), timeout, f"Prosody to log {text!r}")

    def juliet(self):
        """juliet@fabrikam.test logged in to Prosody, whose c2s certificate is
        checked against the CA that issued it."""
        ca = getattr(self.prosody_pki, "issuer", self.pki).ca_file
        return XmppClient(f"juliet@{FABRIKAM}", self.prosody.users["juliet"],
                          (self.prosody.host, self.prosody.c2s_port), ca_file=ca,
                          workdir=self.prosody.dir).start()

    def prosody_session(self, direction):
        """Prosody's own view of its authenticated session with contoso.test."""
        return wait_for(lambda: next((s for s in self.prosody.s2s_sessions(CONTOSO)
                                      if s["direction"] == direction), None), 10,
                        f"Prosody's {direction} session with contoso.test")


@contextlib.contextmanager
def lab_for(tmp_path_factory, pki, name, **kw):
    with XmppLab(tmp_path_factory.mktemp(name), pki, **kw) as lab:
        yield lab


# ---- dialback over TLS ----

def test_dialback_over_tls_certificate_vouches(tmp_path_factory, pki):
    """sasl NotSupported: no EXTERNAL offered or used. Prosody's certificate
    verifies and names fabrikam.test, so its key is taken without a check
    (XEP-0344); ours is checked by Prosody with our authoritative role."""
    with lab_for(tmp_path_factory, pki, "db-tls",
                 partner={"sasl_negotiation": "NotSupported"}) as lab, \
            lab.juliet() as juliet:
        lab.sip_to_juliet(juliet)
        lab.xmpp_to_sip(juliet, "dialback with a certificate")
        out, inbound = lab.ready_stream("out"), lab.ready_stream("in")
        assert (out["tls"], out["auth"]) == (True, "dialback"), out
        assert (inbound["tls"], inbound["auth"]) == (True, "dialback (certificate)"), inbound
        assert (out["remote"], inbound["remote"]) == (FABRIKAM, FABRIKAM)
        st = lab.xmpp_status()
        assert st["dialback_checks"] == 0, st
        # Prosody: it sent a key and asked us about ours, and we said valid.
        p_out, p_in = lab.prosody_session("out"), lab.prosody_session("in")
        assert (p_out["auth"], p_out["tls"]) == ("dialback", True), p_out
        assert (p_in["auth"], p_in["tls"]) == ("dialback", True), p_in
        assert "asking contoso.test if key" in lab.prosody.log()
        assert "denied the key" not in lab.prosody.log()
        lab.wait_log("outbound stream contoso.test -> fabrikam.test authenticated",
                           "TLS", "dialback")
        lab.wait_log("inbound stream fabrikam.test -> contoso.test authenticated",
                           "dialback (certificate)")


def test_dialback_over_tls_untrusted_certificate(tmp_path_factory, pki, other_pki):
    """Prosody's certificate comes from a CA the edge does not trust: TLS still,
    but its dialback key must be checked with Prosody as the authoritative
    server (a verify stream), and ours is checked by Prosody with us. EXTERNAL
    is not used either way (we cannot verify Prosody; it offers EXTERNAL for
    our good certificate, which we pass over for a peer we cannot verify)."""
    with lab_for(tmp_path_factory, pki, "db-untrusted",
                 prosody_pki=ProsodyPKI(other_pki, pki),
                 partner={"sasl_negotiation": "Optional"}) as lab, \
            lab.juliet() as juliet:
        lab.xmpp_to_sip(juliet, "dialback checked with the authoritative server")
        inbound = lab.ready_stream("in")
        assert (inbound["tls"], inbound["auth"]) == (True, "dialback"), inbound
        st = lab.xmpp_status()
        assert st["dialback_checks"] >= 1, st
        # The receiving role asked, Prosody's authoritative role answered valid.
        lab.wait_log("dialback key of fabrikam.test for contoso.test confirmed")
        assert "verified dialback key... it is valid" in lab.prosody.log()
        lab.sip_to_juliet(juliet)
        out = lab.ready_stream("out")
        assert (out["tls"], out["auth"]) == (True, "dialback"), out
        # Our authoritative role answered Prosody's check of our key: valid.
        p_in = lab.prosody_session("in")
        assert (p_in["auth"], p_in["tls"]) == ("dialback", True), p_in
        assert "denied the key" not in lab.prosody.log()
        # The verify streams were closed once answered.
        wait_for(lambda: not lab.streams("out", mode="verify"), 10, "the verify stream to close")


# ---- dialback over plain TCP ----

@pytest.mark.parametrize("tls", ["NotSupported", "Optional"])
def test_dialback_over_plain_tcp(tmp_path_factory, pki, tls):
    """Prosody without TLS; our partner entry allows TCP (NotSupported or Optional)
    and no SASL: dialback both ways, each key checked with its authoritative server."""
    with lab_for(tmp_path_factory, pki, f"db-tcp-{tls}",
                 prosody={"s2s_tls": False, "s2s_require_encryption": False},
                 partner={"tls_negotiation": tls, "sasl_negotiation": "NotSupported"}) as lab, \
            lab.juliet() as juliet:
        lab.sip_to_juliet(juliet)
        lab.xmpp_to_sip(juliet, "dialback over plain TCP")
        out, inbound = lab.ready_stream("out"), lab.ready_stream("in")
        assert (out["tls"], out["auth"]) == (False, "dialback"), out
        assert (inbound["tls"], inbound["auth"]) == (False, "dialback"), inbound
        assert lab.xmpp_status()["dialback_checks"] >= 1
        lab.wait_log("dialback key of fabrikam.test for contoso.test confirmed")
        p_out, p_in = lab.prosody_session("out"), lab.prosody_session("in")
        assert (p_out["auth"], p_out["tls"]) == ("dialback", False), p_out
        assert (p_in["auth"], p_in["tls"]) == ("dialback", False), p_in


# ---- refusals ----

def assert_juliet_refused(lab, juliet, text):
    """juliet writes to alice@contoso.test and gets an error message back; nothing
    reaches SIP."""
    juliet.send_message(f"alice@{CONTOSO}", text)
    m = juliet.wait_message(lambda m: m.type == "error", timeout=30)
    assert m.from_.lower().startswith(f"alice@{CONTOSO}"), m
    assert m.error, m
    assert lab.xmpp_status()["stanzas_in"] == 0
    return m


def test_refused_tls_required_without_tls(tmp_path_factory, pki):
    """tls Required, Prosody without TLS: no stream either way."""
    with lab_for(tmp_path_factory, pki, "no-tls",
                 prosody={"s2s_tls": False, "s2s_require_encryption": False},
                 partner={"tls_negotiation": "Required",
                          "sasl_negotiation": "Optional"}) as lab, \
            lab.juliet() as juliet:
        r = lab.sip_message()
        assert r.status == 504, r
        assert "does not offer TLS, which its policy requires" in (r.header("warning") or ""), r
        lab.wait_log("fabrikam.test does not offer TLS, which its policy requires")
        assert_juliet_refused(lab, juliet, "can you hear me without TLS?")
        lab.wait_log("inbound stream fabrikam.test to contoso.test", "failed",
                           "before STARTTLS, which is required")
        assert not any(s["ready"] for s in lab.xmpp_status()["streams"]), lab.xmpp_status()
        # Prosody's view: our stream error ended both its streams with us.
        lab.wait_prosody("Outgoing s2s stream fabrikam.test->contoso.test closed: "
                         "policy-violation")
        lab.wait_prosody("Incoming s2s stream contoso.test->fabrikam.test closed: "
                         "policy-violation")


def test_refused_sasl_required_untrusted_certificate(tmp_path_factory, pki, other_pki):
    """sasl Required, Prosody's certificate from a CA the edge does not trust:
    no EXTERNAL is possible, and dialback is not allowed instead."""
    with lab_for(tmp_path_factory, pki, "no-sasl", prosody_pki=ProsodyPKI(other_pki, pki),
                 partner={"sasl_negotiation": "Required"}) as lab, \
            lab.juliet() as juliet:
        r = lab.sip_message()
        assert r.status == 504, r
        assert "SASL EXTERNAL is required" in (r.header("warning") or ""), r
        lab.wait_log("SASL EXTERNAL is required for fabrikam.test, but its certificate "
                           "did not verify")
        assert_juliet_refused(lab, juliet, "can you hear me without a good certificate?")
        lab.wait_log("inbound stream fabrikam.test to contoso.test", "failed",
                           "fabrikam.test cannot authenticate: its certificate did not verify "
                           "and dialback is not allowed")
        assert not any(s["ready"] for s in lab.xmpp_status()["streams"]), lab.xmpp_status()
        assert lab.xmpp_status()["dialback_checks"] == 0
        lab.wait_prosody("Outgoing s2s stream fabrikam.test->contoso.test closed: "
                         "not-authorized")
        lab.wait_prosody("Incoming s2s stream contoso.test->fabrikam.test closed: "
                         "policy-violation")


def test_refused_not_a_partner(tmp_path_factory, pki):
    """fabrikam.test is no XMPP partner of ours (only northwind.test is)."""
    with lab_for(tmp_path_factory, pki, "stranger",
                 partners=[{"domain": "northwind.test", "partner_type": "Federated"}]) as lab, \
            lab.juliet() as juliet:
        assert_juliet_refused(lab, juliet, "may I?")
        lab.wait_log("fabrikam.test -> contoso.test refused: not an XMPP partner")
        lab.wait_prosody("Outgoing s2s stream fabrikam.test->contoso.test closed: "
                         "not-authorized")
        assert lab.xmpp_status()["streams_failed"] >= 1
