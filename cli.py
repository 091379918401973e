"""The `possim` command: parsing arguments and printing results, nothing else.

Conventions: `possim <area> <verb>`; every command that produces a result
takes `--json` and then prints exactly one JSON object on stdout; errors are
one line on stderr and a non-zero exit; amounts are typed in major units
(`12.50`) and reported in JSON in minor units.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from possim.wire.codec import Codec, CodecError
from possim.wire.dialect import builtin_names, load_dialect
from possim.wire.framing import FramingError, decode_length, split_envelope
from possim.wire.trace import describe, redacted_fields

EXIT_ERROR = 1


class CommandError(click.ClickException):
    """A user-facing failure: one line on stderr, exit 1."""


class PossimGroup(click.Group):
    """Turns any failure below it into a CommandError: one readable line.

    Set POSSIM_DEBUG=1 to see the traceback instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # the one place a failure becomes a message
            if os.environ.get("POSSIM_DEBUG"):
                raise
            raise CommandError(_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror.lower()}{where}"
    return " ".join(str(exc).split()) or type(exc).__name__


def emit(as_json: bool, result: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> None:
    """Print a command's result: one JSON object, or the human rendering."""
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, sort_keys=False))
    else:
        click.echo(render(result))


json_option = click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
dialect_option = click.option(
    "--dialect", default="cup", show_default=True, help="Built-in dialect name or a dialect YAML file."
)


@click.group(cls=PossimGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="possim")
def cli() -> None:
    """possim — a payment-acquiring lab: POS terminals, an acquirer host, ISO 8583 on the wire."""


def main(argv: list[str] | None = None) -> None:
    """The `possim` console script.

    Every failure, a usage error included, is one line on stderr; with
    --json it is also one JSON object {"error": ...} on stdout, so a script
    reading stdout always gets an object. Usage errors exit 2, others 1.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        code = cli.main(args=args, prog_name="possim", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message())  # a group named without a verb: its help is the answer
        sys.exit(0)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}", exc.exit_code, args)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code, args)
    except (click.Abort, KeyboardInterrupt):
        _fail("interrupted", 130, args)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int, args: list[str]) -> None:
    if "--json" in args:
        click.echo(json.dumps({"error": message}))
    click.echo(f"possim: error: {message}", err=True)
    sys.exit(code)


# --- dialect -----------------------------------------------------------------


@cli.group(cls=PossimGroup)
def dialect() -> None:
    """Inspect ISO 8583 dialects (built-in or YAML files)."""


@dialect.command("list")
@json_option
def dialect_list(as_json: bool) -> None:
    """List the built-in dialects."""
    items = [{"name": n, "description": load_dialect(n).description} for n in builtin_names()]
    emit(as_json, {"dialects": items}, lambda r: "\n".join(f"{d['name']:<12} {d['description']}" for d in r["dialects"]))


@dialect.command("show")
@click.argument("name")
@json_option
def dialect_show(name: str, as_json: bool) -> None:
    """Show a dialect: framing, MAC scheme, roles and every field's encoding."""
    d = load_dialect(name)
    framing = d.framing
    result = {
        "name": d.name,
        "description": d.description,
        "source": d.source,
        "framing": {
            "length": framing.length,
            "length_includes_header": framing.length_includes_header,
            "tpdu": framing.tpdu.hex().upper() if framing.tpdu else None,
            "header": framing.header.hex().upper(),
        },
        "mac": d.mac_scheme,
        "roles": d.roles,
        "subfields": {str(k): [[s.name, s.length] for s in v] for k, v in d.subfields.items()},
        "conventions": d.conventions,
        "fields": {k: v for k, v in d.spec.items()},
    }
    emit(as_json, result, _render_dialect)


def _render_dialect(r: dict[str, Any]) -> str:
    f = r["framing"]
    lines = [
        f"{r['name']}: {r['description']}",
        f"  source   {r['source']}",
        f"  framing  length {f['length']}{' (counts itself)' if f['length_includes_header'] else ''}"
        f", TPDU {f['tpdu'] or 'none'}, header {f['header'] or 'none'}",
        f"  MAC      {r['mac'] or 'none'}",
        f"  roles    {', '.join(f'{k}={v}' for k, v in r['roles'].items()) or 'none'}",
    ]
    for number, parts in r["subfields"].items():
        lines.append(f"  field {number}: " + " · ".join(f"{name} ({size})" for name, size in parts))
    lines.append(f"  {'field':>5}  {'type':<4}  {'max length':<10}  {'length prefix':<13}  {'data':<6}  description")
    for key, spec in r["fields"].items():
        if spec["max_len"] == 0:
            continue
        prefix = "fixed" if spec["len_type"] == 0 else f"{spec['len_type']} {spec['len_enc']}"
        unit = "digits" if spec.get("len_count") == "nibbles" else "bytes"
        lines.append(
            f"  {key:>5}  {spec.get('type', ''):<4}  {spec['max_len']:>3} {unit:<6}  {prefix:<13}  "
            f"{spec['data_enc']:<6}  {spec.get('desc', '')}"
        )
    return "\n".join(lines)


# --- iso ---------------------------------------------------------------------


@cli.group(cls=PossimGroup)
def iso() -> None:
    """Decode ISO 8583 messages, redacted."""


@iso.command("decode")
@dialect_option
@click.option(
    "--input", "shape", type=click.Choice(["auto", "frame", "message"]), default="auto", show_default=True,
    help="What HEX holds: a whole frame (length header, then TPDU and header when the dialect has them, then the message), "
    "just the message (from the MTI on), or auto-detect.",
)
@click.argument("hexdata", metavar="HEX", nargs=-1, required=True)
@json_option
def iso_decode(dialect: str, shape: str, hexdata: tuple[str, ...], as_json: bool) -> None:
    """Decode HEX (a whole frame as captured, or just the message) into a redacted field table.

    Card data is masked: PAN first 6 / last 4, tracks and PIN blocks hidden.
    White space in HEX is ignored; HEX "-" reads the hex from standard input.
    """
    d = load_dialect(dialect)
    text = sys.stdin.read() if hexdata == ("-",) else "".join(hexdata)
    data = _parse_hex("".join(text.split()))
    prefix, body = _strip_frame(d, data, shape)
    codec = Codec(d)
    message, lines = describe(codec, body, prefix)
    if message is None:
        try:
            codec.decode(body)
        except CodecError as exc:
            text = _with_frame_offset(str(exc), exc.offset, len(prefix))
            if shape == "auto" and not prefix:
                text += f" (read as a bare message: its first bytes are not a {d.framing.length} frame header)"
            raise CommandError(text) from None
    result = {"dialect": d.name, "mti": message.mti, "fields": redacted_fields(message)}
    emit(as_json, result, lambda r: "\n".join(lines))


def _parse_hex(text: str) -> bytes:
    bad = next((i for i, c in enumerate(text) if c not in "0123456789abcdefABCDEF"), None)
    if bad is not None:
        raise CommandError(f"HEX is not hexadecimal: {text[bad]!r} at character {bad}")
    if not text:
        raise CommandError("HEX is empty")
    if len(text) % 2:
        raise CommandError(f"HEX has an odd number of digits ({len(text)}): every byte takes two")
    return bytes.fromhex(text)


def _strip_frame(d: Any, data: bytes, shape: str) -> tuple[bytes, bytes]:
    """Split off length header, TPDU and dialect header when `data` is a whole frame.

    Auto-detection takes `data` for a frame when its length header announces
    exactly the bytes that follow, or when the dialect has a TPDU and one
    stands where it should; otherwise it is the bare message.
    """
    framing = d.framing
    size = framing.length_size
    if shape == "message" or len(data) <= size:
        return b"", data
    follows = len(data) - size
    try:
        announced = decode_length(framing, data[:size])
    except FramingError:
        if shape == "frame":
            raise
        announced = None
    tpdu_in_place = framing.tpdu is not None and data[size] == framing.tpdu[0]
    if shape == "auto" and announced != follows and not tpdu_in_place:
        return b"", data
    if announced != follows:
        raise CommandError(f"length header at byte offset 0 announces {announced} bytes, but {follows} follow it")
    _, body = split_envelope(framing, data[size:])
    return data[: len(data) - len(body)], body


def _with_frame_offset(text: str, offset: int | None, prefix: int) -> str:
    """Codec offsets count from the MTI; a user who pasted a frame counts from its first byte."""
    if offset is None or prefix == 0:
        return text
    return f"{text} (byte {offset + prefix} of the frame)"


# --- host --------------------------------------------------------------------


@cli.group(cls=PossimGroup)
def host() -> None:
    """Run the acquirer host."""


def serial_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """A serial port and its link layer (docs/serial.md)."""
    options = [
        click.option("--baud", type=int, help="Baud rate (default: the link profile's)."),
        click.option("--link-profile", "link_profile", default="stx-etx-lrc", show_default=True,
                     help="Serial link layer: a built-in profile (`possim serial profiles`) or a YAML file."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@host.command("run")
@click.option("--listen", help="TCP address to listen on (port 0: any free port); default 127.0.0.1:8583 unless --serial alone is given.")
@click.option("--http", "http", help="Also serve the QR order API and the wallet network's entry on this address (docs/openapi.yaml).")
@click.option("--serial", "serial_ports", multiple=True, help="Also (or only) answer a terminal on this serial port or pyserial URL; repeatable.")
@serial_options
@dialect_option
@click.option("--db", "db", default="journal.sqlite", show_default=True, type=click.Path(dir_okay=False), help="SQLite journal file (created if missing).")
@click.option("--fixtures", "fixtures_dir", type=click.Path(file_okay=False, exists=True), help="Folder of merchants/terminals/cards/accounts/host_rules YAML overriding the built-ins.")
@click.option("--trace", "trace", type=click.Path(dir_okay=False), help="Append a redacted hex and field trace of every frame to this file.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--hsm", "hsm_address", help="Check PINs with the payShield-style HSM at HOST:PORT (e.g. `possim hsm serve`); it must hold the host's LMK. Default: an HSM inside the host.")
@click.option("--lmk", "lmk_path", type=click.Path(dir_okay=False, exists=True), help="Variant LMK file the host keeps keys under (as `possim hsm serve --lmk`); default: the published test LMK.")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, exists=True), help="Scenario rules YAML instead of the fixtures' host_rules.yaml; reloaded when it changes.")
@click.option("--finance", "finance_address", help="Take government fee payments, confirming them to the finance system at HOST:PORT (possim fees finance serve).")
@click.option("--permissive", is_flag=True, help="Permissive profile for third-party test tools: any terminal and merchant ID, no sign-on needed, any Luhn-valid card approved up to a limit (docs/permissive.md).")
@click.option("--permissive-limit", "permissive_limit", metavar="AMOUNT", help="With --permissive: the largest debit approved, in major units, e.g. 1000.00 (default: host.yaml's permissive.limit, 10000.00).")
@click.option("--check-expiry", "check_expiry", is_flag=True, help="With --permissive: decline expired cards 54 (default: host.yaml's permissive.check_expiry, off).")
@json_option
def host_run(
    listen: str | None, http: str | None, serial_ports: tuple[str, ...], baud: int | None, link_profile: str, dialect: str, db: str,
    fixtures_dir: str | None, trace: str | None, log_level: str, hsm_address: str | None, lmk_path: str | None,
    rules_file: str | None, finance_address: str | None, permissive: bool, permissive_limit: str | None,
    check_expiry: bool, as_json: bool,
) -> None:
    """Serve terminals over TCP and/or serial ports until interrupted (Ctrl-C or SIGTERM).

    Prints where it listens once it is ready (with --json, one JSON object),
    then logs redacted events to stderr.
    """
    import asyncio
    import logging
    import sqlite3

    from possim.acquirer.core import build_host
    from possim.acquirer.server import HostServer, new_event_loop

    from possim.wire.link_profile import load_link_profile

    if listen is None and not serial_ports:
        listen = "127.0.0.1:8583"
    if listen is not None:
        _address(listen, "--listen")  # a bad address fails before the journal is opened
    if http is not None and listen is None:
        raise click.UsageError("--http serves beside the TCP front: give --listen too")
    http_at = _address(http, "--http") if http is not None else None
    permissive_settings = _permissive_settings(fixtures_dir, permissive_limit, check_expiry) if permissive else None
    if not permissive and (permissive_limit is not None or check_expiry):
        raise click.UsageError("--permissive-limit and --check-expiry tune the permissive profile: give --permissive too")
    profile = load_link_profile(link_profile) if serial_ports else None
    _parent_exists(db, "--db")
    _parent_exists(trace, "--trace")
    _log_to_stderr(log_level)
    from possim.hsm_mock.lmk import VariantLmk

    lmk = VariantLmk.load(lmk_path) if lmk_path else VariantLmk.test()
    hsm = _external_hsm(hsm_address, lmk) if hsm_address else None
    finance_at = _address(finance_address, "--finance") if finance_address else None
    try:
        core = build_host(dialect, db, fixtures_dir, hsm=hsm, lmk=lmk, rules_file=rules_file, permissive=permissive_settings)
    except sqlite3.Error as exc:
        raise CommandError(f"journal {db}: {exc}") from None
    if finance_at is not None:
        from possim.acquirer.fee_desk import finance_key

        core.fees.connect(finance_at, finance_key(fixtures_dir))

    async def serve() -> None:
        from possim.acquirer.serial_server import SerialHostServer
        from possim.wire.trace import TraceFile

        loop_kind = type(asyncio.get_running_loop()).__module__.partition(".")[0]
        serial_trace = TraceFile(trace, core.codec, core.clock) if trace and serial_ports else None
        serials = [SerialHostServer(core, port, profile, baud, serial_trace) for port in serial_ports]  # type: ignore[arg-type]
        from possim.acquirer.partners import Partners

        partners = Partners.from_fixtures(fixtures_dir) if http_at else None
        tcp = HostServer(core, trace=trace, http=http_at, partners=partners) if listen is not None else None
        fronts = _Fronts(tcp, serials)
        try:
            await _serve_until_stopped(
                fronts, listen, as_json,
                lambda bound: {"listening": bound, "http": _joined(tcp.http_address if tcp else None),
                               "serial": list(serial_ports),
                               "link_profile": profile.name if profile else None, "dialect": core.dialect.name,
                               "db": str(Path(db).resolve()), "event_loop": loop_kind, "hsm": hsm_address or "built-in",
                               "finance": finance_address, **_profile_description(permissive_settings)},
                lambda r: "possim host listening on "
                          + ", ".join(filter(None, [r["listening"], r["http"] and f"http://{r['http']}",
                                                    *(f"serial {p}" for p in r["serial"])]))
                          + f" ({r['dialect']}, {_profile_text(r)}), journal {r['db']}",
            )
        finally:
            if serial_trace is not None:
                serial_trace.close()
        logging.getLogger("possim.host").info("host stopped")

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve())
    finally:
        core.close()


def _permissive_settings(fixtures_dir: str | None, limit: str | None, check_expiry: bool) -> Any:
    """host.yaml's `permissive:` settings with --permissive-limit (major units) and --check-expiry on top."""
    import dataclasses

    from possim.acquirer.permissive import HOST_CURRENCY, PermissiveSettings
    from possim.wire.money import currency, parse_major

    settings = PermissiveSettings.from_fixtures(fixtures_dir)
    if limit is not None:
        try:
            minor = parse_major(limit, currency(HOST_CURRENCY))
        except ValueError as exc:
            raise click.UsageError(f"--permissive-limit: {exc}") from None
        if minor < 1:
            raise click.UsageError(f"--permissive-limit: {limit!r} must be above zero")
        settings = dataclasses.replace(settings, limit=minor)
    return dataclasses.replace(settings, check_expiry=True) if check_expiry else settings


def _profile_description(permissive: Any) -> dict[str, Any]:
    """The start line's profile keys: which profile, and the permissive one's settings (limit in minor units)."""
    if permissive is None:
        return {"profile": "standard", "permissive": None}
    return {"profile": "permissive", "permissive": {"limit": permissive.limit, "check_expiry": permissive.check_expiry}}


def _profile_text(r: dict[str, Any]) -> str:
    from possim.acquirer.permissive import HOST_CURRENCY
    from possim.wire.money import currency, format_major

    settings = r["permissive"]
    if settings is None:
        return "standard profile"
    expiry = "expiry checked" if settings["check_expiry"] else "expiry not checked"
    return f"permissive profile: any terminal, Luhn-valid cards up to {format_major(settings['limit'], currency(HOST_CURRENCY))}, {expiry}"


def _read_qr_image(path: str) -> str:
    """The text of the QR code in an image file, or one readable error naming the file."""
    from possim.wire.qr_image import read_qr_png

    try:
        return read_qr_png(Path(path).read_bytes())
    except OSError as exc:
        raise CommandError(f"{path}: {_one_line(exc)}") from None
    except ValueError as exc:
        raise CommandError(f"{path}: {exc}") from None


def _joined(address: tuple[str, int] | None) -> str | None:
    return f"{address[0]}:{address[1]}" if address else None


def _external_hsm(address: str, lmk: Any) -> Any:
    """A TCP HSM the host can use: it answers NC and holds the host's LMK (keys are journaled under it)."""
    from possim.hsm_mock.client import HsmUnavailable, TcpHsm

    host_name, port = _address(address, "--hsm")
    client = TcpHsm(host_name, port)
    try:
        reply = client.call("NC", "")
    except HsmUnavailable as exc:
        client.close()
        raise CommandError(f"--hsm: {exc}") from None
    expected = lmk.check_value().hex().upper()
    if not reply.ok or reply.fields[:16] != expected:
        client.close()
        raise CommandError(
            f"--hsm {address}: its LMK check value is {reply.fields[:16] or 'unknown'}, the host's is {expected}: "
            "they must hold the same LMK"
        )
    return client


def _log_to_stderr(level: str) -> None:
    import logging

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)


async def _serve_until_stopped(server: Any, listen: str | None, as_json: bool,
                               describe: Callable[[str | None], dict[str, Any]],
                               render: Callable[[dict[str, Any]], str]) -> None:
    """Start a server, print where it listens (one JSON object with --json), and serve until SIGINT/SIGTERM."""
    import asyncio
    import signal

    from possim.wire.serial_port import SerialPortError

    try:
        bound = await server.start(*_address(listen, "--listen")) if listen is not None else await server.start()
    except OSError as exc:
        raise CommandError(f"cannot listen on {listen}: {_one_line(exc)} (--listen 127.0.0.1:0 takes any free port)") from None
    except SerialPortError as exc:
        await server.stop()
        raise CommandError(str(exc)) from None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
    emit(as_json, describe(f"{bound[0]}:{bound[1]}" if bound else None), render)
    sys.stdout.flush()
    await server.serve_forever()


class _Fronts:
    """The host's TCP server and serial ports started, served and stopped as one."""

    def __init__(self, tcp: Any, serials: list[Any]):
        import asyncio

        self.tcp, self.serials = tcp, serials
        self._stopped = asyncio.Event()

    async def start(self, host: str | None = None, port: int | None = None) -> tuple[str, int] | None:
        bound = await self.tcp.start(host, port) if self.tcp is not None else None
        for serial in self.serials:
            await serial.start()
        return bound

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        for serial in self.serials:
            await serial.stop()
        if self.tcp is not None:
            await self.tcp.stop()
        self._stopped.set()


def _address(text: str, option: str) -> tuple[str, int]:
    hostname, _, port = text.rpartition(":")
    if not hostname or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CommandError(f"{option} {text!r} must be HOST:PORT, e.g. 127.0.0.1:8583")
    return hostname, int(port)


# --- pos ---------------------------------------------------------------------

EXIT_NO_ANSWER = 3
MAX_AMOUNT = 999_999_999_999
"""Field 4 is 12 digits of minor units."""


def _parent_exists(path: str | None, option: str) -> None:
    """A file the user names goes in a folder that exists: a typo must not create folders."""
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise CommandError(f"{option} {path}: folder {Path(path).resolve().parent} does not exist")


def pos_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--host", "host_address", help="Host to call, HOST:PORT (default: the terminal's profile)."),
        click.option("--serial", "serial_port", help="Call the host over this serial port or pyserial URL instead of TCP."),
        click.option("--baud", type=int, help="Serial baud rate (default: the link profile's)."),
        click.option("--link-profile", "link_profile", default="stx-etx-lrc", show_default=True,
                     help="Serial link layer: a built-in profile (`possim serial profiles`) or a YAML file."),
        click.option("--tid", help="Terminal ID from terminals.yaml (default: the first one)."),
        click.option("--dialect", help="Dialect name or YAML file (default: the terminal's profile)."),
        click.option("--timeout", type=float, help="Seconds to wait for each answer (default: the profile's)."),
        click.option("--state", "state_path", type=click.Path(dir_okay=False), help="Terminal state file (default: one per TID under the user data folder)."),
        click.option("--fixtures", "fixtures_dir", type=click.Path(file_okay=False, exists=True), help="Folder of fixture YAML overriding the built-ins."),
        click.option("--trace", "trace", type=click.Path(dir_okay=False), help="Append a redacted trace of every frame to this file."),
        json_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.group(cls=PossimGroup)
def pos() -> None:
    """Drive a simulated POS terminal; its STAN, batch and owed reversal persist between calls."""


@pos.command("signon")
@pos_options
def pos_signon(**options: Any) -> None:
    """Sign the terminal on (0800: network management code 001, or cup 003 / 004 with a track key) and take its working keys."""
    _run_terminal(options, lambda terminal: terminal.sign_on())


def card_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """How the card is presented: which card, how it was read, and the PIN typed."""
    options = [
        click.option("--card", "card_name", default="approve", show_default=True, help="A card name from cards.yaml, or a PAN."),
        click.option("--expiry", help="Expiry YYMM for a raw PAN (or to override the card's)."),
        click.option("--entry", type=click.Choice(ENTRIES), default="swipe", show_default=True,
                     help="How the card is read: magstripe, chip (field 55), contactless chip, or keyed (fields 2 and 14)."),
        click.option("--manual", is_flag=True, help="Same as --entry manual."),
        click.option("--pin", help="PIN the cardholder types; it leaves the terminal only as an encrypted PIN block (field 52)."),
        click.option("--receipt", "receipt_path", type=click.Path(dir_okay=False), help="Append the customer and merchant receipts to this file."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


ENTRIES = ("swipe", "chip", "contactless", "manual")


def _minor(terminal: Any, amount: str) -> int:
    """--amount in the terminal's currency's minor units; a bad value is a usage error (exit 2)."""
    from possim.wire.money import currency, format_major, parse_major

    cur = currency(terminal.profile.currency)
    try:
        minor = parse_major(amount, cur)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--amount'") from None
    if minor > MAX_AMOUNT:
        raise click.BadParameter(f"{amount} is too large: field 4 holds at most {format_major(MAX_AMOUNT, cur)} {cur.alpha}",
                                 param_hint="'--amount'")
    return minor


def _reference(length: int, what: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A click callback checking an RRN (12) or authorization code (6) before anything is sent."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None and (len(value) != length or not value.isalnum()):
            raise click.BadParameter(f"{value!r}: {what} is {length} letters or digits, as the receipt shows it")
        return value

    return check


def _card_action(options: dict[str, Any], act: Callable[[Any, Any, str, str | None], Any],
                 render: Callable[[dict[str, Any]], str] | None = None) -> None:
    """Run `act(terminal, card, entry, pin)` with the card options resolved, then write receipts if asked."""
    from possim.terminal import resolve_card

    card = resolve_card(options.pop("card_name"), options["fixtures_dir"], options.pop("expiry"))
    entry = "manual" if options.pop("manual") else options.pop("entry")
    pin = options.pop("pin")
    receipt = options.pop("receipt_path")
    _parent_exists(receipt, "--receipt")
    _run_terminal(options, lambda terminal: act(terminal, card, entry, pin), render=render, receipt=receipt)


@pos.command("purchase")
@click.option("--amount", required=True, help="Amount in major units, e.g. 12.50.")
@card_options
@pos_options
def pos_purchase(amount: str, **options: Any) -> None:
    """Buy: a sale. An answer that does not come in time is reversed at once.

    With --pin the PIN is encrypted under the working PIN key of the last
    sign-on (or the next DUKPT key) and checked by the issuer: 55 wrong PIN,
    75 too many wrong PINs today. The test cards' PINs are in cards.yaml.
    """
    _card_action(options, lambda t, card, entry, pin: t.purchase(_minor(t, amount), card, pin=pin, entry=entry))


@pos.command("fee-query")
@click.option("--code", "pay_code", required=True, help="The payment notice's code (digits, as printed or scanned).")
@pos_options
def pos_fee_query(pay_code: str, **options: Any) -> None:
    """Look a government fee notice up: what is due, to which agency, from whom (docs/fees.md)."""
    _run_terminal(options, lambda terminal: terminal.fee_query(pay_code), render=_render_fee_result)


@pos.command("fee-pay")
@click.option("--code", "pay_code", required=True, help="The payment notice's code (digits, as printed or scanned).")
@click.option("--amount", help="Amount in major units (default: the notice's amount due, looked up first).")
@card_options
@pos_options
def pos_fee_pay(pay_code: str, amount: str | None, **options: Any) -> None:
    """Pay a government fee notice by card: the host charges exactly the amount due and confirms the payment to
    the finance system before it answers; a payment the finance system never confirms is reversed (N4)."""

    async def pay(terminal: Any, card: Any, entry: str, pin: str | None) -> Any:
        if amount is not None:
            return await terminal.fee_payment(pay_code, _minor(terminal, amount), card, pin=pin, entry=entry)
        looked_up = await terminal.fee_query(pay_code)
        if not looked_up.approved or not looked_up.notice:
            return looked_up
        return await terminal.fee_payment(pay_code, looked_up.notice["amount_due"], card, pin=pin, entry=entry)

    _card_action(options, pay, render=_render_fee_result)


def _render_fee_result(r: dict[str, Any]) -> str:
    lines = [_render_result(r)]
    notice = r.get("notice") or {}
    if notice:
        due = _money({r["currency"] or "156": notice["amount_due"]}) if isinstance(notice.get("amount_due"), int) else "?"
        who = notice.get("agency_name") or notice.get("agency_code", "")
        lines.append(f"  notice {notice.get('pay_code')}: {due} to {who}"
                     + (f" from {notice['payer_name']}" if notice.get("payer_name") else "")
                     + f", due {notice.get('due_date', '?')}, {str(notice.get('notice_status', '')).lower()}"
                     + (f"; confirmed {notice['confirm_no']}" if notice.get("confirm_no") else ""))
    return "\n".join(lines)


@pos.command("void")
@click.option("--stan", help="STAN of the sale or completion to void (default: the last one of the open batch).")
@pos_options
def pos_void(stan: str | None, **options: Any) -> None:
    """Void a sale or completion of the open batch, for its whole amount."""
    _run_terminal(options, lambda terminal: terminal.void(stan))


@pos.command("refund")
@click.option("--amount", required=True, help="Amount to give back, in major units.")
@click.option("--rrn", required=True, callback=_reference(12, "an RRN"), help="RRN of the sale or completion refunded (its receipt shows it).")
@card_options
@pos_options
def pos_refund(amount: str, rrn: str, **options: Any) -> None:
    """Give back (part of) an earlier sale: an advice, repeated until answered, never reversed."""
    _card_action(options, lambda t, card, entry, pin: t.refund(_minor(t, amount), card, rrn, entry=entry))


@pos.command("preauth")
@click.option("--amount", required=True, help="Amount to hold, in major units.")
@card_options
@pos_options
def pos_preauth(amount: str, **options: Any) -> None:
    """Pre-authorize: hold funds for a later completion (hotels, fuel, deposits)."""
    _card_action(options, lambda t, card, entry, pin: t.preauth(_minor(t, amount), card, pin=pin, entry=entry))


def preauth_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The pre-authorization a cancel or completion acts on."""
    command = click.option("--auth", "auth_code", required=True, callback=_reference(6, "an authorization code"),
                           help="Its authorization code.")(command)
    return click.option("--rrn", required=True, callback=_reference(12, "an RRN"), help="RRN of the pre-authorization.")(command)


@pos.command("preauth-cancel")
@click.option("--amount", required=True, help="The pre-authorized amount, in major units.")
@preauth_options
@card_options
@pos_options
def pos_preauth_cancel(amount: str, rrn: str, auth_code: str, **options: Any) -> None:
    """Cancel a pre-authorization: its hold goes back to the account."""
    _card_action(options, lambda t, card, entry, pin: t.preauth_void(rrn, auth_code, _minor(t, amount), card, entry=entry, pin=pin))


@pos.command("completion")
@click.option("--amount", required=True, help="Amount to take, in major units (up to the pre-authorized amount plus the host's tolerance).")
@preauth_options
@card_options
@pos_options
def pos_completion(amount: str, rrn: str, auth_code: str, **options: Any) -> None:
    """Complete a pre-authorization: take the final amount; the hold is released."""
    _card_action(options, lambda t, card, entry, pin: t.completion(_minor(t, amount), card, rrn, auth_code, entry=entry, pin=pin))


@pos.command("balance")
@card_options
@pos_options
def pos_balance(**options: Any) -> None:
    """Balance inquiry: the card's available balance (field 54)."""
    _card_action(options, lambda t, card, entry, pin: t.balance(card, pin=pin, entry=entry))


@pos.command("offline")
@click.option("--amount", required=True, help="Amount in major units.")
@card_options
@pos_options
def pos_offline(amount: str, **options: Any) -> None:
    """Approve a sale offline: nothing is sent now; it goes as an advice later (send-advices, batch close)."""
    _card_action(options, lambda t, card, entry, pin: t.offline(_minor(t, amount), card, entry=entry if entry != "swipe" else "chip"))


@pos.command("send-advices")
@pos_options
def pos_send_advices(**options: Any) -> None:
    """Send the owed reversal and every queued advice (offline sales, unanswered refunds)."""
    _run_terminal(options, lambda terminal: terminal.send_advices(), render=_render_advices, no_answer=_advices_left)


@pos.group("batch", cls=PossimGroup)
def pos_batch() -> None:
    """The terminal's batch."""


@pos_batch.command("close")
@click.option("--receipt", "receipt_path", type=click.Path(dir_okay=False), help="Append the settlement slip to this file.")
@pos_options
def pos_batch_close(receipt_path: str | None, **options: Any) -> None:
    """Close the batch: owed reversal and advices first, then totals (0500), upload (0320) when the host
    disagrees (always in cup), and the next batch number. Run it again to resume an interrupted close."""
    _parent_exists(receipt_path, "--receipt")
    _run_terminal(options, lambda terminal: terminal.batch_close(), render=_render_close,
                  no_answer=lambda d: not d["closed"] and d["timed_out"], receipt=receipt_path)


@pos.command("reverse")
@pos_options
def pos_reverse(**options: Any) -> None:
    """Send the reversal the terminal owes, or else reverse its last approved purchase."""
    _run_terminal(options, lambda terminal: terminal.reverse())


def qr_wait_options(default_wait: float, what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--wait and --poll of the QR commands that can see a payment through (terminal/qr_flows.py)."""

    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option("--poll", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
                               help="Seconds between two queries while waiting.")(command)
        return click.option("--wait", type=click.FloatRange(min=0), default=default_wait, show_default=True,
                            help=what)(command)

    return add


@pos.command("qr-order")
@click.option("--amount", required=True, help="Amount in major units, e.g. 12.50.")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="Write the code to show the payer as a PNG image.")
@click.option("--screen", is_flag=True, help="With --png: a terminal-screen image, amount and merchant name under the code.")
@qr_wait_options(0, "Seconds to wait for a wallet to pay: queries, then closes the order (reversed if the close "
                    "gets no answer). 0: return once the order is made.")
@pos_options
def pos_qr_order(amount: str, png_path: str | None, screen: bool, wait: float, poll: float, **options: Any) -> None:
    """Make a merchant-presented QR order: prints the code for the payer to scan (and writes it with --png).

    The order joins the batch once a query or close says a wallet paid it.
    With --wait the terminal sees it through: paid, or closed at the deadline.
    """
    from possim.terminal.qr_flows import collect
    from possim.wire.money import currency, format_major
    from possim.wire.qr_image import qr_png, terminal_screen_png

    if screen and not png_path:
        raise click.UsageError("--screen needs --png FILE")
    _parent_exists(png_path, "--png")
    as_json, fixtures_dir = options["as_json"], options["fixtures_dir"]

    async def act(terminal: Any) -> Any:
        order = await terminal.qr_order(_minor(terminal, amount))

        def image(payload: str) -> bytes:
            if not screen:
                return qr_png(payload)
            cur = currency(terminal.profile.currency)
            return terminal_screen_png(payload, amount=f"{format_major(order.amount, cur)} {cur.alpha}",
                                       merchant=_merchant_name(terminal.profile, fixtures_dir))

        extras = _show_order(order, png_path, as_json, image)
        final = order
        if wait > 0 and order.order_no is not None and order.response_code == "00":
            final = await collect(terminal, order, wait, poll, progress=_qr_progress)
        return _Shown(final, extras)

    _run_terminal(options, act, render=_render_qr_result)


@pos.command("qr-scan")
@click.option("--amount", required=True, help="Amount in major units, e.g. 12.50.")
@click.option("--code", help="The code the payer shows: a wallet payment code (digits) or an EMV consumer-presented code (base64).")
@click.option("--image", "image_path", type=click.Path(dir_okay=False, exists=True), help="A PNG of the code the payer shows, read as the scanner would.")
@qr_wait_options(30, "When the wallet waits for the payer's password (09): seconds to wait for the payment "
                     "before cancelling it (0: return at once).")
@pos_options
def pos_qr_scan(amount: str, code: str | None, image_path: str | None, wait: float, poll: float, **options: Any) -> None:
    """Take a payment from a code the payer shows: a wallet payment code is a QR sale (00 paid, 09 waiting for
    the payer's password), an EMV consumer-presented code is a card sale."""
    from possim.terminal.qr_flows import settle_scan

    if (code is None) == (image_path is None):
        raise click.UsageError("give the scanned code with exactly one of --code CODE and --image PNG")
    if image_path is not None:
        code = _read_qr_image(image_path)
    scanned = code or ""

    async def act(terminal: Any) -> Any:
        result = await terminal.qr_scan(scanned, _minor(terminal, amount))
        if wait > 0:
            result = await settle_scan(terminal, result, wait, poll, progress=_qr_progress)
        return result

    _run_terminal(options, act, render=_render_qr_result)


@pos.command("fee-qr")
@click.option("--code", "pay_code", required=True, help="The payment notice's code (digits, as printed or scanned).")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="Write the order's code for the payer as a PNG image.")
@qr_wait_options(0, "Seconds to wait for a wallet to pay, then for the finance system's confirmation (the order is "
                    "closed when nobody pays). 0: return once the order is made.")
@pos_options
def pos_fee_qr(pay_code: str, png_path: str | None, wait: float, poll: float, **options: Any) -> None:
    """Pay a government fee notice by QR: the notice is looked up, an order for exactly its amount due is made for
    the payer's wallet to scan; once paid, the host confirms it to the finance system (or refunds the wallet)."""
    from possim.terminal.qr_flows import collect_fee
    from possim.wire.qr_image import qr_png

    _parent_exists(png_path, "--png")
    as_json = options["as_json"]

    async def act(terminal: Any) -> Any:
        looked_up = await terminal.fee_query(pay_code)
        if not looked_up.approved or not looked_up.notice:
            return _Shown(looked_up, {"png": None})
        order = await terminal.fee_qr_order(pay_code, looked_up.notice["amount_due"])
        extras = _show_order(order, png_path, as_json, qr_png)
        final = order
        if wait > 0 and order.order_no is not None and order.response_code == "00":
            final = await collect_fee(terminal, order, wait, poll, progress=_qr_progress)
        return _Shown(final, extras)

    _run_terminal(options, act, render=_render_fee_qr)


def _render_fee_qr(r: dict[str, Any]) -> str:
    lines = [_render_qr_result(r)] if r.get("order_no") else [_render_result(r)]
    notice = r.get("notice") or {}
    if notice:
        lines.append(f"  notice {notice.get('pay_code')}: {str(notice.get('notice_status', '')).lower()}"
                     + (f", confirmed {notice['confirm_no']}" if notice.get("confirm_no") else ""))
    return "\n".join(lines)


def _show_order(order: Any, png_path: str | None, as_json: bool, image: Callable[[str], bytes]) -> dict[str, Any]:
    """Show an order's code as the terminal's screen would: its PNG when asked, the payload as text unless the
    output is JSON; returns what the command adds to its JSON."""
    extras: dict[str, Any] = {"png": None}
    if order.payload is not None:
        if png_path:
            Path(png_path).write_bytes(image(order.payload))
            extras["png"] = str(Path(png_path).resolve())
        if not as_json:
            click.echo(_render_qr_code(order.payload, extras["png"]))
    return extras


def order_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--order", "order_no", required=True, help="The order number (a qr-order or qr-scan result shows it).")(command)


@pos.command("qr-query")
@order_option
@pos_options
def pos_qr_query(order_no: str, **options: Any) -> None:
    """Ask the state of a QR order; a payment learned here joins the batch."""
    _run_terminal(options, lambda terminal: terminal.qr_query(order_no), render=_render_qr_result)


@pos.command("qr-close")
@order_option
@pos_options
def pos_qr_close(order_no: str, **options: Any) -> None:
    """Close an unpaid QR order; when a wallet paid it first, the answer says paid and it joins the batch."""
    _run_terminal(options, lambda terminal: terminal.qr_close(order_no), render=_render_qr_result)


@pos.command("qr-refund")
@order_option
@click.option("--amount", required=True, help="Amount to give back, in major units.")
@pos_options
def pos_qr_refund(order_no: str, amount: str, **options: Any) -> None:
    """Give back (part of) a paid QR order: an advice, repeated until answered (13: more than remains)."""
    _run_terminal(options, lambda t: t.qr_refund(order_no, _minor(t, amount)), render=_render_qr_result)


class _Shown:
    """A result and what the command adds to its JSON (the PNG written)."""

    def __init__(self, result: Any, extras: dict[str, Any]):
        self.result = result
        self.extras = extras

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), **self.extras}


def _qr_progress(result: Any) -> None:
    """One line on stderr per step while a QR payment is seen through."""
    what = f"order {result.order_no} {result.status}" if result.status else result.message
    click.echo(f"possim: {result.operation}: {what}", err=True)


def _render_qr_code(payload: str, png: str | None) -> str:
    """The code for the payer to scan, as text for a terminal window, then its payload (and where its PNG went)."""
    from possim.wire.qr_image import qr_text

    return f"{qr_text(payload)}\n{payload}" + (f"\nwritten to {png}" if png else "")


def _render_qr_result(r: dict[str, Any]) -> str:
    """A QR result leads with the order and its state; a scanned card's sale reads as any sale."""
    if r.get("order_no") is None:
        return _render_result(r)
    amount = _amount_text(r)
    code = r["response_code"]
    if code is None:
        head = f"NO ANSWER {r['operation']}{amount}: {r['message']}"
    elif code in ("00", "09") and r.get("status"):
        head = f"ORDER {r['order_no']} {r['status'].upper()} — {r['operation']}{amount}"
        if code == "09":
            head += f" ({code}: {r['message']})"
    else:
        head = f"DECLINED {code} {r['message']} — {r['operation']}{amount}"
    parts = [f"tid {r['tid']}", f"stan {r['stan']}", f"order {r['order_no']}"]
    parts += [f"{k.replace('_', ' ')} {r[k]}" for k in ("rrn", "channel", "wallet_txn_id") if r.get(k)]
    if r.get("refunded") is not None and r.get("currency"):
        parts.append(f"refunded {_money({r['currency']: r['refunded']})}")
    if r.get("payload") and r.get("expires_at"):
        parts.append(f"payable until {r['expires_at']}")
    lines = [head, "  " + ", ".join(parts)]
    for key in ("prior_reversal", "reversal"):
        if r.get(key) and r[key]["message"] not in head:
            lines.append(f"  {key.replace('_', ' ')}: {r[key]['message']}")
    return "\n".join(lines)


@pos.command("status")
@click.option("--tid", help="Terminal ID from terminals.yaml (default: the first one).")
@click.option("--state", "state_path", type=click.Path(dir_okay=False), help="Terminal state file (default: one per TID under the user data folder).")
@click.option("--fixtures", "fixtures_dir", type=click.Path(file_okay=False, exists=True), help="Folder of fixture YAML overriding the built-ins.")
@json_option
def pos_status(tid: str | None, state_path: str | None, fixtures_dir: str | None, as_json: bool) -> None:
    """Show what the terminal remembers: last STAN, batch, sign-on, open batch, owed reversal. Sends nothing."""
    from possim.terminal import TerminalState, default_state_path, load_profile

    profile = load_profile(tid, fixtures_dir)
    path = Path(state_path) if state_path else default_state_path(profile.tid)
    if not path.is_file():
        raise CommandError(f"no state for terminal {profile.tid} at {path}: it has not transacted from here (or give --state)")
    state = TerminalState(profile.tid, path)
    try:
        result = _status(profile, state, path)
    finally:
        state.close()
    emit(as_json, result, _render_status)


def _status(profile: Any, state: Any, path: Path) -> dict[str, Any]:
    from possim.terminal.status import terminal_status

    return terminal_status(profile, state, path)


def _render_status(r: dict[str, Any]) -> str:
    batch = r["open_batch"]
    owed = r["pending_reversal"]
    cur = batch["currency"]
    lines = [
        f"terminal {r['tid']} ({r['state']})",
        f"  last STAN {r['last_stan']}, batch {r['batch_number']}, signed on {r['signed_on'] or 'never'}",
        f"  open batch: {batch['count']} entries; debits {batch['debit_count']} {_money({cur: batch['debit_amount']})},"
        f" credits {batch['credit_count']} {_money({cur: batch['credit_amount']})}",
    ]
    lines += [f"    {t['kind']:<16} STAN {t['stan']} rrn {t['rrn']} {_money({t['currency']: t['amount']})} "
              + (t["masked_pan"] or f"order {t['order_no']}") + (" (voided)" if t["voided"] else "")
              for t in batch["transactions"]]
    lines += [f"  QR order {o['order_no']} {o['status']}: {o['kind']} STAN {o['stan']} {_money({o['currency']: o['amount']})}"
              for o in r["open_qr_orders"]]
    lines.append(
        "  reversal owed: none" if owed is None
        else f"  reversal owed: STAN {owed['original_stan']} (reason {owed['reason']}, {owed['attempts']} attempts so far)"
    )
    lines.append(f"  advices queued: {len(r['queued_advices'])}")
    lines += [f"    {a['kind']} STAN {a['stan']} ({a['attempts']} attempts)" for a in r["queued_advices"]]
    if r["batch_close_in_progress"]:
        lines.append(f"  batch close under way (phase {r['batch_close_in_progress']}): run `possim pos batch close` to finish it")
    return "\n".join(lines)


def _money(amounts: dict[str, int]) -> str:
    """"12.50 CNY, 3.00 USD"; an amount whose currency no source told stays in minor units."""
    from possim.wire.money import currency, format_major

    return ", ".join(f"{format_major(v, currency(c))} {currency(c).alpha}" if c else f"{v} (minor units)"
                     for c, v in amounts.items()) or "nothing"


def _run_terminal(
    options: dict[str, Any],
    action: Callable[[Any], Any],
    render: Callable[[dict[str, Any]], str] | None = None,
    no_answer: Callable[[dict[str, Any]], bool] | None = None,
    receipt: str | None = None,
) -> None:
    """Run one terminal operation, print its result, append its receipt if asked; exit 3 when no answer came."""
    import asyncio

    from possim.terminal import Terminal, TerminalState, load_profile

    _parent_exists(options["state_path"], "--state")
    _parent_exists(options["trace"], "--trace")
    profile = load_profile(
        options["tid"], options["fixtures_dir"],
        dialect=options["dialect"], host=options["host_address"], timeout=options["timeout"],
    )
    link = _terminal_link(options, profile)
    state = TerminalState(profile.tid, options["state_path"])
    trace_file = open(options["trace"], "a", encoding="utf-8") if options["trace"] else None

    async def go() -> Any:
        terminal = Terminal(profile, link, state, trace=trace_file.write if trace_file else None)
        try:
            return await action(terminal)
        finally:
            await terminal.link.close()

    batch_number = state.batch_number
    try:
        result = asyncio.run(go())
    finally:
        state.close()
        if trace_file:
            trace_file.close()
    data = result.to_json()
    if receipt:
        _write_receipt(receipt, profile, options["fixtures_dir"], result, batch_number)
    emit(options["as_json"], data, render or _render_result)
    if (no_answer or (lambda d: d["response_code"] is None))(data):
        sys.exit(EXIT_NO_ANSWER)


def _terminal_link(options: dict[str, Any], profile: Any) -> Any:
    """TCP to the profile's host, or the serial port the user names (--serial, --baud, --link-profile)."""
    from possim.terminal import TcpLink
    from possim.terminal.serial_link import SerialLink
    from possim.wire.link_profile import load_link_profile

    serial_port, baud, link_profile = options.pop("serial_port"), options.pop("baud"), options.pop("link_profile")
    if serial_port is None:
        return TcpLink(*profile.address, profile.framing)
    return SerialLink(serial_port, load_link_profile(link_profile), profile.framing, baud)


def _write_receipt(path: str, profile: Any, fixtures_dir: str | None, result: Any, batch_number: int) -> None:
    """Customer and merchant copies of a transaction (in the batch it joined), or the settlement slip of a batch close."""
    from datetime import datetime

    from possim.terminal import receipt as receipts

    name = _merchant_name(profile, fixtures_dir)
    now = datetime.now()
    if hasattr(result, "totals"):
        combined = result.totals.combined
        text = receipts.settlement_slip(profile.tid, name, result.batch_number, now, {profile.currency: combined},
                                        result.balanced)
    else:
        text = "\n".join((receipts.customer_receipt(result, name, profile.mid, now, batch_number),
                          receipts.merchant_receipt(result, name, profile.mid, now, batch_number)))
    with open(path, "a", encoding="utf-8") as file:
        file.write(text + "\n\n")


def _merchant_name(profile: Any, fixtures_dir: str | None) -> str:
    """The name of the terminal's merchant in merchants.yaml, its ID when it has none."""
    from possim.fixtures import load_fixture

    merchants = load_fixture("merchants.yaml", fixtures_dir).get("merchants") or []
    return next((str(m.get("name", "")) for m in merchants if str(m.get("id")) == profile.mid), profile.mid)


def _render_close(r: dict[str, Any]) -> str:
    if r["already_closed"]:
        head = f"BATCH {r['batch_number']:06d} ALREADY CLOSED at the host"
    elif not r["closed"]:
        head = f"BATCH {r['batch_number']:06d} NOT CLOSED: {r['message']}"
    else:
        balance = "in balance" if r["balanced"] else "OUT OF BALANCE"
        head = f"BATCH {r['batch_number']:06d} CLOSED {balance}; next batch {r['next_batch_number']:06d}"
    lines = [head, f"  uploaded {r['uploaded']} of {r['upload_total']} record(s) in {r['upload_messages']} message(s)"]
    return "\n".join(lines)


def _render_advices(r: dict[str, Any]) -> str:
    lines = [f"{r['message']}"]
    lines += [f"  {a['kind']} STAN {a['stan']}: {a['message']}" for a in r["advices"]]
    return "\n".join(lines)


def _advices_left(r: dict[str, Any]) -> bool:
    return bool(r["remaining"])


def _amount_text(r: dict[str, Any]) -> str:
    """The amount with its currency (" 12.50 CNY"); empty when the result has none."""
    from possim.wire.money import currency, format_major

    if r.get("amount") is None or not r.get("currency"):
        return ""
    cur = currency(r["currency"])
    return f" {format_major(r['amount'], cur)} {cur.alpha}"


def _render_result(r: dict[str, Any]) -> str:
    amount = _amount_text(r)
    if r["response_code"] is None:
        head = f"NO ANSWER {r['operation']}{amount}: {r['message']}"
    else:
        verdict = "APPROVED" if r["approved"] else "DECLINED"
        head = f"{verdict} {r['response_code']} {r['message']} — {r['operation']}{amount}"
    parts = [f"tid {r['tid']}", f"stan {r['stan']}"]
    if r.get("balance") is not None and r.get("currency"):
        parts.append(f"available balance {_money({r['currency']: r['balance']})}")
    parts += [f"{k} {r[k]}" for k in ("rrn", "auth_code", "masked_pan") if r.get(k)]
    lines = [head, "  " + ", ".join(parts)]
    for key in ("prior_reversal", "reversal"):
        if r.get(key) and r[key]["message"] not in head:
            lines.append(f"  {key.replace('_', ' ')}: {r[key]['message']}")
    return "\n".join(lines)


# --- qr ----------------------------------------------------------------------


@cli.group(cls=PossimGroup)
def qr() -> None:
    """EMV QR codes: decode and check a payload, or make one (and its image)."""


@qr.command("decode")
@click.argument("payload")
@click.option("--strict", is_flag=True, help="Every EMV rule, not the lenient national-profile reading.")
@click.option("--image", is_flag=True, help="PAYLOAD is a PNG file to read the code from.")
@json_option
def qr_decode(payload: str, strict: bool, image: bool, as_json: bool) -> None:
    """Decode a merchant-presented EMV QR payload; exit 0 when valid, 1 when not.

    Errors name the tag and the character offset. A consumer-presented code
    (base64 BER-TLV, starting "hQ") is decoded as CPM: its PAN is shown masked.
    """
    from possim.wire.emv_cpm import CpmError, decode_cpm
    from possim.wire.emv_qr import decode_mpm

    if image:
        payload = _read_qr_image(payload)
    if payload.startswith("hQ"):
        try:
            cpm = decode_cpm(payload)
        except CpmError as exc:
            result = {"valid": False, "mode": "cpm", "errors": [{"tag": None, "offset": None, "message": str(exc)}], "fields": {}}
        else:
            result = {"valid": True, "mode": "cpm", "errors": [], "fields": {
                "aid": cpm.aid, "label": cpm.label, "masked_pan": cpm.masked_pan(), "expiry": cpm.expiry,
                "language": cpm.language, "chip_data_bytes": len(cpm.chip_data)}}
    else:
        result = {"mode": "mpm", **decode_mpm(payload, strict=strict).to_json()}
    emit(as_json, result, _render_qr)
    if not result["valid"]:
        sys.exit(1)


def _render_qr(r: dict[str, Any]) -> str:
    lines = [f"{'VALID' if r['valid'] else 'INVALID'} EMV QR ({r['mode'].upper()})"]
    lines += [f"  error at offset {e['offset']}, tag {e['tag']}: {e['message']}" for e in r["errors"]]

    def walk(fields: dict[str, Any], indent: str) -> None:
        for key, value in fields.items():
            if isinstance(value, dict):
                lines.append(f"{indent}{key}:")
                walk(value, indent + "  ")
            else:
                lines.append(f"{indent}{key}: {value}")

    walk(r["fields"], "  ")
    return "\n".join(lines)


@qr.command("encode")
@click.option("--merchant-account", "account", default="com.possim.pay", show_default=True, help="Globally unique ID of the merchant account template (ID 26).")
@click.option("--merchant-id", default="898310048160001", show_default=True, help="Merchant ID in that template (sub-ID 01).")
@click.option("--mcc", default="9311", show_default=True)
@click.option("--currency", default="156", show_default=True, help="ISO 4217 numeric or alphabetic code.")
@click.option("--amount", help="Amount in major units; omitted: a static code, the payer enters it.")
@click.option("--name", "merchant_name", default="CITY NON-TAX REVENUE HALL", show_default=True)
@click.option("--city", default="HUANGPU", show_default=True)
@click.option("--country", default="CN", show_default=True)
@click.option("--reference", help="Reference label (62.05), e.g. an order number.")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="Also write the code as a PNG image.")
@click.option("--screen", is_flag=True, help="With --png: a terminal-screen image, amount and merchant under the code.")
@json_option
def qr_encode(account: str, merchant_id: str, mcc: str, currency: str, amount: str | None, merchant_name: str, city: str,
              country: str, reference: str | None, png_path: str | None, screen: bool, as_json: bool) -> None:
    """Make a merchant-presented EMV QR payload (dynamic with --amount, else static)."""
    from possim.wire.emv_qr import QrEncodeError, dynamic_order_qr
    from possim.wire.money import currency as find_currency
    from possim.wire.money import format_major, parse_major
    from possim.wire.qr_image import qr_png, qr_text, terminal_screen_png

    _parent_exists(png_path, "--png")
    try:
        cur = find_currency(currency)
        minor = parse_major(amount, cur) if amount is not None else None
        payload = dynamic_order_qr(
            merchant_account={"00": account, "01": merchant_id}, mcc=mcc, currency=cur.numeric, amount_minor=minor,
            country=country, name=merchant_name, city=city, reference=reference, terminal_label=None,
        )
    except (QrEncodeError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from None
    if png_path:
        shown = f"{format_major(minor, cur)} {cur.alpha}" if minor is not None else None
        image = terminal_screen_png(payload, amount=shown, merchant=merchant_name) if screen else qr_png(payload)
        Path(png_path).write_bytes(image)
    emit(as_json, {"payload": payload, "png": str(Path(png_path).resolve()) if png_path else None},
         lambda r: f"{qr_text(r['payload'])}\n{r['payload']}" + (f"\nwritten to {r['png']}" if r["png"] else ""))


# --- serial and bridge -------------------------------------------------------


@cli.group(cls=PossimGroup)
def serial() -> None:
    """Serial links: virtual port pairs and the link-layer profiles."""


@serial.command("pair")
@json_option
def serial_pair(as_json: bool) -> None:
    """Create two joined pseudo-terminals (a virtual null-modem cable) and keep them until Ctrl-C / SIGTERM.

    Prints both device paths: give one to `possim host run --serial`, the other to `possim pos ... --serial`.
    """
    import signal
    import threading

    from possim.wire.pty_pair import PtyPair

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with PtyPair() as pair:
        a, b = pair.paths
        emit(as_json, {"a": a, "b": b}, lambda r: f"possim serial pair: {r['a']} <-> {r['b']} (Ctrl-C ends it)")
        sys.stdout.flush()
        stop.wait()


@serial.command("profiles")
@json_option
def serial_profiles(as_json: bool) -> None:
    """The built-in link-layer profiles and their settings."""
    from dataclasses import asdict

    from possim.wire.link_profile import builtin_link_profiles, load_link_profile

    profiles = [asdict(load_link_profile(name)) for name in builtin_link_profiles()]
    emit(as_json, {"profiles": profiles}, lambda r: "\n".join(
        f"{p['name']:<18} {p['baud']} {p['bytesize']}{p['parity']}{p['stopbits']:g}, length {p['length']}, "
        f"LRC from {p['lrc_start']:#04x} over {p['lrc_covers']}, {'ENQ, ' if p['use_enq'] else ''}"
        f"{p['retries']} retries — {p['description']}" for p in r["profiles"]))


@cli.command("bridge")
@click.option("--serial", "serial_port", required=True, help="Serial port or pyserial URL the terminal is on.")
@click.option("--tcp", "tcp_address", required=True, help="The host to reach, HOST:PORT.")
@serial_options
@dialect_option
@click.option("--trace", "trace", type=click.Path(dir_okay=False), help="Append a redacted trace of both sides to this file.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for the host's answer.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@json_option
def bridge(serial_port: str, tcp_address: str, baud: int | None, link_profile: str, dialect: str, trace: str | None,
           timeout: float, log_level: str, as_json: bool) -> None:
    """Let a terminal on a serial cable reach a TCP host, ours or a third party's, until Ctrl-C / SIGTERM."""
    import asyncio
    import signal

    from possim.wire.bridge import SerialTcpBridge
    from possim.wire.clock import system_clock
    from possim.wire.codec import Codec
    from possim.wire.dialect import load_dialect
    from possim.wire.link_profile import load_link_profile
    from possim.wire.serial_port import SerialPortError
    from possim.wire.trace import TraceFile

    host_name, port = _address(tcp_address, "--tcp")
    _parent_exists(trace, "--trace")
    _log_to_stderr(log_level)
    profile, chosen = load_link_profile(link_profile), load_dialect(dialect)
    tracer = TraceFile(trace, Codec(chosen), system_clock) if trace else None

    async def run() -> None:
        relay = SerialTcpBridge(serial_port, profile, host_name, port, chosen, baud, tracer, timeout)
        try:
            await relay.start()
        except SerialPortError as exc:
            raise CommandError(str(exc)) from None
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)
        emit(as_json, {"serial": serial_port, "tcp": tcp_address, "link_profile": profile.name, "dialect": chosen.name},
             lambda r: f"possim bridge: serial {r['serial']} ({r['link_profile']}) <-> tcp {r['tcp']} ({r['dialect']})")
        sys.stdout.flush()
        await stopped.wait()
        await relay.stop()

    try:
        asyncio.run(run())
    finally:
        if tracer is not None:
            tracer.close()


# --- hsm ---------------------------------------------------------------------


@cli.group(cls=PossimGroup)
def hsm() -> None:
    """Payment cryptography by hand (KCVs, PIN blocks, MACs, DUKPT, TR-31) and a payShield-style HSM.

    These tools print the clear values a tester asks for; nothing else in
    possim ever shows a clear key, PIN or PIN block.
    """


def _hex(value: str, name: str) -> bytes:
    text = "".join(value.split())
    bad = next((i for i, c in enumerate(text) if c not in "0123456789abcdefABCDEF"), None)
    if bad is not None:
        raise CommandError(f"{name} is not hexadecimal: {text[bad]!r} at character {bad}")
    if len(text) % 2:
        raise CommandError(f"{name} has an odd number of hex digits ({len(text)})")
    return bytes.fromhex(text)


@hsm.command("kcv")
@click.option("--key", required=True, help="The clear key, hex.")
@click.option("--algo", type=click.Choice(["tdes", "aes"]), default="tdes", show_default=True)
@click.option("--length", type=int, help="Check value bytes (default 3 for TDES, 5 for AES).")
@json_option
def hsm_kcv(key: str, algo: str, length: int | None, as_json: bool) -> None:
    """Key check value: TDES encrypts zeros; AES takes the CMAC of a zero block."""
    from possim.hsm_mock.kcv import aes_kcv, tdes_kcv

    clear = _hex(key, "--key")
    value = (aes_kcv if algo == "aes" else tdes_kcv)(clear, *(() if length is None else (length,)))
    emit(as_json, {"kcv": value.hex().upper(), "algo": algo}, lambda r: r["kcv"])


@hsm.group("pinblock", cls=PossimGroup)
def hsm_pinblock() -> None:
    """ISO 9564 PIN blocks: formats 0-3 (clear, or under a TDES key) and 4 (AES)."""


@hsm_pinblock.command("encode")
@click.option("--format", "fmt", type=click.IntRange(0, 4), required=True, help="ISO 9564 format 0, 1, 2, 3 or 4.")
@click.option("--pin", required=True, help="4 to 12 digits.")
@click.option("--pan", default="", help="The card number (formats 0, 3 and 4).")
@click.option("--key", help="PIN key, hex: TDES for formats 0-3 (omit for the clear block), AES for format 4.")
@json_option
def hsm_pinblock_encode(fmt: int, pin: str, pan: str, key: str | None, as_json: bool) -> None:
    """Build a PIN block; with --key, encipher it."""
    from possim.hsm_mock import pinblock

    if fmt == 4:
        block = pinblock.encipher_4(_format_4_key(key), pin, pan)
    elif key is None:
        block = pinblock.encode(fmt, pin, pan)
    else:
        block = pinblock.encipher(_hex(key, "--key"), fmt, pin, pan)
    emit(as_json, {"pinblock": block.hex().upper(), "format": fmt, "enciphered": key is not None}, lambda r: r["pinblock"])


@hsm_pinblock.command("decode")
@click.option("--pinblock", "block", required=True, help="The PIN block, hex.")
@click.option("--format", "fmt", type=click.IntRange(0, 4), help="Expected format (formats 0-3 carry it in the block).")
@click.option("--pan", default="", help="The card number (formats 0, 3 and 4).")
@click.option("--key", help="PIN key, hex, when the block is enciphered (AES for format 4).")
@json_option
def hsm_pinblock_decode(block: str, fmt: int | None, pan: str, key: str | None, as_json: bool) -> None:
    """Recover the PIN from a PIN block."""
    from possim.hsm_mock import pinblock

    data = _hex(block, "--pinblock")
    if fmt == 4:
        pin = pinblock.decipher_4(_format_4_key(key), data, pan)
    elif key is None:
        pin = pinblock.decode(data, pan, fmt)
    else:
        pin = pinblock.decipher(_hex(key, "--key"), data, pan, fmt)
    emit(as_json, {"pin": pin}, lambda r: r["pin"])


def _format_4_key(key: str | None) -> bytes:
    if key is None:
        raise CommandError("--key is required for format 4 (an AES key)")
    return _hex(key, "--key")


_MAC_ALGOS = ["iso9797-1-alg1", "iso9797-1-alg3", "x9.9", "x9.19", "cup-ecb", "aes-cmac", "tdes-cmac"]


@hsm.command("mac")
@click.option("--algo", type=click.Choice(_MAC_ALGOS), required=True)
@click.option("--padding", type=click.IntRange(1, 3), default=1, show_default=True, help="ISO 9797-1 padding method (alg1/alg3).")
@click.option("--key", required=True, help="MAC key, hex.")
@click.option("--data", required=True, help="The data to MAC, hex (for cup-ecb: the MAC block, MTI to field 63).")
@json_option
def hsm_mac(algo: str, padding: int, key: str, data: str, as_json: bool) -> None:
    """Compute a MAC. cup-ecb also gives the 8 characters that go in field 64."""
    from possim.hsm_mock import mac

    k, d = _hex(key, "--key"), _hex(data, "--data")
    result: dict[str, Any] = {"algo": algo}
    if algo == "cup-ecb":
        cup = mac.cup_ecb_mac(k, d)
        result["mac"] = cup.full.decode("ascii")
        result["field64"] = cup.field64.decode("ascii")
    else:
        compute = {
            "iso9797-1-alg1": lambda: mac.cbc_mac(k, d, padding),
            "iso9797-1-alg3": lambda: mac.retail_mac(k, d, padding),
            "x9.9": lambda: mac.x9_9_mac(k, d),
            "x9.19": lambda: mac.retail_mac(k, d, 1),
            "aes-cmac": lambda: mac.aes_cmac(k, d),
            "tdes-cmac": lambda: mac.tdes_cmac(k, d),
        }[algo]
        result["mac"] = compute().hex().upper()
    emit(as_json, result, lambda r: r["mac"] + (f"  (field 64: {r['field64']})" if "field64" in r else ""))


@hsm.command("dukpt")
@click.option("--bdk", required=True, help="Base derivation key, hex.")
@click.option("--ksn", required=True, help="Key serial number, hex: 10 bytes (TDES) or 12 bytes (AES).")
@click.option("--aes128", "scheme", flag_value="aes128", help="AES DUKPT (X9.24-3) with an AES-128 BDK.")
@click.option("--aes256", "scheme", flag_value="aes256", help="AES DUKPT (X9.24-3) with an AES-256 BDK.")
@click.option("--working-key", type=click.Choice(["aes128", "aes256"]), default="aes128", show_default=True,
              help="AES DUKPT working-key type.")
@json_option
def hsm_dukpt(bdk: str, ksn: str, scheme: str | None, working_key: str, as_json: bool) -> None:
    """DUKPT keys for one KSN: TDES (X9.24-1:2009) by default, AES (X9.24-3:2017) with --aes128/--aes256."""
    from possim.hsm_mock import dukpt_aes, dukpt_tdes

    b, k = _hex(bdk, "--bdk"), _hex(ksn, "--ksn")
    if scheme is None:
        t = dukpt_tdes.derive_keys(b, k)
        keys = {"initial_key": t.initial_key, "transaction_key": t.transaction_key, "pin_key": t.pin_key,
                "mac_key": t.mac_request_key, "data_key": t.data_request_key}
    else:
        expected = 16 if scheme == "aes128" else 32
        if len(b) != expected:
            raise CommandError(f"--bdk is {len(b)} bytes: --{scheme} needs {expected}")
        key_type = dukpt_aes.KeyType.AES128 if working_key == "aes128" else dukpt_aes.KeyType.AES256
        a = dukpt_aes.derive_keys(b, k, key_type)
        keys = {"initial_key": a.initial_key, "transaction_key": a.transaction_key, "pin_key": a.pin_key,
                "mac_key": a.mac_generation_key, "data_key": a.data_encrypt_key}
    result = {name: value.hex().upper() for name, value in keys.items()}
    emit(as_json, result, lambda r: "\n".join(f"{name:<16} {value}" for name, value in r.items()))


@hsm.command("serve")
@click.option("--listen", default="127.0.0.1:1500", show_default=True, help="Address to listen on (port 0: any free port).")
@click.option("--lmk", "lmk_path", type=click.Path(dir_okay=False, exists=True), help="Variant LMK file (20 lines of 32 hex digits); default: the published test LMK.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@json_option
def hsm_serve(listen: str, lmk_path: str | None, log_level: str, as_json: bool) -> None:
    """A payShield-style HSM on TCP (2-byte length, 4-character header) until Ctrl-C / SIGTERM.

    Commands NC, BU, A0, A6/A8, CA, G0, DA/DC, EA/EC, CW/CY and M6/M8; layouts in docs/hsm.md.
    """
    import asyncio
    import logging

    from possim.hsm_mock.device import Hsm
    from possim.hsm_mock.lmk import VariantLmk
    from possim.hsm_mock.server import HsmServer

    _log_to_stderr(log_level)
    lmk = VariantLmk.load(lmk_path) if lmk_path else VariantLmk.test()

    asyncio.run(_serve_until_stopped(
        HsmServer(Hsm(lmk)), listen, as_json,
        lambda bound: {"listening": bound, "lmk": lmk_path or "test", "lmk_check": lmk.check_value().hex().upper()},
        lambda r: f"possim hsm listening on {r['listening']} (LMK {r['lmk']}, check {r['lmk_check']})",
    ))
    logging.getLogger("possim.hsm").info("hsm stopped")


@hsm.group("tr31", cls=PossimGroup)
def hsm_tr31() -> None:
    """TR-31 / X9.143 key blocks: versions A, B, C (TDES) and D (AES)."""


@hsm_tr31.command("wrap")
@click.option("--kbpk", required=True, help="Key block protection key, hex.")
@click.option("--key", required=True, help="The key to wrap, hex.")
@click.option("--version", "version", type=click.Choice(["A", "B", "C", "D"]), default="D", show_default=True)
@click.option("--usage", default="P0", show_default=True, help="Key usage (P0 PIN, M3 MAC, K0 key encryption, B0 BDK …).")
@click.option("--algorithm", default="T", show_default=True, help="T TDES, A AES, D DES.")
@click.option("--mode", default="N", show_default=True, help="Mode of use (E, D, B, C, G, V, N …).")
@click.option("--key-version", default="00", show_default=True)
@click.option("--exportability", default="E", show_default=True, help="E, N or S.")
@json_option
def hsm_tr31_wrap(kbpk: str, key: str, version: str, usage: str, algorithm: str, mode: str,
                  key_version: str, exportability: str, as_json: bool) -> None:
    """Wrap a key into a TR-31 key block."""
    from possim.hsm_mock.tr31 import KeyBlockHeader, wrap

    header = KeyBlockHeader(version, usage, algorithm, mode, key_version, exportability)
    block = wrap(_hex(kbpk, "--kbpk"), _hex(key, "--key"), header)
    emit(as_json, {"keyblock": block}, lambda r: r["keyblock"])


@hsm_tr31.command("unwrap")
@click.option("--kbpk", required=True, help="Key block protection key, hex.")
@click.option("--keyblock", required=True, help="The TR-31 key block.")
@json_option
def hsm_tr31_unwrap(kbpk: str, keyblock: str, as_json: bool) -> None:
    """Check a key block's MAC and recover its key and header."""
    from possim.hsm_mock.kcv import aes_kcv, tdes_kcv
    from possim.hsm_mock.tr31 import unwrap

    header, key = unwrap(_hex(kbpk, "--kbpk"), keyblock.strip())
    kcv = aes_kcv(bytes(key)) if header.algorithm == "A" else tdes_kcv(bytes(key))
    result = {
        "key": bytes(key).hex().upper(),
        "kcv": kcv.hex().upper(),
        "header": {
            "version": header.version, "key_usage": header.key_usage, "algorithm": header.algorithm,
            "mode_of_use": header.mode_of_use, "key_version": header.key_version,
            "exportability": header.exportability, "optional_blocks": dict(header.optional_blocks),
        },
    }
    emit(as_json, result, lambda r: f"{r['key']}  (KCV {r['kcv']}, usage {r['header']['key_usage']})")


# --- settle / recon ----------------------------------------------------------


settle_db_option = click.option("--db", "db", default="journal.sqlite", show_default=True,
                                type=click.Path(dir_okay=False, exists=True), help="The host's SQLite journal.")
settle_date_option = click.option("--date", "business_date", required=True, help="Business date, e.g. 2026-12-04.")
settle_fixtures_option = click.option("--fixtures", "fixtures_dir", type=click.Path(file_okay=False, exists=True),
                                      help="Folder whose host.yaml, fees.yaml and merchants.yaml override the built-ins.")


@cli.group(cls=PossimGroup)
def settle() -> None:
    """Business-day cut-over: settlement states, batches per merchant and channel, the settlement CSV and clearing file."""


@settle.command("cutover")
@settle_db_option
@settle_date_option
@click.option("--out", "out", type=click.Path(file_okay=False), help="Folder for the settlement files (default: settlement/DATE beside the journal).")
@settle_fixtures_option
@json_option
def settle_cutover(db: str, business_date: str, out: str | None, fixtures_dir: str | None, as_json: bool) -> None:
    """Close a business date and settle it; running it again changes nothing. Exit 1 if a money invariant fails."""
    from possim.settlement.jobs import run_cutover

    report = run_cutover(db, business_date, fixtures_dir, out)
    emit(as_json, report.to_json(), _render_cutover)
    if report.failed:
        sys.exit(EXIT_ERROR)


def _render_cutover(r: dict[str, Any]) -> str:
    from possim.wire.money import currency, format_major

    head = f"{r['business_date']}: " + ("already cut over at " if r["already"] else "cut over at ") + r["cutover_at"]
    lines = [head, f"  {r['rows']} journal rows: " + ", ".join(f"{k} {v}" for k, v in sorted(r["states"].items()))]
    lines.append(f"  {'batch':<50} {'sales':>12} {'refunds':>10} {'adjusted':>9} {'fees':>8} {'net':>12}      value date")
    for b in r["batches"]:
        cur = currency(b["currency"])
        sales, refunds, adjusted, fees, net = (format_major(b[k], cur) for k in
                                               ("sales_amount", "refunds_amount", "adjustments", "fees", "net"))
        lines.append(f"  {b['batch_id']:<50} {sales:>12} {refunds:>10} {adjusted:>9} {fees:>8} {net:>12} {cur.alpha}"
                     f"  {b['value_date']}")
    lines += _render_invariants(r["invariants"])
    lines += [f"  {name}: {path}" for name, path in r["files"].items()]
    return "\n".join(lines)


def _render_invariants(invariants: list[dict[str, Any]]) -> list[str]:
    return [f"  {'PASS' if i['passed'] else 'FAIL'}  {i['name']}{' ' + i['currency'] if i['currency'] else ''}: {i['detail']}"
            for i in invariants]


@cli.group(cls=PossimGroup)
def recon() -> None:
    """Reconciliation of a settled date against terminal batches, clearing files and the bank statement."""


@recon.command("run")
@settle_db_option
@settle_date_option
@click.option("--file", "files", multiple=True, metavar="KIND=PATH", help="An external file: clearing=PATH (fixed-width, docs/settlement.md) or bank=PATH (statement CSV); repeatable.")
@click.option("--key", help="Clearing match key columns, e.g. rrn,terminal_id (default: host.yaml's reconciliation.match_keys).")
@click.option("--tolerance", help="Amounts this far apart still match, in major units (default: host.yaml's).")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Folder for the report, exceptions CSV and summary (default: recon/DATE beside the journal).")
@settle_fixtures_option
@json_option
def recon_run(db: str, business_date: str, files: tuple[str, ...], key: str | None, tolerance: str | None,
              out: str | None, fixtures_dir: str | None, as_json: bool) -> None:
    """Match, classify and resolve; running it again resolves nothing twice. Exit 1 if a money invariant fails."""
    from possim.settlement.jobs import run_recon
    from possim.wire.money import currency as find_currency, parse_major

    pairs = []
    for given in files:
        kind, sep, path = given.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"{given!r} is not KIND=PATH", param_hint="--file")
        pairs.append((kind, Path(path)))
    try:
        minor = parse_major(tolerance, find_currency("156")) if tolerance is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tolerance") from None
    result = run_recon(db, business_date, pairs, fixtures_dir, out, key, minor)
    emit(as_json, result.to_json(), _render_recon)
    if result.failed:
        sys.exit(EXIT_ERROR)


def _render_recon(r: dict[str, Any]) -> str:
    lines = [f"{r['business_date']} reconciliation run {r['run']}: {r['verdict']} ({r['new']} new discrepancies)"]
    for s in r["sources"]:
        counted = "terminal batches" if s["kind"] == "terminal" else "rows" if s["kind"] == "journal" else "records"
        lines.append(f"  source {s['kind']:<9} {s['path']} ({s['records']} {counted})")
    for cls, c in r["classes"].items():
        lines.append(f"  {cls:<20} {c['count']:>4}  {_money(c['amounts']):>16}  resolved {c['resolved']}, suspense"
                     f" {c['suspense']}, exception {c['exception']}")
    lines += _render_invariants(r["invariants"])
    lines += [f"  {name}: {path}" for name, path in r["files"].items()]
    return "\n".join(lines)


@recon.command("make-file")
@settle_db_option
@settle_date_option
@click.option("--kind", required=True, type=click.Choice(["clearing", "bank", "collection"]), help="clearing: a channel's clearing file; bank: the settlement account's statement; collection: the fee collection account's statement.")
@click.option("--inject", help="Discrepancies to put in, e.g. missing=3,amount=2,duplicate=1 (clearing: missing, amount, duplicate, unknown, status, fee, late; bank and collection: missing, amount, duplicate, unidentified).")
@click.option("--seed", default=1, show_default=True, type=int, help="Same journal and seed, same file.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="The file to write.")
@settle_fixtures_option
@json_option
def recon_make_file(db: str, business_date: str, kind: str, inject: str | None, seed: int, output: str,
                    fixtures_dir: str | None, as_json: bool) -> None:
    """Write a practice clearing file or bank statement from the journal, with the stated discrepancies."""
    from possim.settlement.jobs import run_make_file

    result = run_make_file(db, business_date, kind, inject, seed, output, fixtures_dir)
    emit(as_json, result, lambda r: f"{r['file']}: {r['records']} {r['kind']} records; injected "
                                    + (", ".join(f"{k} {len(v)}" for k, v in r["injected"].items()) or "nothing"))


# --- fees --------------------------------------------------------------------


@cli.group(cls=PossimGroup)
def fees() -> None:
    """Government fee collection: payment notices and the finance bureau's non-tax system (docs/fees.md)."""


@fees.group("notice", cls=PossimGroup)
def fees_notice() -> None:
    """Payment notices, in the finance system's SQLite file."""


finance_db_option = click.option("--db", "db", default="finance.sqlite", show_default=True, type=click.Path(dir_okay=False),
                                 help="The finance system's SQLite file (created if missing).")
finance_fixtures_option = click.option("--fixtures", "fixtures_dir", type=click.Path(file_okay=False, exists=True),
                                       help="Folder whose finance.yaml overrides the built-in one.")


def _notice_store(db: str, fixtures_dir: str | None) -> Any:
    from possim.acquirer.finance.notices import FinanceConfig, NoticeStore

    _parent_exists(db, "--db")
    config = FinanceConfig.from_fixtures(fixtures_dir)
    return NoticeStore(db, config.lengths, config.agencies, currency_numeric=config.currency)


def _notice_json(notice: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(notice)


def _render_notice(n: dict[str, Any]) -> str:
    due = _money({n["currency"]: n["amount"]})
    lines = [f"{n['pay_code']}  {n['status'].upper()}  {due} due {n['due_date']}",
             f"  agency {n['agency_code']} {n['agency_name']}; payer {n['payer_name']}"]
    lines += [f"  item {i['code']} {i['name']}: {_money({n['currency']: i['amount']})}" for i in n["items"]]
    if n.get("paid_trade_no"):
        lines.append(f"  paid {n['paid_at']} by {n['paid_channel']} trade {n['paid_trade_no']}, confirmation {n['confirm_no']}")
    return "\n".join(lines)


@fees_notice.command("add")
@click.option("--agency", required=True, help="Collecting agency code (finance.yaml agencies).")
@click.option("--payer", required=True, help="The payer's name as printed on the notice.")
@click.option("--item", "items", multiple=True, required=True, metavar="CODE:NAME:AMOUNT",
              help="A fee item: budget code, name, amount in major units; repeatable.")
@click.option("--due", required=True, help="Last day to pay, YYYY-MM-DD.")
@click.option("--code", "pay_code", help="The payment code (default: a new one for --region, with its check digit).")
@click.option("--region", default="310101", show_default=True, help="Region code a new payment code starts with.")
@finance_db_option
@finance_fixtures_option
@json_option
def fees_notice_add(agency: str, payer: str, items: tuple[str, ...], due: str, pay_code: str | None, region: str,
                    db: str, fixtures_dir: str | None, as_json: bool) -> None:
    """Issue a payment notice: its amount due is the sum of its items."""
    import random
    from datetime import date

    from possim.acquirer.finance.notices import FeeItem, Notice, check_pay_code, make_pay_code
    from possim.wire.money import parse_major

    store = _notice_store(db, fixtures_dir)
    try:
        cur = currency_of(store.currency)
        fee_items = []
        for given in items:
            code, name, amount = (given.split(":", 2) + ["", ""])[:3]
            if not code or not name or not amount:
                raise click.BadParameter(f"{given!r} is not CODE:NAME:AMOUNT", param_hint="--item")
            try:
                fee_items.append(FeeItem(code, name, parse_major(amount, cur)))
            except ValueError as exc:
                raise click.BadParameter(f"{given!r}: {exc}", param_hint="--item") from None
        try:
            date.fromisoformat(due)
        except ValueError:
            raise click.BadParameter(f"{due!r} is not a date such as 2026-12-31", param_hint="--due") from None
        if agency not in store.agencies:
            raise click.BadParameter(f"{agency!r} is not a collecting agency of finance.yaml"
                                     f" ({', '.join(sorted(store.agencies))})", param_hint="--agency")
        code = pay_code or make_pay_code(region, random.SystemRandom(), store.lengths)
        check_pay_code(code, store.lengths)
        notice = store.add(Notice(code, agency, store.agencies.get(agency, ""), payer, tuple(fee_items),
                                  sum(i.amount for i in fee_items), store.currency, due))
        emit(as_json, _notice_json(notice), _render_notice)
    finally:
        store.close()


def currency_of(numeric: str) -> Any:
    from possim.wire.money import currency

    return currency(numeric)


@fees_notice.command("show")
@click.argument("pay_code")
@finance_db_option
@finance_fixtures_option
@json_option
def fees_notice_show(pay_code: str, db: str, fixtures_dir: str | None, as_json: bool) -> None:
    """One notice and how it was paid."""
    from possim.acquirer.finance.notices import check_pay_code

    store = _notice_store(db, fixtures_dir)
    try:
        check_pay_code(pay_code, store.lengths)
        notice = store.get(pay_code)
        if notice is None:
            raise CommandError(f"no notice {pay_code} in {db}")
        emit(as_json, _notice_json(notice), _render_notice)
    finally:
        store.close()


@fees_notice.command("list")
@click.option("--status", type=click.Choice(["unpaid", "paid", "cancelled", "expired"]))
@finance_db_option
@finance_fixtures_option
@json_option
def fees_notice_list(status: str | None, db: str, fixtures_dir: str | None, as_json: bool) -> None:
    """Every notice (or those with --status)."""
    store = _notice_store(db, fixtures_dir)
    try:
        notices = [_notice_json(n) for n in store.list(status)]
    finally:
        store.close()
    emit(as_json, {"notices": notices},
         lambda r: "\n".join(_render_notice(n).splitlines()[0] for n in r["notices"]) or "no notices")


@fees_notice.command("load")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@finance_db_option
@finance_fixtures_option
@json_option
def fees_notice_load(file: str, db: str, fixtures_dir: str | None, as_json: bool) -> None:
    """Add the notices of a YAML or CSV file (finance.yaml's `notices:` format), all or none."""
    store = _notice_store(db, fixtures_dir)
    try:
        added = store.load(file)
    finally:
        store.close()
    emit(as_json, {"file": file, "added": added}, lambda r: f"{r['added']} notice(s) added from {r['file']}")


@fees.command("reconcile")
@settle_db_option
@settle_date_option
@click.option("--finance", "finance_address", required=True, help="The finance system (HOST:PORT) to ask for its confirmation list.")
@click.option("--file", "statement", required=True, metavar="collection=PATH", help="The collection account's statement (CSV, docs/settlement.md).")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Folder for the confirmation files, sweep and summary (default: treasury/DATE beside the journal).")
@settle_fixtures_option
@json_option
def fees_reconcile(db: str, business_date: str, finance_address: str, statement: str, out: str | None,
                   fixtures_dir: str | None, as_json: bool) -> None:
    """The day's fee collections three ways — journal, finance confirmation list, collection account — per
    agency; a confirmation file per agency and the sweep instruction. Once per date. Exit 1 on differences."""
    import asyncio

    from possim.settlement.jobs import daily_list, report_reconciled, run_treasury

    kind, sep, path = statement.partition("=")
    if sep and kind != "collection":
        raise click.BadParameter(f"{statement!r}: give collection=PATH", param_hint="--file")
    path = path if sep else statement
    if not Path(path).is_file():
        raise click.BadParameter(f"no such file: {path}", param_hint="--file")
    finance_at = _address(finance_address, "--finance")
    finance_list = asyncio.run(daily_list(finance_at, business_date, fixtures_dir))
    result = run_treasury(db, business_date, finance_list, path, fixtures_dir, out)
    closed = asyncio.run(report_reconciled(finance_at, result, fixtures_dir)) if result.balanced else None
    emit(as_json, {**result.to_json(), "finance_day_closed": closed == "0000" if closed else False,
                   "finance_result": closed}, _render_treasury)
    if not result.balanced:
        sys.exit(EXIT_ERROR)


def _render_treasury(r: dict[str, Any]) -> str:
    cur = r["currency"]
    lines = [f"{r['business_date']} fee collections: {r['verdict']}"]
    for a in r["agencies"]:
        lines.append(f"  agency {a['agency']:<10} host {a['host_count']} {_money({cur: a['host_amount']})}, finance"
                     f" {a['finance_count']} {_money({cur: a['finance_amount']})}, collection account"
                     f" {a['collection_count']} {_money({cur: a['collection_amount']})}"
                     f"  {'balanced' if a['balanced'] else 'DIFFERENT'}")
    lines += [f"  {d['class']} ({d['source']}): {d['detail']}" for d in r["discrepancies"]]
    lines.append(f"  sweep: {_money({cur: r['identified']})} to clearing, {_money({cur: r['unidentified']})} to suspense")
    lines.append("  finance system: day closed (no cancel after, later confirmations on the next day)"
                 if r["finance_day_closed"] else f"  finance system: day not closed ({r['finance_result'] or 'not balanced'})")
    lines += [f"  {name}: {path}" for name, path in r["files"].items()]
    return "\n".join(lines)


@fees.group("finance", cls=PossimGroup)
def fees_finance() -> None:
    """The finance bureau's non-tax system, simulated."""


@fees_finance.command("serve")
@click.option("--listen", default="127.0.0.1:9100", show_default=True, help="TCP address (port 0: any free port).")
@finance_db_option
@click.option("--faults", "faults_file", type=click.Path(dir_okay=False, exists=True),
              help="YAML list of faults to inject per message type (delay, drop, lose_answer, error, already_paid).")
@finance_fixtures_option
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@json_option
def fees_finance_serve(listen: str, db: str, faults_file: str | None, fixtures_dir: str | None, log_level: str,
                       as_json: bool) -> None:
    """Answer notice queries, payment confirmations, cancellations, status queries and daily lists (6-digit
    length + XML with an HMAC-SHA256 MAC) until Ctrl-C / SIGTERM; the sample notices of finance.yaml are loaded."""
    import asyncio

    from possim.acquirer.finance.bureau import open_bureau
    from possim.acquirer.finance.server import FinanceServer

    _parent_exists(db, "--db")
    _log_to_stderr(log_level)
    bureau = open_bureau(db, fixtures_dir, faults_file)
    try:
        asyncio.run(_serve_until_stopped(
            FinanceServer(bureau), listen, as_json,
            lambda bound: {"listening": bound, "db": str(Path(db).resolve()), "notices": len(bureau.store.list())},
            lambda r: f"possim finance system listening on {r['listening']} ({r['notices']} notices in {r['db']})",
        ))
    finally:
        bureau.store.close()


# --- record ------------------------------------------------------------------


@cli.command("record")
@click.option("--listen", required=True, help="Where terminals connect, HOST:PORT (port 0: any free port).")
@click.option("--forward", required=True, help="The host every frame goes on to, HOST:PORT.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="The scenario YAML to write when the recording stops.")
@dialect_option
@click.option("--name", "name", help="The scenario's name (default: the output file's name without .yaml).")
@click.option("--raw", "raw_path", type=click.Path(dir_okay=False), help="Also write the frames as a .hex file (card data redacted) for `possim replay FILE.hex`.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many exchanges (default: at Ctrl-C or SIGTERM).")
@click.option("--fixtures", "fixtures_dir", type=click.Path(file_okay=False, exists=True), help="Folder of fixture YAML overriding the built-ins (cards.yaml names the recorded cards).")
@json_option
def record_command(listen: str, forward: str, output: str, dialect: str, name: str | None, raw_path: str | None,
                   count: int | None, fixtures_dir: str | None, as_json: bool) -> None:
    """Record a terminal <-> host session through a proxy and write it as a scenario (docs/replay.md).

    Every exchange is shown on stderr as it passes (card masked); Ctrl-C,
    SIGTERM or --count ends the recording and writes the file.
    """
    import asyncio
    import signal

    from possim.terminal.replay.record import exchange_line, session_scenario
    from possim.wire.proxy import Exchange, FrameProxy

    upstream = _address(forward, "--forward")
    listen_at = _address(listen, "--listen")
    _parent_exists(output, "-o")
    _parent_exists(raw_path, "--raw")
    write_hex = None
    if raw_path is not None:
        try:
            from possim.terminal.replay.raw import write_hex
        except ImportError:
            raise CommandError("--raw: this possim cannot write .hex files (terminal/replay/raw.py is missing)") from None
    d = load_dialect(dialect)
    _log_to_stderr("warning")
    exchanges: list[Exchange] = []

    async def run() -> None:
        proxy: FrameProxy

        def seen(exchange: Exchange) -> None:
            exchanges.append(exchange)
            click.echo(exchange_line(exchange, d), err=True)
            if count is not None and len(exchanges) == count:
                asyncio.ensure_future(proxy.stop())

        proxy = FrameProxy(upstream, d.framing, on_exchange=seen)
        try:
            bound = await proxy.start(*listen_at)
        except OSError as exc:
            raise CommandError(f"cannot listen on {listen}: {_one_line(exc)} (--listen 127.0.0.1:0 takes any free port)") from None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(proxy.stop()))
        click.echo(f"possim record: listening on {bound[0]}:{bound[1]}, forwarding to {forward} ({d.name}); "
                   f"Ctrl-C writes {output}", err=True)
        await proxy.serve_forever()

    asyncio.run(run())
    result: dict[str, Any] = {"exchanges": len(exchanges), "steps": 0, "warnings": [], "file": None, "raw": None}
    if exchanges:
        import yaml

        text, warnings = session_scenario(exchanges, d, name=name or Path(output).stem,
                                          fixtures_dir=Path(fixtures_dir) if fixtures_dir else None)
        _write_replacing(Path(output), lambda path: path.write_text(text, encoding="utf-8"))
        if write_hex is not None and raw_path is not None:
            write_hex(Path(raw_path), [(e.request, e.response) for e in exchanges], d, f"possim record --forward {forward}")
            result["raw"] = str(Path(raw_path).resolve())
        result.update(steps=len(yaml.safe_load(text)["steps"]), warnings=warnings, file=str(Path(output).resolve()))
    emit(as_json, result, _render_record)


def _write_replacing(path: Path, write: Callable[[Path], None]) -> None:
    """Write under a temporary name beside `path`, then rename: an interrupted write never leaves half a file."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _render_record(r: dict[str, Any]) -> str:
    if r["file"] is None:
        return "nothing recorded: no exchange passed, no file written"
    lines = [f"recorded {r['exchanges']} exchange(s) as {r['steps']} step(s): {r['file']}"]
    if r["raw"]:
        lines.append(f"frames: {r['raw']}")
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


# --- demo --------------------------------------------------------------------


@cli.command("demo")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Folder for the journal, terminal state and traces (default: a new possim-demo-* folder here).")
@dialect_option
@json_option
def demo_command(out: str | None, dialect: str, as_json: bool) -> None:
    """Run a whole business day against an in-process host (and its HSM) over real TCP and a virtual serial cable, then summarize it."""
    import asyncio

    from possim.demo import new_out_dir, run_demo

    load_dialect(dialect)  # a bad dialect fails before anything is written
    folder = Path(out) if out else new_out_dir(Path.cwd())
    if folder.exists() and any(folder.iterdir()):
        raise CommandError(f"--out {folder} is not empty; give a new or empty folder")
    if folder.exists():
        folder.rmdir()
    click.echo(f"possim demo: business day in {folder} ...", err=True)
    report = asyncio.run(run_demo(folder, dialect))
    emit(as_json, report.to_json(), _render_demo)
    if not report.ok:
        sys.exit(EXIT_ERROR)


def _render_demo(r: dict[str, Any]) -> str:
    money = _money
    lines = [f"possim demo — host {r['host']} ({r['dialect']})", ""]
    for s in r["steps"]:
        mark = "ok " if s["ok"] else "FAIL"
        lines.append(f"  {mark} {s['step']:>2}. {s['terminal']}  {s['title']:<58} expected {s['expected']:<8} got {s['got']}")
    j = r["journal"]
    lines += ["", f"Journal: {j['transactions']} transactions, {j['messages']} messages", "  code  status      count  amount"]
    for g in j["by_response_code"]:
        lines.append(f"  {g['response_code']:<4}  {g['status']:<10}  {g['count']:>5}  {money(g['amounts'])}")
    lines.append("  answers sent: " + ", ".join(f"{k} ×{v}" for k, v in j["answers_sent"].items()))
    lines += ["", "Terminals:"]
    for t in r["terminals"]:
        lines.append(
            f"  {t['tid']}  last STAN {t['last_stan']:06d}, open batch {t['batch_number']:06d}: "
            f"{t['open_batch']['count']} entries; reversal owed: {t['pending_reversal'] or 'none'}; "
            f"advices queued: {t['queued_advices']}"
        )
    width = max(len(name) for name in r["files"])
    lines += ["", "Files:"] + [f"  {name:<{width}}  {path}" for name, path in r["files"].items()]
    failed = [s for s in r["steps"] if not s["ok"]]
    lines += ["", "All steps answered as expected." if not failed else f"{len(failed)} step(s) did not answer as expected."]
    return "\n".join(lines)


# --- replay ------------------------------------------------------------------


@cli.command("replay")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--host", "host_address", help="Replay against the host at HOST:PORT.")
@click.option("--embedded", is_flag=True, help="Replay against a fresh host in this process for every scenario (its own HSM, finance bureau, HTTP API and journal).")
@click.option("--dialect", default="cup", show_default=True, help="Dialect of scenarios that name none, and of .hex files: built-in name or YAML file.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), help="Also write a JUnit XML report to this file.")
@click.option("-k", "expr", metavar="EXPR", help="Select scenarios by name or tag: words, and, or, not, parentheses (\"purchase and not qr\").")
@click.option("--parallel", type=click.IntRange(min=1), default=1, show_default=True, help="Scenarios run at a time (against --host, never two with the same terminal ID).")
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="With --host: that host's journal file, for journal checks.")
@click.option("--http", "http_url", metavar="URL", help="With --host: the base URL of its HTTP API (http://HOST:PORT), for wallet_pay steps.")
@click.option("--fixtures", "fixtures_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), help="Folder of fixture YAML overriding the built-ins (cards, terminals, wallets; the embedded host's too).")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), help="Append the redacted trace of every exchange to this file.")
@click.option("--ignore", metavar="LIST", help="For .hex files: fields left out of the comparison, e.g. 7,11,37 (default: 7,11,12,13,15,37,38,64,128).")
@click.option("--schema", "show_schema", is_flag=True, help="Print the JSON Schema of the scenario format and exit.")
@json_option
def replay(paths: tuple[Path, ...], host_address: str | None, embedded: bool, dialect: str, junit_path: str | None,
           expr: str | None, parallel: int, journal_path: Path | None, http_url: str | None, fixtures_dir: Path | None,
           trace_path: str | None, ignore: str | None, show_schema: bool, as_json: bool) -> None:
    """Run scenarios (YAML files, or folders of them) and replay raw frames (.hex files) against a host.

    Every scenario is read and checked before anything is sent. Progress goes
    to stderr, the summary to stdout. Exit 0 when every case passed, 1 when
    one failed or could not run (docs/replay.md).
    """
    import asyncio
    import logging
    import tempfile
    import time
    from contextlib import nullcontext

    from possim.terminal.replay.raw import DEFAULT_IGNORE, read_hex
    from possim.terminal.replay.scenario import load_scenarios, schema
    from possim.terminal.replay.selection import select
    from possim.terminal.replay.suite import check_needs, run_raw, run_suite

    if show_schema:
        click.echo(json.dumps(schema(), indent=2, ensure_ascii=False))
        return
    if not paths:
        raise click.UsageError("give scenario files or folders, or .hex files, to replay")
    if embedded == (host_address is not None):
        raise click.UsageError("give exactly one of --host HOST:PORT and --embedded")
    if embedded and (journal_path or http_url):
        raise click.UsageError("--journal and --http describe an external host: they go with --host")
    address = _address(host_address, "--host") if host_address is not None else None
    if http_url is not None and not http_url.startswith(("http://", "https://")):
        raise CommandError(f"--http {http_url!r} must be a URL, e.g. http://127.0.0.1:8080")
    ignored = _field_list(ignore, "--ignore") if ignore is not None else DEFAULT_IGNORE
    _parent_exists(junit_path, "--junit")
    _parent_exists(trace_path, "--trace")
    raw_dialect = load_dialect(dialect)  # a bad dialect fails before anything is read or sent
    hex_files = [(p, read_hex(p)) for p in paths if p.suffix == ".hex"]
    scenario_paths = [p for p in paths if p.suffix != ".hex"]
    loaded = load_scenarios(scenario_paths, fixtures_dir=fixtures_dir, default_dialect=dialect) if scenario_paths else []
    try:
        scenarios = select(loaded, expr)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if loaded and not scenarios and not hex_files:
        raise CommandError(f"-k {expr!r} selects none of the {len(loaded)} scenarios")
    if not embedded:
        check_needs(scenarios, journal=journal_path is not None, http=http_url is not None)
    from possim.lab import embedded_source, embedded_target, external_target

    external = external_target(address, http=http_url, journal=journal_path) if address is not None else None
    logging.getLogger("possim").setLevel(logging.ERROR)  # a scenario's faults make the hosts warn by design
    total = len(scenarios) + len(hex_files)

    def show(verdict: str, name: str, seconds: float, number: int) -> None:
        if not as_json:
            mark = {"passed": "PASS", "failed": "FAIL"}.get(verdict, "ERROR")
            click.echo(f"[{number}/{total}] {mark} {name} ({round(seconds * 1000)} ms)", err=True)

    async def run(work: Path, trace: Callable[[str], None] | None) -> Any:
        source = embedded_source(workdir=work / "hosts", fixtures_dir=fixtures_dir) if external is None \
            else lambda _: nullcontext(external)  # one host for every scenario
        result = await run_suite(scenarios, source, parallel=parallel, workdir=work / "terminals",
                                 fixtures_dir=fixtures_dir, external=external is not None, trace=trace,
                                 progress=lambda case, n, _: show(case.verdict, case.scenario.name, case.duration, n))
        if hex_files:
            began = time.perf_counter()
            host = nullcontext(external) if external is not None else \
                embedded_target(dialect, workdir=work / "raw-host", fixtures_dir=fixtures_dir)
            async with host as raw_target:
                result.raw = await run_raw(
                    hex_files, raw_target.iso, raw_dialect, ignore=ignored, fixtures_dir=fixtures_dir,
                    progress=lambda case, n, _: show(case.verdict, case.name, case.duration, len(scenarios) + n))
            result.duration += time.perf_counter() - began
        return result

    with tempfile.TemporaryDirectory(prefix="possim-replay-") as work, \
            (open(trace_path, "a", encoding="utf-8") if trace_path else nullcontext()) as trace_file:
        result = asyncio.run(run(Path(work), trace_file.write if trace_file else None))
    if junit_path is not None:
        from possim.terminal.replay.junit import write_junit

        write_junit(result, Path(junit_path))
    emit(as_json, result.to_json(), lambda _: result.render())
    if not result.ok:
        sys.exit(EXIT_ERROR)


@cli.command("load")
@click.option("--host", "host_address", help="Load the host at HOST:PORT (ours or a third party's).")
@click.option("--embedded", is_flag=True, help="Start a host of its own in a child process (possim host run) on fixtures made for the fleet, load it, stop it.")
@dialect_option
@click.option("--terminals", type=click.IntRange(min=1), default=50, show_default=True, help="Simulated terminals, each with its own connection, STAN, batch and keys.")
@click.option("--rate", metavar="TPS", help="Open loop: transactions per second over the fleet, e.g. 2000/s. Default: closed loop, each terminal sending as soon as it has its answer.")
@click.option("--duration", default="30s", show_default=True, help="Time under load after the sign-ons: 60s, 2m, 500ms.")
@click.option("--mix", default="purchase:100", show_default=True, help="Kinds and weights: purchase, refund (of an earlier sale of the terminal), qr (a QR order), e.g. purchase:80,refund:5,qr:15.")
@click.option("--amount", default="10.00", show_default=True, help="Amount in major units, or a range drawn evenly: 1.00-50.00.")
@click.option("--card", default="approve", show_default=True, help="Card of cards.yaml (or a PAN) the fleet's card transactions present.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds a terminal waits for an answer before it reverses the request.")
@click.option("--fixtures", "fixtures_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), help="With --host: fixtures whose terminals.yaml names the fleet (the host must know them and their master keys).")
@click.option("--tid-from", metavar="TID", help="With --host: N consecutive terminal IDs from this one, without keys (no MAC), for a host that takes any terminal (host run --permissive).")
@click.option("--mid", help="With --tid-from: the merchant ID (field 42); default the first of merchants.yaml.")
@click.option("--permissive", is_flag=True, help="With --embedded: start the host with --permissive and the fleet with --tid-from 90000001 (no sign-on keys, no MAC).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds the mix and the amounts: the same seed, the same requests.")
@click.option("--stan-from", type=click.IntRange(min=0, max=999_998), help="Every terminal's first STAN less one (default: ten a second since midnight, so a second run the same day sends new STANs).")
@click.option("--out", "out_dir", default="load-report", show_default=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for report.json and report.html.")
@click.option("--max-error-rate", metavar="RATE", help="Exit 1 when the share of transactions not approved (declines, timeouts, errors) is above this: 0.01 or 1%.")
@click.option("--stans", "stan_book", type=click.Path(dir_okay=False, path_type=Path), help="With --host: the file where each terminal's last STAN per host is kept, so the next run carries on (default: in possim's state folder).")
@click.option("--make-fixtures", "fixtures_out", type=click.Path(file_okay=False, path_type=Path), help="Write fixtures for a fleet of --terminals (terminals with master keys, accounts no run empties, no scenario rules) to this folder and exit: start the host and the fleet with them.")
@click.option("--locustfile", "show_locustfile", is_flag=True, help="Print the path of the Locust file that drives a fleet from Locust (docs/locust.md) and exit.")
@json_option
def load(host_address: str | None, embedded: bool, dialect: str, terminals: int, rate: str | None, duration: str,
         mix: str, amount: str, card: str, timeout: float, fixtures_dir: Path | None, tid_from: str | None,
         mid: str | None, permissive: bool, seed: int, stan_from: int | None, out_dir: Path, max_error_rate: str | None,
         stan_book: Path | None, fixtures_out: Path | None, show_locustfile: bool, as_json: bool) -> None:
    """Drive a fleet of simulated terminals against a host and report throughput and latency.

    Every terminal signs on first, then sends the mix until the duration is
    up; an unanswered request is reversed. Live figures go to stderr once a
    second (not with --json); the report is written as JSON and as an HTML page with a latency
    histogram and TPS over time (docs/load.md).
    """
    import asyncio
    import tempfile
    from contextlib import nullcontext

    from possim.terminal.fleet.fleet import build_fleet, run_load
    from possim.terminal.fleet.plan import PlanError, load_plan
    from possim.terminal.fleet.report import write_report
    from possim.wire.money import currency as find_currency

    if show_locustfile:
        from possim.terminal.fleet.locust_path import locustfile_path

        click.echo(str(locustfile_path()))
        return
    if fixtures_out is not None:
        from possim.lab import fleet_fixtures

        written = fleet_fixtures(fixtures_out, terminals, seed=seed)
        emit(as_json, {"fixtures": str(written.resolve()), "terminals": terminals},
             lambda r: f"fixtures for {r['terminals']} terminals in {r['fixtures']}: start the host with "
                       f"--fixtures {r['fixtures']} and possim load --host with the same")
        return
    if embedded == (host_address is not None):
        raise click.UsageError("give exactly one of --host HOST:PORT and --embedded")
    if embedded and (fixtures_dir or tid_from or mid):
        raise click.UsageError("--fixtures, --tid-from and --mid describe the fleet for --host; --embedded makes its own")
    if permissive and not embedded:
        raise click.UsageError("--permissive starts the embedded host so: with --host, start that host with it")
    if embedded and stan_book is not None:
        raise click.UsageError("--stans keeps STANs between runs against one host: --embedded starts a fresh one")
    address = _address(host_address, "--host") if host_address is not None else None
    ceiling = _error_rate(max_error_rate) if max_error_rate is not None else None
    load_dialect(dialect)  # a bad dialect fails before anything starts
    try:
        plan = load_plan(duration=duration, mix=mix, amount=amount, cur=find_currency("156"), rate=rate,
                         timeout=timeout, seed=seed)
    except PlanError as exc:
        raise click.UsageError(str(exc)) from None
    from possim.lab import fleet_fixtures, host_process
    from possim.terminal.fleet.stans import StanBook, default_book

    def show(snapshot: Any) -> None:
        if not as_json:
            click.echo(f"{snapshot.elapsed:5.0f} s  {snapshot.tps:7,.0f} tps  {snapshot.transactions:9,} tx  "
                       f"{snapshot.errors:,} errors  p99 {snapshot.p99_ms:.1f} ms", err=True)

    with tempfile.TemporaryDirectory(prefix="possim-load-") as work:
        folder = Path(work)
        if embedded:
            fixtures_dir = fleet_fixtures(folder / "fixtures", terminals, seed=seed)
            host = host_process(dialect, folder / "host", fixtures_dir=fixtures_dir,
                                options=("--permissive",) if permissive else ())
        else:
            host = nullcontext()
        with host as running:
            target = f"{running.address[0]}:{running.address[1]} (embedded)" if running else str(host_address)
            fleet = build_fleet(terminals, dialect, card=card, fixtures_dir=fixtures_dir,
                                tid_from="90000001" if permissive else tid_from, mid=mid, stan_from=stan_from)
            book = StanBook(stan_book or default_book()) if not embedded else None
            carried = book.carry_on(str(host_address), fleet) if book is not None and stan_from is None else 0
            if not as_json:
                click.echo(f"{terminals} terminals signing on to {target}"
                           + (f" ({carried} carrying on their STANs from {book.path})" if book and carried else "")
                           + " …", err=True)
            try:
                report, recorder = asyncio.run(run_load(plan, fleet, running.address if running else address,
                                                        target=target, mix_text=mix, progress=show))
            finally:
                if book is not None:
                    book.remember(str(host_address), fleet)
    figures = report["figures"]
    failed = ceiling is not None and figures["error_rate"] > ceiling
    report["verdict"] = (f"FAIL: error rate {figures['error_rate']:.2%} above {ceiling:.2%}" if failed
                         else "PASS" if ceiling is not None else None)
    report["files"] = {"json": str((out_dir / "report.json").resolve()), "html": str((out_dir / "report.html").resolve())}
    write_report(report, [v * 1000 for v in recorder.latencies], out_dir / "report.json", out_dir / "report.html")
    emit(as_json, report, _load_text)
    if failed:
        sys.exit(EXIT_ERROR)


def _error_rate(text: str) -> float:
    """`0.01` or `1%` → 0.01; one readable error for anything else."""
    try:
        value = float(text.strip().removesuffix("%")) / (100 if text.strip().endswith("%") else 1)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a share like 0.01 or 1%", param_hint="--max-error-rate") from None
    if not 0 <= value <= 1:
        raise click.BadParameter(f"{text!r}: a share runs from 0 to 1 (0% to 100%)", param_hint="--max-error-rate")
    return value


def _load_text(report: dict[str, Any]) -> str:
    run, figures = report["run"], report["figures"]
    latency = figures["latency_ms"]
    lines = [
        f"{run['signed_on']} of {run['terminals']} terminals on {run['target']}, {run['dialect']}, {run['mode']}, "
        f"{run['duration_s']:.1f} s",
        f"{figures['transactions']:,} transactions, {figures['tps']:,.1f} TPS ({figures['approved_tps']:,.1f} approved), "
        f"error rate {figures['error_rate']:.2%}",
        "latency ms: none answered" if latency is None else
        f"latency ms: p50 {latency['p50']:.2f}  p90 {latency['p90']:.2f}  p99 {latency['p99']:.2f}  "
        f"p99.9 {latency['p99.9']:.2f}  max {latency['max']:.2f}",
        "codes: " + (", ".join(f"{code} {count:,}" for code, count in figures["response_codes"].items()) or "none"),
        f"timeouts {figures['timeouts']:,}, reversals {figures['reversals']['sent']:,} "
        f"({figures['reversals']['approved']:,} approved), unreadable {figures['unreadable']:,}, "
        f"link errors {figures['link_errors']:,}",
    ]
    if report["sign_on_problem_count"]:
        lines.append(f"{report['sign_on_problem_count']} terminals could not sign on; first: {report['sign_on_problems'][0]}")
    if report["verdict"]:
        lines.append(report["verdict"])
    lines.append(f"report: {report['files']['html']}")
    return "\n".join(lines)


def _field_list(text: str, option: str) -> frozenset[int]:
    """`7,11,37` → the field numbers; one readable error for anything else."""
    try:
        numbers = frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a list of field numbers like 7,11,37", param_hint=option) from None
    if not numbers or not all(2 <= n <= 128 for n in numbers):
        raise click.BadParameter(f"{text!r}: field numbers run from 2 to 128", param_hint=option)
    return numbers


# --- wallet ------------------------------------------------------------------


@cli.group(cls=PossimGroup)
def wallet() -> None:
    """The customer's wallet app: show a payment code, pay a merchant's QR code, confirm with the password."""


wallet_account_option = click.option("--account", required=True, help="Wallet account in wallets.yaml (e.g. alice).")
wallet_fixtures_option = click.option("--fixtures", "fixtures_dir", type=click.Path(file_okay=False, exists=True),
                                      help="Folder whose wallets.yaml overrides the built-in one.")
wallet_http_option = click.option("--http", "network", default="127.0.0.1:8080", show_default=True,
                                  help="The host's HTTP address (possim host run --http), where the wallet network answers.")


def _wallet_app(account: str, network: str, fixtures_dir: str | None) -> Any:
    from possim.terminal.wallet_app import WalletApp, login

    _address(network.split("://")[-1].rstrip("/"), "--http")
    return WalletApp(login(account, fixtures_dir), network)


def _render_payment(r: dict[str, Any]) -> str:
    from possim.wire.money import currency as find_currency, format_major

    amount = f"{format_major(r['amount'], find_currency(r['currency']))} " if r.get("amount") is not None else ""
    line = f"{r['status'].upper()} {r['response_code']} {amount}order {r.get('order_no') or '-'}" \
           f" wallet txn {r.get('wallet_txn_id') or '-'}"
    return line + (f" ({r['reason']})" if r.get("reason") else "") + f"; balance {r['balance']}"


@wallet.command("list")
@wallet_fixtures_option
@json_option
def wallet_list(fixtures_dir: str | None, as_json: bool) -> None:
    """The test wallet accounts (no secrets)."""
    from possim.acquirer.wallets import WalletNetwork

    network = WalletNetwork.from_fixtures(fixtures_dir)
    accounts = [{"account": a.name, "channel": a.provider, "number": a.number, "currency": a.currency,
                 "opening_balance": a.opening_balance, "password_above": a.password_above, "frozen": a.frozen}
                for a in network.accounts()]
    emit(as_json, {"accounts": accounts}, lambda r: "\n".join(
        f"{a['account']:<8} {a['channel']:<9} {a['number']}  opening {a['opening_balance']}  "
        f"password above {a['password_above']}{'  FROZEN' if a['frozen'] else ''}" for a in r["accounts"]))


@wallet.command("code")
@wallet_account_option
@wallet_fixtures_option
@click.option("--png", "png_path", type=click.Path(dir_okay=False), help="Also write the code as a QR image for a scanner.")
@json_option
def wallet_code(account: str, fixtures_dir: str | None, png_path: str | None, as_json: bool) -> None:
    """A payment code for the POS to scan (valid about a minute), made offline as a wallet app does."""
    from datetime import timedelta

    from possim.terminal.wallet_app import login, payment_code
    from possim.wire.clock import system_clock
    from possim.wire.qr_image import qr_png

    _parent_exists(png_path, "--png")
    login_ = login(account, fixtures_dir)
    now = system_clock()
    code = payment_code(login_, now)
    if png_path:
        Path(png_path).write_bytes(qr_png(code))
    result = {"account": account, "channel": login_.channel, "code": code,
              "valid_until": (now + timedelta(seconds=60)).isoformat(timespec="seconds"),
              "png": str(Path(png_path).resolve()) if png_path else None}
    emit(as_json, result, lambda r: f"{r['code']}  ({r['channel']}, valid until about {r['valid_until']})"
                                    + (f"\nwritten to {r['png']}" if r["png"] else ""))


@wallet.command("pay")
@click.argument("code")
@wallet_account_option
@click.option("--amount", help="What the customer types for a static code (major units).")
@click.option("--password", help="The wallet password, when the wallet asks for it.")
@wallet_http_option
@wallet_fixtures_option
@json_option
def wallet_pay(code: str, account: str, amount: str | None, password: str | None, network: str,
               fixtures_dir: str | None, as_json: bool) -> None:
    """Scan a merchant's QR code (a PNG file or the payload text) and pay it."""
    from possim.terminal.wallet_app import scanned_payload
    from possim.wire.money import currency as find_currency, parse_major

    app = _wallet_app(account, network, fixtures_dir)
    minor = parse_major(amount, find_currency(app.account.currency)) if amount is not None else None
    result = app.pay(scanned_payload(code), minor, password)
    emit(as_json, result, _render_payment)
    if result["status"] == "declined":
        sys.exit(EXIT_ERROR)


@wallet.command("confirm")
@wallet_account_option
@click.option("--password", required=True, help="The wallet password.")
@click.option("--txn", "wallet_txn_id", help="The waiting payment (default: the only one).")
@wallet_http_option
@wallet_fixtures_option
@json_option
def wallet_confirm(account: str, password: str, wallet_txn_id: str | None, network: str, fixtures_dir: str | None,
                   as_json: bool) -> None:
    """Type the password for a payment a POS started with this wallet's code."""
    result = _wallet_app(account, network, fixtures_dir).confirm(password, wallet_txn_id)
    emit(as_json, result, _render_payment)


@wallet.command("balance")
@wallet_account_option
@wallet_http_option
@wallet_fixtures_option
@json_option
def wallet_balance(account: str, network: str, fixtures_dir: str | None, as_json: bool) -> None:
    """The wallet's balance at its network (minor units)."""
    result = _wallet_app(account, network, fixtures_dir).balance()
    emit(as_json, result, lambda r: f"{r['account']}: {r['balance']} ({r['currency']})")


if __name__ == "__main__":
    main()
