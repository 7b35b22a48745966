// Applies fossil deltas with centrifuge-js's own code path (the codec method a subscription
// calls for each publication), for tests/unit/test_fossil.py.
//
// stdin: a JSON list of {source, delta, text} (base64 strings). text: the delta travels as a
// JSON string (the JSON build's codec; its result must parse as JSON), else as bytes (the
// protobuf build's codec). stdout: a JSON list of {target} (base64) or {error}.

import { Centrifuge } from 'centrifuge';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';

const jsonCodec = new Centrifuge('ws://127.0.0.1:9/unused')._codec;
const protobufCodec = new CentrifugeProtobuf('ws://127.0.0.1:9/unused')._codec;

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const cases = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const out = cases.map(({ source, delta, text }) => {
  const prev = new Uint8Array(Buffer.from(source, 'base64'));
  const raw = Buffer.from(delta, 'base64');
  try {
    const { newPrevValue, isDelta } = text
      ? jsonCodec.applyDeltaIfNeeded({ delta: true, data: new TextDecoder('utf-8', { fatal: true }).decode(raw) }, prev)
      : protobufCodec.applyDeltaIfNeeded({ delta: true, data: new Uint8Array(raw) }, prev);
    if (!isDelta) throw new Error('not applied as a delta');
    return { target: Buffer.from(newPrevValue).toString('base64') };
  } catch (err) {
    return { error: String(err && err.message ? err.message : err) };
  }
});
process.stdout.write(JSON.stringify(out));
