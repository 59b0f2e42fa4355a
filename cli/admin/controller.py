"""``rmq admin`` controller and HA commands: getControllerMetaData, getSyncStateSet,
getBrokerEpoch, electMaster, cleanBrokerMetadata."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.admin.common import (
    DEFAULT_NAMESRV,
    JsonOpt,
    NamesrvOpt,
    TimeoutOpt,
    _or_dash,
    _print_json,
    run,
)
from cli.output import fail
from client.controller_admin import BrokerEpochs, ControllerMetadata, ElectMasterResult
from protocol.controller_bodies import OPEN_END_OFFSET, BrokerReplicasInfo, EpochEntry

app = typer.Typer()


ControllerOpt = Annotated[
    str,
    typer.Option(
        "-a",
        "--controllerAddress",
        envvar="CONTROLLER_ADDR",
        help="Controller address(es), host:port[;host:port...]: the leader is found from any.",
    ),
]


def _metadata_json(m: ControllerMetadata) -> dict[str, Any]:
    return {
        "address": m.address,
        "group": m.group,
        "controllerLeaderId": m.leader_id,
        "controllerLeaderAddress": m.leader_address,
        "isLeader": m.is_leader,
        "peers": [{"id": i, "address": a} for i, a in m.peers],
    }


@app.command("getControllerMetaData")
def get_controller_metadata(
    controller: ControllerOpt,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show the controller quorum: its group, its leader and its peers."""
    meta = run(namesrv, timeout, lambda a: a.controller_metadata(controller))
    if as_json:
        _print_json(_metadata_json(meta))
        return
    print(f"#ControllerGroup\t{_or_dash(meta.group)}")
    print(f"#ControllerLeaderId\t{_or_dash(meta.leader_id)}")
    print(f"#ControllerLeaderAddress\t{_or_dash(meta.leader_address)}")
    for node_id, addr in meta.peers:
        print(f"#Peer:\t{node_id}:{addr}")


def _replicas_json(info: BrokerReplicasInfo) -> dict[str, Any]:
    return {
        name: {
            "masterBrokerId": r.master_broker_id,
            "masterAddress": r.master_address,
            "masterEpoch": r.master_epoch,
            "syncStateSetEpoch": r.sync_state_set_epoch,
            "inSyncReplicas": [i.to_json() for i in r.in_sync_replicas],
            "notInSyncReplicas": [i.to_json() for i in r.not_in_sync_replicas],
        }
        for name, r in sorted(info.replicas_info_table.items())
    }


@app.command("getSyncStateSet")
def get_sync_state_set(
    controller: ControllerOpt,
    broker_name: Annotated[
        str | None, typer.Option("-b", "--brokerName", help="Broker group name.")
    ] = None,
    cluster: Annotated[
        str | None, typer.Option("-c", "--clusterName", help="Every group of this cluster.")
    ] = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show a broker group's master, epochs and SyncStateSet (-b), or every group's (-c)."""
    info = run(
        namesrv,
        timeout,
        lambda a: a.sync_state_set(controller, broker_name=broker_name, cluster=cluster),
    )
    if as_json:
        _print_json(_replicas_json(info))
        return
    if not info.replicas_info_table:
        raise fail("the controller knows none of these broker groups")
    for name, r in sorted(info.replicas_info_table.items()):
        print(f"#brokerName\t{name}")
        print(f"#MasterBrokerId\t{_or_dash(r.master_broker_id)}")
        print(f"#MasterAddr\t{_or_dash(r.master_address)}")
        print(f"#MasterEpoch\t{r.master_epoch}")
        print(f"#SyncStateSetEpoch\t{r.sync_state_set_epoch}")
        print(f"#SyncStateSetNums\t{len(r.in_sync_replicas)}")
        for member in r.in_sync_replicas:
            print(f"InSyncReplica:\t{member}")
        for member in r.not_in_sync_replicas:
            print(f"NotInSyncReplica:\t{member}")
        print()


def _epochs_json(e: BrokerEpochs) -> dict[str, Any]:
    cache = e.cache
    return {
        "brokerAddr": e.address,
        "error": e.error,
        "clusterName": cache.cluster_name if cache else None,
        "brokerName": cache.broker_name if cache else None,
        "brokerId": cache.broker_id if cache else None,
        "maxOffset": cache.max_offset if cache else None,
        "epochList": [x.to_json() for x in cache.epoch_list] if cache else [],
    }


@app.command("getBrokerEpoch")
def get_broker_epoch(
    broker_name: Annotated[
        str | None, typer.Option("-b", "--brokerName", help="Broker group name.")
    ] = None,
    cluster: Annotated[
        str | None, typer.Option("-c", "--clusterName", help="Every group of this cluster.")
    ] = None,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Show each broker's epoch entries (epoch, start and end offset) of a group or cluster."""
    results = run(
        namesrv, timeout, lambda a: a.broker_epochs(broker_name=broker_name, cluster=cluster)
    )
    if as_json:
        _print_json([_epochs_json(e) for e in results])
        return
    for e in results:
        if e.cache is None:
            print(f"#brokerAddr\t{e.address}\t(skipped: {e.error})")
            continue
        c = e.cache
        print(f"#clusterName\t{c.cluster_name}")
        print(f"#brokerName\t{c.broker_name}")
        print(f"#brokerAddr\t{e.address}")
        print(f"#brokerId\t{c.broker_id}")
        for i, entry in enumerate(c.epoch_list):
            shown = entry
            if i == len(c.epoch_list) - 1 and entry.end_offset == OPEN_END_OFFSET:
                # The open last entry ends at the broker's max offset, as mqadmin prints it.
                shown = EpochEntry(
                    epoch=entry.epoch, start_offset=entry.start_offset, end_offset=c.max_offset
                )
            print(f"#Epoch: {shown}")
        print()


def _elect_json(r: ElectMasterResult) -> dict[str, Any]:
    return {
        "clusterName": r.cluster,
        "brokerName": r.broker_name,
        "masterBrokerId": r.master_broker_id,
        "masterAddress": r.master_address,
        "masterEpoch": r.master_epoch,
        "syncStateSetEpoch": r.sync_state_set_epoch,
        "syncStateSet": sorted(r.sync_state_set),
        "brokerAddrs": {str(i): a for i, a in sorted(r.broker_addrs.items())},
        "changed": r.changed,
    }


@app.command("electMaster")
def elect_master(
    controller: ControllerOpt,
    broker_id: Annotated[
        int, typer.Option("-b", "--brokerId", help="The broker id that should become master.")
    ],
    broker_name: Annotated[str, typer.Option("-bn", "--brokerName", help="Broker group name.")],
    cluster: Annotated[str, typer.Option("-c", "--clusterName", help="Cluster name.")],
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Re-elect: make broker BROKER_ID the master of its group (it must be alive and, with
    unclean election off, in the SyncStateSet)."""
    result = run(
        namesrv,
        timeout,
        lambda a: a.elect_master(
            controller, cluster=cluster, broker_name=broker_name, broker_id=broker_id
        ),
    )
    if as_json:
        _print_json(_elect_json(result))
        return
    print(f"#ClusterName\t{result.cluster}")
    print(f"#BrokerName\t{result.broker_name}")
    print(f"#BrokerMasterAddr\t{_or_dash(result.master_address)}")
    print(f"#MasterEpoch\t{_or_dash(result.master_epoch)}")
    print(f"#SyncStateSetEpoch\t{_or_dash(result.sync_state_set_epoch)}")
    for i, addr in sorted(result.broker_addrs.items()):
        print(f"\t#Broker\t{i}\t{addr}")
    if not result.changed:
        print(f"broker {broker_id} already is the master of {broker_name}; nothing changed")


@app.command("cleanBrokerMetadata")
def clean_broker_metadata(
    controller: ControllerOpt,
    broker_name: Annotated[str, typer.Option("-bn", "--brokerName", help="Broker group name.")],
    broker_ids: Annotated[
        str | None,
        typer.Option(
            "-b",
            "--brokerControllerIdsToClean",
            help="Broker ids to drop, e.g. '1;2' (default: the whole group).",
        ),
    ] = None,
    cluster: Annotated[
        str | None, typer.Option("-c", "--clusterName", help="Cluster name.")
    ] = None,
    clean_living: Annotated[
        bool,
        typer.Option("-l", "--cleanLivingBroker", help="Also drop brokers that are alive."),
    ] = False,
    namesrv: NamesrvOpt = DEFAULT_NAMESRV,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Drop brokers (or a whole group) from the controller's metadata."""
    ids: list[int] | None = None
    if broker_ids is not None:
        try:
            ids = [int(part) for part in broker_ids.split(";") if part.strip()]
        except ValueError:
            raise fail(
                f"-b takes broker ids separated by ';' (e.g. '1;2'), not {broker_ids!r}"
            ) from None
    run(
        namesrv,
        timeout,
        lambda a: a.clean_broker_metadata(
            controller,
            broker_name=broker_name,
            cluster=cluster,
            broker_ids=ids,
            clean_living=clean_living,
        ),
    )
    print(f"clear broker {broker_name} metadata from controller success!")
