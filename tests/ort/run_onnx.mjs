// Runs an ONNX model in ONNX Runtime (onnxruntime-node) for the tests: an independent check that a model
// espresso wrote is valid ONNX and computes what it should.
// Usage: node tests/ort/run_onnx.mjs NODE_MODULES SPEC.json
// SPEC: {"model": PATH, "inputs": [{"name", "type": "float32|int64|int32|uint8|int8|bool", "dims": [...], "file": raw f32}],
//        "outputs": [{"name", "file"}]}. Each input file holds float32 values, converted to the input's type;
// each output is written as float32 values to its file, and its dims are printed as one JSON line.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [modules, specPath] = process.argv.slice(2);
const ort = createRequire(join(modules, 'noop.js'))('onnxruntime-node');
const spec = JSON.parse(readFileSync(specPath, 'utf8'));

function floats(path) {
  const bytes = readFileSync(path);
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

const feeds = {};
for (const input of spec.inputs) {
  const values = floats(input.file);
  let data;
  if (input.type === 'int64') data = BigInt64Array.from(values, (v) => BigInt(Math.trunc(v)));
  else if (input.type === 'int32') data = Int32Array.from(values, (v) => Math.trunc(v));
  else if (input.type === 'uint8') data = Uint8Array.from(values, (v) => Math.trunc(v));
  else if (input.type === 'int8') data = Int8Array.from(values, (v) => Math.trunc(v));
  else if (input.type === 'bool') data = Uint8Array.from(values, (v) => (v !== 0 ? 1 : 0));
  else data = values;
  feeds[input.name] = new ort.Tensor(input.type, data, input.dims);
}
const session = await ort.InferenceSession.create(spec.model, { executionProviders: ['cpu'] });
const results = await session.run(feeds, spec.outputs.map((o) => o.name));
const dims = {};
for (const output of spec.outputs) {
  const tensor = results[output.name];
  const values = Float32Array.from(tensor.data, (v) => Number(v));
  writeFileSync(output.file, Buffer.from(values.buffer, values.byteOffset, values.byteLength));
  dims[output.name] = tensor.dims;
}
console.log(JSON.stringify(dims));
