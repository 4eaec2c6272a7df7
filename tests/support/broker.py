"""A Kafka broker of a test's own, so a test can stop and restart it without touching the
broker every other test shares. Same jars and script as `make run`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

from pydantic import SecretStr

from shared.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local" / "kafka.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalBroker:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.controller_port = free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        await asyncio.to_thread(
            subprocess.run,
            [str(SCRIPT), "start", str(self.directory), str(self.port), str(self.controller_port)],
            check=True,
        )

    async def stop(self) -> None:
        await asyncio.to_thread(
            subprocess.run, [str(SCRIPT), "stop", str(self.directory)], check=True
        )

    async def kill(self) -> None:
        """kill -9: the broker vanishes mid-request, as a crash or a lost machine would."""
        await asyncio.to_thread(_kill, self.directory / "pid")


def _kill(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    # Not our child (kafka.sh started it): wait until it is gone, or is a zombie nobody has
    # reaped yet, which holds no port and no file.
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    pid_file.unlink()


class SecureBroker:
    """A broker of a test session's own whose only client listener is SASL_SSL: SCRAM-SHA-512
    and PLAIN users made at format time, a CA and broker certificate made by keytool, and ACLs
    enforced (``admin`` is the super user). Started by ``kafka.sh start-secure``."""

    def __init__(self, directory: Path, users: tuple[str, ...]) -> None:
        self.directory = directory
        self.port = free_port()
        self.controller_port = free_port()
        self.passwords = {name: secrets.token_urlsafe(12) for name in ("admin", *users)}
        self._starting: asyncio.Future[subprocess.CompletedProcess[str]] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cafile(self) -> Path:
        return self.directory / "tls" / "ca.pem"

    def settings(
        self, base: CommonSettings, user: str = "admin", mechanism: str = "SCRAM-SHA-512"
    ) -> CommonSettings:
        """``base`` pointed at this broker as ``user``, trusting its CA."""
        return base.model_copy(
            update={
                "kafka_bootstrap_servers": self.bootstrap,
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": mechanism,
                "kafka_sasl_username": user,
                "kafka_sasl_password": SecretStr(self.passwords[user]),
                "kafka_ssl_cafile": str(self.cafile),
            }
        )

    def launch(self) -> None:
        """Start the broker in a thread of its own: whatever the test session sets up
        meanwhile (a database, say) overlaps its start; :meth:`ready` waits for it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        users = self.directory / "users"
        users.write_text("".join(f"{n} {p}\n" for n, p in self.passwords.items()))
        users.chmod(0o600)
        # Submitted to a thread now (a coroutine would wait for the loop to run it).
        self._starting = asyncio.get_running_loop().run_in_executor(
            None,
            functools.partial(
                subprocess.run,
                [
                    str(SCRIPT),
                    "start-secure",
                    str(self.directory),
                    str(self.port),
                    str(self.controller_port),
                ],
                check=True,
            ),
        )

    async def ready(self) -> None:
        assert self._starting is not None, "launch() first"
        await self._starting

    async def stop(self) -> None:
        await asyncio.to_thread(
            subprocess.run, [str(SCRIPT), "stop", str(self.directory)], check=True
        )
