package models

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/db"
	"github.com/taskerhq/tasker/internal/database"
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

// StepReadinessStatus is one row of tasker_step_readiness_statuses (docs/SEMANTICS.md §3):
// whether a step can run now and, when it cannot, why.
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
	BlockingReason        *BlockingReason
}

func (StepReadinessStatus) TableName() string { return db.StepReadinessStatuses }

// StepDagRelationship is one row of tasker_step_dag_relationships (docs/SEMANTICS.md §4).
type StepDagRelationship struct {
	readOnly         `gorm:"-"`
	WorkflowStepID   int64 `gorm:"primaryKey"`
	TaskID           int64
	NamedStepID      int64
	ParentStepIDs    []int64 `gorm:"column:parent_step_ids;type:jsonb;serializer:json"`
	ChildStepIDs     []int64 `gorm:"column:child_step_ids;type:jsonb;serializer:json"`
	ParentCount      int
	ChildCount       int
	IsRootStep       bool
	IsLeafStep       bool
	MinDepthFromRoot int
	DependencyLevel  int
}

func (StepDagRelationship) TableName() string { return db.StepDagRelationships }

// TaskExecutionContext is one row of tasker_task_execution_contexts (docs/SEMANTICS.md §5).
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
	ExecutionStatus         ExecutionStatus
	RecommendedAction       RecommendedAction
	CompletionPercentage    float64
	HealthStatus            HealthStatus
}

func (TaskExecutionContext) TableName() string { return db.TaskExecutionContexts }

// TaskWorkflowSummary is one row of tasker_task_workflow_summaries (docs/SEMANTICS.md §6): the
// execution context plus the task's roots, ready and blocked steps.
type TaskWorkflowSummary struct {
	readOnly             `gorm:"-"`
	TaskExecutionContext `gorm:"embedded"`
	RootStepIDs          []int64 `gorm:"column:root_step_ids;type:jsonb;serializer:json"`
	RootStepCount        int
	ReadyStepIDs         []int64          `gorm:"column:ready_step_ids;type:jsonb;serializer:json"`
	BlockedStepIDs       []int64          `gorm:"column:blocked_step_ids;type:jsonb;serializer:json"`
	BlockingReasons      []BlockingReason `gorm:"column:blocking_reasons;type:jsonb;serializer:json"`
	MaxDependencyLevel   int
	ParallelismPotential ParallelismPotential
}

func (TaskWorkflowSummary) TableName() string { return db.TaskWorkflowSummaries }

// ReadinessByStepIDs reads the readiness rows of the given steps, in step id order.
func ReadinessByStepIDs(ctx context.Context, db *gorm.DB, stepIDs []int64) ([]StepReadinessStatus, error) {
	return scanByIDs(ctx, db, "reading readiness by step id", readinessColumns, readReadiness, stepIDs,
		`SELECT * FROM tasker_read_readiness(false, $1)`)
}

// ReadinessByTaskIDs reads the readiness rows of every step of the given tasks, ordered by
// task id then step id.
func ReadinessByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]StepReadinessStatus, error) {
	return scanByIDs(ctx, db, "reading readiness by task id", readinessColumns, readReadiness, taskIDs,
		`SELECT * FROM tasker_read_readiness(true, $1)`)
}

// DagByStepIDs reads the DAG rows of the given steps, in step id order.
func DagByStepIDs(ctx context.Context, db *gorm.DB, stepIDs []int64) ([]StepDagRelationship, error) {
	return scanByIDs(ctx, db, "reading DAG rows by step id", dagColumns, readDag, stepIDs,
		`SELECT * FROM tasker_read_dags(false, $1)`)
}

// DagByTaskIDs reads the DAG rows of every step of the given tasks, by task id then step id.
func DagByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]StepDagRelationship, error) {
	return scanByIDs(ctx, db, "reading DAG rows by task id", dagColumns, readDag, taskIDs,
		`SELECT * FROM tasker_read_dags(true, $1)`)
}

// ExecutionContextsByTaskIDs reads the execution contexts of the given tasks, by task id.
func ExecutionContextsByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]TaskExecutionContext, error) {
	return readView[TaskExecutionContext](ctx, db, "tasker_read_execution_contexts(?)", taskIDs)
}

// WorkflowSummariesByTaskIDs reads the workflow summaries of the given tasks, by task id.
func WorkflowSummariesByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]TaskWorkflowSummary, error) {
	return readView[TaskWorkflowSummary](ctx, db, "tasker_read_workflow_summaries(?)", taskIDs)
}

// readView runs one statement, SELECT * FROM <call>, where call is one of the view-reading
// functions of db/migrations/00037_read_functions.sql with one ? for ids. Each function's
// statement is the view filtered by = ANY(ids) on task_id or workflow_step_id, so that the
// filter reaches the view's indexes, planned once per connection.
func readView[T any](ctx context.Context, db *gorm.DB, call string, ids []int64) ([]T, error) {
	var rows []T
	if len(ids) == 0 {
		return rows, nil
	}
	if err := db.WithContext(ctx).Raw("SELECT * FROM "+call, database.Array[int64](ids)).Scan(&rows).Error; err != nil {
		var zero T
		return nil, fmt.Errorf("reading %T through %s: %w", zero, call, err)
	}
	return rows, nil
}

// StepDetail is a step with its readiness row and its DAG row, read at once by
// StepDetailsByTaskIDs (or TaskDetailByID).
type StepDetail struct {
	Step      StepRecord
	Readiness StepReadinessStatus
	Dag       StepDagRelationship
}

// StepDetailsByTaskIDs reads every step of the given tasks with its readiness and DAG rows,
// by task id then step id: one statement where StepsByTaskIDs, ReadinessByTaskIDs and
// DagByTaskIDs are three, through tasker_read_step_details
// (db/migrations/00039_read_step_details.sql).
func StepDetailsByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]StepDetail, error) {
	return scanByIDs(ctx, db, "reading step details by task id", stepDetailColumns, readStepDetail, taskIDs,
		`SELECT * FROM tasker_read_step_details(true, $1)`)
}
