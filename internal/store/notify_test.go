package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// notified is one transition as a notification describes it.
type notified struct {
	Channel string
	ID      int64   `json:"id"`
	TaskID  int64   `json:"task_id"`
	StepID  int64   `json:"step_id"`
	From    *string `json:"from"`
	To      string  `json:"to"`
}

func (n notified) String() string {
	from := "null"
	if n.From != nil {
		from = *n.From
	}
	return fmt.Sprintf("%s #%d task %d step %d %s->%s", n.Channel, n.ID, n.TaskID, n.StepID, from, n.To)
}

// TestEngineTransactionsNotifyTheirTransitionsAsTheTriggersDo: the transitions an engine
// transaction writes are notified once each, by the transaction itself (not by the triggers),
// with the same channels and fields as the triggers' notifications of another writer's
// transitions, 50 rows at most to a notification; a step's task comes from its row or, when
// the writer did not name it, is looked up; and a transaction that rolls back notifies nothing.
// Both engine transactions are checked: on the service's handle (settings set per transaction)
// and on an engine pool (settings from connect time).
func TestEngineTransactionsNotifyTheirTransitionsAsTheTriggersDo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := dbtest.NewURL(t)
	db, err := database.Open(ctx, url, database.Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	pool, err := database.OpenEngine(ctx, url, database.Options{MaxOpenConns: 1}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })
	s := New(db)
	// Task 1: 3 steps, written by a plain transaction. Tasks 2 and 3: 60 steps each, written by
	// an engine transaction on the handle and on the engine pool. Task 4: 2 steps, written by
	// an engine transaction that rolls back.
	seed(t, s,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('notify')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'notify')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name)
		 SELECT dependent_system_id, 's' || i FROM tasker_dependent_systems, generate_series(1, 60) i`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 4)`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		 SELECT t.task_id, ns.named_step_id FROM tasker_tasks t, tasker_named_steps ns
		 WHERE substr(ns.name, 2)::int <= CASE t.task_id WHEN 1 THEN 3 WHEN 4 THEN 2 ELSE 60 END
		 ORDER BY t.task_id, ns.named_step_id`)

	listener, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = listener.Close(context.Background()) })
	for _, c := range []string{events.ChannelStepTransitions, events.ChannelTaskTransitions} {
		if _, err := listener.Exec(ctx, "LISTEN "+c); err != nil {
			t.Fatal(err)
		}
	}

	start := func(task int64, named bool) []TransitionRow {
		var steps []int64
		if err := s.db.Raw(`SELECT workflow_step_id FROM tasker_workflow_steps WHERE task_id = ? ORDER BY 1`, task).
			Scan(&steps).Error; err != nil {
			t.Fatal(err)
		}
		rows := make([]TransitionRow, len(steps))
		for i, id := range steps {
			rows[i] = TransitionRow{Owner: id, ToState: "in_progress", Metadata: json.RawMessage(`{}`), SortKey: 1, MostRecent: true}
			if named && i%2 == 0 {
				rows[i].TaskID = task // the others are looked up
			}
		}
		return rows
	}
	taskRow := func(task int64) []TransitionRow {
		return []TransitionRow{{Owner: task, ToState: "in_progress", Metadata: json.RawMessage(`{}`), SortKey: 1, MostRecent: true}}
	}
	steps := map[int64][]TransitionRow{1: start(1, false), 2: start(2, true), 3: start(3, true), 4: start(4, true)}
	write := func(tx *Store, task int64) error {
		if _, err := tx.WriteTransitionsUnread(ctx, StepOwner, nil, steps[task]); err != nil {
			return err
		}
		_, err := tx.WriteTransitions(ctx, TaskOwner, nil, taskRow(task))
		return err
	}
	if err := s.Tx(ctx, func(tx *Store) error { return write(tx, 1) }); err != nil {
		t.Fatal(err)
	}
	if err := s.EngineTx(ctx, false, func(tx *Store) error { return write(tx, 2) }); err != nil {
		t.Fatal(err)
	}
	if err := s.WithEngine(pool).EngineTx(ctx, false, func(tx *Store) error { return write(tx, 3) }); err != nil {
		t.Fatal(err)
	}
	errRolledBack := errors.New("rolled back")
	if err := s.EngineTx(ctx, false, func(tx *Store) error {
		if err := write(tx, 4); err != nil {
			return err
		}
		return errRolledBack
	}); !errors.Is(err, errRolledBack) {
		t.Fatalf("the rolled back transaction: %v", err)
	}

	// What was written, as the notifications must describe it.
	var want []notified
	if err := s.db.Raw(`
		SELECT 'tasker_step_transitions' AS channel, st.id, ws.task_id, st.workflow_step_id AS step_id,
		       st.from_state AS "from", st.to_state AS "to"
		FROM tasker_workflow_step_transitions st JOIN tasker_workflow_steps ws USING (workflow_step_id)
		UNION ALL
		SELECT 'tasker_task_transitions', id, task_id, 0, from_state, to_state FROM tasker_task_transitions
		ORDER BY 1, 2`).Scan(&want).Error; err != nil {
		t.Fatal(err)
	}
	if len(want) != 3+60+60+3 {
		t.Fatalf("%d transitions written, want 126", len(want))
	}
	var got []notified
	sizes := map[string][]int{}
	for len(got) < len(want)+1 { // one more: wait a moment for a duplicate that must not come
		wait, cancel := context.WithTimeout(ctx, 2*time.Second)
		if len(got) == len(want) {
			wait, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
		}
		n, err := listener.WaitForNotification(wait)
		cancel()
		if err != nil {
			if len(got) == len(want) {
				break
			}
			t.Fatalf("after %d of %d notified transitions: %v", len(got), len(want), err)
		}
		var p struct{ Rows []notified }
		if err := json.Unmarshal([]byte(n.Payload), &p); err != nil {
			t.Fatalf("payload %q: %v", n.Payload, err)
		}
		sizes[n.Channel] = append(sizes[n.Channel], len(p.Rows))
		for _, r := range p.Rows {
			r.Channel = n.Channel
			got = append(got, r)
		}
	}
	slices.SortFunc(got, func(a, b notified) int {
		return cmp.Or(strings.Compare(a.Channel, b.Channel), cmp.Compare(a.ID, b.ID))
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("notified\n%v\nwant, once each,\n%v", got, want)
	}
	// The plain transaction's 3 step transitions, then 50 + 10 of each engine transaction's.
	if s := fmt.Sprint(sizes); s != "map[tasker_step_transitions:[3 50 10 50 10] tasker_task_transitions:[1 1 1]]" {
		t.Errorf("rows per notification %s", s)
	}
}
