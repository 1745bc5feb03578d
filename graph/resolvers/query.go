package resolvers

import (
	"context"

	"github.com/99designs/gqlgen/graphql"

	"github.com/taskerhq/tasker/graph/loaders"
	"github.com/taskerhq/tasker/graph/model"
	"github.com/taskerhq/tasker/internal/models"
)

// tasksPage validates a Query.tasks request and reads one page (one statement). When the
// request selects transitionCursor, the newest task transition id is read first (a second
// statement), so the cursor is never later than the page: every transition the page may not
// show has a larger id.
func (r *Resolver) tasksPage(ctx context.Context, filter *model.TaskFilter, first *int, after *string) (*model.TaskConnection, error) {
	req, err := parseTasksPage(filter, first, after)
	if err != nil {
		return nil, err
	}
	var cursor int64
	if selects(ctx, "transitionCursor") {
		if cursor, err = models.MaxTaskTransitionID(ctx, r.DB); err != nil {
			return nil, err
		}
	}
	rows, err := models.TasksPage(ctx, r.DB, req.filter, req.beforeID, req.first+1)
	if err != nil {
		return nil, err
	}
	page := connection(rows, req.first)
	page.TransitionCursor = cursor
	loaders.PrefetchTasks(ctx, page.Nodes)
	return page, nil
}

// selects reports whether the field being resolved selects the child field name.
func selects(ctx context.Context, name string) bool {
	for _, f := range graphql.CollectFieldsCtx(ctx, nil) {
		if f.Name == name {
			return true
		}
	}
	return false
}

// stepsPage validates a Query.steps request and reads one page: the readiness rows (one
// statement), then the steps and the fields selected on them (one statement per level).
func (r *Resolver) stepsPage(ctx context.Context, filter *model.StepFilter, first *int, after *string) (*model.StepConnection, error) {
	req, err := parseStepsPage(filter, first, after)
	if err != nil {
		return nil, err
	}
	rows, err := models.ReadinessPage(ctx, r.DB, req.filter, req.beforeID, req.first+1)
	if err != nil {
		return nil, err
	}
	more := len(rows) > req.first
	if more {
		rows = rows[:req.first]
	}
	steps, err := loaders.PrefetchStepPage(ctx, rows)
	if err != nil {
		return nil, err
	}
	return stepConnection(steps, more), nil
}
