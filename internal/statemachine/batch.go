package statemachine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
)

// Move asks for one owner (a task or a step, by id) to go to state To, recording Metadata on
// the transition (the event name is added under "event").
type Move struct {
	ID       int64
	To       models.State
	Metadata map[string]any
}

// TransitionSteps applies moves to steps in one transaction (its own, or db's when db is
// one), all or nothing: when any move is refused, the first refusal in move order is returned
// as a *TransitionError and nothing is written. Several moves of one owner apply in the order
// given (error → pending → in_progress is two moves). The returned transitions follow the
// order of moves. Guards (parents complete for step → in_progress) read the states as they
// were before the batch.
//
// It runs a constant number of statements however many moves it applies: the owners are
// locked in one statement, in id order (so two batches never deadlock on each other), their
// current states and last sort keys are read in one, the guards in one, and the previous
// current rows are cleared and the new rows inserted with one statement each.
func TransitionSteps(ctx context.Context, db *gorm.DB, moves []Move) ([]Transition, error) {
	written, _, err := moveBatch(ctx, db, stepOwner, moves, false)
	return written, batchError(stepOwner, moves, err)
}

// TransitionTasks is TransitionSteps for tasks (guard: task → complete needs every step
// complete or resolved_manually).
func TransitionTasks(ctx context.Context, db *gorm.DB, moves []Move) ([]Transition, error) {
	written, _, err := moveBatch(ctx, db, taskOwner, moves, false)
	return written, batchError(taskOwner, moves, err)
}

// TransitionStepsWhereAllowed is TransitionSteps that writes the moves of every owner whose
// moves are all allowed and returns the refusals of the others (one per refused owner, nothing
// written for it). An unknown owner is still an error for the whole batch.
func TransitionStepsWhereAllowed(ctx context.Context, db *gorm.DB, moves []Move) ([]Transition, []*TransitionError, error) {
	written, refused, err := moveBatch(ctx, db, stepOwner, moves, true)
	return written, refused, batchError(stepOwner, moves, err)
}

// TransitionTasksWhereAllowed is TransitionStepsWhereAllowed for tasks.
func TransitionTasksWhereAllowed(ctx context.Context, db *gorm.DB, moves []Move) ([]Transition, []*TransitionError, error) {
	written, refused, err := moveBatch(ctx, db, taskOwner, moves, true)
	return written, refused, batchError(taskOwner, moves, err)
}

// current is an owner's state before the batch.
type current struct {
	ID        int64
	State     *string
	CurrentID *int64 // the id of the owner's current transition row
	SortKey   int
}

// planned is one accepted move with its place in the owner's history.
type planned struct {
	index   int // in the moves slice
	id      int64
	from    *models.State
	to      models.State
	event   string
	sortKey int
	last    bool // the owner's last move in this batch: its row is the current one
	meta    json.RawMessage
}

func moveBatch(ctx context.Context, db *gorm.DB, o owner, moves []Move, partial bool) ([]Transition, []*TransitionError, error) {
	if len(moves) == 0 {
		return nil, nil, nil
	}
	if !partial {
		for _, m := range moves {
			if _, err := models.ParseState(string(m.To)); err != nil {
				return nil, nil, &TransitionError{Kind: o.kind, ID: m.ID, From: "?", To: string(m.To), Reason: err.Error()}
			}
		}
	}
	var written []Transition
	var refused []*TransitionError
	// Inside a caller's transaction the batch runs in it directly, without a savepoint: every
	// move is validated before anything is written, so a refusal writes nothing, and a
	// database error aborts the caller's transaction.
	db = db.WithContext(ctx).Session(&gorm.Session{DisableNestedTransaction: true})
	err := db.Transaction(func(tx *gorm.DB) error {
		ids := ownerIDs(moves)
		if err := lockOwners(tx, o, ids); err != nil {
			return err
		}
		cur, err := readCurrent(tx, o, ids)
		if err != nil {
			return err
		}
		blocked, err := readGuards(tx, o, moves)
		if err != nil {
			return err
		}
		plan, refusals := planMoves(o, moves, cur, blocked)
		if len(refusals) > 0 && !partial {
			return refusals[0]
		}
		refused = refusals
		if written, err = writePlan(tx, o, plan, cur); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return written, refused, nil
}

// batchError passes refusals and unknown owners through and wraps everything else.
func batchError(o owner, moves []Move, err error) error {
	var te *TransitionError
	var nf *NotFoundError
	if err == nil || errors.As(err, &te) || errors.As(err, &nf) {
		return err
	}
	return fmt.Errorf("moving %d %ss: %w", len(ownerIDs(moves)), o.kind, err)
}

// ownerIDs returns the distinct owners of moves, ascending.
func ownerIDs(moves []Move) []int64 {
	ids := make([]int64, 0, len(moves))
	for _, m := range moves {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// lockOwners serialises writers on every owner: each writer takes these row locks first, in
// id order, so the states read afterwards are the latest committed ones. A missing owner is a
// *NotFoundError.
func lockOwners(tx *gorm.DB, o owner, ids []int64) error {
	var locked []int64
	if err := tx.Raw(fmt.Sprintf(`SELECT %[2]s FROM %[1]s WHERE %[2]s = ANY(?::bigint[]) ORDER BY %[2]s FOR NO KEY UPDATE`,
		o.table, o.key), models.Int64Array(ids)).Scan(&locked).Error; err != nil {
		return fmt.Errorf("locking %ss %v: %w", o.kind, ids, err)
	}
	for _, id := range ids {
		if _, ok := slices.BinarySearch(locked, id); !ok {
			return &NotFoundError{Kind: o.kind, ID: id}
		}
	}
	return nil
}

// readCurrent reads each owner's current state and last sort key, in one statement.
func readCurrent(tx *gorm.DB, o owner, ids []int64) (map[int64]current, error) {
	var rows []current
	if err := tx.Raw(fmt.Sprintf(`
		SELECT o.id,
		       (SELECT to_state FROM %[1]s t WHERE t.%[2]s = o.id AND t.most_recent) AS state,
		       (SELECT id FROM %[1]s t WHERE t.%[2]s = o.id AND t.most_recent) AS current_id,
		       (SELECT coalesce(max(sort_key), 0) FROM %[1]s t WHERE t.%[2]s = o.id) AS sort_key
		FROM unnest(?::bigint[]) AS o(id)`, o.transitionsTable, o.key), models.Int64Array(ids)).
		Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading current states of %ss: %w", o.kind, err)
	}
	out := make(map[int64]current, len(rows))
	for _, r := range rows {
		out[r.ID] = r
	}
	return out, nil
}

// guardSQL lists, per owner, what blocks its guarded move: for a step going to in_progress,
// its parents that are not complete or resolved_manually; for a task going to complete, its
// steps that are not. Each state is read by a scalar subquery on the partial "most_recent"
// index, so the statement probes indexes per row whatever plan the statistics suggest.
var guardSQL = map[Kind]string{
	KindStep: `
		SELECT e.to_step_id AS owner, e.from_step_id AS blocker
		FROM tasker_workflow_step_edges e
		WHERE e.to_step_id = ANY(?::bigint[])
		  AND coalesce((SELECT t.to_state FROM tasker_workflow_step_transitions t
		                WHERE t.workflow_step_id = e.from_step_id AND t.most_recent), 'pending')
		      NOT IN ('complete', 'resolved_manually')
		ORDER BY 1, 2`,
	KindTask: `
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

// maxBlockers caps the blockers a refusal names.
const maxBlockers = 20

// guarded is the target state that has a guard, per kind.
var guarded = map[Kind]models.State{KindStep: models.StateInProgress, KindTask: models.StateComplete}

// readGuards reads, in one statement, what blocks the guarded moves of the batch.
func readGuards(tx *gorm.DB, o owner, moves []Move) (map[int64][]int64, error) {
	var ids []int64
	for _, m := range moves {
		if m.To == guarded[o.kind] {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	var rows []struct{ Owner, Blocker int64 }
	if err := tx.Raw(guardSQL[o.kind], models.Int64Array(ids)).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("checking guards of %ss: %w", o.kind, err)
	}
	out := map[int64][]int64{}
	for _, r := range rows {
		if len(out[r.Owner]) < maxBlockers {
			out[r.Owner] = append(out[r.Owner], r.Blocker)
		}
	}
	return out, nil
}

// planMoves validates every move in Go with the rules of check, walking each owner's moves in
// order from its current state. An owner with a refused move gets that refusal and none of its
// moves is planned.
func planMoves(o owner, moves []Move, cur map[int64]current, blocked map[int64][]int64) ([]planned, []*TransitionError) {
	type walk struct {
		state   *models.State
		sortKey int
		plan    []planned
		refused *TransitionError
	}
	walks := map[int64]*walk{}
	var order []int64
	for i, m := range moves {
		w := walks[m.ID]
		if w == nil {
			c := cur[m.ID]
			w = &walk{sortKey: c.SortKey}
			if c.State != nil {
				s := models.State(*c.State)
				w.state = &s
			}
			walks[m.ID] = w
			order = append(order, m.ID)
		}
		if w.refused != nil {
			continue
		}
		from := models.StatePending
		if w.state != nil {
			from = *w.state
		}
		event, err := checkMove(o.kind, m.ID, from, m.To, blocked[m.ID])
		if err == nil {
			var meta json.RawMessage
			meta, err = encodeMeta(m.Metadata, event)
			if err == nil {
				w.sortKey++
				w.plan = append(w.plan, planned{index: i, id: m.ID, from: w.state, to: m.To, event: event,
					sortKey: w.sortKey, meta: meta})
				to := m.To
				w.state = &to
				continue
			}
		}
		var te *TransitionError
		if !errors.As(err, &te) {
			te = &TransitionError{Kind: o.kind, ID: m.ID, From: string(from), To: string(m.To), Reason: err.Error()}
		}
		w.refused, w.plan = te, nil
	}
	var plan []planned
	var refused []*TransitionError
	for _, id := range order {
		w := walks[id]
		if w.refused != nil {
			refused = append(refused, w.refused)
			continue
		}
		w.plan[len(w.plan)-1].last = true
		plan = append(plan, w.plan...)
	}
	slices.SortFunc(plan, func(a, b planned) int { return a.index - b.index })
	slices.SortStableFunc(refused, func(a, b *TransitionError) int { return firstIndex(moves, a.ID) - firstIndex(moves, b.ID) })
	return plan, refused
}

func firstIndex(moves []Move, id int64) int {
	return slices.IndexFunc(moves, func(m Move) bool { return m.ID == id })
}

// checkMove returns the event name of a move or a TransitionError saying why it is refused:
// a move to the current state, a move the table does not allow, or a guard that does not hold
// (blockers lists what blocks it).
func checkMove(kind Kind, id int64, from, to models.State, blockers []int64) (string, error) {
	refuse := func(reason string) error {
		return &TransitionError{Kind: kind, ID: id, From: string(from), To: string(to), Reason: reason}
	}
	if _, err := models.ParseState(string(to)); err != nil {
		return "", &TransitionError{Kind: kind, ID: id, From: "?", To: string(to), Reason: err.Error()}
	}
	if from == to {
		return "", refuse("it is already " + string(to))
	}
	event, ok := Event(kind, from, to)
	if !ok {
		return "", refuse(notAllowedReason(kind, from))
	}
	if to == guarded[kind] && len(blockers) > 0 {
		if kind == KindStep {
			return "", refuse(fmt.Sprintf("parent steps %v are not complete or resolved_manually", blockers))
		}
		return "", refuse(fmt.Sprintf("steps %v are not complete or resolved_manually", blockers))
	}
	return event, nil
}

func encodeMeta(metadata map[string]any, event string) (json.RawMessage, error) {
	meta := make(map[string]any, len(metadata)+1)
	for k, v := range metadata {
		meta[k] = v
	}
	meta["event"] = event
	b, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("encoding transition metadata: %w", err)
	}
	return b, nil
}

// insertRow is one transition row, as jsonb_to_recordset reads it.
type insertRow struct {
	Owner      int64           `json:"owner"`
	ToState    string          `json:"to_state"`
	FromState  *string         `json:"from_state"`
	Metadata   json.RawMessage `json:"metadata"`
	SortKey    int             `json:"sort_key"`
	MostRecent bool            `json:"most_recent"`
}

// writePlan clears the current rows of the moved owners and inserts the planned rows, one
// statement each; the owner's last planned row becomes its one current row.
func writePlan(tx *gorm.DB, o owner, plan []planned, cur map[int64]current) ([]Transition, error) {
	if len(plan) == 0 {
		return nil, nil
	}
	rows := make([]insertRow, len(plan))
	var cleared []int64 // current rows of the moved owners, by primary key
	for i, p := range plan {
		rows[i] = insertRow{Owner: p.id, ToState: string(p.to), Metadata: p.meta, SortKey: p.sortKey, MostRecent: p.last}
		if p.from != nil {
			f := string(*p.from)
			rows[i].FromState = &f
		}
		if c := cur[p.id].CurrentID; c != nil && !slices.Contains(cleared, *c) {
			cleared = append(cleared, *c)
		}
	}
	if len(cleared) > 0 {
		// By primary key: the rows read under the owners' locks are still the current ones.
		if err := tx.Exec(fmt.Sprintf(`UPDATE %[1]s SET most_recent = false, updated_at = now()
			WHERE id = ANY(?::bigint[]) AND most_recent`, o.transitionsTable), models.Int64Array(cleared)).Error; err != nil {
			return nil, fmt.Errorf("clearing current transitions of %ss: %w", o.kind, err)
		}
	}
	payload, err := json.Marshal(rows)
	if err != nil {
		return nil, fmt.Errorf("encoding transitions: %w", err)
	}
	var inserted []struct {
		ID        int64
		Owner     int64
		SortKey   int
		CreatedAt time.Time
	}
	if err := tx.Raw(fmt.Sprintf(`
		INSERT INTO %[1]s (%[2]s, to_state, from_state, metadata, sort_key, most_recent)
		SELECT r.owner, r.to_state, r.from_state, r.metadata, r.sort_key, r.most_recent
		FROM jsonb_to_recordset(?::jsonb) AS r(owner bigint, to_state varchar, from_state varchar,
		                                         metadata jsonb, sort_key integer, most_recent boolean)
		ORDER BY r.owner, r.sort_key
		RETURNING id, %[2]s AS owner, sort_key, created_at`, o.transitionsTable, o.key), string(payload)).
		Scan(&inserted).Error; err != nil {
		return nil, fmt.Errorf("writing transitions of %ss: %w", o.kind, err)
	}
	type key struct {
		owner   int64
		sortKey int
	}
	byKey := make(map[key]int, len(inserted))
	for i, r := range inserted {
		byKey[key{r.Owner, r.SortKey}] = i
	}
	out := make([]Transition, len(plan))
	for i, p := range plan {
		r, ok := byKey[key{p.id, p.sortKey}]
		if !ok {
			return nil, fmt.Errorf("writing transitions of %ss: row of %s %d sort key %d not returned", o.kind, o.kind, p.id, p.sortKey)
		}
		out[i] = Transition{ID: inserted[r].ID, Kind: o.kind, OwnerID: p.id, From: p.from, To: p.to, Event: p.event,
			SortKey: p.sortKey, Metadata: p.meta, CreatedAt: inserted[r].CreatedAt}
	}
	return out, nil
}
