// The viewer: axial, coronal and sagittal planes of one series on canvases, raw int16 HU from
// the server (axial slices one file at a time; coronal, sagittal and slab MIP images cut by the
// server from the series volume), window/level applied here through a lookup table, neighbours
// prefetched, a linked cross-hair, each plane drawn in true proportions from the series
// geometry; findings, heat overlay and feedback.
import { api, failure, fmt, t } from "./common.js";

const PRESETS = { lung: [1500, -600], mediastinum: [350, 40], bone: [2000, 500] };
const SLABS_MM = [0, 5, 10, 15];
const PREFETCH_AHEAD = 24; // images fetched ahead in the scrolling direction
const PREFETCH_BEHIND = 6;
const MAX_IN_FLIGHT = 6;
const CLICK_PX = 4; // a press that moves less than this is a click (cross-hair), not a drag

const root = document.getElementById("viewer");
const studyUid = root.dataset.study;
const base = `/ui/api/studies/${encodeURIComponent(studyUid)}`;
const canvas = document.getElementById("image");
const slider = document.getElementById("slice-slider");
const infoTL = document.getElementById("info-tl");
const infoBR = document.getElementById("info-br");

const state = {
  meta: null, k: 0, j: 0, i: 0, active: "axial", layout: "one", slab: 0,
  width: 1500, level: -600, showFindings: true, showHeat: false, addMode: false,
  review: null, cursor: null, tool: null, measurements: [], finding: -1,
};
/** Per plane: its canvas, its view (zoom, pan) and its image geometry (set from the metadata). */
const planes = {
  axial: { canvas, view: { zoom: 1, panX: 0, panY: 0 } },
  coronal: { canvas: document.getElementById("image-coronal"), view: { zoom: 1, panX: 0, panY: 0 } },
  sagittal: { canvas: document.getElementById("image-sagittal"), view: { zoom: 1, panX: 0, panY: 0 } },
};
const images = new Map();
const pending = new Map();
let inFlight = 0;
const queue = [];
let lut = null;
export const stats = { firstImageMs: null, draws: 0, firstImageMsByPlane: {} };

/** Each plane's geometry: image columns and rows, pixel size in mm, the voxel axis it is
 * perpendicular to, and the voxel (i, j, k) shown at image column x, row y of image n.
 * Coronal and sagittal rows arrive in slice order and are turned head up here when the
 * slices run towards the head. */
function setGeometry() {
  const [nk, nj, ni] = state.meta.shape_kji;
  const [sx, sy, sz] = state.meta.spacing_mm;
  const headUp = state.meta.affine_lps[2][2] > 0; // k runs towards the head (LPS +z)
  const row = (y) => (headUp ? nk - 1 - y : y);
  Object.assign(planes.axial, {
    cols: ni, rows: nj, px: sx, py: sy, axis: 2, spacing: sz, n: nk, flip: false,
    voxel: (x, y, n) => [x, y, n], at: ([i, j]) => [i, j],
  });
  Object.assign(planes.coronal, {
    cols: ni, rows: nk, px: sx, py: sz, axis: 1, spacing: sy, n: nj, flip: headUp,
    voxel: (x, y, n) => [x, n, row(y)], at: ([i, , k]) => [i, row(k)],
  });
  Object.assign(planes.sagittal, {
    cols: nj, rows: nk, px: sy, py: sz, axis: 0, spacing: sx, n: ni, flip: headUp,
    voxel: (x, y, n) => [n, x, row(y)], at: ([, j, k]) => [j, row(k)],
  });
  for (const plane of Object.values(planes)) {
    plane.offscreen = new OffscreenCanvas(plane.cols, plane.rows);
    plane.imageData = new ImageData(plane.cols, plane.rows);
  }
}

/** The index shown in `name` (axial k, coronal j, sagittal i). */
function indexOf(name) {
  return { axial: state.k, coronal: state.j, sagittal: state.i }[name];
}

function setIndexOf(name, n) {
  const key = { axial: "k", coronal: "j", sagittal: "i" }[name];
  state[key] = Math.max(0, Math.min(planes[name].n - 1, n));
  return state[key];
}

function imageKey(name, n) {
  return `${name}|${n}|${state.slab}`;
}

function imageUrl(name, n) {
  if (name === "axial" && !state.slab) return `${base}/slices/${n}`;
  const slab = state.slab ? `?slab_mm=${state.slab}` : "";
  return `${base}/planes/${name}/${n}${slab}`;
}

/** Image n of plane `name` (at the current slab); `urgent` (on screen) goes before every
 * queued prefetch. */
function fetchImage(name, n, urgent = false) {
  const key = imageKey(name, n);
  if (images.has(key)) return Promise.resolve(images.get(key));
  if (pending.has(key)) {
    const at = queue.findIndex((job) => job.key === key);
    if (urgent && at > 0) queue.unshift(...queue.splice(at, 1));
    return pending.get(key);
  }
  const promise = new Promise((resolve, reject) => {
    const job = { key, name, url: imageUrl(name, n), resolve, reject };
    if (urgent) queue.unshift(job);
    else queue.push(job);
  });
  pending.set(key, promise);
  pump();
  return promise;
}

function pump() {
  while (inFlight < MAX_IN_FLIGHT && queue.length) {
    const { key, name, url, resolve, reject } = queue.shift();
    inFlight += 1;
    fetch(url, { credentials: "same-origin" })
      .then(async (r) => (r.ok ? r.arrayBuffer() : Promise.reject(await failure(r))))
      .then((buffer) => {
        const hu = headUp(name, new Int16Array(buffer));
        images.set(key, hu);
        resolve(hu);
      })
      .catch(reject)
      .finally(() => {
        inFlight -= 1;
        pending.delete(key);
        pump();
      });
  }
}

/** A coronal or sagittal image with its rows reversed when the plane is drawn head up. */
function headUp(name, hu) {
  const plane = planes[name];
  if (!plane.flip) return hu;
  const out = new Int16Array(hu.length);
  for (let y = 0; y < plane.rows; y += 1) {
    out.set(hu.subarray(y * plane.cols, (y + 1) * plane.cols), (plane.rows - 1 - y) * plane.cols);
  }
  return out;
}

/** Queue the neighbours of image n of `name`, mostly in the scrolling direction (`step`). */
function prefetch(name, n, step) {
  const last = planes[name].n - 1;
  for (let d = 1; d <= PREFETCH_AHEAD; d += 1) {
    for (const m of d <= PREFETCH_BEHIND ? [n + step * d, n - step * d] : [n + step * d]) {
      const key = imageKey(name, m);
      if (m >= 0 && m <= last && !images.has(key) && !pending.has(key)) {
        fetchImage(name, m).catch(() => {});
      }
    }
  }
}

function buildLut() {
  lut = new Uint32Array(65536);
  const low = state.level - state.width / 2;
  for (let hu = -32768; hu < 32768; hu += 1) {
    let v = Math.round(((hu - low) / state.width) * 255);
    v = v < 0 ? 0 : v > 255 ? 255 : v;
    lut[hu + 32768] = 0xff000000 | (v << 16) | (v << 8) | v;
  }
}

function render(plane, hu) {
  const out = new Uint32Array(plane.imageData.data.buffer);
  for (let p = 0; p < hu.length; p += 1) out[p] = lut[hu[p] + 32768];
  plane.offscreen.getContext("2d").putImageData(plane.imageData, 0, 0);
}

/** Where the plane's image lies on its canvas: origin and the size of one pixel, in canvas
 * pixels; each image pixel is as wide and as tall as it is in millimetres. */
function fit(plane) {
  const { cols, rows, px, py, view } = plane;
  const c = plane.canvas;
  const scale = Math.min(c.width / (cols * px), c.height / (rows * py)) * view.zoom;
  const w = cols * px * scale;
  const h = rows * py * scale;
  const x0 = (c.width - w) / 2 + view.panX;
  const y0 = (c.height - h) / 2 + view.panY;
  return { x0, y0, px: px * scale, py: py * scale };
}

function visible(name) {
  return state.layout === "three" || name === state.active;
}

/** Redraw every plane on screen (W/L, overlays and the cross-hair concern them all). */
function draw() {
  for (const name of Object.keys(planes)) if (visible(name)) drawPlane(name);
  drawInfo();
}

function drawPlane(name) {
  const plane = planes[name];
  const hu = images.get(imageKey(name, indexOf(name)));
  if (!hu) return;
  render(plane, hu);
  const g2 = plane.canvas.getContext("2d");
  g2.setTransform(1, 0, 0, 1, 0, 0);
  g2.fillStyle = "#000";
  g2.fillRect(0, 0, plane.canvas.width, plane.canvas.height);
  const g = fit(plane);
  g2.imageSmoothingEnabled = plane.view.zoom < 2;
  g2.drawImage(plane.offscreen, g.x0, g.y0, plane.cols * g.px, plane.rows * g.py);
  if (state.showHeat) drawHeat(name, g2, g);
  if (state.showFindings) drawFindings(name, g2, g);
  if (state.layout === "three") drawCrosshair(name, g2, g);
  drawMeasurements(name, g2, g);
  drawPlaneLabel(name, g2);
  stats.draws += 1;
  if (stats.firstImageMsByPlane[name] === undefined) stats.firstImageMsByPlane[name] = performance.now();
  if (stats.firstImageMs === null) {
    stats.firstImageMs = performance.now();
    performance.mark("basira-first-image");
  }
}

function drawCrosshair(name, g2, g) {
  const [x, y] = planes[name].at([state.i, state.j, state.k]);
  g2.strokeStyle = "rgba(79, 195, 247, 0.8)";
  g2.lineWidth = 1;
  g2.setLineDash([6, 4]);
  g2.beginPath();
  const cx = g.x0 + (x + 0.5) * g.px;
  const cy = g.y0 + (y + 0.5) * g.py;
  g2.moveTo(cx, 0);
  g2.lineTo(cx, planes[name].canvas.height);
  g2.moveTo(0, cy);
  g2.lineTo(planes[name].canvas.width, cy);
  g2.stroke();
  g2.setLineDash([]);
}

function drawPlaneLabel(name, g2) {
  const plane = planes[name];
  g2.direction = "ltr";
  g2.font = "13px system-ui, sans-serif";
  g2.fillStyle = "#fff";
  const slab = state.slab ? ` · ${t("viewer.mip")} ${state.slab} mm` : "";
  const text = `${t(`viewer.plane_${name}`)} ${indexOf(name) + 1}/${plane.n}${slab}`;
  g2.fillText(text, 8, plane.canvas.height - 10);
}

/** The findings whose sphere crosses image n of `name`: centre and in-plane radius. */
function circlesOn(name) {
  const plane = planes[name];
  const n = indexOf(name);
  const circles = [];
  for (const f of allFindings()) {
    const d = Math.abs(n - f.center_ijk[plane.axis]) * plane.spacing;
    if (d > f.radius_mm) continue;
    const [x, y] = plane.at(f.center_ijk);
    const r = Math.sqrt(f.radius_mm ** 2 - d ** 2);
    circles.push({ f, r, x, y, central: Math.round(f.center_ijk[plane.axis]) === n });
  }
  return circles;
}

function drawFindings(name, g2, g) {
  const { px, py } = planes[name];
  g2.lineWidth = 2;
  g2.direction = "ltr"; // labels are numbers and ids: never mirrored in Arabic
  g2.font = "13px system-ui, sans-serif";
  for (const { f, r, x: fx, y: fy, central } of circlesOn(name)) {
    const x = g.x0 + (fx + 0.5) * g.px;
    const y = g.y0 + (fy + 0.5) * g.py;
    const verdict = verdictOf(f);
    g2.strokeStyle = f.added ? "#4fc3f7" : verdict === "reject" ? "#9e9e9e" : "#ffb300";
    g2.setLineDash(central ? [] : [4, 3]);
    g2.beginPath();
    g2.ellipse(x, y, Math.max(3, (r / px) * g.px + 3), Math.max(3, (r / py) * g.py + 3), 0, 0, 2 * Math.PI);
    g2.stroke();
    g2.setLineDash([]);
    g2.fillStyle = g2.strokeStyle;
    const label = f.added ? t("viewer.added") : `#${f.id} ${fmt.percent(f.confidence)}`;
    g2.fillText(label, x + (r / px) * g.px + 6, y - (r / py) * g.py - 4);
  }
}

function drawHeat(name, g2, g) {
  const { px } = planes[name];
  for (const { f, r, x: fx, y: fy } of circlesOn(name)) {
    if (f.added) continue;
    const x = g.x0 + (fx + 0.5) * g.px;
    const y = g.y0 + (fy + 0.5) * g.py;
    const radius = Math.max(4, (r / px) * g.px * 1.6);
    const grad = g2.createRadialGradient(x, y, 0, x, y, radius);
    grad.addColorStop(0, `rgba(255,40,0,${0.75 * f.confidence})`);
    grad.addColorStop(0.6, `rgba(255,200,0,${0.35 * f.confidence})`);
    grad.addColorStop(1, "rgba(255,255,0,0)");
    g2.fillStyle = grad;
    g2.fillRect(x - radius, y - radius, 2 * radius, 2 * radius);
  }
}

/** The HU at image column x, row y of the image `name` shows (null while it loads). */
export function huAt(name, x, y) {
  const hu = images.get(imageKey(name, indexOf(name)));
  return hu ? hu[y * planes[name].cols + x] : null;
}

/** LPS millimetres of voxel (i, j, k). */
export function toLps(i, j, k) {
  const a = state.meta.affine_lps;
  return [0, 1, 2].map((r) => a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3]);
}

function drawInfo() {
  const name = state.active;
  const plane = planes[name];
  const n = indexOf(name);
  const h = state.meta.header;
  infoTL.textContent = [h.PatientName, h.PatientID, fmt.dicomDate(h.StudyDate)]
    .filter(Boolean).join(" · ");
  const ijk = [state.i, state.j, state.k];
  ijk[plane.axis] = n;
  const mm = toLps(...ijk)[plane.axis]; // the LPS axis along the plane's normal
  let cursor = "";
  if (state.cursor) {
    const { i, j, k, hu } = state.cursor;
    cursor = ` · (${i}, ${j}, ${k}) ${t("viewer.hu")} ${fmt.number(hu)}`;
  }
  infoBR.textContent =
    `${t(`viewer.plane_${name}`)} ${n + 1}/${plane.n} · ${fmt.number(mm)} mm · ` +
    `W ${state.width} L ${state.level} · ×${fmt.number(plane.view.zoom)}${cursor}`;
  slider.max = String(plane.n - 1);
  slider.value = String(n);
}

/** Show image n of plane `name` (fetched if needed); resolves once drawn. */
export async function show(name, n) {
  const step = n < indexOf(name) ? -1 : 1;
  const wanted = setIndexOf(name, n);
  const hu = await fetchImage(name, wanted, true);
  if (hu && wanted === indexOf(name) && visible(name)) {
    if (state.layout === "three") draw(); // the cross-hair moved in the other planes
    else {
      drawPlane(name);
      drawInfo();
    }
  }
  prefetch(name, wanted, step);
}

/** Show axial slice k (the one-view default); resolves once drawn. */
export function goTo(k) {
  return show("axial", k);
}

/** Move the cross-hair to voxel (i, j, k): every plane goes to it; resolves once all drawn. */
export async function moveCrosshair(i, j, k) {
  state.i = i;
  state.j = j;
  state.k = k;
  await Promise.all(
    Object.keys(planes).filter(visible).map((name) => fetchImage(name, indexOf(name), true)),
  );
  draw();
}

function setActive(name) {
  state.active = name;
  for (const [other, plane] of Object.entries(planes)) {
    plane.canvas.closest(".plane").classList.toggle("active", other === name);
    document.querySelector(`[data-plane="${other}"]`).setAttribute("aria-pressed", String(other === name));
  }
  if (state.layout === "three") drawInfo();
  else applyLayout();
}

function setLayout(layout) {
  state.layout = layout;
  document.getElementById("layout-toggle").setAttribute("aria-pressed", String(layout === "three"));
  applyLayout();
}

function applyLayout() {
  const grid = document.getElementById("planes");
  grid.classList.toggle("three", state.layout === "three");
  for (const [name, plane] of Object.entries(planes)) plane.canvas.closest(".plane").hidden = !visible(name);
  resize();
  for (const name of Object.keys(planes)) {
    if (visible(name)) show(name, indexOf(name)).catch(showError);
  }
}

function setSlab(mm) {
  state.slab = mm;
  document.getElementById("slab").value = String(mm);
  for (const name of Object.keys(planes)) {
    if (visible(name)) show(name, indexOf(name)).catch(showError);
  }
}

function setWindow(width, level) {
  state.width = Math.max(1, Math.round(width));
  state.level = Math.round(level);
  buildLut();
  draw();
}

// --- measurements ---------------------------------------------------------------------------

/** LPS millimetres of the point at continuous image coordinates (x, y) of image n of `name`
 * (pixel x spans [x, x + 1), its centre is the voxel's). */
function pointLps(name, x, y, n) {
  return toLps(...planes[name].voxel(x - 0.5, y - 0.5, n));
}

/** A caliper's length in mm: the distance between its ends in patient space (the affine, so
 * pixel spacing, slice spacing and any obliquity count). */
export function caliperMm(m) {
  const a = pointLps(m.plane, m.x0, m.y0, m.n);
  const b = pointLps(m.plane, m.x1, m.y1, m.n);
  return Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
}

/** An elliptical ROI's area (mm², of the ellipse) and the mean and SD of the HU of the pixels
 * whose centres lie inside it, on the image it was drawn on (a MIP slab's, when one was on). */
export function roiStats(m) {
  const plane = planes[m.plane];
  const cx = (m.x0 + m.x1) / 2;
  const cy = (m.y0 + m.y1) / 2;
  const rx = Math.abs(m.x1 - m.x0) / 2;
  const ry = Math.abs(m.y1 - m.y0) / 2;
  const hu = images.get(m.image);
  let n = 0;
  let sum = 0;
  let sum2 = 0;
  if (hu && rx > 0 && ry > 0) {
    for (let y = Math.max(0, Math.floor(cy - ry)); y <= Math.min(plane.rows - 1, cy + ry); y += 1) {
      for (let x = Math.max(0, Math.floor(cx - rx)); x <= Math.min(plane.cols - 1, cx + rx); x += 1) {
        if (((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2 > 1) continue;
        const v = hu[y * plane.cols + x];
        n += 1;
        sum += v;
        sum2 += v * v;
      }
    }
  }
  const mean = n ? sum / n : null;
  const sd = n > 1 ? Math.sqrt(Math.max(0, (sum2 - n * mean * mean) / (n - 1))) : null;
  return { areaMm2: Math.PI * rx * plane.px * ry * plane.py, mean, sd, n };
}

function measurementText(m) {
  if (m.kind === "caliper") return `${fmt.number(caliperMm(m))} mm`;
  const r = roiStats(m);
  return `${fmt.number(r.areaMm2)} mm² · ${t("viewer.mean")} ${fmt.number(r.mean)} · ` +
    `${t("viewer.sd")} ${fmt.number(r.sd)} ${t("viewer.hu")}`;
}

function drawMeasurements(name, g2, g) {
  g2.lineWidth = 2;
  g2.direction = "ltr";
  g2.font = "13px system-ui, sans-serif";
  for (const m of state.measurements) {
    if (m.plane !== name || m.n !== indexOf(name)) continue;
    const [ax, ay, bx, by] = [g.x0 + m.x0 * g.px, g.y0 + m.y0 * g.py, g.x0 + m.x1 * g.px, g.y0 + m.y1 * g.py];
    g2.strokeStyle = g2.fillStyle = "#81c784";
    g2.beginPath();
    if (m.kind === "caliper") {
      g2.moveTo(ax, ay);
      g2.lineTo(bx, by);
    } else {
      g2.ellipse((ax + bx) / 2, (ay + by) / 2, Math.abs(bx - ax) / 2, Math.abs(by - ay) / 2, 0, 0, 2 * Math.PI);
    }
    g2.stroke();
    g2.fillText(measurementText(m), Math.max(ax, bx) + 6, Math.min(ay, by) - 4);
  }
}

function setTool(tool) {
  state.tool = state.tool === tool ? null : tool;
  for (const [id, name] of [["tool-caliper", "caliper"], ["tool-roi", "roi"]]) {
    document.getElementById(id).setAttribute("aria-pressed", String(state.tool === name));
  }
  for (const plane of Object.values(planes)) plane.canvas.classList.toggle("measuring", Boolean(state.tool));
}

/** Continuous image coordinates (pixel units) of the pointer on plane `name`. */
function imagePoint(name, event) {
  const plane = planes[name];
  const rect = plane.canvas.getBoundingClientRect();
  const ratio = plane.canvas.width / rect.width;
  const g = fit(plane);
  return [((event.clientX - rect.left) * ratio - g.x0) / g.px, ((event.clientY - rect.top) * ratio - g.y0) / g.py];
}

function measurementItem(m, number) {
  const li = document.createElement("li");
  li.dataset.measurement = String(number);
  const text = document.createElement("span");
  text.className = "value";
  text.textContent = `${t(`viewer.plane_${m.plane}`)} ${m.n + 1}: ${measurementText(m)}`;
  li.append(text);
  if (m.kind === "caliper" && state.meta.findings.length && !state.review?.locked) {
    const target = document.createElement("select");
    target.setAttribute("aria-label", t("viewer.apply_to"));
    for (const f of findingsByConfidence()) target.append(new Option(`#${f.id}`, String(f.id)));
    const apply = button(t("viewer.apply_diameter"), "apply", () => {
      const diameter = Math.round(caliperMm(m) * 10) / 10;
      send({ action: "correct", finding_id: Number(target.value), diameter_mm: diameter });
    });
    li.append(target, apply);
  }
  const remove = button(t("viewer.remove"), "remove", () => {
    state.measurements.splice(state.measurements.indexOf(m), 1);
    renderMeasurements();
    draw();
  });
  li.append(remove);
  return li;
}

function renderMeasurements() {
  document.getElementById("measurements").replaceChildren(...state.measurements.map(measurementItem));
}

// --- finding navigation ----------------------------------------------------------------------

/** The AI findings, most confident first (the list's and the N/P keys' order). */
function findingsByConfidence() {
  return [...state.meta.findings].sort((a, b) => b.confidence - a.confidence || a.id - b.id);
}

/** Open finding f: the cross-hair on its centre and every plane zoomed so the finding spans
 * about a sixth of the view, centred on it. */
export async function focusFinding(f) {
  const [i, j, k] = f.center_ijk.map(Math.round);
  state.finding = findingsByConfidence().indexOf(f);
  for (const [name, plane] of Object.entries(planes)) {
    const [x, y] = plane.at(f.center_ijk);
    const view = plane.view;
    Object.assign(view, { zoom: 1, panX: 0, panY: 0 });
    const unit = fit(plane);
    const spanPx = (f.diameter_mm / plane.px) * unit.px;
    view.zoom = Math.max(1, Math.min(16, Math.min(plane.canvas.width, plane.canvas.height) / 6 / spanPx));
    const g = fit(plane);
    view.panX = plane.canvas.width / 2 - (g.x0 + (x + 0.5) * g.px);
    view.panY = plane.canvas.height / 2 - (g.y0 + (y + 0.5) * g.py);
  }
  for (const li of document.querySelectorAll("#findings-list li")) {
    li.classList.toggle("current", Number(li.dataset.findingId) === f.id);
  }
  await moveCrosshair(i, j, k);
}

function nextFinding(step) {
  const list = findingsByConfidence();
  if (!list.length) return;
  const at = state.finding < 0 && step < 0 ? 0 : state.finding;
  focusFinding(list[(at + step + list.length) % list.length]).catch(showError);
}

// --- findings and feedback ------------------------------------------------------------------

function addedFindings() {
  const [sx] = state.meta.spacing_mm;
  const inv = invertAffine();
  return (state.review?.feedback ?? [])
    .filter((row) => row.action === "add")
    .map((row) => {
      const ijk = inv(row.center_lps_mm);
      return { added: true, id: row.id, center_ijk: ijk, radius_mm: row.diameter_mm / 2, confidence: 1, sx };
    });
}

function allFindings() {
  return [...state.meta.findings, ...addedFindings()];
}

function invertAffine() {
  const a = state.meta.affine_lps;
  const m = [0, 1, 2].map((r) => [a[r][0], a[r][1], a[r][2]]);
  const det =
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
    m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
    m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
  const c = (r, s) => {
    const rows = [0, 1, 2].filter((x) => x !== s);
    const cols = [0, 1, 2].filter((x) => x !== r);
    const minor = m[rows[0]][cols[0]] * m[rows[1]][cols[1]] - m[rows[0]][cols[1]] * m[rows[1]][cols[0]];
    return ((r + s) % 2 ? -minor : minor) / det;
  };
  const inv = [0, 1, 2].map((r) => [0, 1, 2].map((s) => c(r, s)));
  return (lps) => {
    const d = [0, 1, 2].map((r) => lps[r] - a[r][3]);
    return [0, 1, 2].map((r) => inv[r][0] * d[0] + inv[r][1] * d[1] + inv[r][2] * d[2]);
  };
}

function verdictOf(finding) {
  const rows = (state.review?.feedback ?? []).filter(
    (row) => row.finding_id === finding.id && ["accept", "reject", "correct"].includes(row.action),
  );
  return rows.length ? rows[rows.length - 1].action : null;
}

function showError(error) {
  const box = document.getElementById("viewer-error");
  box.textContent = error ? error.message : "";
  box.hidden = !error;
}

async function send(body) {
  try {
    await api(`${base}/feedback`, { method: "POST", body });
    showError(null);
  } catch (error) {
    showError(error);
  }
  await loadReview();
}

function findingItem(f) {
  const li = document.createElement("li");
  const verdict = verdictOf(f);
  li.dataset.findingId = f.id;
  if (verdict) li.dataset.verdict = verdict;
  const jump = document.createElement("button");
  jump.className = "jump";
  jump.textContent =
    `#${f.id} · ${fmt.number(f.diameter_mm)} mm · ${fmt.percent(f.confidence)} · ` +
    `${t("viewer.slice")} ${f.k + 1}`;
  jump.addEventListener("click", () => focusFinding(f).then(() => planes[state.active].canvas.focus()));
  const status = document.createElement("span");
  status.className = "verdict";
  status.textContent = verdict ? t(`verdict.${verdict}`) : t("verdict.none");
  li.append(jump, status);
  if (!state.review?.locked) li.append(...actionButtons(f));
  return li;
}

function button(label, action, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.dataset.action = action;
  b.addEventListener("click", onClick);
  return b;
}

function actionButtons(f) {
  const size = document.createElement("input");
  size.type = "number";
  size.min = "1";
  size.step = "0.5";
  size.value = String(Math.round(f.diameter_mm * 10) / 10);
  size.setAttribute("aria-label", t("viewer.corrected_size"));
  return [
    button(t("viewer.accept"), "accept", () => send({ action: "accept", finding_id: f.id })),
    button(t("viewer.reject"), "reject", () => askReason(f)),
    size,
    button(t("viewer.correct"), "correct", () =>
      send({ action: "correct", finding_id: f.id, diameter_mm: Number(size.value) }),
    ),
  ];
}

function askReason(f) {
  const dialog = document.getElementById("reject-dialog");
  dialog.returnValue = "";
  dialog.onclose = () => {
    if (dialog.returnValue === "ok") {
      const reason = document.getElementById("reject-reason").value;
      send({ action: "reject", finding_id: f.id, reason });
    }
  };
  dialog.showModal();
}

function renderPanel() {
  const m = state.meta;
  const d = m.diagnosis;
  document.getElementById("ai-summary").textContent = d
    ? `${t(`label.${d.label}`)} · ${fmt.percent(d.probability)} · ${m.model?.name ?? ""} ${m.model?.version ?? ""}`
    : t(`status.${m.status}`);
  const list = document.getElementById("findings-list");
  list.replaceChildren(...findingsByConfidence().map(findingItem));
  if (!m.findings.length) list.textContent = t("viewer.no_findings");
  const r = state.review;
  const locked = Boolean(r?.locked);
  document.getElementById("review-state").textContent = locked
    ? `${t("viewer.signed_by")} ${r.signed_by} · ${fmt.dateTime(r.signed_at)}`
    : t("viewer.not_signed");
  const impression = document.getElementById("impression");
  impression.disabled = locked;
  if (locked) impression.value = r.impression;
  document.getElementById("sign").disabled = locked;
  document.getElementById("add-mode").disabled = locked;
  renderMeasurements();
}

async function loadReview() {
  state.review = await api(`${base}/review`);
  renderPanel();
  draw();
}

async function signOff() {
  const impression = document.getElementById("impression").value.trim();
  if (!impression) {
    showError(new Error(t("viewer.impression_needed")));
    return;
  }
  try {
    await api(`${base}/signoff`, { method: "POST", body: { impression } });
    showError(null);
  } catch (error) {
    showError(error);
  }
  await loadReview();
}

// --- input ------------------------------------------------------------------------------------

/** The voxel under the pointer on plane `name`, with its image column and row, or null. */
function voxelAt(name, event) {
  const plane = planes[name];
  const rect = plane.canvas.getBoundingClientRect();
  const ratio = plane.canvas.width / rect.width;
  const g = fit(plane);
  const x = Math.floor(((event.clientX - rect.left) * ratio - g.x0) / g.px);
  const y = Math.floor(((event.clientY - rect.top) * ratio - g.y0) / g.py);
  if (x < 0 || y < 0 || x >= plane.cols || y >= plane.rows) return null;
  const [i, j, k] = plane.voxel(x, y, indexOf(name));
  return { x, y, i, j, k };
}

function setAddMode(on) {
  state.addMode = on;
  const b = document.getElementById("add-mode");
  b.setAttribute("aria-pressed", String(on));
  for (const plane of Object.values(planes)) plane.canvas.classList.toggle("adding", on);
}

function bindPointer(name) {
  const plane = planes[name];
  const c = plane.canvas;
  let drag = null;
  c.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.ctrlKey) zoomBy(e.deltaY < 0 ? 1.2 : 1 / 1.2, name);
    else show(name, indexOf(name) + Math.sign(e.deltaY));
  }, { passive: false });
  c.addEventListener("contextmenu", (e) => e.preventDefault());
  c.addEventListener("focus", () => { if (state.active !== name) setActive(name); });
  c.addEventListener("pointerdown", (e) => {
    c.focus();
    if (state.addMode && e.button === 0) {
      const v = voxelAt(name, e);
      if (v) send({ action: "add", center_ijk: [v.i, v.j, v.k], diameter_mm: 6 });
      setAddMode(false);
      return;
    }
    if (state.tool && e.button === 0) {
      const [x, y] = imagePoint(name, e);
      const n = indexOf(name);
      drag = { measure: { kind: state.tool, plane: name, n, image: imageKey(name, n), x0: x, y0: y, x1: x, y1: y } };
      state.measurements.push(drag.measure);
      c.setPointerCapture(e.pointerId);
      return;
    }
    const pan = e.button === 2 || e.shiftKey;
    const { view } = plane;
    drag = { x: e.clientX, y: e.clientY, pan, moved: false, width: state.width, level: state.level, px: view.panX, py: view.panY };
    c.setPointerCapture(e.pointerId);
  });
  c.addEventListener("pointermove", (e) => {
    const v = voxelAt(name, e);
    const hu = v && huAt(name, v.x, v.y);
    state.cursor = v && hu !== null ? { ...v, hu } : null;
    if (!drag) return drawInfo();
    if (drag.measure) {
      [drag.measure.x1, drag.measure.y1] = imagePoint(name, e);
      return draw();
    }
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    drag.moved ||= Math.hypot(dx, dy) >= CLICK_PX;
    if (!drag.moved) return;
    if (drag.pan) {
      plane.view.panX = drag.px + dx * (c.width / c.clientWidth);
      plane.view.panY = drag.py + dy * (c.height / c.clientHeight);
      draw();
    } else setWindow(drag.width + dx * 4, drag.level + dy * 2);
  });
  c.addEventListener("pointerup", (e) => {
    if (drag?.measure) {
      const m = drag.measure;
      drag = null;
      if (m.x0 === m.x1 && m.y0 === m.y1) state.measurements.pop(); // a click draws nothing
      renderMeasurements();
      draw();
      return;
    }
    const click = drag && !drag.moved && !drag.pan;
    drag = null;
    const v = click && voxelAt(name, e);
    if (v) moveCrosshair(v.i, v.j, v.k).catch(showError);
  });
}

function zoomBy(factor, name = state.active) {
  const { view } = planes[name];
  view.zoom = Math.max(0.5, Math.min(16, view.zoom * factor));
  draw();
}

function resetView() {
  for (const plane of Object.values(planes)) Object.assign(plane.view, { zoom: 1, panX: 0, panY: 0 });
  draw();
}

const step = (d) => () => show(state.active, indexOf(state.active) + d);
const KEYS = {
  ArrowUp: step(-1), ArrowDown: step(1), ArrowLeft: step(-1), ArrowRight: step(1),
  PageUp: step(-10), PageDown: step(10),
  Home: () => show(state.active, 0), End: () => show(state.active, planes[state.active].n - 1),
  1: () => setWindow(...PRESETS.lung), 2: () => setWindow(...PRESETS.mediastinum),
  3: () => setWindow(...PRESETS.bone), "+": () => zoomBy(1.25), "-": () => zoomBy(0.8),
  0: resetView,
  f: () => toggle("toggle-findings"), h: () => toggle("toggle-heat"),
  a: () => setAddMode(!state.addMode),
  Escape: () => { setAddMode(false); if (state.tool) setTool(state.tool); },
  d: () => setTool("caliper"), e: () => setTool("roi"),
  n: () => nextFinding(1), p: () => nextFinding(-1),
  l: () => setLayout(state.layout === "three" ? "one" : "three"),
  m: () => setSlab(SLABS_MM[(SLABS_MM.indexOf(state.slab) + 1) % SLABS_MM.length]),
};

/** Shortcuts stay out of the way while the user types in a field. */
function typing(target) {
  const textual = ["text", "number", "search", "password"];
  return target.matches("textarea, select, dialog *") || (target.matches("input") && textual.includes(target.type));
}

function toggle(id) {
  const box = document.getElementById(id);
  box.checked = !box.checked;
  box.dispatchEvent(new Event("change"));
}

function bindControls() {
  document.addEventListener("keydown", (e) => {
    const action = KEYS[e.key];
    if (action && !e.ctrlKey && !e.metaKey && !e.altKey && !typing(e.target)) {
      e.preventDefault();
      action();
    }
  });
  slider.addEventListener("input", () => show(state.active, Number(slider.value)));
  for (const b of document.querySelectorAll("[data-preset]")) {
    b.addEventListener("click", () => setWindow(...PRESETS[b.dataset.preset]));
  }
  for (const b of document.querySelectorAll("[data-plane]")) {
    b.addEventListener("click", () => setActive(b.dataset.plane));
  }
  document.getElementById("layout-toggle").addEventListener("click", KEYS.l);
  document.getElementById("tool-caliper").addEventListener("click", KEYS.d);
  document.getElementById("tool-roi").addEventListener("click", KEYS.e);
  document.getElementById("finding-prev").addEventListener("click", KEYS.p);
  document.getElementById("finding-next").addEventListener("click", KEYS.n);
  document.getElementById("slab").addEventListener("change", (e) => setSlab(Number(e.target.value)));
  document.getElementById("zoom-in").addEventListener("click", () => zoomBy(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => zoomBy(0.8));
  document.getElementById("zoom-reset").addEventListener("click", resetView);
  document.getElementById("toggle-findings").addEventListener("change", (e) => {
    state.showFindings = e.target.checked;
    draw();
  });
  document.getElementById("toggle-heat").addEventListener("change", (e) => {
    state.showHeat = e.target.checked;
    document.getElementById("heat-note").hidden = !state.showHeat || state.meta.probability_map;
    draw();
  });
  document.getElementById("add-mode").addEventListener("click", () => setAddMode(!state.addMode));
  document.getElementById("sign").addEventListener("click", signOff);
  new ResizeObserver(resize).observe(document.getElementById("planes"));
}

/** Size each visible canvas to its box: one view as tall as the window allows, three views
 * side by side. */
function resize() {
  const maxHeight = window.innerHeight - 180;
  for (const [name, plane] of Object.entries(planes)) {
    if (!visible(name)) continue;
    const box = plane.canvas.parentElement.getBoundingClientRect();
    const height = Math.min(box.width, maxHeight);
    plane.canvas.width = Math.max(64, Math.floor(box.width * devicePixelRatio));
    plane.canvas.height = Math.max(64, Math.floor(height * devicePixelRatio));
    plane.canvas.style.height = `${plane.canvas.height / devicePixelRatio}px`;
  }
  if (state.meta) draw();
}

async function start() {
  state.meta = await api(`${base}/meta`);
  const [nk, nj, ni] = state.meta.shape_kji;
  setGeometry();
  resize();
  const firstFinding = state.meta.findings[0];
  const centre = firstFinding ? firstFinding.center_ijk.map(Math.round) : [ni >> 1, nj >> 1, nk >> 1];
  [state.i, state.j] = [centre[0], centre[1]];
  buildLut();
  for (const name of Object.keys(planes)) bindPointer(name);
  bindControls();
  await goTo(firstFinding ? firstFinding.k : Math.floor(nk / 2));
  await loadReview();
  canvas.focus();
  root.dataset.ready = "true";
}

window.basiraViewer = {
  goTo, show, moveCrosshair, focusFinding, huAt, toLps, caliperMm, roiStats, stats, state, planes, fit,
};
start().catch(showError);
