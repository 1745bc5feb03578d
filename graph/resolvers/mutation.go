package resolvers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/taskerhq/tasker/graph/loaders"
	"github.com/taskerhq/tasker/graph/model"
	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/orchestration"
)

// actionMeta is recorded on the transitions an operator action writes: the source and the
// caller (the API token's id, name and role, under "actor").
func actionMeta(ctx context.Context) map[string]any {
	return auth.ActorMetadata(ctx, map[string]any{"source": "graphql"})
}

// initiatorOf is the task's initiator: the one given, else the name of the caller's token.
func initiatorOf(ctx context.Context, given *string) string {
	if v := deref(given); v != "" {
		return v
	}
	if p, ok := auth.FromContext(ctx); ok && !p.Open {
		return "token:" + p.Name
	}
	return ""
}

// createRequest translates one CreateTaskInput.
func createRequest(ctx context.Context, in model.CreateTaskInput) orchestration.CreateTaskRequest {
	return orchestration.CreateTaskRequest{
		Namespace:      deref(in.Namespace),
		Name:           in.Name,
		Version:        deref(in.Version),
		Context:        json.RawMessage(in.Context),
		Initiator:      initiatorOf(ctx, in.Initiator),
		SourceSystem:   deref(in.SourceSystem),
		Reason:         deref(in.Reason),
		Tags:           json.RawMessage(in.Tags),
		IdempotencyKey: deref(in.IdempotencyKey),
	}
}

// createTask translates the input and delegates to the service's CreateTask.
func (r *Resolver) createTask(ctx context.Context, in model.CreateTaskInput) (*models.TaskRecord, error) {
	task, _, err := r.Service.CreateTask(ctx, createRequest(ctx, in))
	if err != nil {
		return nil, err
	}
	return r.taskAfter(ctx, task.TaskID)
}

// createTasks delegates a batch to the service's CreateTasks and reads the tasks back with
// one statement. Item errors become InputErrors with the code createTask would have given.
func (r *Resolver) createTasks(ctx context.Context, inputs []model.CreateTaskInput) (*model.CreateTasksResult, error) {
	reqs := make([]orchestration.CreateTaskRequest, len(inputs))
	for i, in := range inputs {
		reqs[i] = createRequest(ctx, in)
	}
	res, err := r.Service.CreateTasks(ctx, reqs)
	if err != nil {
		return nil, err
	}
	out := &model.CreateTasksResult{Ok: len(res.Errors) == 0, CreatedCount: res.Created(),
		Items: make([]model.CreateTasksItem, len(inputs))}
	for i := range out.Items {
		out.Items[i].Index = i
	}
	for _, e := range res.Errors {
		out.Items[e.Index].Error = inputError(e.Err)
	}
	if !out.Ok {
		return out, nil
	}
	ids := make([]int64, len(res.Tasks))
	for i, t := range res.Tasks {
		ids[i] = t.TaskID
	}
	loaders.Forget(ctx)
	rows, err := models.TasksByIDs(ctx, r.DB, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[int64]*models.TaskRecord, len(rows))
	for i := range rows {
		byID[rows[i].TaskID] = &rows[i]
	}
	for i, t := range res.Tasks {
		out.Items[i].Task, out.Items[i].Created = byID[t.TaskID], t.Created
		if out.Items[i].Task == nil {
			return nil, fmt.Errorf("task %d of input %d not found after createTasks", t.TaskID, i)
		}
	}
	return out, nil
}

// inputFields maps the fields named by orchestration errors to CreateTaskInput's fields.
var inputFields = map[string]string{
	"template": "name", "source_system": "sourceSystem", "idempotency_key": "idempotencyKey",
}

// inputError describes what is wrong with one input of a batch, with the code and message a
// single createTask would have given.
func inputError(err error) *model.InputError {
	out := &model.InputError{}
	out.Code, out.Message = errs.Describe(err)
	var de *errs.Error
	switch {
	case errs.Is(err, errs.NotFound):
		out.Field = "name"
	case errors.As(err, &de):
		out.Field = de.Field
		if f, ok := inputFields[de.Field]; ok {
			out.Field = f
		}
	}
	return out
}

// taskAfter and stepAfter read an object as it is after a mutation: the response's loader
// caches are dropped first, so nothing read before the mutation is served again.
func (r *Resolver) taskAfter(ctx context.Context, id int64) (*models.TaskRecord, error) {
	loaders.Forget(ctx)
	return loaders.Task(ctx, id)
}

func (r *Resolver) stepAfter(ctx context.Context, id int64) (*models.StepRecord, error) {
	loaders.Forget(ctx)
	return loaders.Step(ctx, id)
}

// stepAction runs an operator action on a step and returns the step after it.
func (r *Resolver) stepAction(ctx context.Context, id int64, action func() error) (*models.StepRecord, error) {
	if err := action(); err != nil {
		return nil, err
	}
	return r.stepAfter(ctx, id)
}

// resolveStep checks the reason (required, as the engine requires it) and resolves the step.
func (r *Resolver) resolveStep(ctx context.Context, id int64, reason *string) (*models.StepRecord, error) {
	if strings.TrimSpace(deref(reason)) == "" {
		return nil, errs.E(errs.Invalid, "resolveStepManually of step %d needs a reason", id)
	}
	return r.stepAction(ctx, id, func() error {
		return r.Service.ResolveStep(ctx, id, *reason, actionMeta(ctx))
	})
}
