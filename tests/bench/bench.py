#!/usr/bin/python3
"""EdgePool benchmarks, each side by side with Kamailio in the same run.

  bench.py relay  [--repeats 3] [--seconds 5] [--rates 1000,2000,...]
      MESSAGE relay rate: sipp (TCP) -> relay -> mutual TLS -> partner that
      answers 200 (Kamailio, the same for every relay). The relay is edged,
      then Kamailio (tm) with one TCP worker, then with four. Relay on CPU 0;
      sipp and the partner on CPU 1. For each relay: the highest rate with
      under 0.1 % failed calls and a p99 response time under 50 ms, timed by
      a probe that sends single MESSAGEs during each step.
  bench.py memory [--connections 1000]
      Memory per idle mutual-TLS connection: PSS of the server's processes
      before and after N idle connections, divided by N.

Needs EDGED (an edged built without sanitizers, e.g. build/edged). Prints a
Markdown report; raw sipp output stays in the work folder it names. All
traffic is on loopback; every load step is bounded in calls and time.
"""
import argparse
import os
import resource
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from edgepool import (PKI, Edge, Kamailio, SipClient, Sipp, edge_config,  # noqa: E402
                      free_port, sip_request)

BENCH = Path(__file__).resolve().parent
SCENARIO = BENCH / "uac_message.xml"
RELAY_CPU = ["taskset", "-c", "0"]
LOAD_CPU = ["taskset", "-c", "1"]


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class Setup:
    """PKI, the partner, and a way to start either relay."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.pki = PKI(self.dir / "pki")
        self.contoso = self.pki.issue("sip.contoso.test")
        self.fabrikam = self.pki.issue("sip.fabrikam.test")
        self.partner = Kamailio(self.dir, BENCH / "kamailio-answer.cfg", name="partner",
                                tls=("127.0.0.3", free_port("127.0.0.3")),
                                tcp=("127.0.0.3", free_port("127.0.0.3")),
                                cert=self.fabrikam[0], key=self.fabrikam[1], ca=self.pki.ca_file,
                                wrapper=LOAD_CPU)

    def edged(self):
        internal = ("127.0.0.1", free_port())
        external = ("127.0.0.1", free_port())
        text = edge_config(pool_fqdn="sip.contoso.test", domains=["contoso.test"],
                           ca=self.pki.ca_file, cert=self.contoso[0], key=self.contoso[1],
                           internal=internal, next_hop=("127.0.0.1", free_port()),
                           external=external, log_level="notice",
                           partners=[{"domains": ["fabrikam.test"], "fqdn": "sip.fabrikam.test",
                                      "address": self.partner.tls[0],
                                      "port": self.partner.tls[1]}])
        edge = Edge(self.dir, "edged", text, [internal, external], wrapper=RELAY_CPU)
        return edge, internal

    def kamailio(self, workers=1):
        tcp = ("127.0.0.1", free_port())
        k = Kamailio(self.dir, BENCH / "kamailio-relay.cfg", name=f"relay{workers}",
                     tls=("127.0.0.1", free_port()), tcp=tcp, cert=self.contoso[0],
                     key=self.contoso[1], ca=self.pki.ca_file, wrapper=RELAY_CPU,
                     shm_mb=256, pkg_mb=32,
                     values={"@PARTNER_HOST@": self.partner.tls[0],
                             "@PARTNER_PORT@": str(self.partner.tls[1]),
                             "@WORKERS@": str(workers)})
        return k, tcp


class LatencyProbe(threading.Thread):
    """Times single MESSAGEs through the relay while sipp loads it: sipp's own
    response times tick in 4 ms steps, too coarse for a relay that answers
    in well under a millisecond. One request every PROBE_INTERVAL seconds, so
    the probe adds next to no load of its own."""

    PROBE_INTERVAL = 0.01

    def __init__(self, entry, until):
        super().__init__(daemon=True)
        self.entry, self.until = entry, until
        self.samples_ms = []
        self.errors = 0

    def run(self):
        c = SipClient(*self.entry)
        try:
            n = 0
            while time.monotonic() < self.until:
                n += 1
                req = sip_request("MESSAGE", "sip:bob@fabrikam.test", from_uri="sip:probe@contoso.test",
                                  to_uri="sip:bob@fabrikam.test", call_id=f"probe-{n}-{time.time()}",
                                  body="probe")
                t0 = time.perf_counter()
                c.send(req)
                status = c.recv_final().status
                if status == 200:
                    self.samples_ms.append((time.perf_counter() - t0) * 1000)
                else:
                    self.errors += 1
                time.sleep(self.PROBE_INTERVAL)
        except (OSError, EOFError):
            self.errors += 1
        finally:
            c.close()


def load_step(workdir, entry, rate, seconds):
    """One bounded sipp run with a latency probe beside it.
    Returns (calls, ok, failed, achieved rate, p50 ms, p99 ms)."""
    calls = rate * seconds
    step_dir = Path(tempfile.mkdtemp(prefix=f"step-{rate}-", dir=workdir))
    uac = Sipp(step_dir, str(SCENARIO), local=("127.0.0.1", free_port()), remote=entry,
               calls=calls, rate=rate, timeout=seconds + 20, wrapper=LOAD_CPU,
               extra=["-key", "from_user", "alice", "-key", "from_domain", "contoso.test",
                      "-key", "to_user", "bob", "-key", "to_domain", "fabrikam.test",
                      "-l", str(rate * 4)])
    start = time.monotonic()
    uac.start()
    probe = LatencyProbe(entry, start + seconds)
    probe.start()
    _, ok, failed = uac.wait(seconds + 60)
    elapsed = time.monotonic() - start
    probe.join(30)
    return (calls, ok, failed, ok / elapsed, percentile(probe.samples_ms, 50),
            percentile(probe.samples_ms, 99))


def ramp(workdir, entry, rates, seconds, max_p99):
    """Rising rates until a step fails; returns {rate: step} of the steps run.
    A step passes when under 0.1 % of its calls fail or go unanswered and the
    probe's p99 stays under max_p99 ms: a relay that only keeps up by
    queueing for seconds has not kept up."""
    steps = {}
    for rate in rates:
        calls, ok, failed, achieved, p50, p99 = load_step(workdir, entry, rate, seconds)
        passed = failed <= calls * 0.001 and ok >= calls * 0.999 and p99 < max_p99
        steps[rate] = (passed, p50, p99)
        print(f"    rate {rate:6d}/s: {ok}/{calls} ok, {failed} failed, "
              f"p50 {p50:.2f} ms, p99 {p99:.2f} ms {'pass' if passed else 'FAIL'}", flush=True)
        if not passed:
            break
    return steps


RELAYS = ("edged", "kamailio-1", "kamailio-4")


def ceiling(steps):
    return max((r for r, (passed, _, _) in steps.items() if passed), default=0)


def bench_relay(args):
    workdir = Path(tempfile.mkdtemp(prefix="edgepool-bench-relay-"))
    setup = Setup(workdir)
    setup.partner.start()
    runs = {name: [] for name in RELAYS}
    try:
        for rep in range(args.repeats):
            for name in RELAYS:
                print(f"  repeat {rep + 1}, {name}:", flush=True)
                relay, entry = (setup.edged() if name == "edged"
                                else setup.kamailio(int(name.split("-")[1])))
                try:
                    relay.start()
                    runs[name].append(ramp(workdir, entry, args.rates, args.seconds,
                                           args.max_p99))
                finally:
                    relay.stop()
    finally:
        setup.partner.stop()

    common = args.latency_rate
    print(f"\nMESSAGE relay, TCP in -> mutual TLS out ({args.seconds} s per step, "
          f"{args.repeats} repeats, medians; work folder {workdir})\n")
    print(f"| relay | highest rate, < 0.1 % failures, p99 < {args.max_p99:.0f} ms | runs | p50 / p99 ms at {common}/s "
          f"| p50 / p99 ms at the highest rate |")
    print("|---|---|---|---|---|")
    for name in RELAYS:
        tops = [ceiling(s) for s in runs[name]]
        at_common = [s[common] for s in runs[name] if common in s and s[common][0]]
        at_top = [s[ceiling(s)] for s in runs[name] if ceiling(s)]

        def lat(samples):
            if not samples:
                return "n/a"
            return (f"{statistics.median(x[1] for x in samples):.2f} / "
                    f"{statistics.median(x[2] for x in samples):.2f}")
        print(f"| {name} | {statistics.median(tops):.0f}/s | {', '.join(map(str, tops))} "
              f"| {lat(at_common)} | {lat(at_top)} |")
    for other in RELAYS[1:]:
        ratios = [ceiling(e) / ceiling(k) if ceiling(k) else float("nan")
                  for e, k in zip(runs["edged"], runs[other])]
        print(f"\nRatio edged / {other} per repeat: {', '.join(f'{r:.2f}' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f}")
    print(f"\n(The top rate tried was {max(args.rates)}/s.)")


def pss_kb(pids):
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total


def hold_connections(addr, n, ca, cert, key, server_name):
    """n idle mutual-TLS connections, each proven up by a CRLF keep-alive round trip."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.check_hostname = False
    conns = []
    for _ in range(n):
        s = ctx.wrap_socket(socket.create_connection(addr, timeout=10), server_hostname=server_name)
        s.sendall(b"\r\n\r\n")
        if s.recv(2) != b"\r\n":
            raise RuntimeError("no keep-alive answer")
        conns.append(s)
    return conns


def measure_memory(pids_of, addr, n, setup, server_name):
    before = pss_kb(pids_of())
    conns = hold_connections(addr, n, setup.pki.ca_file, setup.fabrikam[0], setup.fabrikam[1],
                             server_name)
    after = pss_kb(pids_of())
    for s in conns:
        s.close()
    return before, after, (after - before) / n


def bench_memory(args):
    workdir = Path(tempfile.mkdtemp(prefix="edgepool-bench-memory-"))
    setup = Setup(workdir)
    n = args.connections
    rows = []
    edge, _ = setup.edged()
    edge.wrapper = []
    try:
        edge.start()
        ext = next(p for p in edge.ports if p != edge.ports[0])
        rows.append(("edged",) + measure_memory(lambda: [edge.proc.pid], ext, n, setup,
                                                "sip.contoso.test"))
    finally:
        edge.stop()
    k, _ = setup.kamailio()
    k.wrapper = []
    try:
        k.start()
        rows.append(("kamailio",) + measure_memory(k.pids, k.tls, n, setup, "sip.contoso.test"))
    finally:
        k.stop()
    print(f"\nMemory per idle mutual-TLS connection ({n} connections, PSS of all the "
          f"server's processes; work folder {workdir})\n")
    print("| server | PSS before (KB) | PSS with connections (KB) | per connection (KB) |")
    print("|---|---|---|---|")
    for name, before, after, per in rows:
        print(f"| {name} | {before} | {after} | {per:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--seconds", type=int, default=5)
    r.add_argument("--rates", default="1000,2000,3000,4000,6000,8000,10000,12000,14000,16000,"
                                      "18000,20000,24000")
    r.add_argument("--max-p99", type=float, default=50.0,
                   help="a step passes only if the probe's p99 (ms) stays under this")
    r.add_argument("--latency-rate", type=int, default=2000,
                   help="the rate at which every relay's latency is compared")
    m = sub.add_parser("memory")
    m.add_argument("--connections", type=int, default=1000)
    args = ap.parse_args()
    if not os.environ.get("EDGED"):
        sys.exit("set EDGED to an edged built without sanitizers (make bench does)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (16384, 16384))
    os.sched_setaffinity(0, {1})   # the probe and the clients belong to the load side
    if args.what == "relay":
        args.rates = [int(x) for x in args.rates.split(",")]
        bench_relay(args)
    else:
        bench_memory(args)


if __name__ == "__main__":
    main()
