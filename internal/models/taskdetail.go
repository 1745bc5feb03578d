package models

import (
	"context"
	"fmt"

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
// when the task does not exist. The rows are scanned without GORM's reflection (rowscan.go).
func TaskDetailByID(ctx context.Context, db *gorm.DB, id int64, parts TaskDetailParts) (*TaskDetail, error) {
	rows, err := db.Statement.ConnPool.QueryContext(ctx, `SELECT * FROM tasker_read_task_detail($1, $2, $3, $4, $5)`,
		id, parts.TaskTransitions, parts.Steps, parts.Details, parts.StepTransitions)
	if err != nil {
		return nil, fmt.Errorf("reading task %d in detail: %w", id, err)
	}
	defer rows.Close()
	var d *TaskDetail
	r, dest := newRawRow(colEnd)
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
			d = &TaskDetail{Task: r.task(colTask)}
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
				Transition: r.transition(colTransition), TaskID: r.int(colTransition + 2)}})
		case detailStep:
			s, err := r.stepDetail(colStep, parts.Details)
			if err != nil {
				return nil, fmt.Errorf("reading task %d in detail: %w", id, err)
			}
			d.Steps = append(d.Steps, s)
		case detailStepTransition:
			d.StepTransitions = append(d.StepTransitions, StepTransitionRecord{
				WorkflowStepTransition: WorkflowStepTransition{Transition: r.transition(colTransition), WorkflowStepID: r.int(colTransition + 1)},
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
// The task group is a row of tasker_read_tasks and the step group one of
// tasker_read_step_details.
const (
	colTask       = 1
	colTransition = colTask + taskColumns
	colStep       = colTransition + 10
	colEnd        = colStep + stepDetailColumns
)
