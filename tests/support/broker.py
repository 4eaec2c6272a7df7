"""A Kafka broker of a test's own, so a test can stop and restart it without touching the
broker every other test shares. Same jars and script as `make run`."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

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
