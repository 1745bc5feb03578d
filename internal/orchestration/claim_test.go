package orchestration

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// seedChains writes total tasks of five chained steps with plain SQL; the first done tasks are
// complete (every step processed and complete), the rest are fresh.
func seedChains(t testing.TB, db *gorm.DB, total, done int) {
	t.Helper()
	seedChainRows(t, db, total, done)
	if err := db.Exec(`VACUUM ANALYZE`).Error; err != nil {
		t.Fatal(err)
	}
}

// seedChainRows is seedChains without the final VACUUM ANALYZE. It may be called again to add
// more tasks: the first done of each call's tasks are complete.
func seedChainRows(t testing.TB, db *gorm.DB, total, done int) {
	t.Helper()
	var first int64
	if err := db.Raw(`SELECT coalesce(max(task_id), 0) FROM tasker_tasks`).Row().Scan(&first); err != nil {
		t.Fatal(err)
	}
	stmts := []string{
		`INSERT INTO tasker_dependent_systems (name) SELECT 'seed'
		 WHERE NOT EXISTS (SELECT 1 FROM tasker_dependent_systems WHERE name = 'seed')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) SELECT 1, 'seed_chain'
		 WHERE NOT EXISTS (SELECT 1 FROM tasker_named_tasks WHERE name = 'seed_chain')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name)
		 SELECT d.dependent_system_id, 's' || i FROM tasker_dependent_systems d, generate_series(1, 5) i
		 WHERE d.name = 'seed' AND NOT EXISTS (SELECT 1 FROM tasker_named_steps WHERE name = 's1')`,
		`INSERT INTO tasker_tasks (named_task_id)
		 SELECT named_task_id FROM tasker_named_tasks, generate_series(1, @total) WHERE name = 'seed_chain'`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		 SELECT t.task_id, ns.named_step_id FROM tasker_tasks t CROSS JOIN tasker_named_steps ns
		 WHERE ns.name LIKE 's_' AND t.task_id > @first ORDER BY t.task_id, ns.name`,
		`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id)
		 SELECT a.workflow_step_id, b.workflow_step_id
		 FROM tasker_workflow_steps a JOIN tasker_named_steps na ON na.named_step_id = a.named_step_id
		 JOIN tasker_workflow_steps b ON b.task_id = a.task_id
		 JOIN tasker_named_steps nb ON nb.named_step_id = b.named_step_id
		 WHERE substr(nb.name, 2)::int = substr(na.name, 2)::int + 1 AND a.task_id > @first`,
		`UPDATE tasker_workflow_steps SET processed = true, processed_at = now(), attempts = 1,
		 last_attempted_at = now() WHERE task_id > @first AND task_id <= @last`,
		`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent)
		 SELECT workflow_step_id, 'in_progress', NULL, 1, false FROM tasker_workflow_steps
		 WHERE task_id > @first AND task_id <= @last
		 UNION ALL
		 SELECT workflow_step_id, 'complete', 'in_progress', 2, true FROM tasker_workflow_steps
		 WHERE task_id > @first AND task_id <= @last`,
		`INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent)
		 SELECT task_id, 'in_progress', NULL, 1, false FROM tasker_tasks WHERE task_id > @first AND task_id <= @last
		 UNION ALL
		 SELECT task_id, 'complete', 'in_progress', 2, true FROM tasker_tasks WHERE task_id > @first AND task_id <= @last`,
	}
	execSeed(t, db, map[string]any{"total": total, "first": first, "last": first + int64(done)}, stmts...)
}

// execSeed runs stmts on db in order, failing the test at the first that fails; those that
// name @parameters get them from named.
func execSeed(t testing.TB, db *gorm.DB, named map[string]any, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		var args []any
		if strings.Contains(q, "@") {
			args = append(args, named)
		}
		if err := db.Exec(q, args...).Error; err != nil {
			t.Fatalf("seeding: %v\n%s", err, q)
		}
	}
}

// TestClaimQueryUsesTheClaimableIndex checks the plan of the claim on 3,000 tasks (2,500 of
// them complete): the candidate steps come from the partial index, so finished work is never
// read, and the statement stays fast; the next-retry query reads the partial index of steps
// waiting for a retry.
func TestClaimQueryUsesTheClaimableIndex(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	seedChains(t, db, 3000, 2500)
	// The engine runs the claim and the next-retry query once on a traced pool; their
	// statements, as they were sent, are then explained on their own.
	trace := &statementLog{seen: map[string]bool{}, settings: map[*pgx.Conn][]captured{}}
	traced, err := database.Open(context.Background(), url, database.Options{MaxOpenConns: 2, Tracer: trace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(traced) })
	pool, err := database.OpenEngine(context.Background(), url, database.Options{MaxOpenConns: PoolConns, Tracer: trace}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })
	e, err := New(NewService(traced, nil), nil, noopHandlers{},
		Config{WorkerID: "explain", LeaseDuration: time.Minute, Pool: pool}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	runs, err := e.claim(ctx, 8)
	if err != nil {
		t.Fatal(err)
	}
	closeRuns(runs)
	if _, _, err := e.nextRetryIn(ctx); err != nil {
		t.Fatal(err)
	}
	statement := func(marker string) captured {
		for _, c := range trace.statements() {
			if strings.Contains(c.sql, marker) {
				return c
			}
		}
		t.Fatalf("no statement with %q was run", marker)
		return captured{}
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	// Each is explained in a transaction rolled back, so that the claim can be measured again.
	explain := func(c captured) string {
		tx, err := sqlDB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		rows, err := tx.QueryContext(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+c.sql, c.args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var lines []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, line)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return strings.Join(lines, "\n")
	}
	begin := time.Now()
	plan := explain(statement("claim_token = gen_random_uuid()"))
	t.Logf("claim of 8 among 500 fresh and 2,500 complete tasks took %s:\n%s", time.Since(begin), plan)
	if !strings.Contains(plan, "tasker_workflow_steps_runnable_idx") {
		t.Errorf("the claim does not use the claimable index:\n%s", plan)
	}
	if !strings.Contains(plan, "rows=8 ") {
		t.Errorf("the claim did not claim 8 steps:\n%s", plan)
	}
	next := explain(statement("min(r.next_retry_at)"))
	t.Logf("next retry time:\n%s", next)
	if !strings.Contains(next, "tasker_workflow_steps_retry_waiting_idx") {
		t.Errorf("the next-retry query does not use the index of steps waiting for a retry:\n%s", next)
	}
}

// TestAClaimStartsWithTheStateMachinesMoves: the claim statement writes the starts of what it
// claims itself (through tasker_engine_start), from the metadata the state machine encoded
// once for the engine. Each move must be the one the state machine would have written for that
// step: a fresh step pending → in_progress with its first attempt's number; a step in error
// (its backoff over) error → pending (reason retry) → in_progress with its second attempt's
// number, after its history; the fresh step's pending task → in_progress. Every metadata is
// compared with what statemachine.Metadata encodes for the move.
func TestAClaimStartsWithTheStateMachinesMoves(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	execSeed(t, db, nil,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('moves')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'moves')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name) SELECT dependent_system_id, 'only' FROM tasker_dependent_systems`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 2)`,
		// The first task's step is fresh; the second's failed its first attempt an hour ago.
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id, attempts, last_attempted_at)
		 SELECT t.task_id, ns.named_step_id, CASE WHEN t.task_id = 1 THEN 0 ELSE 1 END,
		        CASE WHEN t.task_id = 2 THEN now() - interval '1 hour' END
		 FROM tasker_tasks t, tasker_named_steps ns ORDER BY t.task_id`,
		`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent, created_at)
		 SELECT ws.workflow_step_id, x.to_state, x.from_state, x.sort_key, x.sort_key = 2, now() - interval '1 hour'
		 FROM tasker_workflow_steps ws, (VALUES ('in_progress', NULL, 1), ('error', 'in_progress', 2)) AS x(to_state, from_state, sort_key)
		 WHERE ws.task_id = 2`,
		`INSERT INTO tasker_task_transitions (task_id, to_state, sort_key, most_recent) VALUES (2, 'in_progress', 1, true)`)
	e, _, _ := loggedEngine(t, url, "moves")
	runs, err := e.claim(context.Background(), 2)
	closeRuns(runs)
	if err != nil || len(runs) != 2 {
		t.Fatalf("claimed %d steps (%v), want 2", len(runs), err)
	}
	meta := func(kind sm.Kind, from, to models.State, m map[string]any) string {
		t.Helper()
		b, err := sm.Metadata(kind, from, to, m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	type move struct {
		Owner   int64
		Kind    string
		From    string
		To      string
		SortKey int
		Current bool
		Meta    string
	}
	want := []move{
		{1, "step", "", "in_progress", 1, true, meta(sm.KindStep, models.StatePending, models.StateInProgress,
			map[string]any{"worker_id": "moves", "attempt": 1})},
		{2, "step", "error", "pending", 3, false, meta(sm.KindStep, models.StateError, models.StatePending,
			map[string]any{"reason": "retry", "worker_id": "moves"})},
		{2, "step", "pending", "in_progress", 4, true, meta(sm.KindStep, models.StatePending, models.StateInProgress,
			map[string]any{"worker_id": "moves", "attempt": 2})},
		{1, "task", "", "in_progress", 1, true, meta(sm.KindTask, models.StatePending, models.StateInProgress,
			map[string]any{"worker_id": "moves"})},
	}
	// Each written move, with its metadata as the state machine's if they are equal as JSON.
	var got []move
	if err := db.Raw(`
		SELECT ws.task_id AS owner, 'step' AS kind, coalesce(st.from_state, '') AS "from", st.to_state AS "to", st.sort_key, st.most_recent AS current,
		       CASE WHEN st.metadata = CAST(w.meta AS jsonb) THEN w.meta ELSE st.metadata::text END AS meta
		FROM tasker_workflow_step_transitions st JOIN tasker_workflow_steps ws USING (workflow_step_id)
		JOIN (VALUES (1, 1, ?), (2, 3, ?), (2, 4, ?)) AS w(task_id, sort_key, meta) ON w.task_id = ws.task_id AND w.sort_key = st.sort_key
		UNION ALL
		SELECT tt.task_id, 'task', coalesce(tt.from_state, ''), tt.to_state, tt.sort_key, tt.most_recent,
		       CASE WHEN tt.metadata = CAST(? AS jsonb) THEN ? ELSE tt.metadata::text END
		FROM tasker_task_transitions tt WHERE tt.task_id = 1
		ORDER BY 1, 2, 5`, want[0].Meta, want[1].Meta, want[2].Meta, want[3].Meta, want[3].Meta).Scan(&got).Error; err != nil {
		t.Fatal(err)
	}
	// The query lists the moves by task, steps' before tasks', by sort key: order want alike.
	want = []move{want[0], want[3], want[1], want[2]}
	if !slices.Equal(got, want) {
		t.Errorf("moves written by the claim:\n%+v\nwant\n%+v", got, want)
	}
}
