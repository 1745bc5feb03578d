package events_test

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/dbtest"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/events/eventstest"
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
	// Kill the hub's LISTEN connection from the server side.
	var killed int64
	if err := db.Raw(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'listen%'`).Scan(&killed).Error; err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatal("found no LISTEN connection to kill")
	}
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
