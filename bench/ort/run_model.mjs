// Runs an ONNX model in ONNX Runtime (onnxruntime-node, bench/ort) on raw float32 inputs and writes its
// first output as raw float32: node bench/ort/run_model.mjs MODEL.onnx INPUT.bin N,C,H,W OUTPUT.bin
import { readFileSync, writeFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';

const [model, input, shape, output] = process.argv.slice(2);
const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
const bytes = readFileSync(input);
const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
const dims = shape.split(',').map(Number);
const result = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', data, dims) });
const out = result[session.outputNames[0]];
writeFileSync(output, Buffer.from(out.data.buffer, out.data.byteOffset, out.data.byteLength));
console.log(JSON.stringify({ output: session.outputNames[0], dims: out.dims }));
