/**
 * The status page served at `GET /` of the admin server: one self-contained HTML document, no build
 * step, no CDN, no framework. It holds no data itself; its script polls `status.json` (same origin)
 * every few seconds and draws what comes back.
 *
 * Account ids and error texts are hostile input (anyone can register an id in an IM app), so the
 * script only ever puts data into the page through `textContent` and numeric SVG attributes, never
 * through HTML parsing; and the page is sent with a Content-Security-Policy that runs only its own
 * script (by nonce), so a mistake there still could not run injected code.
 */
import { randomBytes } from 'node:crypto';

/** How often the page polls `status.json`. */
export const STATUS_REFRESH_MS = 5_000;

/** The page, with a fresh CSP nonce, and the headers it must be sent with. */
export function renderStatusPage(): { html: string; headers: Record<string, string> } {
  const nonce = randomBytes(16).toString('base64');
  return {
    html: PAGE.replaceAll('__NONCE__', nonce).replace('__REFRESH_MS__', String(STATUS_REFRESH_MS)),
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
      'content-security-policy': [
        "default-src 'none'",
        `script-src 'nonce-${nonce}'`,
        `style-src 'nonce-${nonce}'`,
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
      ].join('; '),
    },
  };
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tim-friend-mirror status</title>
<style nonce="__NONCE__">
:root { --fg:#1d2433; --muted:#667085; --line:#e4e7ec; --bg:#f8f9fb; --card:#fff; --ok:#12b76a; --warn:#f79009; --bad:#d92d20; --accent:#2e6be6; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; flex-wrap:wrap; gap:12px; align-items:baseline; padding:14px 20px; background:var(--card); border-bottom:1px solid var(--line); }
header h1 { font-size:17px; margin:0; }
header .meta { color:var(--muted); }
.pill { display:inline-block; padding:1px 8px; border-radius:999px; font-size:12px; font-weight:600; color:#fff; background:var(--muted); }
.pill.ok { background:var(--ok); } .pill.bad { background:var(--bad); } .pill.warn { background:var(--warn); }
main { padding:16px 20px; display:grid; gap:16px; grid-template-columns:repeat(auto-fit, minmax(260px, 1fr)); }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
section.wide { grid-column:1 / -1; }
h2 { font-size:13px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); margin:0 0 8px; }
.big { font-size:26px; font-weight:650; }
.sub { color:var(--muted); }
table { border-collapse:collapse; width:100%; }
td, th { text-align:left; padding:3px 6px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.id { font-family:ui-monospace, SFMono-Regular, Menlo, monospace; word-break:break-all; }
.bar { height:10px; background:var(--line); border-radius:5px; overflow:hidden; margin:6px 0; }
.bar > div { height:100%; background:var(--accent); width:0; }
svg { width:100%; height:180px; display:block; }
#auth { display:none; }
#auth.shown { display:block; }
#problem { color:var(--bad); }
.empty { color:var(--muted); font-style:italic; }
</style>
</head>
<body>
<header>
  <h1>tim-friend-mirror</h1>
  <span id="ready" class="pill">…</span>
  <span class="meta">replica <span id="replica">…</span></span>
  <span class="meta" id="updated">loading…</span>
  <span id="problem"></span>
</header>
<section id="auth" class="wide">
  <h2>Admin token</h2>
  <p>This server has <code>ADMIN_TOKEN</code> set. Enter it to see the status (kept in this tab only).</p>
  <form id="auth-form"><input id="token" type="password" autocomplete="off" size="40"> <button>Show</button></form>
</section>
<main>
  <section>
    <h2>Accounts</h2>
    <div class="big" id="accounts-total">–</div>
    <div class="sub"><span id="accounts-active">–</span> active</div>
    <table id="by-status"></table>
  </section>
  <section>
    <h2>Current sweep</h2>
    <div class="big" id="sweep-pct">–</div>
    <div class="bar"><div id="sweep-bar"></div></div>
    <div class="sub" id="sweep-detail">–</div>
    <div class="sub" id="sweep-eta">–</div>
  </section>
  <section>
    <h2>Sync lag</h2>
    <table>
      <tr><th>p50 since last sync</th><td class="n" id="lag-p50">–</td></tr>
      <tr><th>p95 since last sync</th><td class="n" id="lag-p95">–</td></tr>
      <tr><th>oldest due account waiting</th><td class="n" id="lag-oldest">–</td></tr>
      <tr><th>overdue (not synced within 2 × interval)</th><td class="n" id="lag-overdue">–</td></tr>
      <tr><th>resyncs pending</th><td class="n" id="resyncs">–</td></tr>
    </table>
  </section>
  <section>
    <h2>Call budget</h2>
    <div class="big" id="rate-now">–</div>
    <div class="sub">calls/s by this replica over the last minute</div>
    <div class="sub">its share <span id="share">–</span>/s of <span id="quota">–</span>/s, <span id="peers">–</span> replica(s)</div>
  </section>
  <section class="wide">
    <h2>Calls per second, this replica, last 10 minutes</h2>
    <svg id="chart" viewBox="0 0 600 180" preserveAspectRatio="none" role="img" aria-label="calls per second"></svg>
    <div class="sub">blue: calls/s per 5 s · red line: the app's quota · dashed: this replica's share</div>
  </section>
  <section>
    <h2>Replicas</h2>
    <table id="replicas"></table>
  </section>
  <section>
    <h2>Webhooks</h2>
    <table id="webhooks"></table>
  </section>
  <section class="wide">
    <h2>Latest errors</h2>
    <table id="errors"></table>
  </section>
</main>
<script nonce="__NONCE__">
"use strict";
const REFRESH_MS = __REFRESH_MS__;
const $ = (id) => document.getElementById(id);
const fmt = (n, d = 0) => (n === null || n === undefined || Number.isNaN(n)) ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
function dur(s) {
  if (s === null || s === undefined) return "–";
  s = Math.max(0, Math.round(s));
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}
// Rows are built with textContent only: ids and error texts are untrusted.
function fill(table, head, rows, empty) {
  table.replaceChildren();
  if (rows.length === 0) {
    const tr = table.insertRow(); const td = tr.insertCell(); td.className = "empty"; td.textContent = empty; return;
  }
  const hr = table.insertRow();
  for (const [label, cls] of head) { const th = document.createElement("th"); th.textContent = label; if (cls) th.className = cls; hr.appendChild(th); }
  for (const row of rows) {
    const tr = table.insertRow();
    row.forEach((v, i) => { const td = tr.insertCell(); td.textContent = String(v); if (head[i][1]) td.className = head[i][1]; });
  }
}
function chart(buckets, bucketSeconds, quota, share) {
  const svg = $("chart"); const NS = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const W = 600, H = 180, pad = 4;
  const rates = buckets.map((b) => b.calls / bucketSeconds);
  const top = Math.max(quota, ...rates, 1) * 1.1;
  const y = (v) => H - pad - (v / top) * (H - 2 * pad);
  const w = W / Math.max(rates.length, 1);
  rates.forEach((r, i) => {
    const rect = document.createElementNS(NS, "rect");
    rect.setAttribute("x", String(i * w)); rect.setAttribute("width", String(Math.max(w - 1, 1)));
    rect.setAttribute("y", String(y(r))); rect.setAttribute("height", String(H - pad - y(r)));
    rect.setAttribute("fill", "#2e6be6"); svg.appendChild(rect);
  });
  const line = (v, color, dash) => {
    const l = document.createElementNS(NS, "line");
    l.setAttribute("x1", "0"); l.setAttribute("x2", String(W)); l.setAttribute("y1", String(y(v))); l.setAttribute("y2", String(y(v)));
    l.setAttribute("stroke", color); l.setAttribute("stroke-width", "1.5"); if (dash) l.setAttribute("stroke-dasharray", "6 4");
    svg.appendChild(l);
  };
  line(quota, "#d92d20", false);
  line(share, "#667085", true);
}
function render(s) {
  $("replica").textContent = s.replica.id;
  const ready = $("ready"); ready.textContent = s.ready ? "ready" : "not ready"; ready.className = "pill " + (s.ready ? "ok" : "bad");
  $("updated").textContent = "updated " + new Date(s.generatedAt).toLocaleTimeString();
  $("rate-now").textContent = fmt(s.replica.callsPerSecond, 1);
  $("share").textContent = fmt(s.replica.share); $("quota").textContent = fmt(s.replica.rateLimit); $("peers").textContent = fmt(s.replica.peers);
  chart(s.calls.buckets, s.calls.bucketSeconds, s.replica.rateLimit, s.replica.share);
  fill($("webhooks"), [["outcome"], ["callbacks", "n"]],
    s.webhooks.enabled ? Object.entries(s.webhooks.outcomes).map(([k, v]) => [k, fmt(v)]) : [],
    s.webhooks.enabled ? "no callback received yet" : "webhook receiver off (TIM_CALLBACK_TOKEN unset)");
  const o = s.overview;
  $("problem").textContent = s.overviewError ? "database: " + s.overviewError : "";
  if (!o) return;
  $("accounts-total").textContent = fmt(o.accounts.total);
  $("accounts-active").textContent = fmt(o.accounts.active);
  fill($("by-status"), [["status"], ["accounts", "n"]], Object.entries(o.accounts.byStatus).map(([k, v]) => [k, fmt(v)]), "no accounts");
  const pct = o.accounts.active ? (100 * o.sweep.syncedWithinInterval) / o.accounts.active : 100;
  $("sweep-pct").textContent = fmt(pct, 1) + " %";
  $("sweep-bar").style.width = Math.min(100, pct) + "%";
  $("sweep-detail").textContent = fmt(o.sweep.syncedWithinInterval) + " of " + fmt(o.accounts.active) + " active accounts synced within SYNC_INTERVAL (" + dur(s.intervalSeconds) + "); " + fmt(o.sweep.dueNow) + " due now";
  $("sweep-eta").textContent = o.sweep.dueNow === 0 ? "nothing due: caught up" :
    (o.sweep.etaSeconds === null ? "no account finished in the last minute: no estimate" :
      "due accounts done in about " + dur(o.sweep.etaSeconds) + " at " + fmt(o.sweep.accountsPerSecond, 1) + " accounts/s");
  $("lag-p50").textContent = dur(o.lag.p50Seconds); $("lag-p95").textContent = dur(o.lag.p95Seconds);
  $("lag-oldest").textContent = dur(o.lag.oldestDueSeconds); $("lag-overdue").textContent = fmt(o.lag.overdue);
  $("resyncs").textContent = fmt(o.pendingResyncs);
  fill($("replicas"), [["replica", "id"], ["share/s", "n"], ["heartbeat", "n"]],
    o.replicas.map((r) => [r.replicaId + (r.replicaId === s.replica.id ? " (this one)" : ""), fmt(r.callsPerSecond), dur(r.heartbeatAgeSeconds) + " ago"]), "no live replica");
  fill($("errors"), [["account", "id"], ["status"], ["when"], ["error"]],
    o.errors.map((e) => [e.accountId, e.status, e.at ? new Date(e.at).toLocaleString() : "", e.error]), "no errors");
}
function token() { return sessionStorage.getItem("adminToken"); }
// One timer at a time, even when a token submitted mid-poll starts another poll.
let timer;
async function poll() {
  try {
    const headers = token() ? { authorization: "Bearer " + token() } : {};
    const res = await fetch("status.json", { headers, cache: "no-store" });
    if (res.status === 401 || res.status === 403) {
      $("auth").className = "wide shown"; $("updated").textContent = "admin token needed"; return;
    }
    $("auth").className = "wide";
    if (!res.ok) throw new Error("status.json answered " + res.status);
    render(await res.json());
    document.body.dataset.loaded = "true";
  } catch (err) {
    $("problem").textContent = "cannot reach the daemon: " + err.message;
  } finally {
    clearTimeout(timer);
    timer = setTimeout(poll, REFRESH_MS);
  }
}
// A token may come in the URL fragment (#token=...): fragments never reach the server or its logs.
const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
if (m) { sessionStorage.setItem("adminToken", decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname); }
$("auth-form").addEventListener("submit", (e) => { e.preventDefault(); sessionStorage.setItem("adminToken", $("token").value); $("token").value = ""; poll(); });
poll();
</script>
</body>
</html>
`;
