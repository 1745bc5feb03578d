package resolvers

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/taskerhq/tasker/graph/apierr"
	"github.com/taskerhq/tasker/graph/loaders"
	"github.com/taskerhq/tasker/graph/model"
	"github.com/taskerhq/tasker/internal/auth"
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

// createTask translates the input and delegates to orchestration.CreateTask.
func (r *Resolver) createTask(ctx context.Context, in model.CreateTaskInput) (*models.TaskRecord, error) {
	task, _, err := orchestration.CreateTask(ctx, r.DB, r.Templates, orchestration.CreateTaskRequest{
		Namespace:      deref(in.Namespace),
		Name:           in.Name,
		Version:        deref(in.Version),
		Context:        json.RawMessage(in.Context),
		Initiator:      initiatorOf(ctx, in.Initiator),
		SourceSystem:   deref(in.SourceSystem),
		Reason:         deref(in.Reason),
		Tags:           json.RawMessage(in.Tags),
		IdempotencyKey: deref(in.IdempotencyKey),
	})
	if err != nil {
		return nil, err
	}
	return r.taskAfter(ctx, task.TaskID)
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
		return nil, apierr.Validationf("resolveStepManually of step %d needs a reason", id)
	}
	return r.stepAction(ctx, id, func() error {
		return orchestration.ResolveStepManually(ctx, r.DB, id, *reason, actionMeta(ctx))
	})
}
