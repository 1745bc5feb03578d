package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/taskerhq/tasker/internal/models"
)

// querier is what a *sql.Tx (and a *sql.DB) offers; the creation statements pass their
// columns as native arrays through it, with numbered parameters.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// pool is the connection (or transaction) under the store.
func (s *Store) pool(ctx context.Context) (querier, error) {
	q, ok := s.conn(ctx).Statement.ConnPool.(querier)
	if !ok {
		return nil, errors.New("the transaction cannot run queries")
	}
	return q, nil
}

// Task reads one task row.
func (s *Store) Task(ctx context.Context, taskID int64) (models.Task, error) {
	var task models.Task
	err := s.conn(ctx).First(&task, taskID).Error
	return task, err
}

// KeyedTask is a task that holds an idempotency key (by its identity hash), with its
// template's identity.
type KeyedTask struct {
	TaskID       int64
	IdentityHash string
	Namespace    string
	Name         string
	Version      string
}

// KeyedTasks reads the tasks that hold the identity hashes given, in one statement.
func (s *Store) KeyedTasks(ctx context.Context, identities []string) ([]KeyedTask, error) {
	var rows []KeyedTask
	err := s.conn(ctx).Raw(`
		SELECT t.task_id, t.identity_hash, ns.name AS namespace, nt.name AS name, nt.version AS version
		FROM tasker_tasks t
		JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
		JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
		WHERE t.identity_hash IN ?`, identities).Scan(&rows).Error
	return rows, err
}

// NewTasks are the columns of tasks to insert, one entry per task in each.
type NewTasks struct {
	NamedTaskIDs                                                   []int64
	Initiators, SourceSystems, Reasons, Tags, Contexts, Identities []string
}

// InsertTasks inserts tasks in the order given, in one statement, skipping those whose
// identity hash a task already holds (waiting, as ON CONFLICT does, for a concurrent insert
// of the same hash to finish), and returns the ids of the tasks it inserted by identity hash.
// An empty initiator, source system or reason is stored as NULL.
func (s *Store) InsertTasks(ctx context.Context, t NewTasks) (map[string]int64, error) {
	q, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, `
		INSERT INTO tasker_tasks (named_task_id, initiator, source_system, reason, tags, context, identity_hash)
		SELECT u.named_task_id, NULLIF(u.initiator, ''), NULLIF(u.source_system, ''), NULLIF(u.reason, ''),
			u.tags::jsonb, u.context::jsonb, u.identity_hash
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
			WITH ORDINALITY AS u (named_task_id, initiator, source_system, reason, tags, context, identity_hash, ord)
		ORDER BY u.ord
		ON CONFLICT (identity_hash) DO NOTHING
		RETURNING task_id, identity_hash`,
		t.NamedTaskIDs, t.Initiators, t.SourceSystems, t.Reasons, t.Tags, t.Contexts, t.Identities)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]int64, len(t.Identities))
	for rows.Next() {
		var id int64
		var identity string
		if err := rows.Scan(&id, &identity); err != nil {
			return nil, err
		}
		out[identity] = id
	}
	return out, rows.Err()
}

// IdentifiedTask is the task that holds an identity hash, and its named task.
type IdentifiedTask struct{ TaskID, NamedTaskID int64 }

// TasksByIdentity reads the tasks that hold the identity hashes given, by hash.
func (s *Store) TasksByIdentity(ctx context.Context, identities []string) (map[string]IdentifiedTask, error) {
	q, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, `SELECT identity_hash, task_id, named_task_id FROM tasker_tasks WHERE identity_hash = ANY($1::text[])`, identities)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]IdentifiedTask, len(identities))
	for rows.Next() {
		var id string
		var t IdentifiedTask
		if err := rows.Scan(&id, &t.TaskID, &t.NamedTaskID); err != nil {
			return nil, err
		}
		out[id] = t
	}
	return out, rows.Err()
}

// TrustReferences skips the foreign-key checks of the rest of the current transaction, which
// must then write only references it has made true itself (see migration 00051), when the
// database role may do so, and reports whether it did. Every other constraint, and every
// trigger of the tables task creation and the engine write, still applies. It must run inside
// a transaction; the transaction must not delete (a cascade is skipped too).
func (s *Store) TrustReferences(ctx context.Context) (bool, error) {
	var trusted bool
	err := s.conn(ctx).Raw(`SELECT tasker_trust_references(true)`).Row().Scan(&trusted)
	if err != nil {
		return false, fmt.Errorf("trusting references: %w", err)
	}
	return trusted, nil
}

// planBulkWriteSQL is the boolean expression (always true) that sets the planner settings of
// a bulk write for the rest of the transaction (see PlanBulkWrite).
const planBulkWriteSQL = `set_config('plan_cache_mode', 'force_generic_plan', true) IS NOT NULL
	AND set_config('enable_seqscan', 'off', true) IS NOT NULL
	AND set_config('enable_bitmapscan', 'off', true) IS NOT NULL`

// PlanBulkWrite sets, for the rest of the current transaction, the planner settings of a
// transaction that writes many rows on the service's connections: plan_cache_mode
// force_generic_plan, with sequential and bitmap scans off. With trust, it also skips the
// foreign-key checks where the role may (TrustReferences), in the same statement, and reports
// whether it did.
//
// The service's connections plan every execution afresh (force_custom_plan, see
// internal/database), and that covers the statements PostgreSQL runs for a transaction by
// itself: the foreign-key check of every row written (one index lookup each) and the
// statements of PL/pgSQL triggers. Planned for every row, the checks of a batch of 1,000
// five-step tasks took about 550 of its 690 ms through the createTasks mutation (7,278 steps/s
// where the checks are skipped: 35,489); planned once per connection, 24,081 steps/s. The
// transaction's own statements then also keep a generic plan, which the scans turned off hold
// to the index plans whatever the tables' statistics were when it was made; every statement of
// task creation reads its rows by key or from the arrays it was given. The settings end with
// the transaction.
func (s *Store) PlanBulkWrite(ctx context.Context, trust bool) (trusted bool, err error) {
	trustCall := "false"
	if trust {
		trustCall = "tasker_trust_references(true)"
	}
	err = s.conn(ctx).Raw(`SELECT `+planBulkWriteSQL+`, `+trustCall).Row().Scan(new(bool), &trusted)
	if err != nil {
		return false, fmt.Errorf("setting the planner for a bulk write: %w", err)
	}
	return trusted, nil
}

// NewSteps are the columns of workflow steps to insert, one entry per step in each, with
// their DAG depths (dependency_level, min_depth_from_root) already computed, and each step's
// number of parents (Parents: its edges in NewEdges), which a new step still waits for
// (parents_left, migration 00070).
type NewSteps struct {
	TaskIDs, NamedStepIDs              []int64
	Retryable, Skippable               []bool
	RetryLimits, Levels, Mins, Parents []int32
	Inputs                             []string // JSON, or empty for none
}

// NewEdges are the edges between new steps, each named by its task and the named steps of
// its ends.
type NewEdges struct {
	TaskIDs, FromNamed, ToNamed []int64
}

// InsertSteps inserts steps and the edges between them in one statement, and returns how many
// edges it wrote. It tells the edges trigger that the depths are already stored (migration
// 00030): the caller guarantees the DAG is acyclic and both ends of every edge are steps of
// one new task (the join on task_id). The flag is set (local to the transaction) before the
// edges are inserted and the edges trigger turns it off again at the end of the statement.
func (s *Store) InsertSteps(ctx context.Context, st NewSteps, e NewEdges) (int64, error) {
	q, err := s.pool(ctx)
	if err != nil {
		return 0, err
	}
	res, err := q.ExecContext(ctx, `
		WITH flag AS MATERIALIZED (
			SELECT set_config('tasker.dag_levels_precomputed', 'on', true)
		), steps AS (
			INSERT INTO tasker_workflow_steps (task_id, named_step_id, retryable, retry_limit, skippable, inputs,
				dependency_level, min_depth_from_root, parents_left)
			SELECT u.task_id, u.named_step_id, u.retryable, u.retry_limit, u.skippable, NULLIF(u.inputs, '')::jsonb,
				u.level, u.min_depth, u.parents
			FROM flag, unnest($1::bigint[], $2::bigint[], $3::boolean[], $4::integer[], $5::boolean[], $6::text[],
				$7::integer[], $8::integer[], $12::integer[]) WITH ORDINALITY
				AS u (task_id, named_step_id, retryable, retry_limit, skippable, inputs, level, min_depth, parents, ord)
			ORDER BY u.ord
			RETURNING workflow_step_id, task_id, named_step_id
		)
		INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, name)
		SELECT f.workflow_step_id, c.workflow_step_id, 'provides'
		FROM unnest($9::bigint[], $10::bigint[], $11::bigint[]) AS e (task_id, from_named, to_named)
		JOIN steps f ON f.task_id = e.task_id AND f.named_step_id = e.from_named
		JOIN steps c ON c.task_id = e.task_id AND c.named_step_id = e.to_named`,
		st.TaskIDs, st.NamedStepIDs, st.Retryable, st.RetryLimits, st.Skippable, st.Inputs, st.Levels, st.Mins,
		e.TaskIDs, e.FromNamed, e.ToNamed, st.Parents)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("counting edges written: %w", err)
	}
	return n, nil
}
