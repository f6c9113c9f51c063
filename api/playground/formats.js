// What the page reads and writes: COCO RLE masks, a COCO dataset, PNG masks in a zip.

// The counts of a COCO compressed RLE string (pycocotools' rleFrString): each count
// is written in 5-bit groups, six bits per character from '0', the sixth bit saying
// "more follows"; from the third count on, the difference to the count two before.
export function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let value = 0;
    let k = 0;
    let more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      value |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10) && 5 * k < 32) value |= -1 << (5 * k); // sign-extend
    }
    if (counts.length > 2) value += counts[counts.length - 2];
    counts.push(value);
  }
  return counts;
}

// A result's segmentation (COCO RLE) as a row-major Uint8Array of 0/1.
export function decodeMask(segmentation) {
  const [height, width] = segmentation.size;
  const mask = new Uint8Array(height * width);
  let index = 0; // column-major, as COCO stores it
  let on = false;
  for (const count of rleCounts(segmentation.counts)) {
    if (on) {
      for (let i = index; i < index + count; i++) {
        mask[(i % height) * width + Math.floor(i / height)] = 1;
      }
    }
    index += count;
    on = !on;
  }
  return mask;
}

// The objects as a COCO dataset (one image, one category): pycocotools loads it.
export function cocoDataset(image, objects) {
  const annotations = objects.map((obj, i) => {
    const rec = obj.last.record;
    const ann = {
      id: i + 1,
      image_id: 1,
      category_id: 1,
      segmentation: rec.segmentation,
      area: rec.area,
      bbox: rec.bbox,
      score: rec.predicted_iou,
      iscrowd: 0,
      predicted_iou: rec.predicted_iou,
      stability_score: rec.stability_score,
      job_id: obj.last.jobId,
    };
    if (!obj.auto) ann.prompt = obj.last.prompt;
    return ann;
  });
  return {
    info: { description: 'sam2fleet playground', date_created: new Date().toISOString() },
    images: [{ id: 1, file_name: image.name, width: image.width, height: image.height,
      image_id: image.imageId }],
    annotations,
    categories: [{ id: 1, name: 'object' }],
  };
}

let crcTable = null;

function crc32(bytes) {
  if (crcTable === null) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const b of bytes) crc = crcTable[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// A zip archive of [{name, bytes}], stored without compression (PNGs are compressed
// already): a local header before each file, then the central directory.
export function zipFiles(files) {
  const encoder = new TextEncoder();
  const parts = [];
  const central = [];
  let offset = 0;
  for (const file of files) {
    const name = encoder.encode(file.name);
    const crc = crc32(file.bytes);
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, 20, true); // version needed: 2.0
    local.setUint32(14, crc, true);
    local.setUint32(18, file.bytes.length, true);
    local.setUint32(22, file.bytes.length, true);
    local.setUint16(26, name.length, true);
    parts.push(local, name, file.bytes);
    const entry = new DataView(new ArrayBuffer(46));
    entry.setUint32(0, 0x02014b50, true);
    entry.setUint16(4, 20, true);
    entry.setUint16(6, 20, true);
    entry.setUint32(16, crc, true);
    entry.setUint32(20, file.bytes.length, true);
    entry.setUint32(24, file.bytes.length, true);
    entry.setUint16(28, name.length, true);
    entry.setUint32(42, offset, true);
    central.push(entry, name);
    offset += 30 + name.length + file.bytes.length;
  }
  const size = central.reduce((n, part) => n + part.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, files.length, true);
  end.setUint16(10, files.length, true);
  end.setUint32(12, size, true);
  end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: 'application/zip' });
}

// A canvas of the mask's size: colour `rgb` where the mask is, `background` (RGBA)
// elsewhere, transparent when that is null.
export function maskCanvas(mask, width, height, rgb, background = null) {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  const pixels = ctx.createImageData(width, height);
  const on = [...rgb, 255];
  for (let i = 0; i < mask.length; i++) {
    const colour = mask[i] ? on : background;
    if (colour) pixels.data.set(colour, 4 * i);
  }
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}

// One object's mask as a PNG: white where the mask is, black elsewhere.
export async function maskPng(mask, width, height) {
  const canvas = maskCanvas(mask, width, height, [255, 255, 255], [0, 0, 0, 255]);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
  return new Uint8Array(await blob.arrayBuffer());
}
