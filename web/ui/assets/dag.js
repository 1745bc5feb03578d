// The picture of a task's DAG: one SVG node per step, laid out in rows by the step's
// dependencyLevel (the longest path from a root, from the DAG view), so every edge points
// down; one arrow per edge. Within a row, steps are ordered by the mean position of their
// parents (fewer crossings) and a row holds at most ROW_MAX steps (wide levels wrap onto
// further rows), so a 1,000-step task stays readable.
//
// Test contract: every step is an element with data-step-id and data-state (lower case, as
// stored); every edge is an element with data-edge="{fromStepId}-{toStepId}".

import { s, lower, label, fill } from './dom.js';

export const NODE_W = 200;
export const NODE_H = 70;
const GAP_X = 28;
const GAP_Y = 56;
const PAD = 24;
const ROW_MAX = 16;

// layout returns {positions: Map(id -> {x, y}), width, height, edges: [[from, to]]}.
export function layout(steps) {
  const byId = new Map(steps.map((st) => [st.id, st]));
  const levels = new Map();
  for (const st of steps) {
    const lvl = st.dag ? st.dag.dependencyLevel : 0;
    if (!levels.has(lvl)) levels.set(lvl, []);
    levels.get(lvl).push(st);
  }
  const order = new Map(); // id -> horizontal slot, for the barycenter of later levels
  const rows = [];
  for (const lvl of [...levels.keys()].sort((a, b) => a - b)) {
    const members = levels.get(lvl);
    const key = (st) => {
      const ps = (st.dag ? st.dag.parentStepIds : []).filter((p) => order.has(p));
      return ps.length ? ps.reduce((sum, p) => sum + order.get(p), 0) / ps.length : Number.MAX_SAFE_INTEGER;
    };
    const keyed = members.map((st) => ({ st, k: key(st) }));
    keyed.sort((a, b) => a.k - b.k || Number(a.st.id) - Number(b.st.id));
    for (let i = 0; i < keyed.length; i += ROW_MAX) rows.push(keyed.slice(i, i + ROW_MAX).map((e) => e.st));
    const width = Math.min(keyed.length, ROW_MAX);
    keyed.forEach((e, i) => order.set(e.st.id, (i % ROW_MAX) - (width - 1) / 2));
  }
  const widest = Math.max(1, ...rows.map((r) => r.length));
  const width = PAD * 2 + widest * NODE_W + (widest - 1) * GAP_X;
  const height = PAD * 2 + rows.length * NODE_H + Math.max(0, rows.length - 1) * GAP_Y;
  const positions = new Map();
  rows.forEach((row, r) => {
    const rowWidth = row.length * NODE_W + (row.length - 1) * GAP_X;
    const x0 = (width - rowWidth) / 2;
    row.forEach((st, i) => positions.set(st.id, { x: x0 + i * (NODE_W + GAP_X), y: PAD + r * (NODE_H + GAP_Y) }));
  });
  const edges = [];
  for (const st of steps) {
    for (const p of st.dag ? st.dag.parentStepIds : []) if (byId.has(p)) edges.push([p, st.id]);
  }
  return { positions, width, height, edges };
}

function truncate(text, max) {
  return text.length > max ? text.slice(0, max - 1) + '…' : text;
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

// nodeLines returns the node's second and third lines for a step.
export function nodeLines(st) {
  const state = lower(st.status);
  const attempts = 'attempts ' + st.attempts + '/' + st.retryLimit;
  const r = st.readiness || {};
  let third = '';
  if (r.readyForExecution) third = 'ready to run';
  else if (r.blockingReason && !['TERMINAL_STATE', 'ALREADY_PROCESSED', 'IN_PROGRESS'].includes(r.blockingReason)) {
    third = label(r.blockingReason);
    if (r.nextRetryAt) third += ' · retry ' + clock(r.nextRetryAt);
  }
  return [label(state) + ' · ' + attempts, third];
}

// fillNode (re)draws a node's content for step st.
export function fillNode(g, st) {
  const state = lower(st.status);
  const [second, third] = nodeLines(st);
  const blocked = third && !(st.readiness && st.readiness.readyForExecution);
  g.setAttribute('data-state', state);
  g.setAttribute('class', 'node state-' + state + (blocked ? ' blocked' : '') +
    (st.readiness && st.readiness.readyForExecution ? ' ready' : ''));
  g.setAttribute('aria-label', st.name + ': ' + second + (third ? ', ' + third : ''));
  fill(g,
    s('title', {}, st.name + '\n' + second + (third ? '\n' + third : '')),
    s('rect', { width: NODE_W, height: NODE_H, rx: 8 }),
    s('rect', { class: 'bar', width: 6, height: NODE_H, rx: 3 }),
    s('text', { x: 16, y: 22, class: 'name' }, truncate(st.name, 24)),
    s('text', { x: 16, y: 42, class: 'meta' }, second),
    third ? s('text', { x: 16, y: 60, class: 'why' }, truncate(third, 30)) : null,
  );
}

// render returns {svg, nodes: Map(id -> g)}: the whole picture. onSelect(id) is called when a
// node is clicked or activated from the keyboard.
export function render(steps, onSelect) {
  const { positions, width, height, edges } = layout(steps);
  const svg = s('svg', { class: edges.length > 200 ? 'dag dense' : 'dag', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
    'aria-label': 'DAG of ' + steps.length + ' steps' });
  svg.append(s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7,
    markerHeight: 7, orient: 'auto-start-reverse' }, s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))));
  const edgeLayer = s('g', { class: 'edges' });
  for (const [from, to] of edges) {
    const a = positions.get(from);
    const b = positions.get(to);
    const x1 = a.x + NODE_W / 2, y1 = a.y + NODE_H, x2 = b.x + NODE_W / 2, y2 = b.y - 2;
    const dy = Math.max(24, (y2 - y1) / 2);
    edgeLayer.append(s('path', { class: 'edge', 'data-edge': from + '-' + to, 'marker-end': 'url(#arrow)',
      d: `M${x1},${y1} C${x1},${y1 + dy} ${x2},${y2 - dy} ${x2},${y2}` }));
  }
  svg.append(edgeLayer);
  const nodeLayer = s('g', { class: 'nodes' });
  const nodes = new Map();
  for (const st of steps) {
    const p = positions.get(st.id);
    const g = s('g', { 'data-step-id': st.id, transform: `translate(${p.x},${p.y})`, tabindex: 0, role: 'button' });
    g.addEventListener('click', () => onSelect(st.id));
    g.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onSelect(st.id); } });
    fillNode(g, st);
    nodes.set(st.id, g);
    nodeLayer.append(g);
  }
  svg.append(nodeLayer);
  return { svg, nodes, width, height };
}
