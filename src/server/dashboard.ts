/**
 * The dashboard: one self-contained page (inline CSS and JS, no CDN: demo machines are often
 * offline). It reads /api/stream with fetch() rather than EventSource because EventSource
 * cannot send the Authorization header that API_TOKEN requires. Each frame carries the Redis
 * leaderboards, /api/stats and the server's own rate history; the engagement timeline and the
 * recent events come from the analytics store (/api/timeline, /api/recent) every 3 s. Every live element has a
 * stable data-testid so browser tests can compare it with Redis.
 * (The script deliberately avoids template literals: it lives inside one.)
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Engagement — live</title>
<style>
  :root { --bg:#0f1419; --panel:#182029; --line:#263241; --text:#e6edf3; --muted:#8b9bb0; --accent:#4cc2ff;
          --good:#3fb950; --bad:#f85149; --warn:#d29922; --podcast:#a371f7; --newsletter:#e3b341; --video:#ff7b72; }
  @media (prefers-color-scheme: light) {
    :root { --bg:#f6f8fa; --panel:#ffffff; --line:#d8dee4; --text:#1f2328; --muted:#59636e; --accent:#0969da; }
  }
  * { box-sizing: border-box; }
  body { margin:0; background:var(--bg); color:var(--text); font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
  header { display:flex; align-items:center; gap:12px; padding:14px 24px; border-bottom:1px solid var(--line); }
  header h1 { font-size:18px; margin:0; font-weight:600; }
  .status { display:inline-flex; align-items:center; gap:6px; color:var(--muted); font-size:13px; margin-left:auto; }
  .dot { width:9px; height:9px; border-radius:50%; background:var(--warn); }
  [data-state="live"] .dot { background:var(--good); }
  [data-state="error"] .dot, [data-state="unauthorized"] .dot { background:var(--bad); }
  main { padding:20px 24px; display:grid; gap:18px; max-width:1400px; margin:0 auto; }
  .kpis { display:grid; grid-template-columns:repeat(auto-fit,minmax(170px,1fr)); gap:12px; }
  .card { background:var(--panel); border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
  .kpi .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
  .kpi .value { font-size:26px; font-weight:600; font-variant-numeric:tabular-nums; margin-top:2px; }
  .kpi .sub { color:var(--muted); font-size:12px; }
  .grid2 { display:grid; grid-template-columns:2fr 1fr; gap:18px; }
  @media (max-width: 900px) { .grid2 { grid-template-columns:1fr; } }
  h2 { font-size:14px; margin:0 0 10px; color:var(--muted); font-weight:600; text-transform:uppercase; letter-spacing:.04em; }
  table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
  th, td { text-align:left; padding:7px 8px; border-bottom:1px solid var(--line); }
  th { color:var(--muted); font-weight:500; font-size:12px; }
  td.num, th.num { text-align:right; white-space:nowrap; }
  td.rank { color:var(--muted); width:28px; }
  .title { font-weight:500; }
  .id { color:var(--muted); font-size:11px; font-family:ui-monospace,monospace; }
  .badge { display:inline-block; font-size:11px; padding:1px 7px; border-radius:9px; border:1px solid currentColor; margin-right:6px; }
  .badge.podcast { color:var(--podcast); } .badge.newsletter { color:var(--newsletter); } .badge.video { color:var(--video); }
  .badge.unknown { color:var(--muted); }
  .bar { height:4px; background:var(--accent); border-radius:2px; margin-top:4px; opacity:.7; }
  .device { display:grid; grid-template-columns:110px 1fr 60px; align-items:center; gap:8px; padding:5px 0; }
  .device .track { background:var(--line); border-radius:3px; height:10px; }
  .device .fill { background:var(--accent); height:10px; border-radius:3px; }
  .device .n { text-align:right; font-variant-numeric:tabular-nums; }
  .up { color:var(--good); } .down { color:var(--bad); }
  .empty { color:var(--muted); padding:14px 8px; }
  svg.spark { width:100%; height:48px; display:block; margin-top:6px; }
  svg.spark path { fill:none; stroke:var(--accent); stroke-width:1.6; }
  .errors { color:var(--bad); font-size:13px; min-height:1em; }
  form.token { display:none; gap:8px; align-items:center; }
  form.token input { background:var(--panel); color:var(--text); border:1px solid var(--line); border-radius:6px; padding:6px 8px; width:260px; }
  form.token button { background:var(--accent); color:#fff; border:0; border-radius:6px; padding:7px 12px; cursor:pointer; }
  .behind { color:var(--warn); } .failed { color:var(--bad); font-weight:600; }
  svg.chart { width:100%; height:auto; display:block; }
  svg.chart text { fill:var(--muted); font-size:10px; font-family:system-ui,sans-serif; }
  svg.chart line { stroke:var(--line); }
  .legend { display:flex; gap:14px; font-size:12px; color:var(--muted); align-items:center; flex-wrap:wrap; }
  .legend i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
  .chart-head { display:flex; justify-content:space-between; align-items:baseline; gap:10px; }
  .toggle button { background:transparent; color:var(--muted); border:1px solid var(--line); border-radius:6px; padding:2px 8px; font-size:12px; cursor:pointer; }
  .toggle button[aria-pressed="true"] { color:var(--text); border-color:var(--accent); }
  .progress { background:var(--line); border-radius:3px; height:8px; margin-top:4px; }
  .progress div { background:var(--accent); height:8px; border-radius:3px; }
  .muted { color:var(--muted); }
  svg.spark path.delivered { stroke:var(--good); stroke-dasharray:3 2; }
  td.when { color:var(--muted); white-space:nowrap; }
</style>
</head>
<body>
<header>
  <h1>Engagement pipeline — live</h1>
  <form class="token" data-testid="token-form">
    <input type="password" placeholder="API token" autocomplete="current-password" aria-label="API token">
    <button type="submit">Connect</button>
  </form>
  <span class="status" data-testid="connection-status" data-state="connecting"><span class="dot"></span><span class="text">connecting…</span></span>
</header>
<main>
  <section class="kpis">
    <div class="card kpi" style="grid-column: span 2">
      <div class="label">Events / second received</div>
      <div class="value" data-testid="events-per-second">–</div>
      <svg class="spark" data-testid="throughput-sparkline" viewBox="0 0 300 48" preserveAspectRatio="none" aria-label="events per second, last ten minutes"><path class="received" d=""></path><path class="delivered" d=""></path></svg>
      <div class="legend"><span><i style="background:var(--accent)"></i>received</span><span><i style="background:var(--good)"></i>delivered to every sink</span><span data-testid="throughput-span">last 10 minutes</span></div>
    </div>
    <div class="card kpi"><div class="label">Events received</div><div class="value" data-testid="total-events">–</div><div class="sub" data-testid="uptime"></div></div>
    <div class="card kpi"><div class="label">Analytics rows</div><div class="value" data-testid="analytics-rows">–</div><div class="sub">engagement.events_enriched</div></div>
    <div class="card kpi"><div class="label">Avg engagement · 60 min</div><div class="value" data-testid="avg-engagement">–</div><div class="sub" data-testid="total-engagement"></div></div>
    <div class="card kpi"><div class="label">Dead letters</div><div class="value" data-testid="dead-letters">–</div><div class="sub" data-testid="dead-letters-sub"></div></div>
    <div class="card kpi"><div class="label">Replication lag</div><div class="value" data-testid="replication-lag">–</div><div class="sub" data-testid="confirmed-lsn"></div></div>
  </section>
  <div class="errors" data-testid="errors"></div>
  <section class="card">
    <div class="chart-head">
      <h2>Engagement · last 60 minutes, per minute</h2>
      <span class="toggle" data-testid="timeline-toggle"><button type="button" data-measure="events" aria-pressed="true">events</button> <button type="button" data-measure="seconds" aria-pressed="false">time engaged</button></span>
    </div>
    <svg class="chart" data-testid="timeline-chart" viewBox="0 0 1000 200" role="img" aria-label="engagement per minute by content type"></svg>
    <div class="legend" data-testid="timeline-legend"></div>
  </section>
  <section class="grid2">
    <div class="card">
      <h2>Top content · last 10 minutes</h2>
      <table data-testid="top-content-table">
        <thead><tr><th></th><th>Content</th><th class="num">Events</th><th class="num">Time engaged</th><th class="num">Avg / event</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
    <div class="card">
      <h2>Devices · last 10 minutes</h2>
      <div data-testid="top-device-list"></div>
      <h2 style="margin-top:18px">Backfills</h2>
      <div data-testid="backfill-list"><div class="empty">None running.</div></div>
    </div>
  </section>
  <section class="card">
    <h2>Sinks · received → delivered</h2>
    <table data-testid="sink-table">
      <thead><tr><th>Sink</th><th>State</th><th class="num">Received</th><th class="num">Delivered</th><th class="num">Lag</th><th class="num">p50</th><th class="num">p99</th><th class="num">Last success</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section class="card">
    <h2>Recent events · from the analytics store</h2>
    <table data-testid="recent-table">
      <thead><tr><th>When</th><th>Content</th><th>Event</th><th>Device</th><th class="num">Engaged</th><th class="num">Of length</th></tr></thead>
      <tbody><tr><td colspan="6" class="empty">Waiting for events…</td></tr></tbody>
    </table>
  </section>
  <div class="sub" style="color:var(--muted);font-size:12px">Updated <span data-testid="last-update">never</span> · <a href="metrics" style="color:var(--accent)">/metrics</a> · <a href="api/stats" style="color:var(--accent)">/api/stats</a> · <a href="api/timeline?minutes=60" style="color:var(--accent)">/api/timeline</a> · <a href="api/recent?limit=20" style="color:var(--accent)">/api/recent</a> · /api/events (SSE)</div>
</main>
<script>
(function () {
  'use strict';
  var $ = function (sel) { return document.querySelector(sel); };
  var SVG = 'http://www.w3.org/2000/svg';
  var TYPES = ['podcast', 'newsletter', 'video', 'unknown'];
  var COLORS = { podcast: 'var(--podcast)', newsletter: 'var(--newsletter)', video: 'var(--video)', unknown: 'var(--muted)' };
  var LAG_WARN_SECONDS = 30;
  var token = readToken();
  var measure = 'events';
  var lastTimeline = null;
  var totals = null;

  function readToken() {
    var m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      var t = decodeURIComponent(m[1]);
      sessionStorage.setItem('engagement-token', t);
      // Drop the token from the address bar (and from anything that copies the URL).
      window.history.replaceState(null, '', location.pathname + location.search);
      return t;
    }
    return sessionStorage.getItem('engagement-token');
  }
  function authHeaders() { return token ? { Authorization: 'Bearer ' + token } : {}; }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === 'text') node.textContent = attrs[k];
      else if (k === 'class') node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) node.setAttribute(k, attrs[k]);
    if (text != null) node.textContent = text;
    return node;
  }

  function fmtInt(n) { return n == null ? '–' : Math.round(n).toLocaleString('en-US'); }
  function fmtRate(n) { return n == null ? '–' : (n >= 100 ? Math.round(n).toLocaleString('en-US') : (Math.round(n * 10) / 10).toString()); }
  function fmtMs(ms) { return ms == null ? '–' : (ms >= 1000 ? (ms / 1000).toFixed(2) + ' s' : ms.toFixed(ms < 10 ? 1 : 0) + ' ms'); }
  function fmtPct(f) { return f == null ? '–' : (f * 100 >= 10 ? Math.round(f * 100) : (f * 100).toFixed(1)) + ' %'; }
  function fmtBytes(b) {
    if (b == null) return '–';
    var units = ['B', 'KiB', 'MiB', 'GiB'];
    var i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b : b.toFixed(1)) + ' ' + units[i];
  }
  // Durations in the largest two units that matter: 42 s, 12 min 5 s, 5 h 12 min, 40 days 9 h.
  function fmtDuration(s) {
    if (s == null) return '–';
    s = Math.round(s);
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d > 0) return d + (d === 1 ? ' day ' : ' days ') + h + ' h';
    if (h > 0) return h + ' h ' + m + ' min';
    if (m > 0) return m + ' min ' + r + ' s';
    return r + ' s';
  }
  function fmtLag(s) {
    if (s == null) return '–';
    return s < 10 ? s.toFixed(2) + ' s' : fmtDuration(s);
  }
  function ago(iso) {
    if (!iso) return 'never';
    var s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    return s < 60 ? Math.round(s) + ' s ago' : fmtDuration(s) + ' ago';
  }
  function clock(iso) { return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }); }

  function setStatus(state, text) {
    var s = $('[data-testid="connection-status"]');
    s.setAttribute('data-state', state);
    s.querySelector('.text').textContent = text;
  }

  function badge(type) { type = type || 'unknown'; return el('span', { class: 'badge ' + type, text: type }); }

  function renderTop(items) {
    var body = $('[data-testid="top-content-table"] tbody');
    body.replaceChildren();
    if (!items) return;
    if (items.length === 0) {
      body.appendChild(el('tr', {}, [el('td', { colspan: '5', class: 'empty', text: 'No events in the last 10 minutes yet.' })]));
      return;
    }
    var max = items[0].score || 1;
    items.forEach(function (it, i) {
      // The title is what people recognise; the id is one hover away.
      var name = el('td', { title: it.content_id }, [
        el('div', { class: 'title' }, [badge(it.content_type), document.createTextNode(it.title || it.content_id)]),
        el('div', { class: 'bar', style: 'width:' + Math.max(2, (100 * it.score) / max) + '%' }),
      ]);
      var perEvent = it.events ? it.engagement_seconds / it.events : null;
      body.appendChild(el('tr', {
        'data-testid': 'top-content-row', 'data-content-id': it.content_id, 'data-rank': String(i + 1),
        'data-score': String(it.score), 'data-events': String(it.events), 'data-seconds': String(it.engagement_seconds),
      }, [
        el('td', { class: 'rank', text: String(i + 1) }),
        name,
        el('td', { class: 'num', 'data-testid': 'top-content-events', text: fmtInt(it.events) }),
        el('td', { class: 'num', 'data-testid': 'top-content-seconds', title: it.engagement_seconds + ' s', text: fmtDuration(it.engagement_seconds) }),
        el('td', { class: 'num', text: fmtDuration(perEvent) }),
      ]));
    });
  }

  function renderDevices(items) {
    var box = $('[data-testid="top-device-list"]');
    box.replaceChildren();
    if (!items) return;
    if (items.length === 0) { box.appendChild(el('div', { class: 'empty', text: 'No devices yet.' })); return; }
    var max = items[0].score || 1;
    items.forEach(function (d) {
      box.appendChild(el('div', { class: 'device', 'data-testid': 'top-device-row', 'data-device': d.device, 'data-score': String(d.score) }, [
        el('span', { text: d.device }),
        el('div', { class: 'track' }, [el('div', { class: 'fill', style: 'width:' + (100 * d.score) / max + '%' })]),
        el('span', { class: 'n', text: fmtInt(d.score) }),
      ]));
    });
  }

  function sinkState(s) {
    if (s.state) return s.state;
    if (!s.up) return 'down';
    return s.lagSeconds != null && s.lagSeconds > LAG_WARN_SECONDS ? 'behind' : 'up';
  }

  function renderSinks(stats, extras) {
    var body = $('[data-testid="sink-table"] tbody');
    body.replaceChildren();
    var t = extras && extras.totals;
    (stats.sinks || []).forEach(function (s) {
      if (s.lagSeconds == null && extras && extras.sinkLagSeconds && extras.sinkLagSeconds[s.name] != null)
        s.lagSeconds = extras.sinkLagSeconds[s.name];
      var state = sinkState(s);
      var received = s.received != null ? s.received : (t ? t.received : null);
      var delivered = s.delivered != null ? s.delivered : (t && t.delivered[s.name] != null ? t.delivered[s.name] : null);
      var behindBy = received != null && delivered != null ? received - delivered : null;
      body.appendChild(el('tr', { 'data-testid': 'sink-row', 'data-sink': s.name, 'data-up': String(s.up), 'data-state': state }, [
        el('td', { text: s.name }),
        el('td', { class: state === 'up' ? 'up' : state === 'behind' ? 'behind' : state === 'failed' ? 'failed' : 'down', 'data-testid': 'sink-state', text: '● ' + state }),
        el('td', { class: 'num', 'data-testid': 'sink-received', text: fmtInt(received) }),
        el('td', { class: 'num', 'data-testid': 'sink-delivered', title: behindBy ? fmtInt(behindBy) + ' not yet delivered' : '', text: fmtInt(delivered) }),
        el('td', { class: 'num', 'data-testid': 'sink-lag', text: fmtLag(s.lagSeconds) }),
        el('td', { class: 'num', 'data-testid': 'sink-p50', text: fmtMs(s.p50Ms) }),
        el('td', { class: 'num', 'data-testid': 'sink-p99', text: fmtMs(s.p99Ms) }),
        el('td', { class: 'num', text: ago(s.lastSuccessAt) }),
      ]));
    });
  }

  function renderStats(stats, extras) {
    if (!stats) return;
    $('[data-testid="events-per-second"]').textContent = fmtRate(stats.eventsPerSecond);
    $('[data-testid="total-events"]').textContent = fmtInt(stats.totalEvents);
    $('[data-testid="dead-letters"]').textContent = fmtInt(stats.deadLetters);
    var dl = [];
    if (stats.deadLettersOldestSeconds != null && stats.deadLetters > 0) dl.push('oldest ' + fmtDuration(stats.deadLettersOldestSeconds));
    if (stats.deadLettersRedriven != null) dl.push(fmtInt(stats.deadLettersRedriven) + ' redriven');
    $('[data-testid="dead-letters-sub"]').textContent = dl.join(' · ');
    $('[data-testid="replication-lag"]').textContent = fmtBytes(stats.replicationLagBytes);
    $('[data-testid="confirmed-lsn"]').textContent = stats.confirmedLsn ? 'confirmed LSN ' + stats.confirmedLsn : '';
    $('[data-testid="uptime"]').textContent = 'running for ' + fmtDuration((Date.now() - Date.parse(stats.startedAt)) / 1000);
    renderSinks(stats, extras);
  }

  function renderExtras(extras) {
    if (!extras) return;
    totals = extras.totals;
    $('[data-testid="analytics-rows"]').textContent = fmtInt(extras.analyticsRows);
    drawSpark(extras.history || []);
    renderBackfills(extras.backfills || []);
  }

  function renderBackfills(list) {
    var box = $('[data-testid="backfill-list"]');
    box.replaceChildren();
    if (list.length === 0) { box.appendChild(el('div', { class: 'empty', text: 'None running.' })); return; }
    list.forEach(function (b) {
      var pct = b.rowsTotal ? Math.min(100, (100 * b.rowsDone) / b.rowsTotal) : null;
      var state = b.live && b.status !== 'failed' ? 'running' : b.status === 'failed' ? 'failed' : 'interrupted';
      box.appendChild(el('div', { 'data-testid': 'backfill-row', 'data-state': state, style: 'margin-bottom:10px' }, [
        el('div', {}, [
          el('span', { class: 'title', text: '#' + b.id + ' → ' + b.sinks }),
          el('span', { class: state === 'running' ? 'up' : 'failed', text: '  ' + state + (pct != null ? ' · ' + pct.toFixed(1) + ' %' : '') }),
        ]),
        el('div', { class: 'progress' }, [el('div', { style: 'width:' + (pct || 0) + '%' })]),
        el('div', { class: 'sub muted', text: fmtInt(b.rowsDone) + ' / ' + fmtInt(b.rowsTotal) + ' rows · ' + b.fromTs.slice(0, 16) + ' … ' + b.toTs.slice(0, 16) + (b.error ? ' · ' + b.error : '') }),
      ]));
    });
  }

  // Events/s over the last ten minutes, sampled by the server every second.
  function drawSpark(history) {
    var n = 600;
    var delivered = history.map(function (p) {
      var values = Object.keys(p.delivered).map(function (k) { return p.delivered[k]; });
      return values.length ? Math.min.apply(null, values) : 0;
    });
    var received = history.map(function (p) { return p.received; });
    var max = Math.max.apply(null, received.concat(delivered, [1]));
    var step = 300 / (n - 1);
    var offset = n - history.length;
    function path(values) {
      return values.map(function (v, i) {
        return (i === 0 ? 'M' : 'L') + ((offset + i) * step).toFixed(1) + ' ' + (46 - (v / max) * 44).toFixed(1);
      }).join(' ');
    }
    $('[data-testid="throughput-sparkline"] path.received').setAttribute('d', path(received));
    $('[data-testid="throughput-sparkline"] path.delivered').setAttribute('d', path(delivered));
    $('[data-testid="throughput-span"]').textContent = history.length > 0
      ? 'last ' + fmtDuration(history.length) + ' · peak ' + fmtRate(Math.max.apply(null, received)) + '/s'
      : 'collecting…';
  }

  function renderTimeline(t) {
    lastTimeline = t;
    var chart = $('[data-testid="timeline-chart"]');
    chart.replaceChildren();
    var W = 1000, H = 200, left = 48, bottom = 18, top = 8;
    var from = Date.parse(t.from);
    var slots = t.minutes;
    var byMinute = {};
    var sumEvents = 0, sumSeconds = 0, pctWeighted = 0, pctCount = 0;
    t.points.forEach(function (p) {
      var i = Math.round((Date.parse(p.minute) - from) / 60000);
      if (i < 0 || i >= slots) return;
      (byMinute[i] = byMinute[i] || []).push(p);
      sumEvents += p.events; sumSeconds += p.engagement_seconds;
      if (p.avg_engagement_pct != null && p.pct_events) { pctWeighted += p.avg_engagement_pct * p.pct_events; pctCount += p.pct_events; }
    });
    $('[data-testid="avg-engagement"]').textContent = pctCount ? fmtPct(pctWeighted / pctCount) : '–';
    $('[data-testid="total-engagement"]').textContent = fmtInt(sumEvents) + ' events · ' + fmtDuration(sumSeconds) + ' engaged';
    var value = function (p) { return measure === 'events' ? p.events : p.engagement_seconds; };
    var max = 0;
    Object.keys(byMinute).forEach(function (k) {
      var total = byMinute[k].reduce(function (s, p) { return s + value(p); }, 0);
      if (total > max) max = total;
    });
    max = max || 1;
    var plotH = H - bottom - top, plotW = W - left - 4, bw = plotW / slots;
    [0, 0.5, 1].forEach(function (f) {
      var y = top + plotH * (1 - f);
      chart.appendChild(svg('line', { x1: left, x2: W, y1: y, y2: y }));
      chart.appendChild(svg('text', { x: left - 4, y: y + 3, 'text-anchor': 'end' }, measure === 'events' ? fmtInt(max * f) : fmtDuration(max * f)));
    });
    for (var i = 0; i < slots; i++) {
      var points = byMinute[i] || [];
      var y = top + plotH;
      var minute = new Date(from + i * 60000);
      var g = svg('g', { 'data-testid': 'timeline-bar', 'data-minute': minute.toISOString(), 'data-events': String(points.reduce(function (s, p) { return s + p.events; }, 0)) });
      TYPES.forEach(function (type) {
        var p = points.filter(function (q) { return q.content_type === type; })[0];
        if (!p) return;
        var h = (value(p) / max) * plotH;
        y -= h;
        g.appendChild(svg('rect', { x: (left + i * bw + 0.5).toFixed(1), y: y.toFixed(1), width: Math.max(1, bw - 1).toFixed(1), height: h.toFixed(1), fill: COLORS[type] }));
      });
      g.appendChild(svg('title', {}, minute.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) + '  ' + points.map(function (p) {
        return p.content_type + ': ' + fmtInt(p.events) + ' events, ' + fmtDuration(p.engagement_seconds);
      }).join('; ')));
      chart.appendChild(g);
      if (i % 10 === 0 || i === slots - 1) {
        var minsAgo = slots - 1 - i;
        chart.appendChild(svg('text', { x: left + i * bw + bw / 2, y: H - 4, 'text-anchor': 'middle' }, minsAgo === 0 ? 'now' : '−' + minsAgo + ' min'));
      }
    }
    var legend = $('[data-testid="timeline-legend"]');
    legend.replaceChildren();
    TYPES.forEach(function (type) {
      if (!t.points.some(function (p) { return p.content_type === type; })) return;
      legend.appendChild(el('span', {}, [el('i', { style: 'background:' + COLORS[type] }), document.createTextNode(type)]));
    });
  }

  function renderRecent(items) {
    var body = $('[data-testid="recent-table"] tbody');
    body.replaceChildren();
    if (items.length === 0) {
      body.appendChild(el('tr', {}, [el('td', { colspan: '6', class: 'empty', text: 'No events in the analytics store yet.' })]));
      return;
    }
    items.forEach(function (e) {
      body.appendChild(el('tr', { 'data-testid': 'recent-row', 'data-event-id': e.event_id }, [
        el('td', { class: 'when', title: e.event_ts, text: clock(e.event_ts) }),
        el('td', { title: e.content_id || '' }, [badge(e.content_type), document.createTextNode(e.title || e.content_id || '(unknown content)')]),
        el('td', { text: e.event_type || '–' }),
        el('td', { text: e.device || '–' }),
        el('td', { class: 'num', text: fmtDuration(e.engagement_seconds) }),
        el('td', { class: 'num', text: fmtPct(e.engagement_pct) }),
      ]));
    });
  }

  function getJson(path) {
    return fetch(path, { headers: authHeaders(), cache: 'no-store' }).then(function (res) {
      if (res.status === 401) throw new Error('unauthorized');
      return res.json().then(function (body) {
        if (!res.ok) throw new Error(body && body.error ? body.error : 'HTTP ' + res.status);
        return body;
      });
    });
  }

  // The analytics store is read less often than Redis: it is the slower, bigger store.
  function pollAnalytics() {
    getJson('api/timeline?minutes=60').then(renderTimeline).catch(function () { /* shown by the stream's errors */ });
    getJson('api/recent?limit=20').then(function (r) { renderRecent(r.items); }).catch(function () {});
  }
  setInterval(pollAnalytics, 3000);

  document.querySelectorAll('[data-testid="timeline-toggle"] button').forEach(function (b) {
    b.onclick = function () {
      measure = b.getAttribute('data-measure');
      document.querySelectorAll('[data-testid="timeline-toggle"] button').forEach(function (o) { o.setAttribute('aria-pressed', String(o === b)); });
      if (lastTimeline) renderTimeline(lastTimeline);
    };
  });

  function onFrame(frame) {
    var data = null, event = 'message';
    frame.split('\\n').forEach(function (line) {
      if (line.indexOf('data:') === 0) data = (data ? data + '\\n' : '') + line.slice(5).trim();
      else if (line.indexOf('event:') === 0) event = line.slice(6).trim();
    });
    if (data == null) return;
    var msg = JSON.parse(data);
    if (event === 'problem') { $('[data-testid="errors"]').textContent = msg.error; return; }
    renderTop(msg.top);
    renderDevices(msg.devices);
    renderExtras(msg.extras);
    renderStats(msg.stats, msg.extras);
    $('[data-testid="errors"]').textContent = (msg.errors || []).join(' · ');
    var last = $('[data-testid="last-update"]');
    last.textContent = new Date(msg.at).toLocaleTimeString();
    last.setAttribute('data-at', msg.at);
    setStatus('live', 'live');
  }

  function askToken() {
    setStatus('unauthorized', 'API token required');
    var form = $('[data-testid="token-form"]');
    form.style.display = 'inline-flex';
    form.onsubmit = function (e) {
      e.preventDefault();
      token = form.querySelector('input').value.trim();
      sessionStorage.setItem('engagement-token', token);
      form.style.display = 'none';
      connect();
    };
  }

  function connect() {
    setStatus('connecting', 'connecting…');
    fetch('api/stream', { headers: authHeaders(), cache: 'no-store' }).then(function (res) {
      if (res.status === 401) { askToken(); return; }
      if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
      pollAnalytics();
      var reader = res.body.getReader();
      var decoder = new TextDecoder();
      var buffer = '';
      function pump() {
        return reader.read().then(function (r) {
          if (r.done) throw new Error('stream ended');
          buffer += decoder.decode(r.value, { stream: true });
          var i;
          while ((i = buffer.indexOf('\\n\\n')) >= 0) {
            onFrame(buffer.slice(0, i));
            buffer = buffer.slice(i + 2);
          }
          return pump();
        });
      }
      return pump();
    }).catch(function (err) {
      setStatus('error', 'disconnected (' + err.message + '), retrying…');
      setTimeout(connect, 2000);
    });
  }

  connect();
})();
</script>
</body>
</html>
`;
