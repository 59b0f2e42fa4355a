"""``rmq admin`` commands against a real ``rmq namesrv`` and ``rmq broker``: tables, JSON
output and one-line errors, as an operator (or a script) sees them."""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from client.admin import open_admin
from launcher.ready import BROKER_READY
from protocol.errors import TopicNotExist
from tests.support.processes import (
    START_TIMEOUT_S,
    Completed,
    managed_process,
    namesrv_process,
    rmq_argv,
    run_command,
)

pytestmark = pytest.mark.integration

#: One CLI run: interpreter start-up plus a few requests, on a slow machine.
CLI_TIMEOUT_S = 60.0
CLUSTER = "AdminCluster"


@attrs.frozen(kw_only=True)
class Cluster:
    namesrv: str
    broker: str


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """A live NameServer and one broker (broker-a of AdminCluster) on free ports."""
    with trio.fail_after(2 * START_TIMEOUT_S + 10):
        async with namesrv_process() as ns:
            argv = rmq_argv(
                "broker",
                "-n",
                ns.address,
                "--port",
                "0",
                "--cluster",
                CLUSTER,
                "--name",
                "broker-a",
                "--dir",
                str(tmp_path / "broker-a"),
            )
            async with managed_process(argv, name="broker", ready=BROKER_READY) as broker:
                yield Cluster(namesrv=ns.address, broker=broker.address)


async def rmq(cluster: Cluster | None, *args: str) -> Completed:
    """``rmq admin ARGS -n NAMESRV`` (no -n when ``cluster`` is None)."""
    namesrv = ["-n", cluster.namesrv] if cluster is not None else []
    return await run_command(rmq_argv("admin", *args, *namesrv), timeout_s=CLI_TIMEOUT_S)


def ok(done: Completed) -> str:
    assert done.returncode == 0, done.describe()
    assert "Traceback" not in done.stderr, done.describe()
    return done.stdout


def ok_json(done: Completed) -> Any:
    return json.loads(ok(done))


def one_line_error(done: Completed, *needles: str) -> str:
    """Exit status 1, nothing on stdout, one ``error: ...`` line on stderr with ``needles``."""
    assert done.returncode == 1, done.describe()
    assert done.stdout == "", done.describe()
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.describe()
    for needle in needles:
        assert needle in lines[0], done.describe()
    return lines[0]


def rows(stdout: str) -> list[list[str]]:
    """The rows of a borderless table (columns two or more spaces apart), header first."""
    return [re.split(r"\s{2,}", line.strip()) for line in stdout.splitlines() if line.strip()]


def fields(stdout: str) -> dict[str, str]:
    """mqadmin's ``Label:   value`` message block as a dict."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        label = line[:20].rstrip()
        if label.endswith(":"):
            out[label[:-1]] = line[21:]
    return out


async def routed(cluster: Cluster, topic: str, *, present: bool = True) -> None:
    """Wait until the NameServer (does not) route ``topic``."""
    with trio.fail_after(10):
        async with open_admin(cluster.namesrv) as admin:
            while True:
                try:
                    await admin.topic_route(topic)
                    found = True
                except TopicNotExist:
                    found = False
                if found == present:
                    return
                await trio.sleep(0.05)  # the broker registers asynchronously: poll


async def closed_port_address() -> str:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    return f"127.0.0.1:{port}"


# --- cluster and brokers -----------------------------------------------------------------------


async def test_cluster_list_and_broker_status(cluster: Cluster) -> None:
    table = rows(ok(await rmq(cluster, "clusterList")))
    assert table[0] == [
        "#Cluster Name",
        "#Broker Name",
        "#BID",
        "#Addr",
        "#Version",
        "#Role",
        "#InTotalToday",
        "#OutTotalToday",
        "#ACTIVATED",
    ]
    (row,) = table[1:]
    assert row[:4] == [CLUSTER, "broker-a", "0", cluster.broker]
    assert "trio-rocketmq" in row[4]
    assert row[5:7] == ["ASYNC_MASTER", "0"]
    assert row[-1] == "true"

    (entry,) = ok_json(await rmq(cluster, "clusterList", "--json", "-c", CLUSTER))
    assert {k: entry[k] for k in ("cluster", "brokerName", "brokerId", "addr", "role")} == {
        "cluster": CLUSTER,
        "brokerName": "broker-a",
        "brokerId": 0,
        "addr": cluster.broker,
        "role": "ASYNC_MASTER",
    }
    assert entry["activated"] is True and entry["error"] is None
    assert entry["runtime"]["brokerRole"] == "ASYNC_MASTER"

    status = ok(await rmq(cluster, "brokerStatus", "-b", cluster.broker))
    lines = dict(line.split(": ", 1) for line in status.splitlines())
    assert lines["brokerRole".ljust(32)] == "ASYNC_MASTER"
    assert lines["brokerActive".ljust(32)] == "true"
    by_cluster = ok(await rmq(cluster, "brokerStatus", "-c", CLUSTER))
    assert f"{cluster.broker:<24} {'brokerRole':<32}: ASYNC_MASTER" in by_cluster.splitlines()
    tables = ok_json(await rmq(cluster, "brokerStatus", "-b", cluster.broker, "--json"))
    assert tables[cluster.broker]["brokerRole"] == "ASYNC_MASTER"


# --- topics ------------------------------------------------------------------------------------


async def test_topic_lifecycle(cluster: Cluster) -> None:
    out = ok(
        await rmq(cluster, "updateTopic", "-t", "CliOrders", "-c", CLUSTER, "-r", "2", "-w", "2")
    )
    assert out.splitlines() == [
        f"create topic to {cluster.broker} success.",
        "TopicConfig [topicName=CliOrders, readQueueNums=2, writeQueueNums=2, perm=RW-, "
        "topicFilterType=SINGLE_TAG, topicSysFlag=0, order=false, attributes={}]",
    ]
    created = ok_json(
        await rmq(cluster, "updateTopic", "-t", "CliRO", "-b", cluster.broker, "-p", "4", "--json")
    )
    assert created["brokers"] == [cluster.broker]
    assert created["topicConfig"]["perm"] == 4 and created["topicConfig"]["readQueueNums"] == 8
    await routed(cluster, "CliOrders")
    await routed(cluster, "CliRO")

    listed = ok(await rmq(cluster, "topicList")).splitlines()
    assert {"CliOrders", "CliRO", "TBW102"} <= set(listed) and listed == sorted(listed)
    assert {"CliOrders", "CliRO"} <= set(ok_json(await rmq(cluster, "topicList", "--json")))
    by_cluster = rows(ok(await rmq(cluster, "topicList", "-c")))
    assert by_cluster[0] == ["#Cluster Name", "#Topic"]
    assert [CLUSTER, "CliOrders"] in by_cluster[1:]

    assert rows(ok(await rmq(cluster, "topicRoute", "-t", "CliRO"))) == [
        ["#ClusterName", "#BrokerName", "#BrokerAddrs", "#ReadQueue", "#WriteQueue", "#Perm"],
        [CLUSTER, "broker-a", f"0={cluster.broker}", "8", "8", "R- (4)"],
    ]

    for _ in range(2):
        ok(
            await rmq(
                cluster, "sendMessage", "-t", "CliOrders", "-p", "x", "-b", "broker-a", "-i", "1"
            )
        )
    status = rows(ok(await rmq(cluster, "topicStatus", "-t", "CliOrders")))
    assert status[0] == ["#Broker Name", "#QID", "#Min Offset", "#Max Offset", "#Last Updated"]
    assert status[1] == ["broker-a", "0", "0", "0", "N/A"]
    assert status[2][:4] == ["broker-a", "1", "0", "2"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", status[2][4])
    as_json = ok_json(await rmq(cluster, "topicStatus", "-t", "CliOrders", "--json"))
    assert [(q["queueId"], q["minOffset"], q["maxOffset"]) for q in as_json] == [
        (0, 0, 0),
        (1, 0, 2),
    ]
    assert as_json[1]["lastUpdateTimestamp"] > 0

    assert ok(await rmq(cluster, "deleteTopic", "-t", "CliOrders", "-c", CLUSTER)).splitlines() == [
        f"delete topic [CliOrders] from cluster [{CLUSTER}] success.",
        "delete topic [CliOrders] from NameServer success.",
    ]
    deleted = ok_json(await rmq(cluster, "deleteTopic", "-t", "CliRO", "--json"))
    assert deleted == {"brokers": [cluster.broker], "namesrvs": [cluster.namesrv]}
    one_line_error(await rmq(cluster, "topicStatus", "-t", "CliRO"), "TOPIC_NOT_EXIST", "CliRO")


# --- messages ----------------------------------------------------------------------------------


async def test_send_query_and_consume_messages(cluster: Cluster) -> None:
    ok(await rmq(cluster, "updateTopic", "-t", "CliMsgs", "-c", CLUSTER, "-r", "2", "-w", "2"))
    await routed(cluster, "CliMsgs")
    sent = rows(
        ok(
            await rmq(
                cluster,
                *("sendMessage", "-t", "CliMsgs", "-p", "hello [red]world"),
                *("-k", "order-1 shared", "-c", "TagA", "-b", "broker-a", "-i", "0"),
            )
        )
    )
    assert sent[0] == ["#Broker Name", "#QID", "#Send Result", "#MsgId"]
    assert sent[1][:3] == ["broker-a", "0", "SEND_OK"]
    first_id = sent[1][3]
    second = ok_json(
        await rmq(
            cluster,
            *("sendMessage", "-t", "CliMsgs", "-p", "second", "-k", "shared"),
            *("-b", "broker-a", "-i", "1", "--json"),
        )
    )
    assert {k: second[k] for k in ("brokerName", "queueId", "queueOffset", "sendStatus")} == {
        "brokerName": "broker-a",
        "queueId": 1,
        "queueOffset": 0,
        "sendStatus": "SEND_OK",
    }

    by_key = rows(ok(await rmq(cluster, "queryMsgByKey", "-t", "CliMsgs", "-k", "shared")))
    assert by_key == [
        ["#Message ID", "#QID", "#Offset"],
        [first_id, "0", "0"],
        [second["msgId"], "1", "0"],
    ]
    (only,) = ok_json(
        await rmq(cluster, "queryMsgByKey", "-t", "CliMsgs", "-k", "order-1", "--json")
    )
    assert (only["msgId"], only["body"], only["tags"], only["keys"]) == (
        first_id,
        "hello [red]world",
        "TagA",
        ["order-1", "shared"],
    )
    assert rows(ok(await rmq(cluster, "queryMsgByKey", "-t", "CliMsgs", "-k", "none"))) == [
        ["#Message ID", "#QID", "#Offset"]
    ]

    block = fields(ok(await rmq(cluster, "queryMsgById", "-t", "CliMsgs", "-i", first_id)))
    assert block["Topic"] == "CliMsgs" and block["Tags"] == "[TagA]"
    assert block["Keys"] == "[order-1 shared]" and block["Queue ID"] == "0"
    assert block["Message Body"] == "hello [red]world"  # printed as text, never as markup
    assert f"UNIQ_KEY={first_id}" in block["Properties"]
    offset_id = block["OffsetID"]
    by_offset_id = ok_json(
        await rmq(cluster, "queryMsgById", "-t", "CliMsgs", "-i", offset_id, "--json")
    )
    assert [m["msgId"] for m in by_offset_id] == [first_id]

    at_offset = fields(
        ok(
            await rmq(
                cluster, "queryMsgByOffset", "-t", "CliMsgs", "-b", "broker-a", "-i", "1", "-o", "0"
            )
        )
    )
    assert (at_offset["Message Body"], at_offset["OffsetID"]) == ("second", second["offsetMsgId"])

    consumed = rows(ok(await rmq(cluster, "consumeMessage", "-t", "CliMsgs")))
    assert consumed == [
        ["#Broker Name", "#QID", "#Offset", "#MsgId", "#Tags", "#Keys", "#Body"],
        ["broker-a", "0", "0", first_id, "TagA", "order-1 shared", "hello [red]world"],
        ["broker-a", "1", "0", second["msgId"], "shared", "second"],  # no tag: empty cell
    ]
    one = ok_json(
        await rmq(cluster, "consumeMessage", "-t", "CliMsgs", "-b", "broker-a", "-i", "1", "--json")
    )
    assert [(m["queueId"], m["body"]) for m in one] == [(1, "second")]


async def test_send_a_timer_message(cluster: Cluster) -> None:
    ok(await rmq(cluster, "updateTopic", "-t", "CliLater", "-c", CLUSTER, "-r", "1", "-w", "1"))
    await routed(cluster, "CliLater")
    ok(await rmq(cluster, "sendMessage", "-t", "CliLater", "-p", "later", "--delay", "2"))
    got: list[dict[str, Any]] = []
    for _ in range(50):  # a CLI round trip a try: bounded by the count
        got = ok_json(await rmq(cluster, "consumeMessage", "-t", "CliLater", "--json"))
        if got:
            break
        await trio.sleep(0.3)
    assert [m["body"] for m in got] == ["later"]
    # Stored in its topic when due, not when sent.
    assert got[0]["storeTimestamp"] - got[0]["bornTimestamp"] >= 1900, got[0]
    one_line_error(
        await rmq(cluster, "sendMessage", "-t", "CliLater", "-p", "x", "--delay", "300000"),
        "MESSAGE_ILLEGAL",
        "max delay 259200000ms",
    )
    one_line_error(
        await rmq(cluster, "sendMessage", "-t", "CliLater", "-p", "x", "--delay", "-1"), "--delay"
    )


# --- groups and offsets ------------------------------------------------------------------------


async def test_groups_progress_and_offset_reset(cluster: Cluster) -> None:
    ok(await rmq(cluster, "updateTopic", "-t", "CliWork", "-c", CLUSTER, "-r", "1", "-w", "1"))
    out = ok(await rmq(cluster, "updateSubGroup", "-g", "CliGroup", "-c", CLUSTER, "-r", "5"))
    assert out.splitlines()[0] == f"create subscription group to {cluster.broker} success."
    assert "groupName=CliGroup" in out and "retryMaxTimes=5" in out
    configs = ok_json(
        await rmq(
            cluster,
            "updateSubGroup",
            "-g",
            "CliGroup",
            "-b",
            cluster.broker,
            "-s",
            "false",
            "--json",
        )
    )
    assert configs[cluster.broker]["consumeEnable"] is False
    assert configs[cluster.broker]["retryMaxTimes"] == 5  # kept from the first update
    await routed(cluster, "CliWork")
    for body in ("a", "b", "c"):
        ok(await rmq(cluster, "sendMessage", "-t", "CliWork", "-p", body))

    reset = ok(
        await rmq(cluster, "resetOffsetByTime", "-g", "CliGroup", "-t", "CliWork", "-s", "now")
    )
    head, *table = reset.splitlines()
    assert head.startswith(
        "start reset consumer offset by specified, group[CliGroup], topic[CliWork]"
    )
    assert rows("\n".join(table)) == [
        ["#brokerName", "#queueId", "#offset"],
        ["broker-a", "0", "3"],
    ]

    progress_out = ok(await rmq(cluster, "consumerProgress", "-g", "CliGroup", "-t", "CliWork"))
    progress = rows(progress_out)
    assert progress[0] == [
        "#Topic",
        "#Broker Name",
        "#QID",
        "#Broker Offset",
        "#Consumer Offset",
        "#Client IP",
        "#Diff",
        "#LastTime",
    ]
    assert progress[1][:7] == ["CliWork", "broker-a", "0", "3", "3", "N/A", "0"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", progress[1][7])
    assert progress[-2:] == [["Consume TPS: 0.00"], ["Consume Diff Total: 0"]]

    # Back to the beginning, with mqadmin's date form (a day ago, local time).
    yesterday = datetime.datetime.fromtimestamp(time.time() - 86_400)
    stamp = yesterday.strftime("%Y-%m-%d#%H:%M:%S:000")
    resets = ok_json(
        await rmq(
            cluster, "resetOffsetByTime", "-g", "CliGroup", "-t", "CliWork", "-s", stamp, "--json"
        )
    )
    assert [(r["oldOffset"], r["offset"]) for r in resets["offsets"]] == [(3, 0)]
    state = ok_json(await rmq(cluster, "consumerProgress", "-g", "CliGroup", "--json"))
    assert state["diffTotal"] == 3
    assert [
        (q["topic"], q["consumerOffset"], q["diff"], q["clientId"]) for q in state["queues"]
    ] == [("CliWork", 0, 3, None)]

    out = ok(await rmq(cluster, "deleteSubGroup", "-g", "CliGroup", "-c", CLUSTER, "-r", "true"))
    assert out == f"delete subscription group [CliGroup] from broker [{cluster.broker}] success.\n"
    one_line_error(await rmq(cluster, "consumerProgress", "-g", "CliGroup"), "no consume offsets")


# --- one-line errors ---------------------------------------------------------------------------


async def test_errors_are_one_line_and_say_what_to_do(cluster: Cluster) -> None:
    one_line_error(
        await rmq(cluster, "topicStatus", "-t", "NoSuchTopic"),
        "TOPIC_NOT_EXIST",
        "NoSuchTopic",
        "updateTopic",
    )
    one_line_error(
        await rmq(cluster, "queryMsgByKey", "-t", "NoSuchTopic", "-k", "k"), "TOPIC_NOT_EXIST"
    )
    one_line_error(
        await rmq(cluster, "sendMessage", "-t", "NoSuchTopic", "-p", "x"),
        "TOPIC_NOT_EXIST",
        "updateTopic -t NoSuchTopic",
    )
    ok(await rmq(cluster, "updateTopic", "-t", "CliErr", "-c", CLUSTER))
    await routed(cluster, "CliErr")
    one_line_error(
        await rmq(cluster, "resetOffsetByTime", "-g", "G", "-t", "CliErr", "-s", "yesterday"),
        "bad timestamp 'yesterday'",
        "yyyy-MM-dd#HH:mm:ss:SSS",
    )
    one_line_error(
        await rmq(cluster, "queryMsgById", "-t", "CliErr", "-i", "0" * 32), "no message with id"
    )
    one_line_error(
        await rmq(
            cluster, "queryMsgByOffset", "-t", "CliErr", "-b", "broker-a", "-i", "0", "-o", "0"
        ),
        "no message at offset 0",
    )
    one_line_error(await rmq(cluster, "updateTopic", "-t", "T"), "-c CLUSTER", "-b HOST:PORT")
    one_line_error(await rmq(cluster, "updateTopic", "-t", "T", "-c", "Nope"), "cluster 'Nope'")
    one_line_error(
        await rmq(cluster, "updateTopic", "-t", "T", "-c", CLUSTER, "-o", "maybe"), "true or false"
    )
    dead = await closed_port_address()
    one_line_error(await rmq(cluster, "brokerStatus", "-b", dead), dead, "is it running")
    for args in (("consumerProgress", "-g", "G"), ("topicList",), ("clusterList",)):
        one_line_error(await rmq(None, *args, "-n", dead), "cannot connect", dead, "check -n")
