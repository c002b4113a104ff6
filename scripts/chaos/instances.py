# ruff: noqa: S603, S607  (this module runs the machine's own server binaries)
"""Private PostgreSQL, Redis, RabbitMQ and OpenBao servers for `make chaos` and `make vault-dr`.

Each runs from the machine's binaries in a directory of its own, on its own port, so that a
drill may stop, kill and restart it. The machine's shared servers (Postgres 5432, Redis 6379,
RabbitMQ 5672, OpenBao 8200) are never touched.

- PostgreSQL: `initdb` + `pg_ctl` from /usr/lib/postgresql/<v>/bin, run as the `postgres`
  user (initdb refuses root), trust auth on 127.0.0.1 only.
- Redis: `redis-server` with an append-only file in its directory (a restart keeps data).
- RabbitMQ: `rabbitmq-server` as a second Erlang node on the machine (own RABBITMQ_NODENAME,
  AMQP and distribution ports, mnesia/log/feature-flag/quorum directories owned by the
  `rabbitmq` user; it shares the machine's epmd and Erlang cookie, which is how a second
  node runs beside the first).
- OpenBao: `.venv/bin/bao server` with integrated (raft) storage, one node (OpenBao 2 has no
  `file` backend): a restart keeps every secret; it comes back sealed and is unsealed with
  the key kept from `init`. Raft also gives `bao operator raft snapshot save/restore`.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BAO = ROOT / ".venv" / "bin" / "bao"
SHARED_PORTS = (5432, 6379, 5672, 8200)


class InstanceError(RuntimeError):
    """A private server did not start or stop as asked."""


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free enough
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(check: object, seconds: float, what: str) -> float:
    """Poll `check()` until true; return the seconds it took, raise after `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if check():  # type: ignore[operator]
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise InstanceError(f"{what}: not ready after {seconds:.0f} s")


def _chown(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for p in path.rglob("*"):
        shutil.chown(p, user, user)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise InstanceError(f"no {name} under /usr/lib/postgresql/*/bin (Debian postgresql)")
    return found[-1]


@dataclass
class Postgres:
    base: Path
    port: int

    @property
    def data(self) -> Path:
        return self.base / "pgdata"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        _chown(self.base, "postgres")
        r = self._as_postgres(
            _pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"
        )
        if r.returncode != 0:
            raise InstanceError(f"initdb: {r.stderr.strip()[-500:]}")

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
            " -c max_connections=400 -c fsync=off"
        )
        r = self._as_postgres(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.base / "postgres.log"),
            "-w",
            "-t",
            "120",
            "start",
        )
        if r.returncode != 0:
            raise InstanceError(f"pg_ctl start: {r.stdout.strip()[-500:]} {r.stderr.strip()}")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


@dataclass
class Redis:
    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        # The services' ACL users (provisioned by the stack, kept with ACL SAVE) come back
        # after a restart, as with a production Redis's aclfile.
        (self.base / "users.acl").touch()
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--aclfile",
                str(self.base / "users.acl"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.base),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--protected-mode",
                "no",
            ],
            stdout=open(self.base / "redis.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_until(self._pong, 30, "redis")

    def _pong(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), 1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def flushall(self) -> None:
        """Empty this private server (cached key verifications, rate-limit buckets)."""
        with socket.create_connection(("127.0.0.1", self.port), 5) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None


@dataclass
class RabbitMQ:
    base: Path
    port: int
    dist_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        """One Erlang node name per AMQP port: two drills may run side by side."""
        return f"pmdrill{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        d = self.base
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(d / "feature_flags"),
            "RABBITMQ_QUORUM_DIR": str(d / "quorum"),
        }

    def start(self) -> None:
        fresh = not self.base.exists()
        self.base.mkdir(parents=True, exist_ok=True)
        if fresh:
            (self.base / "enabled_plugins").write_text("[].\n")
            os.chmod(self.base.parent, 0o755)  # noqa: S103 (the rabbitmq user must reach it)
            _chown(self.base, "rabbitmq")
        self.proc = subprocess.Popen(
            ["rabbitmq-server"],
            env=self.env(),
            stdout=open(self.base.parent / "rabbitmq.out", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._amqp_answers, 180, "rabbitmq")

    def _amqp_answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), 1) as s:
            s.settimeout(2)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(1) == b"\x01"  # connection.start frame

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> None:
        self.ctl("shutdown")
        if self.proc is not None:
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
            self.proc = None


@dataclass
class OpenBao:
    base: Path
    port: int
    unseal_key: str = ""
    root_token: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log_name: str = "bao.log"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(
        self, method: str, path: str, body: object = None, timeout: float = 60, token: str = ""
    ) -> dict[str, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.addr}/v1/{path}", data=data, method=method)  # noqa: S310 (loopback)
        if token:
            req.add_header("X-Vault-Token", token)
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback)
            raw = resp.read()
        return json.loads(raw) if raw else {}

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        conf = self.base / "bao.hcl"
        conf.write_text(
            f'storage "raft" {{\n  path = "{self.base / "data"}"\n  node_id = "pm-drill"\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n'
            f'  cluster_address = "127.0.0.1:{self.port + 1}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.addr}"\ncluster_addr = "http://127.0.0.1:{self.port + 1}"\n'
        )
        (self.base / "data").mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [str(BAO), "server", f"-config={conf}"],
            stdout=open(self.base / self.log_name, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: self._status() is not None, 60, "openbao")
        fresh = not self.unseal_key
        if fresh:
            init = self._call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
            self.unseal_key = str(init["keys_base64"][0])  # type: ignore[index]
            self.root_token = str(init["root_token"])
        self.unseal()
        if fresh:
            self.mount_kv_v2("secret", "api_keys")

    def mount_kv_v2(self, *mounts: str) -> None:
        """KV mounts made as version 2 at once: provisioning would otherwise meet a kv v1
        mount's upgrade ("Upgrading from non-versioned to versioned data") and fail."""
        for mount in mounts:
            body = {"type": "kv", "options": {"version": "2"}}
            self._call("POST", f"sys/mounts/{mount}", body, token=self.root_token)
            wait_until(lambda m=mount: self._kv_ready(m), 60, f"openbao kv {mount}")

    def _kv_ready(self, mount: str) -> bool:
        try:
            self._call("GET", f"{mount}/config", token=self.root_token, timeout=5)
        except urllib.error.HTTPError:
            return False
        return True

    def _status(self) -> dict[str, object] | None:
        try:
            return self._call("GET", "sys/seal-status", timeout=5)
        except OSError:
            return None

    def unseal(self) -> float:
        started = time.monotonic()
        self._call("PUT", "sys/unseal", {"key": self.unseal_key})
        wait_until(self._active, 60, "openbao unseal")
        return time.monotonic() - started

    def _active(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=2)  # noqa: S310
        except urllib.error.HTTPError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None


@dataclass
class PrivateInfra:
    """The four servers of one drill under `base`, on ports `first`..`first+5`
    (OpenBao takes two: API and raft cluster)."""

    base: Path
    first: int = 19400
    postgres: Postgres = field(init=False)
    redis: Redis = field(init=False)
    rabbit: RabbitMQ = field(init=False)
    bao: OpenBao = field(init=False)

    def __post_init__(self) -> None:
        p = self.first
        ports = [p, p + 1, p + 2, p + 3, p + 4, p + 5]
        taken = [x for x in ports if not port_free(x) or x in SHARED_PORTS]
        if taken:
            raise InstanceError(f"ports taken: {taken} (pick another block with --ports)")
        self.postgres = Postgres(self.base / "postgres", p)
        self.redis = Redis(self.base / "redis", p + 1)
        self.rabbit = RabbitMQ(self.base / "rabbitmq", p + 2, p + 3)
        self.bao = OpenBao(self.base / "openbao", p + 4)

    def start(self) -> None:
        # The servers run as their own users (postgres, rabbitmq): they must reach their
        # directories through a temporary directory made 0700 by mkdtemp.
        self.base.mkdir(parents=True, exist_ok=True)
        for d in (self.base.parent, self.base):
            os.chmod(d, 0o755)  # noqa: S103 (read by the postgres and rabbitmq users)
        self.postgres.init()
        self.postgres.start()
        self.redis.start()
        self.rabbit.start()
        self.bao.start()

    def stop(self) -> None:
        for stop in (self.bao.stop, self.rabbit.stop, self.redis.stop, self.postgres.stop):
            try:
                stop()
            except Exception as exc:
                print(f"stop: {type(exc).__name__}: {exc}")

    def stack_env(self, dev_dir: Path, port_offset: int) -> dict[str, str]:
        """What `python -m scripts.dev.stack up` needs to run a separate instance here."""
        return {
            "PM_DEV_DIR": str(dev_dir),
            "PM_DEV_PORT_OFFSET": str(port_offset),
            "PM_ADMIN_DATABASE_URL": self.postgres.admin_dsn,
            "PM_DATABASE_NAME": "pm",
            "PM_AMQP_URL": self.rabbit.url,
            "PM_REDIS_URL": self.redis.url,
            "PM_VAULT_ADDR": self.bao.addr,
            "PM_VAULT_ROOT_TOKEN": self.bao.root_token,
        }
