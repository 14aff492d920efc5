// ONNX Runtime CPU inference timings, in the JSON lines of `espresso bench --json`.
// Usage: node bench/ort/bench.mjs MODEL.onnx --shape C,H,W --batch 1,16 --iterations N [--warmup W] [--threads T]
// One session per model (inter-op threads 1, intra-op T, all graph optimisations: ORT's default
// setting), then per batch size: W untimed runs, N timed runs of session.run(), the median reported.
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    shape: { type: 'string' },
    batch: { type: 'string', default: '1,16' },
    iterations: { type: 'string', default: '50' },
    warmup: { type: 'string', default: '5' },
    threads: { type: 'string', default: '1' },
  },
});
if (positionals.length !== 1 || !values.shape) {
  console.error('usage: bench.mjs MODEL.onnx --shape C,H,W [--batch 1,16] [--iterations N] [--warmup W] [--threads T]');
  process.exit(2);
}
const modelPath = positionals[0];
const threads = Number(values.threads);
const session = await ort.InferenceSession.create(modelPath, {
  executionProviders: ['cpu'],
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
});
if (session.inputNames.length !== 1) {
  throw new Error(`${modelPath}: expected one input, got ${session.inputNames.join(', ')}`);
}

// onnxruntime-node 1.20 does not expose declared input shapes: the caller passes one image's shape.
const imageShape = values.shape.split(',').map(Number);

for (const batch of values.batch.split(',').map(Number)) {
  const shape = [batch, ...imageShape];
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let seed = 1;
  for (let i = 0; i < data.length; ++i) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    data[i] = (seed / 2147483648) * 2 - 1;
  }
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, shape) };
  for (let i = 0; i < Number(values.warmup); ++i) await session.run(feeds);
  const ms = [];
  for (let i = 0; i < Number(values.iterations); ++i) {
    const start = performance.now();
    await session.run(feeds);
    ms.push(performance.now() - start);
  }
  ms.sort((a, b) => a - b);
  const median = ms[Math.floor(ms.length / 2)];
  const p90 = ms[Math.min(ms.length - 1, Math.floor((ms.length * 9) / 10))];
  console.log(JSON.stringify({
    framework: 'onnxruntime', mode: 'eager', model: modelPath, device: 'cpu', threads, batch,
    median_ms: Number(median.toFixed(4)), p90_ms: Number(p90.toFixed(4)),
    images_per_s: Number(((batch * 1000) / median).toFixed(1)),
  }));
}
