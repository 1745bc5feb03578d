// /ui/dashboard: the materialized read models as charts (hourly throughput, step duration p50
// and p95 with error rates, task states per template), each saying when its view was last
// refreshed and whether writes have happened since. Reloads every 30 seconds.

import { h, s, label, time, ago } from './dom.js';

export const DASHBOARD = `query Dashboard($namespace: String) {
  dashboard {
    throughput(hours: 24) {
      refreshedAt stale
      rows { hour tasksCreated tasksCompleted tasksFailed stepsCompleted stepsFailed }
    }
    stepPerformance(namespace: $namespace, limit: 12) {
      refreshedAt stale
      rows { namespace stepName executions failures errorRate p50DurationMs p95DurationMs }
    }
    taskStatusSummaries(namespace: $namespace) {
      refreshedAt stale
      rows { namespace taskName version pending inProgress complete error cancelled resolvedManually total }
    }
  }
}`;

const W = 560;
// The state colours of style.css (SVG presentation attributes cannot read CSS variables).
const COLOR = { pending: '#98a2b3', in_progress: '#2f6fde', complete: '#1f9d55', error: '#d92d20', cancelled: '#475467', resolved_manually: '#7a5af8' };

function fresh(part) {
  return h('div', { class: 'fresh' + (part.stale ? ' stale' : ''), 'data-refreshed-at': part.refreshedAt || '' },
    part.refreshedAt ? 'refreshed ' + ago(part.refreshedAt) + ' (' + time(part.refreshedAt) + ')' : 'never refreshed',
    part.stale ? ' · newer writes since' : '');
}

function chart(title, part, svg, legend) {
  return h('section', { class: 'card chart' }, h('h2', {}, title), fresh(part), legend || null, svg);
}

function legendOf(items) {
  return h('div', { class: 'legend' }, items.map(([cls, text]) => h('span', {}, h('i', { class: 'pill ' + cls }), text)));
}

// throughput: per hour, created / completed / failed tasks as grouped bars.
function throughputChart(part) {
  const rows = part.rows;
  const H = 200, top = 10, left = 34, bottom = 22;
  const max = Math.max(1, ...rows.flatMap((r) => [r.tasksCreated, r.tasksCompleted, r.tasksFailed]));
  const bw = (W - left) / Math.max(1, rows.length);
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'tasks per hour' },
    s('line', { class: 'axis', x1: left, y1: H - bottom, x2: W, y2: H - bottom }),
    s('text', { x: left - 4, y: top + 8, 'text-anchor': 'end' }, max),
    s('text', { x: left - 4, y: H - bottom, 'text-anchor': 'end' }, 0));
  rows.forEach((r, i) => {
    const x = left + i * bw;
    [[r.tasksCreated, 'in_progress'], [r.tasksCompleted, 'complete'], [r.tasksFailed, 'error']].forEach(([v, cls], j) => {
      const bx = x + 1 + j * (bw - 2) / 3;
      svg.append(s('rect', { class: 'bar', x: bx, y: y(v), width: Math.max(1, (bw - 2) / 3 - 1), height: H - bottom - y(v),
        fill: COLOR[cls] }, s('title', {}, time(r.hour) + ': ' + v)));
    });
    if (i % 4 === 0) {
      const d = new Date(r.hour);
      svg.append(s('text', { x: x + bw / 2, y: H - 6, 'text-anchor': 'middle' }, String(d.getHours()).padStart(2, '0') + ':00'));
    }
  });
  return chart('Tasks per hour (last 24 hours)', part, svg,
    legendOf([['in_progress', 'created'], ['complete', 'completed'], ['error', 'failed']]));
}

// stepPerformance: per step, p50 and p95 durations as bars, error rate as text.
function stepChart(part) {
  const rows = part.rows;
  const rowH = 26, left = 190, right = 150;
  const H = Math.max(40, rows.length * rowH + 10);
  const max = Math.max(1, ...rows.map((r) => r.p95DurationMs || 0));
  const x = (v) => left + (W - left - right) * ((v || 0) / max);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'step durations' });
  if (!rows.length) svg.append(s('text', { x: 10, y: 24 }, 'No step has run yet.'));
  rows.forEach((r, i) => {
    const y0 = 5 + i * rowH;
    svg.append(
      s('text', { x: left - 6, y: y0 + 15, 'text-anchor': 'end' }, r.stepName.length > 28 ? r.stepName.slice(0, 27) + '…' : r.stepName),
      s('rect', { x: left, y: y0 + 3, width: Math.max(1, x(r.p95DurationMs) - left), height: 16, fill: '#b2ccff' },
        s('title', {}, 'p95 ' + fmtMs(r.p95DurationMs))),
      s('rect', { x: left, y: y0 + 7, width: Math.max(1, x(r.p50DurationMs) - left), height: 8, fill: COLOR.in_progress },
        s('title', {}, 'p50 ' + fmtMs(r.p50DurationMs))),
      s('text', { x: W - 56, y: y0 + 15, 'text-anchor': 'end' }, fmtMs(r.p50DurationMs) + ' / ' + fmtMs(r.p95DurationMs)),
      s('text', { x: W - 4, y: y0 + 15, 'text-anchor': 'end', fill: r.errorRate > 0 ? COLOR.error : undefined },
        (r.errorRate * 100).toFixed(1) + '%'));
  });
  return chart('Step durations (p50 / p95) and error rate', part, svg,
    legendOf([['in_progress', 'p50'], ['pending', 'p95 (light)'], ['error', 'error rate, right']]));
}

function fmtMs(v) {
  if (v === null || v === undefined) return '—';
  return v >= 1000 ? (v / 1000).toFixed(1) + 's' : Math.round(v) + 'ms';
}

// taskStatusSummaries: per template, tasks by state as a stacked bar.
function statesChart(part) {
  const rows = part.rows;
  const keys = [['pending', 'pending'], ['inProgress', 'in_progress'], ['complete', 'complete'], ['error', 'error'],
    ['cancelled', 'cancelled'], ['resolvedManually', 'resolved_manually']];
  const rowH = 26, left = 190, right = 50;
  const H = Math.max(40, rows.length * rowH + 10);
  const max = Math.max(1, ...rows.map((r) => r.total));
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'task states per template' });
  if (!rows.length) svg.append(s('text', { x: 10, y: 24 }, 'No task yet.'));
  rows.forEach((r, i) => {
    const y0 = 5 + i * rowH;
    const name = r.namespace + '/' + r.taskName + ' ' + r.version;
    svg.append(s('text', { x: left - 6, y: y0 + 15, 'text-anchor': 'end' }, name.length > 30 ? name.slice(0, 29) + '…' : name));
    let x = left;
    for (const [k, cls] of keys) {
      const w = (W - left - right) * (r[k] / max);
      if (w > 0) svg.append(s('rect', { x, y: y0 + 3, width: w, height: 16, fill: COLOR[cls] }, s('title', {}, label(cls) + ': ' + r[k])));
      x += w;
    }
    svg.append(s('text', { x: W - 4, y: y0 + 15, 'text-anchor': 'end' }, r.total));
  });
  return chart('Tasks per template by state', part, svg, legendOf(keys.map(([, cls]) => [cls, label(cls)])));
}

export function dashboardView(root, ctx) {
  const { client, fail } = ctx;
  const grid = h('div', { class: 'charts' });
  root.append(h('h1', {}, 'Dashboard'),
    h('p', { class: 'muted' }, 'From the materialized read models, refreshed on a schedule and soon after writes; each chart says how fresh it is.'),
    grid);
  let stopped = false;
  const load = async () => {
    let d;
    try { d = await client.query(DASHBOARD, {}); } catch (e) { fail(e); return; }
    if (stopped) return;
    grid.replaceChildren(throughputChart(d.dashboard.throughput), stepChart(d.dashboard.stepPerformance),
      statesChart(d.dashboard.taskStatusSummaries));
    root.dataset.ready = 'true';
  };
  load();
  const timer = setInterval(load, 30000);
  return () => { stopped = true; clearInterval(timer); };
}

