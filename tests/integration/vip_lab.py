"""The balancer lab in network namespaces: two balancers sharing a VIP through
real keepalived (VRRPv3), three edges, a legacy and a modern partner.

    bal1  .1   balancerd + keepalived (priority 150)    VIP .100 (5061, DNS 53)
    bal2  .2   balancerd + keepalived (priority 100)
    edge1 .11  edge2 .12  edge3 .13                     contoso.test's pool
    legacy .21  fabrikam.test's edged: contoso is the VIP, never resolved
    modern .22  litware.test's edged: finds contoso by DNS SRV, asking the VIP
    root  .254  the test: contoso's internal SIP server (a UAS counting what
                arrives), the partners' users (MessageLoad), every status

Everything is on one 198.18.N.0/24 bridge made by netlab.Topology; used by
test_balancer_vip.py and by the failover benchmark (tests/bench/).
"""
import base64
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from edgepool import (REPO, Edge, SipUAS, balancer_config, balancerd_binary, edge_config,
                      terminate, wait_for)
from netlab import Topology

KEY = base64.b64encode(bytes(range(64, 96))).decode()
TIMING = {"probe_interval_ms": 200, "probe_timeout_ms": 100, "gossip_interval_ms": 50,
          "pushpull_interval_s": 2}
HOSTS = {"bal1": 1, "bal2": 2, "edge1": 11, "edge2": 12, "edge3": 13, "legacy": 21,
         "modern": 22}
EDGES = ("edge1", "edge2", "edge3")
BALANCERS = ("bal1", "bal2")
VIP_HOST = 100
SIP, PROXIED, INTERNAL, CLUSTER, STATUS = 5061, 5063, 5060, 7946, 9100
NOTIFY = REPO / "etc" / "keepalived" / "notify.sh"


class Keepalived:
    """keepalived in a namespace, on the configuration `balancerd -K` wrote."""

    def __init__(self, lab, host):
        self.lab, self.host = lab, host
        self.dir = lab.work / host
        self.conf = self.dir / "keepalived.conf"
        self.log_path = self.dir / "keepalived.log"
        self.proc = None

    def config_text(self):
        """The configuration keepalived runs on: what `balancerd -K` writes for
        this host (the failover benchmark overrides it for keepalived's defaults)."""
        out = subprocess.run([balancerd_binary(), "-c", str(self.lab.balancers[self.host].conf),
                              "-K"], capture_output=True, text=True, timeout=10)
        if out.returncode:
            raise RuntimeError(f"balancerd -K: {out.stderr}")
        return out.stdout

    def start(self):
        self.conf.write_text(self.config_text())
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.lab.topo.exec_prefix(self.host) +
            ["keepalived", "--vrrp", "-n", "-l", "-D", "-f", str(self.conf),
             "-p", str(self.dir / "keepalived.pid"), "-r", str(self.dir / "vrrp.pid")],
            stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.vrrp_pid() or self.proc.poll() is not None, 10,
                 f"keepalived's VRRP process on {self.host}")
        assert self.proc.poll() is None, self.log()

    def vrrp_pid(self):
        try:
            pid = int((self.dir / "vrrp.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def kill9(self):
        """SIGKILL to both keepalived processes: nothing is cleaned up (the VIP stays).

        The VRRP child goes first: it asks for a SIGTERM when its parent dies
        (PR_SET_PDEATHSIG), so killing the parent first would sometimes give it
        time for a clean stop (a priority-0 advert, the VIP removed) instead of
        the crash we want."""
        child = self.vrrp_pid()
        if child:
            os.kill(child, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait()
        wait_for(lambda: not self.vrrp_pid(), 5, "keepalived's VRRP process gone")
        self.proc = None
        self._log.close()

    def stop(self):
        if self.proc is None:
            return None
        code = terminate(self.proc, 10)
        child = self.vrrp_pid()
        if child:      # never left behind, even when the parent had to be killed
            os.kill(child, signal.SIGKILL)
        self.proc = None
        self._log.close()
        return code

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Counter(SipUAS):
    """contoso's internal SIP server: answers 200 and delivers each MESSAGE to
    its user once. A copy with the Call-ID and CSeq of one already delivered is a
    retransmission (RFC 3261 8.2.2.2), answered 200 again, not delivered again."""

    def delivered(self):
        """{call_id: copies received}."""
        with self._lock:
            copies = {}
            for r in self.requests:
                if r.start.startswith("MESSAGE "):
                    key = r.header("call-id")
                    copies[key] = copies.get(key, 0) + 1
            return copies


class MessageLoad(threading.Thread):
    """A partner's users: `count` MESSAGEs at `rate` per second to contoso users,
    through the partner's internal listener. A MESSAGE that gets no 200 (an
    error, or nothing within `wait` s) is sent again unchanged, as a SIP UA
    retransmits, until a 200 or `give_up` s after its first sending. Bounded:
    at most count messages, each for at most give_up seconds."""

    def __init__(self, name, target, from_domain, count, rate, wait=2.0, give_up=30.0):
        super().__init__(daemon=True, name=f"load-{name}")
        self.tag = f"{name}-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.target, self.from_domain = target, from_domain
        self.count, self.rate, self.wait, self.give_up = count, rate, wait, give_up
        self.results = {}      # call_id -> (status, attempts, first_sent, answered)
        self.sock, self.buf = None, b""
        self.stop_early = False

    def request(self, i):
        call_id = f"{self.tag}-{i}"
        body = f"message {i}"
        return call_id, (
            f"MESSAGE sip:alice@contoso.test SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {self.target[0]}:5999;branch=z9hG4bK-{call_id}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:bob@{self.from_domain}>;tag=t-{call_id}\r\n"
            f"To: <sip:alice@contoso.test>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()

    def _final(self, call_id, deadline):
        """The final status for call_id, or None at the deadline or a closed connection."""
        while time.monotonic() < deadline:
            while b"\r\n\r\n" in self.buf:
                head, _, rest = self.buf.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^content-length\s*:\s*(\d+)", head)
                length = int(m.group(1)) if m else 0
                if len(rest) < length:
                    break
                self.buf = rest[length:]
                text = head.decode(errors="replace")
                status = int(text.split(" ", 2)[1])
                if status >= 200 and f"Call-ID: {call_id}".lower() in text.lower():
                    return status
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except OSError:
                chunk = b""
            if not chunk:
                self._close()
                return None
            self.buf += chunk
        return None

    def _close(self):
        if self.sock:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _send_once(self, data, call_id):
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.target, timeout=2)
            self.sock.sendall(data)
        except OSError:
            self._close()
            return None
        return self._final(call_id, time.monotonic() + self.wait)

    def run(self):
        start = time.monotonic()
        for i in range(self.count):
            if self.stop_early:
                break
            time.sleep(max(0.0, start + i / self.rate - time.monotonic()))
            call_id, data = self.request(i)
            first, attempts, status = time.monotonic(), 0, None
            while status != 200 and time.monotonic() - first < self.give_up:
                if attempts:
                    time.sleep(0.1)
                attempts += 1
                status = self._send_once(data, call_id)
            self.results[call_id] = (status, attempts, first, time.monotonic())
        self._close()

    def summary(self):
        ok = [c for c, r in self.results.items() if r[0] == 200]
        retried = [c for c, r in self.results.items() if r[1] > 1]
        longest = max((r[3] - r[2] for r in self.results.values()), default=0.0)
        return {"sent": len(self.results), "answered_200": len(ok), "retransmitted": len(retried),
                "longest_s": round(longest, 3)}


class VipLab:
    def __init__(self, work, pki):
        self.work = Path(work)
        self.pki = pki
        self.topo = Topology(HOSTS)
        self.vip = self.topo.ip(VIP_HOST)
        self.edges, self.balancers, self.keepalived, self.partners = {}, {}, {}, {}
        self.uas = None

    def addr(self, h):
        return self.topo.addr[h]

    # ---- configurations ----

    def edge_text(self, h):
        cert, key = self.edge_cert
        a = self.addr(h)
        cluster = {"name": h, "address": a, "port": CLUSTER, "keys": [KEY],
                   "join": [f"{self.addr(e)}:{CLUSTER}" for e in EDGES if e != h], **TIMING}
        return edge_config(
            pool_fqdn="sip.contoso.test", domains=["contoso.test"], ca=self.pki.ca_file,
            cert=cert, key=key, internal=(a, INTERNAL), next_hop=self.uas.addr,
            external=(a, SIP), status_port=STATUS, status_host=a, proxy_listen=(a, PROXIED),
            proxy_from=[self.addr(b) for b in BALANCERS], log_level="info",
            partners=[{"domains": ["fabrikam.test"], "fqdn": "sip.fabrikam.test",
                       "address": self.addr("legacy"), "port": SIP},
                      {"domains": ["litware.test"], "fqdn": "sip.litware.test",
                       "address": self.addr("modern"), "port": SIP}],
            sections={"cluster": cluster})

    def balancer_text(self, h, priority):
        cert, key = self.bal_cert
        a = self.addr(h)
        d = self.work / h
        return balancer_config(
            ca=self.pki.ca_file, cert=cert, key=key, status=(a, STATUS + 90), log_level="info",
            edges=[{"name": e, "fqdn": "sip.contoso.test", "address": self.addr(e),
                    "sip_port": SIP} for e in EDGES],
            health={"interval_ms": 200, "timeout_ms": 500, "rise": 2, "fall": 2},
            dns_listen=[(a, 53), (self.vip, 53)],
            zones=[{"domain": "contoso.test", "pool_name": "sip.contoso.test",
                    "vip_name": "vip.contoso.test", "vip": [self.vip],
                    "ns": ["ns.contoso.test"], "ns_addresses": [self.vip]}],
            vip={"addresses": [self.vip], "forward": [{"port": SIP, "edge_port": PROXIED}],
                 "affinity_idle_s": 1200, "connect_timeout_ms": 500},
            cluster={"name": h, "address": a, "port": CLUSTER, "keys": [KEY],
                     "join": [f"{self.addr(e)}:{CLUSTER}" for e in EDGES], **TIMING},
            extra={"keepalived": {"interface": "eth0", "virtual_router_id": 51,
                                  "priority": priority, "advert_ms": 100,
                                  "state_file": str(d / "balancer.state"),
                                  "notify": f"{NOTIFY} {d / 'vrrp.log'}"}})

    def partner_text(self, h, domain, contoso):
        cert, key = self.partner_certs[h]
        a = self.addr(h)
        dns = None
        allowed = {"domain": "contoso.test", "proxy_fqdn": "sip.contoso.test"}
        if contoso == "vip":
            allowed.update(address=self.vip, port=SIP)
        else:
            dns = (self.vip, 53)
            allowed = {"domain": "contoso.test"}      # no ProxyFqdn: DNS SRV
        return edge_config(
            pool_fqdn=f"sip.{domain}", domains=[domain], ca=self.pki.ca_file, cert=cert, key=key,
            internal=(a, INTERNAL), next_hop=(self.topo.root_addr, 9), external=(a, SIP),
            status_port=STATUS, status_host=a, log_level="info", dns=dns,
            sections={"allowed_domains": [allowed]})

    # ---- life ----

    def build(self):
        self.topo.build()
        self.edge_cert = self.pki.issue("sip.contoso.test", file_name="vip-edges")
        self.bal_cert = self.pki.issue("balancer.contoso.test", file_name="vip-balancers")
        self.partner_certs = {"legacy": self.pki.issue("sip.fabrikam.test", file_name="vip-legacy"),
                              "modern": self.pki.issue("sip.litware.test", file_name="vip-modern")}
        self.uas = Counter(self.topo.root_addr, 5070)
        for h in EDGES:
            self.edges[h] = Edge(self.work, h, self.edge_text(h), [],
                                 status_host=self.addr(h), status_port=STATUS,
                                 wrapper=self.topo.exec_prefix(h))
        for h, prio in zip(BALANCERS, (150, 100)):
            (self.work / h).mkdir(exist_ok=True)
            self.balancers[h] = Edge(self.work / h, "balancerd", self.balancer_text(h, prio), [],
                                     status_host=self.addr(h), status_port=STATUS + 90,
                                     binary=balancerd_binary(), wrapper=self.topo.exec_prefix(h))
            self.keepalived[h] = Keepalived(self, h)
        for h, domain, how in (("legacy", "fabrikam.test", "vip"),
                               ("modern", "litware.test", "dns")):
            self.partners[h] = Edge(self.work, h, self.partner_text(h, domain, how), [],
                                    status_host=self.addr(h), status_port=STATUS,
                                    wrapper=self.topo.exec_prefix(h))

    def start(self):
        for e in self.edges.values():
            e.start()
        for h in BALANCERS:
            self.balancers[h].start()
            self.keepalived[h].start()
        wait_for(lambda: self.vip_holder() == "bal1", 10, "the VIP on bal1")
        for h in BALANCERS:
            wait_for(lambda: self.usable(h) == set(EDGES), 15, f"{h} sees three usable edges")
        for p in self.partners.values():
            p.start()

    def stop(self):
        """Stops everything we started; returns {name: exit code} and the errors met."""
        codes = {}
        for name, p in self.partners.items():
            codes[name] = p.stop()
        for h in BALANCERS:
            if h in self.keepalived:
                self.keepalived[h].stop()
            if h in self.balancers:
                codes[h] = self.balancers[h].stop()
        for name, e in self.edges.items():
            codes[name] = e.stop()
        if self.uas:
            self.uas.stop()
        return codes, self.topo.teardown()

    # ---- what the test looks at ----

    def vip_holder(self):
        """The balancer whose eth0 holds the VIP (None, or 'both' after a keepalived kill -9)."""
        holders = [h for h in BALANCERS if self.topo.has_address(h, self.vip)]
        return holders[0] if len(holders) == 1 else ("both" if holders else None)

    def bal_status(self, h):
        return self.balancers[h].status()

    def usable(self, h):
        return {e["name"] for e in self.bal_status(h)["edges"] if e["usable"]}

    def dns_pool(self, server=None):
        """The pool name's addresses as the balancer DNS at server (the VIP) answers them."""
        out = subprocess.run(["dig", "+time=1", "+tries=1", "+short", f"@{server or self.vip}",
                              "sip.contoso.test", "A"], capture_output=True, text=True, timeout=10)
        return sorted(line for line in out.stdout.split() if line[0].isdigit())

    def edge_of_address(self, address):
        return next(h for h in EDGES if self.addr(h) == address)

