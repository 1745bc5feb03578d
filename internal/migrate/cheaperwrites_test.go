package migrate_test

import (
	"context"
	"fmt"
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

// connect opens a connection to a fresh database, closed when t ends, and an exec that fails t
// on an error, naming the statement.
func connect(t *testing.T) (*pgx.Conn, func(q string, args ...any)) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbtest.NewURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(ctx) })
	return conn, func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
}

// TestCheaperEngineWritesKeepNotificationsAndComeDown: migration 00059's notification
// functions, and 00061's step notification, send, for one statement of 120 step transitions and one of 120 task transitions,
// byte for byte the payloads, on the same channels and in the same order, as migration
// 00034's; 00059's Down section restores exactly the definitions of 00034 and 00050, and
// 00061's that of 00059 (with 00067's settings of the mark function).
func TestCheaperEngineWritesKeepNotificationsAndComeDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, exec := connect(t)
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
	up61 := functionBlocks(t, "00061_step_notify_lookup.sql", true, notifyStep)
	down61 := functionBlocks(t, "00061_step_notify_lookup.sql", false, notifyStep)

	// Migration 00067 weighs merge and hash joins out of the mark function's plans: a setting
	// of the function, not a definition, which the blocks above do not carry.
	const settings67 = `ALTER FUNCTION tasker_mark_task_inactive_steps() SET enable_mergejoin = off SET enable_hashjoin = off`

	head := defs()
	apply(down61)
	after61Down := defs()
	apply(up)
	exec(settings67)
	if previous := defs(); !slices.Equal(after61Down, previous) {
		t.Fatalf("00061's Down defines\n%v\nwhere 00059 defined\n%v", after61Down, previous)
	}
	apply(down)
	afterDown := defs()
	apply(old, oldMark)
	if previous := defs(); !slices.Equal(afterDown, previous) {
		t.Fatalf("00059's Down defines\n%v\nwhere 00034 and 00050 defined\n%v", afterDown, previous)
	}
	apply(up, up61)
	exec(settings67)
	if again := defs(); !slices.Equal(again, head) {
		t.Fatalf("00059's and 00061's Up define\n%v\nbut the migrated database has\n%v", again, head)
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
	for _, m := range []struct {
		name   string
		blocks map[string]string
	}{{"00059", up}, {"00061", up61}} {
		apply(m.blocks)
		after := run()
		var channels []string
		for _, n := range after {
			channels = append(channels, n.channel)
		}
		// 180 step transitions (every step starts, half of them complete) and 120 task transitions.
		want := []string{"tasker_step_transitions", "tasker_step_transitions", "tasker_step_transitions", "tasker_step_transitions",
			"tasker_task_transitions", "tasker_task_transitions", "tasker_task_transitions"}
		if !slices.Equal(channels, want) {
			t.Fatalf("%s: notifications on %v, want %v", m.name, channels, want)
		}
		if !slices.Equal(after, before) {
			for i := range min(len(after), len(before)) {
				if after[i] != before[i] {
					t.Fatalf("%s: notification %d:\n%s\nwhere 00034 sent\n%s", m.name, i, after[i].payload, before[i].payload)
				}
			}
			t.Fatalf("%s: %d notifications where 00034 sent %d", m.name, len(after), len(before))
		}
	}
}

// TestStepNotificationReadsNoStepTableScan writes 32 step transitions in one statement over
// 20,000 steps, on a connection whose notification function was first planned while the
// table was tiny: the statement reads no step by a sequential scan (00061 looks each task id
// up by primary key; 00059's join kept a plan that read the whole table).
func TestStepNotificationReadsNoStepTableScan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, exec := connect(t)
	exec(`INSERT INTO tasker_dependent_systems (name) VALUES ('scan')`)
	exec(`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'scan')`)
	exec(`INSERT INTO tasker_named_steps (dependent_system_id, name) SELECT dependent_system_id, 's' FROM tasker_dependent_systems WHERE name = 'scan'`)
	steps := func(from, to int) {
		t.Helper()
		exec(fmt.Sprintf(`WITH t AS (INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(%d, %d)
			WHERE name = 'scan' RETURNING task_id)
			INSERT INTO tasker_workflow_steps (task_id, named_step_id) SELECT t.task_id, ns.named_step_id FROM t, tasker_named_steps ns WHERE ns.name = 's'`, from, to))
	}
	// transitions writes 32 step transitions from offset in one statement and returns how many
	// sequential scans of the steps table its transaction made; with quiet set, the
	// notification trigger skips itself (tasker.bulk_load, migration 00051).
	transitions := func(offset int, quiet bool) int64 {
		t.Helper()
		var ids []int64
		rows, err := conn.Query(ctx, `SELECT workflow_step_id FROM tasker_workflow_steps ORDER BY workflow_step_id OFFSET $1 LIMIT 32`, offset)
		if err != nil {
			t.Fatal(err)
		}
		if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
			t.Fatal(err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, `SELECT set_config('tasker.bulk_load', $1, true)`, map[bool]string{true: "on", false: "off"}[quiet]); err != nil {
			t.Fatal(err)
		}
		// The backend's counts not yet reported (which can span transactions), before and after.
		seqScans := func() int64 {
			var n int64
			if err := tx.QueryRow(ctx, `SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_xact_user_tables
				WHERE relname = 'tasker_workflow_steps'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		before := seqScans()
		if _, err := tx.Exec(ctx, `INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, sort_key, most_recent)
			SELECT id, 'in_progress', 1, true FROM unnest($1::bigint[]) id`, ids); err != nil {
			t.Fatal(err)
		}
		return seqScans() - before
	}
	steps(1, 40)
	exec(`ANALYZE tasker_workflow_steps`)
	// Plans the function (and caches it on this connection) with 40 steps.
	for i := range 6 {
		transitions(i, false)
	}
	steps(41, 20000)
	loud, quiet := transitions(100, false), transitions(200, true)
	if loud != quiet {
		t.Errorf("writing 32 step transitions over 20,000 steps: %d sequential scans of the steps table, %d without the notification", loud, quiet)
	}
}
