package models

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
)

// The readers of the API's hottest reads scan their rows without GORM's reflection, which cost
// more than the rest of a request's Go work: by position, into the same models, with the
// conversions GORM makes (null to nil, json as it came, jsonb id arrays decoded). A row of a
// width other than its reader's is an error (database/sql checks the count), so a read
// function or view that gains a column fails its readers' tests rather than shifting them.

// The columns of the rows of the read functions and views read this way.
const (
	taskColumns       = 14                                          // tasker_read_tasks
	stepColumns       = 18                                          // tasker_read_steps
	readinessColumns  = 19                                          // tasker_step_readiness_statuses
	dagColumns        = 11                                          // tasker_step_dag_relationships
	stepDetailColumns = stepColumns + readinessColumns + dagColumns // tasker_read_step_details
)

// scanRows returns read of each of rows (as a query returned them, with err), which must have
// n columns, in order, and closes rows; doing names the read in errors.
func scanRows[T any](doing string, n int, read func(*rawRow) (T, error), rows *sql.Rows, err error) ([]T, error) {
	if err != nil {
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	defer rows.Close()
	out := []T{}
	r, dest := newRawRow(n)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("%s: %w", doing, err)
		}
		v, err := read(r)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", doing, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	return out, nil
}

// scanByIDs runs query, whose only parameter ($1) is ids, on db's connection pool (or
// transaction) directly, without GORM's statement building, and returns read of each row as
// scanRows does; no ids means no statement.
func scanByIDs[T any](ctx context.Context, db *gorm.DB, doing string, n int, read func(*rawRow) (T, error), ids []int64, query string) ([]T, error) {
	if len(ids) == 0 {
		return []T{}, nil
	}
	rows, err := db.Statement.ConnPool.QueryContext(ctx, query, database.Array[int64](ids))
	return scanRows(doing, n, read, rows, err)
}

// The readers of one row of each kind, from column 0.
func readTask(r *rawRow) (TaskRecord, error)               { return r.task(0), nil }
func readStep(r *rawRow) (StepRecord, error)               { return r.step(0), nil }
func readReadiness(r *rawRow) (StepReadinessStatus, error) { return r.readiness(0), nil }
func readDag(r *rawRow) (StepDagRelationship, error)       { return r.dag(0) }
func readStepDetail(r *rawRow) (StepDetail, error)         { return r.stepDetail(0, true) }

// rawRow is one row as the driver returns it: nil for null, else int64, bool, string,
// time.Time or []byte (json).
type rawRow struct {
	v []any
}

// newRawRow returns a row of n columns and the scan destinations that fill it.
func newRawRow(n int) (*rawRow, []any) {
	r := &rawRow{v: make([]any, n)}
	dest := make([]any, n)
	for i := range r.v {
		dest[i] = &r.v[i]
	}
	return r, dest
}

func (r *rawRow) int(i int) int64 {
	n, _ := r.v[i].(int64)
	return n
}

func (r *rawRow) intPtr(i int) *int {
	n, ok := r.v[i].(int64)
	if !ok {
		return nil
	}
	v := int(n)
	return &v
}

func (r *rawRow) bool(i int) bool {
	b, _ := r.v[i].(bool)
	return b
}

func (r *rawRow) str(i int) string {
	switch s := r.v[i].(type) {
	case string:
		return s
	case []byte:
		return string(s)
	}
	return ""
}

func (r *rawRow) strPtr(i int) *string {
	if r.v[i] == nil {
		return nil
	}
	s := r.str(i)
	return &s
}

func (r *rawRow) time(i int) time.Time {
	t, _ := r.v[i].(time.Time)
	return t
}

func (r *rawRow) timePtr(i int) *time.Time {
	t, ok := r.v[i].(time.Time)
	if !ok {
		return nil
	}
	return &t
}

// json returns a json column as it came (nil for null).
func (r *rawRow) json(i int) json.RawMessage {
	switch b := r.v[i].(type) {
	case []byte:
		return b
	case string:
		return json.RawMessage(b)
	}
	return nil
}

// ids decodes a json array of step ids.
func (r *rawRow) ids(i int) ([]int64, error) {
	raw := r.json(i)
	if raw == nil {
		return nil, nil
	}
	ids, err := parseIDArray(raw)
	if err != nil {
		return nil, fmt.Errorf("column %d: %w", i, err)
	}
	return ids, nil
}

// task reads a row of tasker_read_tasks from column c.
func (r *rawRow) task(c int) TaskRecord {
	return TaskRecord{
		Task: Task{
			TaskID: r.int(c), NamedTaskID: r.int(c + 1), Complete: r.bool(c + 2), RequestedAt: r.time(c + 3),
			Initiator: r.strPtr(c + 4), SourceSystem: r.strPtr(c + 5), Reason: r.strPtr(c + 6),
			Tags: r.json(c + 7), Context: r.json(c + 8), IdentityHash: r.str(c + 9),
			CreatedAt: r.time(c + 10), UpdatedAt: r.time(c + 11),
		},
		TaskNamespaceID: r.int(c + 12),
		Status:          State(r.str(c + 13)),
	}
}

// step reads a row of tasker_read_steps from column c.
func (r *rawRow) step(c int) StepRecord {
	return StepRecord{
		WorkflowStep: WorkflowStep{
			WorkflowStepID: r.int(c), TaskID: r.int(c + 1), NamedStepID: r.int(c + 2), Retryable: r.bool(c + 3),
			RetryLimit: r.intPtr(c + 4), Attempts: r.intPtr(c + 5), LastAttemptedAt: r.timePtr(c + 6),
			BackoffRequestSeconds: r.intPtr(c + 7), Processed: r.bool(c + 8), ProcessedAt: r.timePtr(c + 9),
			InProcess: r.bool(c + 10), Skippable: r.bool(c + 11), Inputs: r.json(c + 12), Results: r.json(c + 13),
			CreatedAt: r.time(c + 14), UpdatedAt: r.time(c + 15),
		},
		Name:   r.str(c + 16),
		Status: State(r.str(c + 17)),
	}
}

// readiness reads a row of tasker_step_readiness_statuses from column c.
func (r *rawRow) readiness(c int) StepReadinessStatus {
	s := StepReadinessStatus{
		WorkflowStepID: r.int(c), TaskID: r.int(c + 1), NamedStepID: r.int(c + 2), Name: r.str(c + 3),
		CurrentState: State(r.str(c + 4)), DependenciesSatisfied: r.bool(c + 5), RetryEligible: r.bool(c + 6),
		ReadyForExecution: r.bool(c + 7), LastFailureAt: r.timePtr(c + 8), NextRetryAt: r.timePtr(c + 9),
		TotalParents: int(r.int(c + 10)), CompletedParents: int(r.int(c + 11)), Attempts: int(r.int(c + 12)),
		RetryLimit: int(r.int(c + 13)), BackoffRequestSeconds: r.intPtr(c + 14), LastAttemptedAt: r.timePtr(c + 15),
	}
	if r.v[c+16] != nil {
		reason := BlockingReason(r.str(c + 16))
		s.BlockingReason = &reason
	}
	return s
}

// dag reads a row of tasker_step_dag_relationships from column c.
func (r *rawRow) dag(c int) (StepDagRelationship, error) {
	parents, err := r.ids(c + 3)
	if err != nil {
		return StepDagRelationship{}, err
	}
	children, err := r.ids(c + 4)
	if err != nil {
		return StepDagRelationship{}, err
	}
	return StepDagRelationship{
		WorkflowStepID: r.int(c), TaskID: r.int(c + 1), NamedStepID: r.int(c + 2),
		ParentStepIDs: parents, ChildStepIDs: children, ParentCount: int(r.int(c + 5)), ChildCount: int(r.int(c + 6)),
		IsRootStep: r.bool(c + 7), IsLeafStep: r.bool(c + 8), MinDepthFromRoot: int(r.int(c + 9)),
		DependencyLevel: int(r.int(c + 10)),
	}, nil
}

// stepDetail reads a row of tasker_read_step_details from column c: the step, and its
// readiness and DAG rows when details.
func (r *rawRow) stepDetail(c int, details bool) (StepDetail, error) {
	d := StepDetail{Step: r.step(c)}
	if !details {
		return d, nil
	}
	d.Readiness = r.readiness(c + stepColumns)
	dag, err := r.dag(c + stepColumns + readinessColumns)
	d.Dag = dag
	return d, err
}

// parseIDArray decodes a JSON array of integers, such as a DAG row's parent_step_ids, without
// reflection; anything else is an error naming the text.
func parseIDArray(raw []byte) ([]int64, error) {
	bad := func() ([]int64, error) { return nil, fmt.Errorf("not a JSON array of integers: %.100s", raw) }
	i := 0
	space := func() {
		for i < len(raw) && (raw[i] == ' ' || raw[i] == '\n' || raw[i] == '\t' || raw[i] == '\r') {
			i++
		}
	}
	space()
	if i == len(raw) || raw[i] != '[' {
		return bad()
	}
	i++
	out := []int64{}
	space()
	if i < len(raw) && raw[i] == ']' {
		i++
		space()
		if i != len(raw) {
			return bad()
		}
		return out, nil
	}
	for {
		space()
		start := i
		if i < len(raw) && raw[i] == '-' {
			i++
		}
		for i < len(raw) && raw[i] >= '0' && raw[i] <= '9' {
			i++
		}
		n, err := strconv.ParseInt(string(raw[start:i]), 10, 64)
		if err != nil {
			return bad()
		}
		out = append(out, n)
		space()
		if i == len(raw) {
			return bad()
		}
		if raw[i] == ']' {
			i++
			space()
			if i != len(raw) {
				return bad()
			}
			return out, nil
		}
		if raw[i] != ',' {
			return bad()
		}
		i++
	}
}
