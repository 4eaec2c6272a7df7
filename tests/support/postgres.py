"""A PostgreSQL server of a test's own, so a test can stop, crash and restart it without
touching the server every other test shares. Same Debian binaries and layout as `make run`
(``deploy/local/postgres.sh``), which creates the cluster, the ``tend`` role and database, and
starts it; stopping here also offers ``immediate`` (a crash: no checkpoint, recovery on start).
"""

from __future__ import annotations

import asyncio
import glob
import os
import subprocess
from pathlib import Path
from typing import Literal

from tests.support.broker import ROOT, free_port

SCRIPT = ROOT / "deploy" / "local" / "postgres.sh"

StopMode = Literal["smart", "fast", "immediate"]


def _bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries: apt-get install postgresql")
    return Path(found[-1])


def _as_owner(args: list[str]) -> list[str]:
    # initdb and pg_ctl refuse root; Debian's package creates the "postgres" user for this.
    return ["runuser", "-u", "postgres", "--", *args] if os.getuid() == 0 else args


class LocalPostgres:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()

    @property
    def url(self) -> str:
        """The ``tend`` database on this server, as ``DATABASE_URL`` spells it."""
        return f"postgresql+asyncpg://tend:tend@127.0.0.1:{self.port}/tend"

    async def start(self) -> None:
        """Create the cluster on first use, then start it on the same port every time."""
        await asyncio.to_thread(
            subprocess.run,
            [str(SCRIPT), "start", str(self.directory), str(self.port)],
            check=True,
        )

    async def stop(self, mode: StopMode = "fast") -> None:
        """``fast``: end every session, checkpoint, exit. ``immediate``: exit at once, as a
        crash would; the next start recovers from the WAL."""
        data = self.directory / "data"
        if not (data / "postmaster.pid").exists():
            return
        await asyncio.to_thread(
            subprocess.run,
            _as_owner([str(_bin() / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
