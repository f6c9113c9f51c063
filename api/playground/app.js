// The playground: click to segment, through the fleet's public API.
//
// Each object is refined click by click the way SAM's own demos do it: the first
// point of an object asks for three candidates and keeps the best; every later point
// or box sends the object's prompts again together with its previous mask, so SAM
// refines that mask instead of starting over. The first click uploads the image and
// has the worker encode it; later clicks are answered from the worker's cache.

import { ApiError, Fleet } from './fleet.js';
import { cocoDataset, decodeMask, maskPng, zipFiles } from './formats.js';
import { $, state } from './state.js';
import { drawMarks, drawMasks, hover, render, toImage } from './view.js';

const PALETTE = [
  [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
  [140, 86, 75], [227, 119, 194], [188, 189, 34], [23, 190, 207], [255, 187, 120],
];
const DRAG_PX = 5; // a press that moves farther than this (screen pixels) draws a box

const fleet = new Fleet(() => $('apikey').value.trim());

let queue = Promise.resolve(); // one request at a time: each builds on the previous mask

// --- opening an image ---------------------------------------------------------------

async function openImage(file) {
  const bitmap = await createImageBitmap(file); // EXIF orientation applied, as the fleet does
  state.file = file;
  state.image = { name: file.name || 'image', width: bitmap.width, height: bitmap.height, imageId: null };
  state.objects = [];
  state.current = null;
  state.undo = [];
  for (const id of ['image', 'masks', 'marks']) {
    $(id).width = bitmap.width;
    $(id).height = bitmap.height;
  }
  $('image').getContext('2d').drawImage(bitmap, 0, 0);
  $('drop').classList.remove('empty');
  fitStage();
  render();
  status(`${state.image.name}: ${bitmap.width}×${bitmap.height}. Click on something.`);
}

function fitStage() {
  const { width, height } = state.image;
  if (!width) return;
  const room = $('drop').clientWidth - 24;
  const scale = Math.min(1, room / width);
  $('stage').style.width = `${width * scale}px`;
  $('stage').style.height = `${height * scale}px`;
}

// --- prompts --------------------------------------------------------------------------

function currentObject() {
  if (state.current === null || !state.objects.includes(state.current)) {
    const obj = {
      id: state.nextId++, color: PALETTE[state.objects.length % PALETTE.length],
      points: [], labels: [], box: null, last: null, auto: false, bitmap: null,
    };
    state.objects.push(obj);
    state.undo.push({ added: [obj.id] });
    state.current = obj;
    return obj;
  }
  const obj = state.current;
  state.undo.push({ id: obj.id, before: copy(obj) });
  return obj;
}

function copy(obj) {
  return { points: obj.points.slice(), labels: obj.labels.slice(), box: obj.box, last: obj.last, bitmap: obj.bitmap };
}

function addPoint(point, label, t0) {
  const obj = currentObject();
  obj.points.push(point);
  obj.labels.push(label);
  request(obj, t0, label ? 'point' : 'background point');
}

function addBox(box, t0) {
  const obj = currentObject();
  obj.box = box;
  request(obj, t0, 'box');
}

function prompt(obj) {
  const p = {};
  if (obj.points.length) {
    p.points = obj.points.map((xy) => xy.slice());
    p.labels = obj.labels.slice();
  }
  if (obj.box) p.box = obj.box.slice();
  return p;
}

// `before` led to `after` by adding points (the same box): its mask is worth refining.
function extends_(before, after) {
  if (JSON.stringify(before.box || null) !== JSON.stringify(after.box || null)) return false;
  const a = before.points || [];
  const b = after.points || [];
  return a.length <= b.length && a.every((xy, i) => xy[0] === b[i][0] && xy[1] === b[i][1]
    && before.labels[i] === after.labels[i]);
}

function request(obj, t0, what) {
  render();
  queue = queue.then(() => refine(obj, t0, what)).catch(failed);
}

async function refine(obj, t0, what) {
  if (!state.objects.includes(obj)) return; // undone or cleared meanwhile
  const wanted = prompt(obj);
  if (!wanted.points && !wanted.box) return;
  const last = obj.last;
  if (last && JSON.stringify(last.prompt) === JSON.stringify(wanted)) return; // already answered
  fleet.take();
  const uploaded = await ensureUploaded();
  const previous = last && extends_(last.prompt, wanted) ? last : null;
  status(`segmenting (${what})…`);
  let job;
  try {
    job = await fleet.run(jobBody(wanted, previous));
  } catch (error) {
    // The worker no longer holds the previous mask (its image left the cache, or
    // another worker took the job): say so and start the object again.
    if (!(error instanceof ApiError) || error.type !== 'mask_input_gone') throw error;
    job = await fleet.run(jobBody(wanted, null));
    what += ', previous mask gone: started again';
  }
  const httpMs = fleet.take();
  // Answered for prompts the object no longer has (an undo came first): drop it.
  if (!state.objects.includes(obj) || !extends_(wanted, prompt(obj))) return;
  const record = job.result.masks[0]; // best first
  obj.last = { prompt: wanted, jobId: job.id, record, mask: decodeMask(record.segmentation) };
  obj.bitmap = null;
  render();
  logClick(job, what, performance.now() - t0, httpMs, uploaded, record.mask_input === 'job');
}

// The job for one object: its prompts, and the job that gave its previous mask, named
// by reference (the worker keeps it beside the image's embedding). A single click is
// ambiguous: three candidates, the best kept. Later clicks refine that one.
function jobBody(wanted, previous) {
  const p = { ...wanted };
  if (previous) p.mask_input = { job_id: previous.jobId, prompt_index: 0 };
  const single = !previous && !wanted.box && wanted.points.length === 1;
  return { image_id: state.image.imageId, prompts: [p], multimask: single };
}

async function ensureUploaded() {
  if (state.image.imageId) return false;
  status('uploading the image…');
  const info = await fleet.upload(state.file);
  state.image.imageId = info.image_id;
  return true;
}

// --- automatic mode ------------------------------------------------------------------

async function automatic() {
  if (!state.file) return;
  const t0 = performance.now();
  fleet.take();
  const uploaded = await ensureUploaded();
  const auto = {
    points_per_side: clampInt($('grid').value, 1, 64, 16),
    pred_iou_thresh: clampUnit($('iou').value, 0.8),
    stability_score_thresh: clampUnit($('stability').value, 0.95),
  };
  status(`automatic mode, ${auto.points_per_side}×${auto.points_per_side} points…`);
  const job = await fleet.run({ image_id: state.image.imageId, mode: 'auto', auto });
  const added = job.result.masks.map((record, i) => ({
    id: state.nextId++, color: PALETTE[(state.objects.length + i) % PALETTE.length],
    points: [], labels: [], box: null, auto: true, bitmap: null,
    last: { prompt: null, jobId: job.id, record, mask: decodeMask(record.segmentation) },
  }));
  state.objects.push(...added);
  state.undo.push({ added: added.map((o) => o.id) });
  state.current = null;
  render();
  logClick(job, `automatic: ${added.length} masks`, performance.now() - t0, fleet.take(), uploaded, false);
}

function clampInt(text, lo, hi, fallback) {
  const v = Number.parseInt(text, 10);
  return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : fallback;
}

function clampUnit(text, fallback) {
  const v = Number.parseFloat(text);
  return Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : fallback;
}

// --- undo, clear, new object ---------------------------------------------------------

function undo() {
  const step = state.undo.pop();
  if (!step) return;
  if (step.added) {
    state.objects = state.objects.filter((o) => !step.added.includes(o.id));
  } else {
    const obj = state.objects.find((o) => o.id === step.id);
    if (obj) {
      Object.assign(obj, step.before);
      state.current = obj;
      // Undone before its mask came back: ask again for what it has now.
      if (!obj.last || JSON.stringify(obj.last.prompt) !== JSON.stringify(prompt(obj))) {
        request(obj, performance.now(), 'undo');
      }
    }
  }
  render();
}

function clearAll() {
  state.objects = [];
  state.undo = [];
  state.current = null;
  render();
}

// --- timings and status ----------------------------------------------------------------

function logClick(job, what, ms, httpMs, uploaded, previousMask) {
  const t = job.result.timings;
  const workerMs = 1000 * (t.decode_s + t.embed_s + t.predict_s + t.encode_s);
  const entry = {
    n: state.clicks.length + 1, what, ms, httpMs, workerMs, fleetMs: httpMs - workerMs,
    cacheHit: t.embedding_cache_hit === true, previousMask, uploaded, jobId: job.id,
    weights: job.result.model.weights,
  };
  state.clicks.push(entry);
  const item = document.createElement('li');
  item.textContent = `${entry.n}. ${what}: ${ms.toFixed(0)} ms, fleet ${entry.fleetMs.toFixed(1)} ms`
    + `${entry.cacheHit ? ', cached' : ''}${previousMask ? ', previous mask' : ''}`
    + `${uploaded ? ', uploaded' : ''}`;
  $('log').append(item);
  const random = entry.weights === 'random' ? ' Random weights: the masks mean nothing.' : '';
  status(`${what}: mask in ${ms.toFixed(0)} ms (worker ${workerMs.toFixed(0)} ms).${random}`);
}

function status(text, error = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', error);
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    status(`${error.message}. Enter an API key above.`, true);
    $('apikey').focus();
  } else {
    status(`error: ${error.message}`, true);
  }
  console.error(error);
}

// --- downloads -------------------------------------------------------------------------

function stem() {
  return state.image.name.replace(/\.[^.]*$/, '') || 'image';
}

function save(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

function answered() {
  return state.objects.filter((o) => o.last);
}

function downloadCoco() {
  const dataset = cocoDataset(state.image, answered());
  save(new Blob([JSON.stringify(dataset)], { type: 'application/json' }), `${stem()}.coco.json`);
}

async function downloadPngs() {
  const { width, height } = state.image;
  const files = [];
  for (const [i, obj] of answered().entries()) {
    files.push({ name: `${stem()}-${String(i + 1).padStart(3, '0')}.png`, bytes: await maskPng(obj.last.mask, width, height) });
  }
  save(zipFiles(files), `${stem()}.masks.zip`);
}

// --- wiring ------------------------------------------------------------------------------

function wire() {
  const marks = $('marks');
  let press = null;
  marks.addEventListener('contextmenu', (e) => e.preventDefault());
  marks.addEventListener('pointerdown', (e) => {
    if (!state.file) return;
    press = { x: e.clientX, y: e.clientY, at: toImage(e), button: e.button, alt: e.altKey, drag: false };
    marks.setPointerCapture(e.pointerId);
  });
  marks.addEventListener('pointermove', (e) => {
    if (!press) {
      hover(e);
      return;
    }
    if (press.button === 0 && Math.hypot(e.clientX - press.x, e.clientY - press.y) > DRAG_PX) press.drag = true;
    if (press.drag) drawMarks(boxOf(press.at, toImage(e)));
  });
  marks.addEventListener('pointerup', (e) => {
    const p = press;
    press = null;
    if (!p) return;
    const t0 = performance.now();
    if (p.drag) {
      const box = boxOf(p.at, toImage(e));
      if (box[2] > box[0] && box[3] > box[1]) addBox(box, t0);
      else drawMarks(null);
    } else {
      addPoint(p.at, p.button === 2 || p.alt ? 0 : 1, t0);
    }
  });
  marks.addEventListener('pointerleave', () => { $('tip').hidden = true; });

  $('file').addEventListener('change', (e) => { if (e.target.files[0]) openImage(e.target.files[0]).catch(failed); });
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const file = e.dataTransfer.files[0];
    if (file) openImage(file).catch(failed);
  });
  $('new-object').addEventListener('click', () => { state.current = null; render(); });
  $('undo').addEventListener('click', undo);
  $('clear').addEventListener('click', clearAll);
  $('auto').addEventListener('click', () => { queue = queue.then(automatic).catch(failed); });
  $('opacity').addEventListener('input', drawMasks);
  $('download-coco').addEventListener('click', downloadCoco);
  $('download-png').addEventListener('click', () => downloadPngs().catch(failed));
  $('apikey').value = sessionStorage.getItem('sam2fleet-api-key') || '';
  $('apikey').addEventListener('change', () => sessionStorage.setItem('sam2fleet-api-key', $('apikey').value));
  window.addEventListener('resize', () => { fitStage(); drawMarks(null); });
  document.addEventListener('keydown', (e) => {
    if (e.target instanceof HTMLInputElement) return;
    if ((e.ctrlKey || e.metaKey) && e.key === 'z') undo();
    else if (e.key === 'n' || e.key === 'Escape') { state.current = null; render(); }
  });
}

function boxOf([x1, y1], [x2, y2]) {
  return [Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2), Math.max(y1, y2)];
}

wire();
// For the browser test and the curious: the page's state, and a promise for the
// requests in flight.
window.playground = { state, idle: () => queue };
