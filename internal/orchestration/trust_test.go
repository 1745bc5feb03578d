package orchestration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// TestCreationSkipsForeignKeyChecksOnlyWhenTrusted checks migration 00051: a role that may set
// session_replication_role (the server's administrator) creates tasks without foreign-key
// checks, a role that may not (the test databases' owner) with them, and both write the same
// rows; the triggers of the tables creation writes fire in both modes (the new-task
// notification, the DAG depths); and in the trusted mode the checks really are off.
func TestCreationSkipsForeignKeyChecksOnlyWhenTrusted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, fixture.NoopDiamondYAML)
	admin := openDB(t, dbtest.AsServerAdmin(t, h.url))
	ctx := context.Background()

	trusted := func(db *gorm.DB) (ok bool, mode string) {
		if err := db.Transaction(func(tx *gorm.DB) (err error) {
			if ok, err = store.New(tx).TrustReferences(ctx); err != nil {
				return err
			}
			return tx.Raw(`SELECT current_setting('session_replication_role')`).Row().Scan(&mode)
		}); err != nil {
			t.Fatal(err)
		}
		return ok, mode
	}
	if ok, mode := trusted(h.db); ok || mode != "origin" {
		t.Fatalf("the unprivileged owner was trusted: %v, mode %s", ok, mode)
	}
	if ok, mode := trusted(admin); !ok || mode != "replica" {
		t.Fatalf("the administrator was not trusted: %v, mode %s", ok, mode)
	}
	var after string
	if err := admin.Raw(`SELECT current_setting('session_replication_role')`).Row().Scan(&after); err != nil || after != "origin" {
		t.Fatalf("the mode outlived its transaction: %q, %v", after, err)
	}

	// Trusted, a step of no task is written: the checks are off (rolled back).
	errRollback := fmt.Errorf("rollback")
	err := admin.Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec(`SELECT tasker_trust_references(true)`).Error; err != nil {
			return err
		}
		if err := tx.Exec(`INSERT INTO tasker_workflow_steps (task_id, named_step_id) VALUES (-1, -1)`).Error; err != nil {
			return fmt.Errorf("a dangling step was refused in the trusted mode: %w", err)
		}
		return errRollback
	})
	if err != errRollback {
		t.Fatal(err)
	}

	// The same batch through both roles: the same rows, and a notification for each batch.
	listen, err := pgx.Connect(ctx, h.url)
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Close(ctx)
	if _, err := listen.Exec(ctx, `LISTEN tasker_tasks_created`); err != nil {
		t.Fatal(err)
	}
	reqs := make([]orchestration.CreateTaskRequest, 20)
	for i := range reqs {
		reqs[i] = orchestration.CreateTaskRequest{Namespace: "bench", Name: "noop_five", Context: json.RawMessage(`{}`)}
	}
	plainTasks := createAll(t, h.svc, reqs)
	awaitNotification(t, listen)
	trustedTasks := createAll(t, orchestration.NewService(admin, h.reg), reqs)
	awaitNotification(t, listen)

	shape := func(tasks []int64) []string {
		var rows []string
		if err := h.db.Raw(`
			SELECT format('%s level=%s min=%s retry=%s/%s parents=%s', ns.name, ws.dependency_level,
			              ws.min_depth_from_root, ws.retryable, ws.retry_limit,
			              (SELECT string_agg(pns.name, ',' ORDER BY pns.name)
			               FROM tasker_workflow_step_edges e
			               JOIN tasker_workflow_steps p ON p.workflow_step_id = e.from_step_id
			               JOIN tasker_named_steps pns ON pns.named_step_id = p.named_step_id
			               WHERE e.to_step_id = ws.workflow_step_id))
			FROM unnest(?::bigint[]) WITH ORDINALITY AS t(id, ord)
			JOIN tasker_workflow_steps ws ON ws.task_id = t.id
			JOIN tasker_named_steps ns ON ns.named_step_id = ws.named_step_id
			ORDER BY t.ord, ns.name`, database.Array[int64](tasks)).Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		return rows
	}
	plain, trust := shape(plainTasks), shape(trustedTasks)
	if len(plain) != len(reqs)*5 {
		t.Fatalf("%d steps for %d five-step tasks", len(plain), len(reqs))
	}
	for i := range plain {
		if plain[i] != trust[i] {
			t.Fatalf("step %d: checked %q, trusted %q", i, plain[i], trust[i])
		}
	}
}

func createAll(t *testing.T, svc *orchestration.Service, reqs []orchestration.CreateTaskRequest) []int64 {
	t.Helper()
	res, err := svc.CreateTasks(context.Background(), reqs)
	if err != nil || len(res.Errors) > 0 || res.Created() != len(reqs) {
		t.Fatalf("CreateTasks: %d created, %v, %v", res.Created(), res.Errors, err)
	}
	ids := make([]int64, len(res.Tasks))
	for i, task := range res.Tasks {
		ids[i] = task.TaskID
	}
	return ids
}

func awaitNotification(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := conn.WaitForNotification(ctx); err != nil {
		t.Fatalf("no tasker_tasks_created notification: %v", err)
	}
}

// TestTriggersOfTrustedTablesFireAlways guards migration 00051: trusted creation and the
// trusted engine run in the replica mode, in which a trigger fires only when enabled ALWAYS, so
// every trigger of the tables they write must be.
func TestTriggersOfTrustedTablesFireAlways(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	var wrong []string
	if err := db.Raw(`
		SELECT format('%s.%s (enabled %s)', tgrelid::regclass, tgname, tgenabled)
		FROM pg_trigger
		WHERE NOT tgisinternal AND tgenabled <> 'A'
		  AND tgrelid IN ('tasker_tasks'::regclass, 'tasker_workflow_steps'::regclass,
		                  'tasker_workflow_step_edges'::regclass, 'tasker_task_transitions'::regclass,
		                  'tasker_workflow_step_transitions'::regclass)`).Scan(&wrong).Error; err != nil {
		t.Fatal(err)
	}
	if len(wrong) > 0 {
		t.Fatalf("triggers that trusted writers would skip (make them ENABLE ALWAYS, as migration 00051 does): %v", wrong)
	}
}
