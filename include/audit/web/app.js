// Audit Logs page: plain JS over the plugin's API (relative URLs, so any mount path works).
// Authentication: the Airflow UI's session cookie is sent by the browser on its own; without
// one (401) the page asks for an organization API key and sends it as X-API-Key.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "audit-logs-api-key";
const state = { page: 1, total: 0, admin: false, request: 0, key: sessionStorage.getItem(KEY_STORAGE) || "" };

// --- time: inputs hold local or UTC wall time, the API gets ISO 8601 with Z ---------------
const pad = (n, w = 2) => String(n).padStart(w, "0");

function wallTime(date, utc) {
  const get = (local, universal) => (utc ? date[universal]() : date[local]());
  return `${get("getFullYear", "getUTCFullYear")}-${pad(get("getMonth", "getUTCMonth") + 1)}-` +
    `${pad(get("getDate", "getUTCDate"))}T${pad(get("getHours", "getUTCHours"))}:` +
    `${pad(get("getMinutes", "getUTCMinutes"))}:${pad(get("getSeconds", "getUTCSeconds"))}`;
}

function fromInput(value, utc) {
  const text = value.length === 16 ? `${value}:00` : value;
  return new Date(utc ? `${text}Z` : text);
}

function offsetLabel() {
  const minutes = -new Date().getTimezoneOffset();
  const sign = minutes >= 0 ? "+" : "-";
  return `UTC${sign}${pad(Math.floor(Math.abs(minutes) / 60))}:${pad(Math.abs(minutes) % 60)}`;
}

function showTime(iso) {
  const utc = $("utc").checked;
  return wallTime(new Date(iso), utc).replace("T", " ");
}

// --- API ---------------------------------------------------------------------------------
function headers() {
  return state.key ? { "X-API-Key": state.key } : {};
}

function params() {
  const utc = $("utc").checked;
  const query = new URLSearchParams({
    startTime: fromInput($("from").value, utc).toISOString(),
    endTime: fromInput($("to").value, utc).toISOString(),
  });
  if ($("q").value.trim()) query.set("q", $("q").value.trim());
  if (state.admin && $("org").value) query.set("organizationId", $("org").value);
  return query;
}

async function api(path) {
  const response = await fetch(path, { headers: headers(), credentials: "same-origin" });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

// --- states ------------------------------------------------------------------------------
function setStatus(text) { $("status").textContent = text; }

function setError(text) {
  $("error").hidden = !text;
  $("error").textContent = text || "";
}

function setBusy(busy) {
  $("results").setAttribute("aria-busy", String(busy));
  for (const id of ["export", "prev", "next"]) $(id).disabled = busy;  // Search stays: Enter must always submit
  if (busy) setStatus("Loading…");
}

// --- rendering -----------------------------------------------------------------------------
function cell(text) {
  const td = document.createElement("td");
  td.textContent = text || "";
  td.title = text || "";
  return td;
}

function renderRows(items) {
  const body = $("rows");
  body.replaceChildren(...items.map((item) => {
    const tr = document.createElement("tr");
    tr.append(cell(showTime(item.time)), cell(item.user), cell(item.action), cell(item.resource),
      cell(item.ip_address), cell(item.user_agent), cell(item.region));
    tr.dataset.time = item.time;
    return tr;
  }));
  $("empty").hidden = items.length > 0;
}

function clearResults() {  // after an error, no rows from an earlier query may look like its answer
  state.total = 0;
  $("rows").replaceChildren();
  $("empty").hidden = true;
  $("range").textContent = "";
  $("prev").disabled = true;
  $("next").disabled = true;
}

function renderPager(page, size, total) {
  const first = total ? (page - 1) * size + 1 : 0;
  const last = Math.min(page * size, total);
  $("range").textContent = `${first}–${last} of ${total}`;
  $("prev").disabled = page <= 1;
  $("next").disabled = page * size >= total;
}

function renderTimeHeader() {
  $("time-header").textContent = $("utc").checked ? "Time (UTC)" : `Time (${offsetLabel()})`;
}

// --- actions -------------------------------------------------------------------------------
async function load() {  // only the latest request's answer is shown
  const request = ++state.request;
  setError("");
  setBusy(true);
  const size = Number($("page-size").value);
  const query = params();
  query.set("page", state.page);
  query.set("pageSize", size);
  try {
    const data = await (await api(`api/v1/events?${query}`)).json();
    if (request !== state.request) return;
    state.total = data.total;
    renderRows(data.items);
    $("results").hidden = false;
    setBusy(false);
    renderPager(data.page, data.pageSize, data.total);
    setStatus(data.total ? `${data.total} events` : "No events");
  } catch (error) {
    if (request !== state.request) return;
    setBusy(false);
    clearResults();
    if (error.status === 401) return askForKey(error.message);
    setStatus("");
    setError(error.message);
  }
}

function download(href, name) {
  const link = Object.assign(document.createElement("a"), { href, download: name });
  document.body.append(link);
  link.click();
  link.remove();
}

async function exportCsv() {
  setError("");
  const url = `api/v1/audit-log/export?${params()}`;
  setStatus("Exporting…");
  try {
    if (!state.key) {  // the session cookie authenticates a plain download, streamed to disk
      await api(`api/v1/events?${params()}&pageSize=10`);  // bad input shows here, not as a downloaded error
      download(url, "");
      setStatus("Export started");
      return;
    }
    const response = await api(url);  // a key needs its header: fetch, then save the blob
    const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    download(URL.createObjectURL(await response.blob()), name ? name[1] : "audit-log.csv");
    setStatus("Exported");
  } catch (error) {
    setStatus("");
    setError(error.message);
  }
}

function askForKey(message) {
  $("filters").hidden = true;
  $("results").hidden = true;
  $("key-form").hidden = false;
  setStatus("");
  if (message) setError(message);
  $("api-key").focus();
}

function setFromDaysAgo(days) {
  const utc = $("utc").checked;
  const now = new Date();
  $("from").value = wallTime(new Date(now.getTime() - days * 86400000), utc);
  $("to").value = wallTime(now, utc);
  state.page = 1;
  load();
}

function switchZone() {  // keep the same instants, shown in the other zone
  const wasUtc = !$("utc").checked;
  for (const id of ["from", "to"]) {
    if ($(id).value) $(id).value = wallTime(fromInput($(id).value, wasUtc), !wasUtc);
  }
  renderTimeHeader();
  for (const tr of $("rows").children) tr.firstChild.textContent = showTime(tr.dataset.time);
}

async function start() {
  setError("");
  setStatus("Loading…");
  try {
    const me = await (await api("api/v1/organizations")).json();
    state.admin = me.admin;
    $("who").textContent = me.admin ? `${me.user} (Admin)` : `Organization ${me.organizations[0]}`;
    $("org").replaceChildren(...me.organizations.map((org) => new Option(org, org)));
    $("org-field").hidden = !me.admin;
    $("quarantine-show").hidden = !me.admin;
    $("key-form").hidden = true;
    $("filters").hidden = false;
    if (me.admin && !me.organizations.length) {
      setStatus("");
      setError("The lake has no organizations yet.");
      return;
    }
    await load();
  } catch (error) {
    if (error.status === 401) return askForKey(state.key ? error.message : "");
    if (error.status === 403 && !state.key) return askForKey(error.message);  // e.g. not an Airflow Admin
    setStatus("");
    setError(error.message);
  }
}

function wire() {
  renderTimeHeader();
  const now = new Date();
  $("from").value = wallTime(new Date(now.getTime() - 7 * 86400000), false);
  $("to").value = wallTime(now, false);
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); state.page = 1; load(); });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORAGE, state.key);
    start();
  });
  for (const button of document.querySelectorAll("[data-days]")) {
    button.addEventListener("click", () => setFromDaysAgo(Number(button.dataset.days)));
  }
  $("utc").addEventListener("change", switchZone);
  $("org").addEventListener("change", () => { state.page = 1; load(); });
  $("page-size").addEventListener("change", () => { state.page = 1; load(); });
  $("prev").addEventListener("click", () => { state.page -= 1; load(); });
  $("next").addEventListener("click", () => { state.page += 1; load(); });
  $("export").addEventListener("click", exportCsv);
  start();
}

wire();
