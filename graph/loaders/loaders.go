// Package loaders holds the GraphQL API's per-request dataloaders. Every field that loads by a
// parent id goes through one of them, so a request runs one SQL statement per field level
// rather than one per object.
//
// A Loaders value is created for every response (middleware in graph/server), stored
// under a private context key and reached through the accessor functions of this package.
// Its caches live as long as that response, never longer. Every batch function issues one
// statement for the whole batch (internal/models readers) and returns exactly one result per
// key, in key order: a missing row is an explicit errs.NotFound error for that key, never a
// shifted slice. List-valued loaders return an empty list for a key without rows.
//
// Batching is by time window (graph-gophers/dataloader): the first key of a batch opens a
// window of Options.Wait, and every key requested during it joins the batch. gqlgen resolves
// the elements of a list concurrently, so the keys of one level usually arrive close
// together; on a busy machine they may not, so the list levels below Query.tasks are
// prefetched instead (prefetch.go), which makes their cost one statement per level always.
package loaders

import (
	"context"
	"sync"
	"time"

	"github.com/graph-gophers/dataloader/v7"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
)

// Options tunes batching. The zero value gives the defaults.
type Options struct {
	// Wait is how long a batch collects keys after its first one (default 2ms).
	Wait time.Duration
	// BatchCapacity caps the keys of one batch (default 100,000): one level of any query
	// the complexity limit admits fits in one batch.
	BatchCapacity int
}

func (o Options) withDefaults() Options {
	if o.Wait <= 0 {
		o.Wait = 2 * time.Millisecond
	}
	if o.BatchCapacity <= 0 {
		o.BatchCapacity = 100_000
	}
	return o
}

// Loaders is one response's set of dataloaders.
type Loaders struct {
	db                *gorm.DB
	tasks             rowLoader[models.TaskRecord]
	steps             rowLoader[models.StepRecord]
	stepsByTask       listLoader[models.StepRecord]
	readiness         rowLoader[models.StepReadinessStatus]
	dags              rowLoader[models.StepDagRelationship]
	executionContexts rowLoader[models.TaskExecutionContext]
	workflowSummaries rowLoader[models.TaskWorkflowSummary]
	stepTransitions   listLoader[models.StepTransitionRecord]
	taskTransitions   listLoader[models.TaskTransitionRecord]
	namedTasks        rowLoader[models.NamedTask]
	namespaces        rowLoader[models.TaskNamespace]
}

// rowLoader loads one row per key. key is the key of a row, so that rows read in another way
// (prefetch.go) prime the loader under the right keys.
type rowLoader[V any] struct {
	*cached[*V]
	key func(*V) int64
}

// listLoader loads the list of rows of each key; key is the key of a row, as for rowLoader.
type listLoader[V any] struct {
	*cached[[]V]
	key func(*V) int64
}

// cached is a dataloader with the values primed by prefetch.go kept beside it, in a map: a
// primed key is answered from the map without going through the dataloader, whose Load
// allocates a channel, a result and a tracing closure even on a cache hit (and its Prime a
// thunk). Most keys of a request are primed (prefetch.go reads the list levels below
// Query.tasks and Query.task ahead), so most loads cost one map read. A key that was not
// primed is loaded through the dataloader, batched and cached as before.
type cached[R any] struct {
	loader *dataloader.Loader[int64, R]
	mu     sync.RWMutex
	primed map[int64]R
}

// Prime stores v under key unless key is primed already (the dataloader's rule: the first
// value stays).
func (c *cached[R]) Prime(_ context.Context, key int64, v R) {
	c.mu.Lock()
	if _, ok := c.primed[key]; !ok {
		if c.primed == nil {
			c.primed = make(map[int64]R)
		}
		c.primed[key] = v
	}
	c.mu.Unlock()
}

// lookup returns the primed value of key, if any.
func (c *cached[R]) lookup(key int64) (R, bool) {
	c.mu.RLock()
	v, ok := c.primed[key]
	c.mu.RUnlock()
	return v, ok
}

// get returns key's value: the primed one, else the dataloader's (after its batch runs).
func (c *cached[R]) get(ctx context.Context, key int64) (R, error) {
	if v, ok := c.lookup(key); ok {
		return v, nil
	}
	return c.loader.Load(ctx, key)()
}

// ClearAll forgets every primed and loaded value.
func (c *cached[R]) ClearAll() {
	c.mu.Lock()
	c.primed = nil
	c.mu.Unlock()
	c.loader.ClearAll()
}

// New returns fresh loaders reading through db.
func New(db *gorm.DB, opts Options) *Loaders {
	o := opts.withDefaults()
	return &Loaders{
		db: db,
		tasks: one(o, db, "task", models.TasksByIDs,
			func(r *models.TaskRecord) int64 { return r.TaskID }),
		steps: one(o, db, "step", models.StepsByIDs,
			func(r *models.StepRecord) int64 { return r.WorkflowStepID }),
		stepsByTask: many(o, db, models.StepsByTaskIDs,
			func(r *models.StepRecord) int64 { return r.TaskID }),
		readiness: one(o, db, "readiness of step", models.ReadinessByStepIDs,
			func(r *models.StepReadinessStatus) int64 { return r.WorkflowStepID }),
		dags: one(o, db, "DAG row of step", models.DagByStepIDs,
			func(r *models.StepDagRelationship) int64 { return r.WorkflowStepID }),
		executionContexts: one(o, db, "execution context of task", models.ExecutionContextsByTaskIDs,
			func(r *models.TaskExecutionContext) int64 { return r.TaskID }),
		workflowSummaries: one(o, db, "workflow summary of task", models.WorkflowSummariesByTaskIDs,
			func(r *models.TaskWorkflowSummary) int64 { return r.TaskID }),
		stepTransitions: many(o, db, models.StepTransitionsByStepIDs,
			func(r *models.StepTransitionRecord) int64 { return r.WorkflowStepID }),
		taskTransitions: many(o, db, models.TaskTransitionsByTaskIDs,
			func(r *models.TaskTransitionRecord) int64 { return r.TaskID }),
		namedTasks: one(o, db, "named task", models.NamedTasksByIDs,
			func(r *models.NamedTask) int64 { return r.NamedTaskID }),
		namespaces: one(o, db, "namespace", models.NamespacesByIDs,
			func(r *models.TaskNamespace) int64 { return r.TaskNamespaceID }),
	}
}

type ctxKey struct{}

// With returns ctx carrying l.
func With(ctx context.Context, l *Loaders) context.Context {
	return context.WithValue(ctx, ctxKey{}, l)
}

// For returns the loaders of ctx. It panics when there are none: that is a wiring bug, and
// the API's recover function turns it into a masked internal error.
func For(ctx context.Context) *Loaders {
	l, ok := ctx.Value(ctxKey{}).(*Loaders)
	if !ok {
		panic("loaders: no dataloaders in context (middleware missing)")
	}
	return l
}

// fetchFunc is a batch reader of internal/models: one statement for all ids.
type fetchFunc[V any] func(ctx context.Context, db *gorm.DB, ids []int64) ([]V, error)

// notFound is the error of a key without a row: an errs.NotFound naming the object.
func notFound(kind string, id int64) error {
	return errs.E(errs.NotFound, "%s %d not found", kind, id)
}

// one builds a loader of one row per key; a key without a row gets a notFound error.
func one[V any](o Options, db *gorm.DB, kind string, fetch fetchFunc[V], key func(*V) int64) rowLoader[V] {
	return rowLoader[V]{key: key, cached: newLoader(o, db, fetch, func(rows []V, ids []int64) []*dataloader.Result[*V] {
		byID := index(rows, key)
		out := make([]*dataloader.Result[*V], len(ids))
		for i, id := range ids {
			if v, ok := byID[id]; ok {
				out[i] = &dataloader.Result[*V]{Data: v}
			} else {
				out[i] = &dataloader.Result[*V]{Error: notFound(kind, id)}
			}
		}
		return out
	})}
}

// many builds a loader of a list of rows per key, in the reader's order; a key without rows
// gets an empty list.
func many[V any](o Options, db *gorm.DB, fetch fetchFunc[V], key func(*V) int64) listLoader[V] {
	return listLoader[V]{key: key, cached: newLoader(o, db, fetch, func(rows []V, ids []int64) []*dataloader.Result[[]V] {
		lists := group(rows, ids, key)
		out := make([]*dataloader.Result[[]V], len(ids))
		for i := range lists {
			out[i] = &dataloader.Result[[]V]{Data: lists[i]}
		}
		return out
	})}
}

// newLoader builds a loader whose batch reads every key with one call of fetch and turns the
// rows into one result per key, in key order, with results. A failed read is every key's
// error.
func newLoader[V, R any](o Options, db *gorm.DB, fetch fetchFunc[V], results func(rows []V, ids []int64) []*dataloader.Result[R]) *cached[R] {
	batch := func(ctx context.Context, ids []int64) []*dataloader.Result[R] {
		rows, err := fetch(ctx, db, ids)
		if err != nil {
			out := make([]*dataloader.Result[R], len(ids))
			for i := range out {
				out[i] = &dataloader.Result[R]{Error: err}
			}
			return out
		}
		return results(rows, ids)
	}
	return &cached[R]{loader: dataloader.NewBatchedLoader(batch,
		dataloader.WithWait[int64, R](o.Wait), dataloader.WithBatchCapacity[int64, R](o.BatchCapacity))}
}

// index maps each row's key to the row.
func index[V any](rows []V, key func(*V) int64) map[int64]*V {
	byID := make(map[int64]*V, len(rows))
	for i := range rows {
		byID[key(&rows[i])] = &rows[i]
	}
	return byID
}

// group returns the rows of each id of ids, in the rows' order: one list per id, in the order
// of ids, empty (not nil) for an id without rows.
func group[V any](rows []V, ids []int64, key func(*V) int64) [][]V {
	byID := make(map[int64][]V, len(ids))
	for i := range rows {
		k := key(&rows[i])
		byID[k] = append(byID[k], rows[i])
	}
	out := make([][]V, len(ids))
	for i, id := range ids {
		if out[i] = byID[id]; out[i] == nil {
			out[i] = []V{}
		}
	}
	return out
}

// Task loads a task by id.
func Task(ctx context.Context, id int64) (*models.TaskRecord, error) {
	return For(ctx).tasks.get(ctx, id)
}

// Step loads a step by id.
func Step(ctx context.Context, id int64) (*models.StepRecord, error) {
	return For(ctx).steps.get(ctx, id)
}

// StepsByIDs loads steps by id, in the order of ids; any missing step is an error. Primed
// steps are taken as they are; every other key is asked of the loader before any result is
// awaited, so those keys share one batch (dataloader's LoadMany would start a goroutine per
// key).
func StepsByIDs(ctx context.Context, ids []int64) ([]models.StepRecord, error) {
	l := For(ctx)
	out := make([]models.StepRecord, len(ids))
	var pending []int // indexes of ids not primed, in order
	var thunks []dataloader.Thunk[*models.StepRecord]
	for i, id := range ids {
		if s, ok := l.steps.lookup(id); ok {
			out[i] = *s
			continue
		}
		pending = append(pending, i)
		thunks = append(thunks, l.steps.loader.Load(ctx, id))
	}
	for j, thunk := range thunks {
		s, err := thunk()
		if err != nil {
			return nil, err
		}
		out[pending[j]] = *s
	}
	return out, nil
}

// StepsOfTask loads the steps of a task, by step id.
func StepsOfTask(ctx context.Context, taskID int64) ([]models.StepRecord, error) {
	return For(ctx).stepsByTask.get(ctx, taskID)
}

// Readiness loads the readiness row of a step.
func Readiness(ctx context.Context, stepID int64) (*models.StepReadinessStatus, error) {
	return For(ctx).readiness.get(ctx, stepID)
}

// Dag loads the DAG row of a step.
func Dag(ctx context.Context, stepID int64) (*models.StepDagRelationship, error) {
	return For(ctx).dags.get(ctx, stepID)
}

// ExecutionContext loads the execution context of a task.
func ExecutionContext(ctx context.Context, taskID int64) (*models.TaskExecutionContext, error) {
	return For(ctx).executionContexts.get(ctx, taskID)
}

// WorkflowSummary loads the workflow summary of a task.
func WorkflowSummary(ctx context.Context, taskID int64) (*models.TaskWorkflowSummary, error) {
	return For(ctx).workflowSummaries.get(ctx, taskID)
}

// StepTransitions loads the transitions of a step, oldest first.
func StepTransitions(ctx context.Context, stepID int64) ([]models.StepTransitionRecord, error) {
	return For(ctx).stepTransitions.get(ctx, stepID)
}

// TaskTransitions loads the transitions of a task, oldest first.
func TaskTransitions(ctx context.Context, taskID int64) ([]models.TaskTransitionRecord, error) {
	return For(ctx).taskTransitions.get(ctx, taskID)
}

// NamedTask loads a named task by id.
func NamedTask(ctx context.Context, id int64) (*models.NamedTask, error) {
	return For(ctx).namedTasks.get(ctx, id)
}

// Namespace loads a namespace by id.
func Namespace(ctx context.Context, id int64) (*models.TaskNamespace, error) {
	return For(ctx).namespaces.get(ctx, id)
}

// Parents loads the parents of a step, by id: its DAG row, then the parent steps.
func Parents(ctx context.Context, stepID int64) ([]models.StepRecord, error) {
	d, err := Dag(ctx, stepID)
	if err != nil {
		return nil, err
	}
	return StepsByIDs(ctx, d.ParentStepIDs)
}

// Children loads the children of a step, by id: its DAG row, then the child steps.
func Children(ctx context.Context, stepID int64) ([]models.StepRecord, error) {
	d, err := Dag(ctx, stepID)
	if err != nil {
		return nil, err
	}
	return StepsByIDs(ctx, d.ChildStepIDs)
}

// Forget drops every cached row of the loaders of ctx, so that what a mutation changed is
// read again.
func Forget(ctx context.Context) {
	l := For(ctx)
	l.tasks.ClearAll()
	l.steps.ClearAll()
	l.stepsByTask.ClearAll()
	l.readiness.ClearAll()
	l.dags.ClearAll()
	l.executionContexts.ClearAll()
	l.workflowSummaries.ClearAll()
	l.stepTransitions.ClearAll()
	l.taskTransitions.ClearAll()
	l.namedTasks.ClearAll()
	l.namespaces.ClearAll()
}
