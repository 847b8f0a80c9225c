// The slice viewer: raw int16 HU slices from the server, window/level applied here through a
// lookup table into an ImageData, neighbours prefetched; findings, heat overlay and feedback.
import { api, fmt, t } from "./common.js";

const PRESETS = { lung: [1500, -600], mediastinum: [350, 40], bone: [2000, 500] };
const PREFETCH_AHEAD = 24; // slices fetched ahead in the scrolling direction
const PREFETCH_BEHIND = 6;
const MAX_IN_FLIGHT = 6;

const root = document.getElementById("viewer");
const studyUid = root.dataset.study;
const base = `/ui/api/studies/${encodeURIComponent(studyUid)}`;
const canvas = document.getElementById("image");
const ctx = canvas.getContext("2d");
const slider = document.getElementById("slice-slider");
const infoTL = document.getElementById("info-tl");
const infoBR = document.getElementById("info-br");

const state = {
  meta: null, k: 0, width: 1500, level: -600, zoom: 1, panX: 0, panY: 0,
  showFindings: true, showHeat: false, addMode: false, review: null, cursor: null,
};
const slices = new Map();
const pending = new Map();
let inFlight = 0;
const queue = [];
let lut = null;
let offscreen = null;
let imageData = null;
export const stats = { firstImageMs: null, draws: 0 };

/** Slice k's HU; `urgent` (the slice on screen) goes before every queued prefetch. */
function fetchSlice(k, urgent = false) {
  if (slices.has(k)) return Promise.resolve(slices.get(k));
  if (pending.has(k)) {
    const at = queue.findIndex((job) => job.k === k);
    if (urgent && at > 0) queue.unshift(...queue.splice(at, 1));
    return pending.get(k);
  }
  const promise = new Promise((resolve, reject) => {
    const job = { k, resolve, reject };
    if (urgent) queue.unshift(job);
    else queue.push(job);
  });
  pending.set(k, promise);
  pump();
  return promise;
}

function pump() {
  while (inFlight < MAX_IN_FLIGHT && queue.length) {
    const { k, resolve, reject } = queue.shift();
    inFlight += 1;
    fetch(`${base}/slices/${k}`, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.arrayBuffer() : Promise.reject(new Error(r.statusText))))
      .then((buffer) => {
        const hu = new Int16Array(buffer);
        slices.set(k, hu);
        resolve(hu);
      })
      .catch(reject)
      .finally(() => {
        inFlight -= 1;
        pending.delete(k);
        pump();
      });
  }
}

/** Queue the neighbours of k, mostly in the direction the user scrolls (`step`: +1 or -1). */
function prefetch(k, step) {
  const n = state.meta.shape_kji[0];
  for (let d = 1; d <= PREFETCH_AHEAD; d += 1) {
    for (const kk of d <= PREFETCH_BEHIND ? [k + step * d, k - step * d] : [k + step * d]) {
      if (kk >= 0 && kk < n && !slices.has(kk) && !pending.has(kk)) fetchSlice(kk).catch(() => {});
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

function renderSlice(hu) {
  const [, rows, cols] = state.meta.shape_kji;
  if (!offscreen) {
    offscreen = new OffscreenCanvas(cols, rows);
    imageData = new ImageData(cols, rows);
  }
  const out = new Uint32Array(imageData.data.buffer);
  for (let p = 0; p < hu.length; p += 1) out[p] = lut[hu[p] + 32768];
  offscreen.getContext("2d").putImageData(imageData, 0, 0);
}

function fit() {
  const [, rows, cols] = state.meta.shape_kji;
  const [sx, sy] = state.meta.spacing_mm;
  const scale = Math.min(canvas.width / (cols * sx), canvas.height / (rows * sy)) * state.zoom;
  const w = cols * sx * scale;
  const h = rows * sy * scale;
  const x0 = (canvas.width - w) / 2 + state.panX;
  const y0 = (canvas.height - h) / 2 + state.panY;
  return { x0, y0, px: sx * scale, py: sy * scale };
}

function draw() {
  const hu = slices.get(state.k);
  if (!hu) return;
  renderSlice(hu);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const g = fit();
  ctx.imageSmoothingEnabled = state.zoom < 2;
  ctx.drawImage(offscreen, g.x0, g.y0, offscreen.width * g.px, offscreen.height * g.py);
  if (state.showHeat) drawHeat(g);
  if (state.showFindings) drawFindings(g);
  drawInfo();
  stats.draws += 1;
  if (stats.firstImageMs === null) {
    stats.firstImageMs = performance.now();
    performance.mark("basira-first-image");
  }
}

function circlesOnSlice() {
  const [, , sz] = state.meta.spacing_mm;
  const circles = [];
  for (const f of allFindings()) {
    const dz = Math.abs(state.k - f.center_ijk[2]) * sz;
    if (dz > f.radius_mm) continue;
    const r = Math.sqrt(f.radius_mm ** 2 - dz ** 2);
    circles.push({ f, r, central: Math.round(f.center_ijk[2]) === state.k });
  }
  return circles;
}

function drawFindings(g) {
  const [sx, sy] = state.meta.spacing_mm;
  ctx.lineWidth = 2;
  ctx.direction = "ltr"; // labels are numbers and ids: never mirrored in Arabic
  ctx.font = "13px system-ui, sans-serif";
  for (const { f, r, central } of circlesOnSlice()) {
    const x = g.x0 + (f.center_ijk[0] + 0.5) * g.px;
    const y = g.y0 + (f.center_ijk[1] + 0.5) * g.py;
    const verdict = verdictOf(f);
    ctx.strokeStyle = f.added ? "#4fc3f7" : verdict === "reject" ? "#9e9e9e" : "#ffb300";
    ctx.setLineDash(central ? [] : [4, 3]);
    ctx.beginPath();
    ctx.ellipse(x, y, Math.max(3, (r / sx) * g.px + 3), Math.max(3, (r / sy) * g.py + 3), 0, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = ctx.strokeStyle;
    const label = f.added ? t("viewer.added") : `#${f.id} ${fmt.percent(f.confidence)}`;
    ctx.fillText(label, x + (r / sx) * g.px + 6, y - (r / sy) * g.py - 4);
  }
}

function drawHeat(g) {
  const [sx] = state.meta.spacing_mm;
  for (const { f, r } of circlesOnSlice()) {
    if (f.added) continue;
    const x = g.x0 + (f.center_ijk[0] + 0.5) * g.px;
    const y = g.y0 + (f.center_ijk[1] + 0.5) * g.py;
    const radius = Math.max(4, (r / sx) * g.px * 1.6);
    const grad = ctx.createRadialGradient(x, y, 0, x, y, radius);
    grad.addColorStop(0, `rgba(255,40,0,${0.75 * f.confidence})`);
    grad.addColorStop(0.6, `rgba(255,200,0,${0.35 * f.confidence})`);
    grad.addColorStop(1, "rgba(255,255,0,0)");
    ctx.fillStyle = grad;
    ctx.fillRect(x - radius, y - radius, 2 * radius, 2 * radius);
  }
}

function toLps(i, j, k) {
  const a = state.meta.affine_lps;
  return [0, 1, 2].map((r) => a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3]);
}

function drawInfo() {
  const n = state.meta.shape_kji[0];
  const z = toLps(0, 0, state.k)[2];
  const h = state.meta.header;
  infoTL.textContent = [h.PatientName, h.PatientID, fmt.dicomDate(h.StudyDate)]
    .filter(Boolean).join(" · ");
  let cursor = "";
  if (state.cursor) {
    const { i, j, hu } = state.cursor;
    cursor = ` · (${i}, ${j}) ${t("viewer.hu")} ${fmt.number(hu)}`;
  }
  infoBR.textContent =
    `${t("viewer.slice")} ${state.k + 1}/${n} · ${fmt.number(z)} mm · ` +
    `W ${state.width} L ${state.level} · ×${fmt.number(state.zoom)}${cursor}`;
  slider.value = String(state.k);
}

/** Show slice k (fetched if needed); resolves once drawn. */
export async function goTo(k) {
  const n = state.meta.shape_kji[0];
  const step = k < state.k ? -1 : 1;
  state.k = Math.max(0, Math.min(n - 1, k));
  const wanted = state.k;
  await fetchSlice(wanted, true);
  if (wanted === state.k) draw();
  prefetch(wanted, step);
}

function setWindow(width, level) {
  state.width = Math.max(1, Math.round(width));
  state.level = Math.round(level);
  buildLut();
  draw();
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
  jump.addEventListener("click", () => goTo(f.k).then(() => canvas.focus()));
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
  list.replaceChildren(...m.findings.map(findingItem));
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

function voxelAt(event) {
  const rect = canvas.getBoundingClientRect();
  const ratio = canvas.width / rect.width;
  const g = fit();
  const i = Math.floor(((event.clientX - rect.left) * ratio - g.x0) / g.px);
  const j = Math.floor(((event.clientY - rect.top) * ratio - g.y0) / g.py);
  const [, rows, cols] = state.meta.shape_kji;
  return i >= 0 && j >= 0 && i < cols && j < rows ? { i, j } : null;
}

function setAddMode(on) {
  state.addMode = on;
  const b = document.getElementById("add-mode");
  b.setAttribute("aria-pressed", String(on));
  canvas.classList.toggle("adding", on);
}

function bindPointer() {
  let drag = null;
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (e.ctrlKey) zoomBy(e.deltaY < 0 ? 1.2 : 1 / 1.2);
    else goTo(state.k + Math.sign(e.deltaY));
  }, { passive: false });
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointerdown", (e) => {
    canvas.focus();
    if (state.addMode && e.button === 0) {
      const v = voxelAt(e);
      if (v) send({ action: "add", center_ijk: [v.i, v.j, state.k], diameter_mm: 6 });
      setAddMode(false);
      return;
    }
    const pan = e.button === 2 || e.shiftKey;
    drag = { x: e.clientX, y: e.clientY, pan, width: state.width, level: state.level, px: state.panX, py: state.panY };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    const v = voxelAt(e);
    const hu = v && slices.get(state.k);
    state.cursor = v && hu ? { ...v, hu: hu[v.j * state.meta.shape_kji[2] + v.i] } : null;
    if (!drag) return drawInfo();
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    if (drag.pan) {
      state.panX = drag.px + dx * (canvas.width / canvas.clientWidth);
      state.panY = drag.py + dy * (canvas.height / canvas.clientHeight);
      draw();
    } else setWindow(drag.width + dx * 4, drag.level + dy * 2);
  });
  canvas.addEventListener("pointerup", () => { drag = null; });
}

function zoomBy(factor) {
  state.zoom = Math.max(0.5, Math.min(16, state.zoom * factor));
  draw();
}

const KEYS = {
  ArrowUp: () => goTo(state.k - 1), ArrowDown: () => goTo(state.k + 1),
  ArrowLeft: () => goTo(state.k - 1), ArrowRight: () => goTo(state.k + 1),
  PageUp: () => goTo(state.k - 10), PageDown: () => goTo(state.k + 10),
  Home: () => goTo(0), End: () => goTo(state.meta.shape_kji[0] - 1),
  1: () => setWindow(...PRESETS.lung), 2: () => setWindow(...PRESETS.mediastinum),
  3: () => setWindow(...PRESETS.bone), "+": () => zoomBy(1.25), "-": () => zoomBy(0.8),
  0: () => { state.zoom = 1; state.panX = 0; state.panY = 0; draw(); },
  f: () => toggle("toggle-findings"), h: () => toggle("toggle-heat"),
  a: () => setAddMode(!state.addMode), Escape: () => setAddMode(false),
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
  slider.addEventListener("input", () => goTo(Number(slider.value)));
  for (const b of document.querySelectorAll("[data-preset]")) {
    b.addEventListener("click", () => setWindow(...PRESETS[b.dataset.preset]));
  }
  document.getElementById("zoom-in").addEventListener("click", () => zoomBy(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => zoomBy(0.8));
  document.getElementById("zoom-reset").addEventListener("click", KEYS[0]);
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
  new ResizeObserver(resize).observe(canvas.parentElement);
}

function resize() {
  const box = canvas.parentElement.getBoundingClientRect();
  canvas.width = Math.max(64, Math.floor(box.width * devicePixelRatio));
  canvas.height = Math.max(64, Math.floor(Math.min(box.width, window.innerHeight - 180) * devicePixelRatio));
  canvas.style.height = `${canvas.height / devicePixelRatio}px`;
  if (state.meta) draw();
}

async function start() {
  resize();
  state.meta = await api(`${base}/meta`);
  const n = state.meta.shape_kji[0];
  slider.max = String(n - 1);
  const firstFinding = state.meta.findings[0];
  buildLut();
  bindPointer();
  bindControls();
  await goTo(firstFinding ? firstFinding.k : Math.floor(n / 2));
  await loadReview();
  canvas.focus();
  root.dataset.ready = "true";
}

window.basiraViewer = { goTo, stats, state };
start().catch(showError);
