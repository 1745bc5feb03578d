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

func move(ctx context.Context, db *gorm.DB, o owner, id int64, to models.State, metadata map[string]any) (Transition, error) {
	if _, err := models.ParseState(string(to)); err != nil {
		return Transition{}, &TransitionError{Kind: o.kind, ID: id, From: "?", To: string(to), Reason: err.Error()}
	}
	var out Transition
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Serialise writers on this owner: every writer takes this row lock first, so the
		// state read below is the latest committed one.
		var locked []int64
		if err := tx.Raw(fmt.Sprintf(`SELECT %[2]s FROM %[1]s WHERE %[2]s = ? FOR NO KEY UPDATE`, o.table, o.key), id).
			Scan(&locked).Error; err != nil {
			return fmt.Errorf("locking %s %d: %w", o.kind, id, err)
		}
		if len(locked) == 0 {
			return &NotFoundError{Kind: o.kind, ID: id}
		}
		var cur struct {
			State   *string
			SortKey int
		}
		if err := tx.Raw(fmt.Sprintf(
			`SELECT (SELECT to_state FROM %[1]s WHERE %[2]s = @id AND most_recent) AS state,
			        (SELECT coalesce(max(sort_key), 0) FROM %[1]s WHERE %[2]s = @id) AS sort_key`,
			o.transitionsTable, o.key), map[string]any{"id": id}).Scan(&cur).Error; err != nil {
			return fmt.Errorf("reading current state of %s %d: %w", o.kind, id, err)
		}
		from := models.StatePending
		if cur.State != nil {
			from = models.State(*cur.State)
		}
		event, err := check(tx, o, id, from, to)
		if err != nil {
			return err
		}
		meta := map[string]any{}
		for k, v := range metadata {
			meta[k] = v
		}
		meta["event"] = event
		metaJSON, err := json.Marshal(meta)
		if err != nil {
			return fmt.Errorf("encoding transition metadata: %w", err)
		}
		if cur.State != nil {
			if err := tx.Exec(fmt.Sprintf(`UPDATE %[1]s SET most_recent = false, updated_at = now() WHERE %[2]s = ? AND most_recent`,
				o.transitionsTable, o.key), id).Error; err != nil {
				return fmt.Errorf("clearing current transition of %s %d: %w", o.kind, id, err)
			}
		}
		var fromArg any
		if cur.State != nil {
			fromArg = string(from)
		}
		var row struct {
			ID        int64
			CreatedAt time.Time
		}
		if err := tx.Raw(fmt.Sprintf(
			`INSERT INTO %[1]s (%[2]s, to_state, from_state, metadata, sort_key, most_recent)
			 VALUES (?, ?, ?, ?::jsonb, ?, true) RETURNING id, created_at`, o.transitionsTable, o.key),
			id, string(to), fromArg, string(metaJSON), cur.SortKey+1).Scan(&row).Error; err != nil {
			return fmt.Errorf("writing transition of %s %d: %w", o.kind, id, err)
		}
		out = Transition{ID: row.ID, Kind: o.kind, OwnerID: id, To: to, Event: event,
			SortKey: cur.SortKey + 1, Metadata: metaJSON, CreatedAt: row.CreatedAt}
		if cur.State != nil {
			f := from
			out.From = &f
		}
		return nil
	})
	if err != nil {
		var te *TransitionError
		var nf *NotFoundError
		if errors.As(err, &te) || errors.As(err, &nf) {
			return Transition{}, err
		}
		return Transition{}, fmt.Errorf("moving %s %d to %s: %w", o.kind, id, to, err)
	}
	return out, nil
}

// check returns the event name of the move or a TransitionError saying why it is refused.
func check(tx *gorm.DB, o owner, id int64, from, to models.State) (string, error) {
	refuse := func(reason string) error {
		return &TransitionError{Kind: o.kind, ID: id, From: string(from), To: string(to), Reason: reason}
	}
	if from == to {
		return "", refuse("it is already " + string(to))
	}
	event, ok := Event(o.kind, from, to)
	if !ok {
		allowed := Allowed(o.kind, from)
		if len(allowed) == 0 {
			return "", refuse(string(from) + " is terminal")
		}
		names := make([]string, len(allowed))
		for i, s := range allowed {
			names[i] = string(s)
		}
		return "", refuse("allowed from " + string(from) + ": " + strings.Join(names, ", "))
	}
	switch {
	case o.kind == KindStep && to == models.StateInProgress:
		var blocking []int64
		if err := tx.Raw(`
			SELECT e.from_step_id
			FROM tasker_workflow_step_edges e
			LEFT JOIN tasker_workflow_step_transitions t
			       ON t.workflow_step_id = e.from_step_id AND t.most_recent
			WHERE e.to_step_id = ?
			  AND coalesce(t.to_state, 'pending') NOT IN ('complete', 'resolved_manually')
			ORDER BY e.from_step_id`, id).Scan(&blocking).Error; err != nil {
			return "", fmt.Errorf("checking parents of step %d: %w", id, err)
		}
		if len(blocking) > 0 {
			return "", refuse(fmt.Sprintf("parent steps %v are not complete or resolved_manually", blocking))
		}
	case o.kind == KindTask && to == models.StateComplete:
		var unfinished []int64
		if err := tx.Raw(`
			SELECT s.workflow_step_id
			FROM tasker_workflow_steps s
			LEFT JOIN tasker_workflow_step_transitions t
			       ON t.workflow_step_id = s.workflow_step_id AND t.most_recent
			WHERE s.task_id = ?
			  AND coalesce(t.to_state, 'pending') NOT IN ('complete', 'resolved_manually')
			ORDER BY s.workflow_step_id LIMIT 20`, id).Scan(&unfinished).Error; err != nil {
			return "", fmt.Errorf("checking steps of task %d: %w", id, err)
		}
		if len(unfinished) > 0 {
			return "", refuse(fmt.Sprintf("steps %v are not complete or resolved_manually", unfinished))
		}
	}
	return event, nil
}
