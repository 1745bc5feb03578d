package statemachine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/store"
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

// owner is a kind of owner and where the store keeps it and its transitions.
type owner struct {
	kind  Kind
	store store.Owner
}

var (
	stepOwner = owner{KindStep, store.StepOwner}
	taskOwner = owner{KindTask, store.TaskOwner}
)

// TransitionStep moves step stepID to state to, recording metadata (the event name is added
// under "event"). It runs in its own transaction, or inside st's when st runs in one.
func TransitionStep(ctx context.Context, st *store.Store, stepID int64, to models.State, metadata map[string]any) (Transition, error) {
	return move(ctx, st, stepOwner, stepID, to, metadata)
}

// TransitionTask moves task taskID to state to; see TransitionStep.
func TransitionTask(ctx context.Context, st *store.Store, taskID int64, to models.State, metadata map[string]any) (Transition, error) {
	return move(ctx, st, taskOwner, taskID, to, metadata)
}

// StepState returns the current state of a step (pending when it has no transition).
func StepState(ctx context.Context, st *store.Store, stepID int64) (models.State, error) {
	return currentState(ctx, st, stepOwner, stepID)
}

// TaskState returns the current state of a task (pending when it has no transition).
func TaskState(ctx context.Context, st *store.Store, taskID int64) (models.State, error) {
	return currentState(ctx, st, taskOwner, taskID)
}

func currentState(ctx context.Context, st *store.Store, o owner, id int64) (models.State, error) {
	exists, state, err := st.OwnerState(ctx, o.store, id)
	if err != nil {
		return "", fmt.Errorf("reading state of %s %d: %w", o.kind, id, err)
	}
	if !exists {
		return "", notFound(o.kind, id)
	}
	if state == nil {
		return models.StatePending, nil
	}
	return models.State(*state), nil
}

// move applies one move through the batch write path, so there is one write path.
func move(ctx context.Context, st *store.Store, o owner, id int64, to models.State, metadata map[string]any) (Transition, error) {
	b := batch{o: o, moves: []Move{{ID: id, To: to, Metadata: metadata}}}
	if err := b.run(ctx, st); err != nil {
		if refusal(err) {
			return Transition{}, err
		}
		return Transition{}, fmt.Errorf("moving %s %d to %s: %w", o.kind, id, to, err)
	}
	return b.written[0], nil
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
