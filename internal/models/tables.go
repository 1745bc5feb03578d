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

// Transition is the row of a state machine's move that task and step transitions share:
// append-only, numbered by SortKey within its task or step, MostRecent on the current one.
type Transition struct {
	ID         int64 `gorm:"primaryKey"`
	ToState    State
	FromState  *State
	Metadata   json.RawMessage `gorm:"type:jsonb"`
	SortKey    int
	MostRecent bool
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// TaskTransition is one move of a task's state machine.
type TaskTransition struct {
	Transition `gorm:"embedded"`
	TaskID     int64
}

func (TaskTransition) TableName() string { return "tasker_task_transitions" }

// WorkflowStepTransition is one move of a step's state machine.
type WorkflowStepTransition struct {
	Transition     `gorm:"embedded"`
	WorkflowStepID int64
}

func (WorkflowStepTransition) TableName() string { return "tasker_workflow_step_transitions" }
