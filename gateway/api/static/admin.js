// shardgate web admin: vanilla JS, no build step. Talks to /admin/* on the internal port;
// the session is an HttpOnly SameSite=Strict cookie set by POST /admin/login.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const HISTORY = 60;           // sparkline points (2 minutes at 2 s)
  const series = new Map();     // worker uid -> {conns, rin, rout, cpu, rss, last}
  let timer = null;

  async function call(method, params) {
    const resp = await fetch("/admin/api/" + method, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(params || {}),
    });
    if (resp.status === 401) { showLogin(); throw new Error("session expired: log in again"); }
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const body = await resp.json();
    if (body.error) throw new Error(body.error.code + ": " + body.error.message);
    return body.result;
  }

  function show(id, value) {
    const el = $(id);
    el.classList.toggle("err", value instanceof Error);
    el.textContent = value instanceof Error ? value.message : JSON.stringify(value, null, 2);
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function spark(values) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 90 22");
    const max = Math.max(1e-9, ...values);
    const step = 90 / Math.max(1, HISTORY - 1);
    const offset = (HISTORY - values.length) * step;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", values.map((v, i) =>
      (offset + i * step).toFixed(1) + "," + (21 - (v / max) * 20).toFixed(1)).join(" "));
    svg.appendChild(line);
    return svg;
  }

  function push(list, value) { list.push(value); if (list.length > HISTORY) list.shift(); }

  function uptime(s) {
    if (s < 120) return s + "s";
    if (s < 7200) return Math.floor(s / 60) + "m";
    return Math.floor(s / 3600) + "h";
  }

  async function refreshNodes() {
    let info;
    try { info = await call("info", {}); } catch (e) { $("status").textContent = e.message; return; }
    const now = performance.now() / 1000;
    const body = $("nodes");
    body.replaceChildren();
    const nodes = info.nodes.slice().sort((a, b) => (a.node + a.name).localeCompare(b.node + b.name));
    let conns = 0;
    for (const n of nodes) {
      const items = n.metrics.items;
      let s = series.get(n.uid);
      if (!s) { s = { conns: [], rin: [], rout: [], cpu: [], rss: [], last: null }; series.set(n.uid, s); }
      let rin = 0, rout = 0;
      if (s.last) {
        const dt = Math.max(0.001, now - s.last.t);
        rin = Math.max(0, (items.messages_received - s.last.in) / dt);
        rout = Math.max(0, (items.messages_sent - s.last.out) / dt);
      }
      s.last = { t: now, in: items.messages_received, out: items.messages_sent };
      push(s.conns, n.num_clients); push(s.rin, rin); push(s.rout, rout);
      push(s.cpu, n.process.cpu); push(s.rss, n.process.rss / 1048576);
      conns += n.num_clients;
      const row = document.createElement("tr");
      row.className = "worker";
      row.dataset.uid = n.uid;
      cell(row, n.name);
      cell(row, String(n.pid), "num");
      cell(row, String(n.num_clients), "num").appendChild(spark(s.conns));
      cell(row, String(n.num_users), "num");
      cell(row, String(n.num_subs), "num");
      cell(row, String(n.num_channels), "num");
      cell(row, rin.toFixed(1), "num").appendChild(spark(s.rin));
      cell(row, rout.toFixed(1), "num").appendChild(spark(s.rout));
      cell(row, n.process.cpu.toFixed(1), "num").appendChild(spark(s.cpu));
      cell(row, (n.process.rss / 1048576).toFixed(1), "num").appendChild(spark(s.rss));
      cell(row, uptime(n.uptime), "num");
      body.appendChild(row);
    }
    $("status").textContent = nodes.length + " workers, " + conns + " connections, updated " +
      new Date().toLocaleTimeString();
  }

  async function refreshChannels() {
    const body = $("channels");
    try {
      const result = await call("channels", { pattern: $("chan-pattern").value });
      body.replaceChildren();
      for (const [name, c] of Object.entries(result.channels)) {
        const row = document.createElement("tr");
        row.className = "channel";
        const link = cell(row, name);
        link.style.cursor = "pointer";
        link.title = "use this channel below";
        link.addEventListener("click", () => {
          for (const id of ["pub-channel", "hist-channel", "pres-channel"]) $(id).value = name;
        });
        cell(row, String(c.num_clients), "num");
        body.appendChild(row);
      }
    } catch (e) { body.replaceChildren(); cell(body.insertRow(), e.message, "err"); }
  }

  function action(button, out, run) {
    $(button).addEventListener("click", async () => {
      try { show(out, await run()); } catch (e) { show(out, e); }
    });
  }

  action("pub-btn", "pub-out", () => {
    let data;
    try { data = JSON.parse($("pub-data").value); } catch (e) { throw new Error("data is not JSON: " + e.message); }
    return call("publish", { channel: $("pub-channel").value, data });
  });
  action("hist-btn", "hist-out", async () => {
    const r = await call("history", { channel: $("hist-channel").value, limit: 50, reverse: true });
    return r.publications.map((p) => ({ offset: p.offset, data: p.data, user: p.info && p.info.user }));
  });
  action("pres-btn", "pres-out", async () => {
    const r = await call("presence", { channel: $("pres-channel").value });
    return Object.values(r.presence).map((c) => ({ user: c.user, client: c.client }));
  });
  action("disc-btn", "disc-out", () => call("disconnect", { user: $("disc-user").value }));
  action("mint-btn", "mint-out", () => {
    const params = { user: $("mint-user").value, exp_seconds: parseInt($("mint-ttl").value, 10) || 3600 };
    if ($("mint-channel").value) params.channel = $("mint-channel").value;
    return call("mint_token", params);
  });
  $("chan-btn").addEventListener("click", refreshChannels);

  function showLogin() {
    clearInterval(timer); timer = null;
    $("app").hidden = true; $("logout").hidden = true; $("login").hidden = false;
  }

  function showApp() {
    $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
    refreshNodes(); refreshChannels();
    if (!timer) timer = setInterval(() => { refreshNodes(); refreshChannels(); }, 2000);
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    const resp = await fetch("/admin/login", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ password: $("password").value }),
    });
    if (resp.ok) { $("password").value = ""; showApp(); return; }
    $("login-error").textContent = resp.status === 401 ? "wrong password"
      : resp.status === 429 ? "too many attempts; wait a minute" : "login failed: HTTP " + resp.status;
  });
  $("logout").addEventListener("click", async () => {
    await fetch("/admin/logout", { method: "POST", credentials: "same-origin" });
    showLogin();
  });

  fetch("/admin/session", { credentials: "same-origin" }).then((r) => (r.ok ? showApp() : showLogin()));
})();
