package web_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/refresh"
	"github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// rowIDs returns the task ids of the rows of the task list, top to bottom.
func (b *browser) rowIDs() string {
	return eval[string](b, `[...document.querySelectorAll('tr[data-task-id]')].map(r => r.dataset.taskId).join(' ')`)
}

// TestBrowserTasksPage lists 30 tasks newest first in pages of 25 (the API's cursors), filters
// them by state, and updates a row when its task moves, without a reload.
func TestBrowserTasksPage(t *testing.T) {
	t.Parallel()
	srv := newServer(t, false)
	fx := fixture.New(t, srv.db)
	var ids []int64
	for range 30 {
		ids = append(ids, fx.Task(fixture.Linear).ID)
	}
	ctx := context.Background()
	if _, err := statemachine.TransitionTask(ctx, store.New(srv.db), ids[3], models.StateInProgress, nil); err != nil {
		t.Fatal(err)
	}
	var newest []string
	for i := len(ids) - 1; i >= 5; i-- {
		newest = append(newest, fmt.Sprint(ids[i]))
	}

	b := newBrowser(t, srv.url)
	b.open("/ui/")
	b.waitFor("the first page", `document.querySelectorAll('tr[data-task-id]').length === 25`, 15*time.Second)
	if got := b.rowIDs(); got != strings.Join(newest, " ") {
		t.Errorf("first page %q, want the 25 newest tasks newest first %q", got, strings.Join(newest, " "))
	}
	b.do("paging", chromedpClick(`.pager a:last-of-type`))
	b.waitFor("the second page", `document.querySelectorAll('tr[data-task-id]').length === 5`, 15*time.Second)
	if got := b.rowIDs(); got != fmt.Sprintf("%d %d %d %d %d", ids[4], ids[3], ids[2], ids[1], ids[0]) {
		t.Errorf("second page %q", got)
	}
	b.do("paging back", chromedpClick(`.pager a:first-of-type`))
	b.waitFor("the first page again", `document.querySelectorAll('tr[data-task-id]').length === 25`, 15*time.Second)

	b.waitFor("the state filter", `document.querySelector('select[name=state]')`, 10*time.Second)
	eval[bool](b, `(() => { const s = document.querySelector('select[name=state]'); s.value = 'in_progress'; s.dispatchEvent(new Event('change')); return true; })()`)
	b.waitFor("the filtered list", `location.search === '?state=in_progress' && document.querySelectorAll('tr[data-task-id]').length === 1`, 15*time.Second)
	if got := b.rowIDs(); got != fmt.Sprint(ids[3]) {
		t.Errorf("in progress: %q, want task %d only", got, ids[3])
	}

	// The list subscribes from the cursor read with its page: a move made as soon as the page
	// shows, before the subscription is even sent, is heard.
	eval[bool](b, `window.notReloaded = true`)
	if _, err := statemachine.TransitionTask(ctx, store.New(srv.db), ids[3], models.StateCancelled, nil); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the cancelled task to leave the in-progress list", `document.querySelectorAll('tr[data-task-id]').length === 0`, 10*time.Second)
	b.open("/ui/")
	b.waitFor("the unfiltered list", `document.querySelectorAll('tr[data-task-id]').length === 25`, 15*time.Second)
	eval[bool](b, `window.notReloaded = true`)
	// A move made while the page is offline (its subscription, however late, starts after the
	// move) is heard too: the page resumes from its page's cursor.
	eval[bool](b, `(window.taskerConsole.client.drop(true), true)`)
	b.waitFor("the page to be offline", `window.taskerConsole.client.state === 'reconnecting'`, 10*time.Second)
	if _, err := statemachine.TransitionTask(ctx, store.New(srv.db), ids[0], models.StateInProgress, nil); err != nil {
		t.Fatal(err)
	}
	eval[bool](b, `(window.taskerConsole.client.resume(), true)`)
	b.waitFor("the page to hear of an older task's move",
		fmt.Sprintf(`document.querySelector('.filters .muted')?.textContent === 'task %d → in progress'`, ids[0]), 10*time.Second)
	if _, err := statemachine.TransitionTask(ctx, store.New(srv.db), ids[29], models.StateInProgress, nil); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the newest task's row to show in progress",
		fmt.Sprintf(`document.querySelector('tr[data-task-id="%d"] [data-state=in_progress]')`, ids[29]), 10*time.Second)
	if !eval[bool](b, `window.notReloaded === true`) {
		t.Error("the page reloaded")
	}
	b.screenshot("tasks")
}

// TestBrowserDashboard charts the read models after a refresh, each chart saying when its
// view was refreshed.
func TestBrowserDashboard(t *testing.T) {
	t.Parallel()
	srv := newServer(t, false)
	fx := fixture.New(t, srv.db)
	for range 3 {
		tk := fx.Task(fixture.Diamond)
		tk.Complete("start_workflow", "branch_one_process")
		tk.Fail("branch_two_process", time.Minute)
	}
	for _, name := range refresh.ViewNames() {
		if _, err := srv.refresher.Refresh(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	b := newBrowser(t, srv.url)
	b.open("/ui/dashboard")
	b.waitFor("the charts", `document.querySelector('#app[data-ready]')`, 15*time.Second)
	if n := eval[int](b, `document.querySelectorAll('section.chart').length`); n != 3 {
		t.Errorf("%d charts, want throughput, step durations and task states", n)
	}
	stamps := eval[[]string](b, `[...document.querySelectorAll('section.chart .fresh')].map(e => e.dataset.refreshedAt)`)
	for i, s := range stamps {
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			t.Errorf("chart %d: refreshed at %q: %v", i, s, err)
		}
	}
	if n := eval[int](b, `document.querySelectorAll('section.chart svg rect').length`); n < 9 {
		t.Errorf("%d bars: the charts do not show the data", n)
	}
	b.screenshot("dashboard")
}

// TestBrowserConsoleAsksForToken: with tokens required the console asks for one, refuses a
// wrong one, keeps a good one for the browser session, and shows the operator actions only
// to a role that allows them.
func TestBrowserConsoleAsksForToken(t *testing.T) {
	t.Parallel()
	srv := newServer(t, true)
	ctx := context.Background()
	_, operator, err := srv.store.Create(ctx, auth.Operator, "ops")
	if err != nil {
		t.Fatal(err)
	}
	_, reader, err := srv.store.Create(ctx, auth.Reader, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	taskID, _ := srv.diamond(t, operator)

	b := newBrowser(t, srv.url)
	// The browser logs the 401s that tell the console a token is needed or was refused.
	b.expect("status of 401 (Unauthorized) " + srv.url + "/query")
	b.open("/ui/tasks/" + taskID)
	b.waitFor("the token form", `document.querySelector('form.login input[name=token]')`, 15*time.Second)
	signIn := func(token string) {
		eval[bool](b, fmt.Sprintf(`(() => { document.querySelector('form.login input[name=token]').value = %q;
			document.querySelector('form.login').requestSubmit(); return true; })()`, token))
	}
	signIn("tkr_not_a_token")
	b.waitFor("the refusal", `(document.querySelector('form.login .error-box') || {}).textContent?.includes('refused')`, 10*time.Second)

	signIn(reader)
	b.waitFor("the DAG for a reader", `document.querySelector('#app[data-ready]')`, 15*time.Second)
	if got := b.text("#who"); !strings.HasPrefix(got, "viewer · reader") {
		t.Errorf("who = %q", got)
	}
	if eval[bool](b, `[...document.querySelectorAll('button')].some(b => b.textContent === 'Cancel task')`) {
		t.Error("a reader is offered Cancel task")
	}
	if got := eval[string](b, `sessionStorage.getItem('tasker.token')`); got != reader {
		t.Error("the token is not kept in sessionStorage")
	}
	b.waitFor("the subscription with the token", `window.taskerConsole.client.state === 'live'`, 10*time.Second)

	eval[bool](b, `(sessionStorage.removeItem('tasker.token'), true)`)
	b.open("/ui/tasks/" + taskID)
	b.waitFor("the token form", `document.querySelector('form.login input[name=token]')`, 15*time.Second)
	signIn(operator)
	b.waitFor("the DAG for an operator", `document.querySelector('#app[data-ready]')`, 15*time.Second)
	if !eval[bool](b, `[...document.querySelectorAll('button')].some(b => b.textContent === 'Cancel task')`) {
		t.Error("an operator is not offered Cancel task")
	}
	b.open("/ui/dashboard") // a new page load: the session's token is used without asking
	b.waitFor("the dashboard", `document.querySelector('#app[data-ready]')`, 15*time.Second)

	// The playground sends the session's token too.
	b.open("/")
	b.waitFor("GraphiQL", `document.querySelector('.graphiql-container .graphiql-query-editor')`, 20*time.Second)
	if got := b.runExample(`"nodes"`); strings.Contains(got, `"errors"`) {
		t.Errorf("the example run with the session's token failed: %s", got)
	}
}
