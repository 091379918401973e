"""The host side of the lab in one piece: an acquirer host with its own HSM, finance bureau and HTTP API.

`possim demo` and `possim replay --embedded` both need a whole host in this
process, on ephemeral loopback ports, with a fresh journal: the host on the
caller's event loop, the payShield-style HSM and the finance bureau each on
their own thread, as they would be separate machines. `lab_host` starts that
set and stops it again, in the reverse order, however the block ends.

A load run wants the opposite: the host in a process of its own
(`host_process`, `possim host run` on a port of its choosing) so the load
generator and the host each get a core, on fixtures made for the fleet
(`fleet_fixtures`).

For replay, `embedded_target` gives the running set the `Target` view the
runner sees, and `external_target` gives the same view of a host running
elsewhere. Like cli.py and demo.py, this module imports both the terminal
side and the acquirer (docs/replay.md, /work/shared/DESIGN.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
import signal
import sqlite3
import subprocess
import sys
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import yaml

from possim.acquirer.core import HostCore, build_host
from possim.acquirer.fee_desk import finance_key
from possim.acquirer.finance.bureau import open_bureau
from possim.acquirer.finance.server import FinanceThread
from possim.acquirer.journal import transaction_rows
from possim.acquirer.partners import Partners
from possim.acquirer.server import HostServer
from possim.acquirer.settings import FeeSettings
from possim.hsm_mock.client import TcpHsm
from possim.hsm_mock.device import Hsm
from possim.hsm_mock.key_download import generate_key
from possim.hsm_mock.server import HsmThread
from possim.terminal.replay.model import Scenario
from possim.terminal.replay.target import TargetError, TargetSource
from possim.fixtures import load_fixture
from possim.wire.clock import Clock, system_clock

LAB_SEED = 20261203
"""Seeds the HSM's, host's and bureau's randomness: the same run gives the same keys, RRNs and codes."""


def quick_fees(settings: FeeSettings) -> FeeSettings:
    """`settings` with short finance waits, so a lab's finance faults (late, lost answers) resolve in seconds."""
    return dataclasses.replace(settings, finance_timeout=0.5, confirm_attempts=2, cancel_backoff=(1,))


@dataclass
class LabHost:
    """A running lab host and what it is made of (for callers that drive the parts: the demo's bureau faults)."""

    core: HostCore
    server: HostServer
    finance: FinanceThread
    address: tuple[str, int]
    """ISO 8583 over TCP."""
    http_address: tuple[str, int]
    hsm_address: tuple[str, int]
    finance_address: tuple[str, int]


@asynccontextmanager
async def lab_host(dialect: str, folder: Path, *, fixtures_dir: str | Path | None = None, clock: Clock = system_clock,
                   seed: int = LAB_SEED, trace: Path | None = None) -> AsyncIterator[LabHost]:
    """Start a host whose journal (journal.sqlite) and bureau (finance.sqlite) live in `folder`; stop it on exit.

    The threads start through `asyncio.to_thread`: several lab hosts may share
    one event loop (replay --parallel), and none should stall the others.
    """
    folder.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        hsm_thread = HsmThread(Hsm(rng=random.Random(seed)))
        hsm_address = await asyncio.to_thread(hsm_thread.start, "127.0.0.1", 0)
        stack.callback(hsm_thread.stop)
        bureau = open_bureau(folder / "finance.sqlite", fixtures_dir, clock=clock, rng=random.Random(seed))
        stack.callback(bureau.store.close)
        finance = FinanceThread(bureau)
        finance_address = await asyncio.to_thread(finance.start, "127.0.0.1", 0)
        stack.callback(finance.stop)
        core = build_host(dialect, folder / "journal.sqlite", fixtures_dir, clock=clock, rng=random.Random(seed),
                          hsm=TcpHsm(*hsm_address))
        stack.callback(core.close)
        core.fees.settings = quick_fees(core.fees.settings)
        core.fees.connect(finance_address, finance_key(fixtures_dir))
        server = HostServer(core, trace=trace, http=("127.0.0.1", 0), partners=Partners.from_fixtures(fixtures_dir))
        stack.push_async_callback(server.stop)
        address = await server.start("127.0.0.1", 0)
        assert server.http_address is not None
        yield LabHost(core, server, finance, address, server.http_address, hsm_address, finance_address)


class EmbeddedTarget:
    """A lab host as replay's Target: its journal is read on the host's own connection (same thread, same loop)."""

    label = "embedded"

    def __init__(self, lab: LabHost):
        self.lab = lab
        self.iso = lab.address
        self.http: str | None = f"http://{lab.http_address[0]}:{lab.http_address[1]}"

    def journal_rows(self, where: dict[str, str]) -> list[dict[str, Any]]:
        try:
            return self.lab.core.journal.rows(where)
        except ValueError as exc:
            raise TargetError(str(exc)) from None


@asynccontextmanager
async def embedded_target(dialect: str = "cup", *, workdir: Path, fixtures_dir: str | Path | None = None,
                          clock: Clock = system_clock, seed: int = LAB_SEED) -> AsyncIterator[EmbeddedTarget]:
    """A fresh lab host in `workdir`, as a replay target, for the block's duration."""
    async with lab_host(dialect, workdir, fixtures_dir=fixtures_dir, clock=clock, seed=seed) as lab:
        yield EmbeddedTarget(lab)


def embedded_source(*, workdir: Path, fixtures_dir: str | Path | None = None,
                    clock: Clock = system_clock, seed: int = LAB_SEED) -> TargetSource:
    """Targets for `possim replay --embedded`: every scenario its own fresh host, in the scenario's dialect, in a
    folder of its own under `workdir` — so each replays the same way."""
    numbers = itertools.count(1)

    def source(scenario: Scenario) -> Any:
        return embedded_target(scenario.dialect, workdir=workdir / f"host-{next(numbers):04d}",
                               fixtures_dir=fixtures_dir, clock=clock, seed=seed)

    return source


class ExternalTarget:
    """A host running elsewhere. Its journal, when the caller names the file, is read through a read-only
    connection opened per check: the host keeps writing, WAL lets this read beside it, and nothing here can
    change the file."""

    def __init__(self, address: tuple[str, int], http: str | None, journal: Path | None):
        self.label = f"{address[0]}:{address[1]}"
        self.iso = address
        self.http = http
        self.journal = journal

    def journal_rows(self, where: dict[str, str]) -> list[dict[str, Any]]:
        if self.journal is None:
            raise TargetError(f"no journal of {self.label} to check: give --journal (that host's journal file)")
        try:
            db = sqlite3.connect(f"{self.journal.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise TargetError(f"journal {self.journal}: {exc}") from None
        try:
            return transaction_rows(db, where)
        except ValueError as exc:
            raise TargetError(str(exc)) from None
        except sqlite3.Error as exc:
            raise TargetError(f"journal {self.journal}: {exc}") from None
        finally:
            db.close()


def external_target(address: tuple[str, int], *, http: str | None = None, journal: Path | None = None) -> ExternalTarget:
    """The Target for a separate host at `address`; `http` its HTTP API's base URL, `journal` its journal file."""
    if journal is not None and not journal.is_file():
        raise TargetError(f"--journal {journal}: not a file")
    return ExternalTarget(address, http, journal)


FLEET_TID_FROM = 90000001
"""The first terminal ID of a generated fleet: far from the built-in terminals' 1000000x."""


def fleet_fixtures(folder: Path, terminals: int, *, seed: int = LAB_SEED, master_keys: bool = True) -> Path:
    """A fixtures folder for a load fleet: `terminals` terminals of the first merchant, each with a master key of
    its own (unless `master_keys` is False: then no keys, no MACs), accounts no run can empty and no scenario
    rules — every request approved, so a load run measures the host's work, not its declines. The built-ins fill
    in the rest."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    merchant = load_fixture("merchants.yaml")["merchants"][0]["id"]
    fleet = [{"tid": f"{FLEET_TID_FROM + n:08d}", "mid": merchant} for n in range(terminals)]
    for terminal in fleet if master_keys else ():
        terminal["tmk"] = generate_key(rng).hex().upper()
    (folder / "terminals.yaml").write_text(yaml.safe_dump({"terminals": fleet}), encoding="utf-8")
    return always_approving(folder)


def always_approving(folder: Path) -> Path:
    """Write into `folder` the built-in accounts made so rich and unlimited that no run empties them, and no
    scenario rules: every request the host can approve is approved, so a run measures work, not declines."""
    accounts = load_fixture("accounts.yaml")
    for account in accounts["accounts"]:
        account.pop("per_transaction_limit", None)
        account["balance"] = 10**15
    (folder / "accounts.yaml").write_text(yaml.safe_dump(accounts), encoding="utf-8")
    (folder / "host_rules.yaml").write_text("rules: []\n", encoding="utf-8")
    return folder


class HostProcessError(RuntimeError):
    """The child host did not start; the message has the last of what it wrote to stderr."""


@dataclass
class HostProcess:
    """`possim host run` in a process of its own: a load generator and the host each get a core."""

    process: subprocess.Popen[str]
    address: tuple[str, int]
    ready: dict[str, Any]
    """The host's start line (JSON)."""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def host_process(dialect: str, folder: Path, *, fixtures_dir: Path | None = None,
                 options: tuple[str, ...] = ()) -> Iterator[HostProcess]:
    """Start `possim host run` on an ephemeral loopback port with its journal in `folder`; stop it on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "possim.cli", "host", "run", "--listen", "127.0.0.1:0", "--dialect", dialect,
               "--db", str(folder / "journal.sqlite"), "--log-level", "warning", "--json", *options]
    if fixtures_dir is not None:
        command += ["--fixtures", str(fixtures_dir)]
    errors = (folder / "host.log").open("w+", encoding="utf-8")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            process.wait()
            errors.seek(0)
            last = (errors.read().strip().splitlines() or ["no message"])[-1]
            raise HostProcessError(f"the host did not start (exit {process.returncode}): {last}")
        ready = json.loads(line)
        host_name, _, port = str(ready["listening"]).rpartition(":")
        running = HostProcess(process, (host_name, int(port)), ready)
        try:
            yield running
        finally:
            running.stop()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        errors.close()
