// Catalyst dashboard: renders the server's state and keeps it live.
// With a token (entered once, kept in sessionStorage, sent only in the Authorization header)
// the page follows /api/v1/events/stream (server-sent events, read with fetch because
// EventSource cannot send a header); without one it polls the open read endpoints.
"use strict";
(function () {
  const API = "/api/v1";
  const KEY = "catalyst.api.token";
  const $ = (id) => document.getElementById(id);
  let state = JSON.parse($("initial-state").textContent);
  let streamAbort = null;
  let pollTimer = null;

  const token = () => sessionStorage.getItem(KEY) || "";
  const PAGE = Math.random().toString(36).slice(2, 10);

  function text(el, value) { el.textContent = value == null ? "" : String(value); }
  function signClass(v) { const n = Number(v); return n > 0 ? "pos" : n < 0 ? "neg" : ""; }
  function cell(tr, value, cls) {
    const td = document.createElement("td");
    text(td, value);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function fillTable(id, rows, empty, build) {
    const body = $(id).tBodies[0];
    body.replaceChildren();
    if (!rows.length) {
      const tr = body.insertRow();
      tr.className = "empty";
      const td = cell(tr, empty);
      td.colSpan = $(id).tHead.rows[0].cells.length;
      return;
    }
    for (const r of rows) { const tr = body.insertRow(); build(tr, r); }
  }
  function hhmm(iso) { return iso ? iso.slice(11, 16) : ""; }
  // "2025-11-26T14:03:00-05:00" -> "2025-11-26 14:03 ET" (the API's times are New York's).
  function when(iso) { return iso ? iso.slice(0, 10) + " " + iso.slice(11, 16) + " ET" : "?"; }

  // --- rendering -------------------------------------------------------------------------

  function bannerText(t) {
    if (t.state === "halted") {
      let s = "HALTED since " + when(t.since) + ": " + (t.reason || "");
      if (t.require_manual_restart) s += " (a person must resume trading)";
      return s;
    }
    let s = "ACTIVE";
    if (t.last_resumed) s += " (resumed " + when(t.last_resumed.at) + " by " + t.last_resumed.by + ": " + t.last_resumed.reason + ")";
    return s;
  }

  function render(s) {
    state = s;
    const t = s.trading || {};
    const banner = $("banner");
    banner.className = "banner " + (t.state === "halted" ? "halted" : "active");
    text(banner, bannerText(t));
    text($("asof"), "as of " + (s.as_of || "-"));
    if (s.run) text($("run"), s.run.kind + " run " + s.run.run_id);
    const p = s.pnl || {};
    text($("pnl-date"), p.session_date || "");
    for (const k of ["total", "realized", "unrealized"]) {
      const el = $("pnl-" + k);
      text(el, p[k]);
      el.classList.remove("pos", "neg");
      if (signClass(p[k])) el.classList.add(signClass(p[k]));
    }
    text($("pnl-low"), p.intraday_low);
    text($("pnl-warning"), p.warning_line || "-");
    text($("pnl-limit"), p.loss_limit || "-");
    chart(p, s.session || {});
    fillTable("positions", s.positions || [], "no open positions", (tr, r) => {
      cell(tr, r.symbol); cell(tr, r.side); cell(tr, r.qty); cell(tr, r.avg_entry_price);
      cell(tr, r.mark); cell(tr, r.unrealized_pnl, signClass(r.unrealized_pnl));
      cell(tr, r.day_pnl, signClass(r.day_pnl));
    });
    fillTable("orders", s.orders || [], "no open orders", (tr, r) => {
      cell(tr, r.symbol); cell(tr, r.side); cell(tr, r.qty); cell(tr, r.status);
      const td = cell(tr, "");
      for (const l of r.legs || []) {
        const span = document.createElement("span");
        span.className = "leg " + l.status;
        text(span, l.leg.replace("_", " ") + " " + (l.price || "") + " " + l.status);
        td.appendChild(span);
      }
    });
    fillTable("fills", (s.fills || []).slice().reverse(), "no fills yet", (tr, r) => {
      cell(tr, hhmm(r.at)); cell(tr, r.symbol); cell(tr, r.side); cell(tr, r.qty);
      cell(tr, r.price); cell(tr, r.leg ? r.leg.replace("_", " ") : "entry/close");
    });
    fillTable("trades", (s.trades || []).slice().reverse(), "no round trips yet", (tr, r) => {
      cell(tr, r.symbol); cell(tr, hhmm(r.opened_at)); cell(tr, hhmm(r.closed_at));
      cell(tr, r.pnl, signClass(r.pnl));
    });
    fillTable("alerts", (s.alerts || []).slice().reverse(), "no alerts", (tr, r) => {
      cell(tr, hhmm(r.at)); cell(tr, r.severity, "sev-" + r.severity);
      cell(tr, r.title); cell(tr, r.status + (r.channel ? " (" + r.channel + ")" : ""));
    });
  }

  // The day's P&L: one point a minute from the open to the close, with the warning and the
  // loss-limit lines; the y range always shows the limit so a fall toward it is visible.
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    parent.appendChild(el);
    return el;
  }
  function minutes(hm) { const [h, m] = hm.split(":").map(Number); return h * 60 + m; }
  function chart(p, session) {
    const el = $("pnl-chart");
    el.replaceChildren();
    const W = 800, H = 240, L = 56, R = 8, T = 10, B = 22;
    const pts = (p.points || []).map(([t, v]) => [minutes(t), Number(v)]);
    el.setAttribute("data-points", String(pts.length));
    const open = session.market_open ? minutes(session.market_open.slice(11, 16)) : 570;
    const close = session.market_close ? minutes(session.market_close.slice(11, 16)) : 960;
    const limit = p.loss_limit != null ? Number(p.loss_limit) : null;
    const warn = p.warning_line != null ? Number(p.warning_line) : null;
    const vals = pts.map((q) => q[1]).concat([0]);
    if (limit != null) vals.push(limit * 1.1);
    let lo = Math.min(...vals), hi = Math.max(...vals, 0);
    if (hi - lo < 1) hi = lo + 1;
    hi += (hi - lo) * 0.05;
    const x = (m) => L + ((m - open) / Math.max(1, close - open)) * (W - L - R);
    const y = (v) => T + ((hi - v) / (hi - lo)) * (H - T - B);
    const hline = (v, cls, color, label) => {
      svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: color, "stroke-width": 1.2,
        "stroke-dasharray": cls === "zero" ? "" : "6 4", class: cls }, el);
      const t = svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 11,
        fill: color }, el);
      t.textContent = label;
    };
    hline(0, "zero", "#9aa3b0", "0");
    if (warn != null) hline(warn, "warning", "#c07a00", warn.toFixed(0));
    if (limit != null) hline(limit, "limit", "#c42b2b", limit.toFixed(0));
    for (let h = Math.ceil(open / 60) * 60; h <= close; h += 60) {
      const t = svg("text", { x: x(h), y: H - 6, "font-size": 11,
        "text-anchor": h + 30 > close ? "end" : "middle",
        fill: "#6b7585" }, el);
      t.textContent = String(Math.floor(h / 60)) + ":00";
    }
    if (pts.length) {
      const last = pts[pts.length - 1][1];
      svg("polyline", { points: pts.map((q) => x(q[0]).toFixed(1) + "," + y(q[1]).toFixed(1)).join(" "),
        fill: "none", stroke: last < 0 ? "#c42b2b" : "#16794a", "stroke-width": 2,
        class: "pnl-line" }, el);
    }
  }

  // --- the event tail ----------------------------------------------------------------------

  function addTail(item) {
    const ol = $("tail");
    const li = document.createElement("li");
    const root = (item.subject || "").split(".")[1] || "";
    const type = document.createElement("span");
    type.className = "type t-" + root;
    text(type, item.type);
    li.append(hhmm(item.occurred_at) + "  ", type, " " + (item.text || ""));
    li.title = item.subject + " #" + item.seq;
    ol.prepend(li);
    while (ol.children.length > 300) ol.lastChild.remove();
  }

  // --- live: the event stream (with a token) or polling (without) ------------------------

  function live(on, label) {
    const el = $("live");
    el.className = on ? "on" : "off";
    text(el, label);
  }

  async function stream() {
    if (streamAbort) streamAbort.abort();
    const ctl = new AbortController();
    streamAbort = ctl;
    const subject = $("subject").value.trim() || "catalyst.>";
    $("tail").replaceChildren();
    try {
      const res = await fetch(API + "/events/stream?state=true&backlog=100&subject=" +
        encodeURIComponent(subject), { headers: { Authorization: "Bearer " + token() },
        signal: ctl.signal, cache: "no-store" });
      if (res.status === 401 || res.status === 403) {
        const body = await res.json().catch(() => ({}));
        message("token not accepted: " + (body.detail || res.status), true);
        poll();
        return;
      }
      if (!res.ok || !res.body) throw new Error("HTTP " + res.status);
      stopPolling();
      live(true, "live");
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let kind = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) kind = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (!data) continue;
          const obj = JSON.parse(data);
          if (kind === "state") render(obj);
          else if (kind === "event") addTail(obj);
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    if (streamAbort === ctl) {
      live(false, "reconnecting");
      setTimeout(start, 1000);
    }
  }

  function stopPolling() { if (pollTimer) { clearTimeout(pollTimer); pollTimer = null; } }

  async function poll() {
    stopPolling();
    live(false, "polling (enter the token for live updates)");
    try {
      const subject = $("subject").value.trim() || "catalyst.>";
      const [s, evs] = await Promise.all([
        fetch(API + "/dashboard", { cache: "no-store" }).then((r) => r.json()),
        fetch(API + "/events?limit=50&subject=" + encodeURIComponent(subject),
          { cache: "no-store" }).then((r) => r.json()),
      ]);
      render(s);
      $("tail").replaceChildren();
      for (const e of evs) addTail(e);
    } catch (e) { /* the next poll tries again */ }
    pollTimer = setTimeout(poll, 2000);
  }

  function start() { if (token()) stream(); else poll(); }

  // --- commands ----------------------------------------------------------------------------

  function message(msg, error) {
    const el = $("message");
    el.className = error ? "error" : "";
    text(el, msg);
  }

  async function post(path, body, headers) {
    if (!token()) { message("enter the API token first (top right)", true); return null; }
    const res = await fetch(API + path, {
      method: "POST", cache: "no-store",
      headers: Object.assign({ Authorization: "Bearer " + token(),
        "Content-Type": "application/json" }, headers || {}),
      body: JSON.stringify(body || {}),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      const d = Array.isArray(data.detail) ? data.detail.map((x) => x.msg).join("; ") : data.detail;
      message(path + ": " + (d || res.status), true);
      return null;
    }
    return data;
  }

  $("start-btn").addEventListener("click", async () => {
    const day = (state.session && state.session.session_date) || "";
    // One start per page and session date: a double click publishes once, a reload may retry.
    const key = "dashboard-" + (day || new Date().toISOString().slice(0, 10)) + "-" + PAGE;
    const r = await post("/workflow/start", {}, { "Idempotency-Key": key });
    if (r) message(r.duplicate ? "session start already requested (" + r.event_id + ")"
      : "session start requested: " + r.event_id);
  });
  $("stop-btn").addEventListener("click", () => $("stop-dialog").showModal());
  $("stop-dialog").addEventListener("close", async () => {
    if ($("stop-dialog").returnValue !== "confirm") return;
    const r = await post("/emergency-stop", {});
    if (r) message("emergency stop triggered by " + r.triggered_by + " (" + r.event_id + ")");
  });
  $("resume-btn").addEventListener("click", () => { $("resume-reason").value = ""; $("resume-dialog").showModal(); });
  $("resume-dialog").addEventListener("close", async () => {
    if ($("resume-dialog").returnValue !== "confirm") return;
    const reason = $("resume-reason").value.trim();
    if (!reason) { message("resuming needs a reason", true); return; }
    const r = await post("/trading/resume", { reason });
    if (r) message("trading resumed by " + r.resumed_by + ": " + r.reason);
  });

  // --- the token ---------------------------------------------------------------------------

  const placeholder = $("token").placeholder;
  function showToken() {
    const has = !!token();
    $("token").value = "";
    $("token").placeholder = has ? "token set for this tab" : placeholder;
    $("token-forget").hidden = !has;
  }
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = $("token").value.trim();
    if (!v) return;
    sessionStorage.setItem(KEY, v);
    showToken();
    message("");
    start();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showToken();
    if (streamAbort) { streamAbort.abort(); streamAbort = null; }
    start();
  });
  $("subject").addEventListener("change", start);

  render(state);
  showToken();
  start();
})();
