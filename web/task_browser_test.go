package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/shape"
	"github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// gql runs a GraphQL operation against the server (with token when not empty) and decodes
// its data into out; any error fails the test.
func (s *testServer) gql(t *testing.T, token, query string, vars map[string]any, out any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, s.url+"/query", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data   json.RawMessage
		Errors []struct{ Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || len(r.Errors) > 0 {
		t.Fatalf("%s: %v %+v", query, err, r.Errors)
	}
	if out != nil {
		if err := json.Unmarshal(r.Data, out); err != nil {
			t.Fatal(err)
		}
	}
}

// diamond creates a task of the shipped examples/diamond_workflow template (the demo's
// diamond) through the API and returns its id and its step ids by name.
func (s *testServer) diamond(t *testing.T, token string) (string, map[string]int64) {
	t.Helper()
	var d struct {
		CreateTask struct {
			ID    string
			Steps []struct{ ID, Name string }
		}
	}
	s.gql(t, token, `mutation { createTask(input: {namespace: "examples", name: "diamond_workflow", reason: "console test"}) { id steps { id name } } }`, nil, &d)
	ids := map[string]int64{}
	for _, st := range d.CreateTask.Steps {
		var id int64
		fmt.Sscan(st.ID, &id)
		ids[st.Name] = id
	}
	if len(ids) != 7 {
		t.Fatalf("diamond has %d steps, want 7", len(ids))
	}
	return d.CreateTask.ID, ids
}

// move walks a step through states as the engine would, one transition each.
func (s *testServer) move(t *testing.T, stepID int64, states ...models.State) {
	t.Helper()
	for _, st := range states {
		if _, err := statemachine.TransitionStep(context.Background(), store.New(s.db), stepID, st, map[string]any{"by": "console test"}); err != nil {
			t.Fatalf("moving step %d to %s: %v", stepID, st, err)
		}
	}
}

// stepsInDB returns "id=state" of every step of the task, and "from-to" of every edge, sorted.
func (s *testServer) stepsInDB(t *testing.T, taskID string) (steps, edges []string) {
	t.Helper()
	err := s.db.Raw(`SELECT s.workflow_step_id || '=' || coalesce(tr.to_state, 'pending')
		FROM tasker_workflow_steps s
		LEFT JOIN tasker_workflow_step_transitions tr ON tr.workflow_step_id = s.workflow_step_id AND tr.most_recent
		WHERE s.task_id = ?`, taskID).Scan(&steps).Error
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Raw(`SELECT e.from_step_id || '-' || e.to_step_id FROM tasker_workflow_step_edges e
		JOIN tasker_workflow_steps s ON s.workflow_step_id = e.to_step_id WHERE s.task_id = ?`, taskID).Scan(&edges).Error
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(steps)
	sort.Strings(edges)
	return steps, edges
}

// onPage returns "id=state" of every step element and the data-edge of every edge element
// of the task page, sorted.
func (b *browser) onPage() (steps, edges []string) {
	b.t.Helper()
	steps = eval[[]string](b, `[...document.querySelectorAll('[data-step-id]')].map(e => e.dataset.stepId + '=' + e.dataset.state)`)
	edges = eval[[]string](b, `[...document.querySelectorAll('[data-edge]')].map(e => e.dataset.edge)`)
	sort.Strings(steps)
	sort.Strings(edges)
	return steps, edges
}

// TestBrowserTaskPageShowsTheDAG opens the page of a diamond task whose steps are in every
// kind of state and compares the picture with the database: exactly the task's steps with
// their current states, exactly its edges, the blocked steps' reasons and retry times, and
// the detail of a clicked step. The screenshot is the README's (docs/console-task.png).
func TestBrowserTaskPageShowsTheDAG(t *testing.T) {
	t.Parallel()
	srv := newServer(t, false)
	taskID, ids := srv.diamond(t, "")
	srv.diamond(t, "") // another task, whose steps must not show
	var id int64
	fmt.Sscan(taskID, &id)
	if _, err := statemachine.TransitionTask(context.Background(), store.New(srv.db), id, models.StateInProgress, nil); err != nil {
		t.Fatal(err)
	}
	srv.move(t, ids["start_workflow"], models.StateInProgress, models.StateComplete)
	srv.move(t, ids["branch_one_process"], models.StateInProgress, models.StateError)
	if err := srv.db.Exec(`UPDATE tasker_workflow_steps SET attempts = 1, processed = true, processed_at = now(),
		results = '{"started": true}' WHERE workflow_step_id = ?`, ids["start_workflow"]).Error; err != nil {
		t.Fatal(err)
	}
	if err := srv.db.Exec(`UPDATE tasker_workflow_steps SET attempts = 1, last_attempted_at = now(), backoff_request_seconds = 30,
		results = '{"error": "branch_one_process fails once"}' WHERE workflow_step_id = ?`, ids["branch_one_process"]).Error; err != nil {
		t.Fatal(err)
	}
	srv.move(t, ids["branch_two_process"], models.StateInProgress)
	if err := srv.db.Exec(`UPDATE tasker_workflow_steps SET attempts = 1, in_process = true WHERE workflow_step_id = ?`, ids["branch_two_process"]).Error; err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, srv.url)
	start := time.Now()
	b.open("/ui/tasks/" + taskID)
	b.waitFor("the DAG", `document.querySelector('#app[data-ready]')`, 15*time.Second)
	t.Logf("task page drawn %v after navigation (%s ms in the page)", time.Since(start).Round(time.Millisecond),
		eval[string](b, `document.getElementById('app').dataset.loadedMs`))

	wantSteps, wantEdges := srv.stepsInDB(t, taskID)
	gotSteps, gotEdges := b.onPage()
	if strings.Join(gotSteps, " ") != strings.Join(wantSteps, " ") {
		t.Errorf("steps on the page %v, in the database %v", gotSteps, wantSteps)
	}
	if len(wantEdges) != 7 || strings.Join(gotEdges, " ") != strings.Join(wantEdges, " ") {
		t.Errorf("edges on the page %v, in the database %v", gotEdges, wantEdges)
	}
	why := eval[string](b, fmt.Sprintf(`document.querySelector('[data-step-id="%d"] .why').textContent`, ids["branch_one_process"]))
	if !strings.HasPrefix(why, "backoff · retry ") {
		t.Errorf("branch_one_process says %q, want its blocking reason (backoff) and next retry time", why)
	}
	why = eval[string](b, fmt.Sprintf(`document.querySelector('[data-step-id="%d"] .why').textContent`, ids["branch_one_validate"]))
	if why != "dependencies not satisfied" {
		t.Errorf("branch_one_validate says %q, want dependencies not satisfied", why)
	}

	b.do("clicking branch_one_process", chromedpClick(fmt.Sprintf(`[data-step-id="%d"]`, ids["branch_one_process"])))
	b.waitFor("the step's detail", `document.querySelector('aside.detail [data-field=blockingReason]')`, 10*time.Second)
	if got := b.text(`aside.detail [data-field=blockingReason]`); got != "backoff" {
		t.Errorf("detail blocking reason %q", got)
	}
	if got := b.text(`aside.detail [data-field=nextRetryAt]`); got == "—" {
		t.Errorf("detail has no next retry time")
	}
	if n := eval[int](b, `document.querySelectorAll('aside.detail table tr').length`); n != 2 {
		t.Errorf("detail lists %d transitions, want 2 (pending → in progress → error)", n)
	}
	if !eval[bool](b, `[...document.querySelectorAll('aside.detail button')].some(b => b.textContent === 'Retry')`) {
		t.Error("an admin (open mode) is not offered Retry on a step in error")
	}
	b.screenshot("task-diamond")

	// The operator action goes through the API and the picture follows.
	b.do("clicking Retry", chromedpClick(`aside.detail button.primary`))
	b.waitFor("branch_one_process pending again", fmt.Sprintf(`document.querySelector('[data-step-id="%d"][data-state=pending]')`, ids["branch_one_process"]), 10*time.Second)
	if steps, _ := srv.stepsInDB(t, taskID); !strings.Contains(" "+strings.Join(steps, " ")+" ", fmt.Sprintf(" %d=pending ", ids["branch_one_process"])) {
		t.Errorf("after Retry the database has %v", steps)
	}
}

// TestBrowserTaskPageFollowsTransitions moves a task's steps while its page is open: each
// node changes state without a reload, and moves made while the websocket is down arrive
// once it reconnects (the client resumes with afterTransitionId).
func TestBrowserTaskPageFollowsTransitions(t *testing.T) {
	t.Parallel()
	srv := newServer(t, false)
	taskID, ids := srv.diamond(t, "")
	b := newBrowser(t, srv.url)
	b.open("/ui/tasks/" + taskID)
	b.waitFor("the DAG", `document.querySelector('#app[data-ready]')`, 15*time.Second)
	b.waitFor("the subscription", `window.taskerConsole.client.state === 'live'`, 10*time.Second)
	eval[bool](b, `window.notReloaded = true`)

	node := func(name, state string) string {
		return fmt.Sprintf(`document.querySelector('[data-step-id="%d"][data-state="%s"]')`, ids[name], state)
	}
	srv.move(t, ids["start_workflow"], models.StateInProgress)
	b.waitFor("start_workflow in progress", node("start_workflow", "in_progress"), 10*time.Second)
	srv.move(t, ids["start_workflow"], models.StateComplete)
	b.waitFor("start_workflow complete", node("start_workflow", "complete"), 10*time.Second)
	b.waitFor("branch_one_process ready", `document.querySelector('[data-step-id="`+fmt.Sprint(ids["branch_one_process"])+`"].ready')`, 10*time.Second)

	// Offline: the websocket is closed and held; the moves happen; then it reconnects. The
	// page's own reload after the last move it heard must be over first, or it would show the
	// offline moves without the subscription.
	b.waitFor("the page's reload after start_workflow's moves",
		`(d => Number(d.refreshedThrough) >= Number(d.lastTransitionId))(document.querySelector('#app').dataset)`, 10*time.Second)
	eval[bool](b, `(window.taskerConsole.client.drop(true), true)`)
	b.waitFor("the websocket to close", `window.taskerConsole.client.state === 'reconnecting'`, 10*time.Second)
	srv.move(t, ids["branch_one_process"], models.StateInProgress, models.StateComplete)
	srv.move(t, ids["branch_two_process"], models.StateInProgress)
	time.Sleep(300 * time.Millisecond)
	if eval[bool](b, node("branch_one_process", "complete")+` !== null`) {
		t.Fatal("the page changed while its websocket was down: the test does not test resumption")
	}
	eval[bool](b, `(window.taskerConsole.client.resume(), true)`)
	b.waitFor("branch_one_process complete after reconnecting", node("branch_one_process", "complete"), 10*time.Second)
	b.waitFor("branch_two_process in progress after reconnecting", node("branch_two_process", "in_progress"), 10*time.Second)

	if !eval[bool](b, `window.notReloaded === true`) {
		t.Error("the page reloaded")
	}
	wantSteps, _ := srv.stepsInDB(t, taskID)
	b.waitFor("the page to match the database", fmt.Sprintf(
		`[...document.querySelectorAll('[data-step-id]')].map(e => e.dataset.stepId + '=' + e.dataset.state).sort().join(' ') === %q`,
		strings.Join(wantSteps, " ")), 10*time.Second)
	b.screenshot("task-live")
}

// TestBrowserTaskPageThousandSteps opens a 1,000-step task: every step and edge is drawn.
func TestBrowserTaskPageThousandSteps(t *testing.T) {
	t.Parallel()
	srv := newServer(t, false)
	wide, err := shape.Wide(1000)
	if err != nil {
		t.Fatal(err)
	}
	tk := fixture.New(t, srv.db).Task(wide)
	b := newBrowser(t, srv.url)
	start := time.Now()
	b.open(fmt.Sprintf("/ui/tasks/%d", tk.ID))
	b.waitFor("the DAG", `document.querySelector('#app[data-ready]')`, 30*time.Second)
	t.Logf("1,000-step task drawn %v after navigation (in the page: %s)", time.Since(start).Round(time.Millisecond),
		eval[string](b, `(d => d.queryMs + ' ms query, ' + d.drawMs + ' ms drawing')(document.getElementById('app').dataset)`))
	steps, edges := b.onPage()
	wantSteps, wantEdges := srv.stepsInDB(t, fmt.Sprint(tk.ID))
	if len(steps) != 1000 || strings.Join(steps, " ") != strings.Join(wantSteps, " ") {
		t.Errorf("%d steps on the page, want the task's 1,000", len(steps))
	}
	if len(edges) != len(wantEdges) || strings.Join(edges, " ") != strings.Join(wantEdges, " ") {
		t.Errorf("%d edges on the page, want the task's %d", len(edges), len(wantEdges))
	}
	b.screenshot("task-1000-steps")
}

// TestBrowserTaskPageFollowsTheEngine opens the demo's diamond before any worker runs, then
// starts the engine: the page goes through what the engine does (steps in progress, the
// failing branch in error, its retry) to every step complete, without a reload, and ends
// equal to the database.
func TestBrowserTaskPageFollowsTheEngine(t *testing.T) {
	t.Parallel()
	srv := newServer(t, false)
	taskID, _ := srv.diamond(t, "")
	b := newBrowser(t, srv.url)
	b.open("/ui/tasks/" + taskID)
	b.waitFor("the DAG", `document.querySelector('#app[data-ready]')`, 15*time.Second)
	// Record every state each node shows, and mark the page to detect a reload.
	eval[bool](b, `(() => {
		window.notReloaded = true;
		window.seen = new Set([...document.querySelectorAll('[data-step-id]')].map(e => e.dataset.state));
		new MutationObserver((ms) => ms.forEach((m) => window.seen.add(m.target.dataset.state)))
			.observe(document.querySelector('svg.dag'), { subtree: true, attributeFilter: ['data-state'] });
		return true;
	})()`)

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, err := orchestration.New(orchestration.NewService(srv.db, nil), srv.hub, orchestration.NewConfiguredHandlers(handler.NewBuiltinRegistry()),
		orchestration.Config{Workers: 4, PollInterval: 200 * time.Millisecond}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = eng.Stop(ctx)
	})

	b.waitFor("every step complete", `[...document.querySelectorAll('[data-step-id]')].every(e => e.dataset.state === 'complete')`, 60*time.Second)
	b.waitFor("the task complete", `document.querySelector('[data-task-state=complete]')`, 10*time.Second)
	seen := eval[[]string](b, `[...window.seen].sort()`)
	if strings.Join(seen, " ") != "complete error in_progress pending" {
		t.Errorf("states shown while the engine ran: %v, want pending, in_progress, error (the failing branch) and complete", seen)
	}
	if !eval[bool](b, `window.notReloaded === true`) {
		t.Error("the page reloaded")
	}
	wantSteps, _ := srv.stepsInDB(t, taskID)
	gotSteps, _ := b.onPage()
	if strings.Join(gotSteps, " ") != strings.Join(wantSteps, " ") {
		t.Errorf("steps on the page %v, in the database %v", gotSteps, wantSteps)
	}
	b.screenshot("task-engine-done")
}
