// The espresso model catalog: search, model card and "try it", talking only to
//   GET  api/v1/models?q=&task=&license=&max_bytes=&min_accuracy=&sort=&cursor=
//   GET  api/v1/models/NAME
//   POST api/v1/models/NAME/classify[?version=V&top=5]   (body: the image bytes)
// through relative URLs, so any server of those APIs can serve this page (docs/web.md).
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const api = 'api/v1/models';

  // ---- helpers -------------------------------------------------------------------------------------
  const el = (tag, props = {}, children = []) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  };
  const bytes = (n) => {
    if (n === undefined || n === null) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    let v = Number(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[i];
  };
  const count = (n) => (n === undefined || n === null ? '—' : Number(n).toLocaleString('en-US'));
  const si = (n, unit) => {
    if (n === undefined || n === null) return '—';
    const prefixes = [['G', 1e9], ['M', 1e6], ['k', 1e3]];
    for (const [p, f] of prefixes) if (n >= f) return (n / f).toFixed(2) + ' ' + p + unit;
    return n + ' ' + unit;
  };
  // Two decimals; a value below 1 never shows as 100 %, nor one above 0 as 0 %.
  const percent = (v) => {
    if (v > 0 && v < 0.00005) return '< 0.01 %';
    const p = Math.round(v * 10000) / 100;
    return (p >= 100 && v < 1 ? '> 99.99' : p.toFixed(2)) + ' %';
  };
  // Accuracy metrics are the ones search filters on: keys containing "acc" or "top1"; the part before
  // the first '_' names the dataset ("mnist_top1" -> mnist).
  const accuracies = (metrics) => Object.entries(metrics || {})
    .filter(([key, value]) => typeof value === 'number' && /acc|top1/i.test(key))
    .map(([key, value]) => ({ key, value, dataset: key.includes('_') ? key.slice(0, key.indexOf('_')) : key }));
  const errorText = async (response) => {
    try {
      const body = await response.json();
      const e = body.errors && body.errors[0];
      if (e) return (e.field ? e.field + ': ' : '') + e.message;
      if (body.error) return typeof body.error === 'string' ? body.error : JSON.stringify(body.error);
    } catch (_) { /* not JSON */ }
    return 'the server answered ' + response.status;
  };
  const modelPath = (name) => name.split('/').map(encodeURIComponent).join('/');

  // ---- search ----------------------------------------------------------------------------------------
  const form = $('search-form');
  const results = $('results');
  let nextCursor = null;
  let lastQuery = '';

  const queryFromForm = () => {
    const params = new URLSearchParams();
    for (const field of ['q', 'task', 'max_bytes', 'min_accuracy', 'license', 'sort']) {
      const value = form.elements[field].value.trim();
      if (value) params.set(field, value);
    }
    return params;
  };
  const formFromQuery = (params) => {
    for (const field of ['q', 'task', 'max_bytes', 'min_accuracy', 'license', 'sort']) {
      const control = form.elements[field];
      const value = params.get(field) || '';
      if (control.tagName === 'SELECT' && value && ![...control.options].some((o) => o.value === value)) {
        control.append(el('option', { value, text: value }));
      }
      control.value = value;
    }
  };

  const resultItem = (m) => {
    const chips = el('ul', { class: 'chips', 'aria-label': 'Facts' });
    if (m.task) chips.append(el('li', { text: m.task }));
    chips.append(el('li', { text: bytes(m.size_bytes) }));
    for (const a of accuracies(m.metrics).slice(0, 1)) chips.append(el('li', { text: percent(a.value) + ' on ' + a.dataset }));
    if (m.license) chips.append(el('li', { text: m.license }));
    if (m.params) chips.append(el('li', { text: count(m.params) + ' parameters' }));
    const link = el('a', { class: 'result', href: '#/model/' + modelPath(m.name) }, [
      el('span', { class: 'result-name' }, [m.name, el('span', { class: 'result-version', text: m.version ? ' · ' + m.version : '' })]),
      el('p', { class: 'result-description', text: m.description || 'No description.' }),
      chips,
    ]);
    return el('li', {}, [link]);
  };

  const search = async (params, append) => {
    const status = $('result-status');
    status.textContent = 'Searching…';
    if (!append) results.replaceChildren();
    try {
      const response = await fetch(api + '?' + params.toString());
      if (!response.ok) throw new Error(await errorText(response));
      const body = await response.json();
      for (const m of body.models || []) results.append(resultItem(m));
      nextCursor = body.next_cursor || null;
      $('more').hidden = !nextCursor;
      const n = results.children.length;
      status.textContent = n === 0 ? 'No model matches.' : n + (n === 1 ? ' model' : ' models') + (nextCursor ? ' so far' : '') + '.';
    } catch (e) {
      status.textContent = 'Search failed: ' + e.message;
    }
  };

  // The task and licence filters offer what the catalog holds.
  const fillFilters = async () => {
    try {
      const response = await fetch(api + '?limit=100&sort=name');
      if (!response.ok) return;
      const body = await response.json();
      const add = (select, values) => {
        const have = new Set([...select.options].map((o) => o.value));
        for (const v of [...new Set(values)].sort()) if (v && !have.has(v)) select.append(el('option', { value: v, text: v }));
      };
      add($('task'), (body.models || []).map((m) => m.task));
      add($('license'), (body.models || []).map((m) => m.license));
    } catch (_) { /* the filters keep "any" */ }
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const params = queryFromForm();
    const hash = '#/' + (params.toString() ? '?' + params.toString() : '');
    if (location.hash === hash) search(params, false); else location.hash = hash;
  });
  for (const select of form.querySelectorAll('select')) {
    select.addEventListener('change', () => form.requestSubmit());
  }
  $('more').addEventListener('click', () => {
    const params = new URLSearchParams(lastQuery);
    params.set('cursor', nextCursor);
    search(params, true);
  });

  // ---- the model card ------------------------------------------------------------------------------
  let current = null;  // the model answer shown

  const fact = (list, term, value) => {
    if (value === undefined || value === null || value === '') return;
    list.append(el('dt', { text: term }), el('dd', {}, [value]));
  };
  const preprocessingText = (p, inputs) => {
    if (!p) return null;
    const parts = [];
    const size = p.size && p.size.length === 2 ? p.size : (inputs && inputs[0] && inputs[0].shape.length === 4 ? inputs[0].shape.slice(2) : null);
    if (size) parts.push('resize to ' + size[0] + '×' + size[1]);
    if (p.mean && p.mean.length) parts.push('subtract mean ' + p.mean.join(', '));
    if (p.scale !== undefined && p.scale !== 1) parts.push('scale by ' + p.scale);
    parts.push((p.channel_order || 'bgr').toUpperCase() + ' channel order');
    return parts.join(', ');
  };
  const signatureNode = (s) => {
    if (!s) return el('span', { class: 'signature-unsigned', text: 'not reported by this server' });
    if (s.status === 'verified') return el('span', { class: 'signature-verified', text: '✓ signature verified (key ' + s.key_id + ')' });
    if (s.status === 'invalid') return el('span', { class: 'signature-invalid', text: '✗ signature does not verify' + (s.message ? ': ' + s.message : '') });
    return el('span', { class: 'signature-unsigned', text: 'unsigned' });
  };
  const pullLine = (name, version) => 'espresso pull ' + location.host + '/' + name + (version ? ':' + version : '');

  const showCard = (model) => {
    current = model;
    const card = model.card || {};
    document.title = model.name + ' · espresso models';
    $('model-title').textContent = model.name;
    $('model-description').textContent = card.description || 'No description.';
    const versionSelect = $('version');
    versionSelect.replaceChildren();
    const versions = model.versions || [];
    for (const v of versions) versionSelect.append(el('option', { value: v.version, text: v.version + (v.version === model.latest ? ' (latest)' : '') }));
    if (!versions.length && model.latest) versionSelect.append(el('option', { value: model.latest, text: model.latest }));
    versionSelect.value = model.latest || '';
    // Only a registry (store serve) reports signatures; `espresso serve` has nothing to pull.
    $('pull').hidden = !('signature' in model);
    $('pull-line').value = pullLine(model.name, versionSelect.value);
    $('copy-status').textContent = '';

    const facts = $('facts');
    facts.replaceChildren();
    fact(facts, 'Task', card.task);
    fact(facts, 'Licence', card.license);
    fact(facts, 'Author', card.author);
    const acc = accuracies(card.metrics);
    fact(facts, 'Accuracy', acc.length ? acc.map((a) => percent(a.value) + ' (' + a.key + ', dataset ' + a.dataset + ')').join('; ') : null);
    for (const [key, value] of Object.entries(card.metrics || {})) {
      if (!acc.some((a) => a.key === key)) fact(facts, key, String(value));
    }
    fact(facts, 'Size', bytes(card.size_bytes));
    fact(facts, 'Parameters', count(card.params));
    fact(facts, 'FLOPs per image', card.flops === null || card.flops === undefined ? 'not planned' : si(card.flops, 'FLOP'));
    fact(facts, 'Layers', card.layers !== undefined ? String(card.layers) : null);
    fact(facts, 'Input', (card.inputs || []).map((i) => i.name + ' N×' + i.shape.slice(1).join('×')).join(', '));
    fact(facts, 'Preprocessing', preprocessingText(card.preprocessing, card.inputs));
    fact(facts, 'Labels', card.labels && card.labels.length ? count(card.labels.length) + ' classes' : 'none');
    fact(facts, 'Signature', signatureNode(model.signature));
    fact(facts, 'Source format', card.source_format);
    fact(facts, 'Created', card.created);
    fact(facts, 'Digest', model.digest);

    const labels = card.labels || [];
    $('labels-panel').hidden = labels.length === 0;
    $('labels-summary').textContent = 'Show the ' + labels.length + ' labels';
    $('labels').replaceChildren(...labels.map((l) => el('li', { text: l })));

    const rows = $('versions');
    rows.replaceChildren();
    for (const v of versions) {
      const when = v.updated ? new Date(v.updated * 1000).toISOString().slice(0, 16).replace('T', ' ') + ' UTC' : '—';
      rows.append(el('tr', {}, [
        el('td', { text: v.version }), el('td', { text: when }), el('td', {}, [signatureNode(v.signature)]),
        el('td', { class: 'digest', text: v.digest }),
      ]));
    }
    const classifier = !card.task || card.task === 'classification' || card.task === 'image-classification';
    $('try').hidden = !classifier;
    resetTry();
    $('card').hidden = false;
  };

  const openModel = async (name) => {
    $('card').hidden = true;
    $('model-error').hidden = true;
    try {
      const response = await fetch(api + '/' + modelPath(name));
      if (!response.ok) throw new Error(await errorText(response));
      showCard(await response.json());
      $('model-title').setAttribute('tabindex', '-1');
      $('model-title').focus();
    } catch (e) {
      $('model-error').textContent = 'Cannot show ' + name + ': ' + e.message;
      $('model-error').hidden = false;
    }
  };

  $('version').addEventListener('change', () => {
    if (current) $('pull-line').value = pullLine(current.name, $('version').value);
  });
  $('copy').addEventListener('click', async () => {
    const line = $('pull-line');
    let done = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(line.value);
        done = true;
      }
    } catch (_) { /* fall back below */ }
    if (!done) {
      line.select();
      try { done = document.execCommand('copy'); } catch (_) { done = false; }
    }
    $('copy-status').textContent = done ? 'Copied to the clipboard.' : 'Select the line and copy it.';
  });

  // ---- try it --------------------------------------------------------------------------------------
  let stream = null;
  const stopCamera = () => {
    if (stream) for (const track of stream.getTracks()) track.stop();
    stream = null;
    $('video').hidden = true;
    $('snap').hidden = true;
  };
  const resetTry = () => {
    stopCamera();
    $('predictions').hidden = true;
    $('predictions').replaceChildren();
    $('try-status').textContent = '';
    $('try-error').hidden = true;
    $('preview').hidden = true;
    $('image').value = '';
    $('camera').hidden = !(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  };

  const classify = async (blob, description) => {
    if (!current) return;
    const preview = $('preview');
    if (preview.src && preview.src.startsWith('blob:')) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(blob);
    preview.alt = 'The image sent: ' + description;
    preview.hidden = false;
    $('try-error').hidden = true;
    $('predictions').hidden = true;
    $('try-status').textContent = 'Classifying…';
    const params = new URLSearchParams({ top: '5' });
    if ($('version').value) params.set('version', $('version').value);
    const started = performance.now();
    try {
      const response = await fetch(api + '/' + modelPath(current.name) + '/classify?' + params.toString(), {
        method: 'POST',
        headers: { 'Content-Type': blob.type || 'application/octet-stream' },
        body: blob,
      });
      if (!response.ok) throw new Error(await errorText(response));
      const answer = await response.json();
      const list = $('predictions');
      list.replaceChildren();
      (answer.top || []).forEach((c, i) => {
        const name = c.label || 'class ' + c.index;
        const bar = el('span');
        bar.style.width = Math.max(0, Math.min(100, c.probability * 100)).toFixed(1) + '%';
        list.append(el('li', { class: i === 0 ? 'best' : '' }, [
          el('div', { class: 'prediction-row' }, [
            el('span', { class: 'prediction-label', text: name }),
            el('span', { class: 'prediction-value', text: percent(c.probability) }),
          ]),
          el('div', { class: 'bar', 'aria-hidden': 'true' }, [bar]),
        ]));
      });
      list.hidden = false;
      const server = typeof answer.milliseconds === 'number' ? answer.milliseconds.toFixed(1) + ' ms on the server' : '';
      const round = (performance.now() - started).toFixed(0) + ' ms round trip';
      $('try-status').textContent = 'Top ' + (answer.top || []).length + ' of ' + description + ': ' +
        (server ? server + ' (' + round + ')' : round) + (answer.device ? ', ' + answer.device : '') + '.';
    } catch (e) {
      $('try-status').textContent = '';
      $('try-error').textContent = 'Could not classify ' + description + ': ' + e.message;
      $('try-error').hidden = false;
    }
  };

  $('image').addEventListener('change', () => {
    const file = $('image').files[0];
    if (file) classify(file, file.name);
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    const file = event.dataTransfer.files[0];
    if (file) classify(file, file.name);
  });
  $('camera').addEventListener('click', async () => {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
      const video = $('video');
      video.srcObject = stream;
      video.hidden = false;
      await video.play();
      $('snap').hidden = false;
      $('snap').focus();
    } catch (e) {
      $('try-error').textContent = 'The camera is not available: ' + e.message;
      $('try-error').hidden = false;
    }
  });
  $('snap').addEventListener('click', () => {
    const video = $('video');
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext('2d').drawImage(video, 0, 0);
    canvas.toBlob((blob) => { if (blob) classify(blob, 'the camera picture'); }, 'image/png');
    stopCamera();
  });

  // ---- routing: #/?QUERY (search) and #/model/NAME (card) ---------------------------------------------
  const route = () => {
    const hash = location.hash.replace(/^#/, '') || '/';
    if (hash.startsWith('/model/')) {
      $('search-view').hidden = true;
      $('model-view').hidden = false;
      openModel(hash.slice('/model/'.length).split('/').map(decodeURIComponent).join('/'));
      return;
    }
    stopCamera();
    current = null;
    document.title = 'espresso models';
    $('model-view').hidden = true;
    $('search-view').hidden = false;
    const query = hash.includes('?') ? hash.slice(hash.indexOf('?') + 1) : '';
    lastQuery = query;
    const params = new URLSearchParams(query);
    formFromQuery(params);
    search(params, false);
  };
  window.addEventListener('hashchange', route);
  fillFilters().then(route);
})();
