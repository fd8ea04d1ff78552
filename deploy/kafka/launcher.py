"""Runs the real Apache Kafka broker (KRaft, single node) from Maven Central jars.

fetch  -> `mvn dependency:copy-dependencies` of kafka_2.13 into a cache outside the repository
up     -> format the storage once (`kafka-storage format --standalone`), start the JVM detached,
          wait until it answers, create the topics of the catalog; a second `up` finds it running
down   -> SIGTERM (controlled shutdown), SIGKILL after a grace period; no process is left behind

Kafka version: 4.4.0, the newest release on Maven Central when this was written. It was checked
against aiokafka 0.14.0 (produce with acks=all and idempotence, consumer groups with static
membership, read_committed fetches); the integration tests and the fault suite run on it.
Set SAFETY_MONITOR_KAFKA_VERSION to try another (4.0.x and 4.1.x work as well).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.topics import CATALOG, Topic

HERE = Path(__file__).parent
DEFAULT_VERSION = "4.4.0"


class LauncherError(RuntimeError):
    """A problem the user can fix: Java or Maven missing, a port taken, a broker that won't run."""


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAFETY_MONITOR_KAFKA_")

    version: str = DEFAULT_VERSION
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache/safety-monitor/kafka")
    state_dir: Path = Field(default_factory=lambda: Path.cwd() / ".local/kafka")
    port: int = 9092
    controller_port: int | None = None  # default: port + 1
    heap: str = "512m"
    start_timeout_s: float = 90.0


@dataclass(frozen=True)
class Status:
    running: bool
    pid: int | None
    bootstrap: str
    version: str
    fresh: bool = False  # this `up` formatted new, empty storage

    def __str__(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "stopped"
        return f"kafka {self.version} {state} at {self.bootstrap}"


def _require(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LauncherError(
            f"{tool} is not on PATH; it is needed to {why}. "
            "Install it (Debian: apt-get install openjdk-17-jre-headless maven) and try again."
        )
    return path


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in base64url without padding (22 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _alive(pid: int) -> bool:
    """Whether pid is a live (not zombie) Kafka broker process."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and b"kafka.Kafka" in cmdline


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class KafkaLauncher:
    def __init__(self, settings: KafkaSettings) -> None:
        self.s = settings
        self.controller_port = settings.controller_port or settings.port + 1
        self.home = settings.state_dir
        self.libs = settings.cache_dir / settings.version / "libs"
        self.pid_file = self.home / "broker.pid"
        self.log_file = self.home / "broker.log"
        self.config_file = self.home / "server.properties"
        self.data_dir = self.home / "data"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.s.port}"

    # -- jars -------------------------------------------------------------------------------
    def fetch(self) -> Path:
        """The directory of broker jars, fetched with Maven on first use."""
        if (self.libs / ".complete").exists():
            return self.libs
        mvn = _require("mvn", "fetch the Kafka broker jars from Maven Central")
        work = self.libs.parent
        work.mkdir(parents=True, exist_ok=True)
        pom = (HERE / "pom.xml").read_text().replace("@KAFKA_VERSION@", self.s.version)
        (work / "pom.xml").write_text(pom)
        staging = work / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [mvn, "-B", "-q", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
               f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LauncherError(
                f"Maven could not fetch kafka_2.13:{self.s.version}:\n{done.stdout[-3000:]}"
            )
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        (self.libs / ".complete").write_text(self.s.version)
        return self.libs

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        java = _require("java", "run the Kafka broker (Java 17 or newer)")
        return [java, f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={HERE / 'log4j2.yaml'}",
                "-cp", f"{self.libs}/*", main, *args]  # fmt: skip

    # -- storage ------------------------------------------------------------------------------
    def format(self) -> bool:
        """Formats the storage once; returns whether it formatted (False: already formatted)."""
        if (self.data_dir / "meta.properties").exists():
            return False
        self.home.mkdir(parents=True, exist_ok=True)
        config = (HERE / "server.properties").read_text()
        for k, v in {
            "@PORT@": str(self.s.port),
            "@CONTROLLER_PORT@": str(self.controller_port),
            "@LOG_DIR@": str(self.data_dir),
        }.items():
            config = config.replace(k, v)
        self.config_file.write_text(config)
        # "--cluster-id=ID", not "-t ID": an id starting with '-' would read as an option
        cluster = f"--cluster-id={new_cluster_id()}"
        cmd = self._java("kafka.tools.StorageTool", "format", "--standalone", cluster,
                         "-c", str(self.config_file))  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LauncherError(f"kafka-storage format failed:\n{done.stdout}{done.stderr}")
        return True

    # -- process ------------------------------------------------------------------------------
    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def status(self) -> Status:
        pid = self._pid()
        running = pid is not None and _alive(pid)
        return Status(running, pid if running else None, self.bootstrap, self.s.version)

    def up(self, *, create_topics: bool = True) -> Status:
        """Starts the broker unless it runs already; idempotent. Returns when it answers."""
        current = self.status()
        if current.running:
            if create_topics:
                ensure_topics(self.bootstrap)
            return current
        self.fetch()
        fresh = self.format()
        for port in (self.s.port, self.controller_port):
            if _port_open(port):
                raise LauncherError(
                    f"port {port} is already in use by another process; "
                    "set SAFETY_MONITOR_KAFKA_PORT to a free port"
                )
        cmd = self._java("kafka.Kafka", str(self.config_file), heap=self.s.heap)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.home,
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        self._wait_ready(proc)
        if create_topics:
            ensure_topics(self.bootstrap)
        return replace(self.status(), fresh=fresh)

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.s.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-3000:]
                raise LauncherError(f"the broker exited with {proc.returncode}:\n{tail}")
            if _port_open(self.s.port) and asyncio.run(_answers(self.bootstrap)):
                return
            time.sleep(0.2)
        self.down()
        raise LauncherError(
            f"the broker did not answer within {self.s.start_timeout_s:.0f}s; see {self.log_file}"
        )

    def down(self, *, purge: bool = False, grace_s: float = 30.0) -> bool:
        """Stops the broker (controlled shutdown, then SIGKILL); returns whether one was running."""
        pid = self._pid()
        was_running = pid is not None and _alive(pid)
        if pid is not None and was_running:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
                while _alive(pid):
                    time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        if purge:
            shutil.rmtree(self.home, ignore_errors=True)
        return was_running


async def _answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        await admin.close()


async def create_topics(
    bootstrap: str, topics: tuple[Topic, ...] = CATALOG, replication_factor: int = 1
) -> list[str]:
    """Creates the catalog's topics that do not exist yet; returns the names it created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t.name not in existing]
        if not wanted:
            return []
        response = await admin.create_topics(
            [NewTopic(t.name, t.partitions, replication_factor, topic_configs=t.config)
             for t in wanted]
        )  # fmt: skip
        created = []
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:  # a concurrent `up` created it first
                raise LauncherError(f"could not create topic {name}: {for_code(code).__name__}")
        await _wait_for_leaders(admin, [t.name for t in wanted])
        return created
    finally:
        await admin.close()


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 30
) -> None:
    """Waits until every partition of `names` has a leader, so the first produce succeeds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = await admin.describe_topics(names)
        if all(
            t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        await asyncio.sleep(0.1)
    raise LauncherError(f"topics {names} have no leader after {timeout_s:.0f}s")


def ensure_topics(bootstrap: str, replication_factor: int = 1) -> list[str]:
    """Creates the catalog's missing topics. In production pass replication_factor=3 and set
    min.insync.replicas=2 on the brokers; producers use acks=all with idempotence."""
    return asyncio.run(create_topics(bootstrap, replication_factor=replication_factor))
