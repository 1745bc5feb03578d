package resolvers

import (
	"context"

	"github.com/taskerhq/tasker/graph/loaders"
	"github.com/taskerhq/tasker/graph/model"
	"github.com/taskerhq/tasker/internal/models"
)

// tasksPage validates a Query.tasks request and reads one page (one statement).
func (r *Resolver) tasksPage(ctx context.Context, filter *model.TaskFilter, first *int, after *string) (*model.TaskConnection, error) {
	req, err := parsePageRequest(filter, first, after)
	if err != nil {
		return nil, err
	}
	rows, err := models.TasksPage(ctx, r.DB, req.filter, req.beforeID, req.first+1)
	if err != nil {
		return nil, err
	}
	page := connection(rows, req.first)
	loaders.PrefetchTasks(ctx, page.Nodes)
	return page, nil
}
