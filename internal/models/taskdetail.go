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
// (db/migrations/00052_read_task_detail_narrow.sql). Every part holds exactly what the separate
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
		kind := r.int(colKind)
		if d == nil && kind != detailTask {
			return nil, fmt.Errorf("reading task %d in detail: a row of kind %d came before the task", id, kind)
		}
		switch kind {
		case detailTask:
			d = &TaskDetail{Task: r.detailTask()}
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
				Transition: r.detailTransition(), TaskID: r.int(colID + 2)}})
		case detailStep:
			s, err := r.detailStep(parts.Details)
			if err != nil {
				return nil, fmt.Errorf("reading task %d in detail: %w", id, err)
			}
			d.Steps = append(d.Steps, s)
		case detailStepTransition:
			d.StepTransitions = append(d.StepTransitions, StepTransitionRecord{
				WorkflowStepTransition: WorkflowStepTransition{Transition: r.detailTransition(), WorkflowStepID: r.int(colID + 1)},
				TaskID:                 r.int(colID + 2)})
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

// The first column of each group of tasker_read_task_detail's columns, each group of one type
// and shared by the kinds of rows (the migration tables which column holds what for each
// kind); colEnd is their number.
const (
	colKind = 0
	colID   = 1           // 3 bigint
	colStr  = colID + 3   // 5 varchar
	colJSON = colStr + 5  // 4 jsonb
	colTime = colJSON + 4 // 6 timestamptz
	colInt  = colTime + 6 // 9 integer
	colBool = colInt + 9  // 9 boolean
	colEnd  = colBool + 9
)

// detailTask reads the task of a row of kind 1.
func (r *rawRow) detailTask() TaskRecord {
	return TaskRecord{
		Task: Task{
			TaskID: r.int(colID), NamedTaskID: r.int(colID + 1), Complete: r.bool(colBool),
			RequestedAt: r.time(colTime), Initiator: r.strPtr(colStr), SourceSystem: r.strPtr(colStr + 1),
			Reason: r.strPtr(colStr + 2), Tags: r.json(colJSON), Context: r.json(colJSON + 1),
			IdentityHash: r.str(colStr + 3), CreatedAt: r.time(colTime + 1), UpdatedAt: r.time(colTime + 2),
		},
		TaskNamespaceID: r.int(colID + 2),
		Status:          State(r.str(colStr + 4)),
	}
}

// detailTransition reads what task and step transitions (kinds 2 and 4) share.
func (r *rawRow) detailTransition() Transition {
	t := Transition{ID: r.int(colID), ToState: State(r.str(colStr)), Metadata: r.json(colJSON),
		SortKey: int(r.int(colInt)), MostRecent: r.bool(colBool), CreatedAt: r.time(colTime),
		UpdatedAt: r.time(colTime + 1)}
	if r.v[colStr+1] != nil {
		from := State(r.str(colStr + 1))
		t.FromState = &from
	}
	return t
}

// detailStep reads the step of a row of kind 3 and, when details, its readiness and DAG rows,
// whose ids, name, state, attempts, retry limit, backoff and last attempt are the step's.
func (r *rawRow) detailStep(details bool) (StepDetail, error) {
	step := StepRecord{
		WorkflowStep: WorkflowStep{
			WorkflowStepID: r.int(colID), TaskID: r.int(colID + 1), NamedStepID: r.int(colID + 2),
			Retryable: r.bool(colBool), RetryLimit: r.intPtr(colInt), Attempts: r.intPtr(colInt + 1),
			LastAttemptedAt: r.timePtr(colTime), BackoffRequestSeconds: r.intPtr(colInt + 2),
			Processed: r.bool(colBool + 1), ProcessedAt: r.timePtr(colTime + 1), InProcess: r.bool(colBool + 2),
			Skippable: r.bool(colBool + 3), Inputs: r.json(colJSON), Results: r.json(colJSON + 1),
			CreatedAt: r.time(colTime + 2), UpdatedAt: r.time(colTime + 3),
		},
		Name:   r.str(colStr),
		Status: State(r.str(colStr + 1)),
	}
	d := StepDetail{Step: step}
	if !details {
		return d, nil
	}
	d.Readiness = StepReadinessStatus{
		WorkflowStepID: step.WorkflowStepID, TaskID: step.TaskID, NamedStepID: step.NamedStepID,
		Name: step.Name, CurrentState: step.Status, DependenciesSatisfied: r.bool(colBool + 4),
		RetryEligible: r.bool(colBool + 5), ReadyForExecution: r.bool(colBool + 6),
		LastFailureAt: r.timePtr(colTime + 4), NextRetryAt: r.timePtr(colTime + 5),
		TotalParents: int(r.int(colInt + 3)), CompletedParents: int(r.int(colInt + 4)),
		Attempts: int(r.int(colInt + 1)), RetryLimit: int(r.int(colInt)),
		BackoffRequestSeconds: r.intPtr(colInt + 2), LastAttemptedAt: r.timePtr(colTime),
	}
	if r.v[colStr+2] != nil {
		reason := BlockingReason(r.str(colStr + 2))
		d.Readiness.BlockingReason = &reason
	}
	parents, err := r.ids(colJSON + 2)
	if err != nil {
		return d, err
	}
	children, err := r.ids(colJSON + 3)
	if err != nil {
		return d, err
	}
	d.Dag = StepDagRelationship{
		WorkflowStepID: step.WorkflowStepID, TaskID: step.TaskID, NamedStepID: step.NamedStepID,
		ParentStepIDs: parents, ChildStepIDs: children, ParentCount: int(r.int(colInt + 5)),
		ChildCount: int(r.int(colInt + 6)), IsRootStep: r.bool(colBool + 7), IsLeafStep: r.bool(colBool + 8),
		MinDepthFromRoot: int(r.int(colInt + 7)), DependencyLevel: int(r.int(colInt + 8)),
	}
	return d, nil
}
