// trio-rocketmq dashboard: polls /api/state every second and renders it (no build step).
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "-").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const yesNo = (v) => (v === null || v === undefined ? "-" : v ? '<span class="ok">yes</span>' : '<span class="bad">no</span>');

function rows(selector, items, cells) {
  $(selector + " tbody").innerHTML = items.map((it) => "<tr>" + cells(it).map((c) => `<td>${c}</td>`).join("") + "</tr>").join("");
}

function renderControllers(s) {
  $("#leader").textContent = s.leader ? `leader ${s.leader}` : "no leader";
  rows("#controllers", s.controllers, (c) => [
    esc(c.nodeId), esc(c.address),
    c.isLeader ? '<span class="badge master">leader</span>' : c.error ? `<span class="badge dead">down</span>` : "follower",
    esc(c.elections ? c.elections.new_master_elected : null),
    esc(c.failoverCount), c.metricsAddress ? esc(c.metricsAddress) : "-",
  ]);
}

function renderGroups(s) {
  $("#groups").innerHTML = s.groups.map((g) => {
    const replicas = g.replicas.map((r) => {
      const cls = !r.alive ? "dead" : r.broker_id === g.masterId ? "master" : r.in_sync ? "insync" : "slave";
      const what = r.broker_id === g.masterId ? "master" : r.in_sync ? "in sync" : "not in sync";
      return `<span class="badge ${cls}" data-broker-id="${r.broker_id}">${esc(g.brokerName)}-${r.broker_id} ${what}${r.alive ? "" : " (dead)"}</span>`;
    }).join(" ");
    return `<div class="group" data-group="${esc(g.brokerName)}"><b>${esc(g.brokerName)}</b>
      master <b class="master-id">${esc(g.masterId)}</b> (${esc(g.masterAddress)})
      epoch <b class="master-epoch">${esc(g.masterEpoch)}</b>,
      SyncStateSet <b class="sss">[${g.syncStateSet.join(", ")}]</b> (epoch ${esc(g.syncStateSetEpoch)})
      <div>${replicas}</div></div>`;
  }).join("") || "<p>no controller-mode broker sets (or no --controllers given)</p>";
}

function renderBrokers(s) {
  rows("#brokers", s.brokers, (b) => [
    `${esc(b.brokerName)} #${b.brokerId}`, esc(b.address),
    b.error ? `<span class="bad">${esc(b.error)}</span>` : esc(b.role),
    yesNo(b.acceptsWrites), yesNo(b.leaseValid), esc(b.putTotal), esc(b.getTotal),
  ]);
}

function renderChart(points) {
  const svg = $("#chart"), w = 600, h = 160;
  if (points.length < 2) { svg.innerHTML = ""; return; }
  const max = Math.max(1, ...points.map((p) => Math.max(p.in, p.out)));
  const t0 = points[0].t, t1 = points[points.length - 1].t || t0 + 1;
  const line = (key) => points.map((p) => `${((p.t - t0) / (t1 - t0 || 1)) * w},${h - (p[key] / max) * (h - 10)}`).join(" ");
  svg.innerHTML = `<polyline fill="none" stroke="#3a7bd5" stroke-width="2" points="${line("in")}"/>` +
    `<polyline fill="none" stroke="#e67e22" stroke-width="2" points="${line("out")}"/>` +
    `<text x="4" y="12" font-size="11">${max.toFixed(0)}/s</text>`;
}

function render(s) {
  $("#updated").textContent = "updated " + new Date(s.updatedMs).toLocaleTimeString();
  $("#namesrv").textContent = "NameServer " + (s.namesrv || []).join(";");
  renderControllers(s);
  renderGroups(s);
  renderBrokers(s);
  renderChart(s.throughput);
  $("#timeline").innerHTML = s.timeline.slice().reverse().map((e) => `<li><time>${new Date(e.t).toLocaleTimeString()}</time> ${esc(e.text)}</li>`).join("");
  $("#topics").innerHTML = s.topics.map((t) => `<li>${esc(t)}</li>`).join("");
  rows("#consumers", s.consumerGroups, (g) => [esc(g.group), esc(g.diff), esc(g.tps.toFixed(1))]);
  $("#errors").innerHTML = s.errors.map((e) => `<li>${esc(e)}</li>`).join("");
  $("#admin").hidden = !s.admin;
}

async function refresh() {
  try {
    const response = await fetch("/api/state", { cache: "no-store" });
    if (response.ok) render(await response.json());
  } catch (e) {
    $("#updated").textContent = "dashboard unreachable";
  }
}

async function act(name, form) {
  const body = Object.fromEntries(new FormData(form).entries());
  const response = await fetch("/api/" + name, {
    method: "POST", body: JSON.stringify(body),
    headers: { "content-type": "application/json", "x-admin-key": $("#admin-key").value },
  });
  $("#admin-result").textContent = `${response.status} ${await response.text()}`;
}

$("#topic-form").addEventListener("submit", (e) => { e.preventDefault(); act("topic", e.target); });
$("#elect-form").addEventListener("submit", (e) => { e.preventDefault(); act("elect", e.target); });
if (window.RMQ_SNAPSHOT) {
  // A saved copy (dashboard/snapshot.py): show what the dashboard last saw, no polling.
  render({ ...window.RMQ_SNAPSHOT, admin: false });
  $("#updated").textContent = "snapshot of " + new Date(window.RMQ_SNAPSHOT.updatedMs).toLocaleString();
} else {
  refresh();
  setInterval(refresh, 1000);
}
