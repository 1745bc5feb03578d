package statemachine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
)

// Transition is a written transition of a task or a step.
type Transition struct {
	ID        int64
	Kind      Kind
	OwnerID   int64
	From      *models.State
	To        models.State
	Event     string
	SortKey   int
	Metadata  json.RawMessage
	CreatedAt time.Time
}

// owner describes where a kind of owner and its transitions live.
type owner struct {
	kind             Kind
	table, key       string // owner table and its key column
	transitionsTable string
}

var (
	stepOwner = owner{KindStep, "tasker_workflow_steps", "workflow_step_id", "tasker_workflow_step_transitions"}
	taskOwner = owner{KindTask, "tasker_tasks", "task_id", "tasker_task_transitions"}
)

// TransitionStep moves step stepID to state to, recording metadata (the event name is added
// under "event"). It runs in its own transaction, or inside db's when db is one.
func TransitionStep(ctx context.Context, db *gorm.DB, stepID int64, to models.State, metadata map[string]any) (Transition, error) {
	return move(ctx, db, stepOwner, stepID, to, metadata)
}

// TransitionTask moves task taskID to state to; see TransitionStep.
func TransitionTask(ctx context.Context, db *gorm.DB, taskID int64, to models.State, metadata map[string]any) (Transition, error) {
	return move(ctx, db, taskOwner, taskID, to, metadata)
}

// StepState returns the current state of a step (pending when it has no transition).
func StepState(ctx context.Context, db *gorm.DB, stepID int64) (models.State, error) {
	return currentState(ctx, db, stepOwner, stepID)
}

// TaskState returns the current state of a task (pending when it has no transition).
func TaskState(ctx context.Context, db *gorm.DB, taskID int64) (models.State, error) {
	return currentState(ctx, db, taskOwner, taskID)
}

func currentState(ctx context.Context, db *gorm.DB, o owner, id int64) (models.State, error) {
	var row struct {
		Exists bool
		State  *string
	}
	err := db.WithContext(ctx).Raw(fmt.Sprintf(
		`SELECT EXISTS (SELECT 1 FROM %[1]s WHERE %[2]s = @id) AS exists,
		        (SELECT to_state FROM %[3]s WHERE %[2]s = @id AND most_recent) AS state`,
		o.table, o.key, o.transitionsTable), map[string]any{"id": id}).Scan(&row).Error
	if err != nil {
		return "", fmt.Errorf("reading state of %s %d: %w", o.kind, id, err)
	}
	if !row.Exists {
		return "", &NotFoundError{Kind: o.kind, ID: id}
	}
	if row.State == nil {
		return models.StatePending, nil
	}
	return models.State(*row.State), nil
}

// move applies one move through the batch write path, so there is one write path.
func move(ctx context.Context, db *gorm.DB, o owner, id int64, to models.State, metadata map[string]any) (Transition, error) {
	written, _, err := moveBatch(ctx, db, o, []Move{{ID: id, To: to, Metadata: metadata}}, false)
	if err != nil {
		var te *TransitionError
		var nf *NotFoundError
		if errors.As(err, &te) || errors.As(err, &nf) {
			return Transition{}, err
		}
		return Transition{}, fmt.Errorf("moving %s %d to %s: %w", o.kind, id, to, err)
	}
	return written[0], nil
}

// notAllowedReason says why the table refuses every move from a state that is not listed.
func notAllowedReason(kind Kind, from models.State) string {
	allowed := Allowed(kind, from)
	if len(allowed) == 0 {
		return string(from) + " is terminal"
	}
	names := make([]string, len(allowed))
	for i, s := range allowed {
		names[i] = string(s)
	}
	return "allowed from " + string(from) + ": " + strings.Join(names, ", ")
}
