"""Half messages from unmodified ali-ons: parked, then committed or rolled back.

ali-ons has no transactional producer, but a message with property ``TRAN_MSG=true`` goes
out with the PREPARED sysFlag (its mq_producer.js), as a Java half message does. Its send
result (offset msgId, queueOffset) is all END_TRANSACTION needs; an ali-ons push consumer
then receives exactly the committed message, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.message import parse_offset_msg_id
from protocol.transaction import EndTransactionRequestHeader, LocalTransactionState

if TYPE_CHECKING:  # the fixture's types (conftest modules are not imported by tests)
    from tests.compat.conftest import AlionsCluster

pytestmark = [pytest.mark.compat]

PRODUCER_GROUP = "PID_alions_tx"


async def test_alions_half_messages_are_committed_or_rolled_back(alions: AlionsCluster) -> None:
    topic, group = "AlionsTx", "GID_alions_tx"
    with trio.fail_after(60):
        await alions.create_topic(topic)
        props = {"TRAN_MSG": "true", "PGROUP": PRODUCER_GROUP}
        sent = await alions.produce(
            [
                alions.message(topic=topic, body=b"commit me", tags="T", properties=props),
                alions.message(topic=topic, body=b"roll me back", tags="T", properties=props),
            ],
            group=PRODUCER_GROUP,
        )
        decisions = (LocalTransactionState.COMMIT_MESSAGE, LocalTransactionState.ROLLBACK_MESSAGE)
        for s, decision in zip(sent, decisions, strict=True):
            header = EndTransactionRequestHeader(
                producer_group=PRODUCER_GROUP,
                tran_state_table_offset=s.queue_offset,
                commit_log_offset=parse_offset_msg_id(s.msg_id)[2],
                commit_or_rollback=decision.wire_value,
                msg_id=s.msg_id,
            )
            request = RemotingCommand.request(RequestCode.END_TRANSACTION, header.to_ext_fields())
            response = await alions.client.call(alions.broker, request, timeout_s=5.0)
            assert response.code == ResponseCode.SUCCESS, response.remark

        async with alions.consumer(group, [(topic, "*")]) as consumer:
            await consumer.wait_messages(1, timeout_s=20.0)
            await consumer.settle(1.5)
            await consumer.close()
        (delivery,) = consumer.messages()
        assert delivery["outcome"] == "ok"
        assert delivery["bodyLength"] == len(b"commit me")
        assert delivery["properties"]["PGROUP"] == PRODUCER_GROUP
        assert "TRAN_MSG" not in delivery["properties"]
