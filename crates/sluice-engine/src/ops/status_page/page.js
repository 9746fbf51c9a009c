// The status page: fetches /status every two seconds and shows it. Every value from the
// report enters the DOM as text (textContent, attributes of our own), never as HTML.
"use strict";

// Errors on the page are kept where a test (or a person, in the console) can read them.
window.sluiceErrors = [];
// Capturing, so that resources that fail to load (which do not bubble) are counted too.
window.addEventListener(
  "error",
  (e) => window.sluiceErrors.push(e.message ? String(e.message) : `failed to load ${e.target.src || e.target.href}`),
  true,
);
window.addEventListener("unhandledrejection", (e) => window.sluiceErrors.push(String(e.reason)));
document.addEventListener("securitypolicyviolation", (e) => window.sluiceErrors.push(`CSP: ${e.violatedDirective}`));
const consoleError = console.error.bind(console);
console.error = (...args) => {
  window.sluiceErrors.push(args.map(String).join(" "));
  consoleError(...args);
};

// Every 2 s, or as `?refresh_ms=N` says (250 ms to 60 s).
const REFRESH_MS = Math.min(60000, Math.max(250, Number(new URLSearchParams(location.search).get("refresh_ms")) || 2000));
const SVG = "http://www.w3.org/2000/svg";
const LAG_GOAL_US = 1000000;

const $ = (id) => document.getElementById(id);

function setText(id, text, cls) {
  const el = $(id);
  el.textContent = text;
  el.className = el.classList.contains("mono") ? "mono" : "";
  if (cls) el.classList.add(cls);
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return `${seconds} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function when(unix) {
  return new Date(unix * 1000).toLocaleTimeString();
}

function ms(us) {
  return `${(us / 1000).toFixed(1)} ms`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

function render(s) {
  const live = $("liveness");
  live.textContent = s.liveness;
  live.className = `badge ${s.liveness}`;
  $("target-name").textContent = s.target;
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;

  const problems = [];
  if (s.source_error) {
    const since = s.source_unreachable_since_unix ? ` since ${when(s.source_unreachable_since_unix)}` : "";
    setText("source-state", `unreachable${since}`, "bad");
    problems.push(`source unreachable${since}: ${s.source_error}`);
  } else {
    setText("source-state", "yes", "ok");
  }
  setText("source-position", s.source_position || "–");
  setText("heartbeat-age", age(s.last_heartbeat_age_s));

  if (s.target_unreachable_since_unix) {
    setText("target-state", `unreachable since ${when(s.target_unreachable_since_unix)}`, "bad");
    problems.push(`target unreachable since ${when(s.target_unreachable_since_unix)}; sluice is reconnecting`);
  } else if (s.target_error) {
    setText("target-state", "unreachable", "bad");
    problems.push(`target: ${s.target_error}`);
  } else {
    setText("target-state", "yes", "ok");
  }
  setText("writer", s.writer || "none");
  setText("commit-age", age(s.last_commit_age_s));

  if (s.at_source_position === null) {
    setText("lag-state", "unknown");
  } else if (!s.at_source_position) {
    setText("lag-state", `behind (${s.lag_seconds} s)`, "bad");
  } else if (s.caught_up) {
    setText("lag-state", "caught up", "ok");
  } else {
    setText("lag-state", "at the source's position, p99 over the goal recently", "warn");
  }
  setText("checkpoint", s.checkpoint || "none: never started");
  setText("verified", s.verified || "–");
  setText("mismatches", String(s.verify_mismatches), s.verify_mismatches > 0 ? "bad" : "ok");
  setText("unchecked", String(s.verify_unchecked_txns), s.verify_unchecked_txns > 0 ? "warn" : "");
  setText("verify-state", s.verified ? "reading back what is applied" : "not run");

  const banner = $("problem");
  banner.hidden = problems.length === 0;
  banner.textContent = problems.join(" · ");

  renderLag(s);
  renderTables(s.tables);
}

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function renderLag(s) {
  $("lag-source").textContent = s.lag ? s.lag.source : "no samples";
  if (s.lag && s.lag.samples > 0) {
    $("lag-summary").textContent =
      `last ${Math.round(s.lag.window_ms / 1000)} s: p50 ${ms(s.lag.p50_us)}, p99 ${ms(s.lag.p99_us)}, ` +
      `p99.9 ${ms(s.lag.p999_us)}, max ${ms(s.lag.max_us)} (${s.lag.samples} samples)`;
  }
  const chart = $("lag-chart");
  chart.replaceChildren();
  const points = s.lag_history || [];
  const [w, h, left, bottom] = [800, 220, 48, 20];
  const top = Math.max(LAG_GOAL_US * 1.2, ...points.map((p) => p.p99_us));
  const first = points.length ? points[0].at_unix_ms : 0;
  const last = points.length ? points[points.length - 1].at_unix_ms : 1;
  const span = Math.max(last - first, 1);
  const x = (p) => left + ((p.at_unix_ms - first) / span) * (w - left - 8);
  const y = (us) => h - bottom - (us / top) * (h - bottom - 8);
  for (const frac of [0, 0.5, 1]) {
    const yy = y(top * frac);
    chart.append(svgEl("line", { x1: left, x2: w, y1: yy, y2: yy, class: "grid" }));
    const label = svgEl("text", { x: 2, y: yy + 4, class: "axis" });
    label.textContent = ms(top * frac);
    chart.append(label);
  }
  chart.append(svgEl("line", { x1: left, x2: w, y1: y(LAG_GOAL_US), y2: y(LAG_GOAL_US), class: "goal" }));
  for (const q of ["p50", "p99"]) {
    const key = `${q}_us`;
    if (points.length > 1) {
      const path = points.map((p) => `${x(p).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
      chart.append(svgEl("polyline", { points: path, class: q }));
    }
    for (const p of points) {
      const dot = svgEl("circle", { cx: x(p), cy: y(p[key]), r: 2.5, class: `${q} point` });
      const tip = svgEl("title", {});
      tip.textContent = `${new Date(p.at_unix_ms).toLocaleTimeString()} ${q} ${ms(p[key])} (${p.samples} samples)`;
      dot.append(tip);
      chart.append(dot);
    }
  }
  if (points.length) {
    const t = svgEl("text", { x: left, y: h - 4, class: "axis" });
    t.textContent = new Date(first).toLocaleTimeString();
    const t2 = svgEl("text", { x: w - 70, y: h - 4, class: "axis" });
    t2.textContent = new Date(last).toLocaleTimeString();
    chart.append(t, t2);
  }
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function renderTables(tables) {
  const body = $("tables").tBodies[0];
  const rows = tables.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.table = t.target;
    const state = cell(t.backfill === "ready" ? "ready (streaming)" : t.backfill, "state");
    state.dataset.state = t.backfill;
    if (t.backfill_error) state.title = t.backfill_error;
    // Columns the rule holds back are not at the edge: said beside the table's state.
    const held = t.held_columns || [];
    if (held.length) state.textContent += ` · held: ${held.join(", ")}`;
    const progress = document.createElement("td");
    const estimate = Math.max(t.backfill_rows_estimate, t.backfill_rows_copied);
    const done = t.backfill === "ready" ? 1 : estimate > 0 ? t.backfill_rows_copied / estimate : 0;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.min(100, done * 100).toFixed(1)}%`;
    bar.append(fill);
    const label = document.createElement("span");
    label.textContent = ` ${t.backfill_rows_copied} of ~${estimate} source rows`;
    progress.append(bar, label);
    tr.append(
      cell(t.target),
      cell(t.source || "?"),
      cell(t.rows === null ? "?" : String(t.rows)),
      state,
      progress,
      cell(t.backfill !== "ready" && t.backfill_rows_per_s > 0 ? `${t.backfill_rows_per_s} rows/s` : "–"),
      cell(t.backfill_eta_s === null ? "–" : duration(t.backfill_eta_s)),
    );
    return tr;
  });
  body.replaceChildren(...rows);
}

let updates = 0;

async function refresh() {
  try {
    const response = await fetch("/status", { cache: "no-store" });
    if (!response.ok) throw new Error(`GET /status: ${response.status}`);
    const s = await response.json();
    if (s.error) {
      $("liveness").textContent = "error";
      $("liveness").className = "badge error";
      $("problem").hidden = false;
      $("problem").textContent = s.error;
    } else {
      render(s);
    }
    updates += 1;
    document.body.dataset.updates = String(updates);
  } catch (e) {
    // The process stopped (or the network is down): say so, keep trying.
    const live = $("liveness");
    live.textContent = "not answering";
    live.className = "badge unreachable";
    $("problem").hidden = false;
    $("problem").textContent = `cannot reach this sluice: ${e.message}`;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
