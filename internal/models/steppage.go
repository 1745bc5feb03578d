package models

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
)

// StepFilter selects steps for ReadinessPage; zero fields do not filter, and every given
// condition must hold.
type StepFilter struct {
	// Ready, when set, keeps the steps whose ready_for_execution equals it.
	Ready *bool
	// States keeps the steps whose current state is one of these.
	States []State
	// BlockingReasons keeps the steps whose blocking_reason is one of these (ready steps have
	// none, so they never match).
	BlockingReasons []BlockingReason
	// Namespace keeps the steps of tasks in the namespace of this name.
	Namespace string
	// TaskID keeps the steps of this task.
	TaskID int64
}

// Which partial indexes of tasker_workflow_steps a page can walk instead of the primary key
// (the readiness view passes the step's processed and in_process flags through). A ready step
// is neither processed nor claimed (SEMANTICS §3.3, conditions 2 and 5); a step blocked for
// any reason after in_progress in the ladder of §3.4 is neither either, since an earlier
// reason would have applied; a step blocked as in_progress is not processed, and claimed or
// not. These implications come from the rules alone, not from what the engine happens to
// write, so adding the matching predicate never changes a result: it only lets the planner
// walk tasker_workflow_steps_claimable_idx (NOT processed AND NOT in_process) and, for
// in_progress, also tasker_workflow_steps_claimed_idx (NOT processed AND in_process), rather
// than every step ever run.
const (
	scanAll = iota
	scanUnprocessed
	scanClaimable
)

func (f StepFilter) scan() int {
	if f.Ready != nil && *f.Ready {
		return scanClaimable
	}
	if len(f.BlockingReasons) == 0 {
		return scanAll
	}
	s := scanClaimable
	for _, r := range f.BlockingReasons {
		switch r {
		case ReasonAlreadyProcessed:
			return scanAll
		case ReasonInProgress:
			s = scanUnprocessed
		}
	}
	return s
}

// onlyReady reports whether f asks for the ready steps and nothing else.
func (f StepFilter) onlyReady() bool {
	return f.Ready != nil && *f.Ready && len(f.States) == 0 && len(f.BlockingReasons) == 0 &&
		f.Namespace == "" && f.TaskID == 0
}

// Validate refuses a filter naming a state or blocking reason the views do not know.
func (f StepFilter) Validate() error {
	for _, s := range f.States {
		if _, err := ParseState(string(s)); err != nil {
			return err
		}
	}
	for _, r := range f.BlockingReasons {
		if !slices.Contains(BlockingReasons, r) {
			return fmt.Errorf("unknown blocking reason %q (want one of %s)", r, joinLabels(BlockingReasons))
		}
	}
	if f.TaskID < 0 {
		return fmt.Errorf("task id %d is not positive", f.TaskID)
	}
	return nil
}

// ReadinessPage reads up to limit rows of tasker_step_readiness_statuses whose steps match f,
// newest first (step id descending), with ids below beforeID when it is positive. It runs one
// statement, built with only the conditions f gives so that its plan (custom or generic)
// is the plan of that question: the rows are walked in step id order through the primary
// key or a partial index of unfinished steps (see scan) and stop at limit, so the statement
// never reads the history of finished steps to answer "what is ready" or "what is blocked".
func ReadinessPage(ctx context.Context, db *gorm.DB, f StepFilter, beforeID int64, limit int) ([]StepReadinessStatus, error) {
	if limit <= 0 {
		return nil, errors.New("reading steps page: limit must be positive")
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("reading steps page: %w", err)
	}
	q, args := readinessPageSQL(f, beforeID, limit)
	rows, err := db.WithContext(ctx).Raw(q, args...).Rows()
	return scanRows("reading steps page", readinessColumns, readReadiness, rows, err)
}

// readinessPageSQL builds ReadinessPage's statement for a valid filter, with ? placeholders.
// The unfinished steps are walked as two branches, unclaimed and claimed, each on its partial
// index in step id order, merged newest first.
func readinessPageSQL(f StepFilter, beforeID int64, limit int) (string, []any) {
	if f.onlyReady() {
		// "What can run now?" across the database: a read function, planned once per
		// connection (db/migrations/00038_read_ready_steps.sql), walks the same index.
		if beforeID <= 0 {
			beforeID = math.MaxInt64
		}
		return `SELECT * FROM tasker_read_ready_steps(?, ?)`, []any{beforeID, limit}
	}
	switch f.scan() {
	case scanClaimable:
		q, args := readinessBranch(f, beforeID, ` AND NOT r.processed AND NOT r.in_process`)
		return q + ` ORDER BY r.workflow_step_id DESC LIMIT ?`, append(args, limit)
	case scanUnprocessed:
		unclaimed := ` AND NOT r.processed AND NOT r.in_process`
		if len(f.BlockingReasons) == 1 {
			// Only in_progress is asked: an unclaimed step has it only in state in_progress.
			unclaimed += ` AND r.workflow_step_id IN (SELECT tr.workflow_step_id
			FROM tasker_workflow_step_transitions tr WHERE tr.most_recent AND tr.to_state = 'in_progress')`
		}
		q1, args1 := readinessBranch(f, beforeID, unclaimed)
		q2, args2 := readinessBranch(f, beforeID, ` AND NOT r.processed AND r.in_process`)
		return `SELECT * FROM ((` + q1 + ` ORDER BY r.workflow_step_id DESC LIMIT ?) UNION ALL (` +
				q2 + ` ORDER BY r.workflow_step_id DESC LIMIT ?)) AS r ORDER BY r.workflow_step_id DESC LIMIT ?`,
			append(append(append(args1, limit), append(args2, limit)...), limit)
	}
	q, args := readinessBranch(f, beforeID, "")
	return q + ` ORDER BY r.workflow_step_id DESC LIMIT ?`, append(args, limit)
}

// readinessBranch selects the readiness rows matching f, below beforeID, and scan (extra
// conditions on r), unordered.
func readinessBranch(f StepFilter, beforeID int64, scan string) (string, []any) {
	var q strings.Builder
	var args []any
	q.WriteString(`SELECT r.* FROM tasker_step_readiness_statuses r WHERE true` + scan)
	if beforeID > 0 {
		q.WriteString(` AND r.workflow_step_id < ?`)
		args = append(args, beforeID)
	}
	if f.TaskID > 0 {
		q.WriteString(` AND r.task_id = ?`)
		args = append(args, f.TaskID)
	}
	if f.Namespace != "" {
		q.WriteString(` AND r.task_id IN (SELECT t.task_id FROM tasker_tasks t
		JOIN tasker_named_tasks n ON n.named_task_id = t.named_task_id
		JOIN tasker_task_namespaces ns ON ns.task_namespace_id = n.task_namespace_id
		WHERE ns.name = ?)`)
		args = append(args, f.Namespace)
	}
	if f.Ready != nil {
		if *f.Ready {
			q.WriteString(` AND r.ready_for_execution`)
		} else {
			q.WriteString(` AND NOT r.ready_for_execution`)
		}
	}
	if len(f.States) > 0 {
		q.WriteString(` AND r.current_state = ANY(CAST(? AS text[]))`)
		args = append(args, database.Array[State](f.States))
	}
	if len(f.BlockingReasons) > 0 {
		q.WriteString(` AND r.blocking_reason = ANY(CAST(? AS text[]))`)
		args = append(args, database.Array[BlockingReason](f.BlockingReasons))
	}
	return q.String(), args
}
