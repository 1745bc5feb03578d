package loaders

import (
	"context"
	"slices"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/taskerhq/tasker/internal/models"
)

// Level prefetching makes "one statement per field level" hold however busy the machine is.
// Time-window batching splits a level into several batches when its keys arrive over more
// than the window, which happens with thousands of resolver goroutines on a loaded CPU. So
// Query.tasks, once it has its page, reads the levels below it that the query selects (steps;
// their readiness, DAG rows and transitions; the task projections) with one statement each,
// concurrently, and primes the loaders with the rows before any resolver below it runs; those
// resolvers then find every key cached. Query.steps does the same for its page, and Query.task
// and Query.step for their one object, which they read at once rather than through a batch
// window that nothing else could join; Query.task reads its task with the task's transitions,
// steps and their rows in one statement (TaskNow). Fields that are not selected are not read.
// A failed prefetch primes nothing: the resolvers then load (and report the error) as usual.

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
	ids := make([]int64, len(rows))
	for i := range rows {
		ids[i] = rows[i].TaskID
		l.tasks.Prime(ctx, rows[i].TaskID, &rows[i])
	}
	l.prefetchTasks(ctx, oc, nodeSelections(oc, fc, "TaskConnection", "TaskEdge"), ids, rows)
}

// TaskNow reads one task at once, without waiting out a batch window (a root field's task has
// nothing to batch with), with the fields selected on it, so that no level below it waits for
// a window or for the level above. When the task's steps or transitions are selected, the
// task, its transitions, its steps (with their readiness and DAG rows when selected) and their
// transitions are one statement (models.TaskDetailByID), whatever the number of steps;
// otherwise the task is read alone. Either way its other selected projections (execution
// context, workflow summary) are read concurrently, as PrefetchTasks does, and the execution
// context is derived from the steps' readiness rows when those are read. ctx is the resolver
// context of the field that returns the task. A missing task is a NOT_FOUND error
// (errs.NotFound).
func TaskNow(ctx context.Context, id int64) (*models.TaskRecord, error) {
	l := For(ctx)
	fc, oc := graphql.GetFieldContext(ctx), graphql.GetOperationContext(ctx)
	if fc == nil || oc == nil {
		return l.taskAlone(ctx, id)
	}
	parts, contexts, summaries := detailParts(oc, fc.Field.Selections)
	if !parts.Steps && !parts.TaskTransitions {
		var wg sync.WaitGroup
		wg.Go(func() { l.prefetchTasks(ctx, oc, fc.Field.Selections, []int64{id}, nil) })
		t, err := l.taskAlone(ctx, id)
		wg.Wait()
		return t, err
	}
	derive := contexts && parts.Details
	var wg sync.WaitGroup
	if contexts && !derive {
		wg.Go(func() { primeOne(ctx, l, l.executionContexts, models.ExecutionContextsByTaskIDs, []int64{id}) })
	}
	if summaries {
		wg.Go(func() { primeOne(ctx, l, l.workflowSummaries, models.WorkflowSummariesByTaskIDs, []int64{id}) })
	}
	d, err := models.TaskDetailByID(ctx, l.db, id, parts)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, notFound("task", id)
	}
	ids := []int64{id}
	l.tasks.Prime(ctx, id, &d.Task)
	if parts.TaskTransitions {
		l.taskTransitions.Prime(ctx, id, d.Transitions)
	}
	if parts.Steps {
		steps := l.primeSteps(ctx, ids, d.Steps, parts.Details)
		if parts.StepTransitions {
			l.primeStepTransitions(ctx, steps, d.StepTransitions)
		}
	}
	if derive {
		l.primeExecutionContexts(ctx, []models.TaskRecord{d.Task}, d.Steps)
	}
	return &d.Task, nil
}

// taskAlone reads the task id alone and primes the task loader with it.
func (l *Loaders) taskAlone(ctx context.Context, id int64) (*models.TaskRecord, error) {
	rows, err := models.TasksByIDs(ctx, l.db, []int64{id})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, notFound("task", id)
	}
	l.tasks.Prime(ctx, id, &rows[0])
	return &rows[0], nil
}

// detailParts returns what of models.TaskDetailByID the selection taskSel on a task asks
// for, and whether it selects the task's execution context and workflow summary.
func detailParts(oc *graphql.OperationContext, taskSel ast.SelectionSet) (parts models.TaskDetailParts, contexts, summaries bool) {
	for _, f := range graphql.CollectFields(oc, taskSel, []string{"Task"}) {
		switch f.Name {
		case "steps":
			parts.Steps = true
			parts.Details = parts.Details || selectsDetails(oc, f.Selections)
			parts.StepTransitions = parts.StepTransitions || selectsField(oc, f.Selections, "Step", "transitions")
		case "transitions":
			parts.TaskTransitions = true
		case "executionContext":
			contexts = true
		case "workflowSummary":
			summaries = true
		}
	}
	return parts, contexts, summaries
}

// StepNow reads one step at once and prefetches the fields selected on it, as TaskNow does
// for a task.
func StepNow(ctx context.Context, id int64) (*models.StepRecord, error) {
	l := For(ctx)
	rows, err := models.StepsByIDs(ctx, l.db, []int64{id})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, notFound("step", id)
	}
	if fc, oc := graphql.GetFieldContext(ctx), graphql.GetOperationContext(ctx); fc != nil && oc != nil {
		l.prefetchSteps(ctx, oc, fc.Field.Selections, rows, false, false)
	}
	return &rows[0], nil
}

// prefetchTasks reads the fields selected on the tasks of ids (taskSel) and below, one
// statement per field, all concurrently: the steps' own fields are read by task id too, so
// nothing waits for the level above it. When the tasks' rows are given (tasks, in any order)
// and the steps are read with their readiness, the execution contexts are derived from those
// readiness rows rather than read again. It returns when the priming is done.
func (l *Loaders) prefetchTasks(ctx context.Context, oc *graphql.OperationContext, taskSel ast.SelectionSet, ids []int64, tasks []models.TaskRecord) {
	var stepSel ast.SelectionSet
	steps, contexts := false, false
	for _, f := range graphql.CollectFields(oc, taskSel, []string{"Task"}) {
		switch f.Name {
		case "steps":
			steps, stepSel = true, f.Selections
		case "executionContext":
			contexts = true
		}
	}
	derive := contexts && steps && tasks != nil && selectsDetails(oc, stepSel)
	var wg sync.WaitGroup
	for _, f := range graphql.CollectFields(oc, taskSel, []string{"Task"}) {
		switch f.Name {
		case "steps":
			sel := f.Selections
			wg.Go(func() {
				details := l.prefetchTaskSteps(ctx, oc, sel, ids)
				if derive && details != nil {
					l.primeExecutionContexts(ctx, tasks, details)
				}
			})
		case "executionContext":
			if !derive {
				wg.Go(func() { primeOne(ctx, l, l.executionContexts, models.ExecutionContextsByTaskIDs, ids) })
			}
		case "workflowSummary":
			wg.Go(func() { primeOne(ctx, l, l.workflowSummaries, models.WorkflowSummariesByTaskIDs, ids) })
		case "transitions":
			wg.Go(func() { primeMany(ctx, l, l.taskTransitions, models.TaskTransitionsByTaskIDs, ids) })
		}
	}
	wg.Wait()
}

// primeExecutionContexts primes the execution context of each of tasks from details, every
// step of those tasks with its readiness, by task id.
func (l *Loaders) primeExecutionContexts(ctx context.Context, tasks []models.TaskRecord, details []models.StepDetail) {
	byTask := make(map[int64][]models.StepDetail, len(tasks))
	for i := range details {
		byTask[details[i].Step.TaskID] = append(byTask[details[i].Step.TaskID], details[i])
	}
	for i := range tasks {
		t := &tasks[i]
		c := models.ExecutionContextOf(t.TaskID, t.NamedTaskID, t.Status, byTask[t.TaskID])
		l.executionContexts.Prime(ctx, t.TaskID, &c)
	}
}

// selectsDetails reports whether sel, selected on steps, asks for what their readiness or DAG
// rows hold, which prefetchTaskSteps then reads with the steps.
func selectsDetails(oc *graphql.OperationContext, sel ast.SelectionSet) bool {
	for _, f := range graphql.CollectFields(oc, sel, []string{"Step"}) {
		switch f.Name {
		case "readiness", "dag", "parents", "children":
			return true
		}
	}
	return false
}

// prefetchTaskSteps reads the steps of the tasks of ids and the fields selected on them
// (sel), concurrently: readiness and DAG rows with the steps themselves (one statement,
// models.StepDetailsByTaskIDs), transitions by task id. Parents and children are steps of the
// same task, primed with the steps. It returns the steps with their readiness and DAG rows
// when it read them, nil otherwise.
func (l *Loaders) prefetchTaskSteps(ctx context.Context, oc *graphql.OperationContext, sel ast.SelectionSet, ids []int64) []models.StepDetail {
	transitions := selectsField(oc, sel, "Step", "transitions")
	var wg sync.WaitGroup
	var steps []models.StepRecord
	var details []models.StepDetail
	wg.Go(func() {
		if !selectsDetails(oc, sel) {
			steps = primeMany(ctx, l, l.stepsByTask, models.StepsByTaskIDs, ids)
			for i := range steps {
				l.steps.Prime(ctx, steps[i].WorkflowStepID, &steps[i])
			}
		} else if rows, err := models.StepDetailsByTaskIDs(ctx, l.db, ids); err == nil {
			details = rows
			steps = l.primeSteps(ctx, ids, rows, true)
		}
	})
	var stepTransitions []models.StepTransitionRecord
	var transitionsErr error
	if transitions {
		wg.Go(func() { stepTransitions, transitionsErr = models.StepTransitionsByTaskIDs(ctx, l.db, ids) })
	}
	wg.Wait()
	if stepTransitions == nil || transitionsErr != nil {
		return details
	}
	l.primeStepTransitions(ctx, steps, stepTransitions)
	return details
}

// primeSteps primes the loaders with details, every step of the tasks of ids by task id then
// step id: the steps by id and by task, and their readiness and DAG rows when withRows. It
// returns the steps.
func (l *Loaders) primeSteps(ctx context.Context, ids []int64, details []models.StepDetail, withRows bool) []models.StepRecord {
	steps := make([]models.StepRecord, len(details))
	for i := range details {
		steps[i] = details[i].Step
		if withRows {
			l.readiness.Prime(ctx, details[i].Step.WorkflowStepID, &details[i].Readiness)
			l.dags.Prime(ctx, details[i].Step.WorkflowStepID, &details[i].Dag)
		}
	}
	for i, list := range group(steps, ids, l.stepsByTask.key) {
		l.stepsByTask.Prime(ctx, ids[i], list)
	}
	for i := range steps {
		l.steps.Prime(ctx, steps[i].WorkflowStepID, &steps[i])
	}
	return steps
}

// primeStepTransitions primes the step transition loader with each of steps' transitions,
// taken from transitions (by step then sort key); a step without any gets an empty list.
func (l *Loaders) primeStepTransitions(ctx context.Context, steps []models.StepRecord, transitions []models.StepTransitionRecord) {
	stepIDs := make([]int64, len(steps))
	for i := range steps {
		stepIDs[i] = steps[i].WorkflowStepID
	}
	lists := group(transitions, stepIDs, l.stepTransitions.key)
	for i, id := range stepIDs {
		l.stepTransitions.Prime(ctx, id, lists[i])
	}
}

// PrefetchStepPage reads the steps of a page of readiness rows (one statement), in the
// order of rows, primes the loaders with them and with the rows, and reads the fields selected
// on the steps as PrefetchTasks does. ctx is the resolver context of the field that returns
// the page; the steps are found under its "nodes" and "edges { node }". A step missing from
// the read (deleted since the page was read) is an error.
func PrefetchStepPage(ctx context.Context, rows []models.StepReadinessStatus) ([]models.StepRecord, error) {
	if len(rows) == 0 {
		return []models.StepRecord{}, nil
	}
	l := For(ctx)
	ids := make([]int64, len(rows))
	taskIDs := make([]int64, len(rows))
	for i := range rows {
		ids[i], taskIDs[i] = rows[i].WorkflowStepID, rows[i].TaskID
		l.readiness.Prime(ctx, rows[i].WorkflowStepID, &rows[i])
	}
	fc := graphql.GetFieldContext(ctx)
	oc := graphql.GetOperationContext(ctx)
	var sel ast.SelectionSet
	if fc != nil && oc != nil {
		sel = nodeSelections(oc, fc, "StepConnection", "StepEdge")
	}
	// The rows name the steps' tasks: those are read alongside the steps, not after them.
	var wg sync.WaitGroup
	tasksPrimed := fc != nil && oc != nil && selectsField(oc, sel, "Step", "task")
	if tasksPrimed {
		slices.Sort(taskIDs)
		wg.Go(func() { primeOne(ctx, l, l.tasks, models.TasksByIDs, slices.Compact(taskIDs)) })
	}
	read, err := models.StepsByIDs(ctx, l.db, ids)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	byID := index(read, l.steps.key)
	steps := make([]models.StepRecord, len(ids))
	for i, id := range ids {
		s, ok := byID[id]
		if !ok {
			return nil, notFound("step", id)
		}
		steps[i] = *s
	}
	if fc == nil || oc == nil {
		return steps, nil
	}
	l.prefetchSteps(ctx, oc, sel, steps, true, tasksPrimed)
	return steps, nil
}

// selectsField reports whether sel selects the field name on objects of type typ.
func selectsField(oc *graphql.OperationContext, sel ast.SelectionSet, typ, name string) bool {
	for _, f := range graphql.CollectFields(oc, sel, []string{typ}) {
		if f.Name == name {
			return true
		}
	}
	return false
}

// nodeSelections returns what a query selects on the nodes of the connection field of fc
// (of type conn, with edges of type edge): under "nodes" and under "edges { node }".
func nodeSelections(oc *graphql.OperationContext, fc *graphql.FieldContext, conn, edge string) ast.SelectionSet {
	var sel ast.SelectionSet
	for _, f := range graphql.CollectFields(oc, fc.Field.Selections, []string{conn}) {
		switch f.Name {
		case "nodes":
			sel = append(sel, f.Selections...)
		case "edges":
			for _, e := range graphql.CollectFields(oc, f.Selections, []string{edge}) {
				if e.Name == "node" {
					sel = append(sel, e.Selections...)
				}
			}
		}
	}
	return sel
}

// prefetchSteps primes the step loader with steps (of any tasks) and reads the selected step
// fields by step id: readiness too unless readinessPrimed (a page read from the readiness
// view), the steps' tasks unless tasksPrimed, and the parents and children that are not among
// steps.
func (l *Loaders) prefetchSteps(ctx context.Context, oc *graphql.OperationContext, sel ast.SelectionSet, steps []models.StepRecord, readinessPrimed, tasksPrimed bool) {
	if len(steps) == 0 {
		return
	}
	ids := make([]int64, len(steps))
	for i := range steps {
		ids[i] = steps[i].WorkflowStepID
		l.steps.Prime(ctx, steps[i].WorkflowStepID, &steps[i])
	}
	var wg sync.WaitGroup
	dag, parents, children := false, false, false
	for _, f := range graphql.CollectFields(oc, sel, []string{"Step"}) {
		switch f.Name {
		case "readiness":
			if readinessPrimed {
				continue
			}
			wg.Go(func() { primeOne(ctx, l, l.readiness, models.ReadinessByStepIDs, ids) })
		case "transitions":
			wg.Go(func() { primeMany(ctx, l, l.stepTransitions, models.StepTransitionsByStepIDs, ids) })
		case "task":
			if tasksPrimed {
				continue
			}
			wg.Go(func() { primeOne(ctx, l, l.tasks, models.TasksByIDs, distinctTasks(steps)) })
		case "dag":
			dag = true
		case "parents":
			dag, parents = true, true
		case "children":
			dag, children = true, true
		}
	}
	if dag {
		wg.Go(func() {
			rows := primeOne(ctx, l, l.dags, models.DagByStepIDs, ids)
			// Parents and children are steps of the same tasks; those not among steps are
			// read here.
			missing := relatives(rows, ids, parents, children)
			if len(missing) > 0 {
				primeOne(ctx, l, l.steps, models.StepsByIDs, missing)
			}
		})
	}
	wg.Wait()
}

// distinctTasks returns the task ids of steps, ascending, once each.
func distinctTasks(steps []models.StepRecord) []int64 {
	ids := make([]int64, len(steps))
	for i := range steps {
		ids[i] = steps[i].TaskID
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// relatives returns, ascending and once each, the parent (when parents) and child (when
// children) step ids of the DAG rows that are not in have.
func relatives(rows []models.StepDagRelationship, have []int64, parents, children bool) []int64 {
	seen := make(map[int64]bool, len(have))
	for _, id := range have {
		seen[id] = true
	}
	var out []int64
	add := func(ids []int64) {
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	for _, r := range rows {
		if parents {
			add(r.ParentStepIDs)
		}
		if children {
			add(r.ChildStepIDs)
		}
	}
	slices.Sort(out)
	return out
}

// primeOne reads the rows of ids in one statement, primes loader with each and returns them.
func primeOne[V any](ctx context.Context, l *Loaders, loader rowLoader[V], fetch fetchFunc[V], ids []int64) []V {
	rows, err := fetch(ctx, l.db, ids)
	if err != nil {
		return nil
	}
	for i := range rows {
		loader.Prime(ctx, loader.key(&rows[i]), &rows[i])
	}
	return rows
}

// primeMany reads the rows of ids in one statement and primes loader with each id's list
// (empty when it has none). It returns the rows.
func primeMany[V any](ctx context.Context, l *Loaders, loader listLoader[V], fetch fetchFunc[V], ids []int64) []V {
	rows, err := fetch(ctx, l.db, ids)
	if err != nil {
		return nil
	}
	for i, list := range group(rows, ids, loader.key) {
		loader.Prime(ctx, ids[i], list)
	}
	return rows
}
