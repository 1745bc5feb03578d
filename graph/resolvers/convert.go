package resolvers

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/taskerhq/tasker/graph/apierr"
	"github.com/taskerhq/tasker/graph/model"
	"github.com/taskerhq/tasker/internal/models"
)

// Page size bounds of Query.tasks and Query.steps.
const (
	defaultPageSize = 20
	maxPageSize     = 500
)

// enumValue converts a view label (snake_case) to its GraphQL enum value, refusing a label
// the schema does not know (the view and the schema disagree: an internal error).
func enumValue[E interface {
	~string
	IsValid() bool
}](label string) (E, error) {
	e := E(strings.ToUpper(label))
	if !e.IsValid() {
		return e, fmt.Errorf("converting view label %q to %T: not a value of the enum", label, e)
	}
	return e, nil
}

func enumList[E interface {
	~string
	IsValid() bool
}](labels []string) ([]E, error) {
	out := make([]E, len(labels))
	for i, l := range labels {
		e, err := enumValue[E](l)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

func optionalEnum[E interface {
	~string
	IsValid() bool
}](label *string) (*E, error) {
	if label == nil {
		return nil, nil
	}
	e, err := enumValue[E](*label)
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// blockedSteps zips a summary's blocked step ids with their reasons.
func blockedSteps(s *models.TaskWorkflowSummary) ([]model.BlockedStep, error) {
	if len(s.BlockedStepIDs) != len(s.BlockingReasons) {
		return nil, fmt.Errorf("workflow summary of task %d has %d blocked steps and %d reasons",
			s.TaskID, len(s.BlockedStepIDs), len(s.BlockingReasons))
	}
	out := make([]model.BlockedStep, len(s.BlockedStepIDs))
	for i, id := range s.BlockedStepIDs {
		r, err := enumValue[model.BlockingReason](s.BlockingReasons[i])
		if err != nil {
			return nil, err
		}
		out[i] = model.BlockedStep{StepID: id, BlockingReason: r}
	}
	return out, nil
}

// pageRequest is a validated Query.tasks request.
type pageRequest struct {
	filter   models.TaskFilter
	first    int
	beforeID int64
}

func parsePageRequest(filter *model.TaskFilter, first *int, after *string) (pageRequest, error) {
	n, beforeID, err := parsePage(first, after, taskCursor)
	req := pageRequest{first: n, beforeID: beforeID}
	if err != nil {
		return req, err
	}
	if filter != nil {
		req.filter = models.TaskFilter{
			Namespace:     deref(filter.Namespace),
			NamedTask:     deref(filter.NamedTask),
			Version:       deref(filter.Version),
			Statuses:      filter.Status,
			CreatedAfter:  filter.CreatedAfter,
			CreatedBefore: filter.CreatedBefore,
		}
	}
	return req, nil
}

// stepPageRequest is a validated Query.steps request.
type stepPageRequest struct {
	filter   models.StepFilter
	first    int
	beforeID int64
}

func parseStepPageRequest(filter *model.StepFilter, first *int, after *string) (stepPageRequest, error) {
	n, beforeID, err := parsePage(first, after, stepCursor)
	req := stepPageRequest{first: n, beforeID: beforeID}
	if err != nil {
		return req, err
	}
	if filter != nil {
		req.filter = models.StepFilter{
			Ready:     filter.Ready,
			States:    filter.State,
			Namespace: deref(filter.Namespace),
		}
		for _, r := range filter.BlockingReason {
			req.filter.BlockingReasons = append(req.filter.BlockingReasons, strings.ToLower(string(r)))
		}
		if filter.TaskID != nil {
			if *filter.TaskID <= 0 {
				return req, apierr.Validationf("taskId must be positive, got %d", *filter.TaskID)
			}
			req.filter.TaskID = *filter.TaskID
		}
	}
	return req, nil
}

// parsePage validates the page size and decodes the cursor (of kind c) of a connection field.
func parsePage(first *int, after *string, c cursorKind) (n int, beforeID int64, err error) {
	n = defaultPageSize
	if first != nil {
		n = *first
	}
	if n < 1 || n > maxPageSize {
		return n, 0, apierr.Validationf("first must be between 1 and %d, got %d", maxPageSize, n)
	}
	if after != nil && *after != "" {
		beforeID, err = c.decode(*after)
	}
	return n, beforeID, err
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
	return 0, apierr.Validationf("after %q is not a cursor returned by %s", c, k.field)
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
