package statemachine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/store"
)

// Move asks for one owner (a task or a step, by id) to go to state To, recording Metadata on
// the transition (the event name is added under "event").
type Move struct {
	ID       int64
	To       models.State
	Metadata map[string]any
	// TaskID is, for a step's move, the step's task, when the mover knows it (0: unknown). It
	// changes nothing that is written; an engine transaction, which notifies its transitions
	// itself, names each step's task with it instead of looking it up (see internal/store).
	TaskID int64
}

// TransitionSteps applies moves to steps in one transaction (its own, or st's when st runs
// in one), all or nothing: when any move is refused, the first refusal in move order is returned
// as a *TransitionError and nothing is written. Several moves of one owner apply in the order
// given (error → pending → in_progress is two moves). The returned transitions follow the
// order of moves. Guards (parents complete for step → in_progress) read the states as they
// were before the batch.
//
// It runs a constant number of statements however many moves it applies: the owners are
// locked in one statement, in id order (so two batches never deadlock on each other), their
// current states and last sort keys are read in one, the guards in one, and the previous
// current rows are cleared and the new rows inserted with one statement each.
func TransitionSteps(ctx context.Context, st *store.Store, moves []Move) ([]Transition, error) {
	b := batch{o: stepOwner, moves: moves}
	err := b.run(ctx, st)
	return b.written, batchError(stepOwner, moves, err)
}

// TransitionTasks is TransitionSteps for tasks (guard: task → complete needs every step
// complete or resolved_manually).
func TransitionTasks(ctx context.Context, st *store.Store, moves []Move) ([]Transition, error) {
	b := batch{o: taskOwner, moves: moves}
	err := b.run(ctx, st)
	return b.written, batchError(taskOwner, moves, err)
}

// TransitionStepsWhereAllowed is TransitionSteps that writes the moves of every owner whose
// moves are all allowed and returns the refusals of the others (one per refused owner, nothing
// written for it). An unknown owner is still an error for the whole batch.
func TransitionStepsWhereAllowed(ctx context.Context, st *store.Store, moves []Move) ([]Transition, []*TransitionError, error) {
	b := batch{o: stepOwner, moves: moves, partial: true}
	err := b.run(ctx, st)
	return b.written, b.refused, batchError(stepOwner, moves, err)
}

// TransitionTasksWhereAllowed is TransitionStepsWhereAllowed for tasks.
func TransitionTasksWhereAllowed(ctx context.Context, st *store.Store, moves []Move) ([]Transition, []*TransitionError, error) {
	b := batch{o: taskOwner, moves: moves, partial: true}
	err := b.run(ctx, st)
	return b.written, b.refused, batchError(taskOwner, moves, err)
}

// The Held variants are for a writer that already holds, in st's transaction, the row lock of
// every owner of its moves (FOR UPDATE or FOR NO KEY UPDATE, taken in id order with its other
// locks), the engine: they skip taking those locks again, one statement fewer, and are
// otherwise the functions above, except that they do not return the written transitions,
// whose rows are then not read back (only counted: a row missing is an error). What the
// writer already knows of its owners (known, which may be empty) saves the statements that
// would read it.

// Known is what a writer holding its owners' row locks knows of some of them, read under
// those locks in its transaction, written by it while it held them, or read by the statement
// that took them (whose snapshot may miss a transition committed just before the lock: the
// batch then fails, as below):
//   - Current: their current transitions (state and last sort key). A batch reads the
//     current transitions only of the owners not in it, and none when it holds them all.
//     What it holds must be true, and when it is not, the batch fails and writes nothing: a
//     transition written since (by another writer) took the next sort key, which the batch's
//     row then repeats ((owner, sort_key) is unique), and an owner said to have none has a
//     current row that the batch's new one would double (one current row per owner);
//   - Proven: the owners whose guarded move (step → in_progress, task → complete) the writer
//     has checked under those locks against states that cannot change any more (parents, or
//     steps, complete or resolved_manually: terminal states). Their guards are not read
//     again.
type Known struct {
	Current map[int64]store.OwnerState
	Proven  map[int64]bool
}

// TransitionHeldStepsWhereAllowed is TransitionStepsWhereAllowed on held steps.
func TransitionHeldStepsWhereAllowed(ctx context.Context, st *store.Store, moves []Move, known Known) ([]*TransitionError, error) {
	b := batch{o: stepOwner, moves: moves, partial: true, held: true, known: known}
	err := b.run(ctx, st)
	return b.refused, batchError(stepOwner, moves, err)
}

// TransitionHeldTasks is TransitionTasks on held tasks.
func TransitionHeldTasks(ctx context.Context, st *store.Store, moves []Move, known Known) error {
	b := batch{o: taskOwner, moves: moves, held: true, known: known}
	return batchError(taskOwner, moves, b.run(ctx, st))
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
	taskID  int64 // Move.TaskID
}

// batch is one batch of moves of owners of one kind (see TransitionSteps): partial writes the
// allowed owners' moves and returns the refusals of the others; held says the caller holds
// the owners' row locks (it knows known of them), and the written transitions are then not
// read back (written stays nil).
type batch struct {
	o       owner
	moves   []Move
	partial bool
	held    bool
	known   Known

	written []Transition
	refused []*TransitionError
}

func (b *batch) run(ctx context.Context, st *store.Store) error {
	o, moves := b.o, b.moves
	if len(moves) == 0 {
		return nil
	}
	if !b.partial {
		for _, m := range moves {
			if _, err := models.ParseState(string(m.To)); err != nil {
				return &TransitionError{Kind: o.kind, ID: m.ID, From: "?", To: string(m.To), Reason: err.Error()}
			}
		}
	}
	// Inside a caller's transaction the batch runs in it directly, without a savepoint: every
	// move is validated before anything is written, so a refusal writes nothing, and a
	// database error aborts the caller's transaction.
	return st.Atomic(ctx, func(tx *store.Store) error {
		ids := ownerIDs(moves)
		if !b.held {
			if err := lockOwners(ctx, tx, o, ids); err != nil {
				return err
			}
		}
		cur, err := readCurrent(ctx, tx, o, ids, b.known.Current)
		if err != nil {
			return err
		}
		blocked, err := readGuards(ctx, tx, o, moves, b.known.Proven)
		if err != nil {
			return err
		}
		plan, refusals := planMoves(o, moves, cur, blocked)
		if len(refusals) > 0 && !b.partial {
			return refusals[0]
		}
		b.refused = refusals
		b.written, err = writePlan(ctx, tx, o, plan, cur, !b.held)
		return err
	})
}

// batchError passes refusals and unknown owners through and wraps everything else.
func batchError(o owner, moves []Move, err error) error {
	if err == nil || refusal(err) {
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
// id order, so the states read afterwards are the latest committed ones. A missing owner is
// an errs.NotFound.
func lockOwners(ctx context.Context, tx *store.Store, o owner, ids []int64) error {
	locked, err := tx.LockOwners(ctx, o.store, ids)
	if err != nil {
		return fmt.Errorf("locking %ss %v: %w", o.kind, ids, err)
	}
	for _, id := range ids {
		if _, ok := slices.BinarySearch(locked, id); !ok {
			return notFound(o.kind, id)
		}
	}
	return nil
}

// readCurrent returns each owner's current state and last sort key: known's, and those of
// the others read in one statement (none when known holds them all).
func readCurrent(ctx context.Context, tx *store.Store, o owner, ids []int64, known map[int64]store.OwnerState) (map[int64]store.OwnerState, error) {
	out := make(map[int64]store.OwnerState, len(ids))
	var unknown []int64
	for _, id := range ids {
		if c, ok := known[id]; ok {
			out[id] = c
		} else {
			unknown = append(unknown, id)
		}
	}
	if len(unknown) == 0 {
		return out, nil
	}
	rows, err := tx.OwnerStates(ctx, o.store, unknown)
	if err != nil {
		return nil, fmt.Errorf("reading current states of %ss: %w", o.kind, err)
	}
	for _, r := range rows {
		out[r.ID] = r
	}
	return out, nil
}

// maxBlockers caps the blockers a refusal names.
const maxBlockers = 20

// guarded is the target state that has a guard, per kind.
var guarded = map[Kind]models.State{KindStep: models.StateInProgress, KindTask: models.StateComplete}

// readGuards reads, in one statement, what blocks the guarded moves of the batch whose
// owners are not proven.
func readGuards(ctx context.Context, tx *store.Store, o owner, moves []Move, proven map[int64]bool) (map[int64][]int64, error) {
	var ids []int64
	for _, m := range moves {
		if m.To == guarded[o.kind] && !proven[m.ID] {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := tx.Blockers(ctx, o.store, ids)
	if err != nil {
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
func planMoves(o owner, moves []Move, cur map[int64]store.OwnerState, blocked map[int64][]int64) ([]planned, []*TransitionError) {
	type walk struct {
		state   *models.State
		sortKey int
		plan    []planned
		refused *TransitionError
	}
	// One walk per owner, in the order of the owners' first moves (most owners have one move).
	walks := make([]walk, 0, len(moves))
	byOwner := make(map[int64]int, len(moves))
	for i, m := range moves {
		at, ok := byOwner[m.ID]
		if !ok {
			c := cur[m.ID]
			walks = append(walks, walk{sortKey: c.SortKey})
			at = len(walks) - 1
			if c.State != nil {
				s := models.State(*c.State)
				walks[at].state = &s
			}
			byOwner[m.ID] = at
		}
		w := &walks[at]
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
				w.plan = append(w.plan, planned{index: i, id: m.ID, taskID: m.TaskID, from: w.state, to: m.To, event: event,
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
	plan := make([]planned, 0, len(moves))
	var refused []*TransitionError
	for i := range walks {
		w := &walks[i]
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

// encodeMeta returns metadata with "event" set to event, encoded as json.Marshal encodes it
// (keys sorted). Metadata of plain strings, integers, booleans and nulls, which is what the
// engine records with every transition, is encoded directly (appendPlainMeta), without
// json.Marshal's reflection; anything else goes through json.Marshal.
func encodeMeta(metadata map[string]any, event string) (json.RawMessage, error) {
	if b, ok := appendPlainMeta(metadata, event); ok {
		return b, nil
	}
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

// appendPlainMeta encodes metadata plus "event" as json.Marshal does, when every key and value
// is plain: a string of printable ASCII that JSON needs no escape for (json.Marshal escapes
// ", \, <, > and &), an int, an int64, a bool or nil. It reports false for anything else.
func appendPlainMeta(metadata map[string]any, event string) ([]byte, bool) {
	keys := make([]string, 0, len(metadata)+1)
	for k := range metadata {
		if k != "event" {
			keys = append(keys, k)
		}
	}
	keys = append(keys, "event")
	slices.Sort(keys)
	b := make([]byte, 0, 96)
	b = append(b, '{')
	for i, k := range keys {
		if !plainJSON(k) {
			return nil, false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(append(b, '"'), k...), '"', ':')
		var v any = event
		if k != "event" {
			v = metadata[k]
		}
		switch x := v.(type) {
		case string:
			if !plainJSON(x) {
				return nil, false
			}
			b = append(append(append(b, '"'), x...), '"')
		case int:
			b = strconv.AppendInt(b, int64(x), 10)
		case int64:
			b = strconv.AppendInt(b, x, 10)
		case bool:
			b = strconv.AppendBool(b, x)
		case nil:
			b = append(b, "null"...)
		default:
			return nil, false
		}
	}
	return append(b, '}'), true
}

// plainJSON reports whether s encodes in JSON as itself between quotes (json.Marshal's
// escaping included).
func plainJSON(s string) bool {
	for i := range len(s) {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// writePlan clears the current rows of the moved owners and inserts the planned rows, one
// statement each; the owner's last planned row becomes its one current row. Unless read, the
// inserted rows are only counted, and no transition is returned.
func writePlan(ctx context.Context, tx *store.Store, o owner, plan []planned, cur map[int64]store.OwnerState, read bool) ([]Transition, error) {
	if len(plan) == 0 {
		return nil, nil
	}
	rows := make([]store.TransitionRow, len(plan))
	var cleared []int64 // the moved owners that have a current row
	for i, p := range plan {
		rows[i] = store.TransitionRow{Owner: p.id, ToState: string(p.to), Metadata: p.meta, SortKey: p.sortKey, MostRecent: p.last,
			TaskID: p.taskID}
		if p.from != nil {
			f := string(*p.from)
			rows[i].FromState = &f
		}
		if cur[p.id].State != nil && !slices.Contains(cleared, p.id) {
			cleared = append(cleared, p.id)
		}
	}
	if !read {
		n, err := tx.WriteTransitionsUnread(ctx, o.store, cleared, rows)
		if err == nil && n != int64(len(rows)) {
			err = fmt.Errorf("%d of %d transitions written", n, len(rows))
		}
		if err != nil {
			return nil, fmt.Errorf("moving %ss: %w", o.kind, err)
		}
		return nil, nil
	}
	inserted, err := tx.WriteTransitions(ctx, o.store, cleared, rows)
	if err != nil {
		return nil, fmt.Errorf("moving %ss: %w", o.kind, err)
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

// Metadata checks that a move of kind from from to to is in the transition table (not its
// guards: the caller proves them) and returns the metadata its transition row carries:
// metadata with the move's event, encoded as every writer of this package encodes it. It is
// for writers that write the rows in the database's own statements (the engine's busy path,
// migration 00066) from moves this package has checked.
func Metadata(kind Kind, from, to models.State, metadata map[string]any) (json.RawMessage, error) {
	event, err := checkMove(kind, 0, from, to, nil)
	if err != nil {
		return nil, err
	}
	return encodeMeta(metadata, event)
}
