"""``healthmesh mllp``: a live HL7 v2 feed into a node over MLLP, and a small sender.

Registered on the main app by :mod:`healthmesh.cli`. ``.hl7`` files go through
``healthmesh ingest`` (see :mod:`healthmesh.hl7v2.files`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from healthmesh.cli import ExitCode, JsonFlag, _emit_json, _fail, app, console, out
from healthmesh.errors import ConfigError, HealthmeshError

if TYPE_CHECKING:
    from healthmesh.hl7v2.intake import Receipt
    from healthmesh.hl7v2.mllp import MllpServer

mllp_app = typer.Typer(help="HL7 v2 over MLLP: serve a live feed into a node, or send files.",
                       no_args_is_help=True)
app.add_typer(mllp_app, name="mllp")


@mllp_app.command("serve")
def mllp_serve(
    folder: Annotated[Path, typer.Argument(help="Node folder.")],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).",
                                      min=0, max=65535)] = 2575,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No line per message.")] = False,
) -> None:
    """Accept HL7 v2 messages over MLLP; ACK each once stored, dead-letter the rest."""
    from healthmesh.hl7v2.mllp import MllpServer
    from healthmesh.node import open_node

    try:
        node = open_node(folder)
    except ConfigError as exc:
        _fail(str(exc), ExitCode.CONFIG)
    if not _loopback(host):
        console.print(f"[yellow]warning:[/yellow] MLLP is not encrypted; {host} is not a "
                      "loopback address — put a TLS tunnel or VPN in front of it",
                      highlight=False)

    def report(peer: str, receipt: Receipt) -> None:
        if quiet:
            return
        what = receipt.message.kind if receipt.message else "?"
        note = "duplicate" if receipt.duplicate else (receipt.reason or _outcomes(receipt))
        out.print(f"{peer} {what} {receipt.control_id or '-'} {receipt.ack_code} {note}",
                  highlight=False)

    try:
        server = MllpServer(node, host=host, port=port, on_receipt=report)
        asyncio.run(_serve(server))
    except (ConfigError, OSError) as exc:
        _fail(str(exc), ExitCode.CONFIG)
    finally:
        node.close()


async def _serve(server: MllpServer) -> None:
    bound = await server.start()
    out.print(f"mllp: listening on {bound[0]}:{bound[1]} (dead letters: "
              f"{server.dead_letter.folder})", highlight=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(server.serve_forever())
    await stop.wait()
    task.cancel()
    await server.close()
    out.print("mllp: stopped", highlight=False)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _outcomes(receipt: Receipt) -> str:
    outcomes = receipt.outcomes
    return " ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))


@mllp_app.command("send")
def mllp_send(
    address: Annotated[str, typer.Argument(help="HOST:PORT of an MLLP listener.")],
    paths: Annotated[list[Path], typer.Argument(help=".hl7 files (one or more messages each).")],
    json_out: JsonFlag = False,
) -> None:
    """Send the messages of .hl7 files over MLLP, one at a time, and print each ACK."""
    from healthmesh.hl7v2.message import Unreadable, split_messages
    from healthmesh.hl7v2.mllp import send

    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit():
        _fail(f"'{address}' is not HOST:PORT", ExitCode.USAGE)
    messages: list[bytes] = []
    for path in paths:
        try:
            with path.open("rb") as handle:
                for item in split_messages(handle, 64 * 1024 * 1024):
                    if isinstance(item, Unreadable):
                        _fail(f"{path}:{item.line}: {item.reason}", ExitCode.INPUT)
                    messages.append(item.data)
        except OSError as exc:
            _fail(f"{path}: cannot read: {exc}", ExitCode.INPUT)
    try:
        acks = send(host, int(port_text), messages)
    except (OSError, HealthmeshError) as exc:
        _fail(f"cannot send to {address}: {exc}", ExitCode.UNAVAILABLE)
    summaries = [_ack_summary(a) for a in acks]
    if json_out:
        _emit_json({"sent": len(messages), "acks": summaries})
    else:
        for summary in summaries:
            out.print(f"{summary['control_id']} {summary['code']} {summary['text']}",
                      highlight=False)
    if any(r["code"] != "AA" for r in summaries):
        raise typer.Exit(int(ExitCode.REJECTED))


def _ack_summary(ack: bytes) -> dict[str, str]:
    text = ack.decode("utf-8", "replace")
    for segment in text.replace("\n", "\r").split("\r"):
        if segment.startswith("MSA"):
            fields = segment.split(segment[3]) + ["", "", ""]
            return {"code": fields[1], "control_id": fields[2], "text": fields[3]}
    return {"code": "?", "control_id": "", "text": text[:200]}
