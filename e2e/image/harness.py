"""Shared harness for the image tier: the image's real scripts on this host,
against real PostgreSQL binaries installed by e2e/setup/install-postgres.sh.

An `Instance` lays out what the container would have, under one directory:

    <root>/volume        PGSTEWARD_VOLUME  (/var/lib/postgresql in the image)
    <root>/volume/<major>/docker           PGDATA
    <root>/etc           PGSTEWARD_CONFIG_DIR (/etc/postgresql), a copy of
                         images/postgres/config plus an empty conf.d/
    <root>/run           PGSTEWARD_RUN_DIR (/var/run/postgresql), the socket
    <storage>            the backup storage (storage.py): WALG_FILE_PREFIX=<root>/storage
                         by default, or an S3 bucket on the tier's own S3 server;
                         shared between instances for clones

PostgreSQL refuses to run as root, so every server process and script runs as
the unprivileged `postgres` user, as it does in a pod with runAsUser 999.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from storage import FileStorage, S3Storage

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "images" / "postgres" / "scripts"
CONFIG = REPO / "images" / "postgres" / "config"
STANDINS = REPO / "e2e" / "standins"
CACHE = Path(os.environ.get("PGSTEWARD_CACHE", "/var/cache/pgsteward"))
RUN_USER = os.environ.get("PGSTEWARD_TEST_USER", "postgres")
WORK_BASE = Path(os.environ.get("PGSTEWARD_TEST_WORKDIR", "/tmp/pgsteward-e2e"))
SUPERUSER_PASSWORD = "s3cr3t-test-password"
# Every credential the tier hands out, for the shared leak check
# (e2e/leakcheck.py): the S3 servers add theirs.
CREDENTIALS = {"the superuser password": SUPERUSER_PASSWORD}


def pg_bindir(major: int) -> Path:
    return CACHE / "pg" / str(major) / "bin"


def majors_available() -> list[int]:
    return sorted(
        int(p.name) for p in (CACHE / "pg").glob("*") if (p / "bin" / "postgres").exists()
    )


STANDIN_WALG = str(STANDINS / "wal-g")


def walg_bin() -> str:
    """The wal-g the tier runs: PGSTEWARD_WALG=/path/to/wal-g (WALG_BIN is the
    older name), else the labelled stand-in e2e/standins/wal-g."""
    return os.environ.get("PGSTEWARD_WALG") or os.environ.get("WALG_BIN") or STANDIN_WALG


def using_standin() -> bool:
    return os.path.realpath(walg_bin()) == os.path.realpath(STANDIN_WALG)


def walg_version() -> str:
    proc = subprocess.run([walg_bin(), "--version"], capture_output=True, text=True, timeout=30)
    return " ".join((proc.stdout or proc.stderr).split()) or f"(exit {proc.returncode}, no output)"


def walg_supports(kind: str) -> str | None:
    """None when the chosen wal-g can use storage `kind`, else why not."""
    if kind == "file":
        return None
    if using_standin():
        return (f"the WAL-G stand-in implements only file storage, not {kind}; "
                "run the tier with PGSTEWARD_WALG=/path/to/real/wal-g")
    return None


def run_user_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(RUN_USER)
    return entry.pw_uid, entry.pw_gid


def chown_to_run_user(path: Path) -> None:
    uid, gid = run_user_ids()
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def as_run_user(argv: list[str]) -> list[str]:
    """Wrap a command so it runs as the unprivileged user (no-op if we are it)."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", f"--reuid={RUN_USER}", f"--regid={RUN_USER}", "--init-groups", "--", *argv]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_workdir(name: str) -> Path:
    WORK_BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(WORK_BASE, 0o755)
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=WORK_BASE))
    os.chmod(path, 0o755)
    return path


class Instance:
    """One PostgreSQL instance laid out as the image lays it out."""

    def __init__(self, root: Path, major: int, storage=None, env: dict | None = None):
        self.root = root
        self.major = major
        self.volume = root / "volume"
        self.config_dir = root / "etc"
        self.run_dir = root / "run"
        self.log_path = root / "server.log"
        if storage is None:
            storage = FileStorage(root / "storage")
        elif isinstance(storage, (str, Path)):
            storage = FileStorage(Path(storage))
        self.storage: FileStorage | S3Storage = storage
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        for d in (self.volume, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        if isinstance(self.storage, FileStorage):
            self.storage.path.mkdir(parents=True, exist_ok=True)
        if not self.config_dir.exists():
            shutil.copytree(CONFIG, self.config_dir)
        (self.config_dir / "conf.d").mkdir(exist_ok=True)
        chown_to_run_user(self.root)
        if isinstance(self.storage, FileStorage) and not str(self.storage.path).startswith(str(self.root)):
            chown_to_run_user(self.storage.path)
        self.extra_env = dict(env or {})

    # -- environment -------------------------------------------------------
    @property
    def pgdata(self) -> Path:
        return Path(self.env()["PGDATA"])

    @property
    def state_dir(self) -> Path:
        return self.volume / "pgsteward"

    def env(self, **overrides) -> dict:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "WALG_", "AWS_"))}
        path = ":".join([str(pg_bindir(self.major)), str(SCRIPTS), str(STANDINS), base.get("PATH", "/usr/bin:/bin")])
        env = {
            **base,
            "PATH": path,
            "PG_MAJOR": str(self.major),
            "PGSTEWARD_VOLUME": str(self.volume),
            "PGDATA": str(self.volume / str(self.major) / "docker"),
            "PGSTEWARD_CONFIG_DIR": str(self.config_dir),
            "PGSTEWARD_RUN_DIR": str(self.run_dir),
            "PGHOST": str(self.run_dir),
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            "POSTGRES_PASSWORD": SUPERUSER_PASSWORD,
            "WALG_BIN": walg_bin(),
            **self.storage.env(),
            "DOCKER_ENTRYPOINT": str(STANDINS / "docker-entrypoint.sh"),
            "LC_ALL": "C.UTF-8",
        }
        env.update(self.extra_env)
        env.update({k: str(v) for k, v in overrides.items()})
        return {k: v for k, v in env.items() if v is not None and v != "__unset__"}

    def use_major(self, major: int) -> None:
        """Switch the binaries, as moving the pod to a newer image does."""
        self.major = major

    # -- processes ---------------------------------------------------------
    def run(self, argv: list[str], check: bool = True, timeout: float = 300, as_root: bool = False,
            **env_overrides) -> subprocess.CompletedProcess:
        cmd = argv if as_root else as_run_user(argv)
        proc = subprocess.run(cmd, env=self.env(**env_overrides), cwd=self.root, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        return proc

    def script(self, name: str, *args: str, check: bool = True, timeout: float = 600, **env_overrides):
        return self.run([str(SCRIPTS / name), *args], check=check, timeout=timeout, **env_overrides)

    def start(self, *postgres_args: str, as_root: bool = False, wait: bool = True, timeout: float = 120,
              **env_overrides) -> subprocess.Popen:
        """Run the image's entrypoint in the background, like the container's PID 1."""
        assert self.proc is None or self.proc.poll() is not None, "already started"
        cmd = [str(SCRIPTS / "entrypoint.sh"), "postgres", *postgres_args]
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd if as_root else as_run_user(cmd), env=self.env(**env_overrides),
                                     cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self.proc

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"entrypoint exited {self.proc.returncode}\n{self.log()}")
            ok = subprocess.run([str(pg_bindir(self.major) / "pg_isready"), "-q", "-h", str(self.run_dir),
                                 "-p", str(self.port)], capture_output=True)
            if ok.returncode == 0 and self._final_server_up() and self.query("select 1", check=False) == "1":
                return
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s\n{self.log()}")

    def _final_server_up(self) -> bool:
        """The server that the entrypoint execs keeps its pid; the official
        entrypoint's temporary init server, on the same socket, does not."""
        if self.proc is None:
            return True
        try:
            return (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip() == str(self.proc.pid)
        except OSError:
            return False

    def wait_exit(self, timeout: float = 300) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 60) -> None:
        """Fast shutdown, as the image's STOPSIGNAL SIGINT does."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # A server started by a script (pg_ctl) outside the entrypoint.
        if (self.pgdata / "postmaster.pid").exists():
            self.run([str(pg_bindir(self.major) / "pg_ctl"), "-D", str(self.pgdata), "stop", "-m", "fast", "-w"],
                     check=False)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- SQL ---------------------------------------------------------------
    def psql(self, sql: str, check: bool = True, dbname: str = "postgres", **kw) -> subprocess.CompletedProcess:
        argv = [str(pg_bindir(self.major) / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.run_dir), "-p", str(self.port), "-U", "postgres", "-d", dbname, "-c", sql]
        return self.run(argv, check=check, **kw)

    def query(self, sql: str, check: bool = True, dbname: str = "postgres") -> str:
        return self.psql(sql, check=check, dbname=dbname).stdout.strip()

    def server_version_num(self) -> int:
        return int(self.query("show server_version_num"))

    # -- state files -------------------------------------------------------
    def result(self, kind: str, request_id: str | None = None) -> dict:
        path = self.state_dir / (f"results/{kind}/{request_id}.json" if request_id else f"{kind}.json")
        return json.loads(path.read_text())


def new_instance(name: str, major: int, storage=None, env: dict | None = None) -> Instance:
    return Instance(make_workdir(name), major, storage=storage, env=env)


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
