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

// Page size bounds of Query.tasks.
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
	req := pageRequest{first: defaultPageSize}
	if first != nil {
		req.first = *first
	}
	if req.first < 1 || req.first > maxPageSize {
		return req, apierr.Validationf("first must be between 1 and %d, got %d", maxPageSize, req.first)
	}
	if after != nil && *after != "" {
		id, err := decodeCursor(*after)
		if err != nil {
			return req, err
		}
		req.beforeID = id
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

// connection builds a page from up to first+1 rows: the extra row only says there is more.
func connection(rows []models.TaskRecord, first int) *model.TaskConnection {
	more := len(rows) > first
	if more {
		rows = rows[:first]
	}
	c := &model.TaskConnection{Edges: make([]model.TaskEdge, len(rows)), Nodes: rows,
		PageInfo: &model.PageInfo{HasNextPage: more}}
	for i := range rows {
		c.Edges[i] = model.TaskEdge{Cursor: encodeCursor(rows[i].TaskID), Node: &rows[i]}
	}
	if len(rows) > 0 {
		end := c.Edges[len(rows)-1].Cursor
		c.PageInfo.EndCursor = &end
	}
	return c
}

const cursorPrefix = "task:"

func encodeCursor(taskID int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(taskID, 10)))
}

func decodeCursor(c string) (int64, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil && strings.HasPrefix(string(raw), cursorPrefix) {
		id, perr := strconv.ParseInt(strings.TrimPrefix(string(raw), cursorPrefix), 10, 64)
		if perr == nil && id > 0 {
			return id, nil
		}
	}
	return 0, apierr.Validationf("after %q is not a cursor returned by tasks", c)
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
