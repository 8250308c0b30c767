"""A real Prosody XMPP server and a real XMPP client (slixmpp) for tests of
XMPP server-to-server federation.

    port = free_port("127.0.0.1")
    with Bind(tmp_path / "dns", {"fabrikam.test": [
            f"_xmpp-server._tcp 1 IN SRV 0 0 {port} xmpp.fabrikam.test.",
            "xmpp 1 IN A 127.0.0.1"]}) as dns, \\
         Prosody(tmp_path / "fab", "fabrikam.test", "127.0.0.1", port, pki=pki,
                 dns=dns.address, users={"juliet": "pw"}) as fab, \\
         fab.client("juliet") as juliet:
        juliet.send_message("romeo@northwind.test", "hi")
        msg = juliet.wait_message("romeo@northwind.test", timeout=10)   # a Message
        juliet.subscribe("romeo@northwind.test")
        ptype, show, status = juliet.wait_presence("romeo@northwind.test", "subscribed")
        fab.s2s_sessions("northwind.test")   # [{"direction", "auth", "tls", ...}]

Prosody (Debian's 0.12) runs in the foreground (-F) from a private directory
that holds its configuration, data, pid file and log (level debug); never as
the system service. As root it runs as root (`run_as_root = true`: Prosody
would otherwise refuse to start, and prosodyctl would switch to the `prosody`
user, which cannot read pytest's directories). Its c2s and s2s listeners bind
`host` only (any 127.0.0.0/8 address works for Prosody, unlike for named).

DNS: with lua-unbound installed Prosody resolves through libunbound, set up by
the global `unbound` option, which net/unbound.lua hands to lunbound.new():
`forward = "ADDR@PORT"` (ub_ctx_set_fwd) sends every query to the test's BIND,
`resolvconf = false` / `hoststxt = false` keep the machine's resolver and
/etc/hosts out, and `options = { ["local-zone:"] = "test. transparent" }`
(ub_ctx_set_option) is needed because libunbound answers NXDOMAIN itself for
the special-use TLD `test.` (RFC 6761) unless that default local zone is made
transparent. The TLD of `domain` is made transparent, so every name under it
resolves through BIND (one TLD only: lunbound's options table takes one value
per option name). Without dns, `local-zone: ". static"` makes libunbound answer
NXDOMAIN for everything itself: no query ever leaves the machine.

TLS: the domain's certificate comes from the test PKI (SAN = domain; its key
is readable by Prosody, which runs as the user running the tests); the
global `ssl = { cafile = ... }` makes Prosody trust the test CA, so two lab
servers authenticate each other over s2s with TLS + SASL EXTERNAL. With
s2s_tls=False (`s2s_allow_encryption = false`) and s2s_require_encryption=False
Prosody speaks plain TCP and authenticates with dialback.

XmppClient runs slixmpp in a child process (the Python that has slixmpp: the
one running the tests if it can import it, else Debian's /usr/bin/python3, or
$XMPP_PYTHON), driven over JSON lines on its stdin/stdout, so it works whatever
interpreter runs pytest, its asyncio loop is its own, and it is stopped by pid.
The client verifies Prosody's c2s certificate against the test CA and the
domain name, and requires STARTTLS.
"""
import ctypes
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from edgepool import free_port, port_listening, terminate, wait_for


def _die_with_parent():
    """In the child before exec: SIGTERM it if the test runner dies, so no
    server or client outlives a killed pytest."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop_process(proc, files):
    """The finalizer's safety net for a process that was never stopped."""
    if proc.poll() is None:
        terminate(proc, 10)
    for f in files:
        f.close()


def _tool(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") or name


def _lua(value):
    """A Lua literal for a Python value (str, bool, int, list/tuple, dict)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "{ " + "; ".join(_lua(v) for v in value) + " }"
    if isinstance(value, dict):
        return "{ " + "; ".join(f"[{_lua(str(k))}] = {_lua(v)}" for k, v in value.items()) + " }"
    # A JSON string (non-ASCII kept as is) is a valid Lua string literal.
    return json.dumps(str(value), ensure_ascii=False)


class Prosody:
    """One Prosody serving `domain`, c2s on a free port and s2s on `port`, both on `host`.

    pki: the test PKI (edgepool.PKI); the domain's certificate is issued here.
    dns: (host, port) of the resolver (dnslab.Bind.address), or None to
    resolve nothing (every name NXDOMAIN, no query sent). users: {"name": "password"}, registered with prosodyctl
    before start (register() adds more at any time).
    s2s_tls=False turns TLS off for s2s (with s2s_require_encryption=False:
    plain TCP + dialback). modules_disabled: e.g. ("dialback",).
    extra_config: Lua lines for the global section (later lines win, so this
    may override anything written here); host_config: lines for the
    VirtualHost. Use one workdir per Prosody."""

    MODULES = ("roster", "saslauth", "tls", "dialback", "disco", "ping")

    def __init__(self, workdir, domain, host="127.0.0.1", port=None, *, pki, dns=None,
                 s2s_require_encryption=True, s2s_secure_auth=False, s2s_tls=True,
                 c2s_require_encryption=True, modules_disabled=(), extra_modules=(),
                 extra_config="", host_config="", users=None, s2s_timeout=15):
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.domain = domain.lower().rstrip(".")
        self.host = host
        self.s2s_port = port or free_port(host)
        self.c2s_port = free_port(host)
        self.pki = pki
        self.ca_file = Path(pki.ca_file).resolve()
        self.cert, self.key = pki.issue(self.domain)
        self.dns = tuple(dns) if dns else None
        self.users = dict({"juliet": "pw"} if users is None else users)
        self.conf = self.dir / "prosody.cfg.lua"
        self.data = self.dir / "data"
        self.pidfile = self.dir / "prosody.pid"
        self.log_path = self.dir / "prosody.log"
        self.out_path = self.dir / "prosody.out"   # stdout/stderr: startup errors
        self.proc = None
        self.returncode = None
        self._finalizer = None
        self._settings = dict(s2s_require_encryption=s2s_require_encryption,
                              s2s_secure_auth=s2s_secure_auth, s2s_tls=s2s_tls,
                              c2s_require_encryption=c2s_require_encryption,
                              modules_disabled=tuple(modules_disabled),
                              extra_modules=tuple(extra_modules), extra_config=extra_config,
                              host_config=host_config, s2s_timeout=s2s_timeout)
        self._write()

    # ---- configuration ----

    def config_text(self):
        s = self._settings
        g = {
            "pidfile": str(self.pidfile),
            "data_path": str(self.data),
            "plugin_paths": [],
            "certificates": str(self.dir / "certs"),   # empty: the certificate is set below
            "modules_enabled": [m for m in (*self.MODULES, *s["extra_modules"])],
            "modules_disabled": list(s["modules_disabled"]),
            "c2s_ports": [self.c2s_port], "c2s_interfaces": [self.host],
            "s2s_ports": [self.s2s_port], "s2s_interfaces": [self.host],
            "c2s_direct_tls_ports": [], "s2s_direct_tls_ports": [],
            "interfaces": [self.host], "local_interfaces": [self.host],
            "use_ipv6": False,
            "authentication": "internal_hashed",
            "storage": "internal",
            "allow_registration": False,
            "c2s_require_encryption": s["c2s_require_encryption"],
            "s2s_require_encryption": s["s2s_require_encryption"],
            "s2s_secure_auth": s["s2s_secure_auth"],
            "s2s_allow_encryption": s["s2s_tls"],
            "s2s_timeout": s["s2s_timeout"],
            "ssl": {"cafile": str(self.ca_file)},
        }
        if os.geteuid() == 0:
            # mod_posix refuses root without this, and prosodyctl would setuid
            # to `prosody`, which cannot read the test's private directory.
            g["run_as_root"] = True
        if self.dns:
            tld = self.domain.rsplit(".", 1)[-1]
            g["unbound"] = {"resolvconf": False, "hoststxt": False,
                            "forward": f"{self.dns[0]}@{self.dns[1]}",
                            "options": {"local-zone:": f"{tld}. transparent"}}
        else:
            # No resolver given: libunbound answers NXDOMAIN for every name
            # itself, so no query leaves the machine (no root hints, no resolv.conf).
            g["unbound"] = {"resolvconf": False, "hoststxt": False,
                            "options": {"local-zone:": ". static"}}
        lines = ["-- written by prosodylab.py; Prosody 0.12"]
        lines += [f"{k} = {_lua(v)}" for k, v in g.items()]
        lines.append("log = { { levels = { min = \"debug\" }; to = \"file\"; filename = "
                     f"{_lua(str(self.log_path))} }} }}")
        if s["extra_config"]:
            lines.append(s["extra_config"])
        lines.append(f"VirtualHost {_lua(self.domain)}")
        lines.append(f"  ssl = {{ certificate = {_lua(str(Path(self.cert).resolve()))}; "
                     f"key = {_lua(str(Path(self.key).resolve()))} }}")
        if s["host_config"]:
            lines.append(s["host_config"])
        return "\n".join(lines) + "\n"

    def _write(self):
        self.data.mkdir(exist_ok=True)
        (self.dir / "certs").mkdir(exist_ok=True)
        self.conf.write_text(self.config_text())

    def prosodyctl(self, *args, timeout=30):
        """Runs prosodyctl against this configuration; returns the CompletedProcess."""
        return subprocess.run([_tool("prosodyctl"), "--config", str(self.conf), *args],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def register(self, user, password):
        """Creates (or resets) an account; works before start and while running."""
        out = self.prosodyctl("register", user, self.domain, password)
        assert out.returncode == 0, \
            f"prosodyctl register {user}@{self.domain} failed ({out.returncode}):\n" \
            f"{out.stdout}{out.stderr}"
        self.users[user] = password

    # ---- process ----

    def start(self, timeout=20):
        """Registers the users, starts prosody -F and waits until c2s and s2s listen."""
        assert self.proc is None, "Prosody: already started"
        self._write()
        for user, password in list(self.users.items()):
            self.register(user, password)
        self.pidfile.unlink(missing_ok=True)
        self._out = open(self.out_path, "ab")
        self.returncode = None
        self.proc = subprocess.Popen(
            [_tool("prosody"), "-F", "--config", str(self.conf)], cwd=self.dir,
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent)
        self._finalizer = weakref.finalize(self, _stop_process, self.proc, [self._out])
        try:
            for port in (self.c2s_port, self.s2s_port):
                wait_for(lambda: self.proc.poll() is not None or port_listening(self.host, port),
                         timeout, f"prosody {self.domain} on {self.host}:{port}", interval=0.05)
                assert self.proc.poll() is None, \
                    f"prosody {self.domain} exited early ({self.proc.returncode}):\n" \
                    f"{self.log()[-4000:]}"
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20):
        """SIGTERM by pid (SIGKILL after timeout); returns the exit code, None
        if it had to be killed or never started. Safe to call twice."""
        if self.proc is None:
            return self.returncode
        self.returncode = terminate(self.proc, timeout)
        self._finalizer.detach()
        self._out.close()
        self.proc = None
        return self.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log(self):
        """Prosody's log (debug) followed by anything it wrote to stdout/stderr."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if self.out_path.exists():
            out = self.out_path.read_text(errors="replace")
            if out.strip():
                text += "\n--- prosody stdout/stderr ---\n" + out
        return text

    def s2s_sessions(self, remote=None):
        """The s2s sessions the debug log shows as authenticated, oldest
        first: [{"id", "direction": "in"|"out", "remote", "auth":
        "EXTERNAL"|"dialback"|None, "tls": bool}], only those with remote if
        given. auth comes from Prosody 0.12's own lines: outgoing "sent
        dialback key on outgoing s2s stream" / "SASL EXTERNAL with R
        succeeded", incoming "asking R if key ... belongs to them" /
        "Accepting SASL EXTERNAL identity from R"; tls from "Stream encrypted".
        A session id is the Lua table's address, which a later session may
        reuse: compare counts before and after when a test restarts sessions."""
        lines = {}   # session id -> [messages]
        order = []
        glob = []
        for line in self.log().splitlines():
            parts = line.split("\t", 2)
            if len(parts) < 3:
                continue
            source = parts[0].rsplit(" ", 1)[-1]
            if re.fullmatch(r"s2s(in|out)[0-9a-f]+", source):
                if source not in lines:
                    lines[source] = []
                    order.append(source)
                lines[source].append(parts[2])
            else:
                glob.append(parts[2])
        sessions = []
        for sid in order:
            msgs = lines[sid]
            direction = "in" if sid.startswith("s2sin") else "out"
            peers = []
            for m in msgs:
                a = re.match(r"connection (\S+)->(\S+) is now authenticated for (\S+)", m)
                if a:
                    peers.append(a.group(2) if direction == "out" else a.group(1))
            for peer in dict.fromkeys(peers):
                if remote and peer != remote.lower():
                    continue
                if direction == "out":
                    if any("sent dialback key" in m for m in msgs):
                        auth = "dialback"
                    elif f"SASL EXTERNAL with {peer} succeeded" in "\n".join(glob):
                        auth = "EXTERNAL"
                    else:
                        auth = None
                else:
                    if any(m.startswith(f"asking {peer} if key") for m in msgs):
                        auth = "dialback"
                    elif f"Accepting SASL EXTERNAL identity from {peer}" in "\n".join(glob):
                        auth = "EXTERNAL"
                    else:
                        auth = None
                sessions.append({"id": sid, "direction": direction, "remote": peer,
                                 "auth": auth,
                                 "tls": any(m.startswith("Stream encrypted") for m in msgs)})
        return sessions

    # ---- clients ----

    def client(self, user, password=None, **kw):
        """A logged-in XmppClient for user@domain on this server's c2s port."""
        return XmppClient(f"{user}@{self.domain}", password or self.users[user],
                          (self.host, self.c2s_port), ca_file=self.ca_file,
                          workdir=self.dir, **kw).start()


# ---- the client ----

class XmppError(AssertionError):
    pass


class XmppLoginError(XmppError):
    pass


@dataclass
class Message:
    body: str
    from_: str          # full JID as received
    to: str
    type: str           # "normal" when the stanza has no type
    id: str
    xml: str            # the raw stanza
    subject: str = None
    thread: str = None
    error: str = None   # the defined condition of a type="error" message

    @property
    def from_bare(self):
        return _bare(self.from_)


class Presence(tuple):
    """(type, show, status); type is "available" when the stanza has none.
    Also .from_, .to, .priority, .xml, .error."""

    def __new__(cls, ev):
        self = super().__new__(cls, (ev["type"], ev.get("show"), ev.get("status")))
        self.from_, self.to = ev.get("from"), ev.get("to")
        self.priority, self.xml, self.error = ev.get("priority"), ev.get("xml"), ev.get("error")
        return self

    type = property(lambda self: self[0])
    show = property(lambda self: self[1])
    status = property(lambda self: self[2])


def _bare(jid):
    return (jid or "").split("/", 1)[0].lower()


def _jid_matches(want, got):
    """want without a resource matches any resource of that bare JID."""
    if want is None:
        return True
    if "/" in want:
        return (got or "").lower() == want.lower()
    return _bare(got) == want.lower()


def _client_python():
    """An interpreter that can import slixmpp."""
    env = os.environ.get("XMPP_PYTHON")
    if env:
        return env
    if importlib.util.find_spec("slixmpp") is not None:
        return sys.executable
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


class XmppClient:
    """A real XMPP client (slixmpp) for jid on address=(host, port), logged in
    by start(), in a child process that this object stops by pid.

    ca_file: verify the server's certificate against it (name = the JID's
    domain); None skips certificate checks (the client link is not under
    test). STARTTLS is required unless tls=False. initial_presence: send
    available presence once logged in (without it Prosody delivers no chat and
    no presence to this client). auto_authorize/auto_subscribe: slixmpp's
    roster policy; the default (None, False) leaves every subscription request
    to the test. Every call is bounded by a timeout."""

    def __init__(self, jid, password, address, *, ca_file=None, workdir=".", resource="lab",
                 tls=True, initial_presence=True, auto_authorize=None, auto_subscribe=False,
                 login_timeout=20, timeout=10):
        self.jid = jid
        self.password = password
        self.address = tuple(address)
        self.ca_file = str(ca_file) if ca_file else None
        self.resource = resource
        self.tls = tls
        self.initial_presence = initial_presence
        self.auto_authorize = auto_authorize
        self.auto_subscribe = auto_subscribe
        self.login_timeout = login_timeout
        self.timeout = timeout
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{jid}_{resource}")
        self.dir = Path(workdir).resolve()
        self.log_path = self.dir / f"client-{tag}.log"
        self.script = self.dir / "xmpp_client_child.py"
        self.full_jid = None
        self.proc = None
        self._events = []            # (seq, event dict); consumed ones removed
        self._replies = {}
        self._cond = threading.Condition()
        self._eof = False
        self._next_id = 0
        self._reader = None
        self._finalizer = None

    # ---- process ----

    def start(self):
        """Starts the child, logs in, waits for session start (and the initial
        presence); raises XmppLoginError with the reason if it fails."""
        assert self.proc is None, "XmppClient: already started"
        self.script.write_text(_CHILD)
        cfg = {"jid": f"{self.jid}/{self.resource}", "password": self.password,
               "host": self.address[0], "port": self.address[1], "ca_file": self.ca_file,
               "tls": self.tls, "initial_presence": self.initial_presence,
               "auto_authorize": self.auto_authorize, "auto_subscribe": self.auto_subscribe,
               "log": str(self.log_path)}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([_client_python(), str(self.script), json.dumps(cfg)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, cwd=self.dir, preexec_fn=_die_with_parent)
        self._finalizer = weakref.finalize(self, _stop_process, self.proc,
                                           [self._log, self.proc.stdin, self.proc.stdout])
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"xmpp-client {self.jid}")
        self._reader.start()
        try:
            ev = self._wait_event(lambda e: e["event"] in ("session_start", "login_failed"),
                                  self.login_timeout, f"{self.jid} to log in", consume=True)
            if ev["event"] == "login_failed":
                raise XmppLoginError(f"{self.jid} could not log in to {self.address}: "
                                     f"{ev.get('reason')}\n{self.log()[-3000:]}")
            self.full_jid = ev.get("jid")
        except XmppLoginError:
            self.stop()
            raise
        except BaseException as e:
            self.stop()
            raise XmppLoginError(f"{self.jid} could not log in to {self.address}: {e}\n"
                                 f"{self.log()[-3000:]}") from None
        return self

    def _read(self):
        try:
            for line in self.proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                with self._cond:
                    if "reply" in msg:
                        self._replies[msg["reply"]] = msg
                    else:
                        self._events.append(msg)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        """The client's log: slixmpp at debug level, raw XML included."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def disconnect(self, timeout=10):
        """Closes the stream (unavailable presence goes out) and stops the
        child; returns its exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.running():
            try:
                self._call("disconnect", timeout=timeout)
            except XmppError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.stop()

    def stop(self, timeout=10):
        """Stops the child by pid at once (SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return None
        code = terminate(self.proc, timeout)
        if self._reader:
            self._reader.join(timeout)   # the child is gone: its stdout ends
        self._finalizer()   # closes the pipes and the log
        self.proc = None
        return code

    def __enter__(self):
        return self if self.proc else self.start()

    def __exit__(self, *exc):
        self.disconnect()

    # ---- plumbing ----

    def _call(self, op, timeout=None, **args):
        timeout = timeout or self.timeout
        if not self.running():
            raise XmppError(f"{self.jid}: client not running\n{self.log()[-2000:]}")
        with self._cond:
            self._next_id += 1
            rid = self._next_id
        line = json.dumps({"id": rid, "op": op, "timeout": timeout, **args}) + "\n"
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise XmppError(f"{self.jid}: client gone ({e})\n{self.log()[-2000:]}") from None
        deadline = time.monotonic() + timeout + 5
        with self._cond:
            while rid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise XmppError(f"{self.jid}: no reply to {op} within {timeout} s"
                                    f"{' (client exited)' if self._eof else ''}\n"
                                    f"{self.log()[-2000:]}")
                self._cond.wait(min(left, 0.5))
            reply = self._replies.pop(rid)
        if not reply.get("ok"):
            raise XmppError(f"{self.jid}: {op} failed: {reply.get('error')}")
        return reply.get("result")

    def _wait_event(self, match, timeout, what, consume=True):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, ev in enumerate(self._events):
                    if match(ev):
                        if consume:
                            del self._events[i]
                        return ev
                left = deadline - time.monotonic()
                if self._eof:
                    raise XmppError(f"{self.jid}: client exited while waiting for {what}\n"
                                    f"{self.log()[-3000:]}")
                if left <= 0:
                    seen = [(e["event"], e.get("type"), e.get("from")) for e in self._events][-20:]
                    raise XmppError(f"{self.jid}: timed out after {timeout} s waiting for "
                                    f"{what}; unconsumed events: {seen}")
                self._cond.wait(min(left, 0.5))

    def events(self, kind=None):
        """The unconsumed events (dicts), e.g. kind="message" or "presence"."""
        with self._cond:
            return [dict(e) for e in self._events if kind is None or e["event"] == kind]

    # ---- messages ----

    def send_message(self, to_jid, body, mtype="chat", subject=None, thread=None):
        """Sends a message; returns its id."""
        return self._call("send_message", to=to_jid, body=body, mtype=mtype, subject=subject,
                          thread=thread)

    def wait_message(self, match=None, timeout=None, body=None, mtype=None):
        """The next received message matching: match is a JID (bare: any of
        its resources) or a predicate on Message; body/mtype narrow it. The
        message returned is consumed."""
        def ok(e):
            if e["event"] != "message":
                return False
            m = _message(e)
            if body is not None and m.body != body:
                return False
            if mtype is not None and m.type != mtype:
                return False
            if callable(match):
                return match(m)
            return _jid_matches(match, m.from_)
        ev = self._wait_event(ok, timeout or self.timeout,
                              f"a message from {match!r}" if not callable(match) else "a message")
        return _message(ev)

    # ---- presence ----

    def send_presence(self, show=None, status=None, ptype=None, to=None, priority=None):
        """Sends presence: available (show "away", "chat", "dnd", "xa" or None;
        status text), or ptype "subscribe", "subscribed", "unsubscribe",
        "unsubscribed", "unavailable", "probe"; to a JID, or broadcast."""
        return self._call("send_presence", show=show, status=status, ptype=ptype, to=to,
                          priority=priority)

    def wait_presence(self, from_jid=None, ptype=None, timeout=None, show=None, status=None):
        """The next received presence from from_jid (bare: any resource) of
        type ptype ("available" for none; None: any): a Presence, which is
        (type, show, status). Consumed."""
        def ok(e):
            return (e["event"] == "presence" and _jid_matches(from_jid, e.get("from"))
                    and (ptype is None or e["type"] == ptype)
                    and (show is None or e.get("show") == show)
                    and (status is None or e.get("status") == status))
        ev = self._wait_event(ok, timeout or self.timeout,
                              f"presence {ptype or '(any)'} from {from_jid}")
        return Presence(ev)

    def subscribe(self, jid):
        """Asks for jid's presence (presence type subscribe)."""
        return self.send_presence(ptype="subscribe", to=_bare(jid))

    def approve(self, jid):
        """Approves jid's subscription request (presence type subscribed)."""
        return self.send_presence(ptype="subscribed", to=_bare(jid))

    def deny(self, jid):
        return self.send_presence(ptype="unsubscribed", to=_bare(jid))

    # ---- roster ----

    def roster_add(self, jid, name=None, groups=()):
        """Adds (or updates) a roster item with a roster set; waits for the result."""
        return self._call("roster_add", jid=_bare(jid), name=name, groups=list(groups))

    def roster_remove(self, jid):
        return self._call("roster_remove", jid=_bare(jid))

    def roster(self):
        """The roster fetched from the server now: {bare jid: {"subscription",
        "ask", "name", "groups"}}."""
        return self._call("roster_get")

    def wait_roster(self, jid, subscription, timeout=None):
        """Polls the roster until jid's item has that subscription; returns the item."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            item = self.roster().get(_bare(jid))
            if item and item.get("subscription") == subscription:
                return item
            if time.monotonic() > deadline:
                raise XmppError(f"{self.jid}: roster item {jid} is {item}, not "
                                f"subscription={subscription}")
            time.sleep(0.1)

    def iq_get(self, to, xml, timeout=None):
        """Sends <iq type='get'> with one child (raw XML) to `to`; returns
        {"type": "result" or "error", "condition": the error's or None}."""
        return self._call("iq_get", to=to, xml=xml, timeout=timeout or self.timeout)

    def send_raw(self, xml):
        """Sends raw XML on the stream (for stanzas slixmpp would not build)."""
        return self._call("send_raw", xml=xml)


def _message(ev):
    return Message(body=ev.get("body"), from_=ev.get("from"), to=ev.get("to"),
                   type=ev.get("type") or "normal", id=ev.get("id"), xml=ev.get("xml"),
                   subject=ev.get("subject"), thread=ev.get("thread"), error=ev.get("error"))


# The child: slixmpp on its own asyncio loop; commands as JSON lines on stdin,
# events and replies as JSON lines on stdout; slixmpp's log to the log file.
_CHILD = r'''
import asyncio, json, logging, ssl, sys, threading

cfg = json.loads(sys.argv[1])
logging.basicConfig(filename=cfg["log"], level=logging.DEBUG,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("lab")

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
xmpp = slixmpp.ClientXMPP(cfg["jid"], cfg["password"])
xmpp.roster.auto_authorize = cfg["auto_authorize"]
xmpp.roster.auto_subscribe = cfg["auto_subscribe"]
if cfg["ca_file"]:
    xmpp.ca_certs = cfg["ca_file"]
else:
    xmpp.ssl_context.check_hostname = False
    xmpp.ssl_context.verify_mode = ssl.CERT_NONE
started = False
auth_failures = []
ns = "{jabber:client}"


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def text(stanza, name):
    el = stanza.xml.find(ns + name)
    return el.text if el is not None else None


def error_condition(stanza):
    err = stanza.xml.find(ns + "error")
    if err is None:
        return None
    for child in err:
        if child.tag.endswith("}text"):
            continue
        return child.tag.split("}")[-1]
    return ""


def on_message(msg):
    emit({"event": "message", "from": msg.xml.get("from"), "to": msg.xml.get("to"),
          "type": msg.xml.get("type"), "id": msg.xml.get("id"), "body": text(msg, "body"),
          "subject": text(msg, "subject"), "thread": text(msg, "thread"),
          "error": error_condition(msg), "xml": str(msg)})


def on_presence(pres):
    prio = text(pres, "priority")
    emit({"event": "presence", "from": pres.xml.get("from"), "to": pres.xml.get("to"),
          "type": pres.xml.get("type") or "available", "show": text(pres, "show"),
          "status": text(pres, "status"), "priority": int(prio) if prio else None,
          "error": error_condition(pres), "xml": str(pres)})


xmpp.register_handler(Callback("lab messages", MatchXPath(ns + "message"), on_message))
xmpp.register_handler(Callback("lab presence", MatchXPath(ns + "presence"), on_presence))


async def session_start(_):
    global started
    try:
        await xmpp.get_roster(timeout=10)
    except Exception as e:
        log.warning("roster fetch failed: %r", e)
    if cfg["initial_presence"]:
        xmpp.send_presence()
    started = True
    emit({"event": "session_start", "jid": str(xmpp.boundjid)})


def failed(reason):
    def handler(arg=None):
        if not started:
            detail = "; ".join(auth_failures) if auth_failures else arg
            emit({"event": "login_failed", "reason": f"{reason}: {detail}"})
            # no retries: the parent stops this process
            loop.call_soon(xmpp.cancel_connection_attempt)
    return handler


def disconnected(arg=None):
    emit({"event": "disconnected", "reason": str(arg)})
    if not started:
        emit({"event": "login_failed", "reason": f"disconnected: {arg}"})


def failed_auth(stanza=None):
    try:
        mech = xmpp.plugin["feature_mechanisms"].mech.name
    except Exception:
        mech = "?"
    cond, why = "?", ""
    if stanza is not None:
        for child in stanza.xml:
            tag = child.tag.split("}")[-1]
            if tag == "text":
                why = f" ({child.text})"
            else:
                cond = tag
    auth_failures.append(f"SASL {mech}: {cond}{why}")


xmpp.add_event_handler("session_start", session_start)
xmpp.add_event_handler("failed_auth", failed_auth)
xmpp.add_event_handler("failed_all_auth", failed("authentication failed"))
xmpp.add_event_handler("connection_failed", failed("connection failed"))
xmpp.add_event_handler("ssl_invalid_chain", failed("invalid certificate chain"))
xmpp.add_event_handler("stream_error", lambda e: emit({"event": "stream_error", "xml": str(e)}))
xmpp.add_event_handler("disconnected", disconnected)


async def run(cmd):
    op, t = cmd["op"], cmd.get("timeout") or 10
    if op == "send_message":
        msg = xmpp.make_message(mto=cmd["to"], mbody=cmd["body"], mtype=cmd["mtype"],
                                msubject=cmd.get("subject"))
        if cmd.get("thread"):
            msg["thread"] = cmd["thread"]
        msg.send()
        return msg["id"]
    if op == "send_presence":
        pres = xmpp.make_presence(pshow=cmd.get("show"), pstatus=cmd.get("status"),
                                  ppriority=cmd.get("priority"), pto=cmd.get("to"),
                                  ptype=cmd.get("ptype"))
        pres.send()
        return pres["id"] or None
    if op == "send_raw":
        xmpp.send_raw(cmd["xml"])
        return None
    if op == "roster_add":
        iq = xmpp.Iq(stype="set")
        iq["roster"]["items"] = {cmd["jid"]: {"name": cmd.get("name") or "",
                                              "groups": cmd.get("groups") or []}}
        await iq.send(timeout=t)
        return None
    if op == "roster_remove":
        iq = xmpp.Iq(stype="set")
        iq["roster"]["items"] = {cmd["jid"]: {"subscription": "remove"}}
        await iq.send(timeout=t)
        return None
    if op == "roster_get":
        iq = xmpp.Iq(stype="get")
        iq.enable("roster")
        res = await iq.send(timeout=t)
        return {str(j).lower(): {"subscription": it.get("subscription") or "none",
                                 "ask": it.get("ask") or None, "name": it.get("name") or None,
                                 "groups": list(it.get("groups") or [])}
                for j, it in res["roster"]["items"].items()}
    if op == "iq_get":
        # An iq get with one child element (raw XML) to `to`: its answer's type and
        # error condition. An error answer is a result here, not an exception.
        from slixmpp.exceptions import IqError
        from xml.etree import ElementTree as ET
        iq = xmpp.Iq(stype="get", sto=cmd["to"])
        iq.append(ET.fromstring(cmd["xml"]))
        try:
            res = await iq.send(timeout=t)
            return {"type": res["type"], "condition": None}
        except IqError as e:
            return {"type": "error", "condition": e.iq["error"]["condition"]}
    if op == "disconnect":
        await asyncio.wait_for(xmpp.disconnect(wait=min(t, 2.0)), t)
        loop.call_later(0.05, loop.stop)
        return None
    raise ValueError(f"unknown op {op}")


async def handle(cmd):
    try:
        result = await asyncio.wait_for(run(cmd), cmd.get("timeout") or 10)
        emit({"reply": cmd["id"], "ok": True, "result": result})
    except Exception as e:
        log.exception("command %s failed", cmd.get("op"))
        emit({"reply": cmd["id"], "ok": False, "error": f"{type(e).__name__}: {e}"})


def stdin_reader():
    for line in sys.stdin:
        try:
            cmd = json.loads(line)
        except ValueError:
            continue
        loop.call_soon_threadsafe(lambda c=cmd: asyncio.ensure_future(handle(c)))
    loop.call_soon_threadsafe(loop.stop)   # the parent closed our stdin: quit


threading.Thread(target=stdin_reader, daemon=True).start()
xmpp.connect(address=(cfg["host"], cfg["port"]), force_starttls=cfg["tls"],
             disable_starttls=not cfg["tls"])
loop.run_forever()
'''
