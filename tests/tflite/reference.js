#!/usr/bin/env node
// Runs .tflite models in TensorFlow Lite's own interpreter (the WebAssembly build shipped in
// @tensorflow/tfjs-tflite, loaded directly: no tfjs-core) on fixed inputs and writes one JSON file per
// model with the inputs and outputs, for tests/test_tflite.cpp.
//
// Usage: node reference.js TFJS_TFLITE_DIR OUT_DIR MODEL.tflite...
// Inputs: FLOAT32 tensors filled from a 32-bit LCG (state = state * 1664525 + 1013904223, seed 12345 +
// 1000 * input index), value = (state >> 8) / 2^24 * 2 - 1, in [-1, 1). The test regenerates them the
// same way and checks them against the file.
'use strict';
const fs = require('fs');
const path = require('path');

function lcgValues(count, seed) {
  const values = new Float32Array(count);
  let state = seed >>> 0;
  for (let i = 0; i < count; ++i) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    values[i] = ((state >>> 8) / 16777216) * 2 - 1;
  }
  return values;
}

function vectorToArray(vector) {
  const out = [];
  for (let i = 0; i < vector.size(); ++i) out.push(vector.get(i));
  return out;
}

async function main() {
  const [tfliteDir, outDir, ...models] = process.argv.slice(2);
  if (!tfliteDir || !outDir || models.length === 0) {
    console.error('usage: node reference.js TFJS_TFLITE_DIR OUT_DIR MODEL.tflite...');
    process.exit(2);
  }
  const wasmDir = path.resolve(tfliteDir, 'wasm');
  const factory = require(path.join(wasmDir, 'tflite_web_api_cc.js'));
  const module = await factory({ wasmBinary: fs.readFileSync(path.join(wasmDir, 'tflite_web_api_cc.wasm')) });
  fs.mkdirSync(outDir, { recursive: true });
  let failures = 0;
  for (const modelPath of models) {
    const name = path.basename(modelPath, '.tflite');
    const bytes = fs.readFileSync(modelPath);
    const pointer = module._malloc(bytes.length);
    module.HEAPU8.set(bytes, pointer);
    const created = module.TFLiteWebModelRunner.CreateFromBufferAndOptions(pointer, bytes.length, {
      numThreads: 1, enableProfiling: false, maxProfilingBufferEntries: 1024,
    });
    if (!created.ok()) {
      console.log(`${name}: the interpreter refuses it: ${created.errorMessage()}`);
      module._free(pointer);
      continue;
    }
    const runner = created.value();
    const result = { model: path.basename(modelPath), inputs: [], outputs: [] };
    try {
      const inputs = vectorToArray(runner.GetInputs());
      inputs.forEach((input, index) => {
        if (input.dataType !== 'float32') throw new Error(`input ${input.name} is ${input.dataType}`);
        const view = input.data();
        const seed = 12345 + 1000 * index;
        view.set(lcgValues(view.length, seed));
        result.inputs.push({ name: input.name, shape: input.shape.split(',').map(Number), seed });
      });
      if (!runner.Infer()) throw new Error('inference failed');
      for (const output of vectorToArray(runner.GetOutputs())) {
        const data = Array.from(output.data());
        result.outputs.push({ name: output.name, type: output.dataType, shape: output.shape.split(',').map(Number), data });
      }
      fs.writeFileSync(path.join(outDir, name + '.json'), JSON.stringify(result));
      console.log(`${name}: ${result.outputs.map((o) => `${o.name} [${o.shape}]`).join(', ')}`);
    } catch (e) {
      console.log(`${name}: the interpreter fails: ${e.message}`);
      ++failures;
    } finally {
      runner.delete();
      module._free(pointer);
    }
  }
  process.exit(failures === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
