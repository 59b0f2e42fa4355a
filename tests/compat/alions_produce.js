'use strict';
// Sends messages through an unmodified ali-ons Producer, one after another.
//
// usage: node alions_produce.js <spec.json>
//   spec: {nameSrv, producerGroup, intervalsMs?, messages: [
//            {topic, tags (string, or null for ali-ons' untagged form), keys?: [string],
//             properties?: {name: value}, bodyFile: path (the exact body bytes)}]}
//
// stdout, one JSON object per line:
//   {"event": "sent", "index": i, "msgId", "queueId", "queueOffset", "brokerName", "sendStatus"}
//   {"event": "done"}                       every message was sent; exit status 0
//   {"event": "failed", "name", "code", "message"}   exit status 2

const fs = require('fs');
const { Producer, Message } = require('ali-ons');
const common = require('./alions_common');

async function main() {
  const spec = common.readSpec();
  const logger = common.makeLogger('ali-ons producer');
  const producer = new Producer(Object.assign(common.clientOptions(spec, logger), {
    producerGroup: spec.producerGroup,
  }));
  producer.on('error', err => logger.error('producer error: %s', err && err.stack || err));
  await producer.ready();
  for (const [ index, m ] of spec.messages.entries()) {
    const body = fs.readFileSync(m.bodyFile);
    // The two-argument form is how ali-ons sends a message without a tag.
    const msg = m.tags === null ? new Message(m.topic, body) : new Message(m.topic, m.tags, body);
    if (m.keys) {
      msg.keys = m.keys;
    }
    Object.assign(msg.properties, m.properties || {});
    const result = await producer.send(msg);
    common.emit({
      event: 'sent',
      index,
      msgId: result.msgId,
      queueId: result.messageQueue.queueId,
      queueOffset: result.queueOffset,
      brokerName: result.messageQueue.brokerName,
      sendStatus: result.sendStatus,
    });
  }
  await producer.close();
  common.emit({ event: 'done' });
}

main().then(() => common.exitAfterFlush(0), err => common.fail('alions_produce.js', err));
