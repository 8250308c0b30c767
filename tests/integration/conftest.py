"""Fixtures: a test PKI and a two-organization federation on loopback.

contoso.test runs its edge on 127.0.0.1 and fabrikam.test on 127.0.0.2; each
edge's internal next hop is the port where that organization's sipp (a UAS,
or a UAC that also receives in-dialog requests) listens.
"""
import os
from dataclasses import dataclass, field

import pytest

from edgepool import PKI, Edge, edge_config, free_port


def pytest_sessionstart(session):
    """Every test needs a real edged: stop at once, and say why, without it."""
    path = os.environ.get("EDGED")
    if not path:
        pytest.exit("EDGED is not set: run EDGED=/path/to/edged python3 -m pytest tests/integration "
                    "(make integration sets it)", returncode=4)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.exit(f"EDGED={path} is not an executable file (build it with make or make SAN=1)",
                    returncode=4)


@dataclass
class Org:
    domain: str
    fqdn: str
    host: str
    internal: tuple = None
    external: tuple = None
    peer: tuple = None        # the organization's own SIP server: sipp
    status_port: int = None
    cert: object = None
    key: object = None
    edge: Edge = None
    extra: dict = field(default_factory=dict)

    def keys(self, other, user="alice", other_user="bob"):
        """sipp -key arguments for a request from this org to the other."""
        return ["-key", "from_user", user, "-key", "from_domain", self.domain,
                "-key", "to_user", other_user, "-key", "to_domain", other.domain]


def make_org(domain, host, pki):
    org = Org(domain=domain, fqdn=f"sip.{domain}", host=host)
    org.internal = (host, free_port(host))
    org.external = (host, free_port(host))
    org.peer = (host, free_port(host))
    org.status_port = free_port("127.0.0.1")
    org.cert, org.key = pki.issue(org.fqdn)
    return org


def org_config(org, partners, pki, **kw):
    return edge_config(pool_fqdn=org.fqdn, domains=[org.domain], ca=pki.ca_file,
                       cert=org.cert, key=org.key, internal=org.internal,
                       next_hop=org.peer, external=org.external,
                       partners=[{"domains": [p.domain], "fqdn": p.fqdn,
                                  "address": p.external[0], "port": p.external[1]}
                                 for p in partners],
                       status_port=org.status_port, **kw)


def start_edge(workdir, org, partners, pki, **kw):
    org.edge = Edge(workdir, org.domain, org_config(org, partners, pki, **kw),
                    [org.internal, org.external])
    return org.edge.start()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    """A CA that the edges do not trust."""
    return PKI(tmp_path_factory.mktemp("other-pki"), ca_name="Some other CA")


@pytest.fixture(scope="module")
def orgs(tmp_path_factory, pki):
    """(contoso, fabrikam), both edges running; both must stop cleanly."""
    workdir = tmp_path_factory.mktemp("orgs")
    contoso = make_org("contoso.test", "127.0.0.1", pki)
    fabrikam = make_org("fabrikam.test", "127.0.0.2", pki)
    try:
        start_edge(workdir, contoso, [fabrikam], pki)
        start_edge(workdir, fabrikam, [contoso], pki)
        yield contoso, fabrikam
    finally:
        codes = {o.domain: o.edge.stop() if o.edge else 0 for o in (contoso, fabrikam)}
    # A sanitizer report or a crash at shutdown shows as a non-zero exit.
    assert codes == {"contoso.test": 0, "fabrikam.test": 0}, \
        f"edges did not exit cleanly: {codes}\n{contoso.edge.log()[-3000:]}\n{fabrikam.edge.log()[-3000:]}"
