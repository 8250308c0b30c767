#!/usr/bin/python3
"""Failover of EdgePool's balancer pair, against keepalived's defaults, in one run.

  balancer_failover.py [--out DIR] [--repeats 5] [--rate 50] [--wait 0.5]
                       [--systems ours,classic] [--scenarios balancerd,edge,keepalived]
  balancer_failover.py --summary DIR/results.json

The lab is tests/integration/vip_lab.py, imported as it is: two balancers
(balancerd + keepalived, VRRPv3 on a bridge, the VIP 198.18.N.100), three
edges in a gossip cluster, a legacy partner (fabrikam's edged, which knows
contoso only as the VIP) and contoso's internal SIP server (a UAS counting
what it receives), each host in its own network namespace.

Two keepalived configurations take turns within every repeat (the order
alternates with the repeat):

  ours     what `balancerd -K` writes: VRRP adverts every 100 ms, a
           track_file that balancerd's watchdog sets the moment balancerd
           dies (inotify: no polling), and the status check below;
  classic  keepalived's defaults, the usual set-up: advert_int 1, and only a
           vrrp_script (interval 1, fall 2, rise 1) that asks balancerd's
           status (`balancerd -C`); the same VRRP pair otherwise.

Scenarios, each under the legacy partner's load (MESSAGEs at --rate per
second to contoso through the VIP; a MESSAGE without a 200 within --wait s
is sent again unchanged, as a UA does):

  balancerd   kill -9 of balancerd on the VRRP master (ours and classic);
  keepalived  kill -9 of both keepalived processes on the master (ours and
              classic): VRRP's master-down interval, 3 adverts + skew;
  edge        kill -9 of the edge that carries the legacy partner's
              connection (ours only: keepalived plays no part).

Figures, from the kill (CLOCK_REALTIME/monotonic, taken just before it):
VIP on the other balancer's eth0 (an `ip -ts monitor address` event in that
namespace); the edge gone from the DNS answers for sip.contoso.test at the
VIP (a UDP query every 5 ms), and unusable in each balancer's status (every
10 ms); the legacy partner's delivery: the longest gap between two
consecutive 200s around the kill, and the time from the kill to the 200
that ends it; MESSAGEs lost (no 200, or never reached the UAS) and copies
that reached the UAS twice (retransmissions it recognized; "unexplained"
ones: more copies than the partner sent attempts).

Between runs the lab is restored (what was killed restarted, the VIP on one
balancer, keepalived MASTER/BACKUP by its notify log, all edges usable on
both balancers and in DNS), polled with deadlines. Needs root, keepalived,
dig; EDGED / BALANCERD (default build/edged, build/balancerd, copied into
--out first). Markdown on stdout, progress on stderr, raw data (logs,
results.json, summary.md) under --out. Only 198.18.0.0/15 addresses inside
namespaces made here; everything is removed at the end, error or signal.
"""
import argparse
import datetime
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parents[1]
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests" / "integration"))
import benchlib as bl  # noqa: E402  (signals -> SystemExit, so finally: blocks run)

SYSTEMS = ("ours", "classic")
SCENARIOS = ("balancerd", "edge", "keepalived")
POOL_NAME = "sip.contoso.test"


def log(msg):
    bl.log(f"[{time.strftime('%H:%M:%S')}] {msg}")


def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": bl.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


# ---- DNS, as much as a poll needs ----

def dns_query(name, qid):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", 1, 1)


def _skip_name(data, off):
    while True:
        n = data[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def dns_a_records(data, qid):
    """The A records of an answer to query qid, or None if it is not one."""
    if len(data) < 12:
        return None
    rid, flags, qd, an = struct.unpack(">HHHH", data[:8])
    if rid != qid or not flags & 0x8000:
        return None
    off = 12
    for _ in range(qd):
        off = _skip_name(data, off) + 4
    out = []
    for _ in range(an):
        off = _skip_name(data, off)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[off:off + 10])
        off += 10
        if rtype == 1 and rdlen == 4:
            out.append(socket.inet_ntoa(data[off:off + 4]))
        off += rdlen
    return sorted(out)


class DnsPoller(threading.Thread):
    """Asks server for the pool name's A records every `interval` s; keeps
    (monotonic time of the answer, addresses) until stopped or `limit` s."""

    def __init__(self, server, interval=0.005, limit=30.0):
        super().__init__(daemon=True, name="dns-poll")
        self.server, self.interval, self.limit = server, interval, limit
        self.seen, self.stop_now = [], False

    def run(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.2)
        end = time.monotonic() + self.limit
        qid = random.randrange(65536)
        try:
            while not self.stop_now and time.monotonic() < end:
                qid = (qid + 1) & 0xFFFF
                s.sendto(dns_query(POOL_NAME, qid), self.server)
                try:
                    while True:
                        data = s.recv(4096)
                        got = dns_a_records(data, qid)
                        if got is not None:
                            self.seen.append((time.monotonic(), got))
                            break
                except socket.timeout:
                    pass
                time.sleep(self.interval)
        finally:
            s.close()


class StatusPoller(threading.Thread):
    """GET /status of each balancer every `interval` s: (time, host, usable edges)."""

    def __init__(self, lab, hosts, interval=0.01, limit=30.0):
        super().__init__(daemon=True, name="status-poll")
        self.lab, self.hosts, self.interval, self.limit = lab, hosts, interval, limit
        self.seen, self.stop_now = [], False

    def run(self):
        end = time.monotonic() + self.limit
        while not self.stop_now and time.monotonic() < end:
            for h in self.hosts:
                b = self.lab.balancers[h]
                try:
                    with urllib.request.urlopen(
                            f"http://{b.status_host}:{b.status_port}/status", timeout=0.5) as r:
                        st = json.loads(r.read())
                except (OSError, ValueError):
                    continue
                self.seen.append((time.monotonic(), h,
                                  {e["name"]: (e["usable"], e["check"], e["member"])
                                   for e in st["edges"]}))
            time.sleep(self.interval)


class VipPoller(threading.Thread):
    """`ip -n NS -o addr show` in host's namespace every `interval` s until the
    VIP is there: the monotonic time it was first seen (a cross-check of the
    netlink events, late by up to one interval and one `ip` start)."""

    def __init__(self, lab, host, interval=0.02, limit=30.0):
        super().__init__(daemon=True, name="vip-poll")
        self.lab, self.host, self.interval, self.limit = lab, host, interval, limit
        self.seen_at, self.stop_now = None, False

    def run(self):
        end = time.monotonic() + self.limit
        while not self.stop_now and time.monotonic() < end:
            if self.lab.topo.has_address(self.host, self.lab.vip):
                self.seen_at = time.monotonic()
                return
            time.sleep(self.interval)


# ---- the VIP, watched by netlink events ----

class AddrMonitor:
    """`ip -ts monitor address` in each balancer's namespace: (wall time, host,
    'add'|'del', address) for every IPv4 address change."""

    LINE = re.compile(r"^\[(\S+)\]\s+(Deleted\s+)?\d+:\s+\S+\s+inet\s+([\d.]+)/")

    def __init__(self, lab, hosts):
        self.events, self.procs, self.threads = [], [], []
        self._lock = threading.Lock()
        for h in hosts:
            p = subprocess.Popen(["ip", "-ts", "-n", lab.topo.ns[h], "monitor", "address"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.procs.append(p)
            t = threading.Thread(target=self._read, args=(p, h), daemon=True)
            t.start()
            self.threads.append(t)

    def _read(self, proc, host):
        for line in proc.stdout:
            m = self.LINE.match(line)
            if not m:
                continue
            # ip prints local time with microseconds: back to a Unix time.
            when = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
            with self._lock:
                self.events.append((when, host, "del" if m.group(2) else "add", m.group(3)))

    def first(self, host, kind, address, after):
        with self._lock:
            for when, h, k, a in self.events:
                if h == host and k == kind and a == address and when >= after:
                    return when
        return None

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()


# ---- the legacy partner's load ----

def make_load_class(vip_lab):
    class Load(vip_lab.MessageLoad):
        """vip_lab.MessageLoad, with a tag of our own and every attempt recorded."""

        def __init__(self, tag, *args, **kw):
            super().__init__(*args, **kw)
            self.tag = tag
            self.attempts = []           # (start, end, status, call_id), monotonic

        def _send_once(self, data, call_id):
            start = time.monotonic()
            status = super()._send_once(data, call_id)
            self.attempts.append((start, time.monotonic(), status, call_id))
            return status

        def oks(self):
            return sorted(a[1] for a in list(self.attempts) if a[2] == 200)

    return Load


def delivery_figures(load, t0, delivered):
    """The longest gap between consecutive 200s ending after t0, when it ended,
    and what was lost or copied."""
    oks = load.oks()
    gap, resumed, gap_from = 0.0, None, None
    for prev, cur in zip(oks, oks[1:]):
        if cur > t0 and cur - prev > gap:
            gap, resumed, gap_from = cur - prev, cur - t0, prev - t0
    unanswered = [c for c, r in load.results.items() if r[0] != 200]
    never = [c for c, r in load.results.items() if r[0] == 200 and c not in delivered]
    copies = sum(max(0, delivered.get(c, 0) - 1) for c in load.results)
    unexplained = sum(max(0, delivered.get(c, 0) - r[1]) for c, r in load.results.items())
    # The attempts that got no 200, and those around the gap: (start, end,
    # status) in seconds from the kill, to see what the partner went through.
    notable = [(round(st - t0, 4), round(en - t0, 4), status) for st, en, status, _ in load.attempts
               if status != 200 or (gap_from is not None and
                                    gap_from - 0.05 <= en - t0 <= resumed + 0.05)]
    return {"gap_s": gap, "resumed_s": resumed, "gap_from_s": gap_from, "attempts": notable,
            "sent": len(load.results),
            "lost": len(unanswered) + len(never), "unanswered": len(unanswered),
            "never_delivered": len(never), "copies": copies, "unexplained_copies": unexplained,
            "retransmitted": sum(1 for r in load.results.values() if r[1] > 1),
            "attempts_failed": sum(1 for a in load.attempts if a[2] != 200)}


# ---- the bench ----

class Bench:
    def __init__(self, args, out):
        import vip_lab
        self.vl = vip_lab
        self.args, self.out = args, out
        self.Load = make_load_class(vip_lab)
        self.lab = None
        self.monitor = None
        self.system = None
        self.nload = 0
        self.results = []              # one dict per run

    # -- keepalived configurations --

    def keepalived_class(self, system):
        if system == "ours":
            return self.vl.Keepalived

        class Classic(self.vl.Keepalived):
            """keepalived's defaults: advert_int 1, the vrrp_script (interval 1,
            fall 2) that asks balancerd's status, no track_file."""

            def config_text(self):
                text = super().config_text()
                new = re.sub(r"(?m)^  advert_int .*$", "  advert_int 1", text)
                new = re.sub(r"(?ms)^track_file balancerd_state \{.*?^\}\n", "", new)
                new = re.sub(r"(?ms)^  track_file \{.*?^  \}\n", "", new)
                if "track_file" in new or "advert_int 1\n" not in new or \
                        not re.search(r"interval 1\n\s+timeout 1\n\s+fall 2", new):
                    raise RuntimeError(f"balancerd -K's output changed shape:\n{text}")
                return "# keepalived defaults for the failover benchmark (advert_int 1,\n" \
                       "# vrrp_script only), derived from balancerd -K.\n" + new
        return Classic

    def use_system(self, system):
        if self.system == system:
            return
        log(f"keepalived: switching to {system}")
        lab = self.lab
        self.restore()        # no stale VIP left by a killed keepalived
        for h in self.vl.BALANCERS:
            if lab.keepalived.get(h) is not None:
                lab.keepalived[h].stop()
        wait_until(lambda: lab.vip_holder() is None, 10, "the VIP released by both")
        cls = self.keepalived_class(system)
        for h in self.vl.BALANCERS:
            lab.keepalived[h] = cls(lab, h)
            lab.keepalived[h].start()
        self.system = system
        self.restore()

    # -- the lab, as it must be before every run --

    def vrrp_state(self, h):
        path = self.lab.work / h / "vrrp.log"
        try:
            lines = path.read_text().split()
        except OSError:
            return None
        return lines[-1] if lines else None

    def settled(self):
        lab, vl = self.lab, self.vl
        holder = lab.vip_holder()
        if holder not in vl.BALANCERS:
            return False
        other = next(h for h in vl.BALANCERS if h != holder)
        if self.vrrp_state(holder) != "MASTER" or self.vrrp_state(other) != "BACKUP":
            return False
        try:
            for h in vl.BALANCERS:
                if lab.usable(h) != set(vl.EDGES):
                    return False
        except OSError:
            return False
        return lab.dns_pool() == sorted(lab.addr(e) for e in vl.EDGES)

    def keep_log(self, proc_owner, tag):
        p = Path(proc_owner.log_path)
        if p.exists():
            shutil.copy(p, p.with_name(f"{p.name}.{tag}"))

    def restore(self):
        lab, vl = self.lab, self.vl
        for name, e in lab.edges.items():
            if not e.running():
                e.start()
        for h in vl.BALANCERS:
            if not lab.balancers[h].running():
                lab.balancers[h].start()
            if lab.keepalived[h].proc is None:
                lab.keepalived[h].start()
        for p in lab.partners.values():
            if not p.running():
                p.start()
        wait_until(self.settled, 30, "the lab settled (one VIP holder MASTER, the other BACKUP, "
                   "three usable edges on both, DNS with all three)", interval=0.05)

    # -- one run --

    def start_load(self):
        self.nload += 1
        a = self.args
        load = self.Load(f"bench{os.getpid()}-{self.nload}", "legacy",
                         (self.lab.addr("legacy"), self.vl.INTERNAL), "fabrikam.test",
                         int(a.rate * a.max_load_s), a.rate, wait=a.wait, give_up=a.give_up)
        load.start()
        wait_until(lambda: len(load.oks()) >= a.rate * a.warmup, 15, "the load under way")
        return load

    def finish_load(self, load, since):
        """Lets the load run --after s of steady delivery past `since` (monotonic), then stops it."""
        a = self.args
        need = a.rate * a.after
        try:
            wait_until(lambda: sum(1 for t in load.oks() if t > since) >= need or
                       not load.is_alive(), a.after + 20, "delivery after the fault")
        except RuntimeError as e:
            log(f"  {e}")
        load.stop_early = True
        load.join(a.give_up + 10)
        if load.is_alive():
            raise RuntimeError("the load did not end")

    def run_one(self, system, scenario, rep):
        lab, vl, a = self.lab, self.vl, self.args
        tag = f"{system}-{scenario}-{rep}"
        self.restore()
        master = lab.vip_holder()
        other = next(h for h in vl.BALANCERS if h != master)
        res = {"system": system, "scenario": scenario, "repeat": rep, "master": master}
        load = self.start_load()
        status = dns = vip = None
        try:
            if scenario != "edge":
                vip = VipPoller(lab, other)
                vip.start()
            else:
                per_edge = lab.bal_status(master)["proxy"]["per_edge"]
                victim = max(per_edge, key=per_edge.get)
                res["victim"], res["per_edge"] = victim, per_edge
                dns = DnsPoller((lab.vip, 53), interval=a.dns_interval)
                status = StatusPoller(lab, vl.BALANCERS)
                dns.start()
                status.start()
                wait_until(lambda: dns.seen and len(status.seen) >= 2, 5, "the pollers")
            t0w, t0 = time.time(), time.monotonic()
            if scenario == "balancerd":
                lab.balancers[master].proc.kill()
            elif scenario == "keepalived":
                # The VRRP child first: killed after its parent, it may get the
                # SIGTERM it asked for on the parent's death and stop cleanly.
                lab.keepalived[master].kill9()
            else:
                lab.edges[victim].proc.kill()
            kill_s = time.monotonic() - t0
            if scenario in ("balancerd", "keepalived"):
                wait_until(lambda: vip.seen_at, 15, "the VIP on the other balancer")
                res["vip_poll_s"] = vip.seen_at - t0
                ev = wait_until(lambda: self.monitor.first(other, "add", lab.vip, t0w), 5,
                                "the VIP's netlink event")
                res["vip_move_s"] = ev - t0w
                gone = self.monitor.first(master, "del", lab.vip, t0w)
                res["vip_left_master_s"] = None if gone is None else gone - t0w
                since = t0 + res["vip_poll_s"]
            else:
                addr = lab.addr(victim)
                wait_until(lambda: any(t > t0 and addr not in got for t, got in dns.seen), 15,
                           "the dead edge out of DNS")
                res["dns_out_s"] = next(t for t, got in dns.seen if t > t0 and addr not in got) - t0

                def unusable(h):
                    for t, host, edges in list(status.seen):
                        if t > t0 and host == h and not edges[victim][0]:
                            return t - t0, edges[victim]
                    return None
                for h in vl.BALANCERS:
                    got = wait_until(lambda: unusable(h), 15, f"{victim} unusable on {h}")
                    res[f"unusable_{'master' if h == master else 'other'}_s"] = got[0]
                    res[f"unusable_{'master' if h == master else 'other'}_view"] = got[1]
                res["unusable_both_s"] = max(res["unusable_master_s"], res["unusable_other_s"])
                # The dig of the brief, once, as a cross-check of our own queries.
                res["dig_after"] = lab.dns_pool()
                since = t0 + max(res["dns_out_s"], res["unusable_both_s"])
                time.sleep(0.3)                  # the DNS answers must stay without it
                res["dns_back_in"] = any(t > since and addr in got for t, got in dns.seen)
            self.finish_load(load, since)
        finally:
            load.stop_early = True
            for poller in (dns, status, vip):
                if poller:
                    poller.stop_now = True
                    poller.join(2)
        res["kill_call_s"] = kill_s
        res.update(delivery_figures(load, t0, lab.uas.delivered()))
        # Clean up what was killed (its log kept), restored by the next run.
        if scenario == "balancerd":
            b = lab.balancers[master]
            b.proc.wait(10)
            self.keep_log(b, tag)
            b.stop()
        elif scenario == "edge":
            e = lab.edges[victim]
            e.proc.wait(10)
            self.keep_log(e, tag)
            e.stop()
        return res

    def describe(self, r):
        bits = [f"{k}={r[k]:.3f}" for k in ("vip_move_s", "dns_out_s", "unusable_both_s",
                                           "resumed_s", "gap_s") if r.get(k) is not None]
        bits.append(f"lost={r['lost']} copies={r['copies']} sent={r['sent']}")
        return " ".join(bits)

    def run(self):
        a = self.args
        pki = __import__("edgepool").PKI(self.out / "pki")
        self.lab = self.vl.VipLab(self.out / "lab", pki)
        (self.out / "lab").mkdir(exist_ok=True)
        try:
            log(f"lab: building (subnet {self.lab.topo.net}.0/24)")
            self.lab.build()
            self.lab.start()
            self.system = "ours"
            self.monitor = AddrMonitor(self.lab, self.vl.BALANCERS)
            self.restore()
            log("lab: up")
            for rep in range(1, a.repeats + 1):
                order = list(a.systems) if rep % 2 else list(reversed(a.systems))
                for system in order:
                    self.use_system(system)
                    for scenario in a.scenarios:
                        if system != "ours" and scenario == "edge":
                            continue          # keepalived plays no part in it
                        r = self.run_one(system, scenario, rep)
                        self.results.append(r)
                        log(f"repeat {rep} {system} {scenario}: {self.describe(r)}")
                        self.save()
            self.use_system("ours")
        finally:
            if self.monitor:
                self.monitor.stop()
            codes, errors = self.lab.stop()
            errors += [f"left behind: {x}" for x in self.lab.topo.leftovers()]
            for e in errors:
                log(f"teardown: {e}")
            self.teardown_errors = errors

    def save(self):
        (self.out / "results.json").write_text(json.dumps(
            {"machine": machine(), "args": vars(self.args), "runs": self.results}, indent=1,
            default=list))


def wait_until(predicate, timeout, what, interval=0.02):
    return bl.wait_until(predicate, timeout, what, interval)


def machine():
    m = {"nproc": os.cpu_count(), "kernel": os.uname().release,
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for name, cmd in (("keepalived", ["keepalived", "--version"]),):
        r = subprocess.run(cmd, capture_output=True, text=True)
        m[name] = (r.stdout + r.stderr).splitlines()[0].strip() if (r.stdout + r.stderr) else "?"
    for name in ("edged", "balancerd"):
        path = os.environ.get(name.upper())
        if path and os.path.exists(path):
            m[name] = path
            m[name + "_sha256"] = subprocess.run(["sha256sum", path], capture_output=True,
                                                 text=True).stdout.split()[0][:16]
    return m


# ---- the summary ----

FIGURES = [
    # (key, label, unit scale, scenarios)
    ("vip_move_s", "VIP on the other balancer (netlink event)", ("balancerd", "keepalived")),
    ("vip_poll_s", "VIP seen there by `ip addr` polling (20 ms)", ("balancerd", "keepalived")),
    ("vip_left_master_s", "VIP removed from the old master (-: never; a crashed keepalived "
     "leaves it)", ("balancerd", "keepalived")),
    ("dns_out_s", "dead edge out of the DNS answers at the VIP", ("edge",)),
    ("unusable_master_s", "dead edge unusable in the master's status", ("edge",)),
    ("unusable_both_s", "dead edge unusable in both balancers' status", ("edge",)),
    ("resumed_s", "legacy delivery resumed (kill -> the 200 that ends the longest gap)",
     SCENARIOS),
    ("gap_s", "legacy delivery: longest gap between two 200s", SCENARIOS),
]
TITLES = {"balancerd": "kill -9 balancerd on the master",
          "keepalived": "kill -9 keepalived (both processes) on the master",
          "edge": "kill -9 the legacy partner's edge"}


def fmt(s, scale=1.0, digits=3):
    if s is None:
        return "-"
    return (f"**{s['median'] * scale:.{digits}f}** ({s['min'] * scale:.{digits}f}-"
            f"{s['max'] * scale:.{digits}f})")


def summarize(data):
    runs = data["runs"]
    m = data.get("machine", {})
    a = data.get("args", {})
    out = [f"## Balancer failover against keepalived's defaults "
           f"({m.get('date', '?')}, {m.get('keepalived', 'keepalived ?')})", "",
           f"Medians of {a.get('repeats', '?')} repeats, (min-max), seconds from the kill; "
           f"legacy load {a.get('rate', '?')} MESSAGE/s, retransmitted after "
           f"{a.get('wait', '?')} s without a 200.", ""]
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in runs)]
    for scenario in SCENARIOS:
        rows = [r for r in runs if r["scenario"] == scenario]
        if not rows:
            continue
        present = [s for s in systems if any(r["system"] == s for r in rows)]
        out += [f"**{TITLES[scenario]}**", "",
                "| figure | " + " | ".join(present) +
                (" | ours / classic |" if len(present) == 2 else " |"),
                "|---|" + "---|" * len(present) + ("---|" if len(present) == 2 else "")]
        for key, label, where in FIGURES:
            if scenario not in where:
                continue
            cells, meds = [], []
            for s in present:
                st = stats([r.get(key) for r in rows if r["system"] == s])
                cells.append(fmt(st))
                meds.append(st["median"] if st else None)
            ratio = ""
            if len(present) == 2:
                ratio = f" {meds[0] / meds[1]:.2f} |" if meds[0] is not None and meds[1] else " - |"
            out.append(f"| {label} | " + " | ".join(cells) + " |" + ratio)
        if scenario == "edge":
            # What the master's status showed when the edge first read unusable:
            # its own check (down) or the cluster's view (member gone).
            cells = [", ".join(f"{r['unusable_master_view'][1]}/{r['unusable_master_view'][2]}"
                               for r in rows if r["system"] == s and r.get("unusable_master_view"))
                     for s in present]
            out.append("| check / member when first unusable, master (per run) | " +
                       " | ".join(cells) + " |" + (" |" if len(present) == 2 else ""))
        for key, label in (("lost", "MESSAGEs lost (per run)"),
                           ("copies", "copies that reached the UAS again (per run)"),
                           ("unexplained_copies", "copies beyond the partner's attempts"),
                           ("sent", "MESSAGEs sent (per run)")):
            cells = [", ".join(str(r[key]) for r in rows if r["system"] == s) for s in present]
            out.append(f"| {label} | " + " | ".join(cells) + " |" + (" |" if len(present) == 2 else ""))
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--systems", default="ours,classic")
    ap.add_argument("--scenarios", default="balancerd,edge,keepalived")
    ap.add_argument("--rate", type=float, default=50.0, help="legacy MESSAGEs per second")
    ap.add_argument("--wait", type=float, default=0.5,
                    help="seconds without a 200 before a MESSAGE is sent again")
    ap.add_argument("--give-up", type=float, default=10.0,
                    help="seconds after which a MESSAGE without a 200 counts as lost")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="seconds of delivery before the fault")
    ap.add_argument("--after", type=float, default=1.0,
                    help="seconds of steady delivery after the fault's figures before the load stops")
    ap.add_argument("--max-load-s", type=float, default=60.0,
                    help="a run's load never exceeds this many seconds' worth of MESSAGEs")
    ap.add_argument("--dns-interval", type=float, default=0.005)
    ap.add_argument("--summary", help="print the summary again from a results.json, and stop")
    args = ap.parse_args()
    if args.summary:
        print(summarize(json.loads(Path(args.summary).read_text())))
        return 0
    args.systems = [s for s in args.systems.split(",") if s]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [s for s in args.systems if s not in SYSTEMS] + \
          [s for s in args.scenarios if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown: {bad}")
    if os.geteuid() != 0:
        print("balancer_failover.py needs root (network namespaces, keepalived)", file=sys.stderr)
        return 2
    for tool in ("keepalived", "ip", "dig"):
        if not shutil.which(tool):
            print(f"balancer_failover.py needs {tool}", file=sys.stderr)
            return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="edgepool-balancer-failover-"))
    out.mkdir(parents=True, exist_ok=True)
    # One copy of each binary for the whole run (a rebuild during it changes
    # nothing); keepalived runs `balancerd -C` from this copy as its track script.
    (out / "bin").mkdir(exist_ok=True)
    for name in ("edged", "balancerd"):
        src = os.environ.get(name.upper()) or str(REPO / "build" / name)
        if not os.access(src, os.X_OK):
            print(f"no {name} at {src}: run make, or set {name.upper()}", file=sys.stderr)
            return 2
        dst = out / "bin" / name
        if Path(src).resolve() != dst.resolve():
            shutil.copy(src, dst)
        os.chmod(dst, 0o555)
        os.environ[name.upper()] = str(dst)
    started = time.monotonic()
    bench = Bench(args, out)
    rc = 0
    try:
        bench.run()
    finally:
        bench.save()
    if bench.teardown_errors:
        rc = 1
    text = summarize(json.loads((out / "results.json").read_text()))
    text += f"\nRaw data: {out}; run time {time.monotonic() - started:.0f} s.\n"
    (out / "summary.md").write_text(text)
    print(text)
    return rc


if __name__ == "__main__":
    sys.exit(main())
