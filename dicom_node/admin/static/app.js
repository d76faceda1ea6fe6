// Status page of the DICOM node: polls the JSON API and renders tables.
// Values are inserted with textContent only, never as HTML.
"use strict";

const POLL_MS = 5000;
const TOKEN_KEY = "dicom-node-token";

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

async function getJson(path) {
  const response = await fetch(path, { headers: headers() });
  if (response.status === 401) {
    document.getElementById("token-form").hidden = false;
    throw new Error("this page needs the admin token when opened from another host");
  }
  if (!response.ok) {
    throw new Error(path + ": HTTP " + response.status);
  }
  return response.json();
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function fill(tableId, rows, emptyText) {
  const body = document.querySelector("#" + tableId + " tbody");
  const columns = document.querySelectorAll("#" + tableId + " thead th").length;
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell(emptyText, "empty");
    td.colSpan = columns;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = document.createElement("tr");
    tr.append(...cells);
    body.append(tr);
  }
}

function when(iso) {
  return iso ? iso.replace("T", " ").slice(0, 19) : "";
}

function health(value) {
  if (value === true) return cell("OK", "ok");
  if (value === false) return cell("FAILING", "bad");
  return cell("not contacted yet", "unknown");
}

function results(study) {
  if (study.jobs.length === 0) return "waiting for completion";
  return study.jobs
    .map((job) => {
      const exports = job.exports.map((e) => e.destination + ": " + e.state).join(", ");
      const detail = job.error || job.summary || "";
      return "job " + job.id + " " + job.state + (detail ? " (" + detail + ")" : "") +
        (exports ? " → " + exports : "");
    })
    .join("; ");
}

function render(status, destinations, studies, failedJobs, failedExports, associations) {
  document.getElementById("node").textContent =
    "AE " + status.ae_title + " · DICOM port " + status.dicom_port +
    " (" + status.receiving_processes + " receiving " +
    (status.receiving_processes === 1 ? "process" : "processes") + ")" +
    " · called AEs: " + status.called_aes.join(", ") +
    " · spool free " + (status.spool_free_bytes / 2 ** 30).toFixed(1) + " GiB" +
    (status.refusing_for_disk ? " · REFUSING NEW DATA (disk below floor)" : "") +
    " · version " + status.version;
  const queueRows = [];
  for (const [queue, states] of Object.entries(status.queues)) {
    for (const [state, count] of Object.entries(states)) {
      queueRows.push([cell(queue), cell(state), cell(count)]);
    }
  }
  fill("queues", queueRows, "no queues");
  fill("destinations", destinations.map((d) => [
    cell(d.name), cell(d.ae_title + "@" + d.host + ":" + d.port), health(d.healthy),
    cell(when(d.last_success_at)), cell(when(d.last_failure_at)), cell(d.last_error),
  ]), "no destinations configured");
  fill("studies", studies.map((s) => [
    cell(s.study_instance_uid), cell(s.called_ae), cell(s.calling_ae + " " + s.calling_host),
    cell(s.instance_count), cell(s.state), cell(results(s)),
  ]), "no studies received yet");
  fill("errors", [
    ...failedJobs.map((j) => [cell("job"), cell(j.id), cell(j.error)]),
    ...failedExports.map((e) => [cell("export to " + e.destination), cell(e.id), cell(e.last_error)]),
  ], "no errors");
  fill("associations", associations.map((a) => [
    cell(when(a.started_at)), cell(a.calling_ae), cell(a.peer_host), cell(a.called_ae),
    cell(a.accepted ? a.outcome || "open" : "rejected: " + a.reject_reason
      + (a.repeats ? " (and " + a.repeats + " more like it until " + when(a.ended_at) + ")" : "")),
    cell(a.instances), cell(a.bytes_received),
    cell(a.duration_seconds === null ? "" : a.duration_seconds.toFixed(1)),
  ]), "no associations yet");
}

async function readiness() {
  // /readyz answers 503 with its reasons when not ready: read the body either way.
  const response = await fetch("/readyz");
  const body = await response.json();
  const element = document.getElementById("readiness");
  element.textContent = body.ready ? "READY" : "NOT READY: " + body.problems.join("; ");
  element.className = body.ready ? "ok" : "bad";
}

async function refresh() {
  const message = document.getElementById("message");
  try {
    await readiness();
    const data = await Promise.all([
      getJson("/api/status"),
      getJson("/api/destinations"),
      getJson("/api/studies?limit=20"),
      getJson("/api/jobs?state=failed&limit=20"),
      getJson("/api/exports?state=failed&limit=20"),
      getJson("/api/associations?limit=20"),
    ]);
    render(...data);
    message.hidden = true;
    document.body.dataset.loaded = "true";
  } catch (error) {
    message.textContent = "Cannot load the status: " + error.message;
    message.hidden = false;
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  document.getElementById("token-form").hidden = true;
  refresh();
});

refresh();
setInterval(refresh, POLL_MS);
