// /ui/tasks/{id}: the task's DAG as a picture (see dag.js), following the task live through
// stepTransitions. Every event recolours its step at once and schedules a (throttled) reload
// of the task, which brings attempts, readiness, blockingReason and nextRetryAt up to date.
// After a dropped connection the client subscribes again with afterTransitionId set to the
// last transition seen, so no move is missed. Clicking a step shows its readiness, inputs,
// results and transitions, and the actions the caller's role allows.

import { h, lower, label, time, ago, json, throttle, fill } from './dom.js';
import { render, fillNode } from './dag.js';

const TASK_FIELDS = `
    id status requestedAt
    namespace { name }
    namedTask { name version }
    executionContext { totalSteps completedSteps failedSteps readySteps completionPercentage executionStatus healthStatus recommendedAction }`;

const STEP_FIELDS = `
      id name status attempts retryLimit
      readiness { readyForExecution blockingReason nextRetryAt }
      dag { dependencyLevel parentStepIds }`;

// TASK is the first load: it also reads the steps' transition ids, so that the subscription
// starts right after the newest transition the picture shows.
export const TASK = `query Task($id: ID!) {
  task(id: $id) {${TASK_FIELDS}
    steps {${STEP_FIELDS}
      transitions { id }
    }
  }
}`;

// TASK_REFRESH is the reload after transitions.
export const TASK_REFRESH = `query TaskRefresh($id: ID!) {
  task(id: $id) {${TASK_FIELDS}
    steps {${STEP_FIELDS}
    }
  }
}`;

export const STEP = `query Step($id: ID!) {
  step(id: $id) {
    id name status attempts retryLimit retryable processedAt lastAttemptedAt backoffRequestSeconds
    inputs results
    readiness {
      readyForExecution blockingReason dependenciesSatisfied completedParents totalParents
      retryEligible nextRetryAt lastFailureAt
    }
    parents { id name status }
    children { id name status }
    transitions { id fromState toState createdAt metadata }
  }
}`;

export const STEP_TRANSITIONS = `subscription StepTransitions($taskId: ID!, $after: ID) {
  stepTransitions(taskId: $taskId, afterTransitionId: $after) { id stepId toState createdAt }
}`;

const TERMINAL = ['COMPLETE', 'CANCELLED', 'RESOLVED_MANUALLY'];
const STATES = ['PENDING', 'IN_PROGRESS', 'COMPLETE', 'ERROR', 'CANCELLED', 'RESOLVED_MANUALLY'];

// nodeKey is what a node shows of a step: a node is repainted only when it changes.
function nodeKey(st) {
  const r = st.readiness || {};
  return [st.status, st.attempts, st.retryLimit, r.readyForExecution, r.blockingReason, r.nextRetryAt].join('|');
}

export function taskView(root, ctx) {
  const { client, viewer, fail } = ctx;
  const taskId = ctx.params[0];
  const canOperate = viewer && (viewer.role === 'OPERATOR' || viewer.role === 'ADMIN');
  const head = h('div', { class: 'task-head' }, h('h1', {}, 'Task #' + taskId));
  const canvas = h('div', { class: 'canvas' });
  const detail = h('aside', { class: 'detail card' }, h('p', { class: 'muted' }, 'Click a step to see why it is where it is.'));
  let scale = 1;
  let picture = null;
  const zoom = (f) => { scale = f === 'fit' ? fitScale() : Math.min(2, Math.max(0.1, scale * f)); applyScale(); };
  const toolbar = h('div', { class: 'toolbar' },
    h('button', { type: 'button', title: 'zoom out', onclick: () => zoom(1 / 1.25) }, '−'),
    h('button', { type: 'button', title: 'zoom in', onclick: () => zoom(1.25) }, '+'),
    h('button', { type: 'button', onclick: () => zoom('fit') }, 'Fit'),
    h('button', { type: 'button', onclick: () => { scale = 1; applyScale(); } }, '100%'),
    h('span', { class: 'legend' }, STATES.map((st) => h('span', {}, h('i', { class: 'pill ' + lower(st) }), label(st)))));
  root.append(head, toolbar, h('div', { class: 'task-layout' }, canvas, detail));

  const steps = new Map(); // id -> step as last loaded or moved
  let task = null;
  let lastTransitionId = null;
  let selected = null;
  let stopped = false;

  // fitScale shows the whole picture when that keeps it legible (half size or more), else
  // fits its width (at least a quarter of full size) and lets it scroll down.
  function fitScale() {
    if (!picture) return 1;
    const byWidth = Math.min(1, (canvas.clientWidth - 4) / picture.width);
    const whole = Math.min(byWidth, (canvas.clientHeight - 4) / picture.height);
    return whole >= 0.5 ? whole : Math.max(0.25, byWidth);
  }
  function applyScale() {
    if (!picture) return;
    picture.svg.setAttribute('width', Math.round(picture.width * scale));
    picture.svg.setAttribute('height', Math.round(picture.height * scale));
  }

  function drawHead() {
    const ec = task.executionContext;
    fill(head,
      h('h1', {}, 'Task #' + task.id + ' · ' + task.namedTask.name + ' ', h('span', { class: 'muted' }, task.namedTask.version)),
      h('span', { class: 'pill ' + lower(task.status), 'data-task-state': lower(task.status) }, label(task.status)),
      h('span', { class: 'facts' },
        h('span', {}, 'namespace ' + task.namespace.name),
        h('span', {}, ec.completedSteps + '/' + ec.totalSteps + ' steps complete (' + Math.round(ec.completionPercentage) + '%)'),
        ec.failedSteps ? h('span', {}, ec.failedSteps + ' in error') : null,
        h('span', {}, label(ec.executionStatus)),
        h('span', {}, 'health ' + label(ec.healthStatus)),
        h('span', {}, 'requested ' + time(task.requestedAt))),
      canOperate && !TERMINAL.includes(task.status)
        ? h('button', { type: 'button', class: 'danger', onclick: () => act('cancelTask', task.id) }, 'Cancel task') : null);
  }

  function select(id) {
    selected = id;
    for (const [sid, g] of picture.nodes) g.classList.toggle('selected', sid === id);
    const q = new URLSearchParams(location.search);
    q.set('step', id);
    history.replaceState(null, '', location.pathname + '?' + q);
    loadDetail();
  }

  async function loadDetail(again) {
    if (!selected) return;
    // Do not redraw under someone typing a reason: the next transition brings it up to date.
    if (again && detail.contains(document.activeElement) && document.activeElement.tagName === 'INPUT') return;
    const id = selected;
    let d;
    try { d = await client.query(STEP, { id }); } catch (e) { detail.replaceChildren(h('div', { class: 'error-box' }, e.message)); return; }
    if (stopped || id !== selected) return;
    const st = d.step;
    const r = st.readiness;
    const actions = [];
    if (canOperate) {
      if (st.status === 'ERROR') actions.push(h('button', { type: 'button', class: 'primary', onclick: () => act('retryStep', st.id) }, 'Retry'));
      if (st.status === 'ERROR' || st.status === 'PENDING') {
        const reason = h('input', { type: 'text', placeholder: 'reason (optional)', name: 'reason' });
        actions.push(h('span', {}, reason, ' ', h('button', { type: 'button', onclick: () => act('resolveStepManually', st.id, reason.value) }, 'Resolve manually')));
      }
      if (!TERMINAL.includes(st.status)) actions.push(h('button', { type: 'button', class: 'danger', onclick: () => act('cancelStep', st.id) }, 'Cancel step'));
    }
    const stepLink = (p) => h('a', { href: '#', onclick: (e) => { e.preventDefault(); select(p.id); } }, p.name, ' ', h('span', { class: 'pill ' + lower(p.status) }, label(p.status)));
    fill(detail,
      h('h2', {}, st.name, ' ', h('span', { class: 'pill ' + lower(st.status) }, label(st.status))),
      h('div', { class: 'muted' }, 'step #' + st.id),
      actions.length ? h('div', { class: 'actions' }, actions) : null,
      h('h2', {}, 'Readiness'),
      h('dl', {},
        h('dt', {}, 'ready'), h('dd', {}, r.readyForExecution ? 'yes' : 'no'),
        h('dt', {}, 'blocking reason'), h('dd', { 'data-field': 'blockingReason' }, r.blockingReason ? label(r.blockingReason) : '—'),
        h('dt', {}, 'parents complete'), h('dd', {}, r.completedParents + ' of ' + r.totalParents + (r.dependenciesSatisfied ? ' (satisfied)' : '')),
        h('dt', {}, 'attempts'), h('dd', {}, st.attempts + ' of ' + st.retryLimit + (st.retryable ? '' : ' (not retryable)')),
        h('dt', {}, 'retry eligible'), h('dd', {}, r.retryEligible ? 'yes' : 'no'),
        h('dt', {}, 'next retry at'), h('dd', { 'data-field': 'nextRetryAt' }, r.nextRetryAt ? time(r.nextRetryAt) + ' (' + ago(r.nextRetryAt) + ')' : '—'),
        h('dt', {}, 'last failure'), h('dd', {}, time(r.lastFailureAt)),
        h('dt', {}, 'last attempted'), h('dd', {}, time(st.lastAttemptedAt)),
        h('dt', {}, 'parents'), h('dd', {}, st.parents.length ? st.parents.map((p) => h('div', {}, stepLink(p))) : 'none (a root)'),
        h('dt', {}, 'children'), h('dd', {}, st.children.length ? st.children.map((p) => h('div', {}, stepLink(p))) : 'none (a leaf)')),
      h('h2', {}, 'Inputs'), json(st.inputs),
      h('h2', {}, 'Results'), json(st.results),
      h('h2', {}, 'Transitions'),
      h('table', {}, h('tbody', {}, st.transitions.map((t) => h('tr', {},
        h('td', {}, '#' + t.id), h('td', {}, label(t.fromState || 'none') + ' → ' + label(t.toState)),
        h('td', {}, time(t.createdAt)),
        h('td', {}, Object.keys(t.metadata || {}).length ? json(t.metadata) : '')))))
    );
  }

  async function act(mutation, id, reason) {
    const doc = mutation === 'cancelTask'
      ? `mutation Act($id: ID!) { cancelTask(id: $id) { id status } }`
      : mutation === 'resolveStepManually'
        ? `mutation Act($id: ID!, $reason: String) { resolveStepManually(id: $id, reason: $reason) { id status } }`
        : `mutation Act($id: ID!) { ${mutation}(id: $id) { id status } }`;
    try {
      await client.query(doc, mutation === 'resolveStepManually' ? { id, reason: reason || null } : { id });
    } catch (e) {
      detail.prepend(h('div', { class: 'error-box', role: 'alert' }, mutation + ' refused: ' + (e.code ? e.code + ': ' : '') + e.message));
      return;
    }
    refresh();
  }

  // apply takes a (re)read task; redraw repaints the nodes (the first read was just drawn).
  function apply(data, redraw) {
    task = data.task;
    drawHead();
    for (const st of task.steps) {
      const before = steps.get(st.id);
      steps.set(st.id, st);
      const g = redraw && picture.nodes.get(st.id);
      if (g && (!before || nodeKey(before) !== nodeKey(st))) fillNode(g, st);
    }
    if (selected && picture) picture.nodes.get(selected)?.classList.add('selected');
  }

  async function first() {
    const t0 = performance.now();
    let d;
    try { d = await client.query(TASK, { id: taskId }); } catch (e) { fail(e); return; }
    if (stopped) return;
    const t1 = performance.now();
    // Resume after the newest transition read ("0": the task has none yet, replay them all),
    // so a move made while the page loads is not missed.
    lastTransitionId = '0';
    for (const st of d.task.steps) {
      for (const tr of st.transitions) if (Number(tr.id) > Number(lastTransitionId)) lastTransitionId = tr.id;
    }
    picture = render(d.task.steps, select);
    canvas.replaceChildren(picture.svg);
    apply(d, false);
    scale = fitScale();
    applyScale();
    // How long the first picture took: the query, then the drawing (shown to tests and curious).
    root.dataset.queryMs = String(Math.round(t1 - t0));
    root.dataset.drawMs = String(Math.round(performance.now() - t1));
    root.dataset.loadedMs = String(Math.round(performance.now() - t0));
    root.dataset.ready = 'true';
    const want = new URLSearchParams(location.search).get('step');
    if (want && steps.has(want)) select(want);
    subscribe();
    // The steps and their transition ids were read by separate statements: one more read
    // covers a move that committed between them (later ones come from the subscription).
    refresh();
  }

  // root.dataset.refreshedThrough is the newest transition heard when the last applied reload
  // began: once it is at least root.dataset.lastTransitionId, the page shows every move heard
  // and no reload is pending.
  let loading = false;
  async function refreshNow() {
    if (loading) { refresh(); return; }
    loading = true;
    const through = lastTransitionId;
    try {
      const d = await client.query(TASK_REFRESH, { id: taskId });
      if (!stopped) {
        apply(d, true);
        root.dataset.refreshedThrough = through;
      }
    } catch (e) { if (!stopped) fail(e); } finally { loading = false; }
    if (selected) loadDetail(true);
  }
  const refresh = throttle(refreshNow, 700);

  let stop = null;
  function subscribe() {
    stop = client.subscribe(STEP_TRANSITIONS, () => ({ taskId, after: lastTransitionId }), {
      next: (d) => {
        const tr = d.stepTransitions;
        if (Number(tr.id) > Number(lastTransitionId)) lastTransitionId = tr.id;
        const st = steps.get(tr.stepId);
        const g = picture.nodes.get(tr.stepId);
        if (st && g) {
          st.status = tr.toState;
          fillNode(g, st);
          if (tr.stepId === selected) g.classList.add('selected');
        }
        root.dataset.lastTransitionId = tr.id;
        refresh();
      },
      error: fail,
    });
  }

  first();
  return () => { stopped = true; if (stop) stop(); };
}
