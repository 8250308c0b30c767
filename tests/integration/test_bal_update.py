"""balancer/bal_update.c against a real BIND 9: RFC 2136 updates signed with
TSIG, through tests/bench/bal_update_drive (one updater on a libev loop that
publishes address sets one after another; see its header comment).

named (dnslab.Bind) serves contoso.test and accepts updates signed with its
key. The driver is built here with `make build/bench/bal_update_drive`
unless $BAL_UPDATE_DRIVE names one already built (it must be a build
without sanitizers for the valgrind test)."""
import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dnslab import KEY_NAME, Bind
from edgepool import terminate, wait_for

REPO = Path(__file__).resolve().parents[2]
ZONE = "contoso.test"
POOL = f"sip.{ZONE}"
VIP = f"vip.{ZONE}"
WRONG_SECRET = "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IDEyMzQ="
SRV = {f"_sipfederationtls._tcp.{ZONE}": 5061, f"_sip._tls.{ZONE}": 443,
       f"_xmpp-server._tcp.{ZONE}": 5269}


@pytest.fixture(scope="module")
def drive():
    path = os.environ.get("BAL_UPDATE_DRIVE")
    if path:
        assert os.path.isfile(path) and os.access(path, os.X_OK), \
            f"BAL_UPDATE_DRIVE={path} is not an executable file"
        return path
    # A make running this test passes its own variables (SAN=1) through
    # MAKEFLAGS and the environment: the driver is built as a plain one,
    # whatever the caller's build (SAN=0 on the command line wins).
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "SAN", "BUILD")}
    out = subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "SAN=0",
                          "build/bench/bal_update_drive"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"make build/bench/bal_update_drive failed:\n{out.stdout}{out.stderr}"
    return str(REPO / "build" / "bench" / "bal_update_drive")


@pytest.fixture
def dns(tmp_path):
    """A fresh named for each test: an empty contoso.test (SOA, NS)."""
    bind = Bind(tmp_path / "dns", {ZONE: []})
    try:
        yield bind.start()
    finally:
        bind.stop()


class Run:
    """A finished driver: its exit status, result lines, synced sets and stats."""

    def __init__(self, proc_out, returncode):
        self.returncode = returncode
        self.output = proc_out
        lines = proc_out.splitlines()
        self.results = [l[len("result "):] for l in lines if l.startswith("result ")]
        self.synced = [int(l.split()[1]) for l in lines if l.startswith("synced ")]
        stats = [l[len("stats "):] for l in lines if l.startswith("stats ")]
        assert len(stats) == 1, f"no stats line:\n{proc_out}"
        self.stats = json.loads(stats[0])


def command(drive, dns, sets, *opts, key=None, vip="198.18.0.10,fd00::10", wrapper=()):
    key = key or f"{KEY_NAME}:{dns.secret}"
    return [*wrapper, drive, "-k", key, "-v", f"{VIP}={vip}", "-t", "2000", "-T", "60", *opts,
            f"{dns.host}:{dns.port}", ZONE, *sets]


def run(drive, dns, sets, *opts, timeout=90, **kw):
    out = subprocess.run(command(drive, dns, sets, *opts, **kw), capture_output=True, text=True,
                         timeout=timeout)
    return Run(out.stdout + out.stderr, out.returncode)


def addresses(dns, name):
    """The A and AAAA of name, as a set of ipaddress objects."""
    return {ipaddress.ip_address(a) for t in ("A", "AAAA") for a in dns.query(name, t)}


def ips(*text):
    return {ipaddress.ip_address(a) for a in text}


def answers(dns, name, rtype):
    """(ttl, rdata) of each record, from dig +answer."""
    out = dns.dig(name, rtype, "+noall", "+answer")
    assert out.returncode == 0, out.stdout + out.stderr
    return [(int(f[1]), " ".join(f[4:])) for f in (l.split() for l in out.stdout.splitlines() if l)]


def expect_static(dns, vip4=("198.18.0.10",), vip6=("fd00::10",)):
    """Each SRV and the VIP's addresses once, with the static TTL."""
    for name, port in SRV.items():
        assert answers(dns, name, "SRV") == [(300, f"0 0 {port} {POOL}.")], name
    assert sorted(answers(dns, VIP, "A")) == sorted((300, a) for a in vip4)
    assert sorted(answers(dns, VIP, "AAAA")) == sorted((300, a) for a in vip6)


def serial(dns):
    return int(dns.query(ZONE, "SOA")[0].split()[2])


def test_sets_published_in_turn(drive, dns):
    sets = ["127.0.0.2,127.0.0.3", "127.0.0.3,2001:db8::3", "127.0.0.4"]
    r = run(drive, dns, sets)
    assert r.returncode == 0, r.output
    assert r.synced == [0, 1, 2]
    assert r.stats == {"sent": 3, "succeeded": 3, "failed": 0, "in_sync": True, "last_error": ""}
    # The newest set, exactly, with the short TTL; the AAAA of the set before is gone.
    assert addresses(dns, POOL) == ips("127.0.0.4")
    assert answers(dns, POOL, "A") == [(5, "127.0.0.4")]
    assert dns.query(POOL, "AAAA") == []
    expect_static(dns)
    # named applied each set in turn, as one update each.
    log = dns.log()
    for a in ("A 127.0.0.2", "A 127.0.0.3", "AAAA 2001:db8::3", "A 127.0.0.4"):
        assert f"adding an RR at '{POOL}' {a}" in log
    assert log.count(f"deleting rrset at '{POOL}' AAAA") == 3


def test_second_run_replaces_rather_than_piles_up(drive, dns):
    """A restart of the balancer sends the static records again: RRsets
    replaced, each record once; a changed VIP replaces the old one."""
    r = run(drive, dns, ["127.0.0.2,::2"])
    assert r.returncode == 0, r.output
    first = serial(dns)
    r = run(drive, dns, ["127.0.0.5"])
    assert r.returncode == 0, r.output
    assert addresses(dns, POOL) == ips("127.0.0.5")
    expect_static(dns)
    assert serial(dns) > first
    r = run(drive, dns, ["127.0.0.5", "127.0.0.6"], vip="198.18.0.11")
    assert r.returncode == 0, r.output
    assert addresses(dns, POOL) == ips("127.0.0.6")
    expect_static(dns, vip4=("198.18.0.11",), vip6=())


def test_coalesced_sets(drive, dns):
    """Published all at once: the last is what the server holds."""
    r = run(drive, dns, ["127.0.0.2", "127.0.0.3", "127.0.0.4,::4", "127.0.0.7,::7"], "-c")
    assert r.returncode == 0, r.output
    assert r.synced == [3]
    assert r.stats["in_sync"] is True and r.stats["failed"] == 0
    assert 1 <= r.stats["sent"] <= 4
    assert addresses(dns, POOL) == ips("127.0.0.7", "::7")


@pytest.mark.parametrize("key,tsig_error", [
    (f"{KEY_NAME}:{WRONG_SECRET}", "BADSIG"),
    (f"another-key:{WRONG_SECRET}", "BADKEY"),
])
def test_wrong_key_is_refused(drive, dns, key, tsig_error):
    r = run(drive, dns, ["127.0.0.2"])
    assert r.returncode == 0, r.output
    before = serial(dns)
    r = run(drive, dns, ["127.0.0.9"], "-f", "2", key=key)
    assert r.returncode == 1, r.output
    assert r.stats["sent"] == 2 and r.stats["failed"] == 2 and r.stats["succeeded"] == 0
    assert r.stats["in_sync"] is False
    assert f"server refused our TSIG: {tsig_error} (NOTAUTH)" in r.stats["last_error"]
    assert len(r.results) == 2 and all(x.startswith("failed ") for x in r.results)
    # The zone is as the good key left it.
    assert addresses(dns, POOL) == ips("127.0.0.2")
    assert serial(dns) == before
    assert "tsig verify failure" in dns.log()


def test_retried_until_named_is_back(drive, dns, tmp_path):
    r = run(drive, dns, ["127.0.0.2"])
    assert r.returncode == 0, r.output
    dns.stop()
    out_path = tmp_path / "drive.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(command(drive, dns, ["127.0.0.3", "127.0.0.4,::4"], "-c"),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: out_path.read_text().count("result failed") >= 2, 30,
                 "the driver to fail twice while named is down")
        assert "Connection refused" in out_path.read_text()
        dns.start()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            terminate(proc, 10)
    r = Run(out_path.read_text(), code)
    assert r.returncode == 0, r.output
    assert r.stats["failed"] >= 2 and r.stats["in_sync"] is True
    assert r.stats["sent"] == r.stats["failed"] + r.stats["succeeded"]
    # named came back with its zone file (dnslab drops the journal): the
    # newest set and the static records, as the first success sent them.
    assert addresses(dns, POOL) == ips("127.0.0.4", "::4")
    expect_static(dns)


def test_hmac_sha512(drive, tmp_path):
    bind = Bind(tmp_path / "dns", {ZONE: []}, algorithm="hmac-sha512")
    with bind as dns:
        r = run(drive, dns, ["127.0.0.2"], "-a", "hmac-sha512")
        assert r.returncode == 0, r.output
        assert addresses(dns, POOL) == ips("127.0.0.2")
        # The same secret under another algorithm is another key.
        r = run(drive, dns, ["127.0.0.3"], "-a", "hmac-sha256", "-f", "1")
        assert r.returncode == 1 and "refused our TSIG" in r.stats["last_error"], r.output
        assert addresses(dns, POOL) == ips("127.0.0.2")


def test_driver_is_valgrind_clean(drive, dns):
    valgrind = shutil.which("valgrind")
    assert valgrind, "valgrind is needed (package valgrind)"
    r = run(drive, dns, ["127.0.0.2", "127.0.0.3,::3"], timeout=180,
            wrapper=[valgrind, "-q", "--error-exitcode=97", "--leak-check=full",
                     "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite"])
    assert r.returncode == 0, r.output
    assert addresses(dns, POOL) == ips("127.0.0.3", "::3")
