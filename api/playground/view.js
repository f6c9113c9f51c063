// Drawing the page: masks, prompts, the objects list, the score under the pointer.

import { maskCanvas } from './formats.js';
import { $, state } from './state.js';

export function render() {
  drawMasks();
  drawMarks(null);
  listObjects();
}

export function drawMasks() {
  const canvas = $('masks');
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = Number($('opacity').value);
  for (const obj of state.objects) {
    if (!obj.last) continue;
    if (!obj.bitmap) obj.bitmap = maskCanvas(obj.last.mask, state.image.width, state.image.height, obj.color);
    ctx.drawImage(obj.bitmap, 0, 0);
  }
  ctx.globalAlpha = 1;
}

export function drawMarks(dragBox) {
  const canvas = $('marks');
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const unit = state.image.width / Math.max(1, canvas.getBoundingClientRect().width); // image px per screen px
  ctx.lineWidth = 2 * unit;
  for (const obj of state.objects) {
    const colour = `rgb(${obj.color.join(',')})`;
    if (obj.box) {
      ctx.strokeStyle = colour;
      const [x1, y1, x2, y2] = obj.box;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    }
    obj.points.forEach(([x, y], i) => {
      const r = (obj === state.current ? 6 : 4.5) * unit;
      ctx.beginPath();
      ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fillStyle = obj.labels[i] ? colour : '#fff';
      ctx.strokeStyle = obj.labels[i] ? '#fff' : colour;
      ctx.fill();
      ctx.stroke();
      if (!obj.labels[i]) { // background: a minus sign
        ctx.beginPath();
        ctx.moveTo(x - r / 2, y);
        ctx.lineTo(x + r / 2, y);
        ctx.stroke();
      }
    });
  }
  if (dragBox) {
    ctx.setLineDash([6 * unit, 4 * unit]);
    ctx.strokeStyle = '#fff';
    const [x1, y1, x2, y2] = dragBox;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.setLineDash([]);
  }
}

function listObjects() {
  const list = $('objects');
  list.replaceChildren(...state.objects.map((obj) => {
    const item = document.createElement('li');
    item.className = obj === state.current ? 'current' : '';
    item.dataset.id = obj.id;
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = `rgb(${obj.color.join(',')})`;
    const what = obj.auto ? 'automatic' : `${obj.points.length} pt${obj.box ? ' + box' : ''}`;
    const score = obj.last ? `score ${obj.last.record.predicted_iou.toFixed(3)}` : 'waiting…';
    item.append(swatch, `#${obj.id} ${what}, ${score}`);
    item.addEventListener('click', () => { state.current = obj; render(); });
    return item;
  }));
}

function objectAt([x, y]) {
  const i = Math.min(state.image.height - 1, Math.floor(y)) * state.image.width
    + Math.min(state.image.width - 1, Math.floor(x));
  for (let k = state.objects.length - 1; k >= 0; k--) {
    const obj = state.objects[k];
    if (obj.last && obj.last.mask[i]) return obj;
  }
  return null;
}

export function hover(event) {
  const tip = $('tip');
  const obj = state.file ? objectAt(toImage(event)) : null;
  if (!obj) {
    tip.hidden = true;
    return;
  }
  const rec = obj.last.record;
  tip.textContent = `#${obj.id} score ${rec.predicted_iou.toFixed(3)}`
    + (rec.stability_score !== undefined ? `, stability ${rec.stability_score.toFixed(3)}` : '');
  tip.style.left = `${event.clientX + 12}px`;
  tip.style.top = `${event.clientY + 12}px`;
  tip.hidden = false;
}

// Image pixel coordinates of a pointer event, clamped to the image, to 0.1 px.
export function toImage(event) {
  const rect = $('marks').getBoundingClientRect();
  const x = ((event.clientX - rect.left) * state.image.width) / rect.width;
  const y = ((event.clientY - rect.top) * state.image.height) / rect.height;
  return [clamp(x, 0, state.image.width), clamp(y, 0, state.image.height)];
}

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, Math.round(v * 10) / 10));
}
