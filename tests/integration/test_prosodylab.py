"""Self-test of prosodylab: two real Prosody servers federated over s2s, with
their SRV records served by a real BIND, and a real XMPP client on each. No
EdgePool code runs here (conftest only wants EDGED to be an executable).

fabrikam.test's Prosody listens on 127.0.0.1 and northwind.test's on
127.0.0.2 (Prosody binds any 127.0.0.0/8 address; named only 127.0.0.1).
"""
import contextlib

import pytest

from dnslab import Bind
from edgepool import free_port
from prosodylab import Prosody, XmppClient, XmppLoginError


def srv_zones(*servers):
    """Zones with _xmpp-server._tcp SRV and the target's A record for each
    (domain, host, port)."""
    return {domain: [f"_xmpp-server._tcp 1 IN SRV 0 0 {port} xmpp.{domain}.",
                     f"xmpp 1 IN A {host}"]
            for domain, host, port in servers}


@contextlib.contextmanager
def federation(tmp, pki, a, b, **settings):
    """BIND serving SRV for both, and a Prosody for each of a and b:
    (domain, host, users). Yields (prosody_a, prosody_b); both must stop cleanly."""
    ports = [free_port(a[1]), free_port(b[1])]
    zones = srv_zones((a[0], a[1], ports[0]), (b[0], b[1], ports[1]))
    codes = {}
    with contextlib.ExitStack() as stack:
        dns = stack.enter_context(Bind(tmp / "dns", zones))
        servers = []
        for (domain, host, users), port in zip((a, b), ports):
            p = Prosody(tmp / domain, domain, host, port, pki=pki, dns=dns.address,
                        users=users, **settings)
            stack.callback(lambda p=p: codes.setdefault(p.domain, p.stop()))
            servers.append(p.start())
        yield tuple(servers)
    assert set(codes.values()) == {0}, f"prosody did not exit cleanly: {codes}"


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory, pki):
    """fabrikam.test and northwind.test, s2s with TLS + SASL EXTERNAL (Prosody's default)."""
    with federation(tmp_path_factory.mktemp("prosody-tls"), pki,
                    ("fabrikam.test", "127.0.0.1", {"juliet": "pw-j", "alice": "pw-a"}),
                    ("northwind.test", "127.0.0.2", {"romeo": "pw-r", "bob": "pw-b"}),
                    s2s_require_encryption=True) as pair:
        yield pair


def test_srv_and_listeners(tls_pair):
    fab, nw = tls_pair
    assert (fab.host, nw.host) == ("127.0.0.1", "127.0.0.2")
    assert fab.running() and nw.running() and fab.pid != nw.pid
    assert fab.s2s_port != fab.c2s_port


def test_chat_both_ways(tls_pair):
    fab, nw = tls_pair
    with fab.client("juliet") as juliet, nw.client("romeo") as romeo:
        assert juliet.full_jid == "juliet@fabrikam.test/lab"
        juliet.send_message("romeo@northwind.test", "Wherefore art thou?")
        m = romeo.wait_message("juliet@fabrikam.test", timeout=15)
        assert (m.body, m.from_, m.type) == ("Wherefore art thou?", "juliet@fabrikam.test/lab",
                                             "chat")
        assert m.to.startswith("romeo@northwind.test")
        assert "<body>Wherefore art thou?</body>" in m.xml

        romeo.send_message("juliet@fabrikam.test/lab", "By a name I know not", mtype="normal")
        m = juliet.wait_message(lambda m: m.from_bare == "romeo@northwind.test", timeout=15)
        assert (m.body, m.from_, m.type) == ("By a name I know not", "romeo@northwind.test/lab",
                                             "normal")

    # Both directions ran over TLS with SASL EXTERNAL (certificates of the test CA).
    for server, remote in ((fab, "northwind.test"), (nw, "fabrikam.test")):
        sessions = server.s2s_sessions(remote)
        assert {s["direction"] for s in sessions} == {"in", "out"}, sessions
        assert all(s["tls"] and s["auth"] == "EXTERNAL" for s in sessions), sessions
    assert "SASL EXTERNAL with northwind.test succeeded" in fab.log()
    assert "Accepting SASL EXTERNAL identity from fabrikam.test" in nw.log()
    # The SRV record came from BIND through libunbound's forwarder.
    assert "Results for _xmpp-server._tcp.northwind.test IN SRV: 1 items" in fab.log()


def test_presence_subscription(tls_pair):
    fab, nw = tls_pair
    with fab.client("alice") as alice, nw.client("bob") as bob:
        bob.roster_add("alice@fabrikam.test", name="Alice")
        bob.subscribe("alice@fabrikam.test")
        ask = alice.wait_presence("bob@northwind.test", "subscribe", timeout=15)
        assert ask.type == "subscribe" and ask.from_ == "bob@northwind.test"
        alice.approve("bob@northwind.test")
        assert bob.wait_presence("alice@fabrikam.test", "subscribed", timeout=15)[0] == \
            "subscribed"
        assert bob.wait_roster("alice@fabrikam.test", "to")["name"] == "Alice"
        assert alice.wait_roster("bob@northwind.test", "from")

        alice.send_presence(show="away", status="In the garden")
        ptype, show, status = bob.wait_presence("alice@fabrikam.test", "available",
                                                show="away", timeout=15)
        assert (ptype, show, status) == ("available", "away", "In the garden")

        alice.send_presence(ptype="unavailable", status="gone")
        assert bob.wait_presence("alice@fabrikam.test/lab", "unavailable", timeout=15).status \
            == "gone"


def test_logins(tls_pair, other_pki, tmp_path):
    fab, _ = tls_pair
    with pytest.raises(XmppLoginError, match="authentication failed.*not-authorized"):
        fab.client("juliet", "wrong password", login_timeout=10)
    # prosodyctl registers users while Prosody runs, too.
    fab.register("carol", "pw-c")
    with fab.client("carol") as carol:
        assert carol.full_jid == "carol@fabrikam.test/lab"
    # The client checks the server's certificate: a CA that did not issue it fails.
    with pytest.raises(XmppLoginError, match="certificate|disconnected"):
        XmppClient("juliet@fabrikam.test", "pw-j", (fab.host, fab.c2s_port),
                   ca_file=other_pki.ca_file, workdir=tmp_path, login_timeout=10).start()


def test_dialback_over_tcp(tmp_path, pki):
    """s2s without TLS: plain TCP and dialback both ways, verified through BIND's SRV."""
    with federation(tmp_path, pki, ("litware.test", "127.0.0.1", {"ann": "pw"}),
                    ("adatum.test", "127.0.0.3", {"ben": "pw"}),
                    s2s_require_encryption=False, s2s_tls=False) as (lit, ada), \
            lit.client("ann") as ann, ada.client("ben") as ben:
        ann.send_message("ben@adatum.test", "over plain TCP")
        assert ben.wait_message("ann@litware.test", timeout=15).body == "over plain TCP"
        ben.send_message("ann@litware.test", "and back")
        assert ann.wait_message("ben@adatum.test", timeout=15).body == "and back"

        for server, remote in ((lit, "adatum.test"), (ada, "litware.test")):
            sessions = server.s2s_sessions(remote)
            assert {s["direction"] for s in sessions} == {"in", "out"}, sessions
            assert all(s["auth"] == "dialback" and not s["tls"] for s in sessions), sessions
            log = server.log()
            assert "Initiating dialback" in log and "verified dialback key... it is valid" in log
            assert "<starttls" not in log.split("Incoming s2s connection", 1)[1], \
                "Prosody offered STARTTLS on s2s"
