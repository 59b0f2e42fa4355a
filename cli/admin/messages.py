"""``rmq admin`` message commands: queryMsgById, queryMsgByKey, queryMsgByOffset,
sendMessage, consumeMessage; and how a message is printed (mqadmin's block, or JSON)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from cli.admin.common import (
    DEFAULT_NAMESRV,
    JsonOpt,
    NamesrvOpt,
    TimeoutOpt,
    TopicOpt,
    _body_text,
    _human_ms,
    _one_line,
    _out,
    _print_json,
    _row,
    _table,
    run,
)
from cli.output import fail
from client.admin import (
    DEFAULT_CONSUME_COUNT,
    DEFAULT_QUERY_MAX_NUM,
    MAX_TIMESTAMP_MS,
    TOOLS_CONSUMER_GROUP,
)
from client.message import ReceivedMessage

app = typer.Typer()


def message_json(m: ReceivedMessage) -> dict[str, Any]:
    """A received message as ``--json`` prints it (body as text and as base64)."""
    return {
        "msgId": m.msg_id,
        "offsetMsgId": m.offset_msg_id,
        "topic": m.topic,
        "brokerName": m.queue.broker_name,
        "queueId": m.queue.queue_id,
        "queueOffset": m.queue_offset,
        "commitLogOffset": m.commit_log_offset,
        "tags": m.tags,
        "keys": list(m.keys),
        "properties": dict(m.properties),
        "bornTimestamp": m.born_timestamp_ms,
        "storeTimestamp": m.store_timestamp_ms,
        "bornHost": f"{m.born_host[0]}:{m.born_host[1]}",
        "storeHost": f"{m.store_host[0]}:{m.store_host[1]}",
        "reconsumeTimes": m.reconsume_times,
        "sysFlag": m.sys_flag,
        "flag": m.flag,
        "body": _body_text(m.body),
        "bodyBase64": base64.b64encode(m.body).decode("ascii"),
    }


def _print_message(m: ReceivedMessage) -> None:
    """mqadmin's printMsg block: one ``Label: value`` line per field, body last."""
    properties = ", ".join(f"{k}={v}" for k, v in sorted(m.properties.items()))
    lines = [
        ("OffsetID:", m.offset_msg_id),
        ("Topic:", m.topic),
        ("Tags:", f"[{m.tags or ''}]"),
        ("Keys:", f"[{' '.join(m.keys)}]"),
        ("Queue ID:", m.queue.queue_id),
        ("Queue Offset:", m.queue_offset),
        ("CommitLog Offset:", m.commit_log_offset),
        ("Reconsume Times:", m.reconsume_times),
        ("Born Timestamp:", _human_ms(m.born_timestamp_ms)),
        ("Store Timestamp:", _human_ms(m.store_timestamp_ms)),
        ("Born Host:", f"{m.born_host[0]}:{m.born_host[1]}"),
        ("Store Host:", f"{m.store_host[0]}:{m.store_host[1]}"),
        ("System Flag:", m.sys_flag),
        ("Properties:", f"{{{properties}}}"),
        ("Message Body:", _body_text(m.body)),
    ]
    for label, value in lines:
        print(f"{label:<20} {value}")


def _print_messages(messages: Sequence[ReceivedMessage], as_json: bool) -> None:
    if as_json:
        _print_json([message_json(m) for m in messages])
        return
    for index, message in enumerate(messages):
        if index:
            print()
        _print_message(message)


# --- messages ----------------------------------------------------------------------------------


@app.command("queryMsgById")
def query_msg_by_id(
    topic: TopicOpt,
    msg_id: Annotated[str, typer.Option("-i", "--msg-id", help="Message id or offset id.")],
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show the message with this id (client UNIQ_KEY id, or the broker's offset id)."""
    messages = run(namesrv, timeout, lambda a: a.query_by_id(topic, msg_id.strip()))
    _print_messages(messages, as_json)


@app.command("queryMsgByKey")
def query_msg_by_key(
    topic: TopicOpt,
    key: Annotated[str, typer.Option("-k", "--msg-key", help="Message key.")],
    max_num: Annotated[
        int, typer.Option("-m", "--max-num", help="Most messages to return.")
    ] = DEFAULT_QUERY_MAX_NUM,
    begin: Annotated[
        int, typer.Option("-b", "--begin-timestamp", help="Stored at or after (ms).")
    ] = 0,
    end: Annotated[
        int, typer.Option("-e", "--end-timestamp", help="Stored at or before (ms).")
    ] = MAX_TIMESTAMP_MS,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """List the messages of a topic that carry a key, from every broker group."""
    messages = run(
        namesrv,
        timeout,
        lambda a: a.query_by_key(topic, key, max_num=max_num, begin_ms=begin, end_ms=end),
    )
    if as_json:
        _print_json([message_json(m) for m in messages])
        return
    table = _table("#Message ID", "#QID", "#Offset")
    for m in messages:
        _row(table, m.msg_id, m.queue.queue_id, m.queue_offset)
    _out.print(table)


@app.command("queryMsgByOffset")
def query_msg_by_offset(
    topic: TopicOpt,
    broker_name: Annotated[str, typer.Option("-b", "--broker-name", help="Broker name.")],
    queue_id: Annotated[int, typer.Option("-i", "--queue-id", help="Queue id.")],
    offset: Annotated[int, typer.Option("-o", "--offset", help="Queue offset.")],
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show the message at one offset of one queue."""
    message = run(
        namesrv, timeout, lambda a: a.query_by_offset(topic, broker_name, queue_id, offset)
    )
    _print_messages([message], as_json)


@app.command("sendMessage")
def send_message(
    topic: TopicOpt,
    body: Annotated[str, typer.Option("-p", "--body", help="Message body (UTF-8 text).")],
    keys: Annotated[str | None, typer.Option("-k", "--key", help="Keys, space-separated.")] = None,
    tags: Annotated[str | None, typer.Option("-c", "--tags", help="Message tag.")] = None,
    broker_name: Annotated[
        str | None, typer.Option("-b", "--broker", help="Send to this broker (with -i).")
    ] = None,
    queue_id: Annotated[
        int | None, typer.Option("-i", "--qid", help="Send to this queue (with -b).")
    ] = None,
    delay: Annotated[
        float | None,
        typer.Option(
            "--delay",
            help="Timer message: deliver this many seconds after it is stored "
            "(up to the broker's timerMaxDelaySec, 3 days by default).",
        ),
    ] = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Send one message and print where it was stored."""
    if (broker_name is None) != (queue_id is None):
        raise fail("-b BROKER and -i QUEUE_ID go together")
    if delay is not None and not 0 <= delay < 1e9:
        raise fail(f"--delay must be a number of seconds >= 0, not {delay}")
    result = run(
        namesrv,
        timeout,
        lambda a: a.send(
            topic,
            body.encode("utf-8"),
            keys=(keys or "").split(),
            tags=tags,
            broker_name=broker_name,
            queue_id=queue_id,
            delay_s=delay,
        ),
    )
    if as_json:
        _print_json(
            {
                "brokerName": result.queue.broker_name,
                "queueId": result.queue.queue_id,
                "queueOffset": result.queue_offset,
                "sendStatus": result.status.value,
                "msgId": result.msg_id,
                "offsetMsgId": result.offset_msg_id,
            }
        )
        return
    table = _table("#Broker Name", "#QID", "#Send Result", "#MsgId")
    _row(table, result.queue.broker_name, result.queue.queue_id, result.status.value, result.msg_id)
    _out.print(table)


@app.command("consumeMessage")
def consume_message(
    topic: TopicOpt,
    group: Annotated[
        str, typer.Option("-g", "--consumer-group", help="Pull as this group.")
    ] = TOOLS_CONSUMER_GROUP,
    broker_name: Annotated[
        str | None, typer.Option("-b", "--broker-name", help="Only this broker.")
    ] = None,
    queue_id: Annotated[
        int | None, typer.Option("-i", "--queue-id", help="Only this queue.")
    ] = None,
    offset: Annotated[
        int | None, typer.Option("-o", "--offset", help="Start at this queue offset.")
    ] = None,
    count: Annotated[
        int, typer.Option("-c", "--count", help="Most messages to print.")
    ] = DEFAULT_CONSUME_COUNT,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Pull and print messages (nothing is committed: the group's offsets do not move)."""
    messages = run(
        namesrv,
        timeout,
        lambda a: a.consume(
            topic,
            broker_name=broker_name,
            queue_id=queue_id,
            offset=offset,
            count=count,
            group=group,
        ),
    )
    if as_json:
        _print_json([message_json(m) for m in messages])
        return
    table = _table("#Broker Name", "#QID", "#Offset", "#MsgId", "#Tags", "#Keys", "#Body")
    for m in messages:
        _row(
            table,
            m.queue.broker_name,
            m.queue.queue_id,
            m.queue_offset,
            m.msg_id,
            m.tags or "",
            " ".join(m.keys),
            _one_line(_body_text(m.body)),
        )
    _out.print(table)
