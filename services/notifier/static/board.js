// The live page: the board arrives as JSON (first in the page, then pushed over Server-Sent
// Events on every change); rows are built with textContent, never innerHTML.
"use strict";
let board = JSON.parse(document.getElementById("board").textContent);
const body = document.getElementById("alerts");
const severity = document.getElementById("severity");
const participant = document.getElementById("participant");

function left(due) {
  const s = Math.round((Date.parse(due) - Date.now()) / 1000);
  const a = Math.abs(s), d = Math.floor(a / 86400), h = Math.floor(a % 86400 / 3600),
        m = Math.floor(a % 3600 / 60);
  const text = (d ? d + " d " : "") + (d || h ? h + " h " : "") + m + " min";
  return s >= 0 ? text + " left" : text + " overdue";
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function render() {
  const sev = severity.value, who = participant.value.trim().toLowerCase();
  body.replaceChildren();
  for (const a of board) {
    if (sev && a.severity !== sev) continue;
    if (who && !(a.participant || "").toLowerCase().includes(who)) continue;
    const row = body.insertRow();
    row.dataset.alertId = a.alert_id;
    row.className = a.status;
    cell(row, a.severity, a.severity);
    cell(row, a.rule_id);
    cell(row, a.participant || "(trial)");
    cell(row, a.title);
    const due = cell(row, a.due_by ? left(a.due_by) : "");
    if (a.due_by) { due.dataset.due = a.due_by; if (Date.parse(a.due_by) < Date.now()) due.className = "overdue"; }
    const status = cell(row, a.status + (a.acknowledged_by ? " by " + a.acknowledged_by : ""), "status");
    if (a.failing && a.failing.length) {
      const warn = document.createElement("div");
      warn.className = "failing";
      warn.textContent = "not delivered: " + a.failing.join(", ");
      status.appendChild(warn);
    }
    const act = row.insertCell();
    if (a.status === "open") {
      const b = document.createElement("button");
      b.textContent = "Acknowledge";
      b.className = "ack";
      b.onclick = () => acknowledge(a.alert_id, b);
      act.appendChild(b);
    }
  }
}

async function acknowledge(id, button) {
  button.disabled = true;
  const r = await fetch("/alerts/" + encodeURIComponent(id) + "/ack", {
    method: "POST", credentials: "same-origin", headers: {"X-Safety-Monitor": "1"},
  });
  if (!r.ok) { button.disabled = false; alert("Not acknowledged: " + r.status); }
}

setInterval(() => {
  for (const td of document.querySelectorAll("[data-due]")) td.textContent = left(td.dataset.due);
}, 1000);
severity.onchange = render;
participant.oninput = render;
const live = document.getElementById("live");
const events = new EventSource("/events");
events.addEventListener("board", (e) => { board = JSON.parse(e.data); render(); });
events.onopen = () => { live.textContent = "live"; };
events.onerror = () => { live.textContent = "reconnecting..."; };
render();
