package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/refresh"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
	"github.com/taskerhq/tasker/internal/testkit/logbuf"
)

// dashEnv is the real handler with a read-model refresher (schedules off, no events hub: only
// refreshReadModel and the test refresh the views), optionally behind the auth guard.
type dashEnv struct {
	t         *testing.T
	db        *gorm.DB
	fx        *fixture.Builder
	refresher *refresh.Refresher
	srv       *httptest.Server
	logs      *logbuf.Buffer
	tokens    map[auth.Role]string // set when the guard requires tokens
}

func newDashEnv(t *testing.T, mode auth.Mode) *dashEnv {
	t.Helper()
	url := dbtest.NewURL(t)
	ctx := context.Background()
	db, err := database.Open(ctx, url, database.Options{Tracer: querystats.Tracer{}, MaxOpenConns: 10})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	schedules := map[string]string{}
	for _, name := range refresh.ViewNames() {
		schedules[name] = "off"
	}
	r, err := refresh.New(db, nil, refresh.Config{Schedules: schedules}, log)
	if err != nil {
		t.Fatal(err)
	}
	deps := server.Deps{DB: db, Log: log, Refresher: r}
	e := &dashEnv{t: t, db: db, fx: fixture.New(t, db), refresher: r, logs: logs, tokens: map[auth.Role]string{}}
	if mode == auth.Required {
		store := auth.NewStore(db)
		guard, err := auth.NewGuard(mode, store, auth.Limits{}, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		deps.Guard = guard
		for _, role := range auth.Roles {
			_, secret, err := store.Create(ctx, role, string(role)+"-token")
			if err != nil {
				t.Fatal(err)
			}
			e.tokens[role] = secret
		}
	}
	api := server.New(server.Config{QueryStats: true}, deps)
	mux := http.NewServeMux()
	api.Mount(mux)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		e.srv.CloseClientConnections()
		e.srv.Close()
		stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Stop(stop); err != nil {
			t.Errorf("stopping the refresher: %v", err)
		}
		_ = database.Close(db)
	})
	return e
}

// gql POSTs a query with the bearer token (none when token is "").
func (e *dashEnv) gql(token, query string, vars map[string]any) response {
	e.t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		e.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/query", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	return decode(e.t, resp)
}

// data runs a query that must succeed and decodes its data into out.
func (e *dashEnv) data(token, query string, vars map[string]any, out any) response {
	e.t.Helper()
	r := e.gql(token, query, vars)
	if len(r.Errors) > 0 {
		e.t.Fatalf("query failed: %+v\nserver log:\n%s", r.Errors, e.logs.String())
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		e.t.Fatalf("decoding data %s: %v", r.Data, err)
	}
	return r
}

// oneError runs a query that must fail with one error of code, and returns its message.
func (e *dashEnv) oneError(token, query string, vars map[string]any, code string) string {
	e.t.Helper()
	r := e.gql(token, query, vars)
	if len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != code {
		e.t.Fatalf("want one %s error, got %+v (data %s)\nserver log:\n%s", code, r.Errors, r.Data, e.logs.String())
	}
	return r.Errors[0].Message
}

// refreshAll refreshes every materialized view directly, as the schedule would.
func (e *dashEnv) refreshAll() {
	e.t.Helper()
	for _, name := range refresh.ViewNames() {
		out, err := e.refresher.Refresh(context.Background(), name)
		if err != nil || out.Status != refresh.StatusRefreshed {
			e.t.Fatalf("refreshing %s: status %s, %v", name, out.Status, err)
		}
	}
}

// addHistory creates n tasks in the fixture namespace, alternating two templates, whose
// current states cycle through pending, in progress, complete and error. Every task's first
// step completed; every third task's second step failed once an hour ago.
func (e *dashEnv) addHistory(n int) {
	e.t.Helper()
	shapes := []fixture.Shape{fixture.Linear, fixture.Diamond}
	paths := [][]models.State{
		nil,
		{models.StateInProgress},
		{models.StateInProgress, models.StateComplete},
		{models.StateInProgress, models.StateError},
	}
	for i := range n {
		s := shapes[i%len(shapes)]
		tk := e.fx.Task(s)
		if p := paths[i%len(paths)]; len(p) > 0 {
			tk.TaskTransition(time.Duration(i+1)*time.Minute, p...)
		}
		tk.Complete(s.Steps[0].Name)
		if i%3 == 0 {
			tk.Fail(s.Steps[1].Name, time.Hour)
		}
	}
}

const dashboardQuery = `query($ns: String, $limit: Int, $hours: Int) {
  dashboard {
    taskStatusSummaries(namespace: $ns) {
      refreshedAt stale
      rows { namedTaskId namespace taskName version pending inProgress complete error cancelled
             resolvedManually total oldestPendingRequestedAt oldestPendingAgeSeconds
             oldestInProgressSince oldestInProgressAgeSeconds }
    }
    stepPerformance(namespace: $ns, limit: $limit) {
      refreshedAt stale
      rows { namedStepId namespace stepName dependentSystem executions successes failures retries
             errorRate avgDurationMs p50DurationMs p95DurationMs maxDurationMs }
    }
    throughput(hours: $hours) {
      refreshedAt stale
      rows { hour tasksCreated tasksCompleted tasksFailed stepsCompleted stepsFailed }
    }
  }
}`

type freshness struct {
	RefreshedAt *time.Time
	Stale       bool
}

type statusRow struct {
	NamedTaskID, Namespace, TaskName, Version              string
	Pending, InProgress, Complete, Error, Cancelled, Total int64
	ResolvedManually                                       int64
	OldestPendingRequestedAt, OldestInProgressSince        *time.Time
	OldestPendingAgeSeconds, OldestInProgressAgeSeconds    *float64
}

type perfRow struct {
	NamedStepID, Namespace, StepName, DependentSystem          string
	Executions, Successes, Failures, Retries                   int64
	ErrorRate                                                  float64
	AvgDurationMs, P50DurationMs, P95DurationMs, MaxDurationMs *float64
}

type hourRow struct {
	Hour                                                                   time.Time
	TasksCreated, TasksCompleted, TasksFailed, StepsCompleted, StepsFailed int64
}

type dashboardData struct {
	Dashboard struct {
		TaskStatusSummaries struct {
			freshness
			Rows []statusRow
		}
		StepPerformance struct {
			freshness
			Rows []perfRow
		}
		Throughput struct {
			freshness
			Rows []hourRow
		}
	}
}

func (d dashboardData) freshnesses() map[string]freshness {
	return map[string]freshness{
		"taskStatusSummaries": d.Dashboard.TaskStatusSummaries.freshness,
		"stepPerformance":     d.Dashboard.StepPerformance.freshness,
		"throughput":          d.Dashboard.Throughput.freshness,
	}
}

func TestDashboardMatchesTheTablesAfterARefresh(t *testing.T) {
	t.Parallel()
	e := newDashEnv(t, auth.Off)
	e.addHistory(12)
	// The oldest pending task was requested three hours ago.
	var oldestPending int64
	if err := e.db.Raw(`SELECT min(t.task_id) FROM tasker_tasks t WHERE NOT EXISTS
		(SELECT 1 FROM tasker_task_transitions tt WHERE tt.task_id = t.task_id)`).Scan(&oldestPending).Error; err != nil {
		t.Fatal(err)
	}
	if err := e.db.Exec(`UPDATE tasker_tasks SET requested_at = now() - interval '3 hours' WHERE task_id = ?`,
		oldestPending).Error; err != nil {
		t.Fatal(err)
	}
	e.refreshAll()

	var got dashboardData
	e.data("", dashboardQuery, map[string]any{"ns": fixture.Namespace, "limit": 100, "hours": 3}, &got)
	for field, f := range got.freshnesses() {
		if f.RefreshedAt == nil || f.Stale {
			t.Errorf("%s: refreshedAt %v stale %v, want set and false", field, f.RefreshedAt, f.Stale)
		}
	}

	// Task status summaries equal an aggregate over the tables.
	var want []statusRow
	err := e.db.Raw(`
		SELECT nt.named_task_id::text AS named_task_id, ns.name AS namespace, nt.name AS task_name, nt.version,
		       count(t.task_id) FILTER (WHERE coalesce(tt.to_state, 'pending') = 'pending') AS pending,
		       count(t.task_id) FILTER (WHERE tt.to_state = 'in_progress') AS in_progress,
		       count(t.task_id) FILTER (WHERE tt.to_state = 'complete') AS complete,
		       count(t.task_id) FILTER (WHERE tt.to_state = 'error') AS error,
		       count(t.task_id) FILTER (WHERE tt.to_state = 'cancelled') AS cancelled,
		       count(t.task_id) FILTER (WHERE tt.to_state = 'resolved_manually') AS resolved_manually,
		       count(t.task_id) AS total
		FROM tasker_named_tasks nt
		JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
		LEFT JOIN tasker_tasks t ON t.named_task_id = nt.named_task_id
		LEFT JOIN tasker_task_transitions tt ON tt.task_id = t.task_id AND tt.most_recent
		WHERE ns.name = ?
		GROUP BY nt.named_task_id, ns.name, nt.name, nt.version
		ORDER BY ns.name, nt.name, nt.version`, fixture.Namespace).Scan(&want).Error
	if err != nil {
		t.Fatal(err)
	}
	rows := got.Dashboard.TaskStatusSummaries.Rows
	if len(rows) != 2 || len(want) != 2 {
		t.Fatalf("status summaries: got %d rows, the tables have %d named tasks; want 2", len(rows), len(want))
	}
	var pendingSum, totalSum int64
	for i, w := range want {
		g := rows[i]
		counts := func(r statusRow) [7]int64 {
			return [7]int64{r.Pending, r.InProgress, r.Complete, r.Error, r.Cancelled, r.ResolvedManually, r.Total}
		}
		if g.NamedTaskID != w.NamedTaskID || g.TaskName != w.TaskName || g.Version != w.Version ||
			g.Namespace != fixture.Namespace || counts(g) != counts(w) {
			t.Errorf("row %d = %+v, want the counts of %+v", i, g, w)
		}
		pendingSum += g.Pending
		totalSum += g.Total
	}
	if totalSum != 12 || pendingSum != 3 {
		t.Errorf("%d tasks, %d pending; want 12 and 3", totalSum, pendingSum)
	}
	// The age of the oldest pending task is computed at read time: about three hours.
	var ages []float64
	for _, r := range rows {
		if r.OldestPendingAgeSeconds != nil {
			ages = append(ages, *r.OldestPendingAgeSeconds)
		}
		if (r.OldestPendingAgeSeconds == nil) != (r.OldestPendingRequestedAt == nil) ||
			(r.OldestInProgressAgeSeconds == nil) != (r.OldestInProgressSince == nil) {
			t.Errorf("ages and times disagree: %+v", r)
		}
		if r.InProgress > 0 && (r.OldestInProgressAgeSeconds == nil || *r.OldestInProgressAgeSeconds < 60) {
			t.Errorf("in-progress age of %s = %v, want at least a minute", r.TaskName, r.OldestInProgressAgeSeconds)
		}
	}
	if slices.Max(ages) < 3*3600-60 || slices.Max(ages) > 3*3600+300 {
		t.Errorf("oldest pending ages %v, want one of about 3h", ages)
	}

	// Step performance: executions, successes and failures equal the step transitions.
	var steps struct{ Executions, Successes, Failures int64 }
	err = e.db.Raw(`SELECT count(*) FILTER (WHERE to_state = 'in_progress') AS executions,
		       count(*) FILTER (WHERE to_state = 'complete') AS successes,
		       count(*) FILTER (WHERE to_state = 'error') AS failures
		FROM tasker_workflow_step_transitions`).Scan(&steps).Error
	if err != nil {
		t.Fatal(err)
	}
	var execs, succ, fails int64
	perf := got.Dashboard.StepPerformance.Rows
	for i, r := range perf {
		execs += r.Executions
		succ += r.Successes
		fails += r.Failures
		if i > 0 && r.Executions > perf[i-1].Executions {
			t.Errorf("step performance is not busiest first at %d: %+v", i, perf)
		}
		if r.Executions > 0 && (r.MaxDurationMs == nil || r.DependentSystem != fixture.DependentSystem) {
			t.Errorf("row %+v: want durations and dependent system %q", r, fixture.DependentSystem)
		}
	}
	if execs != steps.Executions || succ != steps.Successes || fails != steps.Failures || fails != 4 {
		t.Errorf("step performance sums %d/%d/%d, tables %+v (want 4 failures)", execs, succ, fails, steps)
	}
	if top := perf[0]; top.Failures > 0 && top.ErrorRate <= 0 {
		t.Errorf("top step %+v has failures but no error rate", top)
	}

	// Throughput: three consecutive hours whose counts add up to the tables.
	hours := got.Dashboard.Throughput.Rows
	var created, stepsDone, stepsFailed int64
	for i, h := range hours {
		created += h.TasksCreated
		stepsDone += h.StepsCompleted
		stepsFailed += h.StepsFailed
		if i > 0 && !h.Hour.Equal(hours[i-1].Hour.Add(time.Hour)) {
			t.Errorf("hours not consecutive: %v", hours)
		}
	}
	if len(hours) != 3 || created != 12 || stepsDone != steps.Successes || stepsFailed != 4 {
		t.Errorf("throughput %+v: want 3 hours, 12 tasks created, %d steps completed, 4 failed", hours, steps.Successes)
	}

	// Another namespace has no rows, and its payloads still say how fresh the views are.
	var other dashboardData
	e.data("", dashboardQuery, map[string]any{"ns": "nowhere"}, &other)
	if len(other.Dashboard.TaskStatusSummaries.Rows) != 0 || len(other.Dashboard.StepPerformance.Rows) != 0 ||
		len(other.Dashboard.Throughput.Rows) != 24 || other.Dashboard.TaskStatusSummaries.RefreshedAt == nil {
		t.Errorf("namespace nowhere (default 24 hours): %+v", other)
	}
}

func TestDashboardStatementsDoNotGrowWithTheData(t *testing.T) {
	t.Parallel()
	e := newDashEnv(t, auth.Off)
	count := func(tasks int) int64 {
		e.addHistory(tasks)
		e.refreshAll()
		var d dashboardData
		r := e.data("", dashboardQuery, map[string]any{"limit": 1000, "hours": 48}, &d)
		if r.Extensions.QueryStats == nil {
			t.Fatal("no queryStats extension")
		}
		var total int64
		for _, row := range d.Dashboard.TaskStatusSummaries.Rows {
			total += row.Total
		}
		if total == 0 {
			t.Fatal("the dashboard read no tasks")
		}
		return r.Extensions.QueryStats.SQLStatements
	}
	small := count(2)
	large := count(40)
	// Two statements per dashboard field (its rows and its view's freshness).
	if small != large || small != 6 {
		t.Errorf("dashboard statements: %d with 2 tasks, %d with 42; want 6 for both", small, large)
	}
}

const (
	readModelsQuery  = `{ readModels { name lastRefreshedAt dataAsOf lastDurationMs rowCount stale staleSince lastError lastAttemptAt } }`
	refreshMutation  = `mutation($name: String!) { refreshReadModel(name: $name) { name lastRefreshedAt dataAsOf rowCount stale lastError } }`
	stalenessOnlyQry = `{ dashboard { taskStatusSummaries { refreshedAt stale } } }`
)

type readModel struct {
	Name            string
	LastRefreshedAt *time.Time
	DataAsOf        *time.Time
	LastDurationMs  *float64
	RowCount        *int64
	Stale           bool
	StaleSince      *time.Time
	LastError       *string
}

func TestReadModelsAndRefreshReadModel(t *testing.T) {
	t.Parallel()
	e := newDashEnv(t, auth.Off)

	var list struct{ ReadModels []readModel }
	e.data("", readModelsQuery, nil, &list)
	names := refresh.ViewNames()
	sort.Strings(names)
	var got []string
	before := map[string]time.Time{}
	for _, m := range list.ReadModels {
		got = append(got, m.Name)
		if m.LastRefreshedAt == nil || m.DataAsOf == nil || m.RowCount == nil || m.LastDurationMs == nil || m.LastError != nil {
			t.Errorf("read model %+v: want refreshed by the migration without error", m)
			continue
		}
		before[m.Name] = *m.LastRefreshedAt
	}
	if !slices.Equal(got, names) {
		t.Fatalf("readModels %v, want %v", got, names)
	}

	// Writes seen since the last refresh make the view stale; refreshing on demand makes it
	// fresh, advances lastRefreshedAt and counts the new rows.
	e.addHistory(4)
	if err := e.db.Exec(`UPDATE tasker_read_model_state SET stale_since = now(), marked_at = now()
		WHERE name = ?`, refresh.TaskStatusSummaries).Error; err != nil {
		t.Fatal(err)
	}
	var stale struct {
		Dashboard struct{ TaskStatusSummaries freshness }
	}
	e.data("", stalenessOnlyQry, nil, &stale)
	if !stale.Dashboard.TaskStatusSummaries.Stale {
		t.Fatalf("after a write was marked: %+v, want stale", stale)
	}
	var res struct{ RefreshReadModel readModel }
	e.data("", refreshMutation, map[string]any{"name": refresh.TaskStatusSummaries}, &res)
	m := res.RefreshReadModel
	var rows int64
	e.db.Raw(`SELECT count(*) FROM tasker_task_status_summaries`).Scan(&rows)
	if m.Name != refresh.TaskStatusSummaries || m.Stale || m.LastRefreshedAt == nil ||
		!m.LastRefreshedAt.After(before[m.Name]) || m.RowCount == nil || *m.RowCount != rows || rows != 2 {
		t.Errorf("refreshReadModel = %+v (before %v), want fresh, later, %d rows", m, before[m.Name], rows)
	}
	e.data("", stalenessOnlyQry, nil, &stale)
	if f := stale.Dashboard.TaskStatusSummaries; f.Stale || f.RefreshedAt == nil || !f.RefreshedAt.Equal(*m.LastRefreshedAt) {
		t.Errorf("dashboard after the refresh: %+v, want fresh as of %v", f, m.LastRefreshedAt)
	}

	// An unknown name is NOT_FOUND, lists the read models and refreshes nothing.
	var logged int64
	e.db.Raw(`SELECT count(*) FROM tasker_read_model_refreshes`).Scan(&logged)
	msg := e.oneError("", refreshMutation, map[string]any{"name": "tasker_nope"}, "NOT_FOUND")
	for _, want := range append(names, "tasker_nope") {
		if !strings.Contains(msg, want) {
			t.Errorf("unknown read model message %q does not name %s", msg, want)
		}
	}
	var after int64
	e.db.Raw(`SELECT count(*) FROM tasker_read_model_refreshes`).Scan(&after)
	if after != logged {
		t.Errorf("a refused refresh logged %d refreshes", after-logged)
	}
}

func TestDashboardRefusesBadSizes(t *testing.T) {
	t.Parallel()
	e := newDashEnv(t, auth.Off)
	for _, c := range []struct {
		query string
		want  string
	}{
		{`{ dashboard { stepPerformance(limit: 0) { stale } } }`, "limit 0"},
		{`{ dashboard { stepPerformance(limit: 1001) { stale } } }`, "limit 1001"},
		{`{ dashboard { stepPerformance(limit: -5) { stale } } }`, "limit -5"},
		{`{ dashboard { throughput(hours: 0) { stale } } }`, "hours 0"},
		{`{ dashboard { throughput(hours: 8785) { stale } } }`, "hours 8785"},
	} {
		r := e.gql("", c.query, nil)
		if len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "VALIDATION" ||
			!strings.Contains(r.Errors[0].Message, c.want) || r.Extensions.QueryStats.SQLStatements != 0 {
			t.Errorf("%s: errors %+v, %d statements; want one VALIDATION error naming %q and no SQL",
				c.query, r.Errors, r.Extensions.QueryStats.SQLStatements, c.want)
		}
	}
}

func TestRefreshReadModelWithoutRefresher(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // the shared harness passes no refresher
	msg := e.oneError(refreshMutation, map[string]any{"name": refresh.StepPerformance}, "SERVICE_UNAVAILABLE").Message
	if !strings.Contains(msg, "refresher") {
		t.Errorf("message %q does not say what is missing", msg)
	}
	var list struct{ ReadModels []readModel }
	e.data(readModelsQuery, nil, &list)
	if len(list.ReadModels) != len(refresh.ViewNames()) {
		t.Errorf("readModels without a refresher: %+v", list.ReadModels)
	}
}

func TestRefreshReadModelNeedsAdmin(t *testing.T) {
	t.Parallel()
	e := newDashEnv(t, auth.Required)
	vars := map[string]any{"name": refresh.HourlyThroughput}
	var logged int64
	e.db.Raw(`SELECT count(*) FROM tasker_read_model_refreshes`).Scan(&logged)
	for _, role := range []auth.Role{auth.Reader, auth.Operator} {
		msg := e.oneError(e.tokens[role], refreshMutation, vars, string(auth.Forbidden))
		if !strings.Contains(msg, "Mutation.refreshReadModel needs the admin role") {
			t.Errorf("%s: message %q", role, msg)
		}
		// Every role may read the dashboard and the read models.
		var d dashboardData
		e.data(e.tokens[role], dashboardQuery, nil, &d)
		var list struct{ ReadModels []readModel }
		e.data(e.tokens[role], readModelsQuery, nil, &list)
		if len(list.ReadModels) != 3 || len(d.Dashboard.Throughput.Rows) != 24 {
			t.Errorf("%s reads %d read models, %d hours", role, len(list.ReadModels), len(d.Dashboard.Throughput.Rows))
		}
	}
	var after int64
	e.db.Raw(`SELECT count(*) FROM tasker_read_model_refreshes`).Scan(&after)
	if after != logged {
		t.Errorf("refused refreshes logged %d refreshes", after-logged)
	}
	var res struct{ RefreshReadModel readModel }
	e.data(e.tokens[auth.Admin], refreshMutation, vars, &res)
	if res.RefreshReadModel.Name != refresh.HourlyThroughput || res.RefreshReadModel.LastRefreshedAt == nil {
		t.Errorf("admin refresh = %+v", res.RefreshReadModel)
	}
	e.db.Raw(`SELECT count(*) FROM tasker_read_model_refreshes`).Scan(&after)
	if after != logged+1 {
		t.Errorf("admin refresh logged %d refreshes, want 1", after-logged)
	}
}
