#!/usr/bin/python3
"""EdgePool benchmarks, each side by side with Kamailio in the same run.

  bench.py relay  [--out DIR] [--repeats 3] [--seconds 5] [--rates 1000,2000,...]
                  [--relays edged,kamailio-1,kamailio-8]
      MESSAGE relay rate: sipp (TCP) -> relay under test -> mutual TLS ->
      partner (Kamailio, sl_send_reply 200; the same process for every relay).
      Relays: edged; Kamailio as a tm relay with children=tcp_children=1
      (edged's shape); with 8 (Kamailio's default). The relay runs on CPU 0,
      sipp + partner + latency probe on CPU 1.
  bench.py summary DIR/results.json
      The relay summary again, from the raw results of an earlier run.
  bench.py memory [--out DIR] [--connections 1000] [--repeats 3]
      Memory per idle mutual-TLS connection, edged's external listener and
      Kamailio's TLS listener (client certificate required and verified): PSS
      (and RSS) of all the server's processes before and after N idle
      connections, divided by N.

Needs an edged built without sanitizers: $EDGED, else build/edged. Prints a
Markdown summary on stdout, progress on stderr; raw data (configurations,
logs, sipp output and response-time files, results.json, summary.md) go
under --out (default: a new folder under $TMPDIR). Loopback only; every load
step is bounded in calls (rate x seconds) and time (sipp -timeout 30 s, and
a kill after 60 s).
"""
import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

RELAY_CPUS = {0}
LOAD_CPUS = {1}
RELAY_HOST = "127.0.0.1"     # relay under test, both listeners
PARTNER_HOST = "127.0.0.3"   # the partner (sip.fabrikam.test)
SIPP_HOST = "127.0.0.1"
PROBE_INTERVAL = 0.01


def out_dir(arg, what):
    if arg:
        d = Path(arg)
        d.mkdir(parents=True, exist_ok=True)
        return d
    return Path(tempfile.mkdtemp(prefix=f"edgepool-bench-{what}-"))


def prepare(workdir):
    """PKI and a private copy of edged (a rebuild during the run changes nothing)."""
    pki = bl.make_pki(workdir / "pki", ["sip.contoso.test", "sip.fabrikam.test"])
    src = bl.edged_binary()
    dst = workdir / "edged"
    shutil.copy2(src, dst)
    os.environ["EDGED"] = str(dst)
    digest = hashlib.sha256(dst.read_bytes()).hexdigest()[:16]
    head = subprocess.run(["git", "-C", str(bl.REPO), "log", "-1", "--format=%h %cs"],
                          capture_output=True, text=True).stdout.strip()
    return pki, {"edged": src, "edged_sha256": digest, "git_head": head}


def partner(workdir, pki):
    return bl.Kamailio(workdir, "partner", bl.BENCH / "kamailio-partner.cfg", pki=pki,
                       fqdn="sip.fabrikam.test", cpus=LOAD_CPUS,
                       values={"HOST": PARTNER_HOST, "TLS_PORT": bl.free_port(PARTNER_HOST)})


def relay(workdir, pki, name, partner_addr, cpus=RELAY_CPUS):
    """The relay called name ('edged' or 'kamailio-N'); returns (server, internal TCP
    address, external TLS address)."""
    internal = (RELAY_HOST, bl.free_port(RELAY_HOST))
    external = (RELAY_HOST, bl.free_port(RELAY_HOST))
    if name == "edged":
        return (bl.Edged(workdir, name, pki=pki, internal=internal, external=external,
                         partner=partner_addr, cpus=cpus), internal, external)
    # kamailio-W[-ALLOC]: W = children = tcp_children; ALLOC tlsf (default) or qm
    parts = name.split("-")
    workers, allocator = int(parts[1]), (parts[2] if len(parts) > 2 else "tlsf")
    k = bl.Kamailio(workdir, name, bl.BENCH / "kamailio-relay.cfg", pki=pki,
                    fqdn="sip.contoso.test", cpus=cpus, allocator=allocator, shm_mb=4096,
                    values={"HOST": RELAY_HOST, "TCP_PORT": internal[1], "TLS_PORT": external[1],
                            "WORKERS": workers, "PARTNER_HOST": partner_addr[0],
                            "PARTNER_PORT": partner_addr[1]})
    return k, internal, external


# ---- MESSAGE relay ----

class Probe(threading.Thread):
    """One MESSAGE every PROBE_INTERVAL s on its own TCP connection through the
    relay, timed with perf_counter: sipp's response times tick in 4 ms steps."""

    def __init__(self, entry, until):
        super().__init__(daemon=True)
        self.entry, self.until = entry, until
        self.samples_ms, self.errors, self.error_kinds = [], 0, {}

    def _error(self, what):
        self.errors += 1
        self.error_kinds[what] = self.error_kinds.get(what, 0) + 1

    @staticmethod
    def _read_response(sock, buf):
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = buf[:head_end].decode(errors="replace")
                m = re.search(r"^(?:content-length|l)\s*:\s*(\d+)", head, re.I | re.M)
                total = head_end + 4 + (int(m.group(1)) if m else 0)
                if len(buf) >= total:
                    return int(head.split(None, 2)[1]), buf[total:]
            data = sock.recv(65536)
            if not data:
                raise EOFError("relay closed the probe's connection")
            buf += data

    def run(self):
        sock, n = None, 0
        while time.monotonic() < self.until:
            n += 1
            try:
                if sock is None:
                    sock = socket.create_connection(self.entry, timeout=5)
                    local = sock.getsockname()
                    buf = b""
                body = b"probe"
                req = (f"MESSAGE sip:bob@fabrikam.test SIP/2.0\r\n"
                       f"Via: SIP/2.0/TCP {local[0]}:{local[1]};branch=z9hG4bK-probe-{n}-{os.getpid()}\r\n"
                       f"From: <sip:probe@contoso.test>;tag=p{n}\r\nTo: <sip:bob@fabrikam.test>\r\n"
                       f"Call-ID: probe-{n}-{time.time()}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
                       f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
                t0 = time.perf_counter()
                sock.sendall(req)
                while True:
                    status, buf = self._read_response(sock, buf)
                    if status >= 200:
                        break
                if status == 200:
                    self.samples_ms.append((time.perf_counter() - t0) * 1000)
                else:
                    self._error(f"status {status}")
            except Exception as e:   # any failure is counted, the probe goes on
                self._error(f"{type(e).__name__}: {e}"[:120])
                if sock:
                    sock.close()
                sock = None
            time.sleep(PROBE_INTERVAL)
        if sock:
            sock.close()


def sipp_counts(text):
    def last(label):
        found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", text)
        return int(found[-1]) if found else 0
    return last("Successful call"), last("Failed call")


def load_step(stepdir, server, entry, rate, seconds, max_p99):
    """One bounded sipp run (rate x seconds calls) with the probe beside it."""
    stepdir.mkdir(parents=True)
    calls = rate * seconds
    port = bl.free_port(SIPP_HOST)
    cmd = ["sipp", "-sf", str(bl.BENCH / "uac_message.xml"), "-t", "t1", "-i", SIPP_HOST,
           "-p", str(port), "-m", str(calls), "-r", str(rate), "-l", str(min(rate * 3, 15000)),
           "-nostdin", "-timeout", "30s", "-timeout_error", "-recv_timeout", "10000",
           "-trace_rtt", "-rtt_freq", "1", "-trace_err", "-trace_stat", "-fd", "1",
           f"{entry[0]}:{entry[1]}"]
    (stepdir / "sipp.cmd").write_text(" ".join(cmd) + "\n")
    log_off = server.log_path.stat().st_size if server.log_path.exists() else 0
    pids = server.pids()
    cpu0 = bl.cpu_ticks(pids)
    stat0 = bl.cpu_stat()
    load = Path("/proc/loadavg").read_text().split()[0]
    t0 = time.monotonic()
    uac = bl.spawn(cmd, log_path=stepdir / "sipp.out", cwd=stepdir, cpus=LOAD_CPUS)
    probe = Probe(entry, t0 + seconds)
    probe.start()
    try:
        uac.wait(60)
    except subprocess.TimeoutExpired:
        bl.log("    sipp still running after 60 s: killed")
    bl.stop(uac)
    elapsed = time.monotonic() - t0
    cpu = (bl.cpu_ticks(pids) - cpu0) / bl.CLK_TCK
    stat1 = bl.cpu_stat()
    # Each CPU's busy and stolen share of the step: the relay's CPU (0) and
    # the load side's (1); steal is the noise of the shared host.
    machine_cpu = {c: {"busy": round((stat1[c][0] - stat0[c][0]) / bl.CLK_TCK / elapsed, 2),
                       "steal": round((stat1[c][1] - stat0[c][1]) / bl.CLK_TCK / elapsed, 2)}
                   for c in stat1 if c in stat0}
    probe.join(15)
    out = (stepdir / "sipp.out").read_text(errors="replace")
    ok, failed = sipp_counts(out)
    rtts = []
    for f in stepdir.glob("*_rtt.csv"):
        for line in f.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    rtts.append(float(parts[1]))
                except ValueError:
                    pass
    with open(server.log_path, "rb") as fh:
        fh.seek(log_off)
        new_log = fh.read().decode(errors="replace")
    problems = [l for l in new_log.splitlines()
                if re.search(r"\[(warning|error|crit|alert|emerg)\]|\b(ERROR|CRITICAL|ALERT|BUG)\b", l)]
    errfile = next(stepdir.glob("*_errors.log"), None)
    step = {
        "rate": rate, "calls": calls, "ok": ok, "failed": failed,
        "unfinished": max(0, calls - ok - failed), "sipp_exit": uac.returncode,
        "elapsed_s": round(elapsed, 2), "achieved_per_s": round(ok / elapsed, 1),
        "sipp_p50_ms": bl.percentile(rtts, 50), "sipp_p99_ms": bl.percentile(rtts, 99),
        "probe_p50_ms": round(bl.percentile(probe.samples_ms, 50), 3),
        "probe_p99_ms": round(bl.percentile(probe.samples_ms, 99), 3),
        "probe_n": len(probe.samples_ms), "probe_errors": probe.errors,
        "probe_error_kinds": probe.error_kinds,
        "relay_cpu_s": round(cpu, 2),
        "relay_us_per_msg": round(cpu / ok * 1e6, 1) if ok else None,
        "loadavg_before": load, "cpus": machine_cpu, "relay_alive": server.alive(),
        "relay_log_problems": len(problems), "relay_log_sample": problems[:5],
        "sipp_error_sample": (errfile.read_text(errors="replace")[:1500] if errfile else ""),
    }
    bad = step["failed"] + step["unfinished"]
    # Sustained: under 0.1 % of the calls failed or unanswered, at 90 % or
    # more of the rate asked for (sipp -l holds calls back when the relay
    # falls behind; every call then succeeds, but late, at a lower rate).
    step["sustained"] = bad < calls * 0.001 and step["achieved_per_s"] >= 0.9 * rate
    step["pass"] = step["sustained"] and step["sipp_p99_ms"] < max_p99
    return step


def quiesce(server, timeout=20.0):
    """Waits (polling, with a deadline) until the relay uses under 5 % of a CPU
    over 0.5 s: what the last step left behind (Kamailio's tm keeps every
    transaction 5 s after its reply) must not load the next one."""
    def idle():
        pids = server.pids()
        t0, c0 = time.monotonic(), bl.cpu_ticks(pids)
        time.sleep(0.5)
        return (bl.cpu_ticks(pids) - c0) / bl.CLK_TCK < 0.05 * (time.monotonic() - t0)
    try:
        bl.wait_until(idle, timeout, "the relay to go idle", interval=0)
    except RuntimeError:
        bl.log(f"    (the relay was still busy after {timeout} s)")


def started_relay(workdir, pki, name, partner_addr, cpus=RELAY_CPUS, attempts=2):
    """relay() started; a second try on fresh ports if the first fails (a
    port picked free can be taken by another program before the bind)."""
    for attempt in range(1, attempts + 1):
        server, internal, external = relay(workdir / (name if attempt == 1 else f"{name}-try{attempt}"),
                                           pki, name, partner_addr, cpus=cpus)
        try:
            server.start()
            return server, internal, external
        except RuntimeError as e:
            if attempt == attempts:
                raise
            bl.log(f"    {name} did not start ({str(e)[:300]}); trying again")


def relay_ramp(workdir, pki, name, partner_addr, args, rep):
    server, internal, _ = started_relay(workdir / f"r{rep}", pki, name, partner_addr)
    steps = []
    try:
        # Warm-up, not counted: the relay's TLS connection to the partner is
        # opened and used before the first measured step.
        w = load_step(server.dir / "warmup", server, internal, 200, 1, 1e9)
        if not w["sustained"]:
            bl.log(f"    {name}: warm-up failed: {w['ok']}/{w['calls']} ok")
        quiesce(server)
        for rate in args.rates:
            s = load_step(server.dir / f"step-{rate}", server, internal, rate,
                          args.seconds, args.max_p99)
            steps.append(s)
            bl.log(f"    {name:11s} {rate:6d}/s: {s['ok']}/{s['calls']} ok, {s['failed']} failed, "
                   f"{s['unfinished']} unfinished, {s['achieved_per_s']:.0f}/s in {s['elapsed_s']} s; "
                   f"sipp p50/p99 {s['sipp_p50_ms']:.0f}/{s['sipp_p99_ms']:.0f} ms, probe "
                   f"{s['probe_p50_ms']:.2f}/{s['probe_p99_ms']:.2f} ms; relay CPU {s['relay_cpu_s']} s "
                   f"({s['relay_us_per_msg']} us/msg); CPU0/1 busy {s['cpus'][0]['busy']}/"
                   f"{s['cpus'][1]['busy']} steal {s['cpus'][0]['steal']}/{s['cpus'][1]['steal']}; "
                   f"log problems {s['relay_log_problems']}"
                   f"{'' if s['relay_alive'] else '; RELAY DIED'} -> {'pass' if s['pass'] else 'FAIL'}")
            if not s["relay_alive"] or not s["sustained"]:
                break    # above both ceilings: no point in loading further
            quiesce(server)
    finally:
        server.stop()
    return {"steps": steps, "exit": server.proc.returncode}


def ceilings(steps):
    """(highest sustained rate, highest rate passing the full rule). The
    ramp stops at the first step that is not sustained; a step below it that
    only missed the latency rule (one hiccup on this shared host can do it)
    does not hide a higher step that passed."""
    nofail = full = 0
    for s in steps:
        if not s["sustained"]:
            break
        nofail = s["rate"]
        if s["pass"]:
            full = s["rate"]
    return nofail, full


def step_at(steps, rate):
    return next((s for s in steps if s["rate"] == rate), None)


def bench_relay(args):
    workdir = out_dir(args.out, "relay")
    bl.log(f"relay benchmark, raw data in {workdir}")
    pki, build = prepare(workdir)
    info = bl.machine()
    info.update(build)
    p = partner(workdir, pki)
    p.start()
    partner_addr = p.listen[0]
    runs = {name: [] for name in args.relays}
    try:
        for rep in range(args.repeats):
            order = args.relays[rep % len(args.relays):] + args.relays[:rep % len(args.relays)]
            for name in order:
                bl.log(f"  repeat {rep + 1}/{args.repeats}: {name}")
                runs[name].append(relay_ramp(workdir, pki, name, partner_addr, args, rep + 1))
                if not p.alive():
                    raise RuntimeError("the partner died: " + p.log_path.read_text()[-2000:])
    finally:
        p.stop()
    result = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "func"},
              "runs": runs, "partner_log_problems": p.problems()[:20]}
    (workdir / "results.json").write_text(json.dumps(result, indent=1))
    summary = relay_summary(result, workdir)
    (workdir / "summary.md").write_text(summary)
    print(summary, flush=True)


def label(name):
    if name == "edged":
        return "edged (one event loop)"
    parts = name.split("-")
    alloc = parts[2] if len(parts) > 2 else "tlsf"
    return (f"Kamailio tm, children=tcp_children={parts[1]}"
            f"{' (the default)' if parts[1] == '8' else ''}, "
            f"{'qm allocator (the default)' if alloc == 'qm' else alloc + ' allocator (-x/-X ' + alloc + ')'}")


def fmt(x, nd=0):
    return "n/a" if x is None or x != x else f"{x:.{nd}f}"


def relay_summary(result, workdir):
    a, runs = result["args"], result["runs"]
    ref = a["ref_rate"]
    lines = [f"### MESSAGE relay, sipp TCP -> relay -> mutual TLS -> Kamailio partner "
             f"({a['seconds']} s per step, {a['repeats']} repeats)", "",
             f"{result['machine']['model']}, {result['machine']['nproc']} CPUs, "
             f"{result['machine']['date']}; edged {result['machine']['git_head']} "
             f"(sha256 {result['machine']['edged_sha256']}); raw data: {workdir}", "",
             f"Relay on CPU 0; sipp, partner and probe on CPU 1. Rates tried: "
             f"{', '.join(map(str, a['rates']))}/s.", "",
             f"Sustained: < 0.1 % of the calls failed or unanswered, and >= 90 % of the rate "
             f"carried. Latency rule: also sipp's p99 < {a['max_p99']:.0f} ms. Medians of the "
             f"repeats, each repeat's figure in brackets; p50/p99 medians over the repeats, each "
             f"taken at that repeat's ceiling. sipp times in 4 ms ticks; the probe (one MESSAGE "
             f"every 10 ms beside sipp) to the microsecond.", "",
             "| relay | highest sustained rate | sipp p50/p99 ms there | probe p50/p99 ms there "
             f"| highest rate, latency rule | sipp p50/p99 ms there | probe p50/p99 ms at {ref}/s "
             f"| relay CPU us per MESSAGE at {ref}/s |",
             "|---|---|---|---|---|---|---|---|"]
    med = {}
    m = lambda ss, k: bl.median([s[k] for s in ss])  # noqa: E731
    for name, rr in runs.items():
        cs = [ceilings(r["steps"]) for r in rr]
        nf, full = [c[0] for c in cs], [c[1] for c in cs]
        at_nf = [s for s in (step_at(r["steps"], c[0]) for r, c in zip(rr, cs)) if s]
        at_full = [s for s in (step_at(r["steps"], c[1]) for r, c in zip(rr, cs)) if s]
        at_ref = [s for s in (step_at(r["steps"], ref) for r in rr) if s and s["sustained"]]
        med[name] = {"nofail": bl.median(nf), "full": bl.median(full),
                     "us": bl.median([s["relay_us_per_msg"] for s in at_ref]),
                     "us_runs": [s["relay_us_per_msg"] for s in at_ref]}
        lines.append(
            f"| {label(name)} | **{bl.median(nf):.0f}/s** ({', '.join(map(str, nf))}) "
            f"| {fmt(m(at_nf, 'sipp_p50_ms'))} / {fmt(m(at_nf, 'sipp_p99_ms'))} "
            f"| {fmt(m(at_nf, 'probe_p50_ms'), 2)} / {fmt(m(at_nf, 'probe_p99_ms'), 2)} "
            f"| **{bl.median(full):.0f}/s** ({', '.join(map(str, full))}) "
            f"| {fmt(m(at_full, 'sipp_p50_ms'))} / {fmt(m(at_full, 'sipp_p99_ms'))} "
            f"| {fmt(m(at_ref, 'probe_p50_ms'), 2)} / {fmt(m(at_ref, 'probe_p99_ms'), 2)} "
            f"| {fmt(med[name]['us'], 1)} ({', '.join(fmt(x, 1) for x in med[name]['us_runs'])}) |")
    lines.append("")
    if "edged" in runs:
        for other in [n for n in runs if n != "edged"]:
            for key, what in (("nofail", "max sustained rate"),
                              ("full", f"max rate with p99 < {a['max_p99']:.0f} ms")):
                per = []
                for e, k in zip(runs["edged"], runs[other]):
                    ce, ck = ceilings(e["steps"]), ceilings(k["steps"])
                    i = 0 if key == "nofail" else 1
                    per.append(ce[i] / ck[i] if ck[i] else float("nan"))
                lines.append(f"- edged / {other}, {what}: median **{fmt(bl.median(per), 2)}** "
                             f"(per repeat {', '.join(fmt(x, 2) for x in per)})")
            if med["edged"]["us"] and med[other]["us"]:
                lines.append(f"- CPU per MESSAGE at {ref}/s, edged / {other}: "
                             f"**{med['edged']['us'] / med[other]['us']:.2f}**")
        top = max(a["rates"])
        if any(ceilings(r["steps"])[0] == top for r in runs["edged"]):
            lines.append(f"- edged passed the top rate tried ({top}/s) in some repeat: its ceiling "
                         f"is at least that (the load side shares one CPU).")
    lines.append("")
    lines.append("Every step (repeat: rate ok/calls failed unfinished | sipp p50/p99 | relay CPU s "
                 "| log warnings):")
    lines.append("")
    for name, rr in runs.items():
        for i, r in enumerate(rr, 1):
            cells = [f"{s['rate']}: {s['ok']}/{s['calls']} f{s['failed']} u{s['unfinished']} | "
                     f"{fmt(s['sipp_p50_ms'])}/{fmt(s['sipp_p99_ms'])} ms | {s['relay_cpu_s']} s | "
                     f"w{s['relay_log_problems']}{'' if s['relay_alive'] else ' DIED'}"
                     for s in r["steps"]]
            lines.append(f"    {name} #{i}: " + "\n" + "\n".join("      " + c for c in cells))
    problems = {name: [l for r in rr for s in r["steps"] for l in s["relay_log_sample"]]
                for name, rr in runs.items()}
    for name, ls in problems.items():
        if ls:
            lines.append("")
            lines.append(f"First log warnings/errors of {name}:")
            lines += ["    " + l[:300] for l in ls[:6]]
    return "\n".join(lines) + "\n"


# ---- idle TLS memory ----

def hold_connections(addr, n, pki, deadline):
    """n idle mutual-TLS connections as sip.fabrikam.test (a configured
    partner), each proven up by a CRLF CRLF keep-alive answered with CRLF
    (RFC 5626), which also proves the server accepted the client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / "sip.fabrikam.test.pem"), str(pki / "sip.fabrikam.test.key"))
    conns = []
    try:
        for _ in range(n):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(conns)} connections before the deadline")
            s = ctx.wrap_socket(socket.create_connection(addr, timeout=10),
                                server_hostname="sip.contoso.test")
            conns.append(s)
            s.sendall(b"\r\n\r\n")
            got = b""
            while len(got) < 2:
                d = s.recv(2 - len(got))
                if not d:
                    raise RuntimeError(f"connection {len(conns)} closed by the server")
                got += d
            if got != b"\r\n":
                raise RuntimeError(f"keep-alive answered with {got!r}")
    except BaseException:
        for s in conns:
            s.close()
        raise
    return conns


def close_tls(s):
    """close_notify first (edged logs a TLS connection cut without one)."""
    try:
        s.settimeout(2)
        s.unwrap().close()
    except (OSError, ValueError):
        s.close()


def settle(pids, timeout=5.0):
    """Memory once it stops moving (two equal readings 0.2 s apart, or timeout)."""
    deadline = time.monotonic() + timeout
    last = bl.mem_kb(pids)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = bl.mem_kb(pids)
        if now == last:
            break
        last = now
    return last


def memory_once(workdir, pki, name, n):
    server, _, external = started_relay(workdir, pki, name,
                                        (PARTNER_HOST, bl.free_port(PARTNER_HOST)), cpus=None)
    try:
        # One connection first, closed again: the first handshake loads
        # OpenSSL's tables and certificates, which is not per-connection cost.
        for s in hold_connections(external, 1, pki, time.monotonic() + 30):
            close_tls(s)
        pids = server.pids()
        before = settle(pids)
        conns = hold_connections(external, n, pki, time.monotonic() + 120)
        try:
            pids = server.pids()
            after = settle(pids)
            alive_all = all(s.fileno() >= 0 for s in conns)
            # Before closing: the clients close without close_notify, which
            # edged rightly logs as a warning.
            problems = server.problems()
        finally:
            for s in conns:
                close_tls(s)
    finally:
        server.stop()
    return {"server": name, "processes": len(pids), "pss_before_kb": before[0],
            "pss_after_kb": after[0], "rss_before_kb": before[1], "rss_after_kb": after[1],
            "pss_per_conn_kb": round((after[0] - before[0]) / n, 2),
            "rss_per_conn_kb": round((after[1] - before[1]) / n, 2),
            "connections_held": alive_all, "log_problems": problems[:10]}


def bench_memory(args):
    workdir = out_dir(args.out, "memory")
    bl.log(f"idle TLS memory benchmark, raw data in {workdir}")
    pki, build = prepare(workdir)
    info = bl.machine()
    info.update(build)
    runs = {name: [] for name in args.servers}
    for rep in range(args.repeats):
        for name in args.servers:
            r = memory_once(workdir / f"m{rep + 1}", pki, name, args.connections)
            runs[name].append(r)
            bl.log(f"  repeat {rep + 1}: {name}: PSS {r['pss_before_kb']} -> {r['pss_after_kb']} KB, "
                   f"{r['pss_per_conn_kb']} KB/connection (RSS {r['rss_per_conn_kb']}), "
                   f"{r['processes']} processes")
    result = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "func"},
              "runs": runs}
    (workdir / "results.json").write_text(json.dumps(result, indent=1))
    n = args.connections
    lines = [f"### Memory per idle mutual-TLS connection ({n} connections, {args.repeats} repeats)", "",
             f"{info['model']}, {info['nproc']} CPUs, {info['date']}; edged {info['git_head']} "
             f"(sha256 {info['edged_sha256']}); raw data: {workdir}", "",
             "| server | processes | PSS before -> with connections (KB), median run | PSS per connection, "
             "KB: median (runs) | RSS sum per connection, KB: median (runs) |", "|---|---|---|---|---|"]
    med = {}
    for name, rr in runs.items():
        per = [r["pss_per_conn_kb"] for r in rr]
        rss = [r["rss_per_conn_kb"] for r in rr]
        mid = sorted(rr, key=lambda r: r["pss_per_conn_kb"])[len(rr) // 2]
        med[name] = bl.median(per)
        lines.append(f"| {label(name)} | {mid['processes']} | {mid['pss_before_kb']} -> {mid['pss_after_kb']} "
                     f"| **{bl.median(per):.1f}** ({', '.join(f'{x:.1f}' for x in per)}) "
                     f"| {bl.median(rss):.1f} ({', '.join(f'{x:.1f}' for x in rss)}) |")
    lines.append("")
    if "edged" in med:
        verdict = "met" if med["edged"] <= 30 else "NOT met"
        lines.append(f"- Goal: edged <= 30 KB per idle connection: **{verdict}** "
                     f"({med['edged']:.1f} KB).")
        for other in [k for k in med if k != "edged"]:
            lines.append(f"- edged / {other}: **{med['edged'] / med[other]:.2f}**")
    for name, rr in runs.items():
        ls = [l for r in rr for l in r["log_problems"]]
        if ls:
            lines.append(f"- {name} log warnings/errors: " + " | ".join(l[:200] for l in ls[:3]))
    summary = "\n".join(lines) + "\n"
    (workdir / "summary.md").write_text(summary)
    print(summary, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--out")
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--seconds", type=int, default=5)
    r.add_argument("--rates", default="1000,2000,4000,6000,8000,10000,12000,14000,16000,20000,"
                                      "24000,28000,32000,40000")
    r.add_argument("--relays", default="edged,kamailio-1,kamailio-8,kamailio-1-qm",
                   help="edged, kamailio-W (W children and tcp_children, tlsf allocator), "
                        "kamailio-W-qm (Kamailio's default allocator)")
    r.add_argument("--max-p99", type=float, default=50.0,
                   help="the full rule: sipp's p99 (ms) must stay under this")
    r.add_argument("--ref-rate", type=int, default=4000,
                   help="the rate at which latency and CPU per MESSAGE are compared")
    s = sub.add_parser("summary", help="print the relay summary again from a results.json")
    s.add_argument("results")
    m = sub.add_parser("memory")
    m.add_argument("--out")
    m.add_argument("--connections", type=int, default=1000)
    m.add_argument("--repeats", type=int, default=3)
    m.add_argument("--servers", default="edged,kamailio-1,kamailio-1-qm")
    args = ap.parse_args()
    if args.what == "summary":
        path = Path(args.results)
        print(relay_summary(json.loads(path.read_text()), path.parent), end="")
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    os.sched_setaffinity(0, LOAD_CPUS)   # the probe and the TLS clients are load side
    if args.what == "relay":
        args.rates = [int(x) for x in args.rates.split(",")]
        args.relays = args.relays.split(",")
        bench_relay(args)
    else:
        args.servers = args.servers.split(",")
        bench_memory(args)


if __name__ == "__main__":
    main()
