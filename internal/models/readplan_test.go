package models_test

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
	"github.com/taskerhq/tasker/internal/testkit/plantest"
)

// TestReadFunctionsNeverScan checks the plans the read functions (tasker_read_*) make for
// their own statements, generic and once per connection: no statement run inside a function
// may scan a growing table sequentially. The functions plan with sequential scans weighed out,
// so the planner picks one only when no index reaches the rows, which a small database shows
// as well as a large one. The plans are those auto_explain reports for the nested statements
// of each call, in a session of the server's superuser (auto_explain's settings are theirs).
func TestReadFunctionsNeverScan(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	gdb := dbtest.Open(t, url)
	b := fixture.New(t, gdb)
	diamond, four := b.Task(fixture.Diamond), b.Task(fixture.FourStep)
	diamond.Complete("start_workflow", "branch_one_process")
	diamond.Fail("branch_one_validate", time.Second)
	four.Complete("one")
	if err := gdb.Exec("ANALYZE").Error; err != nil {
		t.Fatal(err)
	}

	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	super, err := pgx.ParseConfig(dbtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password = super.User, super.Password
	var mu sync.Mutex
	var notices []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		notices = append(notices, n.Message)
	}
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connecting as the server's superuser: %v", err)
	}
	defer conn.Close(ctx)
	for _, stmt := range []string{
		`LOAD 'auto_explain'`,
		`SET auto_explain.log_min_duration = 0`,
		`SET auto_explain.log_nested_statements = on`,
		`SET auto_explain.log_format = json`,
		`SET auto_explain.log_level = notice`,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}

	tasks := database.Array[int64]([]int64{diamond.ID, four.ID})
	steps := database.Array[int64](append(diamond.StepIDs("start_workflow", "merge_branches"), four.StepIDs("two")...))
	for _, c := range []struct {
		call string
		args []any
	}{
		{"tasker_read_tasks($1)", []any{tasks}},
		{"tasker_read_steps(true, $1)", []any{tasks}},
		{"tasker_read_steps(false, $1)", []any{steps}},
		{"tasker_read_step_transitions(true, $1)", []any{tasks}},
		{"tasker_read_step_transitions(false, $1)", []any{steps}},
		{"tasker_read_task_transitions($1)", []any{tasks}},
		{"tasker_read_readiness(true, $1)", []any{tasks}},
		{"tasker_read_readiness(false, $1)", []any{steps}},
		{"tasker_read_dags(true, $1)", []any{tasks}},
		{"tasker_read_dags(false, $1)", []any{steps}},
		{"tasker_read_execution_contexts($1)", []any{tasks}},
		{"tasker_read_workflow_summaries($1)", []any{tasks}},
		{"tasker_read_step_details(true, $1)", []any{tasks}},
		{"tasker_read_step_details(false, $1)", []any{steps}},
		{"tasker_read_ready_steps($1, $2)", []any{int64(math.MaxInt64), 100}},
		{"tasker_read_task_detail($1, true, true, true, true)", []any{diamond.ID}},
		{"tasker_read_task_detail($1, false, true, false, false)", []any{four.ID}},
	} {
		mu.Lock()
		notices = nil
		mu.Unlock()
		if _, err := conn.Exec(ctx, "SELECT * FROM "+c.call, c.args...); err != nil {
			t.Fatalf("%s: %v", c.call, err)
		}
		mu.Lock()
		got := notices
		mu.Unlock()
		nested := 0
		for _, msg := range got {
			text, plan := parseAutoExplain(t, msg)
			if text == "SELECT * FROM "+c.call {
				continue // the call itself
			}
			nested++
			if scans := plan.SeqScans(); len(scans) > 0 {
				raw, _ := json.MarshalIndent(plan, "", " ")
				t.Errorf("%s: its statement scans %v:\n%s\nplan:\n%s", c.call, scans, text, raw)
			}
		}
		if nested == 0 {
			t.Errorf("%s: auto_explain reported no statement of the function (%d notices)", c.call, len(got))
		}
	}
}

// parseAutoExplain returns the statement and the plan of one auto_explain message in JSON
// format ("duration: … ms  plan:\n{…}").
func parseAutoExplain(t *testing.T, msg string) (string, plantest.Node) {
	t.Helper()
	i := strings.Index(msg, "{")
	var out struct {
		Text string        `json:"Query Text"`
		Plan plantest.Node `json:"Plan"`
	}
	if i < 0 || json.Unmarshal([]byte(msg[i:]), &out) != nil {
		t.Fatalf("not an auto_explain plan: %.300s", msg)
	}
	return out.Text, out.Plan
}
