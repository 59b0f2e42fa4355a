'use strict';
// Asks a NameServer for topic routes through ali-ons' own MQClientAPI, unmodified.
//
// usage: node alions_route.js <nameSrv host:port> <timeoutMs> <topic> [<topic> ...]
//
// Prints one JSON line per topic on stdout, in order:
//   {"topic": T, "ok": true, "route": <routerInfoData as ali-ons returns it>}
//   {"topic": T, "ok": false, "name": err.name, "code": err.code, "message": err.message}
// Logs go to stderr. Exit status 0 when every topic got an answer (route or server error),
// 2 on anything else (a transport failure, a crash).

const util = require('util');
const MQClientAPI = require('ali-ons/lib/mq_client_api');

function log(level) {
  return (...args) => process.stderr.write(`[ali-ons ${level}] ${util.format(...args)}\n`);
}

const logger = { info: log('info'), warn: log('warn'), error: log('error'), debug() {} };

async function main() {
  const [ nameSrv, timeoutArg, ...topics ] = process.argv.slice(2);
  const timeoutMs = Number(timeoutArg);
  if (!nameSrv || !(timeoutMs > 0) || topics.length === 0) {
    throw new Error('usage: node alions_route.js <nameSrv> <timeoutMs> <topic> [<topic> ...]');
  }
  const api = new MQClientAPI({
    nameSrv,
    clientIP: '127.0.0.1',
    logger,
    responseTimeout: timeoutMs,
    // With nameSrv set, ali-ons never looks the NameServer up over HTTP (onsAddr).
    httpclient: { request() { throw new Error('no HTTP lookups in this test'); } },
  });
  api.on('error', err => logger.error('client error: %s', err && err.stack || err));
  await api.ready();
  let transportError = null;
  for (const topic of topics) {
    try {
      const route = await api.getTopicRouteInfoFromNameServer(topic, timeoutMs);
      emit({ topic, ok: true, route });
    } catch (err) {
      if (err.name !== 'MQClientException') {
        transportError = transportError || err; // not an answer from the server
      }
      emit({ topic, ok: false, name: err.name, code: err.code, message: err.message });
    }
  }
  await api.close();
  if (transportError) {
    throw transportError;
  }
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

main().then(
  () => process.exit(0),
  err => {
    process.stderr.write(`alions_route.js failed: ${err && err.stack || err}\n`);
    process.exit(2);
  }
);
