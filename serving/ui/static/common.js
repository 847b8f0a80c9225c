// Shared by the UI pages: the page's message catalog, CSRF-protected JSON requests, and
// locale-aware formatting through the browser's Intl APIs (dates and numbers are never
// formatted on the server).

const catalog = JSON.parse(document.getElementById("i18n").textContent);
export const locale = document.body.dataset.locale || "en";

/** The message for `key` in the page's language (the key itself if missing). */
export function t(key) {
  return catalog[key] ?? key;
}

/** The error a failed response stands for: its documented code's message in the page's
 * language, else the server's coded message, else (no JSON body) that the service did not
 * answer. Never the browser's or the HTTP layer's own text. */
export async function failure(response) {
  const data = response ? await response.json().catch(() => ({})) : {};
  const error = new Error(
    catalog[`error.${data.code}`] ?? (data.code ? data.message : t("error.unavailable")),
  );
  error.code = data.code;
  return error;
}

/** A JSON request; state-changing ones carry the session's CSRF token. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["X-CSRF-Token"] = document.body.dataset.csrf;
    headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body ? JSON.stringify(body) : undefined, credentials: "same-origin",
    });
  } catch {
    throw await failure(null); // no answer at all (network down, service stopped)
  }
  if (response.status === 401) {
    window.location.assign("/ui/login");
  }
  if (!response.ok) {
    throw await failure(response);
  }
  return response.json().catch(() => ({}));
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
