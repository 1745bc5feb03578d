package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
)

// Owner is what a transition moves: a task or a workflow step. It names the owner's table,
// its key column and its transitions table.
type Owner struct {
	table, key, transitions string
}

// The two owners of transitions.
var (
	TaskOwner = Owner{"tasker_tasks", "task_id", "tasker_task_transitions"}
	StepOwner = Owner{"tasker_workflow_steps", "workflow_step_id", "tasker_workflow_step_transitions"}
)

// Atomic runs fn in one transaction: a new one, or, when s already runs in a transaction,
// that one directly, without a savepoint (a failure of fn then aborts the caller's
// transaction). It is for writers that validate everything before they write, so that a
// refusal writes nothing either way.
func (s *Store) Atomic(ctx context.Context, fn func(tx *Store) error) error {
	return s.conn(ctx).Session(&gorm.Session{DisableNestedTransaction: true}).Transaction(func(tx *gorm.DB) error {
		return fn(&Store{db: tx, notes: s.notes})
	})
}

// LockOwners takes the row locks of the existing owners among ids, in id order (so that two
// writers never deadlock on each other), and returns the ids it locked, ascending.
func (s *Store) LockOwners(ctx context.Context, o Owner, ids []int64) ([]int64, error) {
	return queryRows(ctx, s, int64Column, fmt.Sprintf(`SELECT %[2]s FROM %[1]s WHERE %[2]s = ANY(?::bigint[]) ORDER BY %[2]s FOR NO KEY UPDATE`,
		o.table, o.key), database.Array[int64](ids))
}

// OwnerState is an owner's current transition: its state (nil when it has none: pending)
// and the last sort key of its history (0 when it has none).
type OwnerState struct {
	ID      int64
	State   *string
	SortKey int
}

// OwnerStates reads the current state and last sort key of each owner of ids, in one
// statement.
func (s *Store) OwnerStates(ctx context.Context, o Owner, ids []int64) ([]OwnerState, error) {
	return queryRows(ctx, s, func(r *OwnerState) []any { return []any{&r.ID, &r.State, &r.SortKey} }, fmt.Sprintf(`
		SELECT o.id,
		       (SELECT to_state FROM %[1]s t WHERE t.%[2]s = o.id AND t.most_recent) AS state,
		       (SELECT coalesce(max(sort_key), 0) FROM %[1]s t WHERE t.%[2]s = o.id) AS sort_key
		FROM unnest(?::bigint[]) AS o(id)`, o.transitions, o.key), database.Array[int64](ids))
}

// OwnerState reads whether one owner exists and its current state (nil: no transition yet).
func (s *Store) OwnerState(ctx context.Context, o Owner, id int64) (exists bool, state *string, err error) {
	var row struct {
		Exists bool
		State  *string
	}
	err = s.conn(ctx).Raw(fmt.Sprintf(
		`SELECT EXISTS (SELECT 1 FROM %[1]s WHERE %[2]s = @id) AS exists,
		        (SELECT to_state FROM %[3]s WHERE %[2]s = @id AND most_recent) AS state`,
		o.table, o.key, o.transitions), map[string]any{"id": id}).Scan(&row).Error
	return row.Exists, row.State, err
}

// guardSQL lists, per owner, what blocks its guarded move: for a step going to in_progress,
// its parents that are not complete or resolved_manually; for a task going to complete, its
// steps that are not. Each state is read by a scalar subquery on the partial "most_recent"
// index, so the statement probes indexes per row whatever plan the statistics suggest.
var guardSQL = map[Owner]string{
	StepOwner: `
		SELECT e.to_step_id AS owner, e.from_step_id AS blocker
		FROM tasker_workflow_step_edges e
		WHERE e.to_step_id = ANY(?::bigint[])
		  AND coalesce((SELECT t.to_state FROM tasker_workflow_step_transitions t
		                WHERE t.workflow_step_id = e.from_step_id AND t.most_recent), 'pending')
		      NOT IN ('complete', 'resolved_manually')
		ORDER BY 1, 2`,
	TaskOwner: `
		SELECT o.id AS owner, s.workflow_step_id AS blocker
		FROM unnest(?::bigint[]) AS o(id)
		CROSS JOIN LATERAL (
			SELECT s.workflow_step_id,
			       coalesce((SELECT t.to_state FROM tasker_workflow_step_transitions t
			                 WHERE t.workflow_step_id = s.workflow_step_id AND t.most_recent), 'pending') AS state
			FROM tasker_workflow_steps s
			WHERE s.task_id = o.id
			OFFSET 0
		) s
		WHERE s.state NOT IN ('complete', 'resolved_manually')
		ORDER BY 1, 2`,
}

// Blocker is a step that blocks an owner's guarded move: a parent of a step that is to start,
// or a step of a task that is to complete.
type Blocker struct{ Owner, Blocker int64 }

// Blockers reads, in one statement, what blocks the guarded move of each owner of ids (a step
// to in_progress, a task to complete), ordered by owner then blocker.
func (s *Store) Blockers(ctx context.Context, o Owner, ids []int64) ([]Blocker, error) {
	return queryRows(ctx, s, func(r *Blocker) []any { return []any{&r.Owner, &r.Blocker} },
		guardSQL[o], database.Array[int64](ids))
}

// TransitionRow is one transition to write.
type TransitionRow struct {
	Owner      int64           `json:"owner"`
	ToState    string          `json:"to_state"`
	FromState  *string         `json:"from_state"`
	Metadata   json.RawMessage `json:"metadata"` // JSON: the database refuses the statement otherwise
	SortKey    int             `json:"sort_key"`
	MostRecent bool            `json:"most_recent"`
	// TaskID is, for a step's row, the step's task when the writer knows it (0: unknown). An
	// engine transaction notifies its transitions itself (see notify.go) and names each
	// step's task; it is not written.
	TaskID int64 `json:"-"`
}

// WrittenTransition is what the database gave a written transition row.
type WrittenTransition struct {
	ID        int64
	Owner     int64
	SortKey   int
	CreatedAt time.Time
}

// WriteTransitions clears the current rows of the owners cleared (the caller holds their
// row locks, so their current rows cannot change meanwhile) and inserts rows, in one
// statement (none when both lists are empty). The clearing runs first: the insert reads
// its count before it produces a row, so the partial unique index on (owner) WHERE
// most_recent never sees two current rows of one owner.
func (s *Store) WriteTransitions(ctx context.Context, o Owner, cleared []int64, rows []TransitionRow) ([]WrittenTransition, error) {
	if len(rows) == 0 {
		if len(cleared) == 0 {
			return nil, nil
		}
		if err := s.conn(ctx).Exec(fmt.Sprintf(`UPDATE %[1]s SET most_recent = false, updated_at = now()
			WHERE %[2]s = ANY(?::bigint[]) AND most_recent`, o.transitions, o.key), database.Array[int64](cleared)).Error; err != nil {
			return nil, fmt.Errorf("clearing current transitions: %w", err)
		}
		return nil, nil
	}
	payload, err := encodeTransitionRows(rows)
	if err != nil {
		return nil, fmt.Errorf("encoding transitions: %w", err)
	}
	inserted, err := queryRows(ctx, s, func(r *WrittenTransition) []any {
		return []any{&r.ID, &r.Owner, &r.SortKey, &r.CreatedAt}
	}, writeTransitionsSQL(o, writtenColumns), database.Array[int64](cleared), string(payload))
	if err != nil {
		return nil, fmt.Errorf("writing transitions: %w", err)
	}
	if s.notes != nil {
		if err := s.notes.note(ctx, s, o, rows, inserted); err != nil {
			return nil, err
		}
	}
	return inserted, nil
}

// writtenColumns are what WriteTransitions returns of each written row, and notedColumns
// what an engine transaction reads back to notify them (formats for writeTransitionsSQL:
// %[2]s is the owner's key).
const (
	writtenColumns = "id, %[2]s AS owner, sort_key, created_at"
	notedColumns   = "id, %[2]s AS owner, sort_key"
)

// writeTransitionsSQL clears the current rows and inserts the new ones of owners o (see
// WriteTransitions), returning the columns returning (in which %[2]s is the owner's key).
func writeTransitionsSQL(o Owner, returning string) string {
	return fmt.Sprintf(`
		WITH cleared AS (
		    UPDATE %[1]s SET most_recent = false, updated_at = now()
		    WHERE %[2]s = ANY(?::bigint[]) AND most_recent
		    RETURNING id
		)
		INSERT INTO %[1]s (%[2]s, to_state, from_state, metadata, sort_key, most_recent)
		SELECT r.owner, r.to_state, r.from_state, r.metadata, r.sort_key, r.most_recent
		FROM jsonb_to_recordset(?::jsonb) AS r(owner bigint, to_state varchar, from_state varchar,
		                                         metadata jsonb, sort_key integer, most_recent boolean)
		WHERE (SELECT count(*) FROM cleared) >= 0
		ORDER BY r.owner, r.sort_key
		RETURNING `+returning, o.transitions, o.key)
}

// WriteTransitionsUnread is WriteTransitions for a writer that does not read the rows back:
// the same statement, whose returned rows are not read, and the count of rows it inserted.
//
// In an engine transaction the rows' ids are read back (not their times), to be notified (see
// notify.go).
func (s *Store) WriteTransitionsUnread(ctx context.Context, o Owner, cleared []int64, rows []TransitionRow) (int64, error) {
	if len(rows) == 0 {
		_, err := s.WriteTransitions(ctx, o, cleared, rows)
		return 0, err
	}
	payload, err := encodeTransitionRows(rows)
	if err != nil {
		return 0, fmt.Errorf("encoding transitions: %w", err)
	}
	if s.notes != nil {
		written, err := queryRows(ctx, s, func(r *WrittenTransition) []any { return []any{&r.ID, &r.Owner, &r.SortKey} },
			writeTransitionsSQL(o, notedColumns), database.Array[int64](cleared), string(payload))
		if err != nil {
			return 0, fmt.Errorf("writing transitions: %w", err)
		}
		return int64(len(written)), s.notes.note(ctx, s, o, rows, written)
	}
	n, err := execRawCount(ctx, s, writeTransitionsSQL(o, writtenColumns), database.Array[int64](cleared), string(payload))
	if err != nil {
		return 0, fmt.Errorf("writing transitions: %w", err)
	}
	return n, nil
}

// encodeTransitionRows encodes rows as a JSON array for jsonb_to_recordset: directly when
// their states are plain (see plainJSON), which they always are, else with json.Marshal. Each
// metadata is copied as it is, where json.Marshal would compact it (the database reads the
// same jsonb either way), and without json.Marshal's check that it is JSON: the state machine
// encodes it, and the database refuses the statement when it is not.
func encodeTransitionRows(rows []TransitionRow) ([]byte, error) {
	b := make([]byte, 0, 160*len(rows))
	b = append(b, '[')
	for i, r := range rows {
		if !plainJSON(r.ToState) || (r.FromState != nil && !plainJSON(*r.FromState)) || len(r.Metadata) == 0 {
			return json.Marshal(rows)
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"owner":`...)
		b = strconv.AppendInt(b, r.Owner, 10)
		b = append(append(append(b, `,"to_state":"`...), r.ToState...), `","from_state":`...)
		if r.FromState == nil {
			b = append(b, "null"...)
		} else {
			b = append(append(append(b, '"'), *r.FromState...), '"')
		}
		b = append(append(b, `,"metadata":`...), r.Metadata...)
		b = append(b, `,"sort_key":`...)
		b = strconv.AppendInt(b, int64(r.SortKey), 10)
		b = append(append(b, `,"most_recent":`...), strconv.FormatBool(r.MostRecent)...)
		b = append(b, '}')
	}
	return append(b, ']'), nil
}

// plainJSON reports whether s encodes in JSON as itself between quotes.
func plainJSON(s string) bool {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
