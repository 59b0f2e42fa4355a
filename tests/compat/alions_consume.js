'use strict';
// Consumes through an unmodified ali-ons push Consumer until SIGTERM/SIGINT, then closes
// it (ali-ons commits its offsets and unregisters on close) and exits 0.
//
// usage: node alions_consume.js <spec.json>
//   spec: {nameSrv, consumerGroup, instanceName?, broadcast?: bool, consumeFromWhere?,
//          intervalsMs?, subscriptions: [{topic, expression}],
//          failFirstDelivery?: bool  (the handler throws for a message with reconsumeTimes 0)}
//
// stdout, one JSON object per line:
//   {"event": "ready"}                         the consumer started
//   {"event": "assigned", "topic", "queues": [{"brokerName", "queueId"}]}
//                                              a rebalance changed the topic's queues we own
//   {"event": "queueStart", "topic", "queueId", "nextOffset"}   the first pull offset of a
//                                              queue rebalancing gave us (as ali-ons logs it)
//   {"event": "pulled", "topic", "msgIds": [...]}   what the broker returned to one pull (as
//                                              ali-ons logs it, before its own tag filter)
//   {"event": "message", "outcome": "ok"|"failed", ...}   one handler call (see describe())
//   {"event": "error", "name", "code", "message"}     an error ali-ons emitted
//   {"event": "closing"}                       the stop signal came; close() starts
//   {"event": "closed"}                        close() finished; exit status 0
//   {"event": "failed", ...}                   the driver itself failed; exit status 2

const crypto = require('crypto');
const { Consumer } = require('ali-ons');
const common = require('./alions_common');

const CLOSE_TIMEOUT_MS = 8000;

// Two info lines ali-ons logs (mq_push_consumer.js, 3.12.0): one for every FOUND pull, one
// when rebalancing gives it a queue, with the offset it will pull from first.
const PULL_FOUND_LOG = '[MQPushConsumer] pull message success, found new message size';
const QUEUE_ADDED_LOG = '[mq:consumer] doRebalance, %s, add a new messageQueue';

function onInfo(format, args) {
  if (format.startsWith(PULL_FOUND_LOG)) {
    const [ , topic, msgIds ] = args;
    common.emit({ event: 'pulled', topic, msgIds: String(msgIds).split(',').filter(Boolean) });
  } else if (format.startsWith(QUEUE_ADDED_LOG)) {
    const [ , mq, nextOffset ] = args;
    common.emit({ event: 'queueStart', topic: mq.topic, queueId: mq.queueId, nextOffset });
  }
}

function describe(msg, mq, outcome) {
  const body = msg.body || Buffer.alloc(0); // ali-ons leaves an empty body undefined
  return {
    event: 'message',
    outcome,
    at: Date.now(),
    queueTopic: mq ? mq.topic : null, // retried messages reach the handler without mq
    topic: msg.topic,
    msgId: msg.msgId,
    originMsgId: msg.originMessageId || null,
    retryTopic: msg.retryTopic || null,
    tags: msg.tags,
    keys: msg.keys || null,
    properties: msg.properties,
    reconsumeTimes: msg.reconsumeTimes,
    queueId: msg.queueId,
    queueOffset: msg.queueOffset,
    storeHost: msg.storeHost,
    bornTimestamp: msg.bornTimestamp,
    storeTimestamp: msg.storeTimestamp,
    bodyLength: body.length,
    bodySha256: crypto.createHash('sha256').update(body).digest('hex'),
  };
}

async function main() {
  const stopRequested = new Promise(resolve => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  const spec = common.readSpec();
  const logger = common.makeLogger('ali-ons consumer', onInfo);
  const options = Object.assign(common.clientOptions(spec, logger), {
    consumerGroup: spec.consumerGroup,
    isBroadcast: !!spec.broadcast,
    consumeFromWhere: spec.consumeFromWhere || 'CONSUME_FROM_LAST_OFFSET',
  });
  if (spec.instanceName) {
    options.instanceName = spec.instanceName;
  }
  const consumer = new Consumer(options);
  consumer.on('error', err => {
    logger.warn('consumer error: %s', err && err.stack || err);
    common.emit(common.errorEvent(err));
  });

  const topics = spec.subscriptions.map(s => s.topic);
  if (!spec.broadcast) {
    topics.push('%RETRY%' + spec.consumerGroup);
  }
  for (const topic of topics) {
    consumer.on(`topic_${topic}_queue_changed`, () => {
      const queues = [];
      for (const entry of consumer.processQueueTable.values()) {
        if (entry.messageQueue.topic === topic) {
          const { brokerName, queueId } = entry.messageQueue;
          queues.push({ brokerName, queueId });
        }
      }
      common.emit({ event: 'assigned', topic, queues });
    });
  }

  await consumer.ready();
  common.emit({ event: 'ready' });

  for (const { topic, expression } of spec.subscriptions) {
    consumer.subscribe(topic, expression, async (msg, mq) => {
      if (spec.failFirstDelivery && msg.reconsumeTimes === 0) {
        common.emit(describe(msg, mq, 'failed'));
        throw new Error(`failing the first delivery of ${msg.msgId} on purpose`);
      }
      common.emit(describe(msg, mq, 'ok'));
    });
  }

  await stopRequested;
  setTimeout(() => {
    process.stderr.write(`alions_consume.js: close() did not finish in ${CLOSE_TIMEOUT_MS} ms\n`);
    common.exitAfterFlush(3);
  }, CLOSE_TIMEOUT_MS).unref();
  common.emit({ event: 'closing' });
  await consumer.close();
  common.emit({ event: 'closed' });
}

main().then(() => common.exitAfterFlush(0), err => common.fail('alions_consume.js', err));
