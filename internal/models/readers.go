package models

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
)

// The batch readers below serve the GraphQL API's dataloaders. Each runs exactly one SQL
// statement whatever the number of ids, and returns rows in a documented order; callers map
// rows back to their keys. The reads by id go through the tasker_read_* functions
// (db/migrations/00037_read_functions.sql), whose statements are planned once per connection
// rather than at every execution. The hottest (tasks, steps, readiness and DAG rows) are
// scanned without GORM (rowscan.go).

// TaskRecord is a task with what a client reads with it: its current state and the namespace
// of its named task.
type TaskRecord struct {
	Task            `gorm:"embedded"`
	Status          State
	TaskNamespaceID int64
}

// StepRecord is a workflow step with its named step's name and its current state. Attempts
// and RetryLimit are never nil (null reads as 0 and 3, as in SEMANTICS §3.2).
type StepRecord struct {
	WorkflowStep `gorm:"embedded"`
	Name         string
	Status       State
}

// StepTransitionRecord is a step transition with the task of its step.
type StepTransitionRecord struct {
	WorkflowStepTransition `gorm:"embedded"`
	TaskID                 int64
}

// TaskTransitionRecord is a task transition.
type TaskTransitionRecord struct {
	TaskTransition `gorm:"embedded"`
	// Namespace is the name of the task's namespace, read by TaskTransitionsWithNamespaceAfter
	// only (empty otherwise).
	Namespace string `gorm:"->;column:namespace"`
}

const taskRecordSelect = `SELECT t.*, n.task_namespace_id,
	coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
		WHERE tt.task_id = t.task_id AND tt.most_recent), 'pending') AS status
	FROM tasker_tasks t JOIN tasker_named_tasks n ON n.named_task_id = t.named_task_id`

// TasksByIDs reads the given tasks, by task id.
func TasksByIDs(ctx context.Context, db *gorm.DB, ids []int64) ([]TaskRecord, error) {
	return scanByIDs(ctx, db, "reading tasks by id", taskColumns, readTask, ids, `SELECT * FROM tasker_read_tasks($1)`)
}

// StepsByIDs reads the given steps, by step id.
func StepsByIDs(ctx context.Context, db *gorm.DB, ids []int64) ([]StepRecord, error) {
	return scanByIDs(ctx, db, "reading steps by id", stepColumns, readStep, ids, `SELECT * FROM tasker_read_steps(false, $1)`)
}

// StepsByTaskIDs reads every step of the given tasks, by task id then step id.
func StepsByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]StepRecord, error) {
	return scanByIDs(ctx, db, "reading steps by task id", stepColumns, readStep, taskIDs, `SELECT * FROM tasker_read_steps(true, $1)`)
}

// StepTransitionsByStepIDs reads the transitions of the given steps, by step id then sort key.
func StepTransitionsByStepIDs(ctx context.Context, db *gorm.DB, stepIDs []int64) ([]StepTransitionRecord, error) {
	return rawRows[StepTransitionRecord](ctx, db, "reading step transitions", stepIDs,
		`SELECT * FROM tasker_read_step_transitions(false, ?)`)
}

// StepTransitionsByTaskIDs reads the transitions of every step of the given tasks, by step id
// then sort key.
func StepTransitionsByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]StepTransitionRecord, error) {
	return rawRows[StepTransitionRecord](ctx, db, "reading step transitions by task", taskIDs,
		`SELECT * FROM tasker_read_step_transitions(true, ?)`)
}

// TaskTransitionsByTaskIDs reads the transitions of the given tasks, by task id then sort key.
func TaskTransitionsByTaskIDs(ctx context.Context, db *gorm.DB, taskIDs []int64) ([]TaskTransitionRecord, error) {
	return rawRows[TaskTransitionRecord](ctx, db, "reading task transitions", taskIDs,
		`SELECT * FROM tasker_read_task_transitions(?)`)
}

// NamedTasksByIDs reads the given named tasks, by id.
func NamedTasksByIDs(ctx context.Context, db *gorm.DB, ids []int64) ([]NamedTask, error) {
	return rawRows[NamedTask](ctx, db, "reading named tasks by id", ids,
		`SELECT * FROM tasker_named_tasks WHERE named_task_id = ANY(?::bigint[]) ORDER BY named_task_id`)
}

// NamespacesByIDs reads the given namespaces, by id.
func NamespacesByIDs(ctx context.Context, db *gorm.DB, ids []int64) ([]TaskNamespace, error) {
	return rawRows[TaskNamespace](ctx, db, "reading namespaces by id", ids,
		`SELECT * FROM tasker_task_namespaces WHERE task_namespace_id = ANY(?::bigint[]) ORDER BY task_namespace_id`)
}

// AllNamespaces reads every namespace, by name.
func AllNamespaces(ctx context.Context, db *gorm.DB) ([]TaskNamespace, error) {
	var rows []TaskNamespace
	if err := db.WithContext(ctx).Order("name").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading namespaces: %w", err)
	}
	return rows, nil
}

// NamedTasks reads the named tasks of the namespace called namespace (every one when it is
// empty), by namespace name, name and version.
func NamedTasks(ctx context.Context, db *gorm.DB, namespace string) ([]NamedTask, error) {
	var rows []NamedTask
	err := db.WithContext(ctx).Raw(`SELECT nt.* FROM tasker_named_tasks nt
		JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
		WHERE ? = '' OR ns.name = ?
		ORDER BY ns.name, nt.name, nt.version`, namespace, namespace).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("reading named tasks: %w", err)
	}
	return rows, nil
}

// TaskFilter selects tasks for TasksPage; zero fields do not filter.
type TaskFilter struct {
	Namespace     string
	NamedTask     string
	Version       string
	Statuses      []State
	CreatedAfter  *time.Time // created_at >= CreatedAfter
	CreatedBefore *time.Time // created_at < CreatedBefore
}

// TasksPage reads up to limit tasks matching f, newest first (task id descending), with ids
// below beforeID when it is positive. It runs one statement, built with only the conditions f
// gives, so that its plan is the plan of that question also when it is generic.
func TasksPage(ctx context.Context, db *gorm.DB, f TaskFilter, beforeID int64, limit int) ([]TaskRecord, error) {
	if limit <= 0 {
		return nil, errors.New("reading tasks page: limit must be positive")
	}
	var q strings.Builder
	var args []any
	cond := func(sql string, arg any) {
		q.WriteString(" AND " + sql)
		args = append(args, arg)
	}
	q.WriteString(`SELECT * FROM (` + taskRecordSelect + `
		JOIN tasker_task_namespaces ns ON ns.task_namespace_id = n.task_namespace_id WHERE true`)
	if beforeID > 0 {
		cond("t.task_id < ?", beforeID)
	}
	if f.Namespace != "" {
		cond("ns.name = ?", f.Namespace)
	}
	if f.NamedTask != "" {
		cond("n.name = ?", f.NamedTask)
	}
	if f.Version != "" {
		cond("n.version = ?", f.Version)
	}
	if f.CreatedAfter != nil {
		cond("t.created_at >= ?", *f.CreatedAfter)
	}
	if f.CreatedBefore != nil {
		cond("t.created_at < ?", *f.CreatedBefore)
	}
	q.WriteString(`) AS page WHERE true`)
	if len(f.Statuses) > 0 {
		cond("page.status = ANY(CAST(? AS text[]))", database.Array[State](f.Statuses))
	}
	q.WriteString(` ORDER BY page.task_id DESC LIMIT ?`)
	args = append(args, limit)
	var rows []TaskRecord
	if err := db.WithContext(ctx).Raw(q.String(), args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading tasks page: %w", err)
	}
	return rows, nil
}

// StepTransitionsAfter reads up to limit step transitions with id > afterID and not in
// exclude, by id, of the task taskID when it is positive. One statement, through the function
// tasker_step_transitions_after (db/migrations/00014_index_plans.sql), which keeps its index
// plan whatever the planner's statistics say.
func StepTransitionsAfter(ctx context.Context, db *gorm.DB, afterID int64, exclude []int64, taskID int64, limit int) ([]StepTransitionRecord, error) {
	return transitionsAfter[StepTransitionRecord](ctx, db, "step", afterID, exclude,
		`SELECT * FROM tasker_step_transitions_after(@after, CAST(@exclude AS bigint[]), @task, @limit)`,
		map[string]any{"task": taskID, "limit": limit})
}

// TaskTransitionsAfter reads up to limit task transitions with id > afterID and not in
// exclude, by id, of tasks in the namespace called namespace when it is not empty. One
// statement, through the function tasker_task_transitions_after (see StepTransitionsAfter).
func TaskTransitionsAfter(ctx context.Context, db *gorm.DB, afterID int64, exclude []int64, namespace string, limit int) ([]TaskTransitionRecord, error) {
	return transitionsAfter[TaskTransitionRecord](ctx, db, "task", afterID, exclude,
		`SELECT * FROM tasker_task_transitions_after(@after, CAST(@exclude AS bigint[]), @namespace, @limit)`,
		map[string]any{"namespace": namespace, "limit": limit})
}

// TaskTransitionsWithNamespaceAfter reads up to limit task transitions with id > afterID and
// not in exclude, by id, each with its task's namespace name in Namespace. One statement: the
// rows come from tasker_task_transitions_after (see TaskTransitionsAfter), and each row's
// namespace from a lookup by the task's primary key.
func TaskTransitionsWithNamespaceAfter(ctx context.Context, db *gorm.DB, afterID int64, exclude []int64, limit int) ([]TaskTransitionRecord, error) {
	return transitionsAfter[TaskTransitionRecord](ctx, db, "task", afterID, exclude, `SELECT tr.*, (SELECT ns.name FROM tasker_tasks t
			JOIN tasker_named_tasks n ON n.named_task_id = t.named_task_id
			JOIN tasker_task_namespaces ns ON ns.task_namespace_id = n.task_namespace_id
			WHERE t.task_id = tr.task_id) AS namespace
		FROM tasker_task_transitions_after(@after, CAST(@exclude AS bigint[]), '', @limit) tr
		ORDER BY tr.id`,
		map[string]any{"limit": limit})
}

// transitionsAfter runs query, a read of the transitions (of kind what) above afterID and not
// in exclude, with args and the named arguments @after and @exclude.
func transitionsAfter[T any](ctx context.Context, db *gorm.DB, what string, afterID int64, exclude []int64, query string, args map[string]any) ([]T, error) {
	args["after"], args["exclude"] = afterID, database.Array[int64](exclude)
	var rows []T
	if err := db.WithContext(ctx).Raw(query, args).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading %s transitions after %d: %w", what, afterID, err)
	}
	return rows, nil
}

// MaxStepTransitionID returns the largest step transition id (0 when there is none).
func MaxStepTransitionID(ctx context.Context, db *gorm.DB) (int64, error) {
	return maxID(ctx, db, "tasker_workflow_step_transitions")
}

// MaxTaskTransitionID returns the largest task transition id (0 when there is none).
func MaxTaskTransitionID(ctx context.Context, db *gorm.DB) (int64, error) {
	return maxID(ctx, db, "tasker_task_transitions")
}

func maxID(ctx context.Context, db *gorm.DB, table string) (int64, error) {
	var id int64
	if err := db.WithContext(ctx).Raw(`SELECT coalesce(max(id), 0) FROM ` + table).Row().Scan(&id); err != nil {
		return 0, fmt.Errorf("reading max id of %s: %w", table, err)
	}
	return id, nil
}

// rawRows runs one statement with ids as its only parameter; no ids means no statement.
func rawRows[T any](ctx context.Context, db *gorm.DB, doing string, ids []int64, query string) ([]T, error) {
	var rows []T
	if len(ids) == 0 {
		return rows, nil
	}
	if err := db.WithContext(ctx).Raw(query, database.Array[int64](ids)).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	return rows, nil
}
