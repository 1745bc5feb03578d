package migrate_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/db"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// functionBlocks returns the goose statement blocks of a migration's Up (up) or Down section
// that define one of names, keyed by name, each as CREATE OR REPLACE.
func functionBlocks(t *testing.T, file string, up bool, names ...string) map[string]string {
	t.Helper()
	b, err := db.Migrations.ReadFile("migrations/" + file)
	if err != nil {
		t.Fatal(err)
	}
	upPart, downPart, ok := strings.Cut(string(b), "-- +goose Down")
	if !ok {
		t.Fatalf("%s has no Down section", file)
	}
	part := downPart
	if up {
		part = upPart
	}
	out := map[string]string{}
	for _, block := range strings.Split(part, "-- +goose StatementBegin")[1:] {
		block, _, _ = strings.Cut(block, "-- +goose StatementEnd")
		for _, name := range names {
			if strings.Contains(block, "FUNCTION "+name+"()") {
				out[name] = strings.Replace(block, "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
			}
		}
	}
	if len(out) != len(names) {
		t.Fatalf("%s (up %v) defines %d of the functions %v", file, up, len(out), names)
	}
	return out
}

// TestCheaperEngineWritesKeepNotificationsAndComeDown: migration 00059's notification
// functions send, for one statement of 120 step transitions and one of 120 task transitions,
// byte for byte the payloads, on the same channels and in the same order, as migration
// 00034's; and its Down section restores exactly the definitions of 00034 and 00050.
func TestCheaperEngineWritesKeepNotificationsAndComeDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbtest.NewURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	const notifyStep, notifyTask, mark = "tasker_notify_step_transitions", "tasker_notify_task_transitions",
		"tasker_mark_task_inactive_steps"
	defs := func() []string {
		t.Helper()
		var out []string
		for _, name := range []string{notifyStep, notifyTask, mark} {
			var def string
			if err := conn.QueryRow(ctx, `SELECT pg_get_functiondef(to_regproc($1))`, name).Scan(&def); err != nil {
				t.Fatal(err)
			}
			out = append(out, def)
		}
		return out
	}
	apply := func(blocks ...map[string]string) {
		t.Helper()
		for _, b := range blocks {
			for _, q := range b {
				exec(q)
			}
		}
	}
	old := functionBlocks(t, "00034_transition_events_per_statement.sql", true, notifyStep, notifyTask)
	oldMark := functionBlocks(t, "00050_runnable_steps_index.sql", true, mark)
	up := functionBlocks(t, "00059_cheaper_engine_writes.sql", true, notifyStep, notifyTask, mark)
	down := functionBlocks(t, "00059_cheaper_engine_writes.sql", false, notifyStep, notifyTask, mark)

	head := defs()
	apply(down)
	afterDown := defs()
	apply(old, oldMark)
	if previous := defs(); !slices.Equal(afterDown, previous) {
		t.Fatalf("00059's Down defines\n%v\nwhere 00034 and 00050 defined\n%v", afterDown, previous)
	}
	apply(up)
	if again := defs(); !slices.Equal(again, head) {
		t.Fatalf("00059's Up defines\n%v\nbut the migrated database has\n%v", again, head)
	}

	// 60 tasks of two steps; one statement writes 180 step transitions, one 120 task
	// transitions, the first of each owner from no state (from_state NULL), with ids given
	// (not in the owners' order) so that both runs write the same rows.
	exec(`INSERT INTO tasker_dependent_systems (name) VALUES ('notify')`)
	exec(`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'notify')`)
	exec(`INSERT INTO tasker_named_steps (dependent_system_id, name)
		SELECT dependent_system_id, 'n' || i FROM tasker_dependent_systems, generate_series(1, 2) i WHERE name = 'notify'`)
	exec(`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 60)
		WHERE name = 'notify'`)
	exec(`INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		SELECT t.task_id, ns.named_step_id FROM tasker_tasks t, tasker_named_steps ns WHERE ns.name LIKE 'n_'`)
	exec(`LISTEN tasker_step_transitions`)
	exec(`LISTEN tasker_task_transitions`)
	type note struct{ channel, payload string }
	run := func() []note {
		t.Helper()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			// Ids in an order that is not the owners' (descending by step).
			`INSERT INTO tasker_workflow_step_transitions (id, workflow_step_id, to_state, from_state, sort_key, most_recent)
			 SELECT 1000000 + 2 * (1000 - workflow_step_id), workflow_step_id, 'in_progress', NULL, 1, false
			 FROM tasker_workflow_steps WHERE task_id IN (SELECT task_id FROM tasker_tasks)
			 UNION ALL
			 SELECT 1000001 + 2 * (1000 - workflow_step_id), workflow_step_id, 'complete', 'in_progress', 2, true
			 FROM tasker_workflow_steps WHERE workflow_step_id % 2 = 0`,
			`INSERT INTO tasker_task_transitions (id, task_id, to_state, from_state, sort_key, most_recent)
			 SELECT 2000000 + task_id, task_id, 'in_progress', NULL, 1, false FROM tasker_tasks
			 UNION ALL
			 SELECT 2000100 + task_id, task_id, 'error', 'in_progress', 2, true FROM tasker_tasks`,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				t.Fatalf("%v\n%s", err, q)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		var got []note
		for {
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			n, err := conn.WaitForNotification(wctx)
			cancel()
			if err != nil {
				break
			}
			got = append(got, note{n.Channel, n.Payload})
		}
		exec(`DELETE FROM tasker_workflow_step_transitions`)
		exec(`DELETE FROM tasker_task_transitions`)
		return got
	}
	apply(old)
	before := run()
	apply(up)
	after := run()
	var channels []string
	for _, n := range after {
		channels = append(channels, n.channel)
	}
	// 180 step transitions (every step starts, half of them complete) and 120 task transitions.
	want := []string{"tasker_step_transitions", "tasker_step_transitions", "tasker_step_transitions", "tasker_step_transitions",
		"tasker_task_transitions", "tasker_task_transitions", "tasker_task_transitions"}
	if !slices.Equal(channels, want) {
		t.Fatalf("notifications on %v, want %v", channels, want)
	}
	if !slices.Equal(after, before) {
		for i := range min(len(after), len(before)) {
			if after[i] != before[i] {
				t.Fatalf("notification %d:\n%s\nwhere 00034 sent\n%s", i, after[i].payload, before[i].payload)
			}
		}
		t.Fatalf("%d notifications where 00034 sent %d", len(after), len(before))
	}
}
