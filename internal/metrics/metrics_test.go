package metrics_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/metrics"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/eventstest"
)

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics status %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestMetricsExposeTheNamedFamilies(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	hub := eventstest.Start(t, url, slog.New(slog.DiscardHandler))
	sub := hub.Subscribe(func(events.Event) bool { return false })
	defer sub.Close()

	m := metrics.New(metrics.Options{DB: db, Hub: hub})
	m.StepClaimed("fetch", 150*time.Millisecond)
	m.StepStarted("fetch", 2*time.Millisecond)
	m.StepFinished("fetch", orchestration.OutcomeComplete, 20*time.Millisecond)
	m.StepFinished("fetch", orchestration.OutcomeError, 5*time.Millisecond)
	m.StepsRecovered(3)
	// A claim of 500 steps: 100 workers and their default prefetch.
	m.EngineCall(orchestration.CallClaim, 0, 500, 3*time.Millisecond)
	m.EngineCall(orchestration.CallRecord, 31, 0, 4*time.Millisecond)
	m.EngineCall(orchestration.CallRecordAndClaim, 30, 29, 6*time.Millisecond)

	h := m.Middleware("api", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if metrics.RequestID(r.Context()) == "" || r.Header.Get("X-Request-Id") == "" {
			t.Error("inner handler sees no request id")
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/query", nil)
	req.Header.Set("X-Request-Id", "client-id-1")
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get("X-Request-Id"); got != "client-id-1" {
		t.Fatalf("echoed request id %q, want client-id-1", got)
	}
	rec = httptest.NewRecorder()
	req = httptest.NewRequest(http.MethodGet, "/query", nil)
	req.Header.Set("X-Request-Id", "bad id with spaces")
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Fatalf("a malformed request id was echoed as %q, want a generated one", got)
	}

	body := scrape(t, m.Handler())
	for _, want := range []string{
		`tasker_step_executions_total{outcome="complete",step="fetch"} 1`,
		`tasker_step_executions_total{outcome="error",step="fetch"} 1`,
		`tasker_step_duration_seconds_count{outcome="complete",step="fetch"} 1`,
		`tasker_step_claim_latency_seconds_count{step="fetch"} 1`,
		`tasker_step_worker_wait_seconds_count{step="fetch"} 1`,
		`tasker_step_worker_wait_seconds_bucket{step="fetch",le="0.005"} 1`,
		`tasker_steps_recovered_total 3`,
		`tasker_engine_call_duration_seconds_count{call="claim"} 1`,
		`tasker_engine_call_duration_seconds_bucket{call="record",le="0.005"} 1`,
		`tasker_engine_call_duration_seconds_bucket{call="record_and_claim",le="0.005"} 0`,
		`tasker_engine_call_steps_sum{call="claim",kind="claimed"} 500`,
		`tasker_engine_call_steps_bucket{call="claim",kind="claimed",le="256"} 0`,
		`tasker_engine_call_steps_bucket{call="claim",kind="claimed",le="512"} 1`,
		`tasker_engine_call_steps_sum{call="record",kind="recorded"} 31`,
		`tasker_engine_call_steps_sum{call="record_and_claim",kind="recorded"} 30`,
		`tasker_engine_call_steps_sum{call="record_and_claim",kind="claimed"} 29`,
		`tasker_http_requests_total{code="418",handler="api"} 2`,
		`tasker_http_request_duration_seconds_count{handler="api"} 2`,
		`tasker_ready_steps 0`,
		`tasker_read_model_stale_seconds{view=`,
		`tasker_metrics_db_scrape_errors 0`,
		`tasker_subscribers `,
		`go_sql_open_connections{db_name="tasker"}`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, absent := range []string{`tasker_engine_call_steps_count{call="claim",kind="recorded"}`,
		`tasker_engine_call_steps_count{call="record",kind="claimed"}`} {
		if strings.Contains(body, absent) {
			t.Errorf("/metrics has %q: a claim records nothing, a lone recording claims nothing", absent)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
}

func TestScrapeSurvivesAnUnreachableDatabase(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	m := metrics.New(metrics.Options{DB: db, ScrapeTimeout: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := database.SQL(db).Close(); err != nil {
		t.Fatal(err)
	}
	body := scrape(t, m.Handler())
	if !strings.Contains(body, "tasker_metrics_db_scrape_errors 2") || strings.Contains(body, "tasker_ready_steps ") {
		t.Fatalf("scrape with a closed pool: want 2 scrape errors and no queue depth, got\n%s", body)
	}
}
