package indexes_test

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/taskerhq/tasker/internal/indexes"
	"github.com/taskerhq/tasker/internal/migrate"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

var tables = []string{"tasker_workflow_steps", "tasker_workflow_step_transitions", "tasker_tasks"}

func open(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// definitions returns "name: definition" of every index of the schema, sorted, and of the
// recorded ones.
func definitions(t *testing.T, db *sql.DB, query string) []string {
	t.Helper()
	rows, err := db.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			t.Fatal(err)
		}
		out = append(out, name+": "+def)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

const (
	schemaIndexes   = `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()`
	recordedIndexes = `SELECT index_name, definition FROM tasker_deferred_indexes`
)

// TestDeferDropsOnlyWhatEnforcesNothing sets the indexes of three tables aside: exactly their
// non-unique ones are dropped and recorded with their definitions, the unique ones still refuse
// a duplicate, and Restore builds every one again as it was, once.
func TestDeferDropsOnlyWhatEnforcesNothing(t *testing.T) {
	t.Parallel()
	db := open(t, dbtest.NewURL(t))
	ctx := context.Background()
	before := definitions(t, db, schemaIndexes)
	var want []string
	for _, d := range before {
		onTable := false
		for _, tb := range tables {
			onTable = onTable || strings.Contains(d, " ON public."+tb+" ")
		}
		if onTable && !strings.Contains(d, "UNIQUE") {
			want = append(want, d)
		}
	}
	if len(want) < 8 {
		t.Fatalf("only %d non-unique indexes on %v: %v", len(want), tables, before)
	}

	got, err := indexes.Defer(ctx, db, tables)
	if err != nil {
		t.Fatal(err)
	}
	var dropped []string
	for _, ix := range got {
		dropped = append(dropped, ix.Name+": "+ix.Definition)
	}
	slices.Sort(dropped)
	if !slices.Equal(dropped, want) {
		t.Fatalf("set aside\n%v\nwant\n%v", dropped, want)
	}
	if rec := definitions(t, db, recordedIndexes); !slices.Equal(rec, want) {
		t.Fatalf("recorded\n%v\nwant\n%v", rec, want)
	}
	left := definitions(t, db, schemaIndexes)
	if len(left) != len(before)-len(want) {
		t.Fatalf("%d indexes left of %d, %d set aside", len(left), len(before), len(want))
	}
	for _, d := range want {
		if slices.Contains(left, d) {
			t.Errorf("still there: %s", d)
		}
	}
	// The unique index of (task, named step) still refuses a second row.
	const twoSteps = `
		WITH sys AS (INSERT INTO tasker_dependent_systems (name) VALUES ('defer-test') RETURNING dependent_system_id),
		ns AS (INSERT INTO tasker_task_namespaces (name) VALUES ('defer-test') RETURNING task_namespace_id),
		nt AS (INSERT INTO tasker_named_tasks (name, task_namespace_id) SELECT 't', task_namespace_id FROM ns RETURNING named_task_id),
		st AS (INSERT INTO tasker_named_steps (name, dependent_system_id) SELECT 'a', dependent_system_id FROM sys RETURNING named_step_id),
		task AS (INSERT INTO tasker_tasks (named_task_id, identity_hash) SELECT named_task_id, 'defer-test' FROM nt RETURNING task_id)
		INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		SELECT task_id, named_step_id FROM task, st, generate_series(1, 2)`
	_, err = db.Exec(twoSteps)
	if err == nil || !strings.Contains(err.Error(), "tasker_workflow_steps_task_named_step_key") {
		t.Errorf("two steps of one named step in one task: %v", err)
	}

	n, err := indexes.Restore(ctx, db, 2)
	if err != nil || n != len(want) {
		t.Fatalf("restored %d of %d: %v", n, len(want), err)
	}
	if after := definitions(t, db, schemaIndexes); !slices.Equal(after, before) {
		t.Errorf("after Restore\n%v\nbefore\n%v", after, before)
	}
	if rec := definitions(t, db, recordedIndexes); len(rec) != 0 {
		t.Errorf("still recorded: %v", rec)
	}
	if n, err := indexes.Restore(ctx, db, 2); err != nil || n != 0 {
		t.Errorf("a second Restore built %d: %v", n, err)
	}
}

// TestRestoreByManyBuildsEachOnce runs four restorers at once, each with its own pool, over
// indexes set aside: together they build every index exactly once, without error.
func TestRestoreByManyBuildsEachOnce(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := open(t, url)
	ctx := context.Background()
	before := definitions(t, db, schemaIndexes)
	set, err := indexes.Defer(ctx, db, tables)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	built := make([]int, 4)
	errs := make([]error, 4)
	for i := range built {
		wg.Add(1)
		go func() {
			defer wg.Done()
			built[i], errs[i] = indexes.Restore(ctx, open(t, url), 2)
		}()
	}
	wg.Wait()
	total := 0
	for i := range built {
		if errs[i] != nil {
			t.Errorf("restorer %d: %v", i, errs[i])
		}
		total += built[i]
	}
	if total != len(set) {
		t.Errorf("restorers built %v, %d in all, of %d set aside", built, total, len(set))
	}
	if after := definitions(t, db, schemaIndexes); !slices.Equal(after, before) {
		t.Errorf("after the restorers\n%v\nbefore\n%v", after, before)
	}
}

// TestMigrateBuildsWhatALoadLeftAside stands for a load that died after setting its indexes
// aside: the next migrate.Up, which every command runs first, builds them.
func TestMigrateBuildsWhatALoadLeftAside(t *testing.T) {
	t.Parallel()
	db := open(t, dbtest.NewURL(t))
	ctx := context.Background()
	before := definitions(t, db, schemaIndexes)
	if _, err := indexes.Defer(ctx, db, tables); err != nil {
		t.Fatal(err)
	}
	if got := definitions(t, db, schemaIndexes); len(got) >= len(before) {
		t.Fatalf("nothing set aside: %d indexes, %d before", len(got), len(before))
	}
	if _, err := migrate.Up(ctx, db); err != nil {
		t.Fatal(err)
	}
	if after := definitions(t, db, schemaIndexes); !slices.Equal(after, before) {
		t.Errorf("after migrate.Up\n%v\nbefore\n%v", after, before)
	}
	if rec := definitions(t, db, recordedIndexes); len(rec) != 0 {
		t.Errorf("still recorded: %v", rec)
	}
}
