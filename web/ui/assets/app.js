// The console's entry point: it finds out who is calling (Query.viewer), asks for an API token
// when the server requires one (kept in sessionStorage for the browser session), and routes
// /ui/, /ui/tasks/{id} and /ui/dashboard to their views. Each view is a function
// (root, ctx) -> cleanup that draws into root and returns what stops its subscriptions.

import { Client, ApiError } from './graphql.js';
import { h } from './dom.js';
import { tasksView } from './tasks.js';
import { taskView } from './task.js';
import { dashboardView } from './dashboard.js';

const TOKEN_KEY = 'tasker.token';
const endpoint = document.querySelector('meta[name="tasker-endpoint"]').content;
const app = document.getElementById('app');

function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
}
function setToken(t) {
  try { if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* disabled */ }
}

const client = new Client(endpoint, getToken);
window.taskerConsole = { client }; // for the browser tests and the curious
client.onState((st) => {
  const dot = document.getElementById('live');
  dot.className = 'live ' + st;
  dot.title = 'subscriptions: ' + st;
});

const VIEWER = `query Viewer { viewer { name role authenticated } }`;

let cleanup = null;
let viewer = null;

const routes = [
  [/^\/ui\/?$/, () => tasksView],
  [/^\/ui\/tasks\/(\d+)\/?$/, () => taskView],
  [/^\/ui\/dashboard\/?$/, () => dashboardView],
];

export function navigate(url, replace) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  route();
}

function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  const path = location.pathname;
  for (const a of document.querySelectorAll('header nav a[data-nav]')) {
    a.classList.toggle('active', a.getAttribute('href') === path || (a.dataset.nav === 'tasks' && path.startsWith('/ui/tasks/')));
  }
  for (const [re, view] of routes) {
    const m = path.match(re);
    if (m) {
      app.replaceChildren();
      cleanup = view()(app, { client, viewer, navigate, params: m.slice(1), query: new URLSearchParams(location.search), fail }) || null;
      return;
    }
  }
  app.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, 'No console page at ' + path + '. ', h('a', { href: '/ui/' }, 'Tasks')));
}

// fail shows an error in place of the view; an authentication error asks for a token again.
function fail(err) {
  if (err instanceof ApiError && err.code === 'UNAUTHENTICATED') {
    setToken(null);
    login('The server refused the token: ' + err.message);
    return;
  }
  app.append(h('div', { class: 'error-box', role: 'alert' }, (err && err.code ? err.code + ': ' : '') + (err && err.message ? err.message : String(err))));
}

function login(message) {
  if (cleanup) { cleanup(); cleanup = null; }
  client.close();
  const input = h('input', { type: 'password', name: 'token', placeholder: 'API token', autocomplete: 'off', required: true });
  const form = h('form', { class: 'card login', onsubmit: (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    start();
  } },
  h('h1', {}, 'API token required'),
  h('p', {}, 'This server requires an API token (create one with ', h('code', {}, 'tasker token create --role reader'), '). ',
    'It is kept for this browser session only.'),
  message ? h('div', { class: 'error-box', role: 'alert' }, message) : null,
  input, h('button', { class: 'primary', type: 'submit' }, 'Open the console'));
  app.replaceChildren(form);
  input.focus();
}

async function start() {
  try {
    viewer = (await client.query(VIEWER)).viewer;
  } catch (err) {
    if (err instanceof ApiError && err.code === 'UNAUTHENTICATED') {
      const had = getToken();
      setToken(null);
      login(had ? 'The server refused the token: ' + err.message : null);
      return;
    }
    app.replaceChildren(h('div', { class: 'error-box', role: 'alert' }, 'The console cannot reach the API: ' + err.message));
    return;
  }
  const who = document.getElementById('who');
  who.replaceChildren(viewer.authenticated ? viewer.name + ' · ' + viewer.role.toLowerCase() : 'open mode (no authentication)');
  if (viewer.authenticated) {
    who.append(' ', h('button', { type: 'button', onclick: () => { setToken(null); login(null); } }, 'Sign out'));
  }
  route();
}

document.addEventListener('click', (e) => {
  const a = e.target.closest && e.target.closest('a[href^="/ui"]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || a.target) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', route);
start();
