// The console: the run list with live status, and a run view with progress, steps and the diff.
// It uses only the public API: REST with the key as a bearer token, WebSockets with the key in the
// first frame (never in a URL). The key is kept in sessionStorage: this tab only.
"use strict";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["run.succeeded", "run.failed", "run.cancelled", "run.timed_out"]);
let socket = null;

function key() { return sessionStorage.getItem("swarm-key"); }

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${key()}` } });
  if (response.status === 401) { forget("that key was refused"); throw new Error("unauthorized"); }
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(problem.detail || `HTTP ${response.status}`);
  }
  return response.headers.get("content-type")?.includes("json") ? response.json() : response.text();
}

function follow(path, onFrame) {
  if (socket) socket.close(1000);
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send(JSON.stringify({ type: "auth", key: key() }));
  ws.onmessage = (message) => onFrame(JSON.parse(message.data));
  socket = ws;
  return ws;
}

function show(section) {
  for (const id of ["signin", "runs", "run"]) $(id).hidden = id !== section;
  $("signout").hidden = section === "signin";
}

function forget(why) {
  sessionStorage.removeItem("swarm-key");
  $("signin-error").textContent = why || "";
  route();
}

function text(value) { return value === null || value === undefined ? "" : String(value); }
function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function seconds(ms) { return ms === null || ms === undefined ? "" : `${(ms / 1000).toFixed(1)} s`; }

function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = text(value);
  if (className) td.className = className;
  return td;
}

function runRow(run) {
  const row = document.createElement("tr");
  row.id = `row-${run.run_id}`;
  const link = document.createElement("a");
  link.href = `#run/${run.run_id}`;
  link.textContent = run.run_id;
  row.insertCell().append(link);
  cell(row, run.status, `status ${run.status}`);
  cell(row, `${Math.round(run.progress_pct || 0)} %`);
  cell(row, run.task_type);
  cell(row, when(run.queued_at));
  cell(row, seconds(run.duration_ms));
  cell(row, `${run.tokens_in || 0} / ${run.tokens_out || 0}`);
  cell(row, run.title, "instructions").title = text(run.title);
  return row;
}

async function listRuns() {
  const page = await api("/v1/runs?limit=50");
  const rows = $("runrows");
  rows.replaceChildren(...page.items.map(runRow));
  $("runs-empty").hidden = page.items.length > 0;
}

let refresh = null;
function soon(work) { clearTimeout(refresh); refresh = setTimeout(work, 250); }

async function runsView() {
  show("runs");
  await listRuns();
  const badge = $("live");
  const ws = follow("/v1/events", (frame) => {
    if (frame.type === "ready") { badge.textContent = "live"; badge.className = "badge on"; }
    if (frame.type === "event" && frame.event_type.startsWith("run.")) soon(listRuns);
  });
  ws.onclose = () => { badge.textContent = "disconnected"; badge.className = "badge"; };
}

function describe(type, event) {
  switch (type) {
    case "run.started": return `started (attempt ${event.attempt}, ${event.sandbox} sandbox)`;
    case "run.workspace_prepared": return `workspace: ${event.files} files from ${event.source}`;
    case "run.reasoning": return `… ${event.text?.text || ""}`;
    case "run.command_started": return `$ ${event.command}`;
    case "run.command_executed": return `  exit ${event.exit_code}  ${(event.output?.text || "").slice(0, 400)}`;
    case "run.files_changed": return `✎ ${event.changes.map((c) => `${c.kind} ${c.path}`).join(", ")}`;
    case "run.agent_message": return `» ${event.text?.text || ""}`;
    case "run.codex_notice": return `! ${event.level}: ${event.message?.text || ""}`;
    case "run.line_quarantined": return `? quarantined: ${event.problem}`;
    case "pattern.applied": return `uses ${event.patterns.length} learned pattern(s)`;
    case "run.succeeded": return `✔ succeeded: ${event.summary.files_changed.length} files changed`;
    case "run.failed": return `✘ failed (${event.reason}): ${event.detail}`;
    case "run.cancelled": return `■ cancelled by ${event.cancelled_by}`;
    case "run.timed_out": return `⏱ timed out (${event.limit})`;
    default: return null;
  }
}

async function runView(runId) {
  show("run");
  $("run-title").textContent = runId;
  $("steps").replaceChildren();
  $("diff").textContent = "(shown when the run ends)";
  const meta = async () => {
    const run = await api(`/v1/runs/${runId}`);
    $("run-meta").textContent = `${run.status} · ${text(run.task_type)} · queued ${when(run.queued_at)}`
      + ` · ${seconds(run.duration_ms)} · tokens ${run.tokens_in} in / ${run.tokens_out} out`;
    $("run-progress").style.width = `${run.progress_pct || 0}%`;
  };
  await meta().catch((error) => { $("run-meta").textContent = error.message; });
  follow(`/v1/runs/${runId}/events`, async (frame) => {
    if (frame.type === "event") {
      const line = describe(frame.event_type, frame.event);
      if (line) {
        const item = document.createElement("li");
        item.textContent = line;
        if (frame.event_type.startsWith("run.command")) item.className = "command";
        $("steps").append(item);
      }
      if (TERMINAL.has(frame.event_type)) $("run-progress").style.width = "100%";
    }
    if (frame.type === "end") {
      await meta().catch(() => {});
      $("diff").textContent = await api(`/v1/runs/${runId}/diff`).catch((e) => `(no diff: ${e.message})`) || "(no changes)";
    }
  });
}

function route() {
  if (!key()) { if (socket) socket.close(1000); show("signin"); return; }
  $("who").textContent = "signed in";
  const match = location.hash.match(/^#run\/(run_[0-9A-Za-z]+)$/);
  (match ? runView(match[1]) : runsView()).catch((error) => console.error(error));
}

document.addEventListener("DOMContentLoaded", () => {
  $("keyform").addEventListener("submit", (submit) => {
    submit.preventDefault();
    sessionStorage.setItem("swarm-key", $("key").value.trim());
    $("key").value = "";
    $("signin-error").textContent = "";
    route();
  });
  $("signout").addEventListener("click", () => forget(""));
  window.addEventListener("hashchange", route);
  route();
});
