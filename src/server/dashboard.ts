/**
 * The dashboard: one self-contained page (inline CSS and JS, no CDN: demo machines are often
 * offline). It reads /api/stream with fetch() rather than EventSource because EventSource
 * cannot send the Authorization header that API_TOKEN requires. Every live element has a
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
      <div class="label">Events / second</div>
      <div class="value" data-testid="events-per-second">–</div>
      <svg class="spark" data-testid="throughput-sparkline" viewBox="0 0 300 48" preserveAspectRatio="none" aria-label="events per second, last two minutes"><path d=""></path></svg>
    </div>
    <div class="card kpi"><div class="label">Total events</div><div class="value" data-testid="total-events">–</div><div class="sub" data-testid="uptime"></div></div>
    <div class="card kpi"><div class="label">Dead letters</div><div class="value" data-testid="dead-letters">–</div></div>
    <div class="card kpi"><div class="label">Replication lag</div><div class="value" data-testid="replication-lag">–</div><div class="sub" data-testid="confirmed-lsn"></div></div>
  </section>
  <div class="errors" data-testid="errors"></div>
  <section class="grid2">
    <div class="card">
      <h2>Top content · last 10 minutes</h2>
      <table data-testid="top-content-table">
        <thead><tr><th></th><th>Content</th><th class="num">Events</th><th class="num">Engagement</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
    <div class="card">
      <h2>Devices · last 10 minutes</h2>
      <div data-testid="top-device-list"></div>
    </div>
  </section>
  <section class="card">
    <h2>Sinks · commit → acknowledged</h2>
    <table data-testid="sink-table">
      <thead><tr><th>Sink</th><th>Status</th><th class="num">p50</th><th class="num">p99</th><th class="num">Last success</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <div class="sub" style="color:var(--muted);font-size:12px">Updated <span data-testid="last-update">never</span> · <a href="metrics" style="color:var(--accent)">/metrics</a> · <a href="api/stats" style="color:var(--accent)">/api/stats</a></div>
</main>
<script>
(function () {
  'use strict';
  var $ = function (sel) { return document.querySelector(sel); };
  var rates = [];
  var HISTORY = 120;
  var token = readToken();

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

  function fmtInt(n) { return n == null ? '–' : Math.round(n).toLocaleString(); }
  function fmtRate(n) { return n == null ? '–' : (n >= 100 ? Math.round(n).toLocaleString() : n.toFixed(1)); }
  function fmtMs(ms) { return ms == null ? '–' : (ms >= 1000 ? (ms / 1000).toFixed(2) + ' s' : ms.toFixed(ms < 10 ? 1 : 0) + ' ms'); }
  function fmtBytes(b) {
    if (b == null) return '–';
    var units = ['B', 'KiB', 'MiB', 'GiB'];
    var i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b : b.toFixed(1)) + ' ' + units[i];
  }
  function fmtDuration(s) {
    if (s == null) return '–';
    s = Math.round(s);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h > 0 ? h + 'h ' + m + 'm' : m > 0 ? m + 'm ' + r + 's' : r + 's';
  }
  function ago(iso) {
    if (!iso) return 'never';
    var s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    return s < 60 ? Math.round(s) + ' s ago' : fmtDuration(s) + ' ago';
  }

  function setStatus(state, text) {
    var s = $('[data-testid="connection-status"]');
    s.setAttribute('data-state', state);
    s.querySelector('.text').textContent = text;
  }

  function renderTop(items) {
    var body = $('[data-testid="top-content-table"] tbody');
    body.replaceChildren();
    if (!items) return;
    if (items.length === 0) {
      body.appendChild(el('tr', {}, [el('td', { colspan: '4', class: 'empty', text: 'No events in the last 10 minutes yet.' })]));
      return;
    }
    var max = items[0].score || 1;
    items.forEach(function (it, i) {
      var type = it.content_type || 'unknown';
      var name = el('td', {}, [
        el('div', { class: 'title' }, [el('span', { class: 'badge ' + type, text: type }), document.createTextNode(it.title || it.content_id)]),
        it.title ? el('div', { class: 'id', text: it.content_id }) : null,
        el('div', { class: 'bar', style: 'width:' + Math.max(2, (100 * it.score) / max) + '%' }),
      ]);
      body.appendChild(el('tr', {
        'data-testid': 'top-content-row', 'data-content-id': it.content_id, 'data-rank': String(i + 1),
        'data-score': String(it.score), 'data-events': String(it.events), 'data-seconds': String(it.engagement_seconds),
      }, [
        el('td', { class: 'rank', text: String(i + 1) }),
        name,
        el('td', { class: 'num', 'data-testid': 'top-content-events', text: fmtInt(it.events) }),
        el('td', { class: 'num', 'data-testid': 'top-content-seconds', title: it.engagement_seconds + ' s', text: fmtDuration(it.engagement_seconds) }),
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

  function renderStats(stats) {
    if (!stats) return;
    $('[data-testid="events-per-second"]').textContent = fmtRate(stats.eventsPerSecond);
    $('[data-testid="total-events"]').textContent = fmtInt(stats.totalEvents);
    $('[data-testid="dead-letters"]').textContent = fmtInt(stats.deadLetters);
    $('[data-testid="replication-lag"]').textContent = fmtBytes(stats.replicationLagBytes);
    $('[data-testid="confirmed-lsn"]').textContent = stats.confirmedLsn ? 'confirmed LSN ' + stats.confirmedLsn : '';
    $('[data-testid="uptime"]').textContent = 'up ' + fmtDuration((Date.now() - Date.parse(stats.startedAt)) / 1000);
    var body = $('[data-testid="sink-table"] tbody');
    body.replaceChildren();
    (stats.sinks || []).forEach(function (s) {
      body.appendChild(el('tr', { 'data-testid': 'sink-row', 'data-sink': s.name, 'data-up': String(s.up) }, [
        el('td', { text: s.name }),
        el('td', { class: s.up ? 'up' : 'down', text: s.up ? '● up' : '● down' }),
        el('td', { class: 'num', 'data-testid': 'sink-p50', text: fmtMs(s.p50Ms) }),
        el('td', { class: 'num', 'data-testid': 'sink-p99', text: fmtMs(s.p99Ms) }),
        el('td', { class: 'num', text: ago(s.lastSuccessAt) }),
      ]));
    });
    rates.push(stats.eventsPerSecond || 0);
    if (rates.length > HISTORY) rates.shift();
    drawSpark();
  }

  function drawSpark() {
    var max = Math.max.apply(null, rates.concat([1]));
    var step = 300 / (HISTORY - 1);
    var offset = HISTORY - rates.length;
    var d = rates.map(function (v, i) {
      return (i === 0 ? 'M' : 'L') + ((offset + i) * step).toFixed(1) + ' ' + (46 - (v / max) * 44).toFixed(1);
    }).join(' ');
    $('[data-testid="throughput-sparkline"] path').setAttribute('d', d);
  }

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
    renderStats(msg.stats);
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
    var headers = token ? { Authorization: 'Bearer ' + token } : {};
    fetch('api/stream', { headers: headers, cache: 'no-store' }).then(function (res) {
      if (res.status === 401) { askToken(); return; }
      if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
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
