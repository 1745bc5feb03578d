// DOM helpers: h() builds an HTML element, s() an SVG element. Attributes whose value is null,
// undefined or false are left out; "on*" attributes given functions become event listeners.
// Text is always set as text, never parsed as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

// lower turns an API enum (IN_PROGRESS) into the state as stored (in_progress).
export const lower = (v) => (v == null ? '' : String(v).toLowerCase());

// label turns an API enum into words: DEPENDENCIES_NOT_SATISFIED -> dependencies not satisfied.
export const label = (v) => lower(v).replace(/_/g, ' ');

export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function ago(iso) {
  if (!iso) return 'never';
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (s < -1) return 'in ' + duration(-s);
  if (s < 2) return 'just now';
  return duration(s) + ' ago';
}

function duration(s) {
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  return Math.floor(s / 86400) + 'd';
}

export function json(v) {
  return h('pre', { class: 'json' }, v === null || v === undefined ? 'null' : JSON.stringify(v, null, 2));
}

// throttle returns a function that runs fn at most once per ms, with the latest call last.
export function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn();
    }, wait);
  };
}

// fill replaces el's children, leaving out null, undefined and false (which the DOM's own
// replaceChildren would write as text).
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return el;
}
