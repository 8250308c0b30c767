"""balancerd on loopback: health-driven DNS, the VIP's L4 proxy with PROXY v2,
least connections with source affinity, and its keepalived state file.

Topology (all on 127.0.0.0/8, no root needed):

    edges  127.0.1.1-3   contoso.test's pool of three edged, one cluster; each
                         with its external listener and its listener for the
                         balancer (PROXY v2) on the same ports everywhere
    bal    127.0.1.10    balancerd: DNS (UDP + TCP), status; a cluster observer
    VIP    127.0.1.100   balancerd's proxy (loopback owns all of 127/8)
    partner 127.0.2.1    fabrikam.test's edged, a legacy partner: it knows
                         contoso only as the VIP
    UAS    127.0.0.1     contoso's internal SIP server (a Python UAS) behind
                         all three edges, counting what arrives

dig is the DNS client, as a partner's resolver would be.
"""
import base64
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgepool import (Edge, SipClient, SipUAS, balancer_config, balancerd_binary, edge_config,
                      free_port, sip_request, wait_for)

EDGE_HOSTS = {"edge-1": "127.0.1.1", "edge-2": "127.0.1.2", "edge-3": "127.0.1.3"}
BAL_HOST = "127.0.1.10"
VIP = "127.0.1.100"
PARTNER_HOST = "127.0.2.1"
KEY = base64.b64encode(bytes(range(32, 64))).decode()
TIMING = {"probe_interval_ms": 200, "probe_timeout_ms": 100, "gossip_interval_ms": 50,
          "pushpull_interval_s": 2}


def port_free_everywhere(hosts):
    """A TCP port free on every host now (the edges share their port numbers)."""
    for _ in range(100):
        port = free_port(hosts[0])
        ok = True
        for h in hosts[1:]:
            with socket.socket() as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no port free on every host")


def dig(lab, name, rtype="A", tcp=False):
    """(status, [answer data]) of one query to the balancer's DNS."""
    cmd = ["dig", "+time=2", "+tries=1", "-p", str(lab.dns[1]), f"@{lab.dns[0]}", name, rtype,
           "+noall", "+comments", "+answer", "+authority"]
    if tcp:
        cmd.append("+tcp")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    status = next((line.split("status: ")[1].split(",")[0] for line in out.splitlines()
                   if "status: " in line), None)
    answers = []
    in_answer = False
    for line in out.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            in_answer = True
            continue
        if line.startswith(";;") or not line.strip():
            in_answer = False if line.startswith(";;") else in_answer
            continue
        if in_answer:
            fields = line.split()
            if fields[3] == rtype:
                answers.append(" ".join(fields[4:]))
    return status, answers


def pool_addresses(lab):
    status, answers = dig(lab, "sip.contoso.test")
    assert status == "NOERROR", status
    return sorted(answers)


class Lab:
    pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("balancer")
    lab = Lab()
    lab.work = work
    lab.pki = pki
    lab.edge_cert, lab.edge_key = pki.issue("sip.contoso.test", file_name="bal-edges")
    lab.bal_cert, lab.bal_key = pki.issue("balancer.contoso.test")
    lab.partner_cert, lab.partner_key = pki.issue("sip.fabrikam.test", file_name="bal-partner")
    hosts = list(EDGE_HOSTS.values())
    lab.sip_port = port_free_everywhere(hosts)
    lab.proxy_port = port_free_everywhere(hosts)
    lab.internal_port = port_free_everywhere(hosts)
    lab.cluster_port = port_free_everywhere(hosts + [BAL_HOST])
    lab.uas = SipUAS("127.0.0.1", free_port())
    lab.vip_port = free_port(VIP)
    lab.partner_internal = (PARTNER_HOST, free_port(PARTNER_HOST))
    lab.partner_external = (PARTNER_HOST, free_port(PARTNER_HOST))
    lab.partner_uas = SipUAS(PARTNER_HOST, free_port(PARTNER_HOST))
    lab.dns = (BAL_HOST, free_port(BAL_HOST))
    lab.bal_status = (BAL_HOST, free_port(BAL_HOST))
    lab.edges = {}
    for i, (name, host) in enumerate(EDGE_HOSTS.items()):
        join = [f"{hosts[0]}:{lab.cluster_port}"] if i else []
        cluster = {"name": name, "address": host, "port": lab.cluster_port, "keys": [KEY],
                   "join": join, **TIMING}
        text = edge_config(pool_fqdn="sip.contoso.test", domains=["contoso.test"],
                           ca=pki.ca_file, cert=lab.edge_cert, key=lab.edge_key,
                           internal=(host, lab.internal_port), next_hop=lab.uas.addr,
                           external=(host, lab.sip_port), status_port=free_port(host),
                           status_host=host, proxy_listen=(host, lab.proxy_port),
                           proxy_from=["127.0.0.1"],
                           partners=[{"domains": ["fabrikam.test"], "fqdn": "sip.fabrikam.test",
                                      "address": PARTNER_HOST, "port": lab.partner_external[1]}],
                           sections={"cluster": cluster})
        lab.edges[name] = Edge(work, name, text, [(host, lab.sip_port), (host, lab.proxy_port)],
                               status_host=host)
    lab.bal_text = balancer_config(
        ca=pki.ca_file, cert=lab.bal_cert, key=lab.bal_key, status=lab.bal_status,
        edges=[{"name": n, "fqdn": "sip.contoso.test", "address": h, "sip_port": lab.sip_port}
               for n, h in EDGE_HOSTS.items()],
        dns_listen=[lab.dns],
        zones=[{"domain": "contoso.test", "pool_name": "sip.contoso.test",
                "vip_name": "vip.contoso.test", "vip": [VIP], "ns": ["ns1.contoso.test"],
                "ns_addresses": [BAL_HOST]}],
        vip={"addresses": [VIP], "forward": [{"port": lab.vip_port, "edge_port": lab.proxy_port}],
             "affinity_idle_s": 600, "connect_timeout_ms": 500},
        cluster={"name": "balancer-1", "address": BAL_HOST, "port": lab.cluster_port,
                 "keys": [KEY], "join": [f"{hosts[0]}:{lab.cluster_port}"], **TIMING})
    lab.bal = Edge(work, "balancerd", lab.bal_text, [lab.dns, (VIP, lab.vip_port)],
                   status_host=BAL_HOST, status_port=lab.bal_status[1], binary=balancerd_binary())
    # The legacy partner: contoso is the VIP to it, nothing else.
    partner_text = edge_config(pool_fqdn="sip.fabrikam.test", domains=["fabrikam.test"],
                               ca=pki.ca_file, cert=lab.partner_cert, key=lab.partner_key,
                               internal=lab.partner_internal, next_hop=lab.partner_uas.addr,
                               external=lab.partner_external,
                               partners=[{"domains": ["contoso.test"], "fqdn": "sip.contoso.test",
                                          "address": VIP, "port": lab.vip_port}])
    lab.partner = Edge(work, "fabrikam", partner_text, [lab.partner_internal])
    codes = {}
    try:
        for e in lab.edges.values():
            e.start()
        lab.bal.start()
        lab.partner.start()
        wait_for(lambda: lab.bal.status()["usable_edges"] == 3, 15, "three usable edges")
        yield lab
    finally:
        codes["fabrikam"] = lab.partner.stop()
        codes["balancerd"] = lab.bal.stop()
        for name, e in lab.edges.items():
            codes[name] = e.stop()
        lab.uas.stop()
        lab.partner_uas.stop()
    # A sanitizer report or a crash shows as a non-zero exit.
    bad = {n: c for n, c in codes.items() if c not in (0, None)}
    assert not bad, f"unclean exits: {bad}\n{lab.bal.log()[-3000:]}"


def usable(lab):
    return {e["name"] for e in lab.bal.status()["edges"] if e["usable"]}


def ensure_all_up(lab):
    """Restarts any edge a test stopped, and waits until all three are usable again."""
    for e in lab.edges.values():
        if not e.running():
            e.start()
    wait_for(lambda: usable(lab) == set(EDGE_HOSTS), 15, "all three edges usable")


_seq = [0]


def send_message(lab):
    """One MESSAGE bob@fabrikam -> alice@contoso through the partner's edge and the VIP.
    Returns (final status, call_id)."""
    _seq[0] += 1
    call_id = f"bal-{os.getpid()}-{_seq[0]}"
    c = SipClient(*lab.partner_internal)
    try:
        c.send(sip_request("MESSAGE", "sip:alice@contoso.test", from_uri="sip:bob@fabrikam.test",
                           to_uri="sip:alice@contoso.test", call_id=call_id, body="hello",
                           headers=["Content-Type: text/plain"]))
        return c.recv_final().status, call_id
    finally:
        c.close()


def edge_of(lab, call_id):
    """The contoso edge that relayed call_id to the UAS (by the Via it added)."""
    for r in lab.uas.received(call_id):
        for name, host in EDGE_HOSTS.items():
            if f"SIP/2.0/TCP {host}:" in r.header("via"):
                return name
    return None


def test_the_balancer_observes_the_pool(lab):
    """The edges know balancerd as an observer: a member, but not one of the pool's nodes."""
    members = {m["name"]: m for m in lab.edges["edge-1"].status()["cluster"]["members"]}
    assert members["balancer-1"]["observer"] is True
    assert members["balancer-1"]["state"] == "alive"
    assert not any(members[e]["observer"] for e in EDGE_HOSTS)


# ---- DNS ----

def test_pool_name_lists_the_usable_edges(lab):
    assert pool_addresses(lab) == sorted(EDGE_HOSTS.values())


def test_answers_rotate(lab):
    firsts = {dig(lab, "sip.contoso.test")[1][0] for _ in range(6)}
    assert firsts == set(EDGE_HOSTS.values())


def test_srv_and_vip_records(lab):
    status, srv = dig(lab, "_sipfederationtls._tcp.contoso.test", "SRV")
    assert status == "NOERROR" and srv == ["0 0 5061 sip.contoso.test."]
    assert dig(lab, "_sip._tls.contoso.test", "SRV")[1] == ["0 0 443 sip.contoso.test."]
    assert dig(lab, "_xmpp-server._tcp.contoso.test", "SRV")[1] == ["0 0 5269 sip.contoso.test."]
    assert dig(lab, "vip.contoso.test")[1] == [VIP]


def test_over_tcp_too(lab):
    status, answers = dig(lab, "sip.contoso.test", tcp=True)
    assert status == "NOERROR" and sorted(answers) == sorted(EDGE_HOSTS.values())


def test_nxdomain_nodata_refused(lab):
    assert dig(lab, "nothere.contoso.test") == ("NXDOMAIN", [])
    assert dig(lab, "sip.contoso.test", "MX") == ("NOERROR", [])
    assert dig(lab, "_tcp.contoso.test", "A") == ("NOERROR", [])   # an empty non-terminal
    assert dig(lab, "sip.example.test")[0] == "REFUSED"


def test_garbage_on_the_dns_port_is_dropped(lab):
    before = lab.bal.status()["dns"]["dropped"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x00\x01garbage", lab.dns)
    wait_for(lambda: lab.bal.status()["dns"]["dropped"] > before, 5, "the datagram counted")
    assert pool_addresses(lab) == sorted(EDGE_HOSTS.values())


# ---- the VIP ----

def test_message_through_the_vip(lab):
    """The legacy partner's edge knows only the VIP: its MESSAGE reaches contoso's UAS."""
    status, call_id = send_message(lab)
    assert status == 200
    name = edge_of(lab, call_id)
    assert name, "the UAS got the MESSAGE through a contoso edge"
    assert "via balancer 127.0.0.1 accepted, certificate names sip.fabrikam.test" in \
        lab.edges[name].log()
    assert lab.edges[name].status()["proxy_headers"] >= 1


def test_edges_see_the_partners_own_address(lab):
    """A partner connecting from 127.0.3.50: the edge takes that address from the PROXY
    header (Via received=, its log), not the balancer's."""
    call_id = f"bal-src-{os.getpid()}"
    c = SipClient(VIP, lab.vip_port, tls_ca=lab.pki.ca_file, cert=lab.partner_cert,
                  key=lab.partner_key, server_name="sip.contoso.test", source="127.0.3.50")
    try:
        c.send(sip_request("MESSAGE", "sip:alice@contoso.test", from_uri="sip:bob@fabrikam.test",
                           to_uri="sip:alice@contoso.test", call_id=call_id,
                           via=("sip.fabrikam.test", 5061)))
        assert c.recv_final().status == 200
    finally:
        c.close()
    (request,) = lab.uas.received(call_id)
    vias = [v for n, v in request.headers if n == "via"]
    assert "received=127.0.3.50" in vias[1], vias
    assert "TLS connection from 127.0.3.50:" in lab.edges[edge_of(lab, call_id)].log()


@pytest.fixture
def base(lab):
    ensure_all_up(lab)
    wait_for(lambda: lab.bal.status()["proxy"]["active"] <= 1, 10, "idle proxy")
    st = lab.bal.status()["proxy"]
    lab.base_per_edge = dict(st["per_edge"])
    lab.base_active = sum(st["per_edge"].values())
    return lab


def partner_tls(lab, source):
    """A partner's mutual-TLS connection through the VIP from `source` (the handshake done)."""
    return SipClient(VIP, lab.vip_port, tls_ca=lab.pki.ca_file, cert=lab.partner_cert,
                     key=lab.partner_key, server_name="sip.contoso.test", source=source)


def test_spread_and_affinity(base):
    """Six partners even the edges out; one that comes back goes where it went (its
    affinity is written once the edge answered: here, the TLS handshake)."""
    lab = base
    clients = []
    try:
        for i in range(6):
            clients.append(partner_tls(lab, f"127.0.3.{i + 1}"))
        per_edge = lab.bal.status()["proxy"]["per_edge"]
        added = sum(per_edge[n] - lab.base_per_edge[n] for n in EDGE_HOSTS)
        assert added == 6 and max(per_edge.values()) - min(per_edge.values()) <= 1, per_edge
        hits = lab.bal.status()["proxy"]["affinity_hits"]
        # The same source again: the edge it used, not the least loaded.
        before = dict(per_edge)
        clients.append(partner_tls(lab, "127.0.3.1"))
        assert lab.bal.status()["proxy"]["affinity_hits"] == hits + 1
        after = lab.bal.status()["proxy"]["per_edge"]
        grew = [n for n in EDGE_HOSTS if after[n] > before[n]]
        assert len(grew) == 1
    finally:
        for c in clients:
            c.close()


# ---- failures ----

def test_killed_edge_leaves_dns_and_the_proxy(base):
    lab = base
    status, call_id = send_message(lab)
    assert status == 200
    victim = edge_of(lab, call_id)
    lab.edges[victim].proc.send_signal(signal.SIGKILL)
    lab.edges[victim].proc.wait()
    lab.edges[victim].stop()
    t0 = time.monotonic()
    wait_for(lambda: EDGE_HOSTS[victim] not in pool_addresses(lab), 2, "the dead edge out of DNS")
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0
    # The partner's connection went with the edge; its next MESSAGE goes through the VIP again,
    # to another edge.
    status, call_id = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(send_message(lab)),
                               10, "a MESSAGE delivered after the edge died")
    assert edge_of(lab, call_id) not in (None, victim)
    assert lab.bal.status()["proxy"]["per_edge"][victim] == 0
    ensure_all_up(lab)
    assert pool_addresses(lab) == sorted(EDGE_HOSTS.values())


def test_draining_edge_leaves_new_traffic(base):
    lab = base
    name = "edge-2"
    lab.edges[name].proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: EDGE_HOSTS[name] not in pool_addresses(lab), 3, "the draining edge out")
    edge_status = next(e for e in lab.bal.status()["edges"] if e["name"] == name)
    assert edge_status["draining"] or edge_status["member"] == "gone"
    wait_for(lambda: not lab.edges[name].running(), 40, "the drained edge to stop")
    assert lab.edges[name].stop() == 0
    ensure_all_up(lab)


def test_no_usable_edge(base):
    """All edges down: DNS answers with all of them (all_when_none_healthy), the VIP closes."""
    lab = base
    for e in lab.edges.values():
        e.stop()
    wait_for(lambda: lab.bal.status()["usable_edges"] == 0, 10, "no usable edge")
    assert pool_addresses(lab) == sorted(EDGE_HOSTS.values())
    before = lab.bal.status()["proxy"]["no_edge"]
    with socket.create_connection((VIP, lab.vip_port), timeout=5) as s:
        s.settimeout(5)
        assert s.recv(1) == b""
    assert lab.bal.status()["proxy"]["no_edge"] == before + 1
    ensure_all_up(lab)


# ---- keepalived's side ----

def test_state_file_and_watchdog(lab, tmp_path):
    """"0" in the state file while balancerd serves; "1" the moment it is killed."""
    state = tmp_path / "balancer.state"
    status_port = free_port(BAL_HOST)
    text = balancer_config(
        ca=lab.pki.ca_file, cert=lab.bal_cert, key=lab.bal_key, status=(BAL_HOST, status_port),
        edges=[{"name": "edge-1", "fqdn": "sip.contoso.test", "address": EDGE_HOSTS["edge-1"],
                "sip_port": lab.sip_port}],
        vip={"addresses": ["127.0.1.101"],
             "forward": [{"port": free_port("127.0.1.101"), "edge_port": lab.proxy_port}]},
        extra={"keepalived": {"interface": "eth0", "state_file": str(tmp_path / "balancer.state"),
                              "virtual_router_id": 51, "priority": 150, "advert_ms": 200}})
    bal = Edge(tmp_path, "watchdog", text, [], status_host=BAL_HOST, status_port=status_port,
               binary=balancerd_binary())
    bal.start()
    try:
        wait_for(lambda: state.read_text() == "0\n", 5, "balancerd ready in the state file")
        conf = subprocess.run([balancerd_binary(), "-c", str(bal.conf), "-K"], capture_output=True,
                              text=True, timeout=10)
        assert conf.returncode == 0, conf.stderr
        assert "127.0.1.101/24 dev eth0" in conf.stdout and str(state) in conf.stdout
        assert f"-C {BAL_HOST}:{status_port}" in conf.stdout
        kconf = tmp_path / "keepalived.conf"
        kconf.write_text(conf.stdout)
        check = subprocess.run(["keepalived", "-t", "-f", str(kconf)], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        ready = subprocess.run([balancerd_binary(), "-C", f"{BAL_HOST}:{status_port}"],
                               timeout=10)
        assert ready.returncode == 0
        bal.proc.send_signal(signal.SIGKILL)
        bal.proc.wait()
        wait_for(lambda: state.read_text() == "1\n", 2, "the watchdog's 1")
        not_ready = subprocess.run([balancerd_binary(), "-C", f"{BAL_HOST}:{status_port}"],
                                   timeout=10)
        assert not_ready.returncode == 1
    finally:
        bal.stop()


@pytest.mark.parametrize("text, message", [
    ("edges = ();", "'edges' must list the pool's edges"),
    ('edges = ( { name = "a"; fqdn = "x..y"; address = "127.0.0.1"; } );',
     "'x..y' is not a valid domain name"),
    ('edges = ( { name = "a"; fqdn = "sip.contoso.test"; address = "127.0.0.1"; } );\n'
     'vip = { addresses = [ "127.0.0.5" ]; forward = ( { port = 5061; edge_port = 5063; },'
     ' { port = 5061; edge_port = 5064; } ); };', "port 5061 is forwarded twice"),
    ('edges = ( { name = "a"; fqdn = "sip.contoso.test"; address = "127.0.0.1"; } );\n'
     'dns = { listen = ( { address = "127.0.0.1"; port = 53; } ); zones = ( { domain = '
     '"contoso.test"; pool_name = "sip.other.test"; ns = [ "ns.other.test" ]; } ); };',
     "'sip.other.test' is not inside 'contoso.test'"),
    ('edges = ( { name = "a"; fqdn = "sip.contoso.test"; address = "127.0.0.1"; } );\n'
     'vip = { addresses = [ "127.0.0.5" ]; forward = ( { port = 5061; edge_port = 5063; } ); };\n'
     'keepalived = { interface = "eth0"; state_file = "/tmp/x"; advert_ms = 25; };',
     "'advert_ms' must be a multiple of 10"),
    ('edges = ( { name = "a"; fqdn = "sip.contoso.test"; address = "127.0.0.1"; } );\n'
     'vip = { addresses = [ "127.0.0.5", "fd00::5" ]; forward = ( { port = 5061; edge_port = 5063; }'
     ' ); };\nkeepalived = { interface = "eth0"; state_file = "/tmp/x"; };',
     "the VIP's addresses mix IPv4 and IPv6"),
    ('edges = ( { name = "a b"; fqdn = "sip.contoso.test"; address = "127.0.0.1"; } );',
     "'a b' is not a node name"),
    ('edges = ( { name = "a"; fqdn = "sip.contoso.test"; address = "127.0.0.1"; } );\n'
     'vip = { addresses = [ "127.0.0.5", "" ]; forward = ( { port = 5061; edge_port = 5063; } ); };',
     "'addresses' element 2 must be a non-empty string"),
])
def test_configuration_errors_name_the_line(lab, tmp_path, text, message):
    head = (f'tls = {{ ca_file = "{lab.pki.ca_file}"; cert_file = "{lab.bal_cert}"; '
            f'key_file = "{lab.bal_key}"; }};\n')
    conf = tmp_path / "bad.conf"
    conf.write_text(head + text + "\n")
    out = subprocess.run([balancerd_binary(), "-t", "-c", str(conf)], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 1
    assert f"{conf}:" in out.stderr and message in out.stderr, out.stderr


def test_balancerd_is_valgrind_clean(lab, tmp_path):
    """A second balancerd (the build without sanitizers) under valgrind over the same
    edges: health checks, the cluster, DNS over UDP and TCP with garbage, a partner's
    MESSAGE through its VIP with PROXY v2, an edge restarted, then a clean stop."""
    plain = os.path.join(os.path.dirname(os.environ.get("EDGED_PLAIN") or ""), "balancerd")
    if not os.environ.get("EDGED_PLAIN") or not os.access(plain, os.X_OK):
        pytest.fail("set EDGED_PLAIN to an edged built without sanitizers, beside its balancerd "
                    "(make integration does)")
    vip, dns, status = "127.0.1.102", (BAL_HOST, free_port(BAL_HOST)), free_port(BAL_HOST)
    vip_port = free_port(vip)
    text = balancer_config(
        ca=lab.pki.ca_file, cert=lab.bal_cert, key=lab.bal_key, status=(BAL_HOST, status),
        edges=[{"name": n, "fqdn": "sip.contoso.test", "address": h, "sip_port": lab.sip_port}
               for n, h in EDGE_HOSTS.items()],
        dns_listen=[dns],
        zones=[{"domain": "contoso.test", "pool_name": "sip.contoso.test",
                "ns": ["ns1.contoso.test"], "ns_addresses": [BAL_HOST]}],
        vip={"addresses": [vip], "forward": [{"port": vip_port, "edge_port": lab.proxy_port}]},
        cluster={"name": "balancer-vg", "address": BAL_HOST, "port": free_port(BAL_HOST),
                 "keys": [KEY], "join": [f"{EDGE_HOSTS['edge-1']}:{lab.cluster_port}"], **TIMING})
    valgrind = ["valgrind", "-q", "--error-exitcode=97", "--leak-check=full",
                "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite"]
    bal = Edge(tmp_path, "balancerd-vg", text, [dns], status_host=BAL_HOST, status_port=status,
               binary=plain, wrapper=valgrind)
    bal.start(timeout=60)
    code = None
    try:
        wait_for(lambda: bal.status()["usable_edges"] == 3, 30, "three usable edges")
        saved = lab.dns
        lab.dns = dns
        try:
            assert pool_addresses(lab) == sorted(EDGE_HOSTS.values())
            assert dig(lab, "sip.contoso.test", tcp=True)[0] == "NOERROR"
            assert dig(lab, "nothere.contoso.test")[0] == "NXDOMAIN"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"\x00\x01garbage", dns)
            with socket.create_connection(dns) as s:
                s.sendall(b"\x00\x00")           # a length of 0: closed
                s.settimeout(10)
                assert s.recv(1) == b""
        finally:
            lab.dns = saved
        call_id = f"bal-vg-{os.getpid()}"
        c = SipClient(vip, vip_port, tls_ca=lab.pki.ca_file, cert=lab.partner_cert,
                      key=lab.partner_key, server_name="sip.contoso.test", timeout=20)
        try:
            c.send(sip_request("MESSAGE", "sip:alice@contoso.test",
                               from_uri="sip:bob@fabrikam.test", to_uri="sip:alice@contoso.test",
                               call_id=call_id, via=("sip.fabrikam.test", 5061)))
            assert c.recv_final().status == 200
        finally:
            c.close()
        lab.edges["edge-3"].stop()
        wait_for(lambda: bal.status()["usable_edges"] == 2, 30, "the stopped edge out")
        ensure_all_up(lab)
        wait_for(lambda: bal.status()["usable_edges"] == 3, 30, "the edge back")
    finally:
        code = bal.stop(timeout=60)
    assert code == 0, bal.log()[-4000:]


def test_dynamic_updates_follow_health(lab, tmp_path):
    """balancerd with `dns.update` and no responder: a real BIND 9 holds the usable
    edges (RFC 2136, TSIG), loses a stopped edge, and gets it back."""
    from dnslab import KEY_NAME, Bind
    bind = Bind(tmp_path / "named", {"contoso.test": []})
    bind.start()
    status = free_port(BAL_HOST)
    text = balancer_config(
        ca=lab.pki.ca_file, cert=lab.bal_cert, key=lab.bal_key, status=(BAL_HOST, status),
        edges=[{"name": n, "fqdn": "sip.contoso.test", "address": h, "sip_port": lab.sip_port}
               for n, h in EDGE_HOSTS.items()],
        zones=[{"domain": "contoso.test", "pool_name": "sip.contoso.test",
                "vip_name": "vip.contoso.test", "vip": [VIP], "ns": ["ns.contoso.test"],
                "ns_addresses": ["127.0.0.1"]}],
        extra={"dns": {"update": {"server": bind.host, "port": bind.port, "zone": "contoso.test",
                                  "tsig_name": KEY_NAME, "tsig_secret": bind.secret,
                                  "timeout_ms": 2000}}})
    bal = Edge(tmp_path, "balancerd-update", text, [], status_host=BAL_HOST, status_port=status,
               binary=balancerd_binary())

    def published():
        return sorted(bind.query("sip.contoso.test", "A"))

    try:
        bal.start()
        wait_for(lambda: published() == sorted(EDGE_HOSTS.values()), 15,
                 "the three edges in BIND's zone")
        assert bind.query("_sipfederationtls._tcp.contoso.test", "SRV") == \
            ["0 0 5061 sip.contoso.test."]
        assert bind.query("vip.contoso.test", "A") == [VIP]
        lab.edges["edge-3"].stop()
        wait_for(lambda: EDGE_HOSTS["edge-3"] not in published(), 5, "the stopped edge gone")
        ensure_all_up(lab)
        wait_for(lambda: published() == sorted(EDGE_HOSTS.values()), 15, "the edge back")
        st = bal.status()["update"]
        assert st["in_sync"] and st["failed"] == 0 and st["succeeded"] >= 2, st
    finally:
        code = bal.stop()
        bind.stop()
    assert code == 0, bal.log()[-3000:]


class Backend:
    """A TCP server behind a second balancerd: echoes, or answers `goodbye` bytes and
    closes at once while the client may still be sending."""

    def __init__(self, host, goodbye=None):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.goodbye = goodbye
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(30)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(30)
            if self.goodbye:
                conn.recv(100)
                conn.sendall(self.goodbye)
                return
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)

    def close(self):
        self.sock.close()
        self.thread.join(5)


def relaying_balancer(lab, tmp_path, backend_port, name):
    """A balancerd whose VIP forwards (no PROXY header) to backend_port on edge-1's address."""
    vip, status = "127.0.1.103", free_port(BAL_HOST)
    port = free_port(vip)
    text = balancer_config(
        ca=lab.pki.ca_file, cert=lab.bal_cert, key=lab.bal_key, status=(BAL_HOST, status),
        edges=[{"name": "edge-1", "fqdn": "sip.contoso.test", "address": EDGE_HOSTS["edge-1"],
                "sip_port": lab.sip_port}],
        vip={"addresses": [vip], "buffer_kb": 16,
             "forward": [{"port": port, "edge_port": backend_port, "proxy_protocol": False}]})
    bal = Edge(tmp_path, name, text, [(vip, port)], status_host=BAL_HOST, status_port=status,
               binary=balancerd_binary())
    bal.start()
    wait_for(lambda: bal.status()["usable_edges"] == 1, 10, "the edge usable")
    return bal, (vip, port)


def test_bulk_both_ways_through_the_proxy(lab, tmp_path):
    """4 MB each way through 16 KB buffers, with the partner's half-close passed on."""
    backend = Backend(EDGE_HOSTS["edge-1"])
    bal, addr = relaying_balancer(lab, tmp_path, backend.port, "balancerd-bulk")
    try:
        payload = os.urandom(4 << 20)
        got = bytearray()
        with socket.create_connection(addr, timeout=30) as s:
            def send():
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
            sender.join(30)
        assert bytes(got) == payload
        wait_for(lambda: bal.status()["proxy"]["active"] == 0, 10, "the connection freed")
    finally:
        code = bal.stop()
        backend.close()
    assert code == 0, bal.log()[-3000:]


def test_last_bytes_of_a_closing_edge_reach_the_partner(lab, tmp_path):
    """The edge answers and closes while the partner still sends (its reset on our side
    must not swallow the answer)."""
    backend = Backend(EDGE_HOSTS["edge-1"], goodbye=b"x" * 1000)
    bal, addr = relaying_balancer(lab, tmp_path, backend.port, "balancerd-close")
    try:
        got = bytearray()
        with socket.create_connection(addr, timeout=10) as s:
            s.sendall(b"hello")
            try:
                for _ in range(50):
                    s.sendall(b"y" * 4096)
                    time.sleep(0.01)
            except OSError:
                pass
            try:
                while len(got) < 1000:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except OSError:
                pass
        assert bytes(got[:1000]) == b"x" * 1000
    finally:
        code = bal.stop()
        backend.close()
    assert code == 0, bal.log()[-3000:]


def test_the_vips_path_is_checked_apart(lab, tmp_path):
    """An edge whose proxy_from lacks this balancer: usable through DNS (its SIP port
    answers), never chosen by the VIP (its balancer listener refuses us)."""
    host = "127.0.1.4"
    stranger = Edge(tmp_path, "edge-4", edge_config(
        pool_fqdn="sip.contoso.test", domains=["contoso.test"], ca=lab.pki.ca_file,
        cert=lab.edge_cert, key=lab.edge_key, internal=(host, lab.internal_port),
        next_hop=lab.uas.addr, external=(host, lab.sip_port), status_port=free_port(host),
        status_host=host, proxy_listen=(host, lab.proxy_port), proxy_from=["127.0.0.99"]),
        [(host, lab.sip_port)], status_host=host)
    vip, status, dns = "127.0.1.104", free_port(BAL_HOST), (BAL_HOST, free_port(BAL_HOST))
    port = free_port(vip)
    text = balancer_config(
        ca=lab.pki.ca_file, cert=lab.bal_cert, key=lab.bal_key, status=(BAL_HOST, status),
        edges=[{"name": "edge-1", "fqdn": "sip.contoso.test", "address": EDGE_HOSTS["edge-1"],
                "sip_port": lab.sip_port},
               {"name": "edge-4", "fqdn": "sip.contoso.test", "address": host,
                "sip_port": lab.sip_port}],
        dns_listen=[dns],
        zones=[{"domain": "contoso.test", "pool_name": "sip.contoso.test",
                "ns": ["ns1.contoso.test"], "ns_addresses": [BAL_HOST]}],
        vip={"addresses": [vip], "forward": [{"port": port, "edge_port": lab.proxy_port}]})
    bal = Edge(tmp_path, "balancerd-paths", text, [(vip, port)], status_host=BAL_HOST,
               status_port=status, binary=balancerd_binary())
    stranger.start()
    bal.start()
    try:
        def edge4():
            return next(e for e in bal.status()["edges"] if e["name"] == "edge-4")
        wait_for(lambda: [c["state"] for c in edge4()["checks"]] == ["up", "down"], 10,
                 "edge-4 up on its SIP port, down on the VIP's path")
        assert edge4()["usable"] is True
        assert edge4()["checks"][1]["proxy_local"] is True
        saved, lab.dns = lab.dns, dns
        try:
            assert pool_addresses(lab) == sorted([EDGE_HOSTS["edge-1"], host])
        finally:
            lab.dns = saved
        clients = [SipClient(vip, port, tls_ca=lab.pki.ca_file, cert=lab.partner_cert,
                             key=lab.partner_key, server_name="sip.contoso.test",
                             source=f"127.0.4.{i + 1}") for i in range(4)]
        per_edge = bal.status()["proxy"]["per_edge"]
        for c in clients:
            c.close()
        assert per_edge == {"edge-1": 4, "edge-4": 0}, per_edge
    finally:
        code = bal.stop()
        stranger.stop()
    assert code == 0, bal.log()[-3000:]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_file_descriptors_rests_not_spins(lab, tmp_path):
    """balancerd held to 48 open files: partners past that are refused (counted, closed),
    never a loop at full CPU; all is well after. (The listener's rest when accept itself
    fails is test_accept.c's.)"""
    vip, status = "127.0.1.105", free_port(BAL_HOST)
    port = free_port(vip)
    text = balancer_config(
        ca=lab.pki.ca_file, cert=lab.bal_cert, key=lab.bal_key, status=(BAL_HOST, status),
        edges=[{"name": "edge-1", "fqdn": "sip.contoso.test", "address": EDGE_HOSTS["edge-1"],
                "sip_port": lab.sip_port}],
        vip={"addresses": [vip], "forward": [{"port": port, "edge_port": lab.proxy_port}]})
    bal = Edge(tmp_path, "balancerd-fds", text, [(vip, port)], status_host=BAL_HOST,
               status_port=status, binary=balancerd_binary(),
               wrapper=["prlimit", "--nofile=48:48"])
    bal.start()
    socks = []
    try:
        wait_for(lambda: bal.status()["usable_edges"] == 1, 10, "the edge usable")
        for _ in range(40):
            socks.append(socket.create_connection((vip, port), timeout=5))
        wait_for(lambda: bal.status()["proxy"]["refused"] > 0, 10, "partners refused")
        assert bal.status()["proxy"]["no_edge"] == 0
        pid = bal.proc.pid
        before, t0 = cpu_seconds(pid), time.monotonic()
        wait_for(lambda: time.monotonic() - t0 >= 1.0, 5, "a second")
        assert cpu_seconds(pid) - before < 0.3
        assert "open files are limited to 48" in bal.log()
        for s in socks:
            s.close()
        socks.clear()
        wait_for(lambda: bal.status()["proxy"]["active"] == 0, 15, "the connections gone")
        # A partner after the storm: relayed, through a TLS handshake with the edge.
        SipClient(vip, port, tls_ca=lab.pki.ca_file, cert=lab.partner_cert, key=lab.partner_key,
                  server_name="sip.contoso.test").close()
    finally:
        for s in socks:
            s.close()
        code = bal.stop()
    assert code == 0, bal.log()[-3000:]


def test_a_partner_that_stops_reading_costs_no_cpu(lab, tmp_path):
    """A bulk direction whose receiver stops reading: the relay waits (its buffer and
    kernel pipe full), no loop at full CPU; the bytes all arrive once it reads again."""
    backend = Backend(EDGE_HOSTS["edge-1"])
    bal, addr = relaying_balancer(lab, tmp_path, backend.port, "balancerd-slow")
    try:
        payload = os.urandom(8 << 20)
        with socket.create_connection(addr, timeout=30) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sender = threading.Thread(target=lambda: (s.sendall(payload),
                                                      s.shutdown(socket.SHUT_WR)), daemon=True)
            sender.start()
            # Not reading: the echo backs up through balancerd to the backend.
            wait_for(lambda: bal.status()["proxy"]["bytes_out"] > (1 << 20), 10,
                     "the echo under way")
            pid = bal.proc.pid
            before, t0 = cpu_seconds(pid), time.monotonic()
            wait_for(lambda: time.monotonic() - t0 >= 1.0, 5, "a second")
            assert cpu_seconds(pid) - before < 0.3
            got = bytearray()
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
            sender.join(30)
        assert bytes(got) == payload
    finally:
        code = bal.stop()
        backend.close()
    assert code == 0, bal.log()[-3000:]
