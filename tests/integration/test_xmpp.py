"""XMPP federation through the gateway: a real Prosody (fabrikam.test) and a
real XMPP client (slixmpp) on one side, edged (contoso.test) and sipp on the
other, with a real BIND answering _xmpp-server._tcp SRV for both domains.

contoso.test's edge listens for XMPP on 127.0.0.1; fabrikam.test's Prosody
on 127.0.0.2. The edge's XMPP certificate names contoso.test, Prosody's
fabrikam.test, both from the test CA, so by default both directions
authenticate with TLS + SASL EXTERNAL.
"""
import contextlib
import re

import pytest

from dnslab import Bind
from edgepool import Edge, Sipp, edge_config, free_port, run_uac, wait_for
from prosodylab import Prosody

CONTOSO, FABRIKAM = "contoso.test", "fabrikam.test"


class Lab:
    """One federation: BIND, Prosody for fabrikam.test, edged for contoso.test."""

    def __init__(self, tmp, pki, *, partner=None, prosody=None, xmpp=None, policies=None,
                 wrapper=()):
        self.tmp, self.pki = tmp, pki
        self.internal = ("127.0.0.1", free_port("127.0.0.1"))
        self.next_hop = ("127.0.0.1", free_port("127.0.0.1"))
        self.external = ("127.0.0.1", free_port("127.0.0.1"))
        self.xmpp = ("127.0.0.1", free_port("127.0.0.1"))
        self.status_port = free_port("127.0.0.1")
        self.prosody_port = free_port("127.0.0.2")
        self.partner = {"domain": FABRIKAM, "partner_type": "Federated", **(partner or {})}
        self.prosody_kw = prosody or {}
        self.xmpp_kw = xmpp or {}
        self.policies = policies
        self.wrapper = list(wrapper)   # e.g. valgrind: the edge runs slower, waits are longer
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
                                   pki=self.pki, dns=self.dns.address,
                                   users={"juliet": "pw-j", "romeo": "pw-r"}, **self.prosody_kw)
            self.stack.callback(self.prosody.stop)
            self.prosody.start()
            sip_cert, sip_key = self.pki.issue("sip.contoso.test")
            xmpp_cert, xmpp_key = self.pki.issue(CONTOSO)
            xmpp = {"listen": [{"address": self.xmpp[0], "port": self.xmpp[1]}],
                    "cert_file": str(xmpp_cert), "key_file": str(xmpp_key), **self.xmpp_kw}
            policies = self.policies or [{"identity": "global", "enable_federation_access": True,
                                          "enable_xmpp_access": True}]
            text = edge_config(pool_fqdn="sip.contoso.test", domains=[CONTOSO], ca=self.pki.ca_file,
                               cert=sip_cert, key=sip_key, internal=self.internal,
                               next_hop=self.next_hop, external=self.external,
                               status_port=self.status_port, dns=self.dns.address,
                               policies=policies,
                               sections={"xmpp": xmpp, "xmpp_partners": [self.partner]})
            self.edge = Edge(self.tmp, "contoso", text, [self.internal, self.external, self.xmpp],
                             wrapper=self.wrapper)
            self.stack.callback(self._stop_edge)
            self.edge.start(timeout=60 if self.wrapper else 30)
        except BaseException:
            self.stack.close()
            raise
        return self

    def _stop_edge(self):
        code = self.edge.stop(timeout=60)
        assert code == 0, f"edged did not exit cleanly ({code}):\n{self.edge.log()[-4000:]}"

    def __exit__(self, *exc):
        self.stack.close()

    def xmpp_status(self):
        return self.edge.status()["xmpp"]

    def streams(self, direction):
        return [s for s in self.xmpp_status()["streams"] if s["direction"] == direction]

    def sip_to_xmpp(self, user="alice", to="juliet", expect_ok=True):
        """sipp sends one MESSAGE from user@contoso.test to to@fabrikam.test."""
        code, ok, failed = run_uac(self.tmp, "uac_message.xml",
                                   local=("127.0.0.1", free_port("127.0.0.1")),
                                   remote=self.internal,
                                   extra=["-key", "from_user", user, "-key", "from_domain", CONTOSO,
                                          "-key", "to_user", to, "-key", "to_domain", FABRIKAM])
        return code, ok, failed

    def uas(self):
        """A sipp UAS on the edge's next hop that answers one MESSAGE 200 and logs it."""
        return Sipp(self.tmp, "uas_message.xml", local=self.next_hop, calls=1,
                    extra=["-trace_msg", "-message_file", str(self.tmp / "uas-messages.log")])


@pytest.fixture(scope="module")
def lab(tmp_path_factory, pki):
    with Lab(tmp_path_factory.mktemp("xmpp"), pki) as lab:
        yield lab


def test_sip_message_reaches_prosody_user(lab):
    with lab.prosody.client("juliet") as juliet:
        code, ok, failed = lab.sip_to_xmpp("alice", "juliet")
        assert (code, ok, failed) == (0, 1, 0), lab.edge.log()[-3000:]
        m = juliet.wait_message("alice@contoso.test", timeout=15)
        assert m.body == "hello across the federation\n"  # the scenario's body, exactly
        assert m.type == "chat"
        assert m.from_.startswith("alice@contoso.test")
    out = lab.streams("out")
    assert out and out[0]["ready"] and out[0]["tls"] and out[0]["auth"] == "SASL EXTERNAL", out
    assert lab.xmpp_status()["messages_out"] >= 1


def test_xmpp_message_reaches_sip_user(lab):
    uas = lab.uas().start()
    try:
        with lab.prosody.client("juliet") as juliet:
            juliet.send_message("alice@contoso.test", "O happy dagger")
            code, ok, failed = uas.wait(30)
        assert (code, ok, failed) == (0, 1, 0), lab.edge.log()[-3000:]
    finally:
        uas.stop()
    log = (lab.tmp / "uas-messages.log").read_text(errors="replace")
    assert re.search(r"MESSAGE sip:alice@contoso\.test SIP/2\.0", log), log
    assert "O happy dagger" in log
    assert re.search(r"From: <sip:juliet@fabrikam\.test>", log), log
    assert "ms-source-network=xmpp" in log and "ms-remote-fqdn=fabrikam.test" in log
    inbound = lab.streams("in")
    assert inbound and inbound[0]["tls"] and inbound[0]["auth"] == "SASL EXTERNAL", inbound
    wait_for(lambda: lab.xmpp_status()["messages_in"] >= 1, 10, "the SIP answer")


def test_sip_user_watches_xmpp_contact(lab):
    """RFC 8048 SIP -> XMPP: alice's SUBSCRIBE becomes a subscription request
    to juliet; once juliet approves, her presence (away, a status) reaches
    alice as PIDF in NOTIFYs; alice's Expires: 0 unsubscribes."""
    trace = lab.tmp / "watch-messages.log"
    with lab.prosody.client("juliet") as juliet:
        juliet.send_presence(show="away", status="At the balcony")
        uac = Sipp(lab.tmp, "uac_xmpp_watch.xml", local=lab.next_hop, remote=lab.internal,
                   extra=["-key", "from_user", "alice", "-key", "from_domain", CONTOSO,
                          "-key", "to_user", "juliet", "-key", "to_domain", FABRIKAM,
                          "-trace_msg", "-message_file", str(trace)]).start()
        try:
            juliet.wait_presence("alice@contoso.test", "subscribe", timeout=15)
            juliet.approve("alice@contoso.test")
            code, ok, failed = uac.wait(40)
            assert (code, ok, failed) == (0, 1, 0), f"{uac.output()[-2000:]}\n{lab.edge.log()[-3000:]}"
            juliet.wait_presence("alice@contoso.test", "unsubscribe", timeout=15)
        finally:
            uac.stop()
    log = trace.read_text(errors="replace")
    assert "Subscription-State: pending" in log
    assert re.search(r"Subscription-State: active;expires=\d+", log)
    assert "<basic>open</basic>" in log and "At the balcony" in log
    assert re.search(r"<rpid:away\s*/>", log), log[-3000:]
    assert re.search(r"Subscription-State: terminated", log)
    st = lab.xmpp_status()
    assert st["notifies_out"] >= 3 and st["presence_out"] >= 2


def test_xmpp_user_watches_sip_user(lab):
    """RFC 8048 XMPP -> SIP: juliet's subscription request becomes a SIP
    SUBSCRIBE to alice; its 200 is juliet's 'subscribed', and alice's PIDF
    (open, busy, a note) reaches juliet as dnd with a status."""
    uas = Sipp(lab.tmp, "uas_xmpp_watched.xml", local=lab.next_hop,
               extra=["-s", "alice"]).start()
    try:
        with lab.prosody.client("juliet") as juliet:
            juliet.subscribe("alice@contoso.test")
            juliet.wait_presence("alice@contoso.test", "subscribed", timeout=15)
            ptype, show, status = juliet.wait_presence("alice@contoso.test", None, timeout=15,
                                                       show="dnd")
            assert status == "In a meeting"
            code, ok, failed = uas.wait(30)
        assert (code, ok, failed) == (0, 1, 0), f"{uas.output()[-2000:]}\n{lab.edge.log()[-3000:]}"
    finally:
        uas.stop()
    st = lab.xmpp_status()
    assert st["subscribes_out"] >= 1 and st["notifies_in"] >= 1


@pytest.fixture(scope="module")
def strict_lab(tmp_path_factory, pki):
    """fabrikam.test as a PublicUnverified partner; bob's policy denies XMPP."""
    policies = [{"identity": "global", "enable_federation_access": True,
                 "enable_xmpp_access": True},
                {"identity": "no-xmpp", "users": ["bob@contoso.test"],
                 "enable_federation_access": True, "enable_xmpp_access": False}]
    with Lab(tmp_path_factory.mktemp("xmpp-strict"), pki,
             partner={"partner_type": "PublicUnverified"}, policies=policies) as lab:
        yield lab


def test_policy_denies_xmpp_access(strict_lab):
    """EnableXmppAccess false: bob's MESSAGE gets 403, and a message to bob an
    XMPP error; both logged with the policy's reason."""
    lab = strict_lab
    code, ok, failed = lab.sip_to_xmpp("bob", "juliet")
    assert (ok, failed) == (0, 1)
    assert re.search(r"rejected MESSAGE .* 403 external access policy 'no-xmpp' of "
                     r"bob@contoso\.test does not permit XMPP", lab.edge.log())
    with lab.prosody.client("juliet") as juliet:
        juliet.send_message("bob@contoso.test", "are you there?")
        m = juliet.wait_message(lambda m: m.type == "error", timeout=15)
        assert m.from_bare == "bob@contoso.test" and m.error == "service-unavailable", m
    assert "does not permit XMPP" in lab.edge.log()


def test_public_unverified_needs_our_user_first(strict_lab):
    """PublicUnverified: juliet may write to alice only once alice subscribed to
    juliet (Lync's rule); before, juliet gets service-unavailable."""
    lab = strict_lab
    with lab.prosody.client("juliet") as juliet:
        juliet.send_message("alice@contoso.test", "first contact")
        m = juliet.wait_message(lambda m: m.type == "error", timeout=15)
        assert m.from_bare == "alice@contoso.test" and m.error == "service-unavailable", m
        assert "has not subscribed to the sender" in lab.edge.log()

        code, ok, failed = run_uac(lab.tmp, "uac_xmpp_subscribe_once.xml",
                                   local=("127.0.0.1", free_port("127.0.0.1")),
                                   remote=lab.internal,
                                   extra=["-key", "from_user", "alice", "-key", "from_domain",
                                          CONTOSO, "-key", "to_user", "juliet", "-key",
                                          "to_domain", FABRIKAM])
        assert (code, ok, failed) == (0, 1, 0), lab.edge.log()[-3000:]
        juliet.wait_presence("alice@contoso.test", "subscribe", timeout=15)

        uas = lab.uas().start()
        try:
            juliet.send_message("alice@contoso.test", "now we know each other")
            code, ok, failed = uas.wait(30)
            assert (code, ok, failed) == (0, 1, 0), lab.edge.log()[-3000:]
        finally:
            uas.stop()
    assert "now we know each other" in (lab.tmp / "uas-messages.log").read_text(errors="replace")


def test_iq_is_answered(lab):
    """The gateway carries no iq, but answers every get: a ping of our domain
    (XEP-0199) with a result, anything else with service-unavailable."""
    with lab.prosody.client("juliet") as juliet:
        assert juliet.iq_get(CONTOSO, "<ping xmlns='urn:xmpp:ping'/>") == \
            {"type": "result", "condition": None}
        assert juliet.iq_get("alice@contoso.test", "<query xmlns='jabber:iq:version'/>") == \
            {"type": "error", "condition": "service-unavailable"}
