"""
harness.py - start, talk to and stop payd for the integration tests.

Standard library only. One `Server` is one `payd serve` process on a free
loopback port with its own temporary data directory; it can be stopped
(SIGTERM), killed (SIGKILL) and started again on the same data directory.
Processes are always signalled by their own pid, never by name (`Process`,
the base of `Server` and of paysim.py's `Paysim`).

With PAYD_TEST_STORE=postgres every payd (and every `payd` command run
with --data-dir) stores its data in PostgreSQL instead: the harness starts
one PostgreSQL 15 server for the run (initdb in a temporary directory, a
free loopback port, stopped by its pid at exit) and gives each data
directory a database of its own. Queries of the tests (Server.db) then go
there, through psycopg2 (Debian python3-psycopg2), the one module outside
the standard library.

Environment:
  PAYD_BIN        the binary to test (default: <repo>/build/payd)
  PAYD_TEST_STORE sqlite (default) or postgres
  PAYD_TEST_SLOW  1: a slow (sanitizer) build; deadlines are three times longer
  PAYD_KEEP_TMP   1: keep the temporary directories
No PAYD_* variable of the test run reaches payd itself (payd reads its
configuration from PAYD_<SECTION>_<KEY>); tests pass what they mean to.
"""

import atexit
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PAYD_BIN = os.environ.get("PAYD_BIN") or os.path.join(REPO, "build", "payd")

# PAYD_TEST_SLOW=1 (set by `make test-asan`) stretches the deadlines; no test
# asserts on timing, the deadlines only bound how long a test waits.
SLOW = os.environ.get("PAYD_TEST_SLOW") == "1"
START_DEADLINE_S = 20.0 * (3 if SLOW else 1)
FINAL_DEADLINE_S = 30.0 * (3 if SLOW else 1)
POLL_S = 0.05
HTTP_TIMEOUT_S = 60.0

# Defaults that make the sandbox fast to settle in tests.
FAST_ENV = {
    "PAYD_CHANNEL_SANDBOX_TIMEOUT_MS": "300",
    "PAYD_WORKER_RETRY_BASE_MS": "50",
}

# Tables whose row counts change by themselves while the server works off
# its queue; table_counts() leaves them out.
VOLATILE_TABLES = {"outbox"}

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
KEY_RE = re.compile(r"^sk_[0-9a-f]{48}$")

STORE = os.environ.get("PAYD_TEST_STORE", "sqlite")
if STORE not in ("sqlite", "postgres"):
    raise SystemExit("PAYD_TEST_STORE must be sqlite or postgres, not %r" % STORE)
PG_BIN = "/usr/lib/postgresql/15/bin"

_ALL_SERVERS = []
_ALL_LOCK = threading.Lock()
_DEFAULT = object()


def _cleanup_all():
    with _ALL_LOCK:
        servers = list(_ALL_SERVERS)
    for s in servers:
        try:
            s.kill9()
        except Exception:
            pass


atexit.register(_cleanup_all)


def free_port():
    """A loopback port that was free a moment ago (bind port 0, read, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_refuses(port):
    """True when nothing listens on 127.0.0.1:port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except (ConnectionRefusedError, socket.timeout, OSError):
        return True
    finally:
        s.close()


def child_env(extra=None):
    """The environment for a payd process: ours without any PAYD_* variable,
    plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYD_")}
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


class Postgres:
    """One PostgreSQL server in a temporary directory on a free loopback
    port, trusting local connections. As root, it runs as the `postgres`
    user (PostgreSQL refuses to run as root)."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="payd-pg-")
        self.data = os.path.join(self.tmp, "data")
        self.port = free_port()
        self.proc = None
        self.databases = set()
        self.lock = threading.Lock()
        self.log_path = os.path.join(self.tmp, "postgres.log")
        self._as_user = None
        if os.getuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            self._as_user = (pw.pw_uid, pw.pw_gid)
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)

    def _preexec(self):
        if self._as_user:
            os.setgid(self._as_user[1])
            os.setuid(self._as_user[0])

    def start(self):
        out = subprocess.run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                              "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=self._preexec, cwd=self.tmp)
        if out.returncode != 0:
            raise AssertionError("initdb failed:\n" + out.stdout)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [os.path.join(PG_BIN, "postgres"), "-D", self.data, "-p", str(self.port),
                 "-k", self.tmp, "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=500",
                 "-c", "fsync=on", "-c", "synchronous_commit=on"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=self._preexec,
                cwd=self.tmp, start_new_session=True)
        finally:
            log.close()
        end = time.monotonic() + START_DEADLINE_S
        while subprocess.run([os.path.join(PG_BIN, "pg_isready"), "-q", "-h", "127.0.0.1",
                              "-p", str(self.port)]).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError("PostgreSQL did not start:\n" + self.log_tail())
            time.sleep(0.1)
        return self

    def log_tail(self, limit=4000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-limit:]
        except OSError:
            return ""

    def connect(self, database="postgres"):
        import psycopg2
        con = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                               dbname=database)
        con.autocommit = True
        return con

    def database_for(self, data_dir):
        """The database of a data directory, created on first use."""
        name = "payd_" + hashlib.sha1(os.path.realpath(data_dir).encode()).hexdigest()[:20]
        with self.lock:
            if name not in self.databases:
                con = self.connect()
                try:
                    con.cursor().execute('CREATE DATABASE "%s"' % name)
                finally:
                    con.close()
                self.databases.add(name)
        return name

    def url(self, database):
        return "host=127.0.0.1 port=%d user=postgres dbname=%s" % (self.port, database)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if os.environ.get("PAYD_KEEP_TMP") != "1":
            shutil.rmtree(self.tmp, True)


_PG = []


def postgres():
    """The run's PostgreSQL server, started on first use."""
    with _ALL_LOCK:
        if not _PG:
            pg = Postgres()
            atexit.register(pg.stop)
            _PG.append(pg.start())
        return _PG[0]


def store_env(data_dir):
    """What payd needs to find the store of data_dir: nothing for SQLite
    (it lives in the data directory), the database URL for PostgreSQL."""
    if STORE != "postgres":
        return {}
    pg = postgres()
    return {"PAYD_STORE_BACKEND": "postgres",
            "PAYD_STORE_URL": pg.url(pg.database_for(data_dir))}


def wait_until(fn, timeout=FINAL_DEADLINE_S, interval=POLL_S, what="condition"):
    """Calls fn() until it returns a truthy value; returns that value, or
    raises AssertionError after `timeout` seconds with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0f s waiting for %s; last: %r"
                                 % (timeout, what, last))
        time.sleep(interval)


class Response:
    """An HTTP answer. Unpacks as (status, headers, body) where body is the
    parsed JSON or else the text; `raw` keeps the exact bytes."""

    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers          # http.client.HTTPMessage: case-insensitive
        self.raw = raw
        try:
            self.body = json.loads(raw.decode("utf-8")) if raw else None
            self.is_json = raw != b""
        except (ValueError, UnicodeDecodeError):
            self.body = raw.decode("utf-8", "replace")
            self.is_json = False

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def header(self, name):
        return self.headers.get(name)

    @property
    def error(self):
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"]
        return None

    def __repr__(self):
        text = self.raw[:600].decode("utf-8", "replace")
        return "<HTTP %s %s>" % (self.status, text)


def encode_body(body):
    """A request body as bytes: dict/list as JSON, str as UTF-8, bytes as
    they are; None stays None (no body)."""
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def http_request(port, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT_S):
    """One request on a fresh connection. body: dict/list (sent as JSON), str
    or bytes (sent as is) or None."""
    data = encode_body(body)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
            hdrs["Content-Length"] = str(len(data))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders()
        if data:
            try:
                conn.send(data)
            except (BrokenPipeError, ConnectionResetError):
                # The server may answer (e.g. 413) and close before reading
                # everything; its answer is still to be read.
                pass
        resp = conn.getresponse()
        raw = resp.read()
        return Response(resp.status, resp.headers, raw)
    finally:
        conn.close()


def run_cli(args, env=None, timeout=60):
    """Runs `payd ARGS` and returns the CompletedProcess (text)."""
    args = list(args)
    full_env = {}
    if "--data-dir" in args and args.index("--data-dir") + 1 < len(args):
        full_env.update(store_env(args[args.index("--data-dir") + 1]))
    full_env.update(env or {})
    return subprocess.run([PAYD_BIN] + args, env=child_env(full_env),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)


def last_line(text):
    lines = [l for l in text.splitlines() if l.strip() != ""]
    return lines[-1].strip() if lines else ""


def db_connect(path):
    """A read-only connection to an SQLite file; falls back to reading a copy
    when the file cannot be opened read-only (e.g. WAL without -shm)."""
    try:
        con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return con
    except sqlite3.OperationalError:
        tmp = tempfile.mkdtemp(prefix="payd-dbcopy-")
        atexit.register(shutil.rmtree, tmp, True)
        for suffix in ("", "-wal"):
            if os.path.exists(path + suffix):
                shutil.copy(path + suffix, os.path.join(tmp, "copy.db" + suffix))
        return sqlite3.connect(os.path.join(tmp, "copy.db"), timeout=30)


def db_query(path, sql, params=()):
    """Rows of one query, plus the column names: (rows, columns)."""
    con = db_connect(path)
    try:
        cur = con.execute(sql, params)
        cols = [d[0] for d in cur.description] if cur.description else []
        return cur.fetchall(), cols
    finally:
        con.close()


def db_exec_file(path, sql, params=()):
    """Runs one writing statement on an SQLite file (a channel's journal),
    committed at once; returns the rows it changed."""
    con = sqlite3.connect(path, timeout=30)
    try:
        cur = con.execute(sql, params)
        con.commit()
        return cur.rowcount
    finally:
        con.close()


class Process:
    """A server process of the tests (payd, or paysim: tests/integration/
    paysim.py) in a temp dir of its own holding stdout.log and stderr.log
    (appended to, a marker line at each start) and whatever the subclass
    keeps there. It is signalled by its own pid, never by name, and killed at
    exit if a test left it running. A subclass gives command() and, when it
    is not ours, the environment()."""

    program = "process"  # in messages

    def __init__(self, name, tmp_prefix):
        self.tmp = tempfile.mkdtemp(prefix=tmp_prefix)
        self.name = name
        self.proc = None
        self.port = None
        self.starts = 0
        self.stdout_offset = 0  # where the output of the last start begins
        self.stdout_path = os.path.join(self.tmp, "stdout.log")
        self.stderr_path = os.path.join(self.tmp, "stderr.log")
        with _ALL_LOCK:
            _ALL_SERVERS.append(self)

    def command(self):
        raise NotImplementedError

    def environment(self):
        """The process's environment; None: ours."""
        return None

    def spawn(self, port=None):
        """Starts the process (on port, else a free one) without waiting for
        it to serve; returns the Popen."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.port = port or free_port()
        self.starts += 1
        out = open(self.stdout_path, "ab")
        err = open(self.stderr_path, "ab")
        marker = ("\n===== start %d (port %d) =====\n" % (self.starts, self.port)).encode()
        out.write(marker)
        err.write(marker)
        out.flush()
        err.flush()
        self.stdout_offset = out.tell()
        try:
            self.proc = subprocess.Popen(self.command(), env=self.environment(),
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=self.tmp, start_new_session=True)
        finally:
            out.close()
            err.close()
        return self.proc

    def wait_serving(self, ready, deadline, what):
        """Calls ready() until it is true; raises when the process exits
        first, or (killing it) when `deadline` seconds pass: "<program> did
        not <what> within ..."."""
        end = time.monotonic() + deadline
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("%s exited with status %s before serving\n"
                                     "command: %s\n--- stderr ---\n%s"
                                     % (self.program, rc, " ".join(self.command()),
                                        self.stderr_tail()))
            if ready():
                return
            if time.monotonic() >= end:
                self.kill9()
                raise AssertionError("%s did not %s within %.0f s\n--- stderr ---\n%s"
                                     % (self.program, what, deadline, self.stderr_tail()))
            time.sleep(POLL_S)

    def restart(self):
        """SIGTERM (if running), then start again on the same data directory."""
        if self.running():
            self.stop()
        return self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Sends sig (SIGTERM) to the pid and waits; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise AssertionError("%s did not exit within %d s of signal %d\n%s"
                                     % (self.program, timeout, sig, self.stderr_tail()))
        return self.proc.returncode

    def kill9(self):
        """SIGKILL by pid and reap."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
        return self.proc.returncode

    def cleanup(self):
        self.kill9()
        with _ALL_LOCK:
            if self in _ALL_SERVERS:
                _ALL_SERVERS.remove(self)
        if os.environ.get("PAYD_KEEP_TMP") != "1":
            shutil.rmtree(self.tmp, ignore_errors=True)

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout_text(self, since_start=False):
        """stdout.log, or what the last start printed."""
        try:
            with open(self.stdout_path, "rb") as f:
                f.seek(self.stdout_offset if since_start else 0)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, limit=8000):
        text = self.stderr_text()
        return text[-limit:] if len(text) > limit else text


class Server(Process):
    """One payd process with a temp dir holding: data/ (the data directory),
    payd.ini (when a config is given), stdout.log and stderr.log."""

    program = "payd"

    def __init__(self, config=None, env=None, fast=True, data_dir=None, listen=True,
                 args=None, name="payd", pass_data_dir=True):
        super().__init__(name, "payd-it-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.env = dict(FAST_ENV) if fast else {}
        self.env.update(env or {})
        self.config_path = None
        if config is not None:
            self.config_path = os.path.join(self.tmp, "payd.ini")
            with open(self.config_path, "w") as f:
                f.write(config)
        self.listen = listen        # True: pass --listen 127.0.0.1:<free port>
        self.pass_data_dir = pass_data_dir  # False: no --data-dir flag
        self.extra_args = list(args or [])
        self._key = None

    # ---- process ------------------------------------------------------------

    def command(self):
        cmd = [PAYD_BIN, "serve"]
        if self.pass_data_dir:
            cmd += ["--data-dir", self.data_dir]
        if self.listen is True:
            cmd += ["--listen", "127.0.0.1:%d" % self.port]
        if self.config_path:
            cmd += ["--config", self.config_path]
        return cmd + self.extra_args

    def environment(self):
        env = store_env(self.data_dir)
        env.update(self.env)
        return child_env(env)

    def start(self, port=None, deadline=START_DEADLINE_S):
        """Starts payd and waits for GET /healthz 200."""
        self.spawn(port)
        self.wait_serving(self.healthy, deadline, "answer /healthz 200")
        self._key = None
        return self

    def healthy(self):
        try:
            return http_request(self.port, "GET", "/healthz", timeout=2).status == 200
        except (OSError, http.client.HTTPException):
            return False

    # ---- files ----------------------------------------------------------------

    @property
    def key(self):
        """The demo merchant's key, from DIR/demo.key."""
        if self._key is None:
            with open(os.path.join(self.data_dir, "demo.key")) as f:
                self._key = f.read().strip()
        return self._key

    @property
    def db_path(self):
        return os.path.join(self.data_dir, "payd.db")

    @property
    def sandbox_path(self):
        return os.path.join(self.data_dir, "sandbox.db")

    def db(self, sql, params=()):
        return self.db_rows(sql, params)[0]

    def db_rows(self, sql, params=()):
        """Rows and column names of one query on this server's store
        (SQL with `?` parameters, as sqlite3 takes them)."""
        if STORE != "postgres":
            return db_query(self.db_path, sql, params)
        pg = postgres()
        con = pg.connect(pg.database_for(self.data_dir))
        try:
            cur = con.cursor()
            cur.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(params))
            cols = [d[0] for d in cur.description] if cur.description else []
            return [tuple(r) for r in cur.fetchall()] if cur.description else [], cols
        finally:
            con.close()

    def db_scalar(self, sql, params=()):
        return self.db(sql, params)[0][0]

    def db_exec(self, sql, params=()):
        """Runs one writing statement on this server's store, from outside
        payd (SQL with `?` parameters), committed at once; returns the
        number of rows it changed. For tests that damage the store on
        purpose (e.g. an unbalanced ledger entry)."""
        if STORE != "postgres":
            con = sqlite3.connect(self.db_path, timeout=30)
            try:
                cur = con.execute(sql, params)
                con.commit()
                return cur.rowcount
            finally:
                con.close()
        pg = postgres()
        con = pg.connect(pg.database_for(self.data_dir))
        try:
            cur = con.cursor()
            cur.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(params))
            return cur.rowcount
        finally:
            con.close()

    def table_counts(self):
        """Row count of every table in payd.db and of sandbox.db's charges."""
        counts = {}
        if STORE == "postgres":
            names = [r[0] for r in self.db(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
            for n in names:
                if n not in VOLATILE_TABLES:
                    counts[n] = self.db_scalar('SELECT count(*) FROM "%s"' % n)
        else:
            con = db_connect(self.db_path)
            try:
                names = [r[0] for r in con.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
                for n in names:
                    if n in VOLATILE_TABLES:
                        continue
                    counts[n] = con.execute('SELECT count(*) FROM "%s"' % n).fetchone()[0]
            finally:
                con.close()
        if os.path.exists(self.sandbox_path):
            counts["sandbox.charges"] = len(self.charges())
        return counts

    def store_dump(self):
        """Everything the store holds, as bytes: the database files (SQLite)
        or every row of every table as text (PostgreSQL)."""
        if STORE == "postgres":
            tables = [r[0] for r in self.db(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            return "\n".join(str(r[0]) for t in tables
                             for r in self.db('SELECT t::text FROM "%s" t' % t)).encode()
        blob = b""
        for fn in os.listdir(self.data_dir):
            path = os.path.join(self.data_dir, fn)
            if fn.startswith("payd.db") and os.path.isfile(path):
                with open(path, "rb") as f:
                    blob += f.read()
        return blob

    def charges(self):
        """The sandbox journal: a list of dicts, one per row of `charges`."""
        rows, cols = db_query(self.sandbox_path, "SELECT * FROM charges")
        return [dict(zip(cols, r)) for r in rows]

    def succeeded_charge_serials(self):
        """serial_no of every charge in the sandbox journal that succeeded
        (all rows, if the journal has no status column)."""
        out = []
        for c in self.charges():
            st = None
            for col in ("status", "outcome", "result", "state"):
                if col in c:
                    st = c[col]
                    break
            if st is None or str(st).lower() in ("succeeded", "success", "ok", "charged"):
                out.append(c["serial_no"])
        return out

    # ---- HTTP -----------------------------------------------------------------

    def request(self, method, path, body=None, key=_DEFAULT, headers=None,
                idem=None, timeout=HTTP_TIMEOUT_S):
        """key: the default is the demo key; None sends no Authorization."""
        hdrs = {}
        if key is _DEFAULT:
            key = self.key
        if key is not None:
            hdrs["Authorization"] = "Bearer " + key
        if idem is not None:
            hdrs["Idempotency-Key"] = idem
        hdrs.update(headers or {})
        return http_request(self.port, method, path, body, hdrs, timeout=timeout)

    # Convenience wrappers for the common calls.

    def create_order(self, merchant_order_no=None, amount=1999, currency="CNY",
                     description=None, key=_DEFAULT, expect=201):
        body = {"merchant_order_no": merchant_order_no or unique("A"),
                "amount": amount, "currency": currency}
        if description is not None:
            body["description"] = description
        r = self.request("POST", "/v1/orders", body, key=key)
        if expect is not None and r.status != expect:
            raise AssertionError("POST /v1/orders %s -> %r (expected %s)" % (body, r, expect))
        return r.body

    def pay(self, order_id, method="ok", idem=None, key=_DEFAULT, channel="sandbox"):
        return self.request("POST", "/v1/payments",
                            {"order_id": order_id, "channel": channel, "method": method},
                            key=key, idem=idem)

    def get_payment(self, pid, key=_DEFAULT):
        return self.request("GET", "/v1/payments/" + pid, key=key)

    def wait_payment_final(self, pid, key=_DEFAULT, timeout=FINAL_DEADLINE_S):
        """Polls GET /v1/payments/{id} until succeeded or failed; returns it."""
        def final():
            r = self.get_payment(pid, key=key)
            if r.status != 200:
                raise AssertionError("GET /v1/payments/%s -> %r" % (pid, r))
            return r.body if r.body.get("status") in ("succeeded", "failed") else None
        return wait_until(final, timeout=timeout, what="payment %s to be final" % pid)

    def get_order(self, oid, key=_DEFAULT):
        return self.request("GET", "/v1/orders/" + oid, key=key)

    def list_payments(self, oid, key=_DEFAULT):
        return self.request("GET", "/v1/payments?order_id=" + oid, key=key)

    def add_merchant(self, name):
        """`payd merchant add NAME`; returns the new key."""
        cp = run_cli(["merchant", "add", name, "--data-dir", self.data_dir])
        if cp.returncode != 0:
            raise AssertionError("merchant add %s -> %d\n%s%s"
                                 % (name, cp.returncode, cp.stdout, cp.stderr))
        return last_line(cp.stdout)


_counter = [0]
_counter_lock = threading.Lock()


def unique(prefix="x"):
    """A short unique string for order numbers and keys."""
    with _counter_lock:
        _counter[0] += 1
        n = _counter[0]
    return "%s-%d-%d-%d" % (prefix, os.getpid(), int(time.time() * 1000) % 10**8, n)


def started(process):
    """process.start(); when that fails, process.cleanup() and the error."""
    try:
        return process.start()
    except BaseException:
        process.cleanup()
        raise


def stderr_report(processes, limit=4000):
    """The end of each process's stderr, for the report of a failed test."""
    return "\n".join("--- %s stderr (%s) ---\n%s" % (p.name, p.stderr_path, p.stderr_tail(limit))
                     for p in processes)


class PaydTestCase(unittest.TestCase):
    """Base class. A subclass sets `server_config`/`server_env` to get one
    shared server for the class (`cls.server`); `start_server()` starts extra
    servers that are cleaned up after the test. On failure the runner prints
    the stderr of the servers the test used."""

    shared_server = True
    server_config = None
    server_env = None
    server_fast = True
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.server = None
        if cls.shared_server:
            cls.server = started(Server(config=cls.server_config, env=cls.server_env,
                                        fast=cls.server_fast, name=cls.__name__))

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.cleanup()

    def setUp(self):
        self._extra_servers = []

    def start_server(self, start=True, **kw):
        s = Server(name=self.id(), **kw)
        self._extra_servers.append(s)
        self.addCleanup(s.cleanup)
        if start:
            s.start()
        return s

    def servers_for_report(self):
        out = []
        if getattr(self, "server", None) is not None:
            out.append(self.server)
        out.extend(getattr(self, "_extra_servers", []))
        return out

    def server_logs(self):
        return stderr_report(self.servers_for_report())

    # ---- assertions -----------------------------------------------------------

    def assertError(self, r, status, type_, code, param=_DEFAULT):
        """Asserts an error answer: status, JSON body with error.type, .code,
        a non-empty .message and (when given) .param (None: absent/null)."""
        self.assertEqual(r.status, status, "status of %r" % (r,))
        self.assertTrue(r.is_json, "error body is not JSON: %r" % (r,))
        err = r.error
        self.assertIsNotNone(err, "no error object in %r" % (r,))
        self.assertEqual(err.get("type"), type_, "error.type of %r" % (r,))
        self.assertEqual(err.get("code"), code, "error.code of %r" % (r,))
        self.assertIsInstance(err.get("message"), str, "error.message of %r" % (r,))
        self.assertTrue(err.get("message"), "empty error.message in %r" % (r,))
        if param is not _DEFAULT:
            self.assertEqual(err.get("param"), param, "error.param of %r" % (r,))
        ct = r.header("Content-Type") or ""
        self.assertTrue(ct.startswith("application/json"), "Content-Type %r of %r" % (ct, r))
        return err

    def assertStatus(self, r, status):
        self.assertEqual(r.status, status, "unexpected answer %r" % (r,))
        return r.body

    def assertRFC3339(self, value):
        self.assertIsInstance(value, str)
        self.assertRegex(value, RFC3339_MS)
        # Plausible: within a day of now (the host clock is the server clock).
        t = time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
        import calendar
        self.assertLess(abs(calendar.timegm(t) - time.time()), 86400, value)


def fire(n, fn):
    """Runs fn(i) in n threads released together; returns the results (or
    the exceptions raised)."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return results


# ---- /metrics ------------------------------------------------------------------

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$')
LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    """Prometheus text format 0.0.4 -> ({(name, frozenset(labels)): value},
    {family: type}). AssertionError on a line that is not well formed or a
    sample exposed twice."""
    samples, types = {}, {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3]
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            raise AssertionError("bad exposition line: %r" % line)
        labels, body, pos = {}, m.group(2) or "", 0
        while pos < len(body):
            lm = LABEL_RE.match(body, pos)
            if not lm:
                raise AssertionError("bad labels in line: %r" % line)
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        key = (m.group(1), frozenset(labels.items()))
        if key in samples:
            raise AssertionError("sample exposed twice: %r" % line)
        samples[key] = float(m.group(3))
    return samples, types


def scrape(server):
    r = server.request("GET", "/metrics", key=None)
    assert r.status == 200, r
    assert (r.header("Content-Type") or "").startswith("text/plain"), r.header("Content-Type")
    return r.raw.decode("utf-8")


def metrics(server):
    return parse_metrics(scrape(server))[0]


def value(samples, name, **labels):
    """The sum of the samples of `name` whose labels include `labels`;
    None when there is no such sample."""
    found = None
    for (n, ls), v in samples.items():
        if n == name and set(labels.items()) <= set(ls):
            found = (found or 0.0) + v
    return found


def gauge(server, name, **labels):
    return value(metrics(server), name, **labels)
