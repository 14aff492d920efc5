// Browser test of the model catalog's page (docs/web.md): `espresso store serve` on a loopback port with a
// temporary root, real models pushed (the Caffe LeNet, signed, with its preprocessing, labels and MNIST
// accuracy; the ONNX model zoo's mnist-1), then Debian's chromium driven by playwright-core: search,
// filters, keyboard navigation, the card with its verified signature, and "try it" on a real MNIST test
// digit written out as PNG here. Every step is bounded in time; the whole run stops itself after 150 s.
//
// Usage: node catalog.test.mjs ESPRESSO_BINARY SHARED_DATA_DIR SOURCE_DIR
// ESPRESSO_UPDATE_SCREENSHOTS=1 writes docs/images/web-{search,card,try}-{1280x800,390x844}.png.
// Exit 0: passed; 77: skipped (what is missing is printed); anything else: failed.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateSync, gunzipSync } from 'node:zlib';

const [espresso, dataArgument, source] = process.argv.slice(2);
const data = process.env.ESPRESSO_DATA || dataArgument;
const skip = (why) => { console.log('SKIPPED: ' + why); process.exit(77); };
if (!espresso || !dataArgument || !source) { console.error('usage: node catalog.test.mjs ESPRESSO DATA SOURCE'); process.exit(2); }
const chromium = process.env.ESPRESSO_CHROMIUM || ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find(existsSync);
if (!chromium) skip('no chromium (apt-get install chromium)');
let playwright;
try {
  playwright = await import('playwright-core');
} catch (e) {
  skip('playwright-core is not installed (cd tests/web && npm ci): ' + e.message);
}
for (const file of ['caffe/lenet/lenet.prototxt', 'caffe/lenet/lenet_iter_10000.caffemodel', 'onnx/mnist-1/model.onnx',
  'mnist/t10k-images-idx3-ubyte.gz', 'mnist/t10k-labels-idx1-ubyte.gz']) {
  if (!existsSync(join(data, file))) skip('shared data missing: ' + join(data, file));
}

const watchdog = setTimeout(() => { console.error('FAILED: the test ran past 150 s'); cleanup(); process.exit(1); }, 150000);
const temp = mkdtempSync(join(tmpdir(), 'espresso-web-'));
let server = null;
let inference = null;
let browser = null;
const cleanup = () => {
  if (server && server.exitCode === null) server.kill('SIGTERM');
  if (inference && inference.exitCode === null) inference.kill('SIGTERM');
  rmSync(temp, { recursive: true, force: true });
};
let failures = 0;
let passes = 0;
const check = (condition, what) => {
  if (condition) { passes++; console.log('ok   ' + what); } else { failures++; console.log('FAIL ' + what); }
};
const run = (args) => {
  const r = spawnSync(espresso, args, { encoding: 'utf8', timeout: 60000 });
  if (r.status !== 0) throw new Error('espresso ' + args.join(' ') + ' failed: ' + r.stdout + r.stderr);
  return r.stdout;
};

// A grayscale PNG (filter 0 rows, zlib), enough for an MNIST digit.
const png = (pixels, width, height) => {
  const rows = Buffer.alloc((width + 1) * height);
  for (let y = 0; y < height; y++) pixels.copy(rows, y * (width + 1) + 1, y * width, (y + 1) * width);
  const chunk = (type, body) => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(body.length, 0);
    head.write(type, 4, 'ascii');
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([Buffer.from(type, 'ascii'), body])) >>> 0, 0);
    return Buffer.concat([head, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;  // bit depth; colour type 0 (gray), no interlace
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
};

try {
  // ---- the store, with real models --------------------------------------------------------------------
  // Starts `espresso ARGS` and answers the port it prints ("listening on 127.0.0.1:PORT").
  const listening = (child, what) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(what + ' did not start in 20 s')), 20000);
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/listening on 127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    child.on('exit', (code) => reject(new Error(what + ' exited with ' + code)));
  });
  server = spawn(espresso, ['store', 'serve', '--root', join(temp, 'root'), '--listen', '127.0.0.1:0'],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await listening(server, 'store serve');
  const registry = '127.0.0.1:' + port;
  const base = 'http://' + registry + '/';

  const labels = join(temp, 'digits.txt');
  writeFileSync(labels, ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'].join('\n') + '\n');
  run(['keygen', join(temp, 'publisher')]);
  // LeNet: 99.05 % on the MNIST test set (MANIFEST.md: an independent numpy forward pass).
  run(['convert', join(data, 'caffe/lenet/lenet.prototxt'), '-w', join(data, 'caffe/lenet/lenet_iter_10000.caffemodel'),
    '-o', join(temp, 'lenet.esp'), '--name', 'lenet', '--version', '1.0', '--task', 'classification',
    '--description', 'LeNet-5 for handwritten digits (Caffe MNIST example)', '--license', 'BSD-2-Clause',
    '--author', 'BVLC', '--labels', labels, '--scale', '0.00390625', '--metric', 'mnist_top1=0.9905']);
  run(['push', join(temp, 'lenet.esp'), registry + '/vision/lenet:1.0', '--sign', join(temp, 'publisher')]);
  // mnist-1 from the ONNX model zoo: 98.90 % (MANIFEST.md), logits out, input x/255.
  run(['convert', join(data, 'onnx/mnist-1/model.onnx'), '-o', join(temp, 'mnist.esp'), '--name', 'mnist-cntk',
    '--version', '1', '--task', 'classification', '--description', 'ONNX model zoo MNIST CNN (CNTK)',
    '--license', 'MIT', '--labels', labels, '--scale', String(1 / 255), '--metric', 'mnist_top1=0.989']);
  run(['push', join(temp, 'mnist.esp'), registry + '/onnx/mnist-cntk:1']);

  // A real test digit: the first image of the MNIST test set (a 7), with its label from the label file.
  const images = gunzipSync(readFileSync(join(data, 'mnist/t10k-images-idx3-ubyte.gz')));
  const digitLabels = gunzipSync(readFileSync(join(data, 'mnist/t10k-labels-idx1-ubyte.gz')));
  const index = 0;
  const truth = digitLabels[8 + index];
  const digitFile = join(temp, 'mnist-test-' + index + '.png');
  writeFileSync(digitFile, png(images.subarray(16 + 784 * index, 16 + 784 * (index + 1)), 28, 28));
  const names = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'];

  // ---- the browser ----------------------------------------------------------------------------------
  browser = await playwright.chromium.launch({
    executablePath: chromium,
    headless: true,
    timeout: 30000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const shots = process.env.ESPRESSO_UPDATE_SCREENSHOTS === '1' ? join(source, 'docs', 'images') : null;
  if (shots) mkdirSync(shots, { recursive: true });

  for (const [width, height] of [[1280, 800], [390, 844]]) {
    const size = width + 'x' + height;
    const context = await browser.newContext({ viewport: { width, height } });
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    const consoleErrors = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));

    // Search: both models listed, then text and filters.
    await page.goto(base);
    const results = page.locator('#results a.result');
    await page.waitForFunction(() => document.querySelectorAll('#results a.result').length === 2);
    check(await results.count() === 2, size + ': the catalog lists both pushed models');
    await page.getByLabel('Search', { exact: true }).fill('handwritten');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForFunction(() => document.querySelector('#result-status').textContent === '1 model.');
    check((await results.first().innerText()).includes('vision/lenet'), size + ': text search finds the pushed LeNet');
    if (shots) await page.screenshot({ path: join(shots, 'web-search-' + size + '.png'), fullPage: false });
    await page.getByLabel('Search', { exact: true }).fill('');

    const filtered = async (label, value) => {
      await page.getByLabel(label, { exact: true }).selectOption(value);
      await page.waitForFunction(() => !document.querySelector('#result-status').textContent.startsWith('Searching'));
      await page.waitForTimeout(100);
      const list = await results.allInnerTexts();
      await page.getByLabel(label, { exact: true }).selectOption('');
      await page.waitForFunction(() => !document.querySelector('#result-status').textContent.startsWith('Searching'));
      return list.map((t) => t.split('\n')[0]);
    };
    const small = await filtered('Size', '1048576');
    check(small.length === 1 && small[0].startsWith('onnx/mnist-cntk'), size + ': size filter (up to 1 MiB) keeps only the 26 KB model: ' + small);
    const accurate = await filtered('Accuracy', '0.99');
    check(accurate.length === 1 && accurate[0].startsWith('vision/lenet'), size + ': accuracy filter (99 %) keeps only LeNet: ' + accurate);
    const mit = await filtered('Licence', 'MIT');
    check(mit.length === 1 && mit[0].startsWith('onnx/mnist-cntk'), size + ': licence filter keeps only the MIT model: ' + mit);
    const tasks = await page.getByLabel('Task', { exact: true }).locator('option').allInnerTexts();
    check(tasks.includes('classification'), size + ': the task filter offers the catalog\'s tasks');
    const classification = await filtered('Task', 'classification');
    check(classification.length === 2, size + ': task filter "classification" keeps both classifiers');

    // Keyboard: Tab from the search box reaches the first result; Enter opens its card.
    await page.getByLabel('Search', { exact: true }).fill('lenet');
    await page.getByLabel('Search', { exact: true }).press('Enter');
    await page.waitForFunction(() => document.querySelector('#result-status').textContent === '1 model.');
    await page.getByLabel('Search', { exact: true }).focus();
    let reached = false;
    for (let i = 0; i < 12 && !reached; i++) {
      await page.keyboard.press('Tab');
      reached = await page.evaluate(() => document.activeElement && document.activeElement.classList.contains('result'));
    }
    check(reached, size + ': Tab reaches the result');
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    check(outline !== 'none', size + ': the focused result shows a focus outline (' + outline + ')');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => !document.querySelector('#card').hidden);
    check((await page.locator('#model-title').innerText()) === 'vision/lenet', size + ': Enter opens the card');

    // The card.
    const facts = await page.locator('#facts').innerText();
    for (const expected of ['classification', 'BSD-2-Clause', 'BVLC', '99.05 %', 'dataset mnist', '1.6 MiB', '431,080',
      '4.59 MFLOP', 'scale by 0.00390625', 'resize to 28×28', '10 classes', 'signature verified']) {
      check(facts.includes(expected), size + ': the card shows "' + expected + '"');
    }
    check(await page.locator('#pull').isVisible(), size + ': the registry shows the pull line');
    check((await page.locator('#pull-line').inputValue()) === 'espresso pull ' + registry + '/vision/lenet:1.0',
      size + ': the pull line names the release');
    check((await page.locator('#model-description').innerText()).includes('LeNet-5'), size + ': the description');
    check((await page.locator('#versions').innerText()).includes('1.0'), size + ': the versions table');
    await page.locator('#copy').click();
    await page.waitForFunction(() => document.querySelector('#copy-status').textContent !== '');
    check((await page.locator('#copy-status').innerText()).length > 0, size + ': the copy button answers');
    if (shots) await page.screenshot({ path: join(shots, 'web-card-' + size + '.png'), fullPage: false });

    // Try it: the digit through the file input; the server's top-5.
    await page.getByLabel('Choose an image or drop it here').setInputFiles(digitFile);
    await page.waitForFunction(() => !document.querySelector('#predictions').hidden ||
      !document.querySelector('#try-error').hidden, null, { timeout: 20000 });
    const predictions = await page.locator('#predictions li').allInnerTexts();
    check(predictions.length === 5, size + ': try-it shows the top 5 (' + predictions.length + ')');
    check(predictions.length > 0 && predictions[0].startsWith(names[truth]),
      size + ': top-1 is the digit\'s true class, ' + names[truth] + ': ' + JSON.stringify(predictions[0]));
    const status = await page.locator('#try-status').innerText();
    check(/\d+(\.\d+)? ms on the server/.test(status), size + ': the time it took: ' + status);
    check((await page.locator('#preview').getAttribute('alt')).includes('mnist-test-0.png'), size + ': the preview has an alt text');
    if (shots) {
      await page.locator('#try').scrollIntoViewIfNeeded();
      await page.screenshot({ path: join(shots, 'web-try-' + size + '.png'), fullPage: false });
    }
    // A file that is not an image: the server's error, naming the field, shown in the page.
    await page.getByLabel('Choose an image or drop it here').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not an image') });
    await page.waitForFunction(() => !document.querySelector('#try-error').hidden);
    check((await page.locator('#try-error').innerText()).includes('image:'), size + ': an undecodable file shows the error naming the field');

    // No horizontal scrolling at this width, and every control has a label.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, size + ': no horizontal overflow (' + overflow + ' px)');
    const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, button')]
      .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.textContent.trim())
      .map((c) => c.id));
    check(unlabelled.length === 0, size + ': every control has a label ' + JSON.stringify(unlabelled));
    const noAlt = await page.evaluate(() => [...document.querySelectorAll('img')].filter((i) => !i.hasAttribute('alt')).length);
    check(noAlt === 0, size + ': every image has an alt attribute');
    check(consoleErrors.filter((e) => !e.includes('Failed to load resource')).length === 0,
      size + ': no script errors ' + JSON.stringify(consoleErrors));
    await context.close();
  }

  // The API's own refusals, as the page would get them.
  const post = async (path, body) => {
    const r = await fetch(base + path, { method: 'POST', body });
    return { status: r.status, body: await r.json() };
  };
  const unknown = await post('api/v1/models/vision/absent/classify', readFileSync(digitFile));
  check(unknown.status === 404 && unknown.body.errors[0].field === 'name', 'unknown model: 404 naming the field "name"');
  const junk = await post('api/v1/models/vision/lenet/classify', Buffer.from('junk'));
  check(junk.status === 400 && junk.body.errors[0].field === 'image', 'undecodable image: 400 naming the field "image"');

  // ---- the same page from `espresso serve` (docs/serve.md), for its served models: one short pass --------
  inference = spawn(espresso, ['serve', '--models', 'lenet=' + join(temp, 'lenet.esp'), 'mnist-cntk=' + join(temp, 'mnist.esp'),
    '--listen', '127.0.0.1:0', '--memory-budget', '64M'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const servePort = await listening(inference, 'espresso serve');
  {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    const consoleErrors = [];
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    await page.goto('http://127.0.0.1:' + servePort + '/');
    const results = page.locator('#results a.result');
    await page.waitForFunction(() => document.querySelectorAll('#results a.result').length === 2);
    check(await results.count() === 2, 'serve: the page lists both served models');
    await page.getByLabel('Search', { exact: true }).fill('handwritten');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForFunction(() => document.querySelector('#result-status').textContent === '1 model.');
    check((await results.first().innerText()).startsWith('lenet'), 'serve: text search finds the served LeNet');
    await results.first().click();
    await page.waitForFunction(() => !document.querySelector('#card').hidden);
    check((await page.locator('#model-title').innerText()) === 'lenet', 'serve: the card opens');
    const facts = await page.locator('#facts').innerText();
    check(facts.includes('99.05 %') && facts.includes('10 classes'), 'serve: the card shows accuracy and labels');
    check(!(await page.locator('#pull').isVisible()), 'serve: no pull line (serve is not a registry)');
    await page.getByLabel('Choose an image or drop it here').setInputFiles(digitFile);
    await page.waitForFunction(() => !document.querySelector('#predictions').hidden ||
      !document.querySelector('#try-error').hidden, null, { timeout: 20000 });
    const predictions = await page.locator('#predictions li').allInnerTexts();
    check(predictions.length === 5 && predictions[0].startsWith(names[truth]),
      'serve: try-it top-1 is the digit\'s true class, ' + names[truth] + ': ' + JSON.stringify(predictions[0]));
    check(/\d+(\.\d+)? ms on the server/.test(await page.locator('#try-status').innerText()), 'serve: the time it took');
    check(consoleErrors.length === 0, 'serve: no script errors ' + JSON.stringify(consoleErrors));
    if (shots) {
      await page.locator('#try').scrollIntoViewIfNeeded();
      await page.screenshot({ path: join(shots, 'serve-try-1280x800.png'), fullPage: false });
      // The same answer on a phone-sized window.
      await page.setViewportSize({ width: 390, height: 844 });
      await page.locator('#predictions').scrollIntoViewIfNeeded();
      await page.screenshot({ path: join(shots, 'serve-try-390x844.png'), fullPage: false });
    }
    await context.close();
  }
} catch (e) {
  failures++;
  console.log('FAIL ' + (e && e.stack ? e.stack : e));
} finally {
  if (browser) await browser.close().catch(() => {});
  cleanup();
  clearTimeout(watchdog);
}
console.log(passes + ' passed, ' + failures + ' failed');
process.exit(failures === 0 ? 0 : 1);
