// ron-kernel status page: reads /status, follows /events?format=sse.
//
// Rules this file keeps (tests/test_ui_browser.py checks them in Chromium):
// * Every string from the kernel (child names, crash reasons, tracebacks, config problems) is
//   attacker-controlled text: it reaches the DOM only through textContent / createTextNode /
//   attribute values, never innerHTML, insertAdjacentHTML, document.write or eval.
// * The control token lives in the variable `controlToken` only: never localStorage,
//   sessionStorage or a cookie. Reloading the page forgets it.
// * The page recovers by itself: EventSource reconnects after a dropped stream, and when the
//   browser gives up (a 503 while the kernel drains) the page makes a new one; /status is
//   fetched again as soon as the stream is back.
"use strict";

(function () {
  const STATUS_URL = "status";
  const EVENTS_URL = "events?format=sse";
  const POLL_MS = 2000;          // /status when nothing happens (countdowns, bus rate)
  const MIN_GAP_MS = 200;        // at most 5 /status fetches a second during an event burst
  const RECONNECT_MS = 1500;     // a new EventSource after the browser gave up on one
  const FEED_MAX = 200;          // events kept in the feed
  const CONTROL_TIMEOUT_MS = 10000;

  let controlToken = null;       // the operator's token, in this tab's memory only
  let lastStatus = null;
  let lastStatusAt = 0;          // performance.now() of the last answer
  let statusOk = false;
  let streamOpen = false;
  let inFlight = false;
  let again = false;
  let timer = null;
  let timerDue = 0;              // performance.now() when the pending fetch is due
  let clockOffset = 0;           // server wall clock minus ours, when clearly apart (seconds)
  let prevBus = null;            // {published, lagged, t} for the rates
  let prevRun = null;            // the kernel run last shown (/status "run": pid@started_at)
  let feedCount = 0;
  let source = null;
  const expanded = new Set();    // paths of children whose traceback is open

  // ------------------------------------------------------------------ DOM helpers

  function $(id) { return document.getElementById(id); }

  // el("li", {className: "x", dataset: {state: s}}, "text", child, ...): strings become text
  // nodes, so nothing is ever parsed as HTML.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (key === "dataset") {
          for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
        } else if (key === "text") {
          node.textContent = String(value);
        } else {
          node[key] = value;
        }
      }
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function setText(id, value) { $(id).textContent = value === null || value === undefined ? "-" : String(value); }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function str(value) { return value === null || value === undefined ? "" : String(value); }

  function num(value) { return typeof value === "number" && isFinite(value) ? value : null; }

  // ------------------------------------------------------------------ formatting

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
    const s = Math.max(0, seconds);
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function clock(date) {
    return date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
  }

  function nowServer() { return Date.now() / 1000 + clockOffset; }

  function untilText(at) {
    const t = num(at);
    if (t === null) return null;
    const left = t - nowServer();
    return left > 0 ? "in " + duration(left) : "now";
  }

  function rate(value) {
    if (value === null) return "-";
    if (value >= 1000) return (value / 1000).toFixed(1) + " k/s";
    return value.toFixed(value < 10 ? 1 : 0) + " /s";
  }

  // ------------------------------------------------------------------ connection state

  function showConnection() {
    const conn = $("conn");
    let state = "connecting";
    if (streamOpen && statusOk) state = "live";
    else if (!statusOk && lastStatus !== null) state = "disconnected";
    else if (!streamOpen && lastStatus !== null) state = "disconnected";
    conn.dataset.conn = state;
    conn.textContent = state;
  }

  // ------------------------------------------------------------------ /status

  // Fetch /status after `delay` ms, or as soon as the throttle allows when no delay is given
  // (an event arrived). A pending fetch that is due sooner is kept; a later one is moved up.
  function scheduleStatus(delay) {
    if (inFlight) { again = true; return; }
    const now = performance.now();
    const wait = delay !== undefined ? delay : Math.max(0, MIN_GAP_MS - (now - lastStatusAt));
    if (timer !== null) {
      if (timerDue <= now + wait) return;
      clearTimeout(timer);
    }
    timerDue = now + wait;
    timer = setTimeout(fetchStatus, wait);
  }

  async function fetchStatus() {
    timer = null;
    inFlight = true;
    again = false;
    try {
      const response = await fetch(STATUS_URL, {cache: "no-store", headers: {Accept: "application/json"}});
      if (!response.ok) throw new Error("HTTP " + response.status);
      const body = await response.json();
      noteServerClock(response.headers.get("Date"));
      statusOk = true;
      render(body);
    } catch (err) {
      if (statusOk || lastStatus === null) {
        addFeed({type: "local"}, "status unavailable: " + str(err && err.message));
      }
      statusOk = false;
    } finally {
      inFlight = false;
      lastStatusAt = performance.now();
      showConnection();
      scheduleStatus(again ? MIN_GAP_MS : (statusOk ? POLL_MS : RECONNECT_MS));
    }
  }

  function noteServerClock(header) {
    const at = header ? Date.parse(header) : NaN;
    if (!isFinite(at)) return;
    // The Date header has 1 s resolution: only correct clocks that are clearly apart.
    const offset = (at - Date.now()) / 1000;
    clockOffset = Math.abs(offset) > 2 ? offset : 0;
  }

  // ------------------------------------------------------------------ rendering

  function render(s) {
    if (!s || typeof s !== "object") return;
    const uptime = num(s.uptime_s);
    // A new run of the kernel (restarted on the same address): its pid or start time changed.
    const run = s.run && typeof s.run === "object" ? s.run : null;
    const runKey = run ? str(run.pid) + "@" + str(run.started_at) : null;
    if (prevRun !== null && runKey !== null && runKey !== prevRun) {
      const startedAt = num(run.started_at);
      addFeed({type: "local"}, "new kernel run (started " +
        (startedAt === null ? "?" : clock(new Date(startedAt * 1000))) + ")");
      prevBus = null;
      treeSig = null;
    }
    if (runKey !== null) prevRun = runKey;
    lastStatus = s;
    setText("kstate", s.state);
    setText("uptime", duration(uptime));
    setText("kconfig", s.config_version === undefined ? "-" : "v" + str(s.config_version));
    setText("updated", clock(new Date()));
    renderTree(s.supervisor);
    renderReadiness(s.readiness);
    renderBus(s.bus);
    renderConfig(s);
    renderLoop(s.loop);
    renderMailboxes(s.mailboxes);
  }

  function timingOf(info, age) {
    const state = info.state;
    if (state === "running") {
      const up = num(info.uptime);
      return up === null ? "up" : "up " + duration(up + age);
    }
    if (state === "backing_off") {
      const when = untilText(info.next_restart_at);
      return when ? "restart " + when : "restarting";
    }
    if (state === "quarantined" || state === "probing") {
      const probe = untilText(info.next_probe_at);
      const cool = num(info.quarantine_cooldown);
      const coolText = cool ? " (cool-down " + duration(cool) + ")" : "";
      if (state === "probing") return "probe running" + coolText;
      if (probe) return "probe " + probe + coolText;
      return "until released";
    }
    if (state === "waiting") {
      const deps = Array.isArray(info.depends_on) ? info.depends_on : [];
      return deps.length ? "waiting for " + deps.map(str).join(", ") : "waiting";
    }
    return "";
  }

  // What changes the tree's shape or text, apart from the clocks (ticked in place each second).
  const VOLATILE = new Set(["uptime", "next_restart_at", "next_probe_at"]);

  function treeSignature(tree) {
    return JSON.stringify([tree, Array.from(expanded), controlToken !== null],
      (key, value) => (VOLATILE.has(key) ? undefined : value));
  }

  let treeSig = null;
  let timings = [];              // [{span, info}] of the rendered rows, ticked every second
  let timingsAt = 0;             // performance.now() when their info arrived

  function renderTree(tree) {
    timingsAt = performance.now();
    const sig = treeSignature(tree);
    if (sig === treeSig) {
      // Same tree: keep the nodes (a click in progress is not lost), refresh the clocks.
      const byPath = new Map();
      collect(tree, [], byPath);
      for (const entry of timings) {
        const info = byPath.get(entry.pathKey);
        if (info) entry.info = info;
      }
      tickTimings();
      return;
    }
    treeSig = sig;
    timings = [];
    const root = $("tree");
    clear(root);
    const count = appendChildren(root, tree, []);
    $("tree-empty").hidden = count > 0;
  }

  function collect(tree, path, out) {
    if (!tree || typeof tree !== "object") return;
    for (const [key, info] of Object.entries(tree)) {
      if (!info || typeof info !== "object") continue;
      const childPath = path.concat([str(info.name !== undefined ? info.name : key)]);
      out.set(JSON.stringify(childPath), info);
      if (info.children) collect(info.children, childPath, out);
    }
  }

  function tickTimings() {
    const age = (performance.now() - timingsAt) / 1000;
    for (const entry of timings) entry.span.textContent = timingOf(entry.info, age);
    if (lastStatus && statusOk && num(lastStatus.uptime_s) !== null) {
      setText("uptime", duration(num(lastStatus.uptime_s) + age));
    }
  }

  function appendChildren(list, tree, path) {
    if (!tree || typeof tree !== "object") return 0;
    let count = 0;
    for (const [key, info] of Object.entries(tree)) {
      if (!info || typeof info !== "object") continue;
      const name = str(info.name !== undefined ? info.name : key);
      const childPath = path.concat([name]);
      list.append(childItem(info, name, childPath));
      count += 1;
    }
    return count;
  }

  function childItem(info, name, path) {
    const state = str(info.state) || "unknown";
    const pathKey = JSON.stringify(path);
    const item = el("li", {className: "child",
      dataset: {state: state, child: name, path: pathKey, depth: Math.min(path.length - 1, 6)}});
    const deps = Array.isArray(info.depends_on) && info.depends_on.length
      ? el("span", {className: "deps", text: "after " + info.depends_on.map(str).join(", ")}) : null;
    const nested = info.children && typeof info.children === "object";
    const nameCell = el("span", {className: "name"}, name,
      nested ? el("span", {className: "deps", text: "supervisor, " + str(info.strategy || "one_for_one")}) : null,
      deps);
    const reasonCell = el("span", {className: "reason"});
    if (info.last_reason) {
      if (info.last_traceback) {
        const button = el("button", {type: "button", className: "link", text: str(info.last_reason),
          title: "show the traceback"});
        button.setAttribute("aria-expanded", expanded.has(pathKey) ? "true" : "false");
        button.addEventListener("click", () => {
          if (expanded.has(pathKey)) expanded.delete(pathKey); else expanded.add(pathKey);
          if (lastStatus) renderTree(lastStatus.supervisor);
          const again = document.querySelector(".child[data-path='" + CSS.escape(pathKey) + "'] .reason button");
          if (again) again.focus();
        });
        reasonCell.append(button);
      } else {
        reasonCell.textContent = str(info.last_reason);
      }
    }
    const restarts = num(info.restarts);
    const inWindow = num(info.restarts_in_window);
    const actions = el("span", {className: "actions"});
    if (controlToken !== null) {
      // nested children are addressed by path (outer/inner/worker), each name URL-encoded
      const target = path.map(encodeURIComponent).join("/");
      const label = path.join("/");
      actions.append(
        el("button", {type: "button", text: "Release", title: "release from quarantine",
          onclick: () => control("release/" + target, "release " + label)}),
        el("button", {type: "button", text: "Restart", title: "restart this child",
          onclick: () => control("restart/" + target, "restart " + label)}));
    }
    const timing = el("span", {className: "timing", text: timingOf(info, 0)});
    timings.push({span: timing, info: info, pathKey: pathKey});
    const row = el("div", {className: "row"},
      nameCell,
      el("span", {className: "state"}, el("span", {className: "pill", dataset: {state: state}, text: state.replace("_", " ")})),
      el("span", {className: "restarts", text: restarts === null ? "-" : String(restarts) +
        (inWindow ? " (" + inWindow + " in window)" : "")}),
      reasonCell,
      timing,
      actions);
    item.append(row);
    if (info.last_traceback && expanded.has(pathKey)) {
      item.append(el("pre", {className: "traceback", text: str(info.last_traceback)}));
    }
    if (nested) {
      const sub = el("ul", {className: "tree"});
      appendChildren(sub, info.children, path);
      item.append(sub);
    }
    return item;
  }

  function renderReadiness(r) {
    const ready = $("ready");
    if (!r || typeof r !== "object") { ready.textContent = "-"; ready.dataset.ok = "unknown"; return; }
    ready.textContent = r.ready ? "ready" : "not ready";
    ready.dataset.ok = r.ready ? "true" : "false";
    const missing = Array.isArray(r.missing) ? r.missing : [];
    const list = $("missing");
    clear(list);
    for (const item of missing) list.append(el("li", {text: str(item)}));
    $("missing-label").hidden = missing.length === 0;
    const services = $("services");
    clear(services);
    if (r.services && typeof r.services === "object") {
      for (const [name, ok] of Object.entries(r.services)) {
        services.append(el("li", {text: name, dataset: {ok: ok ? "true" : "false"}}));
      }
    }
    const bits = [];
    if (r.pq_mode !== undefined) bits.push("pq " + str(r.pq_mode) + (r.pq_required ? " (required)" : ""));
    if (r.amnesia !== undefined) bits.push("amnesia " + str(r.amnesia));
    $("posture").textContent = bits.join(" · ");
  }

  function renderBus(b) {
    if (!b || typeof b !== "object") return;
    const published = num(b.published);
    const lagged = num(b.lagged);
    const t = performance.now() / 1000;
    let pubRate = null;
    let lagRate = null;
    if (prevBus && published !== null && t - prevBus.t >= 0.5) {
      pubRate = Math.max(0, (published - prevBus.published) / (t - prevBus.t));
      lagRate = lagged === null ? null : Math.max(0, (lagged - prevBus.lagged) / (t - prevBus.t));
      prevBus = {published: published, lagged: lagged || 0, t: t, pubRate: pubRate, lagRate: lagRate};
    } else if (!prevBus && published !== null) {
      prevBus = {published: published, lagged: lagged || 0, t: t, pubRate: null, lagRate: null};
    } else if (prevBus) {
      pubRate = prevBus.pubRate;
      lagRate = prevBus.lagRate;
    }
    setText("bus-rate", pubRate === null ? "measuring" : rate(pubRate));
    setText("bus-published", published);
    setText("bus-lagged", lagged === null ? "-" : String(lagged) + (lagRate ? " (" + rate(lagRate) + ")" : ""));
    setText("bus-receivers", b.receivers);
    setText("bus-retained", str(b.retained) + " / " + str(b.capacity));
    setText("bus-noreceivers", b.no_receivers);
  }

  function renderConfig(s) {
    const c = s.config && typeof s.config === "object" ? s.config : null;
    setText("cfg-version", c && c.version !== undefined ? c.version : s.config_version);
    const outcome = $("cfg-outcome");
    const problems = $("cfg-problems");
    clear(problems);
    const last = c && c.last_reload && typeof c.last_reload === "object" ? c.last_reload : null;
    if (last) {
      const when = num(last.at);
      outcome.textContent = str(last.outcome) + (last.trigger ? " (" + str(last.trigger) + ")" : "") +
        (when !== null ? " at " + clock(new Date((when - clockOffset) * 1000)) : "");
      outcome.className = "outcome-" + str(last.outcome).replace(/[^a-z]/g, "");
      if (Array.isArray(last.problems)) {
        for (const p of last.problems) problems.append(el("li", {text: str(p)}));
      }
    } else {
      outcome.textContent = c ? "none yet" : "not reported";
      outcome.className = "";
    }
    setText("cfg-watcher", c ? c.watcher : null);
    setText("cfg-path", c ? c.path : null);
  }

  function renderLoop(loop) {
    const card = $("loop-card");
    if (!loop || typeof loop !== "object" || loop.enabled === false) {
      setText("loop-lag", loop && loop.enabled === false ? "off" : "not reported");
      setText("loop-max", null);
      setText("loop-blocks", null);
      setText("loop-last", null);
      card.dataset.present = "false";
      return;
    }
    card.dataset.present = "true";
    const ms = (v) => (num(v) === null ? "-" : num(v).toFixed(2) + " ms");
    setText("loop-lag", ms(loop.lag_p50_ms) + " / " + ms(loop.lag_p99_ms));
    setText("loop-max", ms(loop.lag_max_ms));
    setText("loop-blocks", loop.blocks);
    const last = loop.last_block && typeof loop.last_block === "object" ? loop.last_block : null;
    setText("loop-last", last ? ms(last.duration_ms) + (last.ongoing ? " (ongoing)" : "") + (last.at ? " at " + str(last.at) : "") : "none");
  }

  function renderMailboxes(boxes) {
    const list = $("mailboxes");
    clear(list);
    const items = Array.isArray(boxes) ? boxes : [];
    for (const box of items) {
      if (!box || typeof box !== "object") continue;
      const depth = num(box.depth) || 0;
      const capacity = num(box.capacity);
      const meter = el("meter", {min: 0, max: capacity || 1, value: depth, low: (capacity || 1) * 0.5,
        high: (capacity || 1) * 0.8, optimum: 0});
      list.append(el("li", null, el("span", {className: "mono", text: str(box.name)}),
        el("span", {text: String(depth) + " / " + (capacity === null ? "?" : String(capacity))}), meter));
    }
    $("mailbox-empty").hidden = items.length > 0;
  }

  // ------------------------------------------------------------------ event feed

  function describe(ev) {
    switch (ev.type) {
      case "ServiceCrashed": return [str(ev.service), str(ev.reason)];
      case "Health": return [str(ev.service), ev.ok ? "ready" : "not ready"];
      case "ConfigUpdated": return ["", "version " + str(ev.version)];
      case "Shutdown": return ["", "the kernel is draining"];
      case "Lagged": return ["", "missed " + str(ev.missed) + " events (the page fell behind)"];
      default: return ["", JSON.stringify(ev)];
    }
  }

  function addFeed(ev, localText) {
    const feed = $("feed");
    const type = ev.type === "local" ? "local" : str(ev.type);
    let service = "";
    let detail = localText || "";
    if (!localText) [service, detail] = describe(ev);
    const item = el("li", {dataset: {type: type}},
      el("time", {text: clock(new Date())}),
      el("span", {className: "kind", text: type === "local" ? "page" : type}),
      el("span", {className: "detail"},
        service ? el("strong", {text: service}) : null,
        service && detail ? " " : null,
        detail));
    if (ev.type === "Health") item.dataset.ok = ev.ok ? "true" : "false";
    if (ev.type === "ServiceCrashed") item.dataset.service = service;
    feed.prepend(item);
    while (feed.children.length > FEED_MAX) feed.removeChild(feed.lastChild);
    feedCount += 1;
    $("feed-count").textContent = "(" + feedCount + ")";
  }

  // ------------------------------------------------------------------ the SSE stream

  function connect() {
    if (source !== null) source.close();
    const es = new EventSource(EVENTS_URL);
    source = es;
    es.onopen = () => {
      if (source !== es) return;
      if (!streamOpen) addFeed({type: "local"}, "connected to the event stream");
      streamOpen = true;
      showConnection();
      scheduleStatus(0);
    };
    es.onmessage = (message) => {
      let ev;
      try { ev = JSON.parse(message.data); } catch (err) { return; }
      if (!ev || typeof ev !== "object") return;
      addFeed(ev);
      scheduleStatus();
    };
    es.addEventListener("lagged", (message) => {
      let ev;
      try { ev = JSON.parse(message.data); } catch (err) { ev = {type: "Lagged", missed: "?"}; }
      addFeed(ev);
      scheduleStatus();
    });
    es.onerror = () => {
      if (source !== es) return;
      if (streamOpen) addFeed({type: "local"}, "event stream lost; reconnecting");
      streamOpen = false;
      showConnection();
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. 503 while the kernel drained): start over ourselves.
        es.close();
        source = null;
        setTimeout(() => { if (source === null) connect(); }, RECONNECT_MS);
      }
    };
  }

  // ------------------------------------------------------------------ control toolbar

  function setControls(token) {
    controlToken = token;
    treeSig = null;
    $("controls").hidden = token === null;
    $("token-form").hidden = token !== null;
    if (lastStatus) renderTree(lastStatus.supervisor);
  }

  async function control(path, what) {
    const out = $("control-result");
    if (controlToken === null) return;
    out.dataset.ok = "";
    out.textContent = what + ": sending";
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), CONTROL_TIMEOUT_MS);
    try {
      const response = await fetch("control/" + path, {
        method: "POST", cache: "no-store", signal: abort.signal,
        headers: {Authorization: "Bearer " + controlToken}});
      const text = (await response.text()).slice(0, 500);
      out.dataset.ok = response.ok ? "true" : "false";
      out.textContent = what + ": " + response.status + " " + text;
      if (response.status === 401) out.textContent += " (check the token)";
    } catch (err) {
      out.dataset.ok = "false";
      out.textContent = what + ": " + str(err && err.message);
    } finally {
      clearTimeout(timeout);
      scheduleStatus(0);
    }
  }

  function setupToolbar() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("token");
      const token = input.value.trim();
      input.value = "";
      if (token) setControls(token);
    });
    $("forget-token").addEventListener("click", () => {
      setControls(null);
      $("control-result").textContent = "";
    });
    $("reload-config").addEventListener("click", () => control("reload", "reload config"));
  }

  // ------------------------------------------------------------------ start

  function start() {
    setupToolbar();
    showConnection();
    scheduleStatus(0);
    connect();
    setInterval(tickTimings, 1000);  // countdowns and uptimes tick between answers
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
