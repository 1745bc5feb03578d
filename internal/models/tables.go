package models

import (
	"encoding/json"
	"time"
)

// TaskNamespace groups named tasks. A "default" namespace always exists.
type TaskNamespace struct {
	TaskNamespaceID int64 `gorm:"primaryKey"`
	Name            string
	Description     *string
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

func (TaskNamespace) TableName() string { return "tasker_task_namespaces" }

// NamedTask is a task template: unique on (namespace, name, version).
type NamedTask struct {
	NamedTaskID     int64 `gorm:"primaryKey"`
	TaskNamespaceID int64
	Name            string
	Version         string
	Description     *string
	Configuration   json.RawMessage `gorm:"type:jsonb"`
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

func (NamedTask) TableName() string { return "tasker_named_tasks" }

// DependentSystem is the external system a step talks to.
type DependentSystem struct {
	DependentSystemID int64 `gorm:"primaryKey"`
	Name              string
	Description       *string
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

func (DependentSystem) TableName() string { return "tasker_dependent_systems" }

// NamedStep is a step type, unique on (dependent system, name).
type NamedStep struct {
	NamedStepID       int64 `gorm:"primaryKey"`
	DependentSystemID int64
	Name              string
	Description       *string
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

func (NamedStep) TableName() string { return "tasker_named_steps" }

// NamedTaskNamedStep says which step types a task type uses, with per-template retry defaults.
type NamedTaskNamedStep struct {
	ID                int64 `gorm:"primaryKey"`
	NamedTaskID       int64
	NamedStepID       int64
	Skippable         bool
	DefaultRetryable  bool
	DefaultRetryLimit int
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

func (NamedTaskNamedStep) TableName() string { return "tasker_named_tasks_named_steps" }

// Task is one run of a named task.
type Task struct {
	TaskID       int64 `gorm:"primaryKey"`
	NamedTaskID  int64
	Complete     bool
	RequestedAt  time.Time
	Initiator    *string
	SourceSystem *string
	Reason       *string
	Tags         json.RawMessage `gorm:"type:jsonb"`
	Context      json.RawMessage `gorm:"type:jsonb"`
	IdentityHash string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

func (Task) TableName() string { return "tasker_tasks" }

// WorkflowStep is one step of a task.
type WorkflowStep struct {
	WorkflowStepID        int64 `gorm:"primaryKey"`
	TaskID                int64
	NamedStepID           int64
	Retryable             bool
	RetryLimit            *int
	Attempts              *int
	LastAttemptedAt       *time.Time
	BackoffRequestSeconds *int
	Processed             bool
	ProcessedAt           *time.Time
	InProcess             bool
	Skippable             bool
	Inputs                json.RawMessage `gorm:"type:jsonb"`
	Results               json.RawMessage `gorm:"type:jsonb"`
	CreatedAt             time.Time
	UpdatedAt             time.Time
}

func (WorkflowStep) TableName() string { return "tasker_workflow_steps" }

// WorkflowStepEdge says that FromStepID (the parent) provides for ToStepID (the child).
type WorkflowStepEdge struct {
	ID         int64 `gorm:"primaryKey"`
	FromStepID int64
	ToStepID   int64
	Name       string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

func (WorkflowStepEdge) TableName() string { return "tasker_workflow_step_edges" }

// TaskTransition is one append-only move of a task's state machine.
type TaskTransition struct {
	ID         int64 `gorm:"primaryKey"`
	TaskID     int64
	ToState    State
	FromState  *State
	Metadata   json.RawMessage `gorm:"type:jsonb"`
	SortKey    int
	MostRecent bool
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

func (TaskTransition) TableName() string { return "tasker_task_transitions" }

// WorkflowStepTransition is one append-only move of a step's state machine.
type WorkflowStepTransition struct {
	ID             int64 `gorm:"primaryKey"`
	WorkflowStepID int64
	ToState        State
	FromState      *State
	Metadata       json.RawMessage `gorm:"type:jsonb"`
	SortKey        int
	MostRecent     bool
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

func (WorkflowStepTransition) TableName() string { return "tasker_workflow_step_transitions" }

// AnnotationType names a kind of task annotation.
type AnnotationType struct {
	AnnotationTypeID int64 `gorm:"primaryKey"`
	Name             string
	Description      *string
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

func (AnnotationType) TableName() string { return "tasker_annotation_types" }

// TaskAnnotation is a free-form jsonb note on a task.
type TaskAnnotation struct {
	TaskAnnotationID int64 `gorm:"primaryKey"`
	TaskID           int64
	AnnotationTypeID int64
	Annotation       json.RawMessage `gorm:"type:jsonb"`
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

func (TaskAnnotation) TableName() string { return "tasker_task_annotations" }
