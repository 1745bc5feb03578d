package server_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// wsClient speaks graphql-transport-ws (or the older graphql-ws) by hand.
type wsClient struct {
	t     testing.TB
	conn  *websocket.Conn
	proto string
	ctx   context.Context
}

type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func (e *env) dialWS(t testing.TB, proto string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/query"
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{proto}})
	if err != nil {
		t.Fatalf("dialing %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	if conn.Subprotocol() != proto {
		t.Fatalf("subprotocol = %q, want %q", conn.Subprotocol(), proto)
	}
	c := &wsClient{t: t, conn: conn, proto: proto, ctx: ctx}
	c.send(wsMessage{Type: "connection_init"})
	if m := c.next(); m.Type != "connection_ack" {
		t.Fatalf("want connection_ack, got %+v", m)
	}
	return c
}

func (c *wsClient) send(m wsMessage) {
	c.t.Helper()
	if err := wsjson.Write(c.ctx, c.conn, m); err != nil {
		c.t.Fatalf("writing %s: %v", m.Type, err)
	}
}

// next returns the next message that is not a keep-alive.
func (c *wsClient) next() wsMessage {
	c.t.Helper()
	for {
		var m wsMessage
		if err := wsjson.Read(c.ctx, c.conn, &m); err != nil {
			c.t.Fatalf("reading: %v", err)
		}
		if m.Type != "ka" && m.Type != "ping" && m.Type != "pong" {
			return m
		}
	}
}

func (c *wsClient) subscribe(id, query string, vars map[string]any) {
	c.t.Helper()
	payload, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	typ := "subscribe"
	if c.proto == "graphql-ws" {
		typ = "start"
	}
	c.send(wsMessage{ID: id, Type: typ, Payload: payload})
}

type transitionEvent struct {
	ID        string  `json:"id"`
	StepID    string  `json:"stepId"`
	TaskID    string  `json:"taskId"`
	FromState *string `json:"fromState"`
	ToState   string  `json:"toState"`
	Step      *struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	} `json:"step"`
}

// event reads the next data message of subscription id and decodes its field.
func (c *wsClient) event(id, field string) transitionEvent {
	c.t.Helper()
	m := c.next()
	want := "next"
	if c.proto == "graphql-ws" {
		want = "data"
	}
	if m.Type != want || m.ID != id {
		c.t.Fatalf("want %s for %s, got %+v (%s)", want, id, m, m.Payload)
	}
	var p struct {
		Data   map[string]transitionEvent `json:"data"`
		Errors []gqlError                 `json:"errors"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil || len(p.Errors) > 0 {
		c.t.Fatalf("payload %s: %v %+v", m.Payload, err, p.Errors)
	}
	return p.Data[field]
}

const stepSub = `subscription($task: ID, $after: ID) {
	stepTransitions(taskId: $task, afterTransitionId: $after) {
		id stepId taskId fromState toState step { name status } } }`

// insertTransition appends a transition to a step's history with plain SQL through db (not
// most_recent, so concurrent writers never collide) and returns its id.
func insertTransition(t testing.TB, db *gorm.DB, stepID int64, to models.State) int64 {
	t.Helper()
	var id int64
	err := db.Raw(`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, sort_key, most_recent)
		VALUES (?, ?, (SELECT coalesce(max(sort_key), 0) + 1 FROM tasker_workflow_step_transitions WHERE workflow_step_id = ?), false)
		RETURNING id`, stepID, string(to), stepID).Row().Scan(&id)
	if err != nil {
		t.Fatalf("inserting transition: %v", err)
	}
	return id
}

func stepTransitionIDs(t testing.TB, db *gorm.DB, stepID int64) []int64 {
	t.Helper()
	var ids []int64
	if err := db.Raw(`SELECT id FROM tasker_workflow_step_transitions WHERE workflow_step_id = ? ORDER BY id`, stepID).
		Scan(&ids).Error; err != nil {
		t.Fatal(err)
	}
	return ids
}

// A subscriber resuming after a transition gets what it missed, in order, then live events
// written by another process (another pool), with no gap and no duplicate; the nested step
// field is read fresh for each event.
func TestStepTransitionsResumeThenLiveFromAnotherProcess(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.FourStep)
	tk.Fail("one", time.Minute) // in_progress, error
	missed := stepTransitionIDs(t, e.db, tk.Step("one"))
	other := dbtest.Open(t, e.url) // a second pool: another process as far as the server knows

	c := e.dialWS(t, "graphql-transport-ws")
	c.subscribe("1", stepSub, map[string]any{"after": id(missed[0])})
	got := c.event("1", "stepTransitions")
	if got.ID != id(missed[1]) || got.ToState != "ERROR" || *got.FromState != "IN_PROGRESS" || got.Step.Name != "one" {
		t.Fatalf("first resumed event = %+v, want transition %d (in_progress -> error of one)", got, missed[1])
	}

	// Live, from the other pool.
	fixture.New(t, other).Task(fixture.Linear) // unrelated writes do not disturb the stream
	live := insertTransition(t, other, tk.Step("two"), models.StateInProgress)
	got = c.event("1", "stepTransitions")
	if got.ID != id(live) || got.StepID != id(tk.Step("two")) || got.TaskID != id(tk.ID) {
		t.Fatalf("live event = %+v, want transition %d of step two", got, live)
	}
	next := insertTransition(t, other, tk.Step("three"), models.StateCancelled)
	if got = c.event("1", "stepTransitions"); got.ID != id(next) {
		t.Fatalf("event after live = %+v, want %d (no duplicate, no gap)", got, next)
	}
}

func TestStepTransitionsFilterByTaskOverGraphqlWS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.fx.Task(fixture.FourStep)
	b := e.fx.Task(fixture.FourStep)
	c := e.dialWS(t, "graphql-ws")
	c.subscribe("7", stepSub, map[string]any{"task": id(b.ID), "after": "0"})
	wait.Until(t, 10*time.Second, "1 live subscriptions", func() bool { return e.api.Subscribers() == 1 })
	insertTransition(t, e.db, a.Step("one"), models.StateInProgress)
	want := insertTransition(t, e.db, b.Step("two"), models.StateInProgress)
	if got := c.event("7", "stepTransitions"); got.ID != id(want) || got.TaskID != id(b.ID) {
		t.Fatalf("event = %+v, want transition %d of task %d only", got, want, b.ID)
	}
}

func TestTaskTransitionsByNamespace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.FourStep)
	c := e.dialWS(t, "graphql-transport-ws")
	c.subscribe("a", `subscription { taskTransitions(namespace: "fixture", afterTransitionId: "0") { id taskId fromState toState task { id status } } }`, nil)
	c.subscribe("b", `subscription { taskTransitions(namespace: "default", afterTransitionId: "0") { id } }`, nil)
	wait.Until(t, 10*time.Second, "2 live subscriptions", func() bool { return e.api.Subscribers() == 2 })
	tk.TaskTransition(0, models.StateInProgress)
	m := c.next()
	if m.ID != "a" || m.Type != "next" {
		t.Fatalf("want the fixture namespace's event, got %+v %s", m, m.Payload)
	}
	var p struct {
		Data struct {
			TaskTransitions struct {
				TaskID  string `json:"taskId"`
				ToState string `json:"toState"`
				Task    struct{ Status string }
			} `json:"taskTransitions"`
		} `json:"data"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil {
		t.Fatal(err)
	}
	tt := p.Data.TaskTransitions
	if tt.TaskID != id(tk.ID) || tt.ToState != "IN_PROGRESS" || tt.Task.Status != "IN_PROGRESS" {
		t.Fatalf("task transition = %+v", tt)
	}
}

// A transaction that commits after a higher-numbered transition was delivered is still
// delivered (once).
func TestStepTransitionsDeliverLateCommits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.FourStep)
	other := dbtest.Open(t, e.url)
	c := e.dialWS(t, "graphql-transport-ws")
	c.subscribe("1", stepSub, map[string]any{"after": "0"})
	wait.Until(t, 10*time.Second, "1 live subscriptions", func() bool { return e.api.Subscribers() == 1 })

	slow := other.Begin()
	if slow.Error != nil {
		t.Fatal(slow.Error)
	}
	defer slow.Rollback()
	early := insertTransition(t, slow, tk.Step("one"), models.StateInProgress)
	late := insertTransition(t, other, tk.Step("two"), models.StateInProgress)
	if late <= early {
		t.Fatalf("ids %d, %d: want the committed one higher", early, late)
	}
	if got := c.event("1", "stepTransitions"); got.ID != id(late) {
		t.Fatalf("event = %+v, want %d", got, late)
	}
	if err := slow.Commit().Error; err != nil {
		t.Fatal(err)
	}
	if got := c.event("1", "stepTransitions"); got.ID != id(early) {
		t.Fatalf("event = %+v, want the late commit %d", got, early)
	}
	after := insertTransition(t, other, tk.Step("three"), models.StateInProgress)
	if got := c.event("1", "stepTransitions"); got.ID != id(after) {
		t.Fatalf("event = %+v, want %d (no duplicate)", got, after)
	}
}

// Concurrent writers on several connections: every transition arrives exactly once.
func TestStepTransitionsConcurrentWriters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.FourStep)
	other := dbtest.Open(t, e.url)
	c := e.dialWS(t, "graphql-transport-ws")
	c.subscribe("1", stepSub, map[string]any{"task": id(tk.ID), "after": "0"})
	wait.Until(t, 10*time.Second, "1 live subscriptions", func() bool { return e.api.Subscribers() == 1 })

	const writers, each = 4, 15
	steps := tk.StepIDs("one", "two", "three", "four")
	var mu sync.Mutex
	written := map[string]bool{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for range each {
				n := insertTransition(t, other, steps[w], models.StateInProgress)
				mu.Lock()
				written[id(n)] = true
				mu.Unlock()
			}
		})
	}
	received := map[string]int{}
	for range writers * each {
		ev := c.event("1", "stepTransitions")
		received[ev.ID]++
	}
	wg.Wait()
	for k := range written {
		if received[k] != 1 {
			t.Errorf("transition %s received %d times", k, received[k])
		}
	}
	if len(received) != writers*each {
		t.Errorf("received %d distinct transitions, want %d", len(received), writers*each)
	}
}

// A client that goes away mid-stream leaves no subscription behind; one that completes its
// subscription neither.
func TestSubscriptionsEndWithTheClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.FourStep)
	for i := range 3 {
		ids := stepTransitionIDs(t, e.db, tk.Step("one"))
		after := "0"
		if len(ids) > 0 {
			after = id(ids[len(ids)-1])
		}
		c := e.dialWS(t, "graphql-transport-ws")
		c.subscribe("1", stepSub, map[string]any{"after": after})
		c.subscribe("2", `subscription { taskTransitions { id } }`, nil)
		wait.Until(t, 10*time.Second, "2 live subscriptions", func() bool { return e.api.Subscribers() == 2 })
		insertTransition(t, e.db, tk.Step("one"), models.StateInProgress)
		c.event("1", "stepTransitions")
		switch i {
		case 0:
			_ = c.conn.CloseNow() // vanish without a close handshake
		case 1:
			_ = c.conn.Close(websocket.StatusNormalClosure, "bye")
		case 2:
			c.send(wsMessage{ID: "1", Type: "complete"})
			c.send(wsMessage{ID: "2", Type: "complete"})
		}
		wait.Until(t, 10*time.Second, "0 live subscriptions", func() bool { return e.api.Subscribers() == 0 })
		if i == 2 {
			_ = c.conn.CloseNow()
		}
	}
}

// The tasks page's transitionCursor is the newest task transition id read no later than the
// page: a taskTransitions subscription from it delivers a move made after the page was read
// but before the subscription started, and nothing the page already shows.
func TestTaskTransitionsFromThePagesCursorMissNoMove(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	shown, later := e.fx.Task(fixture.Linear), e.fx.Task(fixture.Linear)
	shown.TaskTransition(0, models.StateInProgress)
	var page struct {
		Tasks struct {
			Nodes []struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			} `json:"nodes"`
			TransitionCursor string `json:"transitionCursor"`
		} `json:"tasks"`
	}
	r := e.data(`{ tasks(first: 5) { nodes { id status } transitionCursor } }`, nil, &page)
	var newest int64
	if err := e.db.Raw(`SELECT max(id) FROM tasker_task_transitions`).Scan(&newest).Error; err != nil {
		t.Fatal(err)
	}
	if page.Tasks.TransitionCursor != id(newest) || len(page.Tasks.Nodes) != 2 || page.Tasks.Nodes[1].Status != "IN_PROGRESS" {
		t.Fatalf("page %+v, want both tasks and the cursor %d of the move it shows", page.Tasks, newest)
	}
	if n := r.Extensions.QueryStats.SQLStatements; n != 2 {
		t.Errorf("tasks with transitionCursor ran %d statements, want 2 (the cursor, then the page)", n)
	}

	later.TaskTransition(0, models.StateInProgress) // after the page, before the subscription
	c := e.dialWS(t, "graphql-transport-ws")
	c.subscribe("1", `subscription($after: ID) { taskTransitions(afterTransitionId: $after) { id taskId toState } }`,
		map[string]any{"after": page.Tasks.TransitionCursor})
	if got := c.event("1", "taskTransitions"); got.TaskID != id(later.ID) || got.ToState != "IN_PROGRESS" {
		t.Fatalf("first event from the page's cursor = %+v, want task %d's move", got, later.ID)
	}
}
