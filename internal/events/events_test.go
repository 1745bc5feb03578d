package events_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/eventstest"
)

func startHub(t *testing.T) (*events.Hub, string) {
	t.Helper()
	url := dbtest.NewURL(t)
	hub := eventstest.Start(t, url, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return hub, url
}

func waitWake(t *testing.T, s *events.Subscription, want bool) {
	t.Helper()
	select {
	case <-s.C:
		if !want {
			t.Fatal("woken by an event its filter rejects")
		}
	case <-time.After(2 * time.Second):
		if want {
			t.Fatal("not woken within 2s")
		}
	}
}

func TestTransitionsWakeMatchingSubscribersOnly(t *testing.T) {
	t.Parallel()
	hub, url := startHub(t)
	db := dbtest.Open(t, url)
	var taskID, stepID int64
	if err := db.Raw(`
		WITH sys AS (INSERT INTO tasker_dependent_systems (name) VALUES ('s') RETURNING dependent_system_id),
		     ns AS (INSERT INTO tasker_named_steps (dependent_system_id, name) SELECT dependent_system_id, 'x' FROM sys RETURNING named_step_id),
		     nt AS (INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 't') RETURNING named_task_id),
		     task AS (INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM nt RETURNING task_id)
		SELECT task_id FROM task`).Scan(&taskID).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Raw(`INSERT INTO tasker_workflow_steps (task_id, named_step_id) SELECT ?, named_step_id FROM tasker_named_steps RETURNING workflow_step_id`, taskID).Scan(&stepID).Error; err != nil {
		t.Fatal(err)
	}
	var got events.Event
	mine := hub.Subscribe(func(ev events.Event) bool {
		if ev.Channel == events.ChannelStepTransitions && ev.TaskID == taskID {
			got = ev
			return true
		}
		return false
	})
	defer mine.Close()
	other := hub.Subscribe(func(ev events.Event) bool { return ev.TaskID == taskID+1000 })
	defer other.Close()
	// Drain the wake-up every subscriber may get from the initial connection.
	for _, s := range []*events.Subscription{mine, other} {
		select {
		case <-s.C:
		default:
		}
	}
	if err := db.Exec(`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, sort_key) VALUES (?, 'in_progress', 1)`, stepID).Error; err != nil {
		t.Fatal(err)
	}
	waitWake(t, mine, true)
	if got.StepID != stepID || got.To != "in_progress" || got.ID == 0 {
		t.Fatalf("decoded event %+v", got)
	}
	waitWake(t, other, false)
	if hub.Subscribers() != 2 {
		t.Fatalf("%d subscribers", hub.Subscribers())
	}
	other.Close()
	other.Close()
	if hub.Subscribers() != 1 {
		t.Fatalf("%d subscribers after close", hub.Subscribers())
	}
}

// killListener kills the hub's LISTEN connection from the server side.
func killListener(t *testing.T, db *gorm.DB) {
	t.Helper()
	var killed int64
	if err := db.Raw(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'listen%'`).Scan(&killed).Error; err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatal("found no LISTEN connection to kill")
	}
}

func TestHubReconnectsAndWakesEveryoneToCatchUp(t *testing.T) {
	t.Parallel()
	hub, url := startHub(t)
	db := dbtest.Open(t, url)
	sub := hub.Subscribe(func(events.Event) bool { return false })
	defer sub.Close()
	select {
	case <-sub.C:
	default:
	}
	killListener(t, db)
	// The filter rejects every event, so only the reconnect wake-up can arrive.
	select {
	case <-sub.C:
	case <-time.After(10 * time.Second):
		t.Fatal("no catch-up wake-up after reconnecting")
	}
	if !hub.Connected() {
		t.Fatal("hub not connected after reconnect")
	}
}

func TestNewTasksWakeWorkers(t *testing.T) {
	t.Parallel()
	hub, url := startHub(t)
	db := dbtest.Open(t, url)
	var count int64
	sub := hub.Subscribe(func(ev events.Event) bool {
		if ev.Channel == events.ChannelTasksCreated {
			count = ev.Count
			return true
		}
		return false
	})
	defer sub.Close()
	select {
	case <-sub.C:
	default:
	}
	if err := db.Exec(`
		WITH nt AS (INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 't') RETURNING named_task_id)
		INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM nt, generate_series(1, 3)`).Error; err != nil {
		t.Fatal(err)
	}
	waitWake(t, sub, true)
	if count != 3 {
		t.Fatalf("count %d, want 3", count)
	}
}

// TestOneStatementOfTransitionsIsNotifiedInChunks: 120 task transitions inserted by one
// statement are published as 3 notifications (50, 50 and 20 rows), and the hub hands every
// subscriber filter all 120 rows as separate events, with their fields.
func TestOneStatementOfTransitionsIsNotifiedInChunks(t *testing.T) {
	t.Parallel()
	hub, url := startHub(t)
	db := dbtest.Open(t, url)
	ctx := context.Background()
	listener, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = listener.Close(ctx) }()
	if _, err := listener.Exec(ctx, "LISTEN "+events.ChannelTaskTransitions); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[int64]events.Event{} // by transition id
	sub := hub.Subscribe(func(ev events.Event) bool {
		if ev.Channel != events.ChannelTaskTransitions {
			return false
		}
		mu.Lock()
		seen[ev.ID] = ev
		mu.Unlock()
		return true
	})
	defer sub.Close()
	var want []events.Event
	if err := db.Raw(`
		WITH nt AS (INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 't') RETURNING named_task_id),
		     task AS (INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM nt, generate_series(1, 120) RETURNING task_id)
		INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent)
		SELECT task_id, 'in_progress', 'pending', 1, true FROM task
		RETURNING id, task_id, from_state AS "from", to_state AS "to"`).Scan(&want).Error; err != nil {
		t.Fatal(err)
	}
	if len(want) != 120 {
		t.Fatalf("%d transitions inserted", len(want))
	}
	var sizes []int
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := listener.WaitForNotification(wctx)
		cancel()
		if err != nil {
			break
		}
		var p struct{ Rows []json.RawMessage }
		if err := json.Unmarshal([]byte(n.Payload), &p); err != nil || len(n.Payload) >= 8000 {
			t.Fatalf("payload of %d bytes %q: %v", len(n.Payload), n.Payload, err)
		}
		sizes = append(sizes, len(p.Rows))
	}
	if !slices.Equal(sizes, []int{50, 50, 20}) {
		t.Fatalf("notifications of %v rows, want [50 50 20]", sizes)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, w := range want {
		w.Channel = events.ChannelTaskTransitions
		if got := seen[w.ID]; got != w {
			t.Fatalf("event of transition %d: %+v, want %+v", w.ID, got, w)
		}
	}
}

// A watcher is given every event, in order, and the reconnection after a lost connection;
// it is never woken through C, and closing it stops the calls.
func TestWatchersSeeEveryEventInOrder(t *testing.T) {
	t.Parallel()
	hub, url := startHub(t)
	db := dbtest.Open(t, url)
	got := make(chan events.Event, 1000)
	w := hub.Watch(func(ev events.Event) {
		if ev.Channel == "" || ev.Channel == events.ChannelTaskTransitions {
			got <- ev
		}
	})
	defer w.Close()
	if hub.Subscribers() != 1 {
		t.Fatalf("%d subscribers, want the watcher", hub.Subscribers())
	}
	next := func() events.Event {
		t.Helper()
		select {
		case ev := <-got:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10s")
			return events.Event{}
		}
	}
	// The hub may have connected after the watcher registered: skip that catch-up.
	time.Sleep(200 * time.Millisecond)
	for len(got) > 0 {
		<-got
	}
	var want []events.Event
	if err := db.Raw(`
		WITH nt AS (INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 't') RETURNING named_task_id),
		     task AS (INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM nt, generate_series(1, 60) RETURNING task_id)
		INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent)
		SELECT task_id, 'in_progress', 'pending', 1, true FROM task ORDER BY task_id
		RETURNING id, task_id, from_state AS "from", to_state AS "to"`).Scan(&want).Error; err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(want, func(a, b events.Event) int { return int(a.ID - b.ID) })
	for _, w := range want {
		w.Channel = events.ChannelTaskTransitions
		if ev := next(); ev != w {
			t.Fatalf("event %+v, want %+v", ev, w)
		}
	}
	killListener(t, db)
	if ev := next(); ev != (events.Event{}) {
		t.Fatalf("event %+v after a lost connection, want the reconnection", ev)
	}
	select {
	case <-w.C:
		t.Fatal("a watcher was woken through C")
	default:
	}
	w.Close()
	if err := db.Exec(`INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent)
		SELECT task_id, 'complete', 'in_progress', 2, false FROM tasker_tasks LIMIT 1`).Error; err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if len(got) != 0 {
		t.Fatalf("%d events after Close", len(got))
	}
}
