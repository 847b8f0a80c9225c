// The worklist: one page of /ui/api/worklist at a time, most suspicious first unless a column
// header asks for another order; filters by status, AI label, study date and patient; search by
// the start of a patient ID, name or accession number. Clicking a patient ID lists that
// patient's studies.
import { api, fmt, t } from "./common.js";

const PAGE = 50;
const table = document.querySelector("#worklist-table tbody");
const empty = document.getElementById("worklist-empty");
const error = document.getElementById("worklist-error");
const fields = {
  q: document.getElementById("search"),
  status: document.getElementById("status-filter"),
  label: document.getElementById("label-filter"),
  date_from: document.getElementById("date-from"),
  date_to: document.getElementById("date-to"),
};
const chip = document.getElementById("patient-chip");
const range = document.getElementById("page-range");
const prev = document.getElementById("page-prev");
const next = document.getElementById("page-next");
const state = { sort: "suspicion", order: "asc", offset: 0, patient_id: "" };

/** A DICOM person name (FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX) as "FAMILY, GIVEN MIDDLE". */
function personName(pn) {
  const [family = "", given = "", middle = ""] = pn.split("^");
  const rest = [given, middle].filter(Boolean).join(" ");
  return rest ? `${family}, ${rest}` : family;
}

/** A DICOM TM (HHMMSS…) as HH:MM, or "". */
function dicomTime(tm) {
  return tm && tm.length >= 4 ? `${tm.slice(0, 2)}:${tm.slice(2, 4)}` : "";
}

function cell(content, className) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  if (className) td.className = className;
  return td;
}

function viewerLink(item) {
  const link = document.createElement("a");
  link.href = `/ui/studies/${encodeURIComponent(item.study_instance_uid)}`;
  link.textContent = item.patient_name ? personName(item.patient_name) : t("worklist.unnamed");
  return link;
}

function patientButton(item) {
  if (!item.patient_id) return "–";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link patient";
  button.textContent = item.patient_id;
  button.title = t("worklist.other_studies");
  button.addEventListener("click", () => showPatient(item.patient_id));
  return button;
}

function row(item) {
  const tr = document.createElement("tr");
  tr.className = `status-${item.status}`;
  const date = item.study_date ? fmt.dicomDate(item.study_date.replaceAll("-", "")) : "–";
  tr.append(
    cell(viewerLink(item)),
    cell(patientButton(item)),
    cell(item.accession_number || "–"),
    cell(`${date} ${dicomTime(item.study_time)}`.trim()),
    cell(item.study_description || "–"),
    cell(item.modality || "–"),
    cell(fmt.number(item.n_images), "num"),
    cell(item.label ? t(`label.${item.label}`) : "–"),
    cell(fmt.percent(item.probability), "num"),
    cell(fmt.number(item.n_findings), "num"),
    cell(t(`status.${item.status}`), "badge"),
    cell(fmt.dateTime(item.received_at)),
  );
  return tr;
}

function query() {
  const params = new URLSearchParams({
    sort: state.sort, order: state.order, offset: state.offset, limit: PAGE,
  });
  for (const [name, input] of Object.entries(fields)) {
    if (input.value.trim()) params.set(name, input.value.trim());
  }
  if (state.patient_id) params.set("patient_id", state.patient_id);
  return params;
}

function showHeaders() {
  for (const button of document.querySelectorAll("button.sort")) {
    const th = button.closest("th");
    const active = button.dataset.sort === state.sort;
    th.setAttribute("aria-sort", active ? (state.order === "asc" ? "ascending" : "descending") : "none");
  }
}

let loading = 0;
async function load() {
  const mine = ++loading;
  let page;
  try {
    page = await api(`/ui/api/worklist?${query()}`);
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
    return;
  }
  if (mine !== loading) return; // a newer request answers for the current filters
  error.hidden = true;
  table.replaceChildren(...page.rows.map(row));
  empty.hidden = page.rows.length > 0;
  const last = page.offset + page.rows.length;
  range.textContent = t("worklist.range")
    .replace("{from}", fmt.number(page.total ? page.offset + 1 : 0))
    .replace("{to}", fmt.number(last))
    .replace("{total}", fmt.number(page.total));
  prev.disabled = page.offset === 0;
  next.disabled = last >= page.total;
  showHeaders();
}

function reload() {
  state.offset = 0;
  load();
}

function showPatient(patientId) {
  state.patient_id = patientId;
  document.getElementById("patient-chip-text").textContent =
    t("worklist.patient_filter").replace("{id}", patientId);
  chip.hidden = !patientId;
  reload();
}

for (const button of document.querySelectorAll("button.sort")) {
  button.addEventListener("click", () => {
    const key = button.dataset.sort;
    state.order = state.sort === key && state.order === "asc" ? "desc" : "asc";
    state.sort = key;
    reload();
  });
}
document.getElementById("sort-suspicion").addEventListener("click", () => {
  state.sort = "suspicion";
  state.order = "asc";
  reload();
});
document.getElementById("patient-clear").addEventListener("click", () => showPatient(""));
prev.addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - PAGE);
  load();
});
next.addEventListener("click", () => {
  state.offset += PAGE;
  load();
});
document.getElementById("filters").addEventListener("submit", (e) => {
  e.preventDefault();
  reload();
});
let typing;
for (const input of Object.values(fields)) {
  if (input.type === "search") {
    // one query (and one audited read) once the user pauses, not one per keystroke
    input.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(reload, 250);
    });
  } else {
    input.addEventListener("change", reload);
  }
}
load();
setInterval(load, 15000);
