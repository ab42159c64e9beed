// Audit Logs page, archive part: the organization's archived days (versions, rows, SHA-256,
// verification state), downloads of every version and manifest, and "Verify now".
// Uses $, api, headers, download and state from app.js (loaded first).
"use strict";

const archive = { page: 1, size: 10 };

function archiveQuery(extra = {}) {
  const query = new URLSearchParams(extra);
  if (state.admin && $("org").value) query.set("organizationId", $("org").value);
  return query;
}

async function saveFile(href, fallback) {  // a key needs its header: fetch, then save the blob
  if (!state.key) return download(href, "");
  const response = await api(href);
  const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  download(URL.createObjectURL(await response.blob()), name ? name[1] : fallback);
}

function fileLink(text, href, fallback) {
  const link = Object.assign(document.createElement("a"), { href, textContent: text });
  link.addEventListener("click", (event) => {
    event.preventDefault();
    saveFile(href, fallback).catch((error) => setError(error.message));
  });
  return link;
}

function archiveRow(item) {
  const tr = document.createElement("tr");
  const versions = document.createElement("td");
  for (const v of item.versions) {
    const span = document.createElement("span");
    span.className = "version";
    const file = v.file ?? `${item.date}.v${v.version}.csv`;  // a damaged manifest may name none
    span.append(fileLink(`v${v.version} CSV`, v.link, file), " · ",
      fileLink("manifest", v.manifestLink, `${file}.manifest.json`),
      ` (${v.rows ?? "?"} rows${v.signed ? ", signed" : ""}) `);
    versions.append(span);
  }
  const state_ = item.verification.ok ? "verified" : item.verification.problems.join(", ");
  const digest = String(item.sha256 ?? "");
  const sha = cell(digest ? digest.slice(0, 16) + "…" : "?");
  sha.title = digest;
  const verdict = cell(state_);
  verdict.className = item.verification.ok ? "ok" : "bad";
  tr.append(cell(item.date), versions, cell(String(item.rows ?? "?")), sha, verdict);
  tr.dataset.date = item.date;
  return tr;
}

async function loadArchive() {
  setError("");
  $("archive-status").textContent = "Loading…";
  try {
    const query = archiveQuery({ page: archive.page, pageSize: archive.size });
    const data = await (await api(`api/v1/archives?${query}`)).json();
    $("archive-rows").replaceChildren(...data.items.map(archiveRow));
    $("archive-empty").hidden = data.items.length > 0;
    const first = data.total ? (data.page - 1) * data.pageSize + 1 : 0;
    $("archive-range").textContent = `${first}–${Math.min(data.page * data.pageSize, data.total)} of ${data.total} days`;
    $("archive-prev").disabled = data.page <= 1;
    $("archive-next").disabled = data.page * data.pageSize >= data.total;
    $("archive-status").textContent = data.missingDays.length
      ? `Missing days: ${data.missingDays.join(", ")}` : `${data.total} archived days`;
  } catch (error) {
    $("archive-status").textContent = "";
    setError(error.message);
  }
}

async function verifyNow() {
  $("archive-verdict").textContent = "Verifying…";
  try {
    const result = await (await api(`api/v1/archives/verify?${archiveQuery()}`)).json();
    $("archive-verdict").textContent = result.ok
      ? `Verified: ${result.entries} chain entries, ${result.days} days, no problem (through ${result.through})`
      : `${result.problems} problems: ${result.problemLines.slice(0, 5).join("; ")}`;
  } catch (error) {
    $("archive-verdict").textContent = "";
    setError(error.message);
  }
}

function wireArchive() {
  $("archive-show").addEventListener("click", () => {
    $("archive").hidden = false;
    archive.page = 1;
    loadArchive();
  });
  $("archive-prev").addEventListener("click", () => { archive.page -= 1; loadArchive(); });
  $("archive-next").addEventListener("click", () => { archive.page += 1; loadArchive(); });
  $("archive-verify").addEventListener("click", verifyNow);
  $("org").addEventListener("change", () => { if (!$("archive").hidden) { archive.page = 1; loadArchive(); } });
}

wireArchive();
