package resolvers

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/taskerhq/tasker/graph/model"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
)

// Page size bounds of Query.tasks and Query.steps.
const (
	defaultPageSize = 20
	maxPageSize     = 500
)

// pageRequest is a validated request for one page of a connection field: the filter of its
// rows, the page size, and the id the page starts below (0: from the newest).
type pageRequest[F any] struct {
	filter   F
	first    int
	beforeID int64
}

// parseTasksPage validates a Query.tasks request.
func parseTasksPage(filter *model.TaskFilter, first *int, after *string) (pageRequest[models.TaskFilter], error) {
	req, err := parsePage[models.TaskFilter](first, after, taskCursor)
	if err != nil || filter == nil {
		return req, err
	}
	req.filter = models.TaskFilter{
		Namespace:     deref(filter.Namespace),
		NamedTask:     deref(filter.NamedTask),
		Version:       deref(filter.Version),
		Statuses:      filter.Status,
		CreatedAfter:  filter.CreatedAfter,
		CreatedBefore: filter.CreatedBefore,
	}
	return req, nil
}

// parseStepsPage validates a Query.steps request.
func parseStepsPage(filter *model.StepFilter, first *int, after *string) (pageRequest[models.StepFilter], error) {
	req, err := parsePage[models.StepFilter](first, after, stepCursor)
	if err != nil || filter == nil {
		return req, err
	}
	if filter.TaskID != nil && *filter.TaskID <= 0 {
		return req, errs.E(errs.Invalid, "taskId must be positive, got %d", *filter.TaskID)
	}
	req.filter = models.StepFilter{
		Ready:           filter.Ready,
		States:          filter.State,
		BlockingReasons: filter.BlockingReason,
		Namespace:       deref(filter.Namespace),
		TaskID:          deref64(filter.TaskID),
	}
	return req, nil
}

// parsePage validates the page size and decodes the cursor (of kind c) of a connection field.
func parsePage[F any](first *int, after *string, c cursorKind) (pageRequest[F], error) {
	req := pageRequest[F]{first: defaultPageSize}
	if first != nil {
		req.first = *first
	}
	if req.first < 1 || req.first > maxPageSize {
		return req, errs.E(errs.Invalid, "first must be between 1 and %d, got %d", maxPageSize, req.first)
	}
	var err error
	if after != nil && *after != "" {
		req.beforeID, err = c.decode(*after)
	}
	return req, err
}

// connection builds a page from up to first+1 rows: the extra row only says there is more.
func connection(rows []models.TaskRecord, first int) *model.TaskConnection {
	more := len(rows) > first
	if more {
		rows = rows[:first]
	}
	edges, info := pageOf(rows, more, taskCursor, func(r *models.TaskRecord) int64 { return r.TaskID },
		func(cursor string, r *models.TaskRecord) model.TaskEdge {
			return model.TaskEdge{Cursor: cursor, Node: r}
		})
	return &model.TaskConnection{Edges: edges, Nodes: rows, PageInfo: info}
}

// stepConnection builds a page of steps; more says that rows beyond these match.
func stepConnection(steps []models.StepRecord, more bool) *model.StepConnection {
	edges, info := pageOf(steps, more, stepCursor, func(r *models.StepRecord) int64 { return r.WorkflowStepID },
		func(cursor string, r *models.StepRecord) model.StepEdge {
			return model.StepEdge{Cursor: cursor, Node: r}
		})
	return &model.StepConnection{Edges: edges, Nodes: steps, PageInfo: info}
}

// pageOf returns the edges of the nodes of a page (each with the cursor of its id) and the
// page info, whose end cursor is the last edge's.
func pageOf[N, E any](nodes []N, more bool, c cursorKind, id func(*N) int64, edge func(string, *N) E) ([]E, *model.PageInfo) {
	edges := make([]E, len(nodes))
	info := &model.PageInfo{HasNextPage: more}
	for i := range nodes {
		cursor := c.encode(id(&nodes[i]))
		edges[i] = edge(cursor, &nodes[i])
		if i == len(nodes)-1 {
			info.EndCursor = &cursor
		}
	}
	return edges, info
}

// cursorKind is the opaque cursor of one connection field: base64url of "<prefix>:<id>". A
// cursor of one field is refused by another.
type cursorKind struct{ prefix, field string }

var (
	taskCursor = cursorKind{prefix: "task:", field: "tasks"}
	stepCursor = cursorKind{prefix: "step:", field: "steps"}
)

func (k cursorKind) encode(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(k.prefix + strconv.FormatInt(id, 10)))
}

func (k cursorKind) decode(c string) (int64, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil && strings.HasPrefix(string(raw), k.prefix) {
		id, perr := strconv.ParseInt(strings.TrimPrefix(string(raw), k.prefix), 10, 64)
		if perr == nil && id > 0 {
			return id, nil
		}
	}
	return 0, errs.E(errs.Invalid, "after %q is not a cursor returned by %s", c, k.field)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func deref64(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
