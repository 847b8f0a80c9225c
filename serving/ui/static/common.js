// Shared by the UI pages: the page's message catalog, CSRF-protected JSON requests, and
// locale-aware formatting through the browser's Intl APIs (dates and numbers are never
// formatted on the server).

const catalog = JSON.parse(document.getElementById("i18n").textContent);
export const locale = document.body.dataset.locale || "en";

/** The message for `key` in the page's language (the key itself if missing). */
export function t(key) {
  return catalog[key] ?? key;
}

/** A JSON request; state-changing ones carry the session's CSRF token. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["X-CSRF-Token"] = document.body.dataset.csrf;
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, {
    method, headers, body: body ? JSON.stringify(body) : undefined, credentials: "same-origin",
  });
  if (response.status === 401) {
    window.location.assign("/ui/login");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(t(`error.${data.code}`) || data.message);
    error.code = data.code;
    throw error;
  }
  return data;
}

const percent = new Intl.NumberFormat(locale, { style: "percent", maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(locale, { maximumFractionDigits: 1 });
const dateTime = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "short" });
const dateOnly = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeZone: "UTC" });

export const fmt = {
  percent: (v) => (v == null ? "–" : percent.format(v)),
  number: (v) => (v == null ? "–" : decimal.format(v)),
  dateTime: (iso) => (iso ? dateTime.format(new Date(iso)) : "–"),
  /** A DICOM DA value (YYYYMMDD) as a local date. */
  dicomDate: (da) =>
    da && da.length === 8
      ? dateOnly.format(new Date(Date.UTC(+da.slice(0, 4), +da.slice(4, 6) - 1, +da.slice(6))))
      : "",
};
