"""What every ``rmq admin`` command shares: the common options, ``run`` (one ``Admin``
under the command's deadline, errors as one line), the table/JSON/time formatting and
mqadmin's argument forms (``-s`` timestamps, perm strings).

Rules: see ``cli.admin``. Table cells are plain ``Text``, never rich markup.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import trio
import typer
from rich.table import Table
from rich.text import Text

from cli.output import fail, out
from client.admin import Admin, AdminError, open_admin
from client.controller_admin import ENV_CLUSTER_SECRET_FILE
from protocol.acl_sign import Credentials
from protocol.codes import PERM_READ, PERM_WRITE
from protocol.errors import NoPermission, RocketError
from protocol.tls import (
    ENV_TLS,
    ENV_TLS_CA_FILE,
    ENV_TLS_CERT_FILE,
    ENV_TLS_KEY_FILE,
    TlsError,
    client_context_from_env,
)

T = TypeVar("T")

# Wide enough that no table row ever wraps (rows are parsed by scripts and tests).
_out = out

#: The whole command may take this many request deadlines.
DEADLINE_FACTOR = 10

NamesrvOpt = Annotated[
    str,
    typer.Option(
        "-n",
        "--namesrv",
        envvar="NAMESRV_ADDR",
        help="NameServer address(es), host:port[;host:port...].",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Per-request deadline in seconds.")]
TopicOpt = Annotated[str, typer.Option("-t", "--topic", help="Topic name.")]
GroupOpt = Annotated[str, typer.Option("-g", "--group", help="Consumer group name.")]
ClusterOpt = Annotated[str | None, typer.Option("-c", "--cluster", help="Cluster name.")]
BrokerAddrOpt = Annotated[
    str | None, typer.Option("-b", "--broker-addr", help="Broker address host:port.")
]
DEFAULT_NAMESRV = "127.0.0.1:9876"

#: ACL 1.0: the account every command signs with (``rmq admin --access-key``), or None.
_credentials: list[Credentials] = []


def require_one_target(broker_addr: str | None, cluster: str | None) -> None:
    """The commands that act on one broker (-b ADDR) or on a cluster's brokers (-c NAME)
    take exactly one of the two."""
    if (broker_addr is None) == (cluster is None):
        raise fail("name either a broker address (-b) or a cluster (-c)")


def set_credentials(access_key: str | None, secret_key: str | None) -> None:
    """Sign every later command's requests with this account (both keys, or neither)."""
    _credentials.clear()
    if not access_key and not secret_key:
        return
    if not access_key or not secret_key:
        missing = "--secret-key (or $RMQ_SECRET_KEY)" if access_key else "--access-key"
        raise fail(f"an ACL account needs both keys: {missing} is missing")
    _credentials.append(Credentials(access_key=access_key, secret_key=secret_key))


# --- plumbing --------------------------------------------------------------------------------


def run(namesrv: str, timeout_s: float, fn: Callable[[Admin], Awaitable[T]]) -> T:
    """Run ``fn`` with an ``Admin`` under the command's deadline; errors become one line."""
    deadline_s = timeout_s * DEADLINE_FACTOR

    async def main() -> T:
        with trio.fail_after(deadline_s):
            credentials = _credentials[0] if _credentials else None
            async with open_admin(namesrv, timeout_s=timeout_s, credentials=credentials) as admin:
                return await fn(admin)

    try:
        return trio.run(main)
    except NoPermission as exc:
        hint = "" if _credentials else " (rmq admin --access-key AK, with $RMQ_SECRET_KEY set)"
        raise fail(f"{exc}{hint}") from None
    except RocketError as exc:
        raise fail(str(exc)) from None
    except trio.TooSlowError:
        raise fail(
            f"the command did not finish within {deadline_s:g} s; check that the NameServer "
            "and brokers are up, or raise --timeout"
        ) from None


def set_transport(
    *,
    tls: bool,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    cluster_secret_file: Path | None,
) -> None:
    """``rmq admin --tls...``: this process's clients read ``$RMQ_TLS*`` (protocol/tls.py)
    and its controller admin ``$RMQ_CLUSTER_SECRET_FILE``; the options set them."""
    settings = {
        ENV_TLS: "1" if tls else None,
        ENV_TLS_CA_FILE: ca,
        ENV_TLS_CERT_FILE: cert,
        ENV_TLS_KEY_FILE: key,
        ENV_CLUSTER_SECRET_FILE: cluster_secret_file,
    }
    for name, value in settings.items():
        if value is not None:
            os.environ[name] = str(value)
    try:
        client_context_from_env()  # a bad file: one line now, not a traceback later
    except TlsError as exc:
        raise fail(str(exc)) from None


def _bool(value: str | None, flag: str) -> bool | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise fail(f"{flag} takes true or false, not {value!r}")
    return text == "true"


def _table(*columns: str) -> Table:
    return Table(*columns, box=None)


def _row(table: Table, *cells: object) -> None:
    table.add_row(*(Text(str(c)) for c in cells))


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False))


def _human_ms(ms: int, *, millis: bool = True) -> str:
    """Local time as mqadmin prints it (``yyyy-MM-dd HH:mm:ss,SSS``); N/A for 0."""
    if ms <= 0:
        return "N/A"
    text = datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text},{ms % 1000:03d}" if millis else text


def _java_repr(name: str, obj: Mapping[str, Any]) -> str:
    """``Name [a=1, b=true]``, Java toString style."""
    parts = []
    for key, value in obj.items():
        text = json.dumps(value) if isinstance(value, bool | dict) else str(value)
        parts.append(f"{key}={text}")
    return f"{name} [{', '.join(parts)}]"


def _body_text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


# --- mqadmin's argument forms ------------------------------------------------------------------


#: ``-s`` of resetOffsetByTime: ``yyyy-MM-dd#HH:mm:ss:SSS``.
_DATE_FORMAT = re.compile(r"(\d{4})-(\d{2})-(\d{2})#(\d{2}):(\d{2}):(\d{2}):(\d{3})")


def parse_timestamp(text: str, *, now_ms: int) -> int:
    """mqadmin's ``-s``: ``now``, milliseconds since the epoch, or ``yyyy-MM-dd#HH:mm:ss:SSS``
    (local time, as Java's SimpleDateFormat reads it)."""
    value = text.strip()
    if value == "now":
        return now_ms
    if value.isdigit():
        return int(value)
    match = _DATE_FORMAT.fullmatch(value)
    if match is not None:
        year, month, day, hour, minute, second, millis = (int(g) for g in match.groups())
        try:
            local = datetime.datetime(year, month, day, hour, minute, second, millis * 1000)
        except ValueError:
            pass  # e.g. month 13: refused below like any other text
        else:
            return int(local.astimezone().timestamp() * 1000)
    raise AdminError(
        f"bad timestamp {text!r}: give 'now', milliseconds since the epoch, "
        "or yyyy-MM-dd#HH:mm:ss:SSS (local time), e.g. 2024-05-01#13:30:00:000"
    )


def perm_to_string(perm: int) -> str:
    """PermName.perm2String: ``RW-`` for 6, ``R--`` for 4, ``RWX`` for 7."""
    return (
        ("R" if perm & PERM_READ else "-")
        + ("W" if perm & PERM_WRITE else "-")
        + ("X" if perm & 0x1 else "-")
    )
