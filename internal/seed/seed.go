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
// Everything is written with set-based SQL. The ids of a plan's tasks, steps and edges are
// reserved first, batch after batch; then one statement creates a batch's tasks, steps and both
// transition histories (generate_series over the tasks and their steps, every row computed from
// its ordinals and reserved ids), and one more inserts all its edges, computed from the steps'
// ids; steps carry their DAG depth computed from the shape, so the edges trigger's walk is
// skipped (in bulk mode no trigger fires at all). Generate writes two batches side by side, each
// in its own transaction. Drawing is deterministic: the same seed, shapes and sizes produce the
// same data in an empty database, ids included, whether batches are written one after the
// other or side by side; only the ids of transitions depend on how the writers interleave.
package seed

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/indexes"
	"github.com/taskerhq/tasker/internal/shape"
	"github.com/taskerhq/tasker/internal/store"
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

// bulkTriggers are the only user triggers on the tables a batch writes that bulk mode
// skips: per-row NOTIFY wake-ups, which are only hints (listeners catch up from the tables) and
// would queue one notification per historical transition, and the trigger that sets the steps'
// task_inactive flag (migration 00050) and the one that sets a completed task's complete flag
// (migration 00064), both of which the batch's statement writes itself, and the one that counts
// down the parents a step waits for (migration 00070): a seeded step keeps parents_left 0, a
// lower bound the claim allows (it reads such a step's readiness, as it did every step's
// before); counting each unfinished step's parents after the load cost 8-9 s of a
// 1,000,000-step seed's 19-21. They are enabled ALWAYS (they fire in the engine's
// replica-mode transactions) and skip themselves when tasker.bulk_load is on (migrations 00051,
// 00064 and 00070).
var bulkTriggers = map[string]bool{
	"tasker_workflow_step_transitions_notify":             true,
	"tasker_task_transitions_notify":                      true,
	"tasker_tasks_created_notify":                         true,
	"tasker_task_transitions_mark_steps":                  true,
	"tasker_task_transitions_mark_complete":               true,
	"tasker_workflow_step_transitions_count_down_parents": true,
}

// enterBulkMode switches the transaction to bulk mode when that is safe and allowed: safe when
// the only user triggers on the tables a batch writes are those in bulkTriggers; allowed when
// the role may skip foreign-key checks (store.TrustReferences: a superuser, or a role granted
// SET on session_replication_role), which the batch's statement satisfies by construction (it
// joins the rows it has just written). Bulk mode then also sets tasker.bulk_load
// (store.SetLocalBulkLoad), so that the triggers of bulkTriggers skip themselves: per-row
// trigger work would otherwise dominate a large batch. When bulk mode is not possible it
// reports false and the batch is written with every trigger and check.
func enterBulkMode(ctx context.Context, tx *store.Store) (bool, error) {
	names, err := tx.TaskTableTriggers(ctx)
	if err != nil {
		return false, fmt.Errorf("listing triggers: %w", err)
	}
	for _, n := range names {
		if !bulkTriggers[n] {
			return false, nil
		}
	}
	trusted, err := tx.TrustReferences(ctx)
	if err != nil || !trusted {
		return false, err
	}
	if err := tx.SetLocalBulkLoad(ctx, true); err != nil {
		return false, fmt.Errorf("entering bulk mode: %w", err)
	}
	return true, nil
}

// prepared is a batch ready to be written: its shape's dependency levels and edges, its
// named task and steps, and the ids reserved for it.
type prepared struct {
	Batch
	edges              [][2]int
	levels, minDepths  []int32
	frontier, maxLevel int
	namedTaskID        int64
	namedStepIDs       []int64
	first              store.SeedIDs
}

// prepare checks b and computes its shape's levels and edges.
func prepare(b Batch) (*prepared, error) {
	edges, err := b.Shape.Edges()
	if err != nil {
		return nil, fmt.Errorf("seeding: %w", err)
	}
	if b.Tasks <= 0 {
		return nil, fmt.Errorf("seeding shape %q: batch needs at least one task, got %d", b.Shape.Name, b.Tasks)
	}
	if len(b.Shape.Steps) == 0 {
		return nil, fmt.Errorf("seeding shape %q: shape has no steps", b.Shape.Name)
	}
	if b.Mix.total() <= 0 || b.Mix.Complete < 0 || b.Mix.Running < 0 || b.Mix.Failed < 0 ||
		b.Mix.Backoff < 0 || b.Mix.Pending < 0 {
		return nil, fmt.Errorf("seeding shape %q: mix %+v needs non-negative weights with a positive sum", b.Shape.Name, b.Mix)
	}
	p := &prepared{Batch: b, edges: edges, frontier: b.Frontier}
	p.levels, p.minDepths, p.maxLevel = dependencyLevels(b.Shape, edges)
	if p.frontier > p.maxLevel {
		p.frontier = p.maxLevel
	}
	return p, nil
}

// register creates (or finds) the named task and steps of every batch of ps, and reserves
// their task, step and edge ids, in plan order (store.ReserveSeedIDs): batch after batch, as
// the sequences would have numbered them written one after the other. It commits before any
// batch is written, so that batches written side by side share no row they would both lock.
// It returns how many ids of each kind it reserved: the plan's tasks, steps and edges.
func register(ctx context.Context, db *gorm.DB, ps []*prepared) (store.SeedIDs, error) {
	var n store.SeedIDs
	err := store.New(db).Tx(ctx, func(tx *store.Store) error {
		// The named steps (10,000 for the widest shape) reference the rows this statement
		// has just created or found: their foreign keys are skipped where the role may
		// (store.TrustReferences), a third of the statement's time.
		if _, err := tx.TrustReferences(ctx); err != nil {
			return fmt.Errorf("seeding: %w", err)
		}
		n = store.SeedIDs{}
		for _, p := range ps {
			names := make([]string, len(p.Shape.Steps))
			for i, st := range p.Shape.Steps {
				names[i] = st.Name
			}
			var err error
			if p.namedTaskID, err = tx.SeedNamedTask(ctx, Namespace, p.Shape.Name); err != nil {
				return fmt.Errorf("seeding shape %q: creating named task: %w", p.Shape.Name, err)
			}
			if p.namedStepIDs, err = tx.SeedNamedSteps(ctx, DependentSystem, names, p.namedTaskID); err != nil {
				return fmt.Errorf("seeding shape %q: creating named steps: %w", p.Shape.Name, err)
			}
			if len(p.namedStepIDs) != len(names) {
				return fmt.Errorf("seeding shape %q: created %d named steps, want %d", p.Shape.Name, len(p.namedStepIDs), len(names))
			}
			p.first = n
			n.Task += int64(p.Tasks)
			n.Step += int64(p.Tasks) * int64(len(names))
			n.Edge += int64(p.Tasks) * int64(len(p.edges))
		}
		first, err := tx.ReserveSeedIDs(ctx, n)
		if err != nil {
			return fmt.Errorf("seeding: reserving ids: %w", err)
		}
		for _, p := range ps {
			p.first.Task += first.Task
			p.first.Step += first.Step
			p.first.Edge += first.Edge
		}
		return nil
	})
	return n, err
}

// Run writes one batch in a transaction and returns the ids of its tasks, ascending.
func Run(ctx context.Context, db *gorm.DB, seed int64, b Batch) (Result, error) {
	res := Result{Shape: b.Shape.Name, Tasks: b.Tasks}
	p, err := prepare(b)
	if err != nil {
		return res, err
	}
	if _, err := register(ctx, db, []*prepared{p}); err != nil {
		return res, err
	}
	return write(ctx, db, seed, p)
}

// write writes the prepared batch p in a transaction.
func write(ctx context.Context, db *gorm.DB, seed int64, p *prepared) (Result, error) {
	res := Result{Shape: p.Shape.Name, Tasks: p.Tasks}
	began := false
	var failed error
	err := store.New(db).Tx(ctx, func(tx *store.Store) error {
		began = true
		failed = writeBatch(ctx, tx, seed, p, &res)
		return failed
	})
	switch {
	case err == nil:
		return res, nil
	case !began:
		return res, fmt.Errorf("seeding shape %q: beginning: %w", p.Shape.Name, err)
	case failed == nil:
		return res, fmt.Errorf("seeding shape %q: committing: %w", p.Shape.Name, err)
	default:
		return res, err
	}
}

// writeBatch writes the prepared batch p in tx (see write) and fills in res.
func writeBatch(ctx context.Context, tx *store.Store, seed int64, p *prepared, res *Result) error {
	// JIT compilation costs more than it saves on these one-off statements (and on the
	// edges trigger's queries that run inside the same transaction).
	if err := tx.SetLocalJITOff(ctx); err != nil {
		return fmt.Errorf("seeding shape %q: turning off jit: %w", p.Shape.Name, err)
	}
	bulk, err := enterBulkMode(ctx, tx)
	if err != nil {
		return fmt.Errorf("seeding shape %q: %w", p.Shape.Name, err)
	}
	res.Bulk = bulk

	// Cumulative thresholds out of 1000 for the scenario draw.
	total := p.Mix.total()
	cum := func(n int) int { return n * 1000 / total }
	thresholds := [4]int{
		cum(p.Mix.Complete),
		cum(p.Mix.Complete + p.Mix.Running),
		cum(p.Mix.Complete + p.Mix.Running + p.Mix.Failed),
		cum(p.Mix.Complete + p.Mix.Running + p.Mix.Failed + p.Mix.Backoff),
	}

	start := time.Now()
	if err := tx.InsertSeedBatch(ctx, store.SeedBatch{Tasks: p.Tasks, Seed: seed, Thresholds: thresholds,
		Frontier: p.frontier, MaxLevel: p.maxLevel, NamedTaskID: p.namedTaskID, NamedStepIDs: p.namedStepIDs,
		Levels: p.levels, MinDepths: p.minDepths, FirstTaskID: p.first.Task, FirstStepID: p.first.Step}); err != nil {
		return fmt.Errorf("seeding %d tasks of shape %q: %w", p.Tasks, p.Shape.Name, err)
	}
	res.Insert = time.Since(start)
	res.TaskIDs = make([]int64, p.Tasks)
	for i := range res.TaskIDs {
		res.TaskIDs[i] = p.first.Task + int64(i)
	}
	res.Steps = p.Tasks * len(p.Shape.Steps)
	// The edges are written between steps whose depth is already stored: the shape is acyclic
	// (parents are declared before their children) and both ends of every edge are steps of
	// one task (their ids are computed from the task's range). The statement tells the
	// DAG-depth trigger to skip its walk (migration 00030), as task creation does; in bulk mode
	// no foreign key is checked.
	if len(p.edges) > 0 {
		from := make([]int32, len(p.edges))
		to := make([]int32, len(p.edges))
		for i, e := range p.edges {
			from[i], to[i] = int32(e[0]), int32(e[1])
		}
		start = time.Now()
		n, err := tx.InsertSeedEdges(ctx, p.first.Step, p.first.Edge, p.Tasks, len(p.Shape.Steps), from, to)
		if err != nil {
			return fmt.Errorf("seeding edges of %d tasks of shape %q: %w", p.Tasks, p.Shape.Name, err)
		}
		res.EdgesTime = time.Since(start)
		res.Edges = int(n)
	}
	if bulk {
		// The task-created wake-up is sent once for the whole batch.
		if err := tx.SetLocalBulkLoad(ctx, false); err != nil {
			return fmt.Errorf("seeding shape %q: leaving bulk mode: %w", p.Shape.Name, err)
		}
		if err := tx.NotifyTasksCreated(ctx, p.Tasks); err != nil {
			return fmt.Errorf("seeding shape %q: notifying new tasks: %w", p.Shape.Name, err)
		}
	}
	return nil
}

// analyzed are the tables a seed writes, in two parts of about the same ANALYZE time.
var analyzed = [2][]string{
	{"tasker_workflow_step_transitions", "tasker_tasks", "tasker_named_steps", "tasker_named_tasks_named_steps"},
	{"tasker_workflow_steps", "tasker_workflow_step_edges", "tasker_task_transitions", "tasker_named_tasks",
		"tasker_task_namespaces", "tasker_dependent_systems"},
}

// analyze runs ANALYZE on the tables a seed writes, one part of analyzed on each of two
// connections at once.
func analyze(ctx context.Context, db *gorm.DB) error {
	var errs [2]error
	var wg sync.WaitGroup
	for i, tables := range analyzed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = store.New(db).Analyze(ctx, tables...)
		}()
	}
	wg.Wait()
	return errors.Join(errs[0], errs[1])
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
	// Insert and EdgesTime are the sums over batches (see Result); batches written side by
	// side overlap, so these sums can exceed Total.
	Insert, EdgesTime time.Duration
	// Indexes is how many secondary indexes were set aside during the load and built again
	// after it (see deferIndexes), in IndexTime.
	Indexes   int
	IndexTime time.Duration
}

// DeferIndexesFrom is the smallest plan, in steps, for which Generate sets the secondary
// indexes of the tables it fills aside during the load (when the database holds fewer steps
// than the plan adds): below it, dropping and building them costs more than it saves.
const DeferIndexesFrom = 100_000

// deferredTables are the tables whose secondary indexes a large load sets aside: those that
// take a row (or several) per step or per task.
var deferredTables = []string{
	"tasker_tasks", "tasker_workflow_steps", "tasker_workflow_step_edges",
	"tasker_workflow_step_transitions", "tasker_task_transitions",
}

// deferIndexes sets the secondary indexes of deferredTables aside (package indexes) when the
// plan adds at least from steps (DeferIndexesFrom) and more steps than the database already holds:
// building an index once over the loaded rows then costs less than maintaining it row by row
// (BENCHMARKS.md "Seed"). It reports whether it did. Indexes that enforce something (primary
// keys, unique indexes) stay, so every row is as constrained as always.
func deferIndexes(ctx context.Context, db *gorm.DB, steps, from int) (bool, error) {
	if steps < from {
		return false, nil
	}
	existing, err := store.New(db).CountStepsUpTo(ctx, steps)
	if err != nil {
		return false, fmt.Errorf("counting steps: %w", err)
	}
	if existing >= steps {
		return false, nil
	}
	if _, err := indexes.Defer(ctx, database.SQL(db), deferredTables); err != nil {
		// A role that may write the tables but does not own them may not drop their indexes
		// (nothing was dropped: Defer is one transaction); it loads with them.
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" { // insufficient_privilege
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// Writers is how many batches Generate writes side by side, each in its own transaction on
// its own connection.
const Writers = 2

// Generate writes every batch of plan, Writers at a time, calling progress after each (never
// two calls at once), then runs ANALYZE on the tables it wrote so that the planner sees the
// new sizes. Every batch's task, step and edge ids are reserved first, in plan order, so the
// data (ids included) is what writing the batches one after the other would write; only the
// ids of transitions depend on how the writers interleave. On error, the batches already
// written stay. A large plan into a nearly empty database sets the secondary indexes of the
// tables it fills aside while it writes (see deferIndexes) and builds them again before it
// returns, whether the load succeeded or not.
func Generate(ctx context.Context, db *gorm.DB, seed int64, plan []Batch, progress func(Result)) (Report, error) {
	return generate(ctx, db, seed, plan, progress, Writers, DeferIndexesFrom)
}

// generate is Generate with writers batches written side by side, setting indexes aside from
// plans of deferFrom steps.
func generate(ctx context.Context, db *gorm.DB, seed int64, plan []Batch, progress func(Result), writers, deferFrom int) (Report, error) {
	var rep Report
	start := time.Now()
	ps := make([]*prepared, len(plan))
	for i, b := range plan {
		p, err := prepare(b)
		if err != nil {
			return rep, err
		}
		ps[i] = p
	}
	reserved, err := register(ctx, db, ps)
	if err != nil {
		return rep, err
	}
	// Indexes an earlier load left aside (it died half-way) are built first.
	if _, err := indexes.Restore(ctx, database.SQL(db), Writers); err != nil {
		return rep, err
	}
	deferred, err := deferIndexes(ctx, db, int(reserved.Step), deferFrom)
	if err != nil {
		return rep, err
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]Result, len(ps))
	next := make(chan int)
	var mu sync.Mutex // serialises progress and guards failed
	var failed error  // the first failure: what cancels the other writers
	var wg sync.WaitGroup
	for range max(1, min(writers, len(ps))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				res, err := write(ctx, db, seed, ps[i])
				res.TaskIDs = nil
				mu.Lock()
				if err != nil && failed == nil {
					failed = err
					cancel()
				}
				if err == nil {
					results[i] = res
					if progress != nil {
						progress(res)
					}
				}
				mu.Unlock()
			}
		}()
	}
	for i := range ps {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if deferred {
		// The indexes are built again however the load ended, even when it was cancelled:
		// left aside, they would slow every query until the next start.
		indexStart := time.Now()
		n, err := indexes.Restore(context.WithoutCancel(parent), database.SQL(db), Writers)
		rep.Indexes, rep.IndexTime = n, time.Since(indexStart)
		if err != nil {
			return rep, fmt.Errorf("building indexes after seeding: %w", err)
		}
	}
	for _, res := range results {
		if res.Shape == "" { // not written
			continue
		}
		rep.Batches = append(rep.Batches, res)
		rep.Tasks += res.Tasks
		rep.Steps += res.Steps
		rep.Edges += res.Edges
		rep.Insert += res.Insert
		rep.EdgesTime += res.EdgesTime
	}
	if failed != nil {
		return rep, failed
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if err := analyze(ctx, db); err != nil {
		return rep, fmt.Errorf("analyzing after seeding: %w", err)
	}
	rep.Total = time.Since(start)
	return rep, nil
}
