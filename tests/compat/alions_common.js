'use strict';
// Shared by the ali-ons driver scripts (alions_produce.js, alions_consume.js).
//
// Every driver reads one JSON spec file (argv[2]) and writes one JSON object per line on
// stdout (the events the Python tests parse); ali-ons' own log goes to stderr.
// ali-ons itself is used as published: these helpers only build its options and read
// what it tells its logger.

const fs = require('fs');
const util = require('util');

function readSpec() {
  const file = process.argv[2];
  if (!file) {
    throw new Error(`usage: node ${process.argv[1]} <spec.json>`);
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// ali-ons calls logger.info(format, ...args) like util.format. `onInfo(format, args)`
// sees every info line (the consumer driver picks facts out of a few of them).
function makeLogger(name, onInfo) {
  const write = level => (...args) => {
    process.stderr.write(`[${name} ${level}] ${util.format(...args)}\n`);
  };
  const info = write('info');
  return {
    info(...args) {
      if (onInfo && typeof args[0] === 'string') {
        onInfo(args[0], args.slice(1));
      }
      info(...args);
    },
    warn: write('warn'),
    error: write('error'),
    debug() {},
  };
}

// Options every ali-ons client gets: our NameServer (no HTTP address lookup), a loopback
// client IP, and the timers the spec shortens (ali-ons' defaults are 30 s / 30 s / 5 s /
// 10 s, far too slow for a test).
function clientOptions(spec, logger) {
  const intervals = spec.intervalsMs || {};
  return {
    nameSrv: spec.nameSrv,
    clientIP: '127.0.0.1',
    logger,
    // With nameSrv set ali-ons never needs it, but without one ready() never resolves.
    httpclient: { request() { throw new Error('no HTTP lookups in this test'); } },
    pollNameServerInteval: intervals.pollNameServer || 30000,
    heartbeatBrokerInterval: intervals.heartbeatBroker || 30000,
    persistConsumerOffsetInterval: intervals.persistConsumerOffset || 5000,
    rebalanceInterval: intervals.rebalance || 10000,
    // ACL 1.0: ali-ons' own signing options (its Channel signs every request with them).
    ...(spec.accessKey ? { accessKey: spec.accessKey, secretKey: spec.secretKey } : {}),
  };
}

function errorEvent(err) {
  return {
    event: 'error',
    name: err && err.name,
    code: err && err.code,
    message: String(err && err.message || err),
  };
}

// Exit with `status` once stdout has been flushed (a pipe may still hold our last lines).
function exitAfterFlush(status) {
  process.stdout.write('', () => process.exit(status));
}

function fail(script, err) {
  process.stderr.write(`${script} failed: ${err && err.stack || err}\n`);
  emit(Object.assign(errorEvent(err), { event: 'failed' }));
  exitAfterFlush(2);
}

module.exports = { readSpec, emit, makeLogger, clientOptions, errorEvent, exitAfterFlush, fail };
