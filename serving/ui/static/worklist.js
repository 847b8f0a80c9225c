// The worklist: rows from /ui/api/worklist, filtered by status and UID, most suspicious first.
import { api, fmt, t } from "./common.js";

const table = document.querySelector("#worklist-table tbody");
const empty = document.getElementById("worklist-empty");
const status = document.getElementById("status-filter");
const search = document.getElementById("search");

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function row(item) {
  const tr = document.createElement("tr");
  tr.className = `status-${item.status}`;
  const link = document.createElement("a");
  link.href = `/ui/studies/${encodeURIComponent(item.study_instance_uid)}`;
  link.textContent = item.study_instance_uid;
  const study = document.createElement("td");
  study.append(link);
  const label = item.label ? t(`label.${item.label}`) : "–";
  tr.append(
    study,
    cell(t(`status.${item.status}`), "badge"),
    cell(label),
    cell(fmt.percent(item.probability), "num"),
    cell(item.n_findings == null ? "–" : fmt.number(item.n_findings), "num"),
    cell(fmt.dateTime(item.received_at)),
  );
  return tr;
}

async function load() {
  const params = new URLSearchParams();
  if (status.value) params.set("status", status.value);
  if (search.value.trim()) params.set("q", search.value.trim());
  const rows = await api(`/ui/api/worklist?${params}`);
  table.replaceChildren(...rows.map(row));
  empty.hidden = rows.length > 0;
}

document.getElementById("filters").addEventListener("submit", (e) => {
  e.preventDefault();
  load();
});
status.addEventListener("change", load);
search.addEventListener("input", load);
load();
setInterval(load, 15000);
