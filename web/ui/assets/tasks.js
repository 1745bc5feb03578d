// /ui/: tasks newest first, filtered by namespace, template and state (kept in the URL's
// query string), a page at a time with the API's cursors, updated live from taskTransitions.
// The subscription starts after the first page is read, from that page's transitionCursor
// (the newest transition id read no later than the page), and resumes after the last
// transition heard when the connection drops: no move made after the page was read is missed.

import { h, lower, label, time, throttle, fill } from './dom.js';

const PAGE = 25;

export const TASKS = `query Tasks($filter: TaskFilter, $first: Int, $after: String) {
  tasks(filter: $filter, first: $first, after: $after) {
    nodes {
      id status requestedAt
      namespace { name }
      namedTask { name version }
      executionContext { totalSteps completedSteps failedSteps completionPercentage healthStatus }
    }
    pageInfo { hasNextPage endCursor }
    transitionCursor
  }
}`;

const FILTERS = `query Filters($namespace: String) {
  namespaces { name }
  namedTasks(namespace: $namespace) { name version namespace { name } }
}`;

export const TASK_TRANSITIONS = `subscription TaskTransitions($namespace: String, $after: ID) {
  taskTransitions(namespace: $namespace, afterTransitionId: $after) { id taskId toState createdAt }
}`;

const STATES = ['PENDING', 'IN_PROGRESS', 'COMPLETE', 'ERROR', 'CANCELLED', 'RESOLVED_MANUALLY'];

export function tasksView(root, ctx) {
  const { client, query, navigate, fail } = ctx;
  const ns = query.get('namespace') || '';
  const tmpl = query.get('template') || '';
  const state = query.get('state') || '';
  const after = query.get('after') || '';
  const back = query.getAll('back'); // the after cursors of the pages before this one ('' for the first)

  const setFilter = (k, v) => {
    const q = new URLSearchParams();
    const cur = { namespace: ns, template: tmpl, state, [k]: v };
    if (k === 'namespace') cur.template = '';
    for (const [key, val] of Object.entries(cur)) if (val) q.set(key, val);
    navigate('/ui/' + (q.toString() ? '?' + q : ''));
  };
  const select = (name, value, options, text) => h('label', {}, text,
    h('select', { name, onchange: (e) => setFilter(name, e.target.value) },
      h('option', { value: '' }, 'all'),
      options.map((o) => h('option', { value: o, selected: o === value }, o))));

  const filters = h('div', { class: 'filters' });
  const body = h('tbody');
  const pager = h('div', { class: 'pager' });
  const note = h('span', { class: 'muted' });
  root.append(h('h1', {}, 'Tasks'), filters,
    h('table', { class: 'tasks' }, h('thead', {}, h('tr', {},
      ['Task', 'Template', 'Namespace', 'State', 'Progress', 'Requested'].map((c) => h('th', {}, c)))), body), pager);

  client.query(FILTERS, { namespace: ns || null }).then((d) => {
    const templates = [...new Set(d.namedTasks.map((t) => t.name))].sort();
    filters.append(select('namespace', ns, d.namespaces.map((n) => n.name), 'Namespace'),
      select('template', tmpl, templates, 'Template'),
      select('state', state, STATES.map(lower), 'State'), note);
  }, fail);

  const rows = new Map();
  const variables = () => ({
    filter: { namespace: ns || null, namedTask: tmpl || null, status: state ? [state.toUpperCase()] : null },
    first: PAGE, after: after || null,
  });
  let stopped = false;
  let stop = null;
  let lastTransitionId = null; // the newest transition heard, or the first page's cursor
  const load = async () => {
    let d;
    try { d = await client.query(TASKS, variables()); } catch (e) { fail(e); return; }
    if (stopped) return;
    if (stop === null) {
      lastTransitionId = d.tasks.transitionCursor;
      subscribe();
    }
    rows.clear();
    body.replaceChildren(...d.tasks.nodes.map((t) => {
      const tr = row(t);
      rows.set(t.id, tr);
      return tr;
    }));
    if (!d.tasks.nodes.length) body.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No task matches.')));
    const link = (cursor, backs) => {
      const q = new URLSearchParams();
      if (ns) q.set('namespace', ns);
      if (tmpl) q.set('template', tmpl);
      if (state) q.set('state', state);
      if (cursor) q.set('after', cursor);
      for (const b of backs) q.append('back', b);
      return '/ui/?' + q;
    };
    fill(pager,
      back.length ? h('a', { href: link(back[back.length - 1], back.slice(0, -1)) }, '← Newer') : null,
      d.tasks.pageInfo.hasNextPage ? h('a', { href: link(d.tasks.pageInfo.endCursor, [...back, after]) }, 'Older →') : null,
      h('span', { class: 'muted' }, 'page ' + (back.length + 1)));
  };
  const reload = throttle(load, 1000);
  load();

  // Live: a transition of a task on this page updates its row; on the first page a
  // transition of any other task reloads the page (a new task moving shows up first).
  function subscribe() {
    stop = client.subscribe(TASK_TRANSITIONS, () => ({ namespace: ns || null, after: lastTransitionId }), {
      next: (d) => {
        const tr = d.taskTransitions;
        if (Number(tr.id) > Number(lastTransitionId)) lastTransitionId = tr.id;
        const shown = rows.has(tr.taskId);
        note.textContent = 'task ' + tr.taskId + ' → ' + label(tr.toState);
        if (shown || !after) reload();
      },
      error: fail,
    });
  }
  return () => { stopped = true; if (stop) stop(); };
}

function row(t) {
  const ec = t.executionContext;
  return h('tr', { 'data-task-id': t.id },
    h('td', {}, h('a', { href: '/ui/tasks/' + t.id }, '#' + t.id)),
    h('td', {}, t.namedTask.name + ' ', h('span', { class: 'muted' }, t.namedTask.version)),
    h('td', {}, t.namespace.name),
    h('td', {}, h('span', { class: 'pill ' + lower(t.status), 'data-state': lower(t.status) }, label(t.status))),
    h('td', {}, ec.completedSteps + '/' + ec.totalSteps + (ec.failedSteps ? ' · ' + ec.failedSteps + ' failed' : '') +
      ' · ' + label(ec.healthStatus)),
    h('td', {}, time(t.requestedAt)));
}
