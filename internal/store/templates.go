package store

import (
	"context"
	"database/sql"
	"errors"

	"github.com/taskerhq/tasker/internal/database"
)

// templateRegistrationLock is the transaction-level advisory lock key that serialises template
// registrations across processes, so that concurrent registrations neither fail nor duplicate.
const templateRegistrationLock int64 = 0x7461736b657201 // "tasker" + 1

// RegisteredTemplate is a registered template version: its namespace, its named task and the
// hash of the definition it was registered with.
type RegisteredTemplate struct {
	TaskNamespaceID int64
	NamedTaskID     int64
	Hash            string
}

// NamedTaskByVersion returns the named task namespace/name@version; found is false when it is
// not registered.
func (s *Store) NamedTaskByVersion(ctx context.Context, namespace, name, version string) (nt RegisteredTemplate, found bool, err error) {
	var hash sql.NullString
	err = s.conn(ctx).Raw(`
		SELECT nt.task_namespace_id, nt.named_task_id, nt.configuration->>'hash'
		FROM tasker_named_tasks nt
		JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
		WHERE ns.name = $1 AND nt.name = $2 AND nt.version = $3`,
		namespace, name, version).Row().Scan(&nt.TaskNamespaceID, &nt.NamedTaskID, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return RegisteredTemplate{}, false, nil
	}
	nt.Hash = hash.String
	return nt, err == nil, err
}

// NamedStepsOfTask maps the name of each step of a named task to its named_step_id.
func (s *Store) NamedStepsOfTask(ctx context.Context, namedTaskID int64) (map[string]int64, error) {
	rows, err := s.conn(ctx).Raw(`
		SELECT s.name, s.named_step_id
		FROM tasker_named_tasks_named_steps nts
		JOIN tasker_named_steps s ON s.named_step_id = nts.named_step_id
		WHERE nts.named_task_id = $1`, namedTaskID).Rows()
	return namedIDs(rows, err)
}

// namedIDs reads rows of (name, id) into a map, and closes rows.
func namedIDs(rows *sql.Rows, err error) (map[string]int64, error) {
	type pair struct {
		name string
		id   int64
	}
	pairs, err := collect(rows, err, func(r *sql.Rows, p *pair) error { return r.Scan(&p.name, &p.id) })
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(pairs))
	for _, p := range pairs {
		out[p.name] = p.id
	}
	return out, nil
}

// LockTemplateRegistrations takes the transaction-level advisory lock that serialises template
// registrations of every process, waiting for it.
func (s *Store) LockTemplateRegistrations(ctx context.Context) error {
	return s.conn(ctx).Exec(`SELECT pg_advisory_xact_lock($1)`, templateRegistrationLock).Error
}

// EnsureTaskNamespace returns the id of the namespace name, creating it when missing.
func (s *Store) EnsureTaskNamespace(ctx context.Context, name string) (int64, error) {
	var id int64
	err := s.conn(ctx).Raw(`
		WITH ins AS (
			INSERT INTO tasker_task_namespaces (name) VALUES ($1)
			ON CONFLICT (name) DO NOTHING RETURNING task_namespace_id)
		SELECT task_namespace_id FROM ins
		UNION ALL SELECT task_namespace_id FROM tasker_task_namespaces WHERE name = $1
		LIMIT 1`, name).Row().Scan(&id)
	return id, err
}

// EnsureDependentSystems creates the dependent systems named that are missing.
func (s *Store) EnsureDependentSystems(ctx context.Context, names []string) error {
	return s.conn(ctx).Exec(`
		INSERT INTO tasker_dependent_systems (name)
		SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING`, database.Array[string](names)).Error
}

// EnsureNamedSteps creates the named steps that are missing: step i is names[i] of dependent
// system systems[i], described by descriptions[i] (empty: none).
func (s *Store) EnsureNamedSteps(ctx context.Context, systems, names, descriptions []string) error {
	return s.conn(ctx).Exec(`
		INSERT INTO tasker_named_steps (dependent_system_id, name, description)
		SELECT ds.dependent_system_id, u.name, NULLIF(u.description, '')
		FROM unnest($1::text[], $2::text[], $3::text[]) AS u (system, name, description)
		JOIN tasker_dependent_systems ds ON ds.name = u.system
		ORDER BY ds.dependent_system_id, u.name
		ON CONFLICT (dependent_system_id, name) DO NOTHING`,
		database.Array[string](systems), database.Array[string](names), database.Array[string](descriptions)).Error
}

// NamedStepIDs maps each step names[i] of dependent system systems[i] that exists to its
// named_step_id.
func (s *Store) NamedStepIDs(ctx context.Context, systems, names []string) (map[string]int64, error) {
	rows, err := s.conn(ctx).Raw(`
		SELECT u.name, s.named_step_id
		FROM unnest($1::text[], $2::text[]) AS u (system, name)
		JOIN tasker_dependent_systems ds ON ds.name = u.system
		JOIN tasker_named_steps s ON s.dependent_system_id = ds.dependent_system_id AND s.name = u.name`,
		database.Array[string](systems), database.Array[string](names)).Rows()
	return namedIDs(rows, err)
}

// InsertNamedTask inserts a named task (configuration: a JSON document) and returns its id.
func (s *Store) InsertNamedTask(ctx context.Context, namespaceID int64, name, version, description, configuration string) (int64, error) {
	var id int64
	err := s.conn(ctx).Raw(`
		INSERT INTO tasker_named_tasks (task_namespace_id, name, version, description, configuration)
		VALUES ($1, $2, $3, NULLIF($4, ''), $5::jsonb)
		RETURNING named_task_id`,
		namespaceID, name, version, description, configuration).Row().Scan(&id)
	return id, err
}

// TemplateStep is a step of a registered template (a named step) with its defaults.
type TemplateStep struct {
	NamedStepID int64
	Retryable   bool
	RetryLimit  int32
	Skippable   bool
}

// InsertNamedTaskSteps links the steps to the named task with their defaults, in one
// statement.
func (s *Store) InsertNamedTaskSteps(ctx context.Context, namedTaskID int64, steps []TemplateStep) error {
	ids := make(database.Array[int64], len(steps))
	retryable := make([]bool, len(steps))
	limits := make([]int32, len(steps))
	skippable := make([]bool, len(steps))
	for i, st := range steps {
		ids[i], retryable[i], limits[i], skippable[i] = st.NamedStepID, st.Retryable, st.RetryLimit, st.Skippable
	}
	return s.conn(ctx).Exec(`
		INSERT INTO tasker_named_tasks_named_steps
			(named_task_id, named_step_id, default_retryable, default_retry_limit, skippable)
		SELECT $1, u.named_step_id, u.retryable, u.retry_limit, u.skippable
		FROM unnest($2::bigint[], $3::boolean[], $4::integer[], $5::boolean[])
			AS u (named_step_id, retryable, retry_limit, skippable)`,
		namedTaskID, ids, retryable, limits, skippable).Error
}
