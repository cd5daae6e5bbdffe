/*
 * The operator console: one page, one view per hash route
 * (#/sagas?state=failed, #/saga/<id>, ...), every list a page the server
 * cuts.  The token pasted at sign-in stays in sessionStorage and goes in
 * an Authorization header on each API call; read scopes show, admin acts.
 * No framework and nothing fetched from elsewhere: es-query serves this
 * file from its own binary under a default-src 'self' policy, so the DOM
 * is built with createElement and text nodes only.
 */
"use strict";

const TOKEN_KEY = "es-console-token";
const main = document.getElementById("main");
let timer = null;          // the current view's poll
let generation = 0;        // bumps on each route change: stale answers are dropped
let me = { principal: "", admin: false };

/* ---- DOM helpers ---------------------------------------------------------- */

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(...nodes) {
  main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
}

function flash(text, isError) {
  const f = document.getElementById("flash");
  f.textContent = text;
  f.className = isError ? "error" : "";
  f.hidden = !text;
}

function link(route, text) {
  return h("a", { href: "#" + route }, text);
}

function q(params) {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") s.set(k, v);
  const t = s.toString();
  return t ? "?" + t : "";
}

function pretty(v) {
  return h("pre", {}, JSON.stringify(v, null, 2));
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function ago(iso) {
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (!isFinite(s)) return "";
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 129600) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

/* ---- the API ----------------------------------------------------------------- */

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || "HTTP " + status);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

async function api(path, opts) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const init = { method: "GET", headers: { Authorization: "Bearer " + token }, ...opts };
  if (init.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(init.body);
  }
  const r = await fetch(path, init);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (r.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    location.hash = "#/signin";
  }
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

/* Runs fn, showing its failure in the flash line rather than throwing. */
async function guarded(fn) {
  try {
    return await fn();
  } catch (e) {
    flash(e.message, true);
    return undefined;
  }
}

function poll(fn, ms) {
  const mine = generation;
  const tick = async () => {
    if (mine !== generation) return;
    await fn();
    if (mine === generation) timer = setTimeout(tick, ms);
  };
  tick();
}

/* ---- sign-in ------------------------------------------------------------------ */

function viewSignin() {
  const input = h("input", { type: "password", id: "token", autocomplete: "off",
                             placeholder: "the bearer token" });
  const form = h("form", { class: "signin", id: "signin-form" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste a token of the system (", h("code", {}, "esctl token create NAME --scope read:query --scope read:streams"),
      "; ", h("code", {}, "admin"), " to act). ", h("code", {}, "make up"),
      " made one: ", h("code", {}, "cat .run/admin.token"), "."),
    input,
    h("button", { class: "primary", type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    const who = await guarded(() => api("/v1/console/whoami"));
    if (who) {
      flash("");
      location.hash = "#/overview";
    }
  });
  show(form);
  input.focus();
}

/* ---- overview ---------------------------------------------------------------------- */

let lastSample = null;
let lastRates = { eps: "…", cps: "…" };

function card(label, value, id) {
  return h("div", { class: "card", id }, h("div", { class: "label" }, label),
           h("div", { class: "value" }, value));
}

function viewOverview() {
  const mine = generation;
  show(h("h1", {}, "Overview"), h("p", { class: "muted" }, "Loading…"));
  poll(async () => {
    const o = await guarded(() => api("/v1/console/overview"));
    if (!o || mine !== generation) return;
    const events = o.counters && o.counters.events;
    const now = performance.now() / 1000;
    let eps = lastRates.eps, cps = lastRates.cps;
    if (lastSample && now - lastSample.time >= 0.5) {
      const dt = now - lastSample.time;
      if (events !== undefined && lastSample.events !== undefined)
        eps = ((events - lastSample.events) / dt).toFixed(1);
      if (o.commands_total !== undefined && lastSample.commands !== undefined)
        cps = ((o.commands_total - lastSample.commands) / dt).toFixed(1);
    }
    if (!lastSample || now - lastSample.time >= 0.5) {
      lastSample = { time: now, events, commands: o.commands_total };
      lastRates = { eps, cps };
    }
    const states = o.sagas_by_state || {};
    const relay = o.relay || {};
    show(
      h("h1", {}, "Overview"),
      h("div", { class: "cards" },
        card("commands/s", cps, "ov-cps"),
        card("events/s", eps, "ov-eps"),
        card("events (read model)", events ?? "?", "ov-events"),
        card("open dead letters", o.dead_letters_open ?? "?", "ov-dead"),
        ...Object.entries(states).map(([s, n]) =>
          h("a", { href: "#/sagas" + q({ state: s }), class: "card", id: "ov-sagas-" + s },
            h("div", { class: "label" }, "sagas " + s), h("div", { class: "value state-" + s }, n)))),
      h("h2", {}, "Daemons"),
      h("table", { id: "daemons" },
        h("tr", {}, h("th", {}, "daemon"), h("th", {}, "ready"), h("th", {}, "note")),
        Object.entries(o.daemons || {}).map(([name, d]) =>
          h("tr", {}, h("td", {}, name),
            h("td", { class: d.ready ? "ok" : "bad" }, d.ready ? "ready" : "not ready (" + d.status + ")"),
            h("td", { class: "muted" }, d.note || "")))),
      h("h2", {}, "Relay"),
      h("table", { id: "relay" }, Object.entries(relay).map(([k, v]) =>
        h("tr", {}, h("th", {}, k.replace(/_/g, " ")), h("td", {}, String(v))))),
      h("h2", {}, "Projections"),
      projectionTable(o.projections || [], false));
  }, 2000);
}

function projectionTable(list, detail) {
  return h("table", { id: "projections" },
    h("tr", {}, h("th", {}, "projection"), h("th", {}, "state"), h("th", {}, "version"),
      h("th", {}, "checkpoint"), h("th", {}, "position"), h("th", {}, "lag (events)"),
      h("th", {}, "lag (s)"), h("th", {}, "parked"), detail ? h("th", {}, "rebuild") : null,
      detail ? h("th", {}, "stop reason") : null, detail ? h("th", {}, "rebuild from the console") : null),
    list.map((p) => h("tr", { "data-projection": p.name },
      h("td", {}, p.name),
      h("td", { class: p.state === "stopped" ? "bad" : "ok" }, p.state || "?"),
      h("td", { class: "version" }, p.active_version || p.version || ""),
      h("td", { class: "num" }, p.projector_checkpoint ?? p.checkpoint ?? ""),
      h("td", { class: "mono" }, p.position ? link("/event/" + p.position, p.position) : ""),
      h("td", { class: "num" }, p.lag_events ?? "?"),
      h("td", { class: "num" }, p.lag_seconds !== undefined ? Number(p.lag_seconds).toFixed(2) : "?"),
      h("td", { class: "num" + (p.parked ? " warn" : "") }, p.parked ?? ""),
      detail ? h("td", {}, p.rebuild ? rebuildCell(p.rebuild) : h("span", { class: "muted" }, "none")) : null,
      detail ? h("td", { class: "bad" }, p.reason || "") : null,
      detail ? h("td", {}, consoleRebuild(p)) : null)));
}

/* The console's own rebuild of p (admin): a button that asks first, and
 * the last such rebuild's state and progress (GET .../rebuild's fields,
 * carried by the overview as console_rebuild). */
function consoleRebuild(p) {
  const r = p.console_rebuild;
  const running = r && r.state === "running";
  const b = h("button", { type: "button", class: "danger", "data-rebuild": p.name,
                          disabled: !me.admin || running }, "Rebuild");
  b.addEventListener("click", async () => {
    if (await act("start of the rebuild of " + p.name,
                  "/v1/console/projections/" + encodeURIComponent(p.name) + "/rebuild", {},
                  "Rebuild projection " + p.name + " into a new version? Queries keep reading " +
                  "the current one until the new one has caught up."))
      route();
  });
  if (!r) return h("div", {}, b);
  const pct = Math.floor((r.progress || 0) * 100);
  const fill = h("span", {});
  fill.style.width = pct + "%";
  const what = r.state === "failed" ? "failed: " + ((r.error && r.error.message) || "?")
    : r.state + (r.state === "running" ? " (" + r.phase + ")" : "") + ", " + pct + " %" +
      (r.version ? ", version " + r.version : "") + ", " + r.done + "/" + (r.total || "?") + " events";
  return h("div", {}, b,
    h("div", { class: "rebuild console-rebuild", "data-state": r.state, "data-progress": pct },
      h("div", { class: "bar" }, fill),
      h("span", { class: r.state === "failed" ? "bad" : "" }, what), " by " + r.by));
}

/* A rebuild esctl is running: its version and how far it has got. */
function rebuildCell(r) {
  const pct = Math.floor((r.progress || 0) * 100);
  const fill = h("span", {});
  fill.style.width = pct + "%";        // CSSOM, not a style attribute: the policy allows it
  return h("div", { class: "rebuild", "data-progress": pct },
    h("div", { class: "bar" }, fill),
    "version " + r.version + ": " + pct + " % (checkpoint " + r.checkpoint + ")");
}

/* ---- projections ------------------------------------------------------------------------ */

function viewProjections() {
  const mine = generation;
  show(h("h1", {}, "Projections"), h("p", { class: "muted" }, "Loading…"));
  poll(async () => {
    const o = await guarded(() => api("/v1/console/overview"));
    if (!o || mine !== generation) return;
    show(h("h1", {}, "Projections"),
      h("p", { class: "muted" }, "Versions, checkpoints (feed sequence), lag behind the JetStream stream " +
        "and parked events, as the projector and es-query report them, every second. A rebuild builds " +
        "a new version beside the active one and switches to it once caught up: started here (admin) " +
        "it runs inside es-query; started by esctl projection rebuild NAME, its version and progress show too."),
      projectionTable(o.projections || [], true));
  }, 1000);
}

/* ---- streams --------------------------------------------------------------------------- */

function viewStreams(params) {
  const category = params.get("category") || "";
  const prefix = params.get("prefix") || "";
  const after = params.get("after") || "";
  const form = h("form", { class: "filters", id: "stream-filters" },
    h("label", {}, "category", h("input", { name: "category", value: category, placeholder: "order" })),
    h("label", {}, "stream id prefix", h("input", { name: "prefix", value: prefix, placeholder: "4141" })),
    h("button", { type: "submit" }, "Filter"),
    h("label", {}, "go to position or event id",
      h("input", { name: "position", placeholder: "882-105" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    if (f.get("position")) location.hash = "#/event/" + encodeURIComponent(f.get("position").trim());
    else location.hash = "#/streams" + q({ category: f.get("category"), prefix: f.get("prefix") });
  });
  show(h("h1", {}, "Streams"), form, h("p", { class: "muted" }, "Loading…"));
  guarded(async () => {
    const r = await api("/v1/console/streams" + q({ category, prefix, after, limit: 50 }));
    show(h("h1", {}, "Streams"), form,
      h("table", { id: "streams" },
        h("tr", {}, h("th", {}, "stream"), h("th", {}, "version")),
        r.streams.map((s) => h("tr", {}, h("td", { class: "mono" }, link("/stream/" + encodeURIComponent(s.stream), s.stream)),
                                h("td", { class: "num" }, s.version)))),
      r.streams.length === 0 ? h("p", { class: "muted" }, "No stream begins with \"" + r.prefix + "\".") : null,
      h("div", { class: "pager" },
        after ? link("/streams" + q({ category, prefix }), "« first page") : null,
        r.next ? link("/streams" + q({ category, prefix, after: r.next }), "next page »") : null));
  });
}

function eventRow(e) {
  return h("tr", {},
    h("td", { class: "num" }, e.version),
    h("td", { class: "mono" }, link("/event/" + e.position, e.position)),
    h("td", {}, e.type),
    h("td", { class: "muted" }, when(e.recorded_at)),
    h("td", {}, h("details", {}, h("summary", {}, "data, metadata"), pretty(e.data), pretty(e.metadata))));
}

function viewStream(name, params) {
  const from = params.get("from");
  show(h("h1", {}, "Stream ", h("code", {}, name)), h("p", { class: "muted" }, "Loading…"));
  guarded(async () => {
    const r = await api("/v1/console/streams/" + encodeURIComponent(name) +
                        q({ from, limit: 50, direction: "backward" }));
    const oldest = r.events.length ? r.events[r.events.length - 1].version : 0;
    show(h("h1", {}, "Stream ", h("code", {}, name)),
      h("p", {}, "version " + r.version + ", newest first. ",
        name.startsWith("saga-") ? link("/saga/" + encodeURIComponent(name.slice(5)), "open as a saga") : ""),
      h("table", { id: "events" },
        h("tr", {}, h("th", {}, "version"), h("th", {}, "position"), h("th", {}, "type"),
          h("th", {}, "recorded"), h("th", {}, "")),
        r.events.map(eventRow)),
      h("div", { class: "pager" },
        from ? link("/stream/" + encodeURIComponent(name), "« newest") : null,
        oldest > 0 ? link("/stream/" + encodeURIComponent(name) + q({ from: oldest - 1 }), "older »") : null));
  });
}

function viewEvent(key) {
  show(h("h1", {}, "Event ", h("code", {}, key)), h("p", { class: "muted" }, "Loading…"));
  guarded(async () => {
    const r = await api("/v1/console/events/" + encodeURIComponent(key));
    const e = r.event, l = r.links || {};
    show(h("h1", {}, "Event ", h("code", {}, e.position)),
      h("table", { id: "event" },
        h("tr", {}, h("th", {}, "stream"), h("td", { class: "mono" }, link("/stream/" + encodeURIComponent(e.stream), e.stream))),
        h("tr", {}, h("th", {}, "version"), h("td", {}, e.version)),
        h("tr", {}, h("th", {}, "type"), h("td", {}, e.type)),
        h("tr", {}, h("th", {}, "event id"), h("td", { class: "mono" }, e.event_id)),
        h("tr", {}, h("th", {}, "recorded"), h("td", {}, when(e.recorded_at))),
        h("tr", {}, h("th", {}, "correlation"), h("td", { class: "mono", id: "event-correlation" },
          l.correlation_id ? link("/correlation/" + encodeURIComponent(l.correlation_id), l.correlation_id) : "")),
        h("tr", {}, h("th", {}, "trace"), h("td", { class: "mono", id: "event-trace" },
          e.metadata && e.metadata.trace_id ? link("/trace/" + e.metadata.trace_id, e.metadata.trace_id) : "none")),
        h("tr", {}, h("th", {}, "caused by"), h("td", { class: "mono" },
          l.causation ? link("/event/" + l.causation.position, l.causation.type + " in " + l.causation.stream)
                      : (l.causation_id || "")))),
      h("h2", {}, "data"), pretty(e.data), h("h2", {}, "metadata"), pretty(e.metadata));
  });
}

/* ---- one correlation id ------------------------------------------------------------------ */

/* The events that share a correlation id, in feed order, a page the
 * server cuts at a time. */
function viewCorrelation(id, params) {
  const after = params.get("after") || "";
  show(h("h1", {}, "Correlation ", h("code", {}, id)), h("p", { class: "muted" }, "Loading…"));
  guarded(async () => {
    const r = await api("/v1/console/correlations/" + encodeURIComponent(id) + q({ after, limit: 50 }));
    show(h("h1", {}, "Correlation ", h("code", {}, id)),
      h("p", { class: "muted" }, "The events whose metadata has this correlation_id, in feed order."),
      h("table", { id: "correlated" },
        h("tr", {}, h("th", {}, "position"), h("th", {}, "stream"), h("th", {}, "type"), h("th", {}, "recorded"),
          h("th", {}, "caused by")),
        r.events.map((e) => h("tr", { "data-position": e.position },
          h("td", { class: "mono" }, link("/event/" + e.position, e.position)),
          h("td", { class: "mono" }, link("/stream/" + encodeURIComponent(e.stream), e.stream + "@" + e.version)),
          h("td", {}, e.type), h("td", { class: "muted" }, when(e.recorded_at)),
          h("td", { class: "mono" }, e.metadata && e.metadata.causation_id ?
            link("/event/" + encodeURIComponent(e.metadata.causation_id), e.metadata.causation_id) : "")))),
      r.events.length === 0 ? h("p", { class: "muted" }, "No event on this page.") : null,
      h("div", { class: "pager" },
        after ? link("/correlation/" + encodeURIComponent(id), "« first page") : null,
        r.next ? link("/correlation/" + encodeURIComponent(id) + q({ after: r.next }), "next page »") : null));
  });
}

/* ---- one trace --------------------------------------------------------------------------- */

/* Every stage of one command's trace (esctl trace): key is a trace id,
 * an order or user id, or a saga id. */
function viewTrace(key) {
  show(h("h1", {}, "Trace ", h("code", {}, key)), h("p", { class: "muted" }, "Loading…"));
  guarded(async () => {
    const t = await api("/v1/console/traces/" + encodeURIComponent(key));
    show(h("h1", {}, "Trace ", h("code", {}, t.trace_id)),
      h("p", {}, t.saga_id ? ["saga ", link("/saga/" + encodeURIComponent(t.saga_id), t.saga_id), ". "] : "",
        t.recorded ? "" : h("span", { class: "muted" }, "No record of the projector (expired, or not projected yet): " +
          "published and projected stages unknown. "),
        t.slowest ? "Slowest: " + t.slowest.stage + " (" + Number(t.slowest.took_ms).toFixed(3) + " ms), " + t.slowest.detail : ""),
      h("table", { id: "trace" },
        h("tr", {}, h("th", {}, "at"), h("th", {}, "took ms"), h("th", {}, "after"), h("th", {}, "stage"), h("th", {}, "what")),
        t.stages.map((r) => h("tr", { "data-stage": r.stage, class: r.slowest ? "slowest" : "" },
          h("td", { class: "muted" }, when(r.at)),
          h("td", { class: "num" }, r.took_ms === null || r.took_ms === undefined ? "-" : Number(r.took_ms).toFixed(3)),
          h("td", { class: "muted" }, r.after || ""),
          h("td", {}, r.stage),
          h("td", { class: "mono" }, r.position ? link("/event/" + r.position, r.detail) : r.detail,
            r.slowest ? h("strong", {}, "  ← slowest") : "")))));
  });
}

/* ---- live feed -------------------------------------------------------------------------- */

function viewFeed(params) {
  const mine = generation;
  const category = params.get("category") || "";
  const type = params.get("type") || "";
  let after = "tail", paused = false;
  const rows = h("tbody", {});
  const pause = h("button", { type: "button", id: "feed-pause" }, "Pause");
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
  });
  const form = h("form", { class: "filters", id: "feed-filters" },
    h("label", {}, "category", h("input", { name: "category", value: category })),
    h("label", {}, "type", h("input", { name: "type", value: type })),
    h("button", { type: "submit" }, "Filter"), pause,
    h("span", { class: "muted", id: "feed-status" }, "from the feed's end, newest on top"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    location.hash = "#/feed" + q({ category: f.get("category"), type: f.get("type") });
  });
  show(h("h1", {}, "Live feed"), form,
    h("table", { id: "feed" },
      h("thead", {}, h("tr", {}, h("th", {}, "position"), h("th", {}, "stream"), h("th", {}, "type"),
        h("th", {}, "recorded"))), rows));
  poll(async () => {
    if (paused) return;
    const r = await guarded(() => api("/v1/console/feed" + q({ after, category, type, limit: 200 })));
    if (!r || mine !== generation) return;
    after = r.next;
    for (const e of r.events) {
      rows.prepend(h("tr", {}, h("td", { class: "mono" }, link("/event/" + e.position, e.position)),
        h("td", { class: "mono" }, link("/stream/" + encodeURIComponent(e.stream), e.stream)),
        h("td", {}, e.type), h("td", { class: "muted" }, when(e.recorded_at))));
    }
    while (rows.children.length > 500) rows.lastChild.remove();
  }, 1000);
}

/* ---- sagas -------------------------------------------------------------------------------- */

/* The age filter: in the list (its state, or started without a state)
 * for more than this; the server turns it into the list's cursor
 * (/v1/console/age-cursor), so it filters every saga, not one page. */
const AGES = { "": "any age", "60": "over 1 min", "3600": "over 1 h", "86400": "over 1 day" };

function viewSagas(params) {
  const state = params.get("state") || "";
  const type = params.get("type") || "";
  const older = params.get("older_than") || "";
  const cursor = params.get("cursor") || "";
  const form = h("form", { class: "filters", id: "saga-filters" },
    h("label", {}, "state", h("select", { name: "state" },
      ["", "running", "failed", "compensating", "compensated", "completed"].map((s) =>
        h("option", { value: s, selected: s === state }, s || "any")))),
    h("label", {}, "type", h("select", { name: "type" },
      ["", "order", "registration", "verification"].map((t) =>
        h("option", { value: t, selected: t === type }, t || "any")))),
    h("label", {}, state ? "in this state" : "started", h("select", { name: "older_than" },
      Object.entries(AGES).map(([v, t]) => h("option", { value: v, selected: v === older }, t)))),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    location.hash = "#/sagas" + q({ state: f.get("state"), type: f.get("type"), older_than: f.get("older_than") });
  });
  show(h("h1", {}, "Sagas"), form, h("p", { class: "muted" }, "Loading…"));
  guarded(async () => {
    const from = cursor || (older ? (await api("/v1/console/age-cursor" + q({ older_than: older }))).cursor : "");
    const r = await api("/v1/sagas" + q({ state, type, cursor: from, limit: 50 }));
    const list = r.sagas;
    const actable = (s) => me.admin && (s.state === "failed" || s.state === "running" || s.state === "compensating");
    const picked = () => [...document.querySelectorAll("#sagas input.pick:checked")].map((c) => c.value);
    const batch = (action) => async () => {
      const ids = picked();
      if (ids.length === 0) { flash("select sagas first", true); return; }
      let reason = "";
      if (action === "compensate") {
        reason = window.prompt("Compensate " + ids.length + " sagas: why?", "");
        if (reason === null) return;
      }
      const question = action === "retry" ? "Retry these " + ids.length + " sagas now?\n" + ids.join("\n")
        : "Undo what these " + ids.length + " sagas did? This cannot be taken back.\n" + ids.join("\n");
      if (!window.confirm(question)) return;
      const res = await guarded(() => api("/v1/console/sagas/batch", { method: "POST",
        body: { action, saga_ids: ids, reason } }));
      if (!res) return;
      route();
      flash("batch " + action + ": " + res.done.length + " done, " + res.failed.length + " failed" +
        (res.failed.length ? " (" + res.failed.map((f) => f.saga_id + ": " + f.error.message).join("; ") + ")" : ""),
        res.failed.length > 0);
    };
    const all = h("input", { type: "checkbox", id: "pick-all", title: "select every saga of this page that can be acted on" });
    all.addEventListener("change", () => {
      for (const c of document.querySelectorAll("#sagas input.pick")) c.checked = all.checked;
    });
    const retryPicked = h("button", { type: "button", id: "batch-retry", disabled: !me.admin }, "Retry selected");
    const compPicked = h("button", { type: "button", class: "danger", id: "batch-compensate", disabled: !me.admin },
      "Compensate selected");
    retryPicked.addEventListener("click", batch("retry"));
    compPicked.addEventListener("click", batch("compensate"));
    show(h("h1", {}, "Sagas"), form,
      me.admin ? h("p", { class: "batch" }, retryPicked, " ", compPicked,
        h("span", { class: "muted" }, " the sagas ticked below, in one confirmed action")) : null,
      h("table", { id: "sagas" },
        h("tr", {}, me.admin ? h("th", {}, all) : null, h("th", {}, "saga"), h("th", {}, "type"), h("th", {}, "state"), h("th", {}, "error"),
          h("th", {}, "started"), h("th", {}, "updated")),
        list.map((s) => h("tr", { "data-saga": s.saga_id },
          me.admin ? h("td", {}, actable(s) ? h("input", { type: "checkbox", class: "pick", value: s.saga_id,
                                                          "aria-label": "select " + s.saga_id }) : "") : null,
          h("td", { class: "mono" }, link("/saga/" + encodeURIComponent(s.saga_id), s.saga_id)),
          h("td", {}, s.type), h("td", { class: "state-" + s.state }, s.state),
          h("td", { class: "bad" }, s.error || ""),
          h("td", { class: "muted", title: when(s.started_at) }, ago(s.started_at)),
          h("td", { class: "muted", title: when(s.updated_at) }, ago(s.updated_at))))),
      list.length === 0 ? h("p", { class: "muted", id: "sagas-empty" }, "No saga matches.") : null,
      h("div", { class: "pager" },
        cursor ? link("/sagas" + q({ state, type, older_than: older }), "« newest") : null,
        r.next_cursor ? link("/sagas" + q({ state, type, older_than: older, cursor: r.next_cursor }), "older »") : null));
  });
}

async function act(what, url, body, question) {
  if (!window.confirm(question)) return null;
  const r = await guarded(() => api(url, { method: "POST", body }));
  if (r) flash(what + " done");
  return r;
}

function viewSaga(id) {
  const mine = generation;
  show(h("h1", {}, "Saga ", h("code", {}, id)), h("p", { class: "muted" }, "Loading…"));
  poll(async () => {
    const s = await guarded(() => api("/v1/console/sagas/" + encodeURIComponent(id)));
    if (!s || mine !== generation) return;
    const w = s.work;
    const live = s.state === "running" || s.state === "compensating" || s.state === "failed";
    const retry = h("button", { type: "button", id: "saga-retry", disabled: !me.admin || !live }, "Retry");
    const comp = h("button", { type: "button", class: "danger", id: "saga-compensate",
                               disabled: !me.admin || !live }, "Compensate");
    retry.addEventListener("click", () => act("retry", "/v1/console/sagas/" + encodeURIComponent(id) + "/retry",
      {}, "Retry saga " + id + " now?"));
    comp.addEventListener("click", () => {
      const reason = window.prompt("Compensate saga " + id + ": why?", "");
      if (reason === null) return;
      act("compensation", "/v1/console/sagas/" + encodeURIComponent(id) + "/compensate", { reason },
          "Undo what saga " + id + " did? This cannot be taken back.");
    });
    show(h("h1", {}, "Saga ", h("code", {}, id)),
      h("table", { id: "saga-head" },
        h("tr", {}, h("th", {}, "type"), h("td", {}, s.type)),
        h("tr", {}, h("th", {}, "state"), h("td", { class: "state-" + s.state, id: "saga-state" }, s.state)),
        h("tr", {}, h("th", {}, "correlation"), h("td", { class: "mono" }, s.correlation_id)),
        h("tr", {}, h("th", {}, "trace"), h("td", {}, link("/trace/" + encodeURIComponent(id), "every stage of its command"))),
        h("tr", {}, h("th", {}, "stream"), h("td", { class: "mono" },
          link("/stream/" + encodeURIComponent("saga-" + id), "saga-" + id + " (version " + s.version + ")"))),
        h("tr", {}, h("th", {}, "pending work"), h("td", {}, w ?
          ["due " + when(w.due_at), " (" + ago(w.due_at).replace(" ago", "") + ")",
           ", " + w.failures + " failed runs", w.last_error ? ", last error: " + w.last_error : ""] :
          h("span", { class: "muted" }, "none"))),
        h("tr", {}, h("th", {}, "dead letter"), h("td", {}, s.dead_letter ? link("/dead-letters", "#" + s.dead_letter) : "none")),
        h("tr", {}, h("th", {}, "gateway breakers"), h("td", { id: "saga-breakers" },
          (s.gateways || []).length ? s.gateways.map((g) =>
            h("span", { class: g.breaker === "closed" ? "ok" : "bad" }, g.gateway + " " + g.breaker + "  "))
            : h("span", { class: "muted" }, "unknown (es-saga did not answer)")))),
      h("p", {}, retry, " ", comp, me.admin ? "" : h("span", { class: "muted" }, " (actions need an admin token)")),
      h("h2", {}, "Timeline"),
      h("table", { id: "timeline" },
        h("tr", {}, h("th", {}, "v"), h("th", {}, "recorded"), h("th", {}, "event"), h("th", {}, "step"),
          h("th", {}, "attempt"), h("th", {}, "error"), h("th", {}, "due")),
        s.timeline.map((t) => h("tr", {},
          h("td", { class: "num" }, t.version), h("td", { class: "muted" }, when(t.recorded_at)),
          h("td", {}, t.type), h("td", {}, t.step || ""), h("td", { class: "num" }, t.attempt ?? ""),
          h("td", { class: "bad" }, t.error || ""),
          h("td", { class: "muted" }, t.data && t.data.retry_at_ms ? "retry " + when(new Date(t.data.retry_at_ms).toISOString())
                                   : t.data && t.data.deadline_ms ? "timeout " + when(new Date(t.data.deadline_ms).toISOString()) : "")))));
  }, 3000);
}

/* ---- dead letters ------------------------------------------------------------------------ */

function viewDeadLetters() {
  show(h("h1", {}, "Dead letters"), h("p", { class: "muted" }, "Loading…"));
  const load = () => guarded(async () => {
    const r = await api("/v1/console/dead-letters");
    show(h("h1", {}, "Dead letters"),
      h("p", {}, h("span", { id: "dl-open" }, r.open), " open, grouped by error (digits aside)."),
      r.groups.length === 0 ? h("p", { class: "muted", id: "dl-none" }, "No open dead letter.") : null,
      r.groups.map((g) => {
        const all = h("button", { type: "button", class: "danger", disabled: !me.admin,
                                  "data-fingerprint": g.fingerprint }, "Replay all " + g.count);
        all.addEventListener("click", async () => {
          if (await act("replay of " + g.count, "/v1/console/dead-letters/replay", { fingerprint: g.fingerprint },
                        "Hand all " + g.count + " dead letters of this group back to the saga manager?")) load();
        });
        return h("section", { class: "group", "data-fingerprint": g.fingerprint },
          h("h2", {}, g.reason || "(no reason)"),
          h("p", { class: "muted" }, (g.flow || "no flow") + (g.event_type ? ", event " + g.event_type : "") +
            ", " + g.count + " dead letters, " + when(g.first_at) + " … " + when(g.last_at) + " ", all),
          h("table", {},
            h("tr", {}, h("th", {}, "id"), h("th", {}, "saga"), h("th", {}, "created"), h("th", {}, "attempts"), h("th", {}, "")),
            g.dead_letters.map((d) => {
              const b = h("button", { type: "button", disabled: !me.admin || !d.saga_id, "data-dead-letter": d.id }, "Replay");
              b.addEventListener("click", async () => {
                if (await act("replay of dead letter " + d.id, "/v1/console/dead-letters/" + d.id + "/replay", {},
                              "Hand dead letter " + d.id + " back to the saga manager?")) load();
              });
              return h("tr", { "data-dead-letter": d.id }, h("td", { class: "num" }, d.id),
                h("td", { class: "mono" }, d.saga_id ? link("/saga/" + encodeURIComponent(d.saga_id), d.saga_id) : "(an event)"),
                h("td", { class: "muted" }, when(d.created_at)), h("td", { class: "num" }, d.attempts), h("td", {}, b));
            })));
      }));
  });
  load();
}

/* ---- routing ------------------------------------------------------------------------------ */

const routes = [
  [/^\/signin$/, () => viewSignin()],
  [/^\/overview$/, () => viewOverview()],
  [/^\/projections$/, () => viewProjections()],
  [/^\/streams$/, (m, p) => viewStreams(p)],
  [/^\/stream\/(.+)$/, (m, p) => viewStream(decodeURIComponent(m[1]), p)],
  [/^\/event\/(.+)$/, (m) => viewEvent(decodeURIComponent(m[1]))],
  [/^\/trace\/(.+)$/, (m) => viewTrace(decodeURIComponent(m[1]))],
  [/^\/correlation\/(.+)$/, (m, p) => viewCorrelation(decodeURIComponent(m[1]), p)],
  [/^\/feed$/, (m, p) => viewFeed(p)],
  [/^\/sagas$/, (m, p) => viewSagas(p)],
  [/^\/saga\/(.+)$/, (m) => viewSaga(decodeURIComponent(m[1]))],
  [/^\/dead-letters$/, () => viewDeadLetters()],
];

async function route() {
  generation++;
  clearTimeout(timer);
  const hash = location.hash.replace(/^#/, "") || "/overview";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const token = sessionStorage.getItem(TOKEN_KEY);
  document.getElementById("signout").hidden = !token;
  if (!token && path !== "/signin") {
    location.hash = "#/signin";
    return;
  }
  for (const a of document.querySelectorAll("#nav a"))
    a.classList.toggle("active", path.startsWith("/" + a.dataset.view.replace(/s$/, "")));
  if (token && !me.principal && path !== "/signin") {
    const who = await guarded(() => api("/v1/console/whoami"));
    if (who) me = who;
    document.getElementById("who").textContent = me.principal + (me.admin ? " (admin)" : " (read only)");
  }
  for (const [re, fn] of routes) {
    const m = path.match(re);
    if (m) return fn(m, params);
  }
  show(h("h1", {}, "Not found"), h("p", {}, "No view " + path + ". ", link("/overview", "Overview")));
}

document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  me = { principal: "", admin: false };
  document.getElementById("who").textContent = "";
  location.hash = "#/signin";
});
window.addEventListener("hashchange", () => { flash(""); route(); });
route();
