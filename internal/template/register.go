package template

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"gorm.io/gorm"
)

// registrationLock is the transaction-level advisory lock key that serialises template
// registrations across processes, so that concurrent registrations neither fail nor duplicate.
const registrationLock int64 = 0x7461736b657201 // "tasker" + 1

// Registration is where a template lives in the template tables.
type Registration struct {
	TaskNamespaceID int64
	NamedTaskID     int64
	// NamedStepIDs maps each step name of the template to its named_step_id.
	NamedStepIDs map[string]int64
	// Created is true when this call inserted the named task.
	Created bool
}

// querier is what both *sql.DB and *sql.Tx offer; inside a GORM transaction
// tx.Statement.ConnPool is one.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func changedError(t *Template, storedHash string) error {
	return fmt.Errorf("%w: %s (file %s; stored hash %.12s, file hash %.12s): publish the change under a new version",
		ErrChanged, t.Key(), t.File, storedHash, t.Hash)
}

// Lookup finds the registration of t without writing anything. found is false when t's
// namespace/name/version is not registered; a registration with a different definition is an
// error wrapping ErrChanged.
func Lookup(ctx context.Context, db *gorm.DB, t *Template) (reg Registration, found bool, err error) {
	q, ok := db.WithContext(ctx).Statement.ConnPool.(querier)
	if !ok {
		return reg, false, errors.New("looking up template: the connection pool cannot run queries")
	}
	return lookup(ctx, q, t)
}

func lookup(ctx context.Context, q querier, t *Template) (reg Registration, found bool, err error) {
	var hash sql.NullString
	err = q.QueryRowContext(ctx, `
		SELECT nt.task_namespace_id, nt.named_task_id, nt.configuration->>'hash'
		FROM tasker_named_tasks nt
		JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
		WHERE ns.name = $1 AND nt.name = $2 AND nt.version = $3`,
		t.Namespace, t.Name, t.Version).Scan(&reg.TaskNamespaceID, &reg.NamedTaskID, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return reg, false, nil
	}
	if err != nil {
		return reg, false, fmt.Errorf("looking up template %s: %w", t.Key(), err)
	}
	if hash.String != t.Hash {
		return reg, true, changedError(t, hash.String)
	}
	rows, err := q.QueryContext(ctx, `
		SELECT s.name, s.named_step_id
		FROM tasker_named_tasks_named_steps nts
		JOIN tasker_named_steps s ON s.named_step_id = nts.named_step_id
		WHERE nts.named_task_id = $1`, reg.NamedTaskID)
	if err != nil {
		return reg, true, fmt.Errorf("reading named steps of %s: %w", t.Key(), err)
	}
	defer rows.Close()
	reg.NamedStepIDs = make(map[string]int64, len(t.Steps))
	for rows.Next() {
		var name string
		var id int64
		if err := rows.Scan(&name, &id); err != nil {
			return reg, true, fmt.Errorf("reading named steps of %s: %w", t.Key(), err)
		}
		reg.NamedStepIDs[name] = id
	}
	if err := rows.Err(); err != nil {
		return reg, true, fmt.Errorf("reading named steps of %s: %w", t.Key(), err)
	}
	for _, s := range t.Steps {
		if _, ok := reg.NamedStepIDs[s.Name]; !ok {
			return reg, true, fmt.Errorf("template %s is registered without its step %q", t.Key(), s.Name)
		}
	}
	return reg, true, nil
}

// Ensure returns t's registration, registering t first when it is not registered yet. The
// common case (already registered) costs two reads and writes nothing.
func Ensure(ctx context.Context, db *gorm.DB, t *Template) (Registration, error) {
	reg, found, err := Lookup(ctx, db, t)
	if err != nil || found {
		return reg, err
	}
	return Register(ctx, db, t)
}

// Register writes t into the template tables in one transaction: its namespace (created when
// missing), dependent systems, named steps, the named task (configuration = the normalised
// template with its hash) and the per-template step defaults. Registering the same version
// with an identical definition writes nothing; a different definition under a registered
// version is refused with an error wrapping ErrChanged. Registrations are serialised by an
// advisory lock, so concurrent registrations from several processes neither fail nor
// duplicate rows.
func Register(ctx context.Context, db *gorm.DB, t *Template) (Registration, error) {
	var reg Registration
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		q, ok := tx.Statement.ConnPool.(querier)
		if !ok {
			return errors.New("the transaction cannot run queries")
		}
		if _, err := q.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, registrationLock); err != nil {
			return fmt.Errorf("taking the registration lock: %w", err)
		}
		var found bool
		var err error
		if reg, found, err = lookup(ctx, q, t); err != nil || found {
			return err
		}
		reg, err = insert(ctx, q, t)
		return err
	})
	if err != nil {
		return Registration{}, fmt.Errorf("registering template %s: %w", t.Key(), err)
	}
	return reg, nil
}

func insert(ctx context.Context, q querier, t *Template) (Registration, error) {
	reg := Registration{Created: true, NamedStepIDs: make(map[string]int64, len(t.Steps))}
	err := q.QueryRowContext(ctx, `
		WITH ins AS (
			INSERT INTO tasker_task_namespaces (name) VALUES ($1)
			ON CONFLICT (name) DO NOTHING RETURNING task_namespace_id)
		SELECT task_namespace_id FROM ins
		UNION ALL SELECT task_namespace_id FROM tasker_task_namespaces WHERE name = $1
		LIMIT 1`, t.Namespace).Scan(&reg.TaskNamespaceID)
	if err != nil {
		return reg, fmt.Errorf("writing namespace %q: %w", t.Namespace, err)
	}

	systemSet := map[string]bool{}
	for _, s := range t.Steps {
		systemSet[s.DependentSystem] = true
	}
	systems := make([]string, 0, len(systemSet))
	for s := range systemSet {
		systems = append(systems, s)
	}
	sort.Strings(systems)
	if _, err := q.ExecContext(ctx, `
		INSERT INTO tasker_dependent_systems (name)
		SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING`, systems); err != nil {
		return reg, fmt.Errorf("writing dependent systems: %w", err)
	}

	stepSystems := make([]string, len(t.Steps))
	stepNames := make([]string, len(t.Steps))
	stepDescs := make([]string, len(t.Steps))
	for i, s := range t.Steps {
		stepSystems[i], stepNames[i], stepDescs[i] = s.DependentSystem, s.Name, s.Description
	}
	if _, err := q.ExecContext(ctx, `
		INSERT INTO tasker_named_steps (dependent_system_id, name, description)
		SELECT ds.dependent_system_id, u.name, NULLIF(u.description, '')
		FROM unnest($1::text[], $2::text[], $3::text[]) AS u (system, name, description)
		JOIN tasker_dependent_systems ds ON ds.name = u.system
		ORDER BY ds.dependent_system_id, u.name
		ON CONFLICT (dependent_system_id, name) DO NOTHING`, stepSystems, stepNames, stepDescs); err != nil {
		return reg, fmt.Errorf("writing named steps: %w", err)
	}
	rows, err := q.QueryContext(ctx, `
		SELECT u.name, s.named_step_id
		FROM unnest($1::text[], $2::text[]) AS u (system, name)
		JOIN tasker_dependent_systems ds ON ds.name = u.system
		JOIN tasker_named_steps s ON s.dependent_system_id = ds.dependent_system_id AND s.name = u.name`,
		stepSystems, stepNames)
	if err != nil {
		return reg, fmt.Errorf("reading named steps: %w", err)
	}
	for rows.Next() {
		var name string
		var id int64
		if err := rows.Scan(&name, &id); err != nil {
			rows.Close()
			return reg, fmt.Errorf("reading named steps: %w", err)
		}
		reg.NamedStepIDs[name] = id
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return reg, fmt.Errorf("reading named steps: %w", err)
	}
	if len(reg.NamedStepIDs) != len(t.Steps) {
		return reg, fmt.Errorf("writing named steps: %d of %d found after insert", len(reg.NamedStepIDs), len(t.Steps))
	}

	err = q.QueryRowContext(ctx, `
		INSERT INTO tasker_named_tasks (task_namespace_id, name, version, description, configuration)
		VALUES ($1, $2, $3, NULLIF($4, ''), $5::jsonb)
		RETURNING named_task_id`,
		reg.TaskNamespaceID, t.Name, t.Version, t.Description, string(t.Configuration())).Scan(&reg.NamedTaskID)
	if err != nil {
		return reg, fmt.Errorf("writing named task: %w", err)
	}

	ids := make([]int64, len(t.Steps))
	retryable := make([]bool, len(t.Steps))
	limits := make([]int32, len(t.Steps))
	skippable := make([]bool, len(t.Steps))
	for i, s := range t.Steps {
		ids[i], retryable[i], limits[i], skippable[i] = reg.NamedStepIDs[s.Name], s.Retryable, int32(s.RetryLimit), s.Skippable
	}
	if _, err := q.ExecContext(ctx, `
		INSERT INTO tasker_named_tasks_named_steps
			(named_task_id, named_step_id, default_retryable, default_retry_limit, skippable)
		SELECT $1, u.named_step_id, u.retryable, u.retry_limit, u.skippable
		FROM unnest($2::bigint[], $3::boolean[], $4::integer[], $5::boolean[])
			AS u (named_step_id, retryable, retry_limit, skippable)`,
		reg.NamedTaskID, ids, retryable, limits, skippable); err != nil {
		return reg, fmt.Errorf("writing step defaults: %w", err)
	}
	return reg, nil
}

// RegisterAll registers every template of the registry (see Register), in Templates order.
func (r *Registry) RegisterAll(ctx context.Context, db *gorm.DB) error {
	for _, t := range r.Templates() {
		if _, err := Register(ctx, db, t); err != nil {
			return err
		}
	}
	return nil
}
