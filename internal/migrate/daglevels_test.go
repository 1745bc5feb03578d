package migrate_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taskerhq/tasker/internal/shape"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

func migratedDB(t *testing.T) *sql.DB {
	t.Helper()
	sqlDB, err := dbtest.New(t).DB()
	if err != nil {
		t.Fatalf("getting *sql.DB: %v", err)
	}
	return sqlDB
}

// insertShape writes a task of shape s (named task, named steps, task, steps, edges) with one
// statement per table and returns the task id and the step ids by step name.
func insertShape(t *testing.T, sqlDB *sql.DB, s shape.Shape) (int64, map[string]int64) {
	t.Helper()
	ctx := context.Background()
	edges, err := s.Edges()
	if err != nil {
		t.Fatalf("shape %s: %v", s.Name, err)
	}
	names := make([]string, len(s.Steps))
	for i, st := range s.Steps {
		names[i] = st.Name
	}
	var systemID, namedTaskID, taskID int64
	err = sqlDB.QueryRowContext(ctx, `
		INSERT INTO tasker_dependent_systems (name) VALUES ('dag_test')
		ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
		RETURNING dependent_system_id`).Scan(&systemID)
	if err != nil {
		t.Fatalf("inserting dependent system: %v", err)
	}
	err = sqlDB.QueryRowContext(ctx, `
		INSERT INTO tasker_named_tasks (task_namespace_id, name)
		SELECT task_namespace_id, $1 FROM tasker_task_namespaces WHERE name = 'default'
		ON CONFLICT (task_namespace_id, name, version) DO UPDATE SET name = EXCLUDED.name
		RETURNING named_task_id`, s.Name).Scan(&namedTaskID)
	if err != nil {
		t.Fatalf("inserting named task %s: %v", s.Name, err)
	}
	if _, err := sqlDB.ExecContext(ctx, `
		INSERT INTO tasker_named_steps (dependent_system_id, name)
		SELECT $1, unnest($2::text[]) ON CONFLICT (dependent_system_id, name) DO NOTHING`,
		systemID, names); err != nil {
		t.Fatalf("inserting named steps of %s: %v", s.Name, err)
	}
	if err := sqlDB.QueryRowContext(ctx,
		`INSERT INTO tasker_tasks (named_task_id) VALUES ($1) RETURNING task_id`, namedTaskID).Scan(&taskID); err != nil {
		t.Fatalf("inserting task: %v", err)
	}
	if _, err := sqlDB.ExecContext(ctx, `
		INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		SELECT $1, ns.named_step_id
		FROM unnest($2::text[]) WITH ORDINALITY AS u (name, i)
		JOIN tasker_named_steps ns ON ns.dependent_system_id = $3 AND ns.name = u.name
		ORDER BY u.i`, taskID, names, systemID); err != nil {
		t.Fatalf("inserting steps of %s: %v", s.Name, err)
	}
	ids := stepIDs(t, sqlDB, taskID)
	from := make([]int64, len(edges))
	to := make([]int64, len(edges))
	for i, e := range edges {
		from[i], to[i] = ids[names[e[0]]], ids[names[e[1]]]
	}
	if _, err := sqlDB.ExecContext(ctx, `
		INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id)
		SELECT unnest($1::bigint[]), unnest($2::bigint[])`, from, to); err != nil {
		t.Fatalf("inserting edges of %s: %v", s.Name, err)
	}
	return taskID, ids
}

func stepIDs(t *testing.T, sqlDB *sql.DB, taskID int64) map[string]int64 {
	t.Helper()
	rows, err := sqlDB.QueryContext(context.Background(), `
		SELECT ns.name, ws.workflow_step_id
		FROM tasker_workflow_steps ws JOIN tasker_named_steps ns USING (named_step_id)
		WHERE ws.task_id = $1`, taskID)
	if err != nil {
		t.Fatalf("reading steps of task %d: %v", taskID, err)
	}
	defer rows.Close()
	ids := map[string]int64{}
	for rows.Next() {
		var name string
		var id int64
		if err := rows.Scan(&name, &id); err != nil {
			t.Fatalf("scanning step: %v", err)
		}
		ids[name] = id
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading steps of task %d: %v", taskID, err)
	}
	return ids
}

type depth struct{ min, level int }

// depths returns the stored (min_depth_from_root, dependency_level) of every step of the task,
// by step name.
func depths(t *testing.T, sqlDB *sql.DB, taskID int64) map[string]depth {
	t.Helper()
	rows, err := sqlDB.QueryContext(context.Background(), `
		SELECT ns.name, ws.min_depth_from_root, ws.dependency_level
		FROM tasker_workflow_steps ws JOIN tasker_named_steps ns USING (named_step_id)
		WHERE ws.task_id = $1`, taskID)
	if err != nil {
		t.Fatalf("reading depths of task %d: %v", taskID, err)
	}
	defer rows.Close()
	out := map[string]depth{}
	for rows.Next() {
		var name string
		var d depth
		if err := rows.Scan(&name, &d.min, &d.level); err != nil {
			t.Fatalf("scanning depth: %v", err)
		}
		out[name] = d
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading depths of task %d: %v", taskID, err)
	}
	return out
}

func edgeCount(t *testing.T, sqlDB *sql.DB) int {
	t.Helper()
	var n int
	if err := sqlDB.QueryRowContext(context.Background(), `SELECT count(*) FROM tasker_workflow_step_edges`).Scan(&n); err != nil {
		t.Fatalf("counting edges: %v", err)
	}
	return n
}

// wantCheckViolation asserts that err is the check_violation the edge triggers raise for
// constraint, with a message containing every fragment.
func wantCheckViolation(t *testing.T, err error, constraint string, fragments ...string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("got error %v, want a PostgreSQL error", err)
	}
	if pgErr.Code != "23514" || pgErr.ConstraintName != constraint {
		t.Errorf("got SQLSTATE %s constraint %q, want 23514 %q (%s)", pgErr.Code, pgErr.ConstraintName, constraint, pgErr.Message)
	}
	for _, f := range fragments {
		if !strings.Contains(pgErr.Message, f) {
			t.Errorf("message %q does not mention %q", pgErr.Message, f)
		}
	}
}

func TestDagLevelsFourStep(t *testing.T) {
	t.Parallel()
	sqlDB := migratedDB(t)
	taskID, _ := insertShape(t, sqlDB, shape.FourStep)
	want := map[string]depth{"one": {0, 0}, "two": {0, 0}, "three": {1, 1}, "four": {2, 2}}
	if got := depths(t, sqlDB, taskID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("depths = %v, want %v", got, want)
	}
}

// TestDagLevelsStandardShapes checks the depth of the last step of each standard shape against
// the table of docs/SEMANTICS.md §8 (shortest / longest path from a root).
func TestDagLevelsStandardShapes(t *testing.T) {
	t.Parallel()
	sqlDB := migratedDB(t)
	want := map[string]depth{
		shape.Linear.Name:        {5, 5},
		shape.Diamond.Name:       {4, 4},
		shape.ParallelMerge.Name: {1, 2},
		shape.Tree.Name:          {3, 3},
		shape.Mixed.Name:         {3, 4},
	}
	for _, s := range shape.Standard {
		taskID, _ := insertShape(t, sqlDB, s)
		got := depths(t, sqlDB, taskID)[s.Last()]
		if got != want[s.Name] {
			t.Errorf("%s: depth of %s = %v, want %v", s.Name, s.Last(), got, want[s.Name])
		}
	}
}

func TestDagLevelsRefuseCycle(t *testing.T) {
	t.Parallel()
	sqlDB := migratedDB(t)
	taskID, ids := insertShape(t, sqlDB, shape.FourStep)
	before, beforeDepths := edgeCount(t, sqlDB), depths(t, sqlDB, taskID)

	// four -> two closes two -> three -> four -> two.
	_, err := sqlDB.ExecContext(context.Background(),
		`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id) VALUES ($1, $2)`, ids["four"], ids["two"])
	wantCheckViolation(t, err, "tasker_workflow_step_edges_acyclic",
		fmt.Sprintf("task %d", taskID), fmt.Sprint(ids["two"]), fmt.Sprint(ids["three"]), fmt.Sprint(ids["four"]))
	if after := edgeCount(t, sqlDB); after != before {
		t.Errorf("edges went from %d to %d after a refused statement", before, after)
	}
	if after := depths(t, sqlDB, taskID); fmt.Sprint(after) != fmt.Sprint(beforeDepths) {
		t.Errorf("depths changed after a refused statement: %v, was %v", after, beforeDepths)
	}

	// A cycle that no root reaches: closing a chain of three leaves its task without roots.
	ring, _ := shape.Deep(3)
	ringTask, ringIDs := insertShape(t, sqlDB, shape.Shape{Name: "ring", Steps: ring.Steps})
	_, err = sqlDB.ExecContext(context.Background(),
		`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id) VALUES ($1, $2)`,
		ringIDs["link_00003"], ringIDs["link_00001"])
	wantCheckViolation(t, err, "tasker_workflow_step_edges_acyclic", fmt.Sprintf("task %d", ringTask))
}

func TestDagLevelsRefuseCrossTaskEdge(t *testing.T) {
	t.Parallel()
	sqlDB := migratedDB(t)
	taskA, idsA := insertShape(t, sqlDB, shape.FourStep)
	taskB, idsB := insertShape(t, sqlDB, shape.FourStep)
	before := edgeCount(t, sqlDB)
	_, err := sqlDB.ExecContext(context.Background(),
		`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id) VALUES ($1, $2)`, idsA["four"], idsB["one"])
	wantCheckViolation(t, err, "tasker_workflow_step_edges_same_task",
		fmt.Sprintf("step %d (task %d)", idsA["four"], taskA), fmt.Sprintf("step %d (task %d)", idsB["one"], taskB))
	if after := edgeCount(t, sqlDB); after != before {
		t.Errorf("edges went from %d to %d after a refused statement", before, after)
	}

	// Moving an edge's end into another task is refused the same way.
	_, err = sqlDB.ExecContext(context.Background(),
		`UPDATE tasker_workflow_step_edges SET to_step_id = $1 WHERE from_step_id = $2`, idsB["four"], idsA["three"])
	wantCheckViolation(t, err, "tasker_workflow_step_edges_same_task", fmt.Sprintf("task %d", taskB))
}

// TestDagLevelsFollowEdgeChanges checks that updates and deletes recompute only what they
// touch, and that one statement writing edges of several tasks computes each of them.
func TestDagLevelsFollowEdgeChanges(t *testing.T) {
	t.Parallel()
	sqlDB := migratedDB(t)
	ctx := context.Background()
	taskID, ids := insertShape(t, sqlDB, shape.FourStep)
	other, _ := insertShape(t, sqlDB, shape.Linear)

	// one -> four gives four a shorter path; its longest stays 2.
	if _, err := sqlDB.ExecContext(ctx, `INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id) VALUES ($1, $2)`,
		ids["one"], ids["four"]); err != nil {
		t.Fatalf("inserting edge: %v", err)
	}
	if got := depths(t, sqlDB, taskID)["four"]; got != (depth{1, 2}) {
		t.Errorf("after one -> four, four = %v, want {1 2}", got)
	}
	// Removing two -> three makes three a root.
	if _, err := sqlDB.ExecContext(ctx, `DELETE FROM tasker_workflow_step_edges WHERE from_step_id = $1`, ids["two"]); err != nil {
		t.Fatalf("deleting edge: %v", err)
	}
	want := map[string]depth{"one": {0, 0}, "two": {0, 0}, "three": {0, 0}, "four": {1, 1}}
	if got := depths(t, sqlDB, taskID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after deleting two -> three, depths = %v, want %v", got, want)
	}
	if got := depths(t, sqlDB, other)[shape.Linear.Last()]; got != (depth{5, 5}) {
		t.Errorf("another task's depth changed: %v", got)
	}
	// Deleting a whole task (edges cascade) leaves the other task intact.
	if _, err := sqlDB.ExecContext(ctx, `DELETE FROM tasker_tasks WHERE task_id = $1`, taskID); err != nil {
		t.Fatalf("deleting task: %v", err)
	}
	if got := depths(t, sqlDB, other)[shape.Linear.Last()]; got != (depth{5, 5}) {
		t.Errorf("after deleting task %d, task %d depth = %v, want {5 5}", taskID, other, got)
	}
}

// TestDagLevelsLargeTasks writes 10,000-step chains and fan-outs in one statement each.
func TestDagLevelsLargeTasks(t *testing.T) {
	t.Parallel()
	deep, err := shape.Deep(10000)
	if err != nil {
		t.Fatal(err)
	}
	wide, err := shape.Wide(10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s    shape.Shape
		want depth
	}{{deep, depth{9999, 9999}}, {wide, depth{2, 2}}} {
		tc := tc
		t.Run(tc.s.Name, func(t *testing.T) {
			t.Parallel()
			sqlDB := migratedDB(t)
			start := time.Now()
			taskID, _ := insertShape(t, sqlDB, tc.s)
			elapsed := time.Since(start)
			got := depths(t, sqlDB, taskID)
			if got[tc.s.Last()] != tc.want {
				t.Errorf("depth of %s = %v, want %v", tc.s.Last(), got[tc.s.Last()], tc.want)
			}
			if len(got) != 10000 {
				t.Errorf("task has %d steps, want 10000", len(got))
			}
			if elapsed > 30*time.Second {
				t.Errorf("writing a 10,000-step task took %s", elapsed)
			}
			t.Logf("wrote %s in %s", tc.s.Name, elapsed)
		})
	}
}
