package loaders

import (
	"context"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/graph-gophers/dataloader/v7"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/taskerhq/tasker/internal/models"
)

// Level prefetching makes "one statement per field level" hold however busy the machine is.
// Time-window batching splits a level into several batches when its keys arrive over more
// than the window, which happens with thousands of resolver goroutines on a loaded CPU. So
// Query.tasks, once it has its page, reads the levels below it that the query selects (steps;
// their readiness, DAG rows and transitions; the task projections) with one statement each,
// concurrently, and primes the loaders with the rows before any resolver below it runs; those
// resolvers then find every key cached. Fields that are not selected are not read. A failed
// prefetch primes nothing: the resolvers then load (and report the error) as usual.

// PrefetchTasks primes the loaders for the tasks of a page (rows) and the fields selected
// on them. ctx is the resolver context of the field that returned the page; the tasks are
// found under its "nodes" and "edges { node }". It returns when the priming is done.
func PrefetchTasks(ctx context.Context, rows []models.TaskRecord) {
	fc := graphql.GetFieldContext(ctx)
	oc := graphql.GetOperationContext(ctx)
	if fc == nil || oc == nil || len(rows) == 0 {
		return
	}
	l := For(ctx)
	var taskSel ast.SelectionSet
	for _, f := range graphql.CollectFields(oc, fc.Field.Selections, []string{"TaskConnection"}) {
		switch f.Name {
		case "nodes":
			taskSel = append(taskSel, f.Selections...)
		case "edges":
			for _, e := range graphql.CollectFields(oc, f.Selections, []string{"TaskEdge"}) {
				if e.Name == "node" {
					taskSel = append(taskSel, e.Selections...)
				}
			}
		}
	}
	ids := make([]int64, len(rows))
	for i := range rows {
		ids[i] = rows[i].TaskID
		l.tasks.Prime(ctx, rows[i].TaskID, &rows[i])
	}
	var wg sync.WaitGroup
	for _, f := range graphql.CollectFields(oc, taskSel, []string{"Task"}) {
		switch f.Name {
		case "steps":
			sel := f.Selections
			wg.Go(func() {
				steps := primeMany(ctx, l, l.stepsByTask, models.StepsByTaskIDs, ids,
					func(r *models.StepRecord) int64 { return r.TaskID })
				l.prefetchSteps(ctx, oc, sel, steps)
			})
		case "executionContext":
			wg.Go(func() {
				primeOne(ctx, l, l.executionContexts, models.ExecutionContextsByTaskIDs, ids,
					func(r *models.TaskExecutionContext) int64 { return r.TaskID })
			})
		case "workflowSummary":
			wg.Go(func() {
				primeOne(ctx, l, l.workflowSummaries, models.WorkflowSummariesByTaskIDs, ids,
					func(r *models.TaskWorkflowSummary) int64 { return r.TaskID })
			})
		case "transitions":
			wg.Go(func() {
				primeMany(ctx, l, l.taskTransitions, models.TaskTransitionsByTaskIDs, ids,
					func(r *models.TaskTransitionRecord) int64 { return r.TaskID })
			})
		}
	}
	wg.Wait()
}

// prefetchSteps primes the step loader with steps and reads the selected step fields.
func (l *Loaders) prefetchSteps(ctx context.Context, oc *graphql.OperationContext, sel ast.SelectionSet, steps []models.StepRecord) {
	if len(steps) == 0 {
		return
	}
	ids := make([]int64, len(steps))
	for i := range steps {
		ids[i] = steps[i].WorkflowStepID
		l.steps.Prime(ctx, steps[i].WorkflowStepID, &steps[i])
	}
	var wg sync.WaitGroup
	dag := false
	for _, f := range graphql.CollectFields(oc, sel, []string{"Step"}) {
		switch f.Name {
		case "readiness":
			wg.Go(func() {
				primeOne(ctx, l, l.readiness, models.ReadinessByStepIDs, ids,
					func(r *models.StepReadinessStatus) int64 { return r.WorkflowStepID })
			})
		case "transitions":
			wg.Go(func() {
				primeMany(ctx, l, l.stepTransitions, models.StepTransitionsByStepIDs, ids,
					func(r *models.StepTransitionRecord) int64 { return r.WorkflowStepID })
			})
		case "dag", "parents", "children":
			// Parents and children are steps of the same task: primed above.
			dag = true
		}
	}
	if dag {
		wg.Go(func() {
			primeOne(ctx, l, l.dags, models.DagByStepIDs, ids,
				func(r *models.StepDagRelationship) int64 { return r.WorkflowStepID })
		})
	}
	wg.Wait()
}

// primeOne reads the rows of ids in one statement and primes loader with each.
func primeOne[V any](ctx context.Context, l *Loaders, loader *dataloader.Loader[int64, *V], fetch fetchFunc[V], ids []int64, key func(*V) int64) {
	rows, err := fetch(ctx, l.db, ids)
	if err != nil {
		return
	}
	for i := range rows {
		loader.Prime(ctx, key(&rows[i]), &rows[i])
	}
}

// primeMany reads the rows of ids in one statement and primes loader with each id's list
// (empty when it has none). It returns the rows.
func primeMany[V any](ctx context.Context, l *Loaders, loader *dataloader.Loader[int64, []V], fetch fetchFunc[V], ids []int64, key func(*V) int64) []V {
	rows, err := fetch(ctx, l.db, ids)
	if err != nil {
		return nil
	}
	byID := make(map[int64][]V, len(ids))
	for i := range rows {
		k := key(&rows[i])
		byID[k] = append(byID[k], rows[i])
	}
	for _, id := range ids {
		list := byID[id]
		if list == nil {
			list = []V{}
		}
		loader.Prime(ctx, id, list)
	}
	return rows
}
