// Package seed generates realistic workflow data at a chosen size, for benchmarks and demos.
//
// A Batch is a number of tasks of one shape. Each task is given a scenario (finished history,
// running, failed with retries exhausted, waiting on backoff, fresh pending) drawn from the
// batch's Mix, and a frontier: the dependency level its work has reached. Steps below the
// frontier are finished, steps at the frontier carry the scenario (running, ready, in error),
// steps above it are fresh and pending, so no step that has left pending has a parent that is
// not complete or resolved manually. Every history is well formed: from_state is the previous
// to_state (null first), sort_key runs 1..n, exactly one row per owner is most_recent.
// Complete steps are processed with attempts >= 1; exhausted steps have attempts = retry_limit;
// a step waiting on backoff asked for an hour's delay, so it stays blocked while a benchmark
// runs.
//
// Everything is written with set-based SQL: one statement creates a batch's tasks, steps and
// both transition histories (generate_series and unnest over the shape), and one more inserts
// all its edges; steps carry their DAG depth computed from the shape, so the edges trigger's walk
// is skipped (in bulk mode no trigger fires at all). Drawing is
// deterministic: the same seed, shapes and sizes produce the same data in an empty database.
package seed

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/internal/shape"
)

// Namespace and DependentSystem are the template names generated tasks are created under.
const (
	Namespace       = "seed"
	DependentSystem = "seed"
)

// The scenarios a generated task can be in.
const (
	ScenarioComplete = "complete" // every step finished; some retried once, some resolved manually
	ScenarioRunning  = "running"  // frontier steps in progress, ready, or complete
	ScenarioFailed   = "failed"   // frontier steps in error with retries exhausted; task in error
	ScenarioBackoff  = "backoff"  // frontier steps in error, waiting out an hour's backoff
	ScenarioPending  = "pending"  // no step has started; no transition rows
)

// Mix weighs the scenarios of a batch; a task's scenario is drawn with these relative weights.
type Mix struct {
	Complete, Running, Failed, Backoff, Pending int
}

// DefaultMix is a production-like spread: mostly history, a quarter in flight.
var DefaultMix = Mix{Complete: 40, Running: 25, Failed: 10, Backoff: 10, Pending: 15}

func (m Mix) total() int { return m.Complete + m.Running + m.Failed + m.Backoff + m.Pending }

// Batch is a number of tasks of one shape.
type Batch struct {
	Shape shape.Shape
	Tasks int
	Mix   Mix
	// Frontier, when >= 0, fixes the frontier level of every task (capped at the shape's
	// deepest level); when negative each task's frontier is drawn.
	Frontier int
}

// Result says what one batch wrote and how long it took.
type Result struct {
	Shape   string
	Tasks   int
	Steps   int
	Edges   int
	TaskIDs []int64
	// Insert is the time of the statement writing tasks, steps and transitions; Edges the
	// time of the statement writing edges.
	Insert    time.Duration
	EdgesTime time.Duration
	// Bulk reports that the tasks, steps and transitions were written in bulk mode (see
	// enterBulkMode).
	Bulk bool
}

// bulkTriggers are the only user triggers on the tables written by insertSQL that bulk mode
// may skip: per-row NOTIFY wake-ups, which are only hints (listeners catch up from the
// tables) and would queue one notification per historical transition.
var bulkTriggers = map[string]bool{
	"tasker_workflow_step_transitions_notify": true,
	"tasker_task_transitions_notify":          true,
	"tasker_tasks_created_notify":             true,
}

// enterBulkMode switches the transaction to session_replication_role = replica when that is
// allowed (superuser) and safe: the only user triggers on the tables insertSQL writes are the
// notification triggers in bulkTriggers. Replica mode also skips the foreign-key checks of
// those rows, which insertSQL satisfies by construction (it joins the rows it has just
// written). It costs per-row trigger calls that would otherwise dominate a large batch. When
// bulk mode is not possible it reports false and the batch is written with every trigger.
func enterBulkMode(ctx context.Context, tx pgx.Tx) (bool, error) {
	var superuser bool
	if err := tx.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&superuser); err != nil {
		return false, fmt.Errorf("checking privileges: %w", err)
	}
	if !superuser {
		return false, nil
	}
	rows, err := tx.Query(ctx, `SELECT tgname FROM pg_trigger
		WHERE NOT tgisinternal AND tgrelid IN ('tasker_tasks'::regclass, 'tasker_workflow_steps'::regclass,
			'tasker_task_transitions'::regclass, 'tasker_workflow_step_transitions'::regclass)`)
	if err != nil {
		return false, fmt.Errorf("listing triggers: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, fmt.Errorf("listing triggers: %w", err)
	}
	for _, n := range names {
		if !bulkTriggers[n] {
			return false, nil
		}
	}
	if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
		return false, fmt.Errorf("entering bulk mode: %w", err)
	}
	return true, nil
}

// Run writes one batch in a transaction and returns the ids of its tasks, ascending.
func Run(ctx context.Context, conn *pgx.Conn, seed int64, b Batch) (Result, error) {
	res := Result{Shape: b.Shape.Name, Tasks: b.Tasks}
	edges, err := b.Shape.Edges()
	if err != nil {
		return res, fmt.Errorf("seeding: %w", err)
	}
	if b.Tasks <= 0 {
		return res, fmt.Errorf("seeding shape %q: batch needs at least one task, got %d", b.Shape.Name, b.Tasks)
	}
	if len(b.Shape.Steps) == 0 {
		return res, fmt.Errorf("seeding shape %q: shape has no steps", b.Shape.Name)
	}
	if b.Mix.total() <= 0 || b.Mix.Complete < 0 || b.Mix.Running < 0 || b.Mix.Failed < 0 ||
		b.Mix.Backoff < 0 || b.Mix.Pending < 0 {
		return res, fmt.Errorf("seeding shape %q: mix %+v needs non-negative weights with a positive sum", b.Shape.Name, b.Mix)
	}
	levels, minDepths, maxLevel := dependencyLevels(b.Shape, edges)
	frontier := b.Frontier
	if frontier > maxLevel {
		frontier = maxLevel
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("seeding shape %q: beginning: %w", b.Shape.Name, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit

	namedTaskID, namedStepIDs, err := ensureTemplate(ctx, tx, b.Shape)
	if err != nil {
		return res, err
	}
	// JIT compilation costs more than it saves on these one-off statements (and on the
	// edges trigger's queries that run inside the same transaction).
	if _, err := tx.Exec(ctx, "SET LOCAL jit = off"); err != nil {
		return res, fmt.Errorf("seeding shape %q: turning off jit: %w", b.Shape.Name, err)
	}
	bulk, err := enterBulkMode(ctx, tx)
	if err != nil {
		return res, fmt.Errorf("seeding shape %q: %w", b.Shape.Name, err)
	}
	res.Bulk = bulk

	// Cumulative thresholds out of 1000 for the scenario draw.
	total := b.Mix.total()
	cum := func(n int) int { return n * 1000 / total }
	c1 := cum(b.Mix.Complete)
	c2 := cum(b.Mix.Complete + b.Mix.Running)
	c3 := cum(b.Mix.Complete + b.Mix.Running + b.Mix.Failed)
	c4 := cum(b.Mix.Complete + b.Mix.Running + b.Mix.Failed + b.Mix.Backoff)

	start := time.Now()
	rows, err := tx.Query(ctx, insertSQL, b.Tasks, seed, c1, c2, c3, c4, frontier, maxLevel,
		namedTaskID, namedStepIDs, levels, minDepths)
	if err != nil {
		return res, fmt.Errorf("seeding %d tasks of shape %q: %w", b.Tasks, b.Shape.Name, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return res, fmt.Errorf("seeding %d tasks of shape %q: %w", b.Tasks, b.Shape.Name, err)
	}
	res.Insert = time.Since(start)
	res.TaskIDs = ids
	res.Steps = len(ids) * len(b.Shape.Steps)
	// The edges are written with the depth already stored on their steps: the shape is acyclic
	// (parents are declared before their children) and both ends of every edge are steps of
	// one task (the join on task_id). In bulk mode they are written in replica mode too (no
	// per-row foreign-key checks, no DAG-depth trigger); otherwise the statement tells the
	// DAG-depth trigger to skip its walk (migration 00030), as task creation does.
	if len(edges) > 0 {
		from := make([]int64, len(edges))
		to := make([]int64, len(edges))
		for i, e := range edges {
			from[i], to[i] = namedStepIDs[e[0]], namedStepIDs[e[1]]
		}
		start = time.Now()
		query := edgesTrustedSQL
		if bulk {
			query = edgesSQL
		}
		tag, err := tx.Exec(ctx, query, ids, from, to)
		if err != nil {
			return res, fmt.Errorf("seeding edges of %d tasks of shape %q: %w", len(ids), b.Shape.Name, err)
		}
		res.EdgesTime = time.Since(start)
		res.Edges = int(tag.RowsAffected())
	}
	if bulk {
		// The task-created wake-up is sent once for the whole batch.
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = origin"); err != nil {
			return res, fmt.Errorf("seeding shape %q: leaving bulk mode: %w", b.Shape.Name, err)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify('tasker_tasks_created', json_build_object('count', $1::int)::text)`,
			len(ids)); err != nil {
			return res, fmt.Errorf("seeding shape %q: notifying new tasks: %w", b.Shape.Name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("seeding shape %q: committing: %w", b.Shape.Name, err)
	}
	return res, nil
}

// dependencyLevels returns each step's longest path from a root (its dependency_level), its
// shortest path from a root (min_depth_from_root) and the deepest level. Steps are declared
// after their parents and edges come in declaration order of the child, so one pass suffices.
func dependencyLevels(s shape.Shape, edges [][2]int) (levels, minDepths []int32, maxLevel int) {
	levels = make([]int32, len(s.Steps))
	minDepths = make([]int32, len(s.Steps))
	hasParent := make([]bool, len(s.Steps))
	for _, e := range edges {
		p, c := e[0], e[1]
		levels[c] = max(levels[c], levels[p]+1)
		if !hasParent[c] || minDepths[p]+1 < minDepths[c] {
			minDepths[c] = minDepths[p] + 1
		}
		hasParent[c] = true
	}
	for _, l := range levels {
		maxLevel = max(maxLevel, int(l))
	}
	return levels, minDepths, maxLevel
}

// ensureTemplate creates (or finds) the namespace, dependent system, named steps and named
// task of s, and returns the named task id and the named step ids in declaration order.
func ensureTemplate(ctx context.Context, tx pgx.Tx, s shape.Shape) (int64, []int64, error) {
	names := make([]string, len(s.Steps))
	for i, st := range s.Steps {
		names[i] = st.Name
	}
	var namedTaskID int64
	err := tx.QueryRow(ctx, `
		WITH ns AS (
			INSERT INTO tasker_task_namespaces (name) VALUES ($1)
			ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING task_namespace_id
		)
		INSERT INTO tasker_named_tasks (task_namespace_id, name, description)
		SELECT task_namespace_id, $2, 'generated by tasker seed' FROM ns
		ON CONFLICT (task_namespace_id, name, version) DO UPDATE SET name = EXCLUDED.name
		RETURNING named_task_id`, Namespace, s.Name).Scan(&namedTaskID)
	if err != nil {
		return 0, nil, fmt.Errorf("seeding shape %q: creating named task: %w", s.Name, err)
	}
	rows, err := tx.Query(ctx, `
		WITH sys AS (
			INSERT INTO tasker_dependent_systems (name) VALUES ($1)
			ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING dependent_system_id
		), named AS (
			INSERT INTO tasker_named_steps (dependent_system_id, name)
			SELECT sys.dependent_system_id, n FROM sys, unnest($2::text[]) AS n
			ON CONFLICT (dependent_system_id, name) DO UPDATE SET name = EXCLUDED.name
			RETURNING named_step_id, name
		), template AS (
			INSERT INTO tasker_named_tasks_named_steps (named_task_id, named_step_id)
			SELECT $3, named_step_id FROM named
			ON CONFLICT (named_task_id, named_step_id) DO NOTHING
		)
		SELECT named.named_step_id
		FROM unnest($2::text[]) WITH ORDINALITY AS u (name, ord)
		JOIN named USING (name)
		ORDER BY u.ord`, DependentSystem, names, namedTaskID)
	if err != nil {
		return 0, nil, fmt.Errorf("seeding shape %q: creating named steps: %w", s.Name, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, nil, fmt.Errorf("seeding shape %q: creating named steps: %w", s.Name, err)
	}
	if len(ids) != len(names) {
		return 0, nil, fmt.Errorf("seeding shape %q: created %d named steps, want %d", s.Name, len(ids), len(names))
	}
	return namedTaskID, ids, nil
}

// insertSQL writes a batch's tasks, steps and transitions in one statement and returns the
// task ids, ascending. Parameters: $1 tasks, $2 seed, $3..$6 cumulative scenario thresholds
// out of 1000, $7 fixed frontier (< 0: drawn), $8 the shape's deepest level, $9 named task,
// $10 named step ids, $11 their dependency levels and $12 their shortest depths, in
// declaration order. Steps are written with their depth already right (see Run).
//
// A step's kind follows from its task's scenario and its level against the frontier:
//
//	fresh      no transitions (pending)
//	done       in_progress → complete, attempts 1 (1 in 7: a failure and retry first, attempts 2)
//	resolved   in_progress → error → resolved_manually (1 in 29 finished steps of complete tasks)
//	running    in_progress, claimed (in_process), attempts 0
//	exhausted  three failed attempts, attempts = retry_limit = 3
//	backoff    in_progress → error 10 s ago, backoff_request_seconds 3600
const insertSQL = `
WITH plan AS MATERIALIZED (
	SELECT g,
		CASE
			WHEN r < $3 THEN 'complete'
			WHEN r < $4 THEN 'running'
			WHEN r < $5 THEN 'failed'
			WHEN r < $6 THEN 'backoff'
			ELSE 'pending'
		END AS scenario,
		CASE WHEN $7::int >= 0 THEN $7::int ELSE mod(abs(hashint8extended(g, $2 + 1)), $8::int + 1)::int END AS frontier,
		mod(abs(hashint8extended(g, $2 + 2)), 720)::int AS age
	FROM generate_series(1, $1::int) AS g
	CROSS JOIN LATERAL (SELECT mod(abs(hashint8extended(g, $2)), 1000)::int AS r) d
), tasks AS (
	INSERT INTO tasker_tasks (named_task_id, complete, requested_at, initiator, source_system, reason, tags, context)
	SELECT $9, scenario = 'complete', now() - make_interval(hours => age + 1), 'seed', 'tasker seed',
		'generated', jsonb_build_object('scenario', scenario, 'frontier', frontier, 'age', age),
		jsonb_build_object('ordinal', g, 'seed', $2::bigint)
	FROM plan ORDER BY g
	RETURNING task_id, tags->>'scenario' AS scenario, (tags->>'frontier')::int AS frontier,
		(tags->>'age')::int AS age
), task_times AS MATERIALIZED (
	SELECT task_id, scenario, frontier,
		CASE scenario
			WHEN 'complete' THEN now() - make_interval(hours => age + 1)
			WHEN 'running' THEN now() - make_interval(secs => 60 + age)
			WHEN 'failed' THEN now() - make_interval(mins => 60 + age)
			ELSE now() - interval '10 seconds'
		END AS t_end
	FROM tasks
), task_history AS (
	INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent, created_at, updated_at)
	SELECT tt.task_id, h.hist[i], h.hist[i - 1], i, i = cardinality(h.hist),
		tt.t_end - make_interval(secs => cardinality(h.hist) - i), tt.t_end - make_interval(secs => cardinality(h.hist) - i)
	FROM task_times tt
	CROSS JOIN LATERAL (SELECT CASE tt.scenario
		WHEN 'complete' THEN ARRAY['in_progress', 'complete']
		WHEN 'failed' THEN ARRAY['in_progress', 'error']
		WHEN 'pending' THEN ARRAY[]::text[]
		ELSE ARRAY['in_progress']
	END AS hist) h
	CROSS JOIN LATERAL generate_subscripts(h.hist, 1) AS i
), planned_steps AS MATERIALIZED (
	SELECT tt.task_id, u.named_step_id, u.ord, u.lv, u.min_depth, tt.t_end,
		CASE
			WHEN tt.scenario = 'pending' THEN 'fresh'
			WHEN tt.scenario = 'complete' AND mod(abs(hashint8extended(tt.task_id * 10007 + u.ord, $2 + 3)), 29) = 0 THEN 'resolved'
			WHEN tt.scenario <> 'complete' AND u.lv > tt.frontier THEN 'fresh'
			WHEN tt.scenario = 'complete' OR u.lv < tt.frontier THEN
				CASE WHEN mod(abs(hashint8extended(tt.task_id * 10007 + u.ord, $2 + 4)), 7) = 0 THEN 'done_retry' ELSE 'done' END
			WHEN tt.scenario = 'failed' THEN 'exhausted'
			WHEN tt.scenario = 'backoff' THEN 'backoff'
			ELSE (ARRAY['running', 'fresh', 'done'])[1 + mod(abs(hashint8extended(tt.task_id * 10007 + u.ord, $2 + 5)), 3)]
		END AS kind
	FROM task_times tt
	CROSS JOIN unnest($10::bigint[], $11::int[], $12::int[]) WITH ORDINALITY AS u (named_step_id, lv, min_depth, ord)
), shaped AS MATERIALIZED (
	SELECT p.*, k.*
	FROM planned_steps p
	CROSS JOIN LATERAL (SELECT
		CASE p.kind
			WHEN 'done' THEN ARRAY['in_progress', 'complete']
			WHEN 'done_retry' THEN ARRAY['in_progress', 'error', 'pending', 'in_progress', 'complete']
			WHEN 'resolved' THEN ARRAY['in_progress', 'error', 'resolved_manually']
			WHEN 'running' THEN ARRAY['in_progress']
			WHEN 'exhausted' THEN ARRAY['in_progress', 'error', 'pending', 'in_progress', 'error', 'pending', 'in_progress', 'error']
			WHEN 'backoff' THEN ARRAY['in_progress', 'error']
			ELSE ARRAY[]::text[]
		END AS hist,
		CASE p.kind WHEN 'done' THEN 1 WHEN 'done_retry' THEN 2 WHEN 'resolved' THEN 1
			WHEN 'exhausted' THEN 3 WHEN 'backoff' THEN 1 ELSE 0 END AS attempts
	) k
), steps AS (
	INSERT INTO tasker_workflow_steps (task_id, named_step_id, attempts, last_attempted_at,
		backoff_request_seconds, processed, processed_at, in_process, results, created_at, updated_at,
		dependency_level, min_depth_from_root)
	SELECT task_id, named_step_id, attempts,
		CASE WHEN attempts > 0 THEN t_end END,
		CASE WHEN kind = 'backoff' THEN 3600 END,
		kind IN ('done', 'done_retry'),
		CASE WHEN kind IN ('done', 'done_retry') THEN t_end END,
		kind = 'running',
		CASE
			WHEN kind IN ('done', 'done_retry') THEN '{"ok": true}'::jsonb
			WHEN kind IN ('exhausted', 'backoff', 'resolved') THEN '{"error": "generated failure"}'::jsonb
		END,
		t_end - make_interval(secs => cardinality(hist) + 1), t_end, lv, min_depth
	FROM shaped
	ORDER BY task_id, ord
	RETURNING workflow_step_id, task_id, named_step_id
), step_history AS (
	INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent, created_at, updated_at)
	SELECT s.workflow_step_id, p.hist[i], p.hist[i - 1], i, i = cardinality(p.hist),
		p.t_end - make_interval(secs => cardinality(p.hist) - i), p.t_end - make_interval(secs => cardinality(p.hist) - i)
	FROM steps s
	JOIN shaped p ON p.task_id = s.task_id AND p.named_step_id = s.named_step_id
	CROSS JOIN LATERAL generate_subscripts(p.hist, 1) AS i
)
SELECT task_id FROM tasks ORDER BY task_id`

// edgesSQL writes the edges of every task of a batch in one statement: $1 task ids, $2/$3 the
// shape's edges as parallel arrays of (parent, child) named step ids.
// In bulk mode no trigger fires; otherwise edgesTrustedSQL runs it with the flag of migration
// 00030 set for that one statement.
const edgesSQL = `
INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id)
SELECT p.workflow_step_id, c.workflow_step_id
FROM unnest($1::bigint[]) AS t (task_id)
CROSS JOIN unnest($2::bigint[], $3::bigint[]) AS e (parent, child)
JOIN tasker_workflow_steps p ON p.task_id = t.task_id AND p.named_step_id = e.parent
JOIN tasker_workflow_steps c ON c.task_id = t.task_id AND c.named_step_id = e.child`

var edgesTrustedSQL = "WITH flag AS MATERIALIZED (SELECT set_config('tasker.dag_levels_precomputed', 'on', true))" +
	strings.Replace(edgesSQL, "FROM unnest", "FROM flag, unnest", 1)

// ShapeNames lists the shape names Plan accepts.
var ShapeNames = []string{"linear", "diamond", "parallel_merge", "tree", "mixed", "wide", "deep"}

// DefaultShapes are the shapes a plan uses when none are named.
var DefaultShapes = []string{"linear", "diamond", "tree", "mixed", "wide", "deep"}

// scalableSizes are the step counts of generated wide and deep tasks.
var scalableSizes = []int{10000, 1000, 100, 10}

// Plan splits totalSteps evenly across the named shapes and returns the batches that generate
// them with DefaultMix. A standard shape gets as many tasks as fit its share; wide and deep
// split their share across tasks of 10,000, 1,000, 100 and 10 steps (a quarter each, what
// does not fit a size passing to the next smaller one). Large batches are split so that no
// statement writes more than about batchSteps steps.
func Plan(totalSteps int, shapes []string, batchSteps int) ([]Batch, error) {
	if totalSteps < 10 {
		return nil, fmt.Errorf("a plan needs at least 10 steps, got %d", totalSteps)
	}
	if len(shapes) == 0 {
		shapes = DefaultShapes
	}
	if batchSteps <= 0 {
		batchSteps = 200000
	}
	standard := map[string]shape.Shape{
		"linear": shape.Linear, "diamond": shape.Diamond, "parallel_merge": shape.ParallelMerge,
		"tree": shape.Tree, "mixed": shape.Mixed,
	}
	seen := map[string]bool{}
	var plan []Batch
	add := func(s shape.Shape, tasks int) {
		per := max(1, batchSteps/len(s.Steps))
		for tasks > 0 {
			n := min(tasks, per)
			plan = append(plan, Batch{Shape: s, Tasks: n, Mix: DefaultMix, Frontier: -1})
			tasks -= n
		}
	}
	share := totalSteps / len(shapes)
	for _, name := range shapes {
		name = strings.TrimSpace(name)
		if seen[name] {
			return nil, fmt.Errorf("shape %q is named twice", name)
		}
		seen[name] = true
		if s, ok := standard[name]; ok {
			if n := share / len(s.Steps); n > 0 {
				add(s, n)
			}
			continue
		}
		if name != "wide" && name != "deep" {
			return nil, fmt.Errorf("unknown shape %q (want some of %s)", name, strings.Join(ShapeNames, ", "))
		}
		carry := 0
		for _, size := range scalableSizes {
			part := share/len(scalableSizes) + carry
			n := part / size
			carry = part - n*size
			if n == 0 {
				continue
			}
			var s shape.Shape
			var err error
			if name == "wide" {
				s, err = shape.Wide(size)
			} else {
				s, err = shape.Deep(size)
			}
			if err != nil {
				return nil, err
			}
			add(s, n)
		}
	}
	if len(plan) == 0 {
		return nil, errors.New("the plan is empty: too few steps for the shapes named")
	}
	return plan, nil
}

// Report sums up a generation.
type Report struct {
	Tasks, Steps, Edges int
	Batches             []Result
	Total               time.Duration
	// Insert and EdgesTime are the sums over batches (see Result).
	Insert, EdgesTime time.Duration
}

// Generate runs every batch of plan in order, calling progress after each, then runs ANALYZE
// so that the planner sees the new sizes. On error, the batches already written stay.
func Generate(ctx context.Context, conn *pgx.Conn, seed int64, plan []Batch, progress func(Result)) (Report, error) {
	var rep Report
	start := time.Now()
	for _, b := range plan {
		res, err := Run(ctx, conn, seed, b)
		if err != nil {
			return rep, err
		}
		res.TaskIDs = nil
		rep.Batches = append(rep.Batches, res)
		rep.Tasks += res.Tasks
		rep.Steps += res.Steps
		rep.Edges += res.Edges
		rep.Insert += res.Insert
		rep.EdgesTime += res.EdgesTime
		if progress != nil {
			progress(res)
		}
	}
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return rep, fmt.Errorf("analyzing after seeding: %w", err)
	}
	rep.Total = time.Since(start)
	return rep, nil
}
