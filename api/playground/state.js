// What the page holds: the image, its objects, the undo steps and the click log.

export const $ = (id) => document.getElementById(id);

export const state = {
  file: null, // the image as opened
  image: { name: '', width: 0, height: 0, imageId: null },
  objects: [], // {id, color, points, labels, box, last, auto, bitmap}
  current: null, // the object clicks add to; null: the next click starts one
  undo: [], // {added: [ids]} or {id, before: copy of the object}
  clicks: [], // one entry per answered click: shown in the log, read by the browser test
  nextId: 1,
};
