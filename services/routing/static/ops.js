// Handoff ops dashboard: reads the SLA APIs with the session cookie and follows the live SSE stream.
// Data is only ever written with textContent (never innerHTML), so nothing from the API can become markup.
(() => {
  "use strict";

  const STREAM_KINDS = [
    "assigned", "reassigned", "touched", "accepted", "rejected", "converted", "disqualified",
    "sla_warning", "sla_breached",
  ];
  // Events that stop or move a running clock: the row leaves "open" at once, the next refresh confirms.
  const CLOCK_STOPPERS = new Set(["touched", "rejected", "converted", "disqualified", "sla_breached", "reassigned"]);
  const SAFETY_REFRESH_MS = 30000;
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    clockOffsetMs: 0, // server time minus browser time, so countdowns follow the server's clock
    windowHours: 24,
    atRiskMinutes: 10,
    open: [],
    breachEventIds: new Set(),
    liveEvents: 0,
    refreshTimer: null,
    refreshing: false,
    refreshAgain: false,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const serverNow = () => Date.now() + state.clockOffsetMs;
  const shortId = (id) => (id ? String(id).slice(0, 8) : "–");
  const dash = (value) => (value === null || value === undefined || value === "" ? "–" : String(value));

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (Math.abs(seconds) < 10) return `${Math.round(Math.abs(seconds) * 10) / 10}s`;
    const s = Math.round(Math.abs(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function clockText(secondsLeft) {
    const s = Math.round(Math.abs(secondsLeft));
    const text = s >= 3600
      ? `${Math.floor(s / 3600)}:${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`
      : `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    return secondsLeft < 0 ? `−${text}` : text;
  }

  function timeOfDay(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    const today = new Date(serverNow()).toDateString() === d.toDateString();
    const hms = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    return today ? hms : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${hms}`;
  }

  const percent = (share) => (share === null || share === undefined ? "–" : `${Math.round(share * 1000) / 10}%`);
  const source = (row) => dash(row.source_kind) + (row.source_id ? ` · ${shortId(row.source_id)}` : "");

  function banner(message) {
    const node = $("banner");
    node.textContent = message || "";
    node.hidden = !message;
  }

  class Unauthorized extends Error {}

  async function getJSON(path) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) throw new Unauthorized("the ops session has expired");
    if (!response.ok) throw new Error(`${path} answered ${response.status}`);
    return response.json();
  }

  // -- rendering ---------------------------------------------------------------------------------------------------

  function renderKpis(summary, board) {
    const overall = summary.overall;
    $("kpi-share").textContent = percent(overall.within_sla_share);
    $("kpi-share-sub").textContent = `${overall.met} met · ${overall.missed} missed · ${overall.leads} leads`;
    $("kpi-p50").textContent = duration(overall.time_to_first_touch_p50_s);
    $("kpi-p90").textContent = duration(overall.time_to_first_touch_p90_s);
    $("kpi-touched").textContent = `${overall.touched} touched`;
    $("kpi-open").textContent = String(board.open_total);
    $("kpi-risk").textContent = String(board.at_risk_total);
    $("kpi-risk-sub").textContent = `due within ${board.at_risk_minutes} min or warned`;
    $("kpi-breaches").textContent = String(overall.missed);
    $("kpi-breaches-sub").textContent = `in the last ${$("window").selectedOptions[0].textContent}`;
  }

  function openRow(item) {
    const row = el("tr", { "data-lead-id": item.lead_id },
      el("td", { class: "id", title: item.lead_id }, shortId(item.lead_id)),
      el("td", { class: "grade" }, dash(item.grade)),
      el("td", {}, source(item)),
      el("td", {}, dash(item.team_id)),
      el("td", {}, dash(item.rep_id)),
      el("td", { class: "countdown" }, ""),
      el("td", { class: "state" }, el("span", { class: "badge" }, "")),
    );
    row._item = item;
    return row;
  }

  function renderOpen() {
    const body = $("open").tBodies[0];
    body.replaceChildren(...state.open.map(openRow));
    $("open-empty").hidden = state.open.length > 0;
    tick();
  }

  // Countdowns move every second on the client; the server's clock offset keeps them honest.
  function tick() {
    const now = serverNow();
    for (const row of $("open").tBodies[0].rows) {
      const item = row._item;
      const left = (Date.parse(item.due_at) - now) / 1000;
      const risky = item.warned || left <= state.atRiskMinutes * 60;
      const cls = left < 0 ? "overdue" : risky ? "risk" : "ok";
      row.className = cls;
      row.cells[5].textContent = clockText(left);
      const badge = row.cells[6].firstChild;
      badge.className = `badge ${cls === "overdue" ? "bad" : cls}`;
      badge.textContent = cls === "overdue" ? "breaching" : cls === "risk" ? "at risk" : "on track";
    }
  }

  function breachRow(item, fresh) {
    const lateS = item.late_ms === null || item.late_ms === undefined ? null : item.late_ms / 1000;
    return el("tr", { "data-lead-id": item.lead_id, "data-event-id": item.event_id, class: fresh ? "fresh" : "" },
      el("td", {}, timeOfDay(item.breached_at)),
      el("td", { class: "id", title: item.lead_id }, shortId(item.lead_id)),
      el("td", { class: "grade" }, dash(item.grade)),
      el("td", {}, source(item)),
      el("td", {}, dash(item.team_id)),
      el("td", {}, dash(item.rep_id)),
      el("td", {}, lateS === null ? "–" : lateS < 1 ? "<1s" : duration(lateS)),
      el("td", {}, item.current_rep_id ? `→ ${item.current_rep_id}` : dash(item.lead_status)),
    );
  }

  function renderBreaches(items) {
    state.breachEventIds = new Set(items.map((i) => String(i.event_id)));
    $("breaches").tBodies[0].replaceChildren(...items.map((i) => breachRow(i, false)));
    $("breaches-empty").hidden = items.length > 0;
  }

  function addLiveBreach(event) {
    const id = String(event.event_id);
    if (state.breachEventIds.has(id)) return;
    state.breachEventIds.add(id);
    const item = { ...event, breached_at: event.at, current_rep_id: null };
    $("breaches").tBodies[0].prepend(breachRow(item, true));
    $("breaches-empty").hidden = true;
  }

  function renderReps(board, summary) {
    const compliance = new Map(summary.by_rep.map((r) => [r.rep_id, r]));
    const rows = board.reps.map((rep) => {
      const c = compliance.get(rep.rep_id) || {};
      const share = c.within_sla_share;
      const cls = share === null || share === undefined ? "muted" : share >= 0.9 ? "ok" : share >= 0.7 ? "risk" : "bad";
      return el("tr", { "data-rep-id": rep.rep_id },
        el("td", { title: rep.rep_id }, rep.name ? `${rep.name}` : rep.rep_id),
        el("td", {}, dash(rep.team_id)),
        el("td", {}, `${rep.open_leads}` + (rep.running_clocks ? ` (${rep.running_clocks} waiting)` : "")),
        el("td", {}, el("span", { class: `badge ${cls}` }, percent(share))),
        el("td", {}, `${c.met || 0} / ${c.missed || 0}`),
        el("td", {}, duration(c.time_to_first_touch_p50_s)),
      );
    });
    $("reps").tBodies[0].replaceChildren(...rows);
    $("reps-empty").hidden = rows.length > 0;
  }

  function renderWebhooks(items) {
    const rows = items.map((f) => el("tr", { "data-delivery-id": f.delivery_id },
      el("td", {}, timeOfDay(f.last_attempt_at)),
      el("td", { title: f.endpoint_id || "" }, dash(f.endpoint_description || f.endpoint_host || shortId(f.endpoint_id))),
      el("td", {}, dash(f.event_type)),
      el("td", {}, el("span", { class: `badge ${f.state === "failed" ? "bad" : "risk"}` }, f.state)),
      el("td", {}, dash(f.attempts)),
      el("td", { title: f.last_error || "" }, f.last_status_code ? `HTTP ${f.last_status_code}` : dash(f.last_error)),
    ));
    $("webhooks").tBodies[0].replaceChildren(...rows);
    $("webhooks-empty").hidden = rows.length > 0;
  }

  // Axis tops whose quarters read well as durations (0.5s, 15s, 30m, 6h...).
  const NICE_SECONDS = [2, 4, 10, 20, 40, 60, 120, 240, 600, 1200, 2400, 3600, 7200, 14400, 28800, 57600, 86400, 172800, 345600];

  function niceCeiling(seconds) {
    const nice = NICE_SECONDS.find((n) => n >= seconds);
    return nice || Math.ceil(seconds / 345600) * 345600;
  }

  function renderChart(series) {
    const W = 640, H = 240, L = 44, R = 52, T = 14, B = 28;
    const plotW = W - L - R, plotH = H - T - B;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "xMidYMid meet" });
    const n = series.length;
    const step = plotW / Math.max(1, n);
    const p50 = series.map((s) => s.time_to_first_touch_p50_s);
    const maxTouch = niceCeiling(Math.max(0, ...p50.filter((v) => v !== null)));
    const yShare = (share) => T + plotH * (1 - share);
    const yTouch = (s) => T + plotH * (1 - s / maxTouch);

    for (const share of [0, 0.25, 0.5, 0.75, 1]) {
      root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: yShare(share), y2: yShare(share) }));
      root.append(svg("text", { class: "tick", x: L - 6, y: yShare(share) + 3, "text-anchor": "end" }, `${share * 100}%`));
      root.append(svg("text", { class: "tick", x: W - R + 6, y: yShare(share) + 3 }, duration(maxTouch * share)));
    }
    series.forEach((s, i) => {
      if (s.time_to_first_touch_p50_s === null) return;
      const y = yTouch(s.time_to_first_touch_p50_s);
      root.append(svg("rect", { class: "bar", x: L + i * step + step * 0.2, y, width: step * 0.6, height: T + plotH - y }));
    });
    // The compliance line breaks where a bucket has no decided lead, rather than inventing a value.
    let d = "";
    let pen = false;
    const points = [];
    series.forEach((s, i) => {
      if (s.within_sla_share === null) { pen = false; return; }
      const x = L + i * step + step / 2, y = yShare(s.within_sla_share);
      d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
      pen = true;
      points.push(svg("circle", { class: "point", cx: x, cy: y, r: 3 }));
    });
    if (d) root.append(svg("path", { class: "line", d: d.trim() }));
    root.append(...points);
    const labels = Math.min(n, 6);
    for (let k = 0; k < labels; k++) {
      const i = Math.round((k * (n - 1)) / Math.max(1, labels - 1));
      const d = new Date(series[i].start);
      const text = state.windowHours > 24
        ? d.toLocaleDateString([], { month: "short", day: "numeric" })
        : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      root.append(svg("text", { class: "tick", x: L + i * step + step / 2, y: H - 8, "text-anchor": "middle" }, text));
    }
    if (!series.some((s) => s.leads > 0)) {
      root.append(svg("text", { class: "none", x: L + plotW / 2, y: T + plotH / 2, "text-anchor": "middle" }, "No leads routed in this window"));
    }
    $("chart").replaceChildren(root);
  }

  // -- data --------------------------------------------------------------------------------------------------------

  async function refresh() {
    if (state.refreshing) { state.refreshAgain = true; return; }
    state.refreshing = true;
    try {
      const until = new Date(serverNow() + 1000);
      const since = new Date(until.getTime() - state.windowHours * 3600 * 1000);
      const range = `since=${encodeURIComponent(since.toISOString())}&until=${encodeURIComponent(until.toISOString())}`;
      const risk = `at_risk_minutes=${state.atRiskMinutes}`;
      const [board, summary, breaches] = await Promise.all([
        getJSON(`/v1/ops/board?${risk}`),
        getJSON(`/v1/sla/summary?${range}&${risk}&buckets=24`),
        getJSON(`/v1/sla/breaches?${range}&limit=50`),
      ]);
      state.clockOffsetMs = Date.parse(board.now) - Date.now();
      state.open = board.open;
      renderKpis(summary, board);
      renderOpen();
      renderBreaches(breaches.items);
      renderReps(board, summary);
      renderWebhooks(board.webhook_failures);
      renderChart(summary.series);
      $("updated").textContent = timeOfDay(board.now);
      banner("");
    } catch (error) {
      banner(error instanceof Unauthorized
        ? "Your ops session has expired: open /ops?token=… again."
        : `Could not refresh: ${error.message}`);
    } finally {
      state.refreshing = false;
      if (state.refreshAgain) { state.refreshAgain = false; scheduleRefresh(); }
    }
  }

  function scheduleRefresh(delayMs = 500) {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(refresh, delayMs);
  }

  function onStreamEvent(message) {
    const event = JSON.parse(message.data);
    state.liveEvents += 1;
    $("events-count").textContent = String(state.liveEvents);
    if (event.kind === "sla_breached") addLiveBreach(event);
    if (event.kind === "sla_warning") {
      const item = state.open.find((o) => o.lead_id === event.lead_id);
      if (item) item.warned = true;
      tick();
    }
    if (CLOCK_STOPPERS.has(event.kind)) {
      const row = $("open").tBodies[0].querySelector(`tr[data-lead-id="${CSS.escape(event.lead_id)}"]`);
      if (row) row.remove();
      state.open = state.open.filter((o) => o.lead_id !== event.lead_id);
    }
    scheduleRefresh();
  }

  function connect() {
    const live = $("live");
    const source = new EventSource(`/v1/sla/stream?kinds=all`);
    source.onopen = () => {
      live.dataset.state = "live";
      $("live-text").textContent = "live";
      scheduleRefresh(0); // catch up on anything that happened while disconnected
    };
    source.onerror = () => {
      live.dataset.state = "reconnecting";
      $("live-text").textContent = "reconnecting…";
      // A 401 closes the stream for good; the browser retries everything else by itself.
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
    };
    for (const kind of STREAM_KINDS) source.addEventListener(kind, onStreamEvent);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("window").addEventListener("change", (e) => {
      state.windowHours = Number(e.target.value);
      refresh();
    });
    refresh();
    connect();
    setInterval(tick, 1000);
    setInterval(refresh, SAFETY_REFRESH_MS);
  });
})();
