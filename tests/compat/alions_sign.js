'use strict';
// Signs one request with ali-ons' own code (Channel#beforeRequest, unmodified) and prints
// the ext fields it would send, so tests can check our signatures byte for byte.
// Usage: node alions_sign.js <spec.json>; spec: {code, header, bodyBase64, accessKey, secretKey}.
const { readSpec, emit } = require('./alions_common');
const Channel = require('ali-ons/lib/channel');
const RemotingCommand = require('ali-ons/lib/protocol/command/remoting_command');

const spec = readSpec();
const command = RemotingCommand.createRequestCommand(spec.code, spec.header);
if (spec.bodyBase64) {
  command.body = Buffer.from(spec.bodyBase64, 'base64');
}
// beforeRequest reads only accessKey, secretKey and onsChannel from its channel.
const channel = { accessKey: spec.accessKey, secretKey: spec.secretKey, onsChannel: 'ALIYUN' };
Channel.prototype.beforeRequest.call(channel, command);
// The whole frame as ali-ons writes it, for the test to decode with our codec.
emit({ signature: command.extFields.Signature, frameBase64: command.encode().toString('base64') });
