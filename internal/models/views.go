package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// ErrReadOnly is returned when code tries to write a view-backed read model.
var ErrReadOnly = errors.New("read model is read-only: it is backed by a view")

// readOnly makes a view-backed model refuse every write through GORM. Embedding it gives the
// model GORM hooks that fail before any SQL is sent.
type readOnly struct{}

func (readOnly) BeforeSave(*gorm.DB) error   { return ErrReadOnly }
func (readOnly) BeforeCreate(*gorm.DB) error { return ErrReadOnly }
func (readOnly) BeforeUpdate(*gorm.DB) error { return ErrReadOnly }
func (readOnly) BeforeDelete(*gorm.DB) error { return ErrReadOnly }

// StepReadinessStatus is one row of tasker_step_readiness_statuses (SEMANTICS §3): whether a
// step can run now and, when it cannot, why.
type StepReadinessStatus struct {
	readOnly              `gorm:"-"`
	WorkflowStepID        int64 `gorm:"primaryKey"`
	TaskID                int64
	NamedStepID           int64
	Name                  string
	CurrentState          State
	DependenciesSatisfied bool
	RetryEligible         bool
	ReadyForExecution     bool
	LastFailureAt         *time.Time
	NextRetryAt           *time.Time
	TotalParents          int
	CompletedParents      int
	Attempts              int
	RetryLimit            int
	BackoffRequestSeconds *int
	LastAttemptedAt       *time.Time
	BlockingReason        *string
}

func (StepReadinessStatus) TableName() string { return "tasker_step_readiness_statuses" }

// StepDagRelationship is one row of tasker_step_dag_relationships (SEMANTICS §4).
type StepDagRelationship struct {
	readOnly         `gorm:"-"`
	WorkflowStepID   int64 `gorm:"primaryKey"`
	TaskID           int64
	NamedStepID      int64
	ParentStepIDs    IDList `gorm:"column:parent_step_ids;type:jsonb"`
	ChildStepIDs     IDList `gorm:"column:child_step_ids;type:jsonb"`
	ParentCount      int
	ChildCount       int
	IsRootStep       bool
	IsLeafStep       bool
	MinDepthFromRoot int
	DependencyLevel  int
}

func (StepDagRelationship) TableName() string { return "tasker_step_dag_relationships" }

// TaskExecutionContext is one row of tasker_task_execution_contexts (SEMANTICS §5).
type TaskExecutionContext struct {
	readOnly                `gorm:"-"`
	TaskID                  int64 `gorm:"primaryKey"`
	NamedTaskID             int64
	Status                  State
	TotalSteps              int
	PendingSteps            int
	InProgressSteps         int
	CompletedSteps          int
	FailedSteps             int
	ReadySteps              int
	PermanentlyBlockedSteps int
	ExecutionStatus         string
	RecommendedAction       string
	CompletionPercentage    float64
	HealthStatus            string
}

func (TaskExecutionContext) TableName() string { return "tasker_task_execution_contexts" }

// TaskWorkflowSummary is one row of tasker_task_workflow_summaries (SEMANTICS §6): the
// execution context plus the task's roots, ready and blocked steps.
type TaskWorkflowSummary struct {
	readOnly             `gorm:"-"`
	TaskExecutionContext `gorm:"embedded"`
	RootStepIDs          IDList `gorm:"column:root_step_ids;type:jsonb"`
	RootStepCount        int
	ReadyStepIDs         IDList     `gorm:"column:ready_step_ids;type:jsonb"`
	BlockedStepIDs       IDList     `gorm:"column:blocked_step_ids;type:jsonb"`
	BlockingReasons      StringList `gorm:"column:blocking_reasons;type:jsonb"`
	MaxDependencyLevel   int
	ParallelismPotential string
}

func (TaskWorkflowSummary) TableName() string { return "tasker_task_workflow_summaries" }

// IDList is a jsonb array of ids, read from a view.
type IDList []int64

// Scan implements sql.Scanner for a jsonb array of numbers.
func (l *IDList) Scan(src any) error { return scanJSON(src, l) }

// StringList is a jsonb array of strings, read from a view.
type StringList []string

// Scan implements sql.Scanner for a jsonb array of strings.
func (l *StringList) Scan(src any) error { return scanJSON(src, l) }

func scanJSON(src any, dst any) error {
	var raw []byte
	switch v := src.(type) {
	case nil:
		return nil
	case []byte:
		raw = v
	case string:
		raw = []byte(v)
	default:
		return fmt.Errorf("scanning jsonb: unexpected %T", src)
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("scanning jsonb %s: %w", raw, err)
	}
	return nil
}

// ReadinessByStepIDs reads the readiness rows of the given steps, in step id order.
func ReadinessByStepIDs(ctx context.Context, db *gorm.DB, stepIDs []int64) ([]StepReadinessStatus, error) {
	return readView[StepReadinessStatus](ctx, db, "workflow_step_id", stepIDs, "workflow_step_id")
}

// ReadinessByTaskIDs reads the readiness rows of every step of the given tasks, ordered by
// task id then step id.
func ReadinessByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]StepReadinessStatus, error) {
	return readView[StepReadinessStatus](ctx, db, "task_id", taskIDs, "task_id, workflow_step_id")
}

// DagByStepIDs reads the DAG rows of the given steps, in step id order.
func DagByStepIDs(ctx context.Context, db *gorm.DB, stepIDs []int64) ([]StepDagRelationship, error) {
	return readView[StepDagRelationship](ctx, db, "workflow_step_id", stepIDs, "workflow_step_id")
}

// DagByTaskIDs reads the DAG rows of every step of the given tasks, by task id then step id.
func DagByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]StepDagRelationship, error) {
	return readView[StepDagRelationship](ctx, db, "task_id", taskIDs, "task_id, workflow_step_id")
}

// ExecutionContextsByTaskIDs reads the execution contexts of the given tasks, by task id.
func ExecutionContextsByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]TaskExecutionContext, error) {
	return readView[TaskExecutionContext](ctx, db, "task_id", taskIDs, "task_id")
}

// WorkflowSummariesByTaskIDs reads the workflow summaries of the given tasks, by task id.
func WorkflowSummariesByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]TaskWorkflowSummary, error) {
	return readView[TaskWorkflowSummary](ctx, db, "task_id", taskIDs, "task_id")
}

// readView runs one statement: SELECT * FROM <view> WHERE <column> = ANY($1) ORDER BY <order>.
// The = ANY form lets the planner push the filter into the view and use index access.
func readView[T any](ctx context.Context, db *gorm.DB, column string, ids []int64, order string) ([]T, error) {
	var rows []T
	if len(ids) == 0 {
		return rows, nil
	}
	err := db.WithContext(ctx).Where(column+" = ANY(?::bigint[])", Int64Array(ids)).Order(order).Find(&rows).Error
	if err != nil {
		var zero T
		return nil, fmt.Errorf("reading %T by %s: %w", zero, column, err)
	}
	return rows, nil
}
