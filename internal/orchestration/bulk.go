package orchestration

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/template"
)

// MaxBatch is the most requests one CreateTasks call takes. A larger batch is refused whole
// with an errs.Invalid on field "inputs"; callers with more work send several batches.
const MaxBatch = 1000

// BatchTask is the outcome of one accepted request of a batch.
type BatchTask struct {
	TaskID int64
	// Created is false when the request's idempotency key returned a task that already
	// existed, or that an earlier request of the same batch created.
	Created bool
}

// ItemError is what is wrong with the request at Index (0-based) of a batch. Err is an
// *errs.Error: errs.Invalid (its Field names the field at fault, see Invalid), errs.Conflict
// (Field "idempotency_key": a key already used for another template) or errs.NotFound (an
// unknown template); errs.KindOf(itemErr) is its kind.
type ItemError struct {
	Index int
	Err   error
}

func (e ItemError) Error() string { return fmt.Sprintf("request %d: %v", e.Index, e.Err) }

// Unwrap returns the cause.
func (e ItemError) Unwrap() error { return e.Err }

// BatchResult is the outcome of CreateTasks. Either Errors is empty and Tasks holds one entry
// per request, in request order, or Errors lists every request at fault (ascending index) and
// Tasks is nil: nothing was written.
type BatchResult struct {
	Tasks  []BatchTask
	Errors []ItemError
}

// Created counts the tasks the batch created.
func (r BatchResult) Created() int {
	n := 0
	for _, t := range r.Tasks {
		if t.Created {
			n++
		}
	}
	return n
}

// batchItem is one request of a batch, checked and resolved against its template.
type batchItem struct {
	req      CreateTaskRequest
	tpl      *template.Template
	context  []byte
	tags     []byte
	identity string
}

// CreateTasks creates the tasks of a batch of requests (each as CreateTask would) in one
// transaction, all or nothing: when any request is at fault, the result lists every request at
// fault and nothing is written. A batch is all or nothing so that a client can fix the bad
// requests and send the same batch again: with idempotency keys, a resend never duplicates.
//
// Every request is validated before anything is written (template, context, tags, lengths,
// one key used with two templates in the batch). The statements are set-based and their
// number does not depend on the batch size: one read of the tasks that already hold the
// batch's keys (when a request has a key), two reads per distinct template to find its
// registration (registering it when needed), then in one transaction one INSERT for the
// tasks, one SELECT for the keys whose task already exists (only when some do) and one
// statement for all steps and edges. Like CreateTask, it writes no transition: new tasks and
// steps are pending.
// Steps are written with their DAG depth computed from the template, and the edges statement
// tells the edges trigger to skip its walk (migration 00030).
//
// Idempotency: requests of one batch with the same key get one task (the first created it);
// a key whose task already exists returns it (Created false); a key held by a task of another
// template is an error on field idempotency_key. Concurrent batches with overlapping keys
// create one task per key: tasks are inserted in identity order, so two batches wait on each
// other's keys in the same order and never deadlock.
//
// More than MaxBatch requests is an error (an errs.Invalid on field "inputs"), as is an
// error from the database; an empty batch returns an empty result.
func (s *Service) CreateTasks(ctx context.Context, reqs []CreateTaskRequest) (BatchResult, error) {
	if len(reqs) > MaxBatch {
		return BatchResult{}, Invalid("inputs", fmt.Sprintf(
			"a batch holds at most %d requests, got %d: send it in several batches", MaxBatch, len(reqs)))
	}
	if len(reqs) == 0 {
		return BatchResult{Tasks: []BatchTask{}}, nil
	}
	if s.templates == nil {
		return BatchResult{}, errors.New("creating tasks: the service has no template registry")
	}
	items, itemErrs := checkBatch(s.templates, reqs)
	if len(itemErrs) > 0 {
		return BatchResult{Errors: itemErrs}, nil
	}

	// Keys that already have a task: a key held by another template refuses the batch before
	// anything (even a template registration) is written; a batch of repeats writes nothing.
	known, err := s.keyedTasks(ctx, items)
	if err != nil {
		return BatchResult{}, err
	}
	if bad := reusedKeys(items, known); len(bad) > 0 {
		return BatchResult{Errors: bad}, nil
	}
	if repeats := allKnown(items, known); repeats != nil {
		return BatchResult{Tasks: repeats}, nil
	}

	regs := make(map[*template.Template]template.Registration)
	for _, it := range items {
		if _, ok := regs[it.tpl]; ok {
			continue
		}
		regn, err := template.Ensure(ctx, s.db, it.tpl)
		if err != nil {
			return BatchResult{}, fmt.Errorf("creating tasks of %s: %w", it.tpl.Key(), err)
		}
		regs[it.tpl] = regn
	}

	var result BatchResult
	err = s.store.Tx(ctx, func(tx *store.Store) error {
		var err error
		result, err = writeBatch(ctx, tx, items, regs)
		if err != nil {
			return err
		}
		if len(result.Errors) > 0 {
			return errBatchRefused
		}
		return nil
	})
	if errors.Is(err, errBatchRefused) {
		return BatchResult{Errors: result.Errors}, nil
	}
	if err != nil {
		return BatchResult{}, fmt.Errorf("creating %d tasks: %w", len(reqs), err)
	}
	return result, nil
}

// CheckTasks validates requests as CreateTasks does before it writes anything, without the
// database, whatever their number: it returns the errors CreateTasks would give for them as one
// batch, except a key held by an existing task of another template (found only by reading).
// A caller that splits many requests into several batches checks them all first, so that a bad
// request refuses the whole input rather than the batches after the ones already written.
func CheckTasks(reg *template.Registry, reqs []CreateTaskRequest) []ItemError {
	_, bad := checkBatch(reg, reqs)
	return bad
}

// errBatchRefused rolls back a batch in which a request was found at fault while writing.
var errBatchRefused = errors.New("batch refused")

// checkBatch validates every request, without reading the database.
func checkBatch(reg *template.Registry, reqs []CreateTaskRequest) ([]batchItem, []ItemError) {
	items := make([]batchItem, len(reqs))
	var bad []ItemError
	keyTemplate := make(map[string]*template.Template)
	for i, req := range reqs {
		if req.Namespace == "" {
			req.Namespace = "default"
		}
		if req.Name == "" {
			bad = append(bad, ItemError{i, Invalid("template", "a template name is required")})
			continue
		}
		tpl, err := reg.Lookup(req.Namespace, req.Name, req.Version)
		if err != nil {
			bad = append(bad, ItemError{i, errs.E(errs.NotFound, "not found: %w", err)})
			continue
		}
		taskContext, tags, err := checkRequest(tpl, req)
		if err != nil {
			bad = append(bad, ItemError{i, err})
			continue
		}
		identity := ""
		if req.IdempotencyKey != "" {
			identity = IdentityHash(req.IdempotencyKey)
			if other, ok := keyTemplate[req.IdempotencyKey]; ok && other != tpl {
				bad = append(bad, ItemError{i, keyConflict("key %q is used in this batch for %s and for %s",
					req.IdempotencyKey, other.Key(), tpl.Key())})
				continue
			}
			keyTemplate[req.IdempotencyKey] = tpl
		} else if identity, err = randomIdentity(); err != nil {
			bad = append(bad, ItemError{i, err})
			continue
		}
		items[i] = batchItem{req: req, tpl: tpl, context: taskContext, tags: tags, identity: identity}
	}
	return items, bad
}

// TrustedBatch is the fewest new tasks for which a batch skips its foreign-key checks, where
// the database role may (see writeBatch).
const TrustedBatch = 16

// writeBatch writes the tasks, steps and edges of a checked batch inside transaction tx.
func writeBatch(ctx context.Context, tx *store.Store, items []batchItem, regs map[*template.Template]template.Registration) (BatchResult, error) {
	// One row per distinct identity, in identity order (the lock order across batches).
	first := make(map[string]int, len(items))
	var order []int
	for i, it := range items {
		if _, ok := first[it.identity]; !ok {
			first[it.identity] = i
			order = append(order, i)
		}
	}
	sort.Slice(order, func(a, b int) bool { return items[order[a]].identity < items[order[b]].identity })
	n := len(order)
	named := make([]int64, n)
	initiators, sources, reasons := make([]string, n), make([]string, n), make([]string, n)
	tags, contexts, identities := make([]string, n), make([]string, n), make([]string, n)
	for j, i := range order {
		it := items[i]
		named[j] = regs[it.tpl].NamedTaskID
		initiators[j], sources[j], reasons[j] = it.req.Initiator, it.req.SourceSystem, it.req.Reason
		tags[j], contexts[j], identities[j] = string(it.tags), string(it.context), it.identity
	}
	// Every reference written below is made true here: the tasks' named tasks are registered,
	// and the steps and edges are the new tasks' own (see store.TrustReferences). A small batch
	// keeps its checks: turning them off resets the connection's cached plans, which costs more
	// than a few lookups. Checked or not, the batch's statements, its foreign-key checks among
	// them, are planned once per connection (store.PlanBulkWrite).
	if _, err := tx.PlanBulkWrite(ctx, n >= TrustedBatch); err != nil {
		return BatchResult{}, err
	}
	taskOf, err := tx.InsertTasks(ctx, store.NewTasks{NamedTaskIDs: named, Initiators: initiators, SourceSystems: sources,
		Reasons: reasons, Tags: tags, Contexts: contexts, Identities: identities})
	if err != nil {
		return BatchResult{}, fmt.Errorf("writing tasks: %w", err)
	}
	newTask := make(map[string]bool, n)
	for identity := range taskOf {
		newTask[identity] = true
	}

	// Keys already taken: a committed task holds each (ON CONFLICT waited for any concurrent
	// insert of the same key to finish).
	var taken []string
	for _, id := range identities {
		if !newTask[id] {
			taken = append(taken, id)
		}
	}
	var bad []ItemError
	if len(taken) > 0 {
		existing, err := tx.TasksByIdentity(ctx, taken)
		if err != nil {
			return BatchResult{}, fmt.Errorf("reading the tasks of idempotency keys: %w", err)
		}
		for _, id := range taken {
			i := first[id]
			t, ok := existing[id]
			if !ok {
				return BatchResult{}, fmt.Errorf("reading the task of idempotency key %q: not found", items[i].req.IdempotencyKey)
			}
			taskOf[id] = t.TaskID
		}
		for i, it := range items {
			if t, ok := existing[it.identity]; ok && t.NamedTaskID != regs[it.tpl].NamedTaskID {
				bad = append(bad, ItemError{i, keyReused(it.req.IdempotencyKey, t.TaskID, it.tpl)})
			}
		}
		if len(bad) > 0 {
			return BatchResult{Errors: bad}, nil
		}
	}

	if err := insertBatchSteps(ctx, tx, items, order, regs, taskOf, newTask); err != nil {
		return BatchResult{}, err
	}
	tasks := make([]BatchTask, len(items))
	for i, it := range items {
		tasks[i] = BatchTask{TaskID: taskOf[it.identity], Created: newTask[it.identity] && first[it.identity] == i}
	}
	return BatchResult{Tasks: tasks}, nil
}

// keyedTasks reads the tasks that already hold the keys of the batch (no statement when no
// request has a key).
func (s *Service) keyedTasks(ctx context.Context, items []batchItem) (map[string]store.KeyedTask, error) {
	var identities []string
	for _, it := range items {
		if it.req.IdempotencyKey != "" {
			identities = append(identities, it.identity)
		}
	}
	if len(identities) == 0 {
		return nil, nil
	}
	rows, err := s.store.KeyedTasks(ctx, identities)
	if err != nil {
		return nil, fmt.Errorf("reading the tasks of idempotency keys: %w", err)
	}
	out := make(map[string]store.KeyedTask, len(rows))
	for _, r := range rows {
		out[r.IdentityHash] = r
	}
	return out, nil
}

// reusedKeys lists the requests whose key is held by a task of another template.
func reusedKeys(items []batchItem, known map[string]store.KeyedTask) []ItemError {
	var bad []ItemError
	for i, it := range items {
		k, ok := known[it.identity]
		if ok && (k.Namespace != it.tpl.Namespace || k.Name != it.tpl.Name || k.Version != it.tpl.Version) {
			bad = append(bad, ItemError{i, keyReused(it.req.IdempotencyKey, k.TaskID, it.tpl)})
		}
	}
	return bad
}

// allKnown returns the outcome of a batch whose every request's key already has its task, or
// nil when some request creates a task.
func allKnown(items []batchItem, known map[string]store.KeyedTask) []BatchTask {
	tasks := make([]BatchTask, len(items))
	for i, it := range items {
		k, ok := known[it.identity]
		if !ok {
			return nil
		}
		tasks[i] = BatchTask{TaskID: k.TaskID}
	}
	return tasks
}

// insertBatchSteps writes the steps of every new task of the batch, with their DAG depth taken
// from the template and their number of parents (each a step of the template's Edges), and
// their edges, in one statement (see store.InsertSteps): the template is acyclic (checked when
// it was loaded) and both ends of every edge are steps of one new task.
func insertBatchSteps(ctx context.Context, tx *store.Store, items []batchItem, order []int, regs map[*template.Template]template.Registration,
	taskOf map[string]int64, newTask map[string]bool) error {
	var steps store.NewSteps
	var edges store.NewEdges
	depthCache := make(map[*template.Template]dagDepths)
	for _, i := range order {
		it := items[i]
		if !newTask[it.identity] {
			continue
		}
		taskID, regn := taskOf[it.identity], regs[it.tpl]
		d, ok := depthCache[it.tpl]
		if !ok {
			d = templateDepths(it.tpl)
			depthCache[it.tpl] = d
		}
		for k, s := range it.tpl.Steps {
			id, ok := regn.NamedStepIDs[s.Name]
			if !ok {
				return fmt.Errorf("step %q of %s has no registered named step", s.Name, it.tpl.Key())
			}
			steps.TaskIDs, steps.NamedStepIDs = append(steps.TaskIDs, taskID), append(steps.NamedStepIDs, id)
			steps.Retryable, steps.Skippable = append(steps.Retryable, s.Retryable), append(steps.Skippable, s.Skippable)
			steps.RetryLimits, steps.Inputs = append(steps.RetryLimits, int32(s.RetryLimit)), append(steps.Inputs, string(s.Inputs))
			steps.Levels, steps.Mins = append(steps.Levels, d.level[k]), append(steps.Mins, d.minDepth[k])
			steps.Parents = append(steps.Parents, int32(len(s.DependsOn)))
		}
		for _, e := range it.tpl.Edges() {
			edges.TaskIDs = append(edges.TaskIDs, taskID)
			edges.FromNamed, edges.ToNamed = append(edges.FromNamed, regn.NamedStepIDs[e.From]), append(edges.ToNamed, regn.NamedStepIDs[e.To])
		}
	}
	if len(steps.TaskIDs) == 0 {
		return nil
	}
	got, err := tx.InsertSteps(ctx, steps, edges)
	if err != nil {
		return fmt.Errorf("writing steps and edges: %w", err)
	}
	if got != int64(len(edges.TaskIDs)) {
		return fmt.Errorf("writing edges: %d of %d written", got, len(edges.TaskIDs))
	}
	return nil
}

// dagDepths are the stored DAG depths of a template's steps, in declaration order.
type dagDepths struct{ level, minDepth []int32 }

// templateDepths computes each step's dependency_level (longest path from a root) and
// min_depth_from_root (shortest path from any root), as the edges trigger of migration 00002
// stores them. The template is acyclic (checked when it was loaded).
func templateDepths(tpl *template.Template) dagDepths {
	n := len(tpl.Steps)
	d := dagDepths{level: make([]int32, n), minDepth: make([]int32, n)}
	index := make(map[string]int, n)
	for i, s := range tpl.Steps {
		index[s.Name] = i
	}
	done := make([]bool, n)
	var visit func(i int)
	visit = func(i int) {
		if done[i] {
			return
		}
		done[i] = true
		for k, p := range tpl.Steps[i].DependsOn {
			j := index[p]
			visit(j)
			d.level[i] = max(d.level[i], d.level[j]+1)
			if k == 0 || d.minDepth[j]+1 < d.minDepth[i] {
				d.minDepth[i] = d.minDepth[j] + 1
			}
		}
	}
	for i := range tpl.Steps {
		visit(i)
	}
	return d
}
