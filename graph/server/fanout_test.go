package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket/wsjson"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// fanoutSub selects the transition's own columns only: nested fields (step, task) are read
// for each response, so for each subscriber, by design; what is measured here is the stream.
const fanoutSub = `subscription($task: ID, $after: ID) {
	stepTransitions(taskId: $task, afterTransitionId: $after) { id taskId createdAt } }`

// fanoutRun is what one round of TestSubscriptionsMultiplexed measured.
type fanoutRun struct {
	subscribers, transitions int
	statements               int64 // run by the server's pool while the transitions were delivered
	p50, p99                 time.Duration
}

// runFanout opens n stepTransitions subscriptions (50 per websocket connection; even ones
// watch every task, odd ones one of tasks, in turn), then commits one transition per step of
// every task, one at a time from another pool, each once every subscriber has the previous
// one. It checks every subscriber got exactly its transitions, once each, in order, and
// returns the server's statements and the delivery latencies (the transition's created_at
// to its decoding by the client).
func runFanout(t *testing.T, e *env, other *gorm.DB, tasks []*fixture.Task, n int) fanoutRun {
	t.Helper()
	var after int64
	if err := e.db.Raw(`SELECT coalesce(max(id), 0) FROM tasker_workflow_step_transitions`).Row().Scan(&after); err != nil {
		t.Fatal(err)
	}
	watch := func(i int) int64 { // task watched by subscriber i, 0 for all
		if i%2 == 0 {
			return 0
		}
		return tasks[(i/2)%len(tasks)].ID
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		mu        sync.Mutex
		got       = make([][]int64, n)
		delivered = map[int64]int{}
		latencies []time.Duration
	)
	var readers sync.WaitGroup
	var conns []*wsClient
	for first := 0; first < n; first += 50 {
		c := e.dialWS(t, "graphql-transport-ws")
		c.ctx = ctx
		conns = append(conns, c)
		for i := first; i < min(n, first+50); i++ {
			vars := map[string]any{"after": id(after)}
			if w := watch(i); w != 0 {
				vars["task"] = id(w)
			}
			c.subscribe(strconv.Itoa(i), fanoutSub, vars)
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				var m wsMessage
				if err := wsjson.Read(ctx, c.conn, &m); err != nil {
					return // the connection closed at the end of the round
				}
				if m.Type != "next" {
					continue
				}
				received := time.Now()
				var p struct {
					Data struct {
						StepTransitions struct {
							ID        string    `json:"id"`
							CreatedAt time.Time `json:"createdAt"`
						} `json:"stepTransitions"`
					} `json:"data"`
					Errors []gqlError `json:"errors"`
				}
				sub, err := strconv.Atoi(m.ID)
				if err != nil || json.Unmarshal(m.Payload, &p) != nil || len(p.Errors) > 0 {
					t.Errorf("subscription %q: unexpected message %s", m.ID, m.Payload)
					continue
				}
				tid, _ := strconv.ParseInt(p.Data.StepTransitions.ID, 10, 64)
				mu.Lock()
				got[sub] = append(got[sub], tid)
				delivered[tid]++
				latencies = append(latencies, received.Sub(p.Data.StepTransitions.CreatedAt))
				mu.Unlock()
			}
		}()
	}
	wait.Until(t, time.Minute, fmt.Sprintf("%d live subscriptions", n), func() bool { return e.api.Subscribers() == n })

	before := e.statements.Load()
	var written []int64
	want := make([][]int64, n)
	for _, step := range []string{"one", "two", "three", "four"} {
		for _, tk := range tasks {
			tid := insertTransition(t, other, tk.Step(step), models.StateInProgress)
			written = append(written, tid)
			recipients := 0
			for i := range n {
				if w := watch(i); w == 0 || w == tk.ID {
					want[i] = append(want[i], tid)
					recipients++
				}
			}
			wait.Until(t, time.Minute, fmt.Sprintf("transition %d at its %d subscribers", tid, recipients), func() bool {
				mu.Lock()
				defer mu.Unlock()
				return delivered[tid] >= recipients
			})
		}
	}
	statements := e.statements.Load() - before
	time.Sleep(100 * time.Millisecond) // a duplicate would arrive now
	for _, c := range conns {
		_ = c.conn.CloseNow()
	}
	readers.Wait()
	wait.Until(t, 10*time.Second, "subscriptions ended", func() bool { return e.api.Subscribers() == 0 })

	for i := range n {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("subscriber %d (task %d) got %v, want %v: every transition once, in order", i, watch(i), got[i], want[i])
		}
	}
	slices.Sort(latencies)
	pct := func(p float64) time.Duration { return latencies[min(len(latencies)-1, int(p*float64(len(latencies))))] }
	return fanoutRun{subscribers: n, transitions: len(written), statements: statements, p50: pct(0.50), p99: pct(0.99)}
}

// One process serves 1,000 stepTransitions subscribers (20 websocket connections, 500
// watching every task and 50 watching each of 10 tasks) with at most twice the statements
// per transition it runs for one subscriber: the transition table is read once per wake-up
// for all of them. Every subscriber gets every transition it watches, once, in order.
// Latencies are logged for BENCHMARKS.md.
func TestSubscriptionsMultiplexed(t *testing.T) {
	e := newEnv(t)
	other := dbtest.Open(t, e.url) // the writer: another process as far as the server knows
	var tasks []*fixture.Task
	for range 10 {
		tasks = append(tasks, e.fx.Task(fixture.FourStep))
	}
	one := runFanout(t, e, other, tasks, 1)
	many := runFanout(t, e, other, tasks, 1000)
	for _, r := range []fanoutRun{one, many} {
		t.Logf("subscribers=%d transitions=%d statements=%d (%.2f per transition) latency p50=%s p99=%s",
			r.subscribers, r.transitions, r.statements, float64(r.statements)/float64(r.transitions), r.p50, r.p99)
	}
	if one.statements == 0 {
		t.Fatal("one subscriber's transitions were delivered without reading the database")
	}
	if many.statements > 2*one.statements {
		t.Fatalf("1,000 subscribers ran %d statements for %d transitions, over twice the %d of one subscriber",
			many.statements, many.transitions, one.statements)
	}
}

// insertBigTransition appends a transition whose metadata holds size bytes.
func insertBigTransition(t testing.TB, db *gorm.DB, stepID int64, size int) int64 {
	t.Helper()
	var tid int64
	err := db.Raw(`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, sort_key, most_recent, metadata)
		VALUES (?, 'in_progress', (SELECT coalesce(max(sort_key), 0) + 1 FROM tasker_workflow_step_transitions WHERE workflow_step_id = ?), false,
		        jsonb_build_object('pad', repeat('x', ?)))
		RETURNING id`, stepID, stepID, size).Row().Scan(&tid)
	if err != nil {
		t.Fatalf("inserting transition: %v", err)
	}
	return tid
}

// A client that stops reading its websocket does not hold back another subscriber: once its
// stream is Buffer rows behind, it is closed with SLOW_SUBSCRIBER after the rows it had,
// without a gap, while the other subscriber gets every transition.
func TestSlowSubscriberIsClosedWithACode(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) { c.Feed.Buffer = 8 })
	tk := e.fx.Task(fixture.FourStep)
	const sub = `subscription($task: ID, $after: ID) { stepTransitions(taskId: $task, afterTransitionId: $after) { id metadata } }`
	vars := map[string]any{"task": id(tk.ID), "after": "0"}
	slow := e.dialWS(t, "graphql-transport-ws")
	slow.subscribe("slow", sub, vars)
	fast := e.dialWS(t, "graphql-transport-ws")
	fast.subscribe("fast", sub, vars)
	slow.conn.SetReadLimit(1 << 20)
	fast.conn.SetReadLimit(1 << 20)
	wait.Until(t, 10*time.Second, "2 live subscriptions", func() bool { return e.api.Subscribers() == 2 })

	// 64 KiB per event: the slow connection's socket buffers fill within a few hundred events.
	var written []int64
	for i := 0; e.api.Subscribers() == 2; i++ {
		if i == 2000 {
			t.Fatal("the subscriber that does not read was never closed")
		}
		tid := insertBigTransition(t, e.db, tk.Step("one"), 64<<10)
		written = append(written, tid)
		if got := fast.event("fast", "stepTransitions"); got.ID != id(tid) {
			t.Fatalf("fast subscriber got %s, want %d", got.ID, tid)
		}
	}
	// The slow client reads at last: a prefix of the transitions, in order, then the code.
	var got []int64
	for {
		m := slow.next()
		if m.Type == "complete" {
			t.Fatalf("subscription completed without SLOW_SUBSCRIBER after %d events", len(got))
		}
		var p struct {
			Data   map[string]transitionEvent `json:"data"`
			Errors []gqlError                 `json:"errors"`
		}
		switch {
		case m.ID == "slow" && m.Type == "next":
			if err := json.Unmarshal(m.Payload, &p); err != nil {
				t.Fatal(err)
			}
		case m.ID == "slow" && m.Type == "error":
			if err := json.Unmarshal(m.Payload, &p.Errors); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected message %+v", m)
		}
		if len(p.Errors) > 0 {
			if len(p.Errors) != 1 || p.Errors[0].Extensions["code"] != "SLOW_SUBSCRIBER" ||
				!strings.Contains(p.Errors[0].Message, "afterTransitionId") {
				t.Fatalf("errors %+v, want one SLOW_SUBSCRIBER", p.Errors)
			}
			break
		}
		tid, _ := strconv.ParseInt(p.Data["stepTransitions"].ID, 10, 64)
		got = append(got, tid)
	}
	if len(got) == 0 || len(got) >= len(written) || !slices.Equal(got, written[:len(got)]) {
		t.Fatalf("slow subscriber got %v before its error, want a proper prefix of %v", got, written)
	}
	if m := slow.next(); m.Type != "complete" || m.ID != "slow" {
		t.Fatalf("after the error: %+v, want complete", m)
	}
	// The client resumes where it stopped, and gets the rest.
	slow.subscribe("again", sub, map[string]any{"task": id(tk.ID), "after": id(got[len(got)-1])})
	for _, want := range written[len(got):] {
		if ev := slow.event("again", "stepTransitions"); ev.ID != id(want) {
			t.Fatalf("resumed stream gave %s, want %d", ev.ID, want)
		}
	}
}

// A subscriber resuming far in the past catches up alone, in pages of 500, and then joins the
// live reader: its replay costs its own pages only (the live reader does not re-read the
// range for everyone), and it gets every transition once, in order.
func TestResumingFarBehindCatchesUpAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.FourStep)
	other := dbtest.Open(t, e.url)
	var start int64
	if err := e.db.Raw(`SELECT coalesce(max(id), 0) FROM tasker_workflow_step_transitions`).Row().Scan(&start); err != nil {
		t.Fatal(err)
	}
	live := e.dialWS(t, "graphql-transport-ws")
	live.subscribe("live", fanoutSub, map[string]any{"after": id(start)})
	wait.Until(t, 10*time.Second, "1 live subscriptions", func() bool { return e.api.Subscribers() == 1 })

	const n = 1200
	var written []int64
	if err := other.Raw(`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, sort_key, most_recent)
		SELECT ?, 'in_progress', 1000 + g, false FROM generate_series(1, ?) g ORDER BY g RETURNING id`, tk.Step("one"), n).
		Scan(&written).Error; err != nil {
		t.Fatal(err)
	}
	slices.Sort(written)
	for _, want := range written {
		if got := live.event("live", "stepTransitions"); got.ID != id(want) {
			t.Fatalf("live subscriber got %s, want %d", got.ID, want)
		}
	}
	// Let the live reader's last wake-ups pass, then count.
	for last := int64(-1); last != e.statements.Load(); {
		last = e.statements.Load()
		time.Sleep(200 * time.Millisecond)
	}
	before := e.statements.Load()
	late := e.dialWS(t, "graphql-transport-ws")
	late.subscribe("late", fanoutSub, map[string]any{"after": id(start)})
	for _, want := range written {
		if got := late.event("late", "stepTransitions"); got.ID != id(want) {
			t.Fatalf("resuming subscriber got %s, want %d", got.ID, want)
		}
	}
	wait.Until(t, 10*time.Second, "2 live subscriptions", func() bool { return e.api.Subscribers() == 2 })
	// Three pages (500, 500, 200) and the read after joining; at most one more if a wake-up
	// of the live reader was still pending.
	if got := e.statements.Load() - before; got < 4 || got > 5 {
		t.Fatalf("resuming over %d transitions ran %d statements, want 4 (its pages and one read after joining)", n, got)
	}
	// Both are live now: the next transition reaches each once.
	next := insertTransition(t, other, tk.Step("two"), models.StateInProgress)
	for _, c := range []struct {
		c   *wsClient
		sub string
	}{{live, "live"}, {late, "late"}} {
		if got := c.c.event(c.sub, "stepTransitions"); got.ID != id(next) {
			t.Fatalf("%s got %s after catching up, want %d", c.sub, got.ID, next)
		}
	}
}
