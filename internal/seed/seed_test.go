package seed_test

import (
	"context"
	"fmt"
	"maps"
	neturl "net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/seed"
	"github.com/taskerhq/tasker/internal/shape"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// TestGenerateWritesConsistentHistories generates every shape and scenario twice: as the
// test databases' owner, with every trigger and foreign-key check, and as the server's
// administrator, in bulk mode (no foreign-key checks; the notification and inactive-step
// triggers skip themselves, migration 00051). Both write consistent histories, and bulk mode
// sends one new-task wake-up per batch and no transition notification.
func TestGenerateWritesConsistentHistories(t *testing.T) {
	t.Parallel()
	for _, bulk := range []bool{false, true} {
		t.Run(map[bool]string{false: "checked", true: "bulk"}[bulk], func(t *testing.T) {
			t.Parallel()
			url := dbtest.NewURL(t)
			if bulk {
				url = dbtest.AsServerAdmin(t, url)
			}
			generateAndCheck(t, url, bulk)
		})
	}
}

func generateAndCheck(t *testing.T, url string, bulk bool) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	listen, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listen.Close(ctx) })
	for _, ch := range []string{"tasker_tasks_created", "tasker_task_transitions", "tasker_workflow_step_transitions"} {
		if _, err := listen.Exec(ctx, "LISTEN "+ch); err != nil {
			t.Fatal(err)
		}
	}
	plan, err := seed.Plan(3000, append([]string{"parallel_merge"}, seed.DefaultShapes...), 1000)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := seed.Generate(ctx, dbtest.Open(t, url), 7, plan, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Steps < 2500 || rep.Steps > 3000 || rep.Tasks == 0 || rep.Edges == 0 {
		t.Fatalf("report %+v", rep)
	}
	for _, b := range rep.Batches {
		if b.Bulk != bulk {
			t.Fatalf("batch %s written in bulk mode %v, want %v", b.Shape, b.Bulk, bulk)
		}
	}
	if bulk {
		notes := map[string]int{}
		for {
			wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			n, err := listen.WaitForNotification(wctx)
			cancel()
			if err != nil {
				break
			}
			notes[n.Channel]++
		}
		if notes["tasker_tasks_created"] != len(rep.Batches) || len(notes) != 1 {
			t.Errorf("bulk mode sent %v, want one tasker_tasks_created per batch (%d)", notes, len(rep.Batches))
		}
	}
	checks := map[string]string{
		"step counts": `SELECT count(*) FROM tasker_workflow_steps`,
		// Every owner's history runs 1..n with from_state = the previous to_state, and only
		// the last row is current.
		"malformed step histories": `SELECT count(*) FROM tasker_workflow_step_transitions t
			LEFT JOIN tasker_workflow_step_transitions p ON p.workflow_step_id = t.workflow_step_id AND p.sort_key = t.sort_key - 1
			WHERE (t.sort_key > 1 AND (p.id IS NULL OR p.to_state IS DISTINCT FROM t.from_state))
			   OR (t.sort_key = 1 AND t.from_state IS NOT NULL)
			   OR t.most_recent <> (t.sort_key = (SELECT max(sort_key) FROM tasker_workflow_step_transitions x WHERE x.workflow_step_id = t.workflow_step_id))`,
		"malformed task histories": `SELECT count(*) FROM tasker_task_transitions t
			LEFT JOIN tasker_task_transitions p ON p.task_id = t.task_id AND p.sort_key = t.sort_key - 1
			WHERE (t.sort_key > 1 AND (p.id IS NULL OR p.to_state IS DISTINCT FROM t.from_state))
			   OR (t.sort_key = 1 AND t.from_state IS NOT NULL)
			   OR t.most_recent <> (t.sort_key = (SELECT max(sort_key) FROM tasker_task_transitions x WHERE x.task_id = t.task_id))`,
		"complete steps not processed or never attempted": `SELECT count(*) FROM tasker_step_readiness_statuses r
			JOIN tasker_workflow_steps s USING (workflow_step_id)
			WHERE r.current_state = 'complete' AND (NOT s.processed OR s.attempts < 1)`,
		"started steps with an unfinished parent": `SELECT count(*) FROM tasker_step_readiness_statuses
			WHERE current_state <> 'pending' AND NOT dependencies_satisfied`,
		"exhausted errors with attempts below the limit": `SELECT count(*) FROM tasker_step_readiness_statuses
			WHERE blocking_reason = 'retries_exhausted' AND attempts <> retry_limit`,
		"complete tasks with unfinished steps": `SELECT count(*) FROM tasker_task_execution_contexts
			WHERE status = 'complete' AND execution_status <> 'all_complete'`,
		"failed tasks that are not blocked": `SELECT count(*) FROM tasker_task_execution_contexts
			WHERE status = 'error' AND execution_status <> 'blocked_by_failures'`,
		// The claim's index leaves out the unprocessed steps of tasks that are not active
		// (migration 00050): the generator sets the flag as the trigger would.
		"unprocessed steps whose task_inactive is not their task's": `SELECT count(*) FROM tasker_workflow_steps s
			WHERE NOT s.processed AND s.task_inactive <> (coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
			      WHERE tt.task_id = s.task_id AND tt.most_recent), 'pending') NOT IN ('pending', 'in_progress'))`,
	}
	for name, q := range checks {
		var n int
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "step counts" {
			if n != rep.Steps {
				t.Errorf("%d steps in the table, report says %d", n, rep.Steps)
			}
		} else if n != 0 {
			t.Errorf("%s: %d", name, n)
		}
	}
	// Every scenario and every blocking reason the mix can produce is present.
	for _, q := range []string{
		`SELECT count(DISTINCT tags->>'scenario') FROM tasker_tasks`,
		`SELECT count(DISTINCT blocking_reason) FROM tasker_step_readiness_statuses WHERE blocking_reason IN
			('already_processed', 'in_progress', 'terminal_state', 'dependencies_not_satisfied', 'retries_exhausted', 'backoff')`,
	} {
		var n int
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n < 5 {
			t.Errorf("%s = %d, want every kind present", q, n)
		}
	}
	// The stored depth written by the generator is what the DAG view reports for a deep chain.
	var deepest int
	if err := conn.QueryRow(ctx, `SELECT max(d.dependency_level) FROM tasker_step_dag_relationships d
		JOIN tasker_tasks t USING (task_id) JOIN tasker_named_tasks n USING (named_task_id) WHERE n.name = 'deep_100'`).Scan(&deepest); err != nil {
		t.Fatal(err)
	}
	if deepest != 99 {
		t.Errorf("deepest level of deep_100 = %d, want 99", deepest)
	}
}

func TestPlanRefusesBadInput(t *testing.T) {
	t.Parallel()
	if _, err := seed.Plan(1000, []string{"linear", "spiral"}, 0); err == nil {
		t.Error("unknown shape accepted")
	}
	if _, err := seed.Plan(5, nil, 0); err == nil {
		t.Error("5 steps accepted")
	}
	if _, err := seed.Plan(1000, []string{"linear", "linear"}, 0); err == nil {
		t.Error("a shape named twice accepted")
	}
	plan, err := seed.Plan(1000000, nil, 200000)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, b := range plan {
		total += b.Tasks * len(b.Shape.Steps)
		if b.Tasks*len(b.Shape.Steps) > 200000+10000 {
			t.Errorf("batch of %s writes %d steps", b.Shape.Name, b.Tasks*len(b.Shape.Steps))
		}
	}
	if total < 990000 || total > 1000000 {
		t.Errorf("plan for 1M steps writes %d", total)
	}
}

// TestSideBySideWritesWhatOneAfterTheOtherWrites generates one plan with one writer and with
// two into fresh databases (bulk mode): every task, step, edge and transition is the same,
// ids included (only transition ids may differ), and what the generator has always written
// for that plan (written); each table's ids run 1..n, and the identity
// sequences are past every id written, so the next ordinary insert cannot collide. A batch
// written afterwards by Run gets the ids that follow.
func TestSideBySideWritesWhatOneAfterTheOtherWrites(t *testing.T) {
	t.Parallel()
	plan, err := seed.Plan(4000, append([]string{"parallel_merge"}, seed.DefaultShapes...), 700)
	if err != nil {
		t.Fatal(err)
	}
	// The third run sets the indexes aside during its load (any plan qualifies) and must
	// write the same data and leave the same indexes.
	runs := []struct{ writers, deferFrom int }{{1, seed.DeferIndexesFrom}, {2, seed.DeferIndexesFrom}, {2, 1}}
	prints := make([]map[string]string, len(runs))
	for i, run := range runs {
		writers := run.writers
		url := dbtest.AsServerAdmin(t, dbtest.NewURL(t))
		db := dbtest.Open(t, url)
		ctx := context.Background()
		before := indexDefinitions(t, db)
		rep, err := seed.GenerateWith(ctx, db, 3, plan, nil, writers, run.deferFrom)
		if err != nil {
			t.Fatal(err)
		}
		if deferred := run.deferFrom == 1; deferred != (rep.Indexes > 0) {
			t.Errorf("run %d: %d indexes set aside and built again", i, rep.Indexes)
		}
		checkIndexesRestored(t, db, before)
		if len(rep.Batches) != len(plan) {
			t.Fatalf("%d writers: %d batches written, plan has %d", writers, len(rep.Batches), len(plan))
		}
		prints[i] = map[string]string{}
		for name, q := range fingerprints {
			var v string
			if err := db.Raw(q).Row().Scan(&v); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			prints[i][name] = v
		}
		if prints[i]["ids"] != "true" {
			t.Errorf("%d writers: ids are not 1..n, or a sequence is behind them", writers)
		}
		res, err := seed.Run(ctx, db, 3, seed.Batch{Shape: shape.Diamond, Tasks: 3, Mix: seed.DefaultMix, Frontier: -1})
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.Raw(`SELECT count(*) FROM tasker_tasks WHERE task_id = ANY(?) AND task_id > ?`,
			database.Array[int64](res.TaskIDs), rep.Tasks).Row().Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 3 || len(res.TaskIDs) != 3 {
			t.Errorf("Run wrote tasks %v, %d of them after the generated ones", res.TaskIDs, n)
		}
	}
	for name := range fingerprints {
		if prints[0][name] != prints[1][name] {
			t.Errorf("%s: one writer wrote %s, two wrote %s", name, prints[0][name], prints[1][name])
		}
		if prints[2][name] != prints[1][name] {
			t.Errorf("%s: with indexes set aside %s, with them %s", name, prints[2][name], prints[1][name])
		}
		if want, ok := written[name]; ok && prints[1][name] != want {
			t.Errorf("%s: wrote %s, the generator has always written %s", name, prints[1][name], want)
		}
	}
}

// written are the fingerprints of the plan of TestSideBySideWritesWhatOneAfterTheOtherWrites as
// the generator wrote it before batches were written side by side (one statement joining the
// steps back to their plan, edges looked up by task and named step), when the ids of edges
// depended on that statement's plan.
var written = map[string]string{
	"tasks":            "431:bf1b034c5a4e7a4a0cde7263d809e6d2",
	"steps":            "3959:89066c4cb56f599d2980a223920b82a4",
	"edges":            "4385:9cae9c542e3f342bb365b31d1d66006a",
	"step transitions": "7191:63174d499a87660f6b8e20a3c5ae593b",
	"task transitions": "563:076ba00288a6bd88073262e790df3713",
}

// fingerprints sum up what a seed wrote; times are taken relative to their task's creation.
var fingerprints = map[string]string{
	"tasks": `SELECT count(*) || ':' || md5(string_agg(concat_ws('|', t.task_id, n.name, t.complete, t.tags, t.context,
		t.created_at - t.requested_at), ',' ORDER BY t.task_id))
		FROM tasker_tasks t JOIN tasker_named_tasks n USING (named_task_id)`,
	"steps": `SELECT count(*) || ':' || md5(string_agg(concat_ws('|', s.workflow_step_id, s.task_id, n.name, s.attempts,
		s.last_attempted_at - t.created_at, s.backoff_request_seconds, s.processed, s.processed_at - t.created_at,
		s.in_process, s.results, s.created_at - t.created_at, s.updated_at - t.created_at, s.dependency_level,
		s.min_depth_from_root, s.task_inactive), ',' ORDER BY s.workflow_step_id))
		FROM tasker_workflow_steps s JOIN tasker_tasks t USING (task_id) JOIN tasker_named_steps n USING (named_step_id)`,
	"edges": `SELECT count(*) || ':' || md5(string_agg(concat_ws('|', from_step_id, to_step_id), ',' ORDER BY from_step_id, to_step_id))
		FROM tasker_workflow_step_edges`,
	"edge ids": `SELECT count(*) || ':' || md5(string_agg(concat_ws('|', id, from_step_id, to_step_id), ',' ORDER BY id))
		FROM tasker_workflow_step_edges`,
	"step transitions": `SELECT count(*) || ':' || md5(string_agg(concat_ws('|', x.workflow_step_id, x.sort_key, x.to_state,
		x.from_state, x.most_recent, x.created_at - t.created_at), ',' ORDER BY x.workflow_step_id, x.sort_key))
		FROM tasker_workflow_step_transitions x JOIN tasker_workflow_steps s USING (workflow_step_id) JOIN tasker_tasks t USING (task_id)`,
	"task transitions": `SELECT count(*) || ':' || md5(string_agg(concat_ws('|', x.task_id, x.sort_key, x.to_state,
		x.from_state, x.most_recent, x.created_at - t.created_at), ',' ORDER BY x.task_id, x.sort_key))
		FROM tasker_task_transitions x JOIN tasker_tasks t USING (task_id)`,
	"ids": `SELECT ((SELECT min(task_id) = 1 AND max(task_id) = count(*) FROM tasker_tasks)
		AND (SELECT min(workflow_step_id) = 1 AND max(workflow_step_id) = count(*) FROM tasker_workflow_steps)
		AND (SELECT min(id) = 1 AND max(id) = count(*) FROM tasker_workflow_step_edges)
		AND (SELECT last_value FROM tasker_tasks_task_id_seq) >= (SELECT max(task_id) FROM tasker_tasks)
		AND (SELECT last_value FROM tasker_workflow_steps_workflow_step_id_seq) >= (SELECT max(workflow_step_id) FROM tasker_workflow_steps)
		AND (SELECT last_value FROM tasker_workflow_step_edges_id_seq) >= (SELECT max(id) FROM tasker_workflow_step_edges))::text`,
}

// TestIndexesComeBackWhenTheLoadIsCancelled cancels a load that set the indexes aside after
// its first batch: Generate fails, and every index is there again, as it was.
func TestIndexesComeBackWhenTheLoadIsCancelled(t *testing.T) {
	t.Parallel()
	plan, err := seed.Plan(3000, seed.DefaultShapes, 500)
	if err != nil {
		t.Fatal(err)
	}
	db := dbtest.Open(t, dbtest.AsServerAdmin(t, dbtest.NewURL(t)))
	before := indexDefinitions(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rep, err := seed.GenerateWith(ctx, db, 3, plan, func(seed.Result) { cancel() }, 1, 1)
	if err == nil {
		t.Fatal("a cancelled load succeeded")
	}
	if len(rep.Batches) == 0 || len(rep.Batches) == len(plan) {
		t.Fatalf("%d of %d batches written: the load was not cut short", len(rep.Batches), len(plan))
	}
	if rep.Indexes == 0 {
		t.Error("no index was set aside and built again")
	}
	checkIndexesRestored(t, db, before)
}

// indexDefinitions returns every index of the schema: name -> definition.
func indexDefinitions(t *testing.T, db *gorm.DB) map[string]string {
	t.Helper()
	var rows []struct{ Indexname, Indexdef string }
	if err := db.Raw(`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()`).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(rows))
	for _, r := range rows {
		out[r.Indexname] = r.Indexdef
	}
	return out
}

// checkIndexesRestored fails unless the schema has exactly the indexes of before, valid, and
// none is left recorded as set aside.
func checkIndexesRestored(t *testing.T, db *gorm.DB, before map[string]string) {
	t.Helper()
	after := indexDefinitions(t, db)
	if !maps.Equal(before, after) {
		for name, def := range before {
			if after[name] != def {
				t.Errorf("index %s: was %q, is %q", name, def, after[name])
			}
		}
		t.Errorf("%d indexes before, %d after", len(before), len(after))
	}
	var invalid, recorded int
	if err := db.Raw(`SELECT (SELECT count(*) FROM pg_index WHERE NOT indisvalid),
		(SELECT count(*) FROM tasker_deferred_indexes)`).Row().Scan(&invalid, &recorded); err != nil {
		t.Fatal(err)
	}
	if invalid != 0 || recorded != 0 {
		t.Errorf("%d invalid indexes, %d still recorded as set aside", invalid, recorded)
	}
}

// TestANonOwnerLoadsWithTheIndexes seeds as a role that may write every table but owns none:
// it may not drop the tables' indexes, so it loads with them, and the load succeeds.
func TestANonOwnerLoadsWithTheIndexes(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	admin := dbtest.Open(t, dbtest.AsServerAdmin(t, url))
	role := fmt.Sprintf("seed_writer_%d", time.Now().UnixNano())
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT USAGE ON SCHEMA public TO ` + role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ` + role,
		`GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO ` + role,
	} {
		if err := admin.Exec(q).Error; err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		_ = admin.Exec(`DROP OWNED BY ` + role).Error
		_ = admin.Exec(`DROP ROLE ` + role).Error
	})
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = neturl.User(role)
	db := dbtest.Open(t, u.String())
	before := indexDefinitions(t, db)
	plan, err := seed.Plan(1000, seed.DefaultShapes, 500)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := seed.GenerateWith(context.Background(), db, 3, plan, nil, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Indexes != 0 || rep.Steps == 0 {
		t.Errorf("a non-owner wrote %d steps with %d indexes set aside, want some steps and none", rep.Steps, rep.Indexes)
	}
	checkIndexesRestored(t, db, before)
}
