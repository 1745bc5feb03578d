package template

import (
	"context"
	"fmt"
	"sort"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/store"
)

// Registration is where a template lives in the template tables.
type Registration struct {
	TaskNamespaceID int64
	NamedTaskID     int64
	// NamedStepIDs maps each step name of the template to its named_step_id.
	NamedStepIDs map[string]int64
	// Created is true when this call inserted the named task.
	Created bool
}

func changedError(t *Template, storedHash string) error {
	return errs.E(errs.Conflict, "task template version already registered with a different definition: %s (file %s; stored hash %.12s, file hash %.12s): publish the change under a new version",
		t.Key(), t.File, storedHash, t.Hash)
}

// Lookup finds the registration of t without writing anything. found is false when t's
// namespace/name/version is not registered; a registration with a different definition is an
// errs.Conflict error.
func Lookup(ctx context.Context, db *gorm.DB, t *Template) (reg Registration, found bool, err error) {
	return lookup(ctx, store.New(db), t)
}

func lookup(ctx context.Context, st *store.Store, t *Template) (reg Registration, found bool, err error) {
	nt, found, err := st.NamedTaskByVersion(ctx, t.Namespace, t.Name, t.Version)
	if err != nil {
		return reg, false, fmt.Errorf("looking up template %s: %w", t.Key(), err)
	}
	if !found {
		return reg, false, nil
	}
	reg.TaskNamespaceID, reg.NamedTaskID = nt.TaskNamespaceID, nt.NamedTaskID
	if nt.Hash != t.Hash {
		return reg, true, changedError(t, nt.Hash)
	}
	if reg.NamedStepIDs, err = st.NamedStepsOfTask(ctx, reg.NamedTaskID); err != nil {
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
// version is refused with an errs.Conflict error. Registrations are serialised by an
// advisory lock, so concurrent registrations from several processes neither fail nor
// duplicate rows.
func Register(ctx context.Context, db *gorm.DB, t *Template) (Registration, error) {
	var reg Registration
	err := store.New(db).Tx(ctx, func(tx *store.Store) error {
		if err := tx.LockTemplateRegistrations(ctx); err != nil {
			return fmt.Errorf("taking the registration lock: %w", err)
		}
		var found bool
		var err error
		if reg, found, err = lookup(ctx, tx, t); err != nil || found {
			return err
		}
		reg, err = insert(ctx, tx, t)
		return err
	})
	if err != nil {
		return Registration{}, fmt.Errorf("registering template %s: %w", t.Key(), err)
	}
	return reg, nil
}

func insert(ctx context.Context, tx *store.Store, t *Template) (Registration, error) {
	reg := Registration{Created: true}
	var err error
	if reg.TaskNamespaceID, err = tx.EnsureTaskNamespace(ctx, t.Namespace); err != nil {
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
	if err := tx.EnsureDependentSystems(ctx, systems); err != nil {
		return reg, fmt.Errorf("writing dependent systems: %w", err)
	}

	stepSystems := make([]string, len(t.Steps))
	stepNames := make([]string, len(t.Steps))
	stepDescs := make([]string, len(t.Steps))
	for i, s := range t.Steps {
		stepSystems[i], stepNames[i], stepDescs[i] = s.DependentSystem, s.Name, s.Description
	}
	if err := tx.EnsureNamedSteps(ctx, stepSystems, stepNames, stepDescs); err != nil {
		return reg, fmt.Errorf("writing named steps: %w", err)
	}
	if reg.NamedStepIDs, err = tx.NamedStepIDs(ctx, stepSystems, stepNames); err != nil {
		return reg, fmt.Errorf("reading named steps: %w", err)
	}
	if len(reg.NamedStepIDs) != len(t.Steps) {
		return reg, fmt.Errorf("writing named steps: %d of %d found after insert", len(reg.NamedStepIDs), len(t.Steps))
	}

	reg.NamedTaskID, err = tx.InsertNamedTask(ctx, reg.TaskNamespaceID, t.Name, t.Version, t.Description, string(t.Configuration()))
	if err != nil {
		return reg, fmt.Errorf("writing named task: %w", err)
	}

	steps := make([]store.TemplateStep, len(t.Steps))
	for i, s := range t.Steps {
		steps[i] = store.TemplateStep{NamedStepID: reg.NamedStepIDs[s.Name], Retryable: s.Retryable,
			RetryLimit: int32(s.RetryLimit), Skippable: s.Skippable}
	}
	if err := tx.InsertNamedTaskSteps(ctx, reg.NamedTaskID, steps); err != nil {
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
