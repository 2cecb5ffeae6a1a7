// wsgate admin page: polls api/stats (same origin, the browser resends the
// admin password it was asked for) and shows the figures, top channels,
// nodes and four SVG charts of the last minutes. Everything the server
// sends, channel names above all, is written with textContent: nothing is
// ever parsed as HTML.
'use strict';

const POLL_MS = 2000;
const SVG_NS = 'http://www.w3.org/2000/svg';

function $(id) { return document.getElementById(id); }

function setText(id, text) { $(id).textContent = text; }

function fmt(n) {
  if (n === undefined || n === null) { return '–'; }
  if (Math.abs(n) >= 1e9) { return (n / 1e9).toFixed(1) + ' G'; }
  if (Math.abs(n) >= 1e6) { return (n / 1e6).toFixed(1) + ' M'; }
  if (Math.abs(n) >= 1e4) { return (n / 1e3).toFixed(1) + ' k'; }
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function fmtBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
}

function fmtDuration(s) {
  if (s < 60) { return s + ' s'; }
  if (s < 3600) { return Math.floor(s / 60) + ' min'; }
  if (s < 86400) { return (s / 3600).toFixed(1) + ' h'; }
  return (s / 86400).toFixed(1) + ' d';
}

// row builds a table row of text cells; numeric cells align right.
function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    td.textContent = c.text;
    if (c.num) { td.className = 'num'; }
    tr.appendChild(td);
  }
  return tr;
}

function fillTable(id, rows, empty, columns) {
  const body = $(id);
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = columns;
    td.className = 'muted';
    td.textContent = empty;
    tr.appendChild(td);
    body.appendChild(tr);
    return;
  }
  for (const r of rows) { body.appendChild(r); }
}

// chart draws values as a line over the svg's 300 × 80 view box, scaled
// from 0 to the maximum, and writes the range under it.
function chart(id, rangeId, values) {
  const svg = $(id);
  svg.replaceChildren();
  const nums = values.map(Number);
  const maxV = Math.max(1, ...nums);
  const base = document.createElementNS(SVG_NS, 'line');
  base.setAttribute('x1', '0'); base.setAttribute('y1', '79');
  base.setAttribute('x2', '300'); base.setAttribute('y2', '79');
  base.setAttribute('stroke', '#d1d9e0');
  svg.appendChild(base);
  if (nums.length > 0) {
    const step = nums.length > 1 ? 300 / (nums.length - 1) : 0;
    const pts = nums.map((v, i) => (i * step).toFixed(1) + ',' + (78 - (v / maxV) * 74).toFixed(1));
    const line = document.createElementNS(SVG_NS, 'polyline');
    line.setAttribute('points', pts.join(' '));
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', '#0969da');
    line.setAttribute('stroke-width', '1.5');
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.appendChild(line);
  }
  const last = nums.length ? nums[nums.length - 1] : 0;
  setText(rangeId, 'now ' + fmt(last) + ', max ' + fmt(Math.max(0, ...nums)) +
    ' over ' + fmtDuration(Math.round(nums.length * POLL_MS / 1000)));
}

function render(s) {
  setText('version', 'version ' + s.version);
  const ws = s.connections.ws || 0;
  const hub = s.connections.hub || 0;
  setText('connections', fmt(ws + hub));
  setText('connections-split', '/ws ' + fmt(ws) + ', hub ' + fmt(hub) + ', HTTP ' + fmt(s.http_connections));
  setText('msgs-in-rate', fmt(s.messages_in_per_second));
  setText('msgs-in-total', fmt(s.messages_in) + ' total');
  setText('msgs-out-rate', fmt(s.messages_out_per_second));
  setText('msgs-out-total', fmt(s.messages_out) + ' total');
  setText('slow', fmt(s.slow_disconnects));
  setText('dropped', fmt(s.dropped) + ' messages dropped');
  if (s.hub) {
    setText('channels', fmt(s.hub.channels));
    setText('publications', fmt(s.hub.publications) + ' publications, ' + fmt(s.hub.deliveries) + ' deliveries');
    setText('subscriptions', fmt(s.hub.subscriptions));
    setText('clients', fmt(s.hub.clients) + ' clients, ' + fmt(s.hub.users) + ' users');
  }
  if (s.broker) {
    const b = $('broker-state');
    b.textContent = s.broker.up ? 'up' : 'down';
    b.className = 'value ' + (s.broker.up ? 'state-ok' : 'state-bad');
    let detail = s.broker.type + ': ' + fmt(s.broker.received) + ' received, ' +
      fmt(s.broker.publish_errors) + ' publish errors, ' + fmt(s.broker.gaps) + ' gaps';
    if (s.broker.error) { detail += ' — ' + s.broker.error; }
    setText('broker-detail', detail);
  }
  if (s.budget) {
    setText('budget', (100 * s.budget.used_bytes / s.budget.limit_bytes).toFixed(1) + ' %');
    setText('budget-detail', fmtBytes(s.budget.used_bytes) + ' of ' + fmtBytes(s.budget.limit_bytes) + ', ' + fmt(s.budget.evictions) + ' evictions');
  } else {
    setText('budget', 'off');
  }
  fillTable('top-channels', s.top_channels.map((c) => row([
    { text: c.channel }, { text: fmt(c.subscribers), num: true },
  ])), 'no channel has subscribers', 2);
  fillTable('nodes', s.nodes.map((n) => row([
    { text: (n.name || n.id) + (n.self ? ' (this node)' : '') }, { text: n.version },
    { text: fmt(n.clients), num: true }, { text: fmt(n.users), num: true },
    { text: fmt(n.channels), num: true }, { text: fmt(n.subscriptions), num: true },
    { text: fmtDuration(n.uptime_seconds), num: true },
  ])), 'the hub has not started', 7);
  chart('chart-connections', 'range-connections', s.series.connections);
  chart('chart-in', 'range-in', s.series.messages_in_per_second);
  chart('chart-out', 'range-out', s.series.messages_out_per_second);
  chart('chart-subs', 'range-subs', s.series.subscriptions);
}

async function poll() {
  const status = $('status');
  try {
    const res = await fetch('api/stats', { cache: 'no-store', credentials: 'same-origin' });
    if (!res.ok) { throw new Error('HTTP ' + res.status); }
    render(await res.json());
    status.textContent = 'live, updated ' + new Date().toLocaleTimeString();
    status.className = 'state state-ok';
  } catch (err) {
    status.textContent = 'cannot load the figures: ' + err.message;
    status.className = 'state state-bad';
  }
  setTimeout(poll, POLL_MS);
}

poll();
