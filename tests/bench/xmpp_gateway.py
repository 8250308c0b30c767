#!/usr/bin/python3
"""SIP MESSAGE -> XMPP through edged's gateway to Prosody, side by side with
Prosody's own acceptance rate on one server-to-server stream (issue 6), and
memory per idle authenticated s2s stream, edged against Prosody.

  xmpp_gateway.py [--out DIR] [--repeats 3] [--seconds 8] [--rates 500,1000,2000,4000]
                  [--fractions 0.8,0.9,1.0,1.2] [--overload 1.5] [--max-p99 500]
                  [--blast 30000] [--blasts 3] [--blasts-after 2] [--streams 500]
                  [--only rate|memory] [--arms direct,gateway]
  xmpp_gateway.py --summary DIR/results.json

The lab, reused from tests/integration: a real Prosody 0.12 (prosodylab.Prosody)
serving fabrikam.test on 127.0.0.2 with the user juliet, certificates of a
test CA (edgepool.PKI), edged's configuration from edgepool.edge_config: the
organization contoso.test and its XMPP gateway with the partner fabrikam.test
(Federated, reached at Prosody's s2s port by address). No BIND: nothing needs
a name resolved (edged's resolver is a loopback port where nothing answers).
Prosody logs at "info", its usual level (the lab's "debug" would cost it more
than the stanzas do). Fresh servers for every repeat.

The receiver, the same for both arms: juliet on Prosody's c2s port, a raw
client of this script in its own process (STARTTLS, SASL PLAIN, bind,
available presence) that only reads and counts, and ACKs at once
(TCP_QUICKACK: Prosody writes with Nagle on, and a delayed ACK would hold its
next write up to 40 ms). Every body is "xgw RUN SEQ <send time>", so each
message is counted once per run (copies and gaps seen) and timed end to end.

Two arms on the same Prosody and receiver, in an order alternating with the
repeat:

  direct   Prosody's own acceptance: a raw s2s sender of this script
           (northwind.test; STARTTLS, SASL EXTERNAL with a certificate of the
           test CA: the kind of stream edged opens), Nagle on as in Prosody's
           and edged's own s2s connections. A "blast" writes --blast chat
           messages at once (one buffer; TCP flow control paces it): P, the
           rate from first to last delivery, is what Prosody ingests on one
           stream when the sender is never the limit (the sender is a single
           sendall; the receiver's CPU is reported). Then the same ladder of
           rates as the gateway, paced (a batch about every millisecond).
  gateway  sipp (TCP, one connection) -> edged's internal listener -> gateway
           -> its s2s stream (TLS, SASL EXTERNAL) -> Prosody -> juliet.

The ladder: --rates, then --fractions of P (P from the blasts before the
ladders, rounded to 500), --seconds per step (rate x seconds messages,
bounded), up to the first step that is not sustained: under 0.1 % of the
messages failed or unanswered, none lost (answered 200 by edged, or sent by
the direct sender, and never delivered) or delivered twice, the rate
delivered (messages delivered / first send to last delivery) at least 90 % of
the rate asked, and the end-to-end p99 under --max-p99 ms (a queue that grows
for the whole step: the socket buffers on the way hold several MB, enough to
hide a 10 % shortfall from the rate rule). Then one gateway step at
--overload x P: what becomes of MESSAGEs answered 200 when Prosody cannot
keep up.

Where the limit is: every 0.2 s during a step, the bytes waiting in Prosody's
receive queue on the stream under test (arrived, not yet read: Prosody is
behind) and in the sender's send queue, from ss, and Prosody's CPU share.
CPU: Prosody alone on CPU 0 (one Lua process: a core of its own in both
arms); edged, sipp, the receiver and this driver on CPU 1, so the gateway arm
is the harder one. CPU seconds per process per step from /proc/PID/stat (the
per-CPU counters of /proc/stat miss most of this bursty load on this VM), and
Prosody's read system calls per message from /proc/PID/io (one TLS record
costs it two: header, then body).

Memory: a fresh edged (partner northwind.test, connection_limit 1000) and a
fresh Prosody; --streams authenticated s2s streams from northwind.test
(STARTTLS, SASL EXTERNAL, proven by the stream features after the restart),
opened 16 at a time and held idle; the growth of the server's PSS and VmRSS,
divided by the number of streams. One stream is opened and closed first, so
that OpenSSL's tables do not count.

EDGED (default build/edged) is copied into --out first. Markdown summary on
stdout, progress on stderr, raw data (configurations, logs, sipp output,
results.json, summary.md) under --out (default: a new folder under $TMPDIR).
Loopback only; every load is bounded in count and time; every process
started is stopped by pid on exit, error or signal.
"""
import argparse
import base64
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

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parents[1]
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests" / "integration"))
import benchlib as bl  # noqa: E402  (signals -> SystemExit, so finally: blocks run)

PROSODY_CPUS = {0}
LOAD_CPUS = {1}          # edged, sipp, receiver, the direct sender (this driver)
EDGE_HOST = "127.0.0.1"
PROSODY_HOST = "127.0.0.2"
CONTOSO, FABRIKAM, NORTHWIND = "contoso.test", "fabrikam.test", "northwind.test"
USER, PASSWORD = "juliet", "pw-juliet"

NS_STREAMS = "http://etherx.jabber.org/streams"
FEATURES = re.compile(rb"<stream:features\s*/>|<stream:features[^>]*>.*?</stream:features>", re.S)
# A body: "xgw RUN SEQ <sipp's [timestamp]: date TAB time TAB epoch.usec>".
MARK = re.compile(rb"xgw (\S+) (\d+) [^<]*?(\d{9,11}\.\d{6})")

# sipp: one MESSAGE alice@contoso.test -> juliet@fabrikam.test per call, over
# TCP; the body carries the run, the call number and sipp's send time.
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="xmpp gateway message">
<send><![CDATA[
MESSAGE sip:juliet@fabrikam.test SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:alice@contoso.test>;tag=[call_number]
To: <sip:juliet@fabrikam.test>
Call-ID: [call_id]
CSeq: 1 MESSAGE
Max-Forwards: 70
Content-Type: text/plain
Content-Length: [len]

xgw [run] [call_number] [timestamp]
]]></send>
<recv response="100" optional="true"/>
<recv response="200" rtd="true"/>
</scenario>
"""


def log(msg):
    bl.log(msg)


# ---- raw XMPP streams (blocking, bounded by timeouts) ----

class StreamError(RuntimeError):
    pass


class Stream:
    """One XMPP stream over TCP, then TLS: just enough to open it, negotiate
    STARTTLS and SASL, and then write or read raw XML."""

    def __init__(self, addr, timeout=10.0, nodelay=False):
        self.sock = socket.create_connection(addr, timeout=timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def expect(self, rx, what):
        if isinstance(rx, bytes):
            rx = re.compile(rx, re.S)
        deadline = time.monotonic() + self.timeout
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m.group(0)
            bad = re.search(rb"<stream:error.*?</stream:error>|<failure.*?</failure>|</stream:stream>",
                            self.buf, re.S)
            if bad:
                raise StreamError(f"waiting for {what}: {bad.group(0)[:300]!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise StreamError(f"timed out waiting for {what}; got {self.buf[-300:]!r}")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise StreamError(f"closed by the server while waiting for {what}; "
                                  f"got {self.buf[-300:]!r}")
            self.buf += data

    def starttls(self, ctx, name):
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.expect(rb"<proceed[^>]*/>|<proceed[^>]*>\s*</proceed>", "<proceed/>")
        if self.buf:
            raise StreamError(f"data after <proceed/>: {self.buf[:100]!r}")
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=name)

    def close(self):
        """Our </stream:stream>, close_notify, then the socket."""
        try:
            self.sock.settimeout(2)
            self.send("</stream:stream>")
            if isinstance(self.sock, ssl.SSLSocket):
                self.sock = self.sock.unwrap()
        except (OSError, ValueError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def s2s_open(addr, frm, to, ctx, timeout=10.0, nodelay=False):
    """An authenticated server-to-server stream frm -> to: STARTTLS (the
    certificate of frm, the server's verified as to), SASL EXTERNAL, the
    restarted stream's features. Returns the Stream. nodelay: TCP_NODELAY
    (the idle streams of the memory test: Nagle would hold a step of each
    negotiation until a delayed ACK, 40 ms a stream); the direct sender
    keeps Nagle on, as Prosody's own s2s connections and edged's do."""
    s = Stream(addr, timeout, nodelay)
    try:
        hdr = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
               f"xmlns:stream='{NS_STREAMS}' xmlns:db='jabber:server:dialback' "
               f"from='{frm}' to='{to}' version='1.0'>")
        s.send(hdr)
        f = s.expect(FEATURES, "the stream features")
        if b"starttls" not in f:
            raise StreamError(f"no STARTTLS offered: {f[:300]!r}")
        s.starttls(ctx, to)
        s.send(hdr)
        f = s.expect(FEATURES, "the stream features after TLS")
        if b"EXTERNAL" not in f:
            raise StreamError(f"no SASL EXTERNAL offered: {f[:300]!r}")
        s.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>"
               f"{base64.b64encode(frm.encode()).decode()}</auth>")
        s.expect(rb"<success[^>]*/>|<success[^>]*>.*?</success>", "SASL <success/>")
        s.send(hdr)
        s.expect(FEATURES, "the stream features after SASL")
    except BaseException:
        s.close()
        raise
    return s


def c2s_login(addr, user, domain, password, ctx, resource="bench", timeout=10.0):
    """A client stream logged in as user@domain/resource (STARTTLS, SASL
    PLAIN, bind), available (presence sent). Returns the Stream."""
    s = Stream(addr, timeout)
    try:
        hdr = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
               f"xmlns:stream='{NS_STREAMS}' to='{domain}' version='1.0'>")
        s.send(hdr)
        s.expect(FEATURES, "the stream features")
        s.starttls(ctx, domain)
        s.send(hdr)
        f = s.expect(FEATURES, "the stream features after TLS")
        if b"PLAIN" not in f:
            raise StreamError(f"no SASL PLAIN offered: {f[:300]!r}")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        s.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        s.expect(rb"<success[^>]*/>|<success[^>]*>.*?</success>", "SASL <success/>")
        s.send(hdr)
        s.expect(FEATURES, "the stream features after SASL")
        s.send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               f"<resource>{resource}</resource></bind></iq>")
        s.expect(rb"<iq[^>]*id=['\"]bind1['\"][^>]*type=['\"]result['\"].*?(?:/>|</iq>)|"
                 rb"<iq[^>]*type=['\"]result['\"][^>]*id=['\"]bind1['\"].*?(?:/>|</iq>)",
                 "the bind result")
        s.send("<presence/>")
    except BaseException:
        s.close()
        raise
    return s


def tls_context(ca, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


# ---- the receiver: its own process, driven by JSON lines on stdin ----

def receiver_main(cfg):
    """Logs in, says {"ready": true}, then reads and counts. Commands (stdin):
    {"op": "count", "run": R} -> {"n", "dups", "last_recv"}; {"op": "take",
    "run": R, "expect": N} -> the run's summary (its data dropped);
    {"op": "totals"}."""
    ctx = tls_context(cfg["ca"])
    s = c2s_login(tuple(cfg["addr"]), cfg["user"], cfg["domain"], cfg["password"], ctx)
    lock = threading.Lock()
    runs = {}         # run -> {seq: (sent, recv)}
    meta = {}         # run -> [dups, first_recv, last_recv]
    totals = {"messages": 0, "error_messages": 0, "unmatched": 0, "bytes": 0}
    out = sys.stdout

    def reply(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def summary(run, expect):
        d = runs.pop(run, {})
        dups, first, last = meta.pop(run, [0, None, None])
        lat = sorted((r - t) * 1000 for t, r in d.values())
        sent = [t for t, _ in d.values()]
        missing = [i for i in range(1, expect + 1) if i not in d] if expect else []
        extra = [k for k in d if expect and not 1 <= k <= expect]
        return {"run": run, "n": len(d), "dups": dups, "first_recv": first, "last_recv": last,
                "first_sent": min(sent) if sent else None, "last_sent": max(sent) if sent else None,
                "lat_p50_ms": bl.percentile(lat, 50) if lat else None,
                "lat_p90_ms": bl.percentile(lat, 90) if lat else None,
                "lat_p99_ms": bl.percentile(lat, 99) if lat else None,
                "lat_max_ms": lat[-1] if lat else None,
                "missing": len(missing), "missing_sample": missing[:20],
                "extra": len(extra)}

    def commands():
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            with lock:
                if cmd["op"] == "count":
                    m = meta.get(cmd["run"], [0, None, None])
                    reply({"n": len(runs.get(cmd["run"], ())), "dups": m[0], "last_recv": m[2]})
                elif cmd["op"] == "take":
                    reply(summary(cmd["run"], cmd.get("expect")))
                elif cmd["op"] == "totals":
                    reply(dict(totals))
        os._exit(0)   # the driver closed our stdin: quit

    reply({"ready": True})
    threading.Thread(target=commands, daemon=True).start()
    sock, buf = s.sock, s.buf
    sock.settimeout(None)
    err_rx = re.compile(rb"<message[^>]*type=['\"]error['\"]")
    # Prosody writes with Nagle on (its default): a delayed ACK of ours would
    # hold its next write up to 40 ms. The instrument must not add that.
    quickack = getattr(socket, "TCP_QUICKACK", None)
    while True:
        data = sock.recv(262144)
        if quickack:
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        if not data:
            reply({"closed": True})
            os._exit(1)
        now = time.time()
        buf += data
        end = buf.rfind(b"</message>")
        if end < 0:
            if len(buf) > 1 << 20:
                buf = buf[-65536:]
            continue
        end += len(b"</message>")
        chunk, buf = buf[:end], buf[end:]
        with lock:
            totals["bytes"] += len(chunk)
            n_msg = chunk.count(b"<message")
            totals["messages"] += n_msg
            totals["error_messages"] += len(err_rx.findall(chunk))
            matched = 0
            for m in MARK.finditer(chunk):
                matched += 1
                run, seq, sent = m.group(1).decode(), int(m.group(2)), float(m.group(3))
                d = runs.get(run)
                if d is None:
                    d = runs[run] = {}
                    meta[run] = [0, now, now]
                mm = meta[run]
                if seq in d:
                    mm[0] += 1
                else:
                    d[seq] = (sent, now)
                mm[2] = now
            totals["unmatched"] += n_msg - matched


class Receiver:
    """The receiver process (pinned to cpus), stopped by pid."""

    def __init__(self, workdir, addr, ca, cpus):
        cfg = {"addr": list(addr), "user": USER, "domain": FABRIKAM, "password": PASSWORD,
               "ca": str(ca)}
        self.err = open(workdir / "receiver.err", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--receiver", json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, cwd=workdir,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        self.proc.extra_pids, self.proc.name_hint = [], "python3"
        bl._started.append(self.proc)    # stopped by benchlib on exit or signal too
        self.lock = threading.Lock()
        try:
            first = self._read(30)
            if not first.get("ready"):
                raise RuntimeError(f"receiver: {first}")
        except BaseException:
            self.stop()
            raise

    def _read(self, timeout):
        # the reply comes within the timeout or the process is dead
        import select
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise RuntimeError(f"the receiver did not answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the receiver exited: " +
                               (Path(self.err.name).read_text(errors="replace")[-2000:]))
        return json.loads(line)

    def call(self, timeout=30, **cmd):
        with self.lock:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
            while True:
                msg = self._read(timeout)
                if "closed" in msg:
                    raise RuntimeError("Prosody closed the receiver's stream")
                return msg

    def count(self, run):
        return self.call(op="count", run=run)

    def take(self, run, expect):
        return self.call(op="take", run=run, expect=expect, timeout=60)

    def wait(self, run, expect, timeout, quiet=2.0):
        """Until expect messages of run arrived, or none for `quiet` s, or timeout."""
        deadline = time.monotonic() + timeout
        last_n, since = -1, time.monotonic()
        while True:
            c = self.count(run)
            if c["n"] >= expect:
                return c
            now = time.monotonic()
            if c["n"] != last_n:
                last_n, since = c["n"], now
            elif now - since >= quiet:
                return c
            if now > deadline:
                return c
            time.sleep(0.05)

    def pid(self):
        return self.proc.pid

    def stop(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        bl.stop(self.proc, 5)
        self.err.close()


# ---- the lab ----

def pin(pid, cpus):
    """Pins every thread of pid (a process started without pinning)."""
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(t.name), cpus)
        except OSError:
            pass


def start_prosody(workdir, pki, cpus):
    from prosodylab import Prosody

    class BenchProsody(Prosody):
        """The lab's Prosody at its usual log level, "info": the lab's "debug"
        would log every stanza, and cost Prosody more than the stanzas do."""

        def config_text(self):
            text = super().config_text()
            debug = 'levels = { min = "debug" }'
            if debug not in text:
                raise RuntimeError("prosodylab's log line changed: set the level here again")
            return text.replace(debug, 'levels = { min = "info" }')

    p = BenchProsody(workdir, FABRIKAM, PROSODY_HOST, bl.free_port(PROSODY_HOST), pki=pki,
                     dns=None, users={USER: PASSWORD})
    p.start()
    if cpus:
        pin(p.pid, cpus)
    return p


class EdgedXmpp:
    """edged (contoso.test) with its XMPP gateway; partner: fabrikam.test at
    Prosody's s2s address, or northwind.test (nothing there) for the memory
    test. Log level notice, as in the other benchmarks."""

    def __init__(self, workdir, pki, edged, partner, cpus):
        from edgepool import edge_config
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.edged, self.cpus = edged, cpus
        h = EDGE_HOST
        self.internal, self.external = (h, bl.free_port(h)), (h, bl.free_port(h))
        self.xmpp = (h, bl.free_port(h))
        self.status_port = bl.free_port(h)
        sip_cert, sip_key = pki.issue("sip.contoso.test")
        xmpp_cert, xmpp_key = pki.issue(CONTOSO)
        text = edge_config(
            pool_fqdn="sip.contoso.test", domains=[CONTOSO], ca=pki.ca_file, cert=sip_cert,
            key=sip_key, internal=self.internal, next_hop=(h, bl.free_port(h)),
            external=self.external, status_port=self.status_port, log_level="notice",
            # a resolver where nothing answers: no name needs resolving
            dns=(h, bl.free_port(h)),
            policies=[{"identity": "global", "enable_federation_access": True,
                       "enable_xmpp_access": True}],
            sections={"xmpp": {"listen": [{"address": h, "port": self.xmpp[1]}],
                               "cert_file": str(xmpp_cert), "key_file": str(xmpp_key)},
                      "xmpp_partners": [partner]})
        self.conf = self.dir / "edged.conf"
        self.conf.write_text(text)
        self.log_path = self.dir / "edged.log"
        self.proc = None

    def start(self, timeout=30):
        self.proc = bl.spawn([self.edged, "-c", str(self.conf)], log_path=self.log_path,
                             cwd=self.dir, cpus=self.cpus)
        try:
            bl.wait_until(lambda: self.proc.poll() is not None or "ready" in self.log(), timeout,
                          "edged to log 'ready'")
            for host, port in (self.internal, self.xmpp):
                bl.wait_until(lambda: self.proc.poll() is not None or bl.listening(host, port),
                              timeout, f"edged on {host}:{port}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"edged exited ({self.proc.returncode}):\n{self.log()[-2000:]}")
        except BaseException:
            bl.stop(self.proc)
            raise
        return self

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self):
        """The xmpp counters of the status page (the stream list may be cut
        short with many streams: read with a regex, not as JSON)."""
        import urllib.request
        with urllib.request.urlopen(f"http://{EDGE_HOST}:{self.status_port}/status",
                                    timeout=5) as r:
            text = r.read().decode(errors="replace")
        out = {k: int(v) for k, v in re.findall(r'"(streams_in|streams_out|streams_failed|'
                                                  r'messages_out|sip_refused)": (\d+)', text)}
        out["ready_in"] = len(re.findall(r'"direction": "in"[^}]*"ready": true', text))
        out["ready_out"] = len(re.findall(r'"direction": "out"[^}]*"ready": true', text))
        return out

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        return bl.stop(self.proc)

    def problems(self, since=0):
        with open(self.log_path, "rb") as fh:
            fh.seek(since)
            text = fh.read().decode(errors="replace")
        return [l for l in text.splitlines()
                if re.search(r"\[(warning|error|crit|alert|emerg)\]", l)]

    def log_size(self):
        return self.log_path.stat().st_size if self.log_path.exists() else 0


def prosody_problems(p, since=0):
    with open(p.log_path, "rb") as fh:
        fh.seek(since)
        text = fh.read().decode(errors="replace")
    return [l for l in text.splitlines() if re.search(r"\t(warn|error)\t", l)]


def file_size(path):
    return path.stat().st_size if path.exists() else 0


# ---- measurement helpers ----

class CpuWatch:
    """CPU seconds of named pids between start() and stop(). From
    /proc/PID/stat, which the scheduler keeps exact: the per-CPU counters of
    /proc/stat are sampled at the tick and miss most of this bursty load on
    this virtual machine."""

    def __init__(self, pids):
        self.pids = {k: v for k, v in pids.items() if v}

    @staticmethod
    def io(pid):
        """(read, write) system calls so far (/proc/PID/io: syscr, syscw)."""
        try:
            f = dict(l.split(": ") for l in Path(f"/proc/{pid}/io").read_text().splitlines())
            return int(f["syscr"]), int(f["syscw"])
        except (OSError, KeyError, ValueError):
            return 0, 0

    @staticmethod
    def preempted(pid):
        """Times pid was switched out while runnable (nonvoluntary context
        switches): alone on its CPU, something else wanted that CPU."""
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def start(self):
        self.t0 = time.monotonic()
        self.c0 = {k: bl.cpu_ticks([p]) for k, p in self.pids.items()}
        self.io0 = self.io(self.pids["prosody"]) if "prosody" in self.pids else None
        self.pre0 = {k: self.preempted(p) for k, p in self.pids.items() if k in ("prosody", "edged")}
        return self

    def stop(self):
        el = time.monotonic() - self.t0
        out = {f"{k}_cpu_s": round((bl.cpu_ticks([p]) - self.c0[k]) / bl.CLK_TCK, 2)
               for k, p in self.pids.items()}
        for k, v in self.pre0.items():
            out[f"{k}_preempted"] = self.preempted(self.pids[k]) - v
        if self.io0:
            io1 = self.io(self.pids["prosody"])
            out["prosody_reads"], out["prosody_writes"] = io1[0] - self.io0[0], io1[1] - self.io0[1]
        out["window_s"] = round(el, 2)
        return out


def loads(r):
    """(CPU 0 share, CPU 1 share) of a step's window: Prosody; the rest (sipp too)."""
    w = r.get("window_s") or 0
    if not w:
        return None, None
    c1 = sum(v for k, v in r.items() if k.endswith("_cpu_s") and k != "prosody_cpu_s" and v)
    return round(r.get("prosody_cpu_s", 0) / w, 2), round(c1 / w, 2)


BACKLOG_BYTES = 32768


class QueueWatch(threading.Thread):
    """Every 0.2 s during a step: the bytes waiting in Prosody's receive queue
    on the stream(s) under test (arrived, not read yet: Prosody is behind),
    in the sender's send queue (edged's or ours: not yet taken by Prosody),
    and Prosody's CPU share over the interval (ss and /proc, no tools)."""

    def __init__(self, port, prosody_pid, mine):
        super().__init__(daemon=True)
        self.port, self.pid, self.mine = port, prosody_pid, mine   # mine(sender port) -> bool
        self.samples = []
        self.halt = threading.Event()

    def run(self):
        t0 = last_t = time.monotonic()
        last_c = bl.cpu_ticks([self.pid])
        while not self.halt.wait(0.2):
            out = subprocess.run(["ss", "-Htn", "state", "established",
                                  f"( sport = :{self.port} or dport = :{self.port} )"],
                                 capture_output=True, text=True).stdout
            recvq = sendq = 0
            for line in out.splitlines():
                f = line.split()
                if len(f) < 4:
                    continue
                try:
                    rq, sq = int(f[-4]), int(f[-3])
                    lport, pport = int(f[-2].rsplit(":", 1)[1]), int(f[-1].rsplit(":", 1)[1])
                except ValueError:
                    continue
                if lport == self.port and self.mine(pport):
                    recvq += rq
                elif pport == self.port and self.mine(lport):
                    sendq += sq
            now, c = time.monotonic(), bl.cpu_ticks([self.pid])
            cpu = (c - last_c) / bl.CLK_TCK / (now - last_t)
            last_t, last_c = now, c
            self.samples.append((round(now - t0, 2), round(cpu, 2), recvq, sendq))

    def finish(self, active_s):
        """Summary over the samples taken while the load was being sent."""
        self.halt.set()
        self.join(5)
        s = [x for x in self.samples if x[0] <= active_s] or self.samples
        if not s:
            return {}
        return {"q_samples": len(s),
                "prosody_busy_sending": round(bl.median([x[1] for x in s]), 2),
                "backlog_share": round(sum(x[2] >= BACKLOG_BYTES for x in s) / len(s), 2),
                "prosody_recvq_max": max(x[2] for x in s),
                "sender_sendq_max": max(x[3] for x in self.samples),
                "q_series": self.samples}


def quiesce(pids, timeout=20.0):
    """Until the processes together use under 5 % of a CPU over 0.3 s."""
    def idle():
        t0, c0 = time.monotonic(), bl.cpu_ticks(pids)
        time.sleep(0.3)
        return (bl.cpu_ticks(pids) - c0) / bl.CLK_TCK < 0.05 * (time.monotonic() - t0)
    try:
        bl.wait_until(idle, timeout, "the servers to go idle", interval=0)
    except RuntimeError:
        log(f"    (still busy after {timeout} s)")


def rate_delivered(s):
    """Messages delivered / (first send -> last delivery)."""
    if not s["n"] or s["first_sent"] is None or s["last_recv"] is None:
        return 0.0
    span = s["last_recv"] - s["first_sent"]
    return s["n"] / span if span > 0 else 0.0


def r1(x, nd=1):
    return None if x is None else round(x, nd)


def judge(res, max_p99):
    """Sustained: < 0.1 % failed or unanswered, nothing lost or duplicated,
    delivered rate >= 90 % of the rate asked, and no queue that grows: the
    end-to-end p99 under max_p99 ms (several MB of socket buffers on the way
    can hide a 10 % shortfall for the length of a step, not its latency).
    Plus CPU per message."""
    for who in ("prosody", "edged"):
        v = res.get(f"{who}_cpu_s")
        res[f"{who}_us_per_msg"] = (round(v / res["delivered"] * 1e6, 1)
                                    if v and res["delivered"] else None)
    res["prosody_reads_per_msg"] = (round(res["prosody_reads"] / res["delivered"], 2)
                                    if res.get("prosody_reads") and res["delivered"] else None)
    bad = res["failed"] + res["unanswered"]
    res["sustained"] = (bad < res["calls"] * 0.001 and res["lost"] <= 0 and res["dups"] == 0
                        and res["delivered_per_s"] >= 0.9 * res["rate"]
                        and res["e2e_p99_ms"] is not None and res["e2e_p99_ms"] < max_p99)
    return res


# ---- the direct arm: our own s2s sender into Prosody ----

def stanza(run, seq, ts):
    return (f"<message from='bench@{NORTHWIND}/load' to='{USER}@{FABRIKAM}' type='chat' "
            f"id='{run}-{seq}'><body>xgw {run} {seq} d\tt\t{ts:.6f}</body></message>")


class DirectSender:
    """One authenticated s2s stream northwind.test -> fabrikam.test (Prosody),
    Nagle on, like Prosody's own s2s connections and edged's."""

    def __init__(self, prosody, ctx):
        self.s = s2s_open((PROSODY_HOST, prosody.s2s_port), NORTHWIND, FABRIKAM, ctx)
        self.s.sock.settimeout(120)
        self.port = self.s.sock.getsockname()[1]

    def blast(self, run, n):
        ts = time.time()
        blob = "".join(stanza(run, i, ts) for i in range(1, n + 1)).encode()
        t0 = time.time()
        self.s.sock.sendall(blob)
        return t0, time.time(), len(blob)

    def paced(self, run, rate, seconds, deadline_s):
        """rate x seconds messages, a batch whenever some are due (about every
        millisecond), each stamped when its batch is written; stops at the
        deadline. Returns (sent, seconds taken)."""
        n = rate * seconds
        t0 = time.monotonic()
        sent = 0
        while sent < n:
            now = time.monotonic()
            if now - t0 > deadline_s:
                break
            due = min(n, int((now - t0) * rate) + 1)
            if due > sent:
                ts = time.time()
                self.s.sock.sendall("".join(stanza(run, i, ts)
                                            for i in range(sent + 1, due + 1)).encode())
                sent = due
            else:
                time.sleep(min(0.001, max(0.0, sent / rate - (now - t0))))
        return sent, time.monotonic() - t0

    def close(self):
        self.s.close()


def direct_blast(lab, run, n):
    rcv = lab["receiver"]
    quiesce(lab["idle_pids"])
    cpu = CpuWatch(lab["cpu_pids"]).start()
    t0, t1, nbytes = lab["direct"].blast(run, n)
    rcv.wait(run, n, timeout=max(60, n / 500), quiet=5)
    c = cpu.stop()
    s = rcv.take(run, n)
    span = (s["last_recv"] - s["first_recv"]) if s["n"] > 1 else 0
    return {"arm": "direct", "kind": "blast", "n": n, "bytes": nbytes, "delivered": s["n"],
            "lost": n - s["n"], "dups": s["dups"], "write_s": round(t1 - t0, 3),
            "rate_first_to_last": round((s["n"] - 1) / span, 1) if span > 0 else 0.0,
            "rate_from_write": round(s["n"] / (s["last_recv"] - t0), 1) if s["n"] else 0.0,
            "prosody_us_per_msg": (round(c.get("prosody_cpu_s", 0) / s["n"] * 1e6, 1)
                                   if s["n"] else None),
            "prosody_reads_per_msg": (round(c.get("prosody_reads", 0) / s["n"], 2)
                                      if s["n"] else None), **c}


def direct_step(lab, run, rate, args):
    rcv, prosody, direct = lab["receiver"], lab["prosody"], lab["direct"]
    quiesce(lab["idle_pids"])
    p_off = file_size(prosody.log_path)
    q = QueueWatch(prosody.s2s_port, prosody.pid, lambda port: port == direct.port)
    cpu = CpuWatch(lab["cpu_pids"]).start()
    q.start()
    sent, took = direct.paced(run, rate, args.seconds, args.seconds * 3 + 10)
    rcv.wait(run, sent, timeout=30, quiet=3)
    c = cpu.stop()
    qs = q.finish(took)
    s = rcv.take(run, rate * args.seconds)
    res = {"arm": "direct", "kind": "step", "rate": rate, "calls": rate * args.seconds,
           "sent": sent, "send_s": round(took, 2), "ok": sent, "failed": 0,
           "unanswered": rate * args.seconds - sent,
           "delivered": s["n"], "lost": sent - s["n"], "dups": s["dups"],
           "delivered_per_s": round(rate_delivered(s), 1),
           "e2e_p50_ms": r1(s["lat_p50_ms"], 2), "e2e_p99_ms": r1(s["lat_p99_ms"], 2),
           "e2e_max_ms": r1(s["lat_max_ms"], 1),
           "prosody_problems": prosody_problems(prosody, p_off)[:5], **c, **qs}
    return judge(res, args.max_p99)


# ---- the gateway arm: sipp -> edged -> Prosody ----

def sipp_counts(text):
    def last(label):
        found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", text)
        return int(found[-1]) if found else 0
    return last("Successful call"), last("Failed call")


def run_sipp(stepdir, lab, run, rate, calls, timeout_s):
    """One bounded sipp run (calls MESSAGEs at rate, sipp's -timeout, killed
    30 s after it at worst); returns (ok, failed, rtts ms, seconds, exit,
    sipp's CPU s)."""
    stepdir.mkdir(parents=True, exist_ok=True)
    edge = lab["edged"]
    port = bl.free_port(EDGE_HOST)
    cmd = ["sipp", "-sf", str(lab["scenario"]), "-t", "t1", "-i", EDGE_HOST, "-p", str(port),
           "-m", str(calls), "-r", str(rate), "-l", str(min(rate * 3, 15000)),
           "-key", "run", run, "-nostdin", "-timeout", f"{timeout_s}s", "-timeout_error",
           "-recv_timeout", "10000", "-trace_rtt", "-rtt_freq", "1", "-trace_err",
           "-trace_stat", "-fd", "1", f"{edge.internal[0]}:{edge.internal[1]}"]
    (stepdir / "sipp.cmd").write_text(" ".join(cmd) + "\n")
    t0 = time.monotonic()
    uac = bl.spawn(cmd, log_path=stepdir / "sipp.out", cwd=stepdir, cpus=LOAD_CPUS)
    ru, deadline = None, t0 + timeout_s + 30
    while time.monotonic() < deadline:
        pid, status, ru_ = os.wait4(uac.pid, os.WNOHANG)   # its rusage: sipp's CPU
        if pid:
            ru = ru_
            uac.returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.02)
    else:
        log("    sipp still running at its deadline: killed")
    bl.stop(uac)
    elapsed = time.monotonic() - t0
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
    sipp_cpu = round(ru.ru_utime + ru.ru_stime, 2) if ru else None
    return ok, failed, rtts, elapsed, uac.returncode, sipp_cpu


def gateway_step(lab, run, rate, args, seconds=None, stepdir=None):
    rcv, edge, prosody = lab["receiver"], lab["edged"], lab["prosody"]
    seconds = seconds or args.seconds
    calls = rate * seconds
    quiesce(lab["idle_pids"])
    e_off, p_off = edge.log_size(), file_size(prosody.log_path)
    st0 = edge.status()
    direct_port = lab["direct"].port if lab.get("direct") else None
    q = QueueWatch(prosody.s2s_port, prosody.pid, lambda port: port != direct_port)
    cpu = CpuWatch(lab["cpu_pids"]).start()
    q.start()
    ok, failed, rtts, elapsed, code, sipp_cpu = run_sipp(
        stepdir or lab["dir"] / f"step-{run}", lab, run, rate, calls, seconds * 3 + 20)
    rcv.wait(run, ok, timeout=30, quiet=3)
    c = cpu.stop()
    qs = q.finish(elapsed)
    s = rcv.take(run, calls)
    st1 = edge.status() if edge.alive() else {}
    res = {"arm": "gateway", "kind": "step", "rate": rate, "calls": calls, "ok": ok,
           "failed": failed, "unanswered": max(0, calls - ok - failed), "sipp_exit": code,
           "sipp_s": round(elapsed, 2), "sip_200_per_s": round(ok / elapsed, 1),
           "sipp_p50_ms": bl.percentile(rtts, 50) if rtts else None,
           "sipp_p99_ms": bl.percentile(rtts, 99) if rtts else None,
           # answered 200 but never delivered: the SIP side believes them sent
           "delivered": s["n"], "lost": ok - s["n"], "dups": s["dups"],
           "missing_sample": s["missing_sample"][:10],
           "delivered_per_s": round(rate_delivered(s), 1),
           "e2e_p50_ms": r1(s["lat_p50_ms"], 2), "e2e_p99_ms": r1(s["lat_p99_ms"], 2),
           "e2e_max_ms": r1(s["lat_max_ms"], 1),
           "edged_messages_out": st1.get("messages_out", 0) - st0.get("messages_out", 0),
           "edged_streams_failed": st1.get("streams_failed", 0) - st0.get("streams_failed", 0),
           "edged_streams_out": st1.get("streams_out", 0) - st0.get("streams_out", 0),
           "edged_alive": edge.alive(), "sipp_cpu_s": sipp_cpu,
           "edged_problems": edge.problems(e_off)[:5],
           "prosody_problems": prosody_problems(prosody, p_off)[:5], **c, **qs}
    return judge(res, args.max_p99)


def fmt_step(r):
    lat = (f"e2e p50/p99 {r['e2e_p50_ms']}/{r['e2e_p99_ms']} ms"
           if r.get("e2e_p50_ms") is not None else "no delivery")
    sip = (f"; 200s {r['ok']} ({r['sip_200_per_s']:.0f}/s) failed {r['failed']} "
           f"sipp p50/p99 {fmt(r['sipp_p50_ms'])}/{fmt(r['sipp_p99_ms'])} ms"
           if r["arm"] == "gateway" else f"; sent {r['sent']} in {r['send_s']} s")
    procs = ", ".join(f"{k[:-6]} {v}" for k, v in r.items() if k.endswith("_cpu_s") and v is not None)
    if r.get("prosody_reads_per_msg") is not None:
        procs += (f" (Prosody {r['prosody_us_per_msg']} us, {r['prosody_reads_per_msg']} reads per "
                  f"message, preempted {r.get('prosody_preempted')} times; edged "
                  f"{r.get('edged_us_per_msg')} us)")
    queue = ""
    if r.get("q_samples"):
        queue = (f"; Prosody busy {r['prosody_busy_sending']} while sent to, backlog "
                 f"{r['backlog_share']:.0%} (Recv-Q max {r['prosody_recvq_max'] // 1024} KB, "
                 f"sender Send-Q max {r['sender_sendq_max'] // 1024} KB)")
    warn = ""
    if r.get("edged_streams_failed"):
        warn += f"; edged streams failed {r['edged_streams_failed']}"
    if r.get("edged_problems"):
        warn += f"; edged: {r['edged_problems'][0][:200]}"
    if r.get("prosody_problems"):
        warn += f"; prosody: {r['prosody_problems'][0][:160]}"
    return (f"{r['arm']:7s} {r['rate']:6d}/s: delivered {r['delivered']}/{r['calls']} "
            f"({r['delivered_per_s']:.0f}/s), lost {r['lost']}, dups {r['dups']}{sip}; {lat}; "
            f"CPU s: {procs}{queue}{warn} -> {'sustained' if r['sustained'] else 'NOT sustained'}")


def fmt_blast(b):
    return (f"direct blast: {b['delivered']}/{b['n']} delivered, {b['rate_first_to_last']:.0f}/s "
            f"first to last delivery ({b['rate_from_write']:.0f}/s from the write), lost "
            f"{b['lost']}, dups {b['dups']}; Prosody {b.get('prosody_cpu_s')} CPU s "
            f"({b.get('prosody_us_per_msg')} us, {b.get('prosody_reads_per_msg')} reads per message), "
            f"receiver {b.get('receiver_cpu_s')} s")


def ladder(fixed, fractions, p):
    """The fixed rates, then fractions of Prosody's acceptance p above them
    (multiples of 500, rising)."""
    rates = sorted(set(fixed))
    top = rates[-1] if rates else 0
    for f in fractions:
        r = int(round(f * p / 500.0)) * 500
        if r > top:
            rates.append(r)
            top = r
    return rates


# ---- one repeat of the rate benchmark ----

def rate_repeat(rep, workdir, pki, edged_bin, args):
    wd = workdir / f"r{rep}"
    wd.mkdir(parents=True)
    scenario = wd / "xmpp_message.xml"
    scenario.write_text(SCENARIO)
    prosody = start_prosody(wd / "prosody", pki, PROSODY_CPUS)
    edge = rcv = direct = None
    try:
        edge = EdgedXmpp(wd / "edged", pki, edged_bin,
                         {"domain": FABRIKAM, "partner_type": "Federated",
                          "proxy_fqdn": f"xmpp.{FABRIKAM}", "address": PROSODY_HOST,
                          "port": prosody.s2s_port}, LOAD_CPUS).start()
        rcv = Receiver(wd, (PROSODY_HOST, prosody.c2s_port), pki.ca_file, LOAD_CPUS)
        direct = DirectSender(prosody, tls_context(pki.ca_file, *pki.issue(NORTHWIND)))
        lab = {"dir": wd, "prosody": prosody, "edged": edge, "receiver": rcv, "direct": direct,
               "scenario": scenario,
               "cpu_pids": {"prosody": prosody.pid, "edged": edge.proc.pid,
                            "receiver": rcv.pid(), "driver": os.getpid()},
               "idle_pids": [prosody.pid, edge.proc.pid]}
        # Warm-up, not counted: both streams up and used, Prosody's code paths hot.
        w = gateway_step(lab, f"w{rep}", 200, args, seconds=1, stepdir=wd / "warmup")
        log(f"  warm-up gateway: {w['delivered']}/{w['calls']} delivered, {w['ok']} answered 200")
        if w["delivered"] != w["calls"]:
            raise RuntimeError(f"the gateway warm-up failed: {w}\n{edge.log()[-2000:]}")
        direct.blast(f"v{rep}", 200)
        c = rcv.wait(f"v{rep}", 200, timeout=30)
        rcv.take(f"v{rep}", 200)
        log(f"  warm-up direct: {c['n']}/200 delivered")
        out = {"blast": [], "direct": [], "gateway": []}
        # One blast not counted: Prosody's first large load runs slower.
        w = direct_blast(lab, f"x{rep}", args.blast)
        log(f"  repeat {rep} (warm-up, not counted) {fmt_blast(w)}")
        for b in range(args.blasts):
            out["blast"].append(direct_blast(lab, f"b{rep}x{b}", args.blast))
            log(f"  repeat {rep} {fmt_blast(out['blast'][-1])}")
        p0 = bl.median([b["rate_first_to_last"] for b in out["blast"]])
        out["ladder_base"] = p0
        out["rates"] = ladder(args.rates, args.fractions, p0)
        log(f"  repeat {rep}: Prosody takes {p0:.0f}/s; ladder {out['rates']}")
        arms = [a for a in (["direct", "gateway"] if rep % 2 else ["gateway", "direct"])
                if a in args.arms]
        out["order"] = arms
        for arm in arms:
            for rate in out["rates"]:
                step = (direct_step(lab, f"d{rep}-{rate}", rate, args) if arm == "direct"
                        else gateway_step(lab, f"g{rep}-{rate}", rate, args))
                out[arm].append(step)
                log(f"  repeat {rep} {fmt_step(step)}")
                if arm == "gateway" and not edge.alive():
                    raise RuntimeError(f"edged died:\n{edge.log()[-3000:]}")
                if not step["sustained"]:
                    break
        if args.overload > 0 and "gateway" in arms:
            # Past Prosody's rate on purpose, whatever the ladder did: what
            # happens to MESSAGEs answered 200 when Prosody cannot keep up.
            rate = int(round(args.overload * p0 / 500.0)) * 500
            out["overload"] = gateway_step(lab, f"o{rep}", rate, args)
            log(f"  repeat {rep} overload {fmt_step(out['overload'])}")
        for b in range(args.blasts_after):
            out["blast"].append(direct_blast(lab, f"b{rep}y{b}", args.blast))
            log(f"  repeat {rep} (after) {fmt_blast(out['blast'][-1])}")
        out["prosody_rate"] = bl.median([b["rate_first_to_last"] for b in out["blast"]])
        out["receiver_totals"] = rcv.call(op="totals")
        out["edged_status"] = edge.status()
        out["edged_problems"] = edge.problems()[:20]
        out["prosody_problems"] = prosody_problems(prosody)[:20]
        return out
    finally:
        if direct:
            direct.close()
        if rcv:
            rcv.stop()
        if edge:
            edge.stop()
        prosody.stop()


# ---- memory per idle s2s stream ----

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


def hold_streams(addr, to, n, ctx, deadline, parallel=16):
    """n authenticated idle s2s streams, opened `parallel` at a time: both
    servers hold the TLS 1.3 session tickets they send after the handshake
    and the stream features behind Nagle until our delayed ACK (about 40 ms a
    stream), which one at a time would make 500 streams take 20 s."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_):
        if time.monotonic() > deadline:
            raise RuntimeError("the deadline passed")
        return s2s_open(addr, NORTHWIND, to, ctx, nodelay=True)
    streams, errors = [], []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        for f in futures:
            try:
                streams.append(f.result(timeout=max(1.0, deadline - time.monotonic() + 15)))
            except Exception as e:   # every stream is collected, so every one is closed
                errors.append(e)
    if errors:
        for s in streams:
            s.close()
        raise RuntimeError(f"{len(errors)} of {n} streams failed, the first: {errors[0]}")
    return streams


def memory_once(wd, pki, edged_bin, server, n):
    wd.mkdir(parents=True, exist_ok=True)
    ctx = tls_context(pki.ca_file, *pki.issue(NORTHWIND))
    if server == "edged":
        srv = EdgedXmpp(wd, pki, edged_bin,
                        {"domain": NORTHWIND, "partner_type": "Federated",
                         "proxy_fqdn": f"xmpp.{NORTHWIND}", "address": EDGE_HOST,
                         "port": bl.free_port(EDGE_HOST), "connection_limit": 1000},
                        None).start()
        addr, to, pid = srv.xmpp, CONTOSO, srv.proc.pid
    else:
        srv = start_prosody(wd, pki, None)
        addr, to, pid = (PROSODY_HOST, srv.s2s_port), FABRIKAM, srv.pid
    try:
        for s in hold_streams(addr, to, 1, ctx, time.monotonic() + 30):
            s.close()
        before = settle([pid])
        st0 = srv.status() if server == "edged" else {}
        t0 = time.monotonic()
        streams = hold_streams(addr, to, n, ctx, time.monotonic() + 180)
        took = time.monotonic() - t0
        try:
            after = settle([pid])
            st1 = srv.status() if server == "edged" else {}
            status = {k: st1[k] - st0.get(k, 0) for k in ("streams_in", "streams_failed")
                      if k in st1}
            problems = srv.problems() if server == "edged" else prosody_problems(srv)
        finally:
            for s in streams:
                s.close()
    finally:
        srv.stop()
    return {"server": server, "streams": n, "open_s": round(took, 2),
            "pss_before_kb": before[0], "pss_after_kb": after[0],
            "rss_before_kb": before[1], "rss_after_kb": after[1],
            "pss_per_stream_kb": round((after[0] - before[0]) / n, 2),
            "rss_per_stream_kb": round((after[1] - before[1]) / n, 2),
            "status": status, "problems": problems[:10]}


# ---- summary ----

def fmt(x, nd=0):
    return "n/a" if x is None or x != x else f"{x:.{nd}f}"


def ceiling(steps):
    """The highest sustained step (None if none): the ladder stops at the
    first step that is not sustained."""
    at = None
    for s in steps:
        if not s["sustained"]:
            break
        at = s
    return at


def label_of(rep, rate, args):
    """A step's place on the ladder: its rate if fixed, else its fraction of P."""
    if rate in args["rates"]:
        return str(rate)
    for f in args["fractions"]:
        if int(round(f * rep["ladder_base"] / 500.0)) * 500 == rate:
            return f"{f:g} P"
    return str(rate)


def summary(result, workdir):
    a, m = result["args"], result["machine"]
    lines = [f"### SIP MESSAGE -> XMPP through edged's gateway to Prosody, against Prosody's "
             f"own s2s acceptance ({a['repeats']} repeats)", "",
             f"{m['model']}, {m['nproc']} CPUs, {m['date']}; edged {m['git_head']} (sha256 "
             f"{m['edged_sha256']}); {m.get('prosody', 'Prosody')}; raw data: {workdir}", ""]
    reps = result.get("rate") or []
    if reps:
        med = bl.median
        j = lambda xs, nd=0: ", ".join(fmt(x, nd) for x in xs)  # noqa: E731
        P = [r["prosody_rate"] for r in reps]
        p_us = [med([b["prosody_us_per_msg"] for b in r["blast"] if b.get("prosody_us_per_msg")])
                for r in reps]
        dc = [ceiling(r["direct"]) for r in reps]
        gc = [ceiling(r["gateway"]) for r in reps]
        d_step = [s["rate"] if s else 0 for s in dc]
        g_step = [s["rate"] if s else 0 for s in gc]
        g_rate = [s["delivered_per_s"] if s else 0 for s in gc]
        steps_ratio = [g / d if d else float("nan") for g, d in zip(g_step, d_step)]
        ratio = [g / p if p else float("nan") for g, p in zip(g_rate, P)]
        d_ratio = [(s["delivered_per_s"] / p) if s and p else float("nan") for s, p in zip(dc, P)]
        ov = [r.get("overload") for r in reps]
        ov_ratio = [x["delivered_per_s"] / p if x and p else float("nan") for x, p in zip(ov, P)]
        # edged's and Prosody's CPU per message at the highest step both arms sustained
        both = []
        for r in reps:
            ok_d = {s["rate"] for s in r["direct"] if s["sustained"]}
            ok_g = {s["rate"] for s in r["gateway"] if s["sustained"]}
            both.append(max(ok_d & ok_g, default=max(ok_g, default=0)))
        at = [next((s for s in r["gateway"] if s["rate"] == b), None) for r, b in zip(reps, both)]
        e_us = [s["edged_us_per_msg"] if s else None for s in at]
        pg_us = [s["prosody_us_per_msg"] if s else None for s in at]
        at_d = [next((s for s in r["direct"] if s["rate"] == b), None) for r, b in zip(reps, both)]
        pd_us = [s["prosody_us_per_msg"] if s else None for s in at_d]
        pg_rd = [s.get("prosody_reads_per_msg") if s else None for s in at]
        pd_rd = [s.get("prosody_reads_per_msg") if s else None for s in at_d]
        lost_ok = sum(max(0, s["lost"]) for r in reps for s in r["gateway"] if s["sustained"])
        lost_ladder = sum(max(0, s["lost"]) for r in reps for s in r["gateway"])
        busy = [x.get("prosody_busy_sending") if x else None for x in ov]
        backlog = [x.get("backlog_share") if x else None for x in ov]
        def row(label, xs, nd=0, bold=False):
            """A table row: the median (of the values present) and every repeat's."""
            m_ = fmt(med([x for x in xs if x is not None and x == x]), nd)
            return f"| {label} | {f'**{m_}**' if bold else m_} | {j(xs, nd)} |"

        lost_ov = [max(0, x["lost"]) if x else None for x in ov]
        lines += [
            f"Ladder: {', '.join(map(str, a['rates']))}/s, then "
            f"{', '.join(f'{f:g}' for f in a['fractions'])} x P (P of the {a['blasts']} blasts "
            f"before the ladders, rounded to 500), {a['seconds']} s per step (rate x "
            f"{a['seconds']} messages) in both arms, up to the first step not sustained; then one "
            f"gateway step at {a['overload']:g} x P. Direct blast: {a['blast']} messages written at "
            f"once (one more before them, not counted); P is the median of the repeat's "
            f"{a['blasts'] + a['blasts_after']} blasts ({a['blasts']} before the ladders, "
            f"{a['blasts_after']} after). Sustained: < 0.1 % failed or unanswered, none lost or "
            f"duplicated, delivered >= 90 % of the rate asked (messages delivered / first send to "
            f"last delivery), end-to-end p99 < {a['max_p99']:g} ms. Prosody alone on CPU 0; edged, "
            f"sipp, the receiver and the direct sender on CPU 1.", "",
            "| figure | median | per repeat |", "|---|---|---|",
            row("P: Prosody's acceptance on one s2s stream (direct blast), messages/s", P, bold=True),
            row("Prosody's CPU per message in the blasts, us", p_us, 1),
            row("highest sustained step, direct sender, /s", d_step),
            row("highest sustained step, gateway, /s", g_step, bold=True),
            row("**gateway / direct, highest sustained step**", steps_ratio, 2, bold=True),
            row("gateway: delivered there / P", ratio, 2),
            row("direct sender: delivered at its highest sustained step / P", d_ratio, 2),
            row(f"**gateway at {a['overload']:g} x P (Prosody the limit): delivered / P**",
                ov_ratio, 2, bold=True),
            row("... Prosody's CPU share while sipp sent (median of 0.2 s samples)", busy, 2),
            row(f"... samples with >= {BACKLOG_BYTES // 1024} KB waiting in Prosody's receive "
                f"queue", backlog, 2),
            row(f"CPU per message at the highest step both sustained ({j(both)}/s): edged, us",
                e_us, 1),
            row("... Prosody, fed by the gateway, us", pg_us, 1),
            row("... Prosody, fed by the direct sender, us", pd_us, 1),
            row("... Prosody's read system calls per message, gateway", pg_rd, 2),
            row("... the same, direct sender", pd_rd, 2),
            f"| messages lost by the gateway (answered 200, never delivered): sustained steps "
            f"| **{lost_ok}** in all | |",
            f"| ... the ladders' steps not sustained | {lost_ladder - lost_ok} in all | |",
            row(f"... the {a['overload']:g} x P step", lost_ov, bold=True),
            ""]
        if any(ov):
            o = [x for x in ov if x]
            lines += [
                f"The {a['overload']:g} x P step (gateway only, {a['seconds']} s at "
                f"{', '.join(str(x['rate']) for x in o)}/s):", "",
                "| | median | per repeat |", "|---|---|---|",
                row("SIP 200s per second", [x["sip_200_per_s"] for x in o]),
                row("delivered per second", [x["delivered_per_s"] for x in o]),
                row("lost: answered 200, never delivered", [max(0, x["lost"]) for x in o]),
                row("failed (SIP error answers)", [x["failed"] for x in o]),
                row("edged's outbound streams failed", [x["edged_streams_failed"] for x in o]),
                row("most bytes in edged's socket send queue, KB",
                    [x.get("sender_sendq_max", 0) / 1024 for x in o]),
                ""]
            for i, x in enumerate(ov, 1):
                if x and x["edged_problems"]:
                    lines.append(f"    #{i} edged: {x['edged_problems'][0][:300]}")
            lines.append("")
        # Per place on the ladder, medians over the repeats that ran it.
        places = []
        for r in reps:
            for rate in r["rates"]:
                lb = label_of(r, rate, a)
                if lb not in places:
                    places.append(lb)
        lines += ["Per step, medians over the repeats that ran it (n); P-relative steps differ "
                  "in rate between repeats:", "",
                  "| step | rate asked | direct: delivered/s | direct: e2e p50 / p99 ms "
                  "| gateway: 200s/s | gateway: delivered/s | gateway: lost | sipp p50 / p99 ms "
                  "| gateway: e2e p50 / p99 ms | edged us/msg | Prosody us/msg, direct / gateway "
                  "| Prosody reads/msg, direct / gateway "
                  "| Prosody busy, backlog (gateway) | sustained, direct / gateway |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for lb in places:
            ds = [s for r in reps for s in r["direct"] if label_of(r, s["rate"], a) == lb]
            gs = [s for r in reps for s in r["gateway"] if label_of(r, s["rate"], a) == lb]
            if not ds and not gs:
                continue
            md = lambda ss, k: med([s[k] for s in ss if s.get(k) is not None])  # noqa: E731
            lines.append(
                f"| {lb} | {fmt(med([s['rate'] for s in ds + gs]))} "
                f"| {fmt(md(ds, 'delivered_per_s'))} (n={len(ds)}) "
                f"| {fmt(md(ds, 'e2e_p50_ms'), 2)} / {fmt(md(ds, 'e2e_p99_ms'), 1)} "
                f"| {fmt(md(gs, 'sip_200_per_s'))} | {fmt(md(gs, 'delivered_per_s'))} (n={len(gs)}) "
                f"| {sum(max(0, s['lost']) for s in gs)} "
                f"| {fmt(md(gs, 'sipp_p50_ms'))} / {fmt(md(gs, 'sipp_p99_ms'))} "
                f"| {fmt(md(gs, 'e2e_p50_ms'), 2)} / {fmt(md(gs, 'e2e_p99_ms'), 1)} "
                f"| {fmt(md(gs, 'edged_us_per_msg'), 1)} "
                f"| {fmt(md(ds, 'prosody_us_per_msg'), 1)} / {fmt(md(gs, 'prosody_us_per_msg'), 1)} "
                f"| {fmt(md(ds, 'prosody_reads_per_msg'), 2)} / "
                f"{fmt(md(gs, 'prosody_reads_per_msg'), 2)} "
                f"| {fmt(md(gs, 'prosody_busy_sending'), 2)}, {fmt(md(gs, 'backlog_share'), 2)} "
                f"| {sum(s['sustained'] for s in ds)}/{len(ds)} / "
                f"{sum(s['sustained'] for s in gs)}/{len(gs)} |")
        lines += ["", "Every step (repeat: arm rate: delivered/asked, lost, SIP, end-to-end latency, "
                  "CPU seconds, queues in front of Prosody):", ""]
        for i, r in enumerate(reps, 1):
            for b in r["blast"]:
                lines.append(f"    #{i} {fmt_blast(b)}")
            for arm in r["order"]:
                for s in r[arm]:
                    lines.append(f"    #{i} {fmt_step(s)}")
            if r.get("overload"):
                lines.append(f"    #{i} overload {fmt_step(r['overload'])}")
        for who in ("edged", "prosody"):
            probs = [(i, l) for i, r in enumerate(reps, 1) for l in r.get(f"{who}_problems", [])]
            if probs:
                lines += ["", f"{who}'s log warnings/errors (first ones):", ""]
                lines += [f"    #{i} {l[:300]}" for i, l in probs[:8]]
        lines.append("")
    mem = result.get("memory") or []
    if mem:
        n = a["streams"]
        lines += [f"Memory per idle authenticated s2s stream ({n} streams, STARTTLS + SASL EXTERNAL "
                  f"from northwind.test, held idle), growth of the server's PSS and VmRSS:", "",
                  "| server | PSS before -> with the streams (KB), median run | PSS per stream, KB: "
                  "median (runs) | VmRSS per stream, KB: median (runs) |", "|---|---|---|---|"]
        per_srv = {}
        for server in ("edged", "prosody"):
            rr = [x for x in mem if x["server"] == server]
            if not rr:
                continue
            per = [x["pss_per_stream_kb"] for x in rr]
            rss = [x["rss_per_stream_kb"] for x in rr]
            mid = sorted(rr, key=lambda x: x["pss_per_stream_kb"])[len(rr) // 2]
            per_srv[server] = bl.median(per)
            lines.append(f"| {server} | {mid['pss_before_kb']} -> {mid['pss_after_kb']} "
                         f"| **{bl.median(per):.1f}** ({', '.join(f'{x:.1f}' for x in per)}) "
                         f"| {bl.median(rss):.1f} ({', '.join(f'{x:.1f}' for x in rss)}) |")
        lines.append("")
        if "edged" in per_srv and per_srv.get("prosody"):
            lines.append(f"- edged / Prosody, PSS per idle s2s stream: "
                         f"**{per_srv['edged'] / per_srv['prosody']:.2f}**")
        for x in mem:
            if x["server"] == "edged":
                lines.append(f"- edged's status counters while holding them: {x['status']}")
                break
        for x in mem:
            if x["problems"]:
                lines.append(f"- {x['server']} log: " + " | ".join(l[:200] for l in x["problems"][:3]))
        lines.append("")
    return "\n".join(lines) + "\n"


# ---- main ----

def out_dir(arg):
    if arg:
        d = Path(arg)
        d.mkdir(parents=True, exist_ok=True)
        return d
    return Path(tempfile.mkdtemp(prefix="edgepool-bench-xmpp-"))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8, help="per step, both arms")
    ap.add_argument("--rates", default="500,1000,2000,4000", help="the fixed steps")
    ap.add_argument("--fractions", default="0.8,0.9,1.0,1.2",
                    help="then these fractions of Prosody's acceptance")
    ap.add_argument("--overload", type=float, default=1.5,
                    help="one more gateway step at this fraction of Prosody's acceptance "
                         "(0: none)")
    ap.add_argument("--max-p99", type=float, default=500.0,
                    help="sustained: the end-to-end p99 (ms) must stay under this")
    ap.add_argument("--blast", type=int, default=30000, help="messages of a direct blast")
    ap.add_argument("--blasts", type=int, default=3, help="direct blasts before the ladders")
    ap.add_argument("--blasts-after", type=int, default=2, help="and after them")
    ap.add_argument("--streams", type=int, default=500, help="idle s2s streams, memory test")
    ap.add_argument("--memory-servers", default="edged,prosody")
    ap.add_argument("--only", choices=("rate", "memory"))
    ap.add_argument("--arms", default="direct,gateway", help="of the rate benchmark")
    ap.add_argument("--summary", metavar="RESULTS_JSON", help="print the summary of an earlier run")
    ap.add_argument("--receiver", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receiver:
        receiver_main(json.loads(args.receiver))
        return
    if args.summary:
        path = Path(args.summary)
        print(summary(json.loads(path.read_text()), path.parent), end="")
        return
    args.rates = [int(x) for x in args.rates.split(",") if x]
    args.fractions = [float(x) for x in args.fractions.split(",") if x]
    args.arms = args.arms.split(",")
    if args.blasts < 1:
        ap.error("--blasts must be at least 1 (the ladder is built on them)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    os.sched_setaffinity(0, LOAD_CPUS)

    workdir = out_dir(args.out)
    log(f"XMPP gateway benchmark, raw data in {workdir}")
    from edgepool import PKI
    pki = PKI(workdir / "pki")
    src = bl.edged_binary()
    edged_bin = workdir / "edged"
    if Path(src).resolve() != edged_bin.resolve():
        shutil.copy2(src, edged_bin)
    info = bl.machine()
    info.update({"edged": src,
                 "edged_sha256": hashlib.sha256(edged_bin.read_bytes()).hexdigest()[:16],
                 "git_head": subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %cs"],
                                            capture_output=True, text=True).stdout.strip()})
    v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "prosody"], capture_output=True,
                       text=True).stdout.strip()
    info["prosody"] = f"Prosody {v or '?'}"
    result = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "receiver"},
              "rate": [], "memory": []}

    def save():
        (workdir / "results.json").write_text(json.dumps(result, indent=1))

    try:
        if args.only in (None, "rate"):
            for rep in range(1, args.repeats + 1):
                log(f"repeat {rep}/{args.repeats}: rates")
                result["rate"].append(rate_repeat(rep, workdir, pki, str(edged_bin), args))
                save()
        if args.only in (None, "memory"):
            servers = args.memory_servers.split(",")
            for rep in range(1, args.repeats + 1):
                order = servers if rep % 2 else list(reversed(servers))
                for server in order:
                    r = memory_once(workdir / f"m{rep}-{server}", pki, str(edged_bin), server,
                                    args.streams)
                    result["memory"].append(r)
                    log(f"  repeat {rep} memory {server}: PSS {r['pss_before_kb']} -> "
                        f"{r['pss_after_kb']} KB, {r['pss_per_stream_kb']} KB/stream "
                        f"(VmRSS {r['rss_per_stream_kb']}), {r['streams']} streams in {r['open_s']} s")
                    save()
    finally:
        save()
    text = summary(result, workdir)
    (workdir / "summary.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
