// Audit Logs page, quarantine part (Admins): counts by day and reason, then the records with their
// detail, source, raw line (shown as text, never as markup) and replay outcome.
// Uses $, api, cell and setError from app.js (loaded first).
"use strict";

const quarantine = { page: 1, size: 25, loaded: false };
const QUARANTINE_REASONS = ["line_too_large", "too_deeply_nested", "malformed_json", "invalid_type",
  "missing_field", "field_too_large", "unknown_action", "invalid_timestamp", "invalid_organization_id",
  "invalid_ip", "invalid_email", "outside_retention", "future_timestamp", "conflicting_duplicate",
  "file_too_large", "unreadable_file"];

function quarantineRow(item) {
  const tr = document.createElement("tr");
  const source = item.line ? `${item.sourceFile}:${item.line}` : item.sourceFile;
  const raw = item.raw === null ? "" : item.raw + (item.rawLength > item.raw.length ? " …" : "");
  const replay = item.replayOutcome ? `${item.replayOutcome} (${item.replayedAt})` : "";
  tr.append(cell(item.quarantinedAt), cell(item.reason), cell(item.detail), cell(source), cell(raw), cell(replay));
  return tr;
}

async function loadQuarantine() {
  setError("");
  $("quarantine-status").textContent = "Loading…";
  try {
    const query = new URLSearchParams({ page: quarantine.page, pageSize: quarantine.size });
    if ($("quarantine-since").value) query.set("since", $("quarantine-since").value);
    if ($("quarantine-reason").value) query.set("reason", $("quarantine-reason").value);
    const data = await (await api(`api/v1/quarantine?${query}`)).json();
    $("quarantine-counts").replaceChildren(...data.counts.map((c) => {
      const tr = document.createElement("tr");
      tr.append(cell(c.day), cell(c.reason), cell(String(c.count)));
      return tr;
    }));
    $("quarantine-rows").replaceChildren(...data.items.map(quarantineRow));
    const first = data.total ? (data.page - 1) * data.pageSize + 1 : 0;
    $("quarantine-range").textContent = `${first}–${Math.min(data.page * data.pageSize, data.total)} of ${data.total}`;
    $("quarantine-prev").disabled = data.page <= 1;
    $("quarantine-next").disabled = data.page * data.pageSize >= data.total;
    $("quarantine-status").textContent = `${data.total} quarantined lines since ${data.since}`;
  } catch (error) {
    $("quarantine-status").textContent = "";
    setError(error.message);
  }
}

function wireQuarantine() {
  $("quarantine-reason").append(...QUARANTINE_REASONS.map((r) => new Option(r, r)));
  $("quarantine-show").addEventListener("click", () => {
    $("quarantine").hidden = false;
    quarantine.page = 1;
    loadQuarantine();
  });
  $("quarantine-prev").addEventListener("click", () => { quarantine.page -= 1; loadQuarantine(); });
  $("quarantine-next").addEventListener("click", () => { quarantine.page += 1; loadQuarantine(); });
  for (const id of ["quarantine-since", "quarantine-reason"]) {
    $(id).addEventListener("change", () => { quarantine.page = 1; loadQuarantine(); });
  }
}

wireQuarantine();
