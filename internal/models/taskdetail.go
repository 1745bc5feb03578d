package models

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"gorm.io/gorm"
)

// TaskDetailParts says what TaskDetailByID reads with the task.
type TaskDetailParts struct {
	TaskTransitions bool // the task's transitions
	Steps           bool // the task's steps
	Details         bool // with Steps: each step's readiness and DAG rows
	StepTransitions bool // the transitions of the task's steps
}

// TaskDetail is one task with what TaskDetailByID read of it. The parts not asked for are
// nil.
type TaskDetail struct {
	Task        TaskRecord
	Transitions []TaskTransitionRecord // by sort key
	// Steps are by step id; their Readiness and Dag are zero unless Details was asked for.
	Steps           []StepDetail
	StepTransitions []StepTransitionRecord // by step id then sort key
}

// TaskDetailByID reads the task id and the parts of it that parts asks for in one statement,
// whatever the number of its steps and transitions, through tasker_read_task_detail
// (db/migrations/00040_read_task_detail.sql). Every part holds exactly what the separate
// readers return (TasksByIDs, TaskTransitionsByTaskIDs, StepDetailsByTaskIDs or
// StepsByTaskIDs, StepTransitionsByTaskIDs), in their order. It returns nil, and no error,
// when the task does not exist. The rows are scanned without GORM's reflection: this read
// serves the API's most frequent request for one task.
func TaskDetailByID(ctx context.Context, db *gorm.DB, id int64, parts TaskDetailParts) (*TaskDetail, error) {
	rows, err := db.Statement.ConnPool.QueryContext(ctx,
		`SELECT * FROM tasker_read_task_detail($1, $2, $3, $4, $5)`,
		id, parts.TaskTransitions, parts.Steps, parts.Details, parts.StepTransitions)
	if err != nil {
		return nil, fmt.Errorf("reading task %d in detail: %w", id, err)
	}
	defer rows.Close()
	var d *TaskDetail
	r, dest := newDetailRow(colEnd)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("reading task %d in detail: %w", id, err)
		}
		kind := r.int(0)
		if d == nil && kind != detailTask {
			return nil, fmt.Errorf("reading task %d in detail: a row of kind %d came before the task", id, kind)
		}
		switch kind {
		case detailTask:
			d = &TaskDetail{Task: r.task()}
			if parts.TaskTransitions {
				d.Transitions = []TaskTransitionRecord{}
			}
			if parts.Steps {
				d.Steps = []StepDetail{}
			}
			if parts.StepTransitions {
				d.StepTransitions = []StepTransitionRecord{}
			}
		case detailTaskTransition:
			d.Transitions = append(d.Transitions, TaskTransitionRecord{TaskTransition: TaskTransition{
				Transition: r.transition(), TaskID: r.int(colTransition + 2)}})
		case detailStep:
			s, err := r.stepDetail(colStep, parts.Details)
			if err != nil {
				return nil, fmt.Errorf("reading task %d in detail: %w", id, err)
			}
			d.Steps = append(d.Steps, s)
		case detailStepTransition:
			d.StepTransitions = append(d.StepTransitions, StepTransitionRecord{
				WorkflowStepTransition: WorkflowStepTransition{Transition: r.transition(), WorkflowStepID: r.int(colTransition + 1)},
				TaskID:                 r.int(colTransition + 2)})
		default:
			return nil, fmt.Errorf("reading task %d in detail: unknown row kind %d", id, kind)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading task %d in detail: %w", id, err)
	}
	return d, nil
}

// The kinds of the rows of tasker_read_task_detail.
const (
	detailTask           = 1
	detailTaskTransition = 2
	detailStep           = 3
	detailStepTransition = 4
)

// The first column of each group of tasker_read_task_detail's columns; colEnd is their number.
// The step group is a row of tasker_read_step_details: stepColumns columns, the step's own,
// then its readiness row, then its DAG row.
const (
	colTask       = 1
	colTransition = colTask + 14
	colStep       = colTransition + 10
	colEnd        = colStep + stepColumns

	stepReadiness = 18                 // the first readiness column, from a step group's first
	stepDag       = stepReadiness + 19 // the first DAG column
	stepColumns   = stepDag + 11       // the columns of tasker_read_step_details
)

// detailRow is one row of a read function as the driver returns it: nil for null, else int64,
// bool, string, time.Time or []byte (json).
type detailRow struct {
	v []any
}

// newDetailRow returns a row of n columns and the scan destinations that fill it.
func newDetailRow(n int) (*detailRow, []any) {
	r := &detailRow{v: make([]any, n)}
	dest := make([]any, n)
	for i := range r.v {
		dest[i] = &r.v[i]
	}
	return r, dest
}

func (r *detailRow) int(i int) int64 {
	n, _ := r.v[i].(int64)
	return n
}

func (r *detailRow) intPtr(i int) *int {
	n, ok := r.v[i].(int64)
	if !ok {
		return nil
	}
	v := int(n)
	return &v
}

func (r *detailRow) bool(i int) bool {
	b, _ := r.v[i].(bool)
	return b
}

func (r *detailRow) str(i int) string {
	switch s := r.v[i].(type) {
	case string:
		return s
	case []byte:
		return string(s)
	}
	return ""
}

func (r *detailRow) strPtr(i int) *string {
	if r.v[i] == nil {
		return nil
	}
	s := r.str(i)
	return &s
}

func (r *detailRow) time(i int) time.Time {
	t, _ := r.v[i].(time.Time)
	return t
}

func (r *detailRow) timePtr(i int) *time.Time {
	t, ok := r.v[i].(time.Time)
	if !ok {
		return nil
	}
	return &t
}

// json returns a json column as it came (nil for null).
func (r *detailRow) json(i int) json.RawMessage {
	switch b := r.v[i].(type) {
	case []byte:
		return b
	case string:
		return json.RawMessage(b)
	}
	return nil
}

// ids decodes a json array of step ids.
func (r *detailRow) ids(i int) ([]int64, error) {
	raw := r.json(i)
	if raw == nil {
		return nil, nil
	}
	ids, err := parseIDArray(raw)
	if err != nil {
		return nil, fmt.Errorf("column %d: %w", i, err)
	}
	return ids, nil
}

func (r *detailRow) task() TaskRecord {
	c := colTask
	return TaskRecord{
		Task: Task{
			TaskID: r.int(c), NamedTaskID: r.int(c + 1), Complete: r.bool(c + 2), RequestedAt: r.time(c + 3),
			Initiator: r.strPtr(c + 4), SourceSystem: r.strPtr(c + 5), Reason: r.strPtr(c + 6),
			Tags: r.json(c + 7), Context: r.json(c + 8), IdentityHash: r.str(c + 9),
			CreatedAt: r.time(c + 10), UpdatedAt: r.time(c + 11),
		},
		TaskNamespaceID: r.int(c + 12),
		Status:          State(r.str(c + 13)),
	}
}

// transition reads the transition columns shared by task and step transitions.
func (r *detailRow) transition() Transition {
	c := colTransition
	t := Transition{ID: r.int(c), ToState: State(r.str(c + 3)), Metadata: r.json(c + 5),
		SortKey: int(r.int(c + 6)), MostRecent: r.bool(c + 7), CreatedAt: r.time(c + 8), UpdatedAt: r.time(c + 9)}
	if r.v[c+4] != nil {
		from := State(r.str(c + 4))
		t.FromState = &from
	}
	return t
}

// stepDetail reads the step group that starts at column c: the step, and its readiness and
// DAG rows when details.
func (r *detailRow) stepDetail(c int, details bool) (StepDetail, error) {
	first := c
	d := StepDetail{Step: StepRecord{
		WorkflowStep: WorkflowStep{
			WorkflowStepID: r.int(c), TaskID: r.int(c + 1), NamedStepID: r.int(c + 2), Retryable: r.bool(c + 3),
			RetryLimit: r.intPtr(c + 4), Attempts: r.intPtr(c + 5), LastAttemptedAt: r.timePtr(c + 6),
			BackoffRequestSeconds: r.intPtr(c + 7), Processed: r.bool(c + 8), ProcessedAt: r.timePtr(c + 9),
			InProcess: r.bool(c + 10), Skippable: r.bool(c + 11), Inputs: r.json(c + 12), Results: r.json(c + 13),
			CreatedAt: r.time(c + 14), UpdatedAt: r.time(c + 15),
		},
		Name:   r.str(c + 16),
		Status: State(r.str(c + 17)),
	}}
	if !details {
		return d, nil
	}
	c = first + stepReadiness
	d.Readiness = StepReadinessStatus{
		WorkflowStepID: r.int(c), TaskID: r.int(c + 1), NamedStepID: r.int(c + 2), Name: r.str(c + 3),
		CurrentState: State(r.str(c + 4)), DependenciesSatisfied: r.bool(c + 5), RetryEligible: r.bool(c + 6),
		ReadyForExecution: r.bool(c + 7), LastFailureAt: r.timePtr(c + 8), NextRetryAt: r.timePtr(c + 9),
		TotalParents: int(r.int(c + 10)), CompletedParents: int(r.int(c + 11)), Attempts: int(r.int(c + 12)),
		RetryLimit: int(r.int(c + 13)), BackoffRequestSeconds: r.intPtr(c + 14), LastAttemptedAt: r.timePtr(c + 15),
	}
	if r.v[c+16] != nil {
		reason := BlockingReason(r.str(c + 16))
		d.Readiness.BlockingReason = &reason
	}
	c = first + stepDag
	parents, err := r.ids(c + 3)
	if err != nil {
		return d, err
	}
	children, err := r.ids(c + 4)
	if err != nil {
		return d, err
	}
	d.Dag = StepDagRelationship{
		WorkflowStepID: r.int(c), TaskID: r.int(c + 1), NamedStepID: r.int(c + 2),
		ParentStepIDs: parents, ChildStepIDs: children, ParentCount: int(r.int(c + 5)), ChildCount: int(r.int(c + 6)),
		IsRootStep: r.bool(c + 7), IsLeafStep: r.bool(c + 8), MinDepthFromRoot: int(r.int(c + 9)),
		DependencyLevel: int(r.int(c + 10)),
	}
	return d, nil
}

// parseIDArray decodes a JSON array of integers, such as a DAG row's parent_step_ids, without
// reflection; anything else is an error naming the text.
func parseIDArray(raw []byte) ([]int64, error) {
	bad := func() ([]int64, error) { return nil, fmt.Errorf("not a JSON array of integers: %.100s", raw) }
	i := 0
	space := func() {
		for i < len(raw) && (raw[i] == ' ' || raw[i] == '\n' || raw[i] == '\t' || raw[i] == '\r') {
			i++
		}
	}
	space()
	if i == len(raw) || raw[i] != '[' {
		return bad()
	}
	i++
	out := []int64{}
	space()
	if i < len(raw) && raw[i] == ']' {
		i++
		space()
		if i != len(raw) {
			return bad()
		}
		return out, nil
	}
	for {
		space()
		start := i
		if i < len(raw) && raw[i] == '-' {
			i++
		}
		for i < len(raw) && raw[i] >= '0' && raw[i] <= '9' {
			i++
		}
		n, err := strconv.ParseInt(string(raw[start:i]), 10, 64)
		if err != nil {
			return bad()
		}
		out = append(out, n)
		space()
		if i == len(raw) {
			return bad()
		}
		if raw[i] == ']' {
			i++
			space()
			if i != len(raw) {
				return bad()
			}
			return out, nil
		}
		if raw[i] != ',' {
			return bad()
		}
		i++
	}
}
