package app

import (
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// collector is an OTLP/HTTP trace receiver: it decodes every ExportTraceServiceRequest posted
// to /v1/traces and keeps its spans.
type collector struct {
	*httptest.Server
	mu       sync.Mutex
	requests int
	spans    []span
}

// span is what the tests read of a received span.
type span struct {
	service, name         string
	traceID, id, parentID string
	attrs                 map[string]string
}

func newCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &req)
		}
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || err != nil {
			t.Errorf("collector: %s %s (%s): %v", r.Method, r.URL.Path, r.Header.Get("Content-Type"), err)
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		c.requests++
		for _, rs := range req.ResourceSpans {
			var service string
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					attrs := map[string]string{}
					for _, kv := range s.Attributes {
						v := kv.GetValue()
						switch {
						case v.GetStringValue() != "":
							attrs[kv.Key] = v.GetStringValue()
						case v.GetArrayValue() != nil:
							var parts []string
							for _, e := range v.GetArrayValue().Values {
								parts = append(parts, strconv.FormatInt(e.GetIntValue(), 10))
							}
							attrs[kv.Key] = strings.Join(parts, ",")
						default:
							attrs[kv.Key] = strconv.FormatInt(v.GetIntValue(), 10)
						}
					}
					c.spans = append(c.spans, span{service: service, name: s.Name, attrs: attrs,
						traceID: hex.EncodeToString(s.TraceId), id: hex.EncodeToString(s.SpanId),
						parentID: hex.EncodeToString(s.ParentSpanId)})
				}
			}
		}
		c.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(c.Close)
	return c
}

// received returns the spans received so far and the number of export requests.
func (c *collector) received() ([]span, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]span(nil), c.spans...), c.requests
}

// otlpEnv points a tasker process at the collector. Spans are exported only when 2,048 are
// waiting or after ten minutes, so that what arrives by the end of a short test was flushed by
// the process's shutdown.
func (c *collector) otlpEnv(service string) []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + c.URL, "OTEL_SERVICE_NAME=" + service,
		"OTEL_BSP_SCHEDULE_DELAY=600000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=2048"}
}

// graphQL posts a query with a request id and returns the response's sqlStatements count.
func graphQL(t *testing.T, addr, token, requestID, query string) (string, int) {
	t.Helper()
	resp, reply := postQuery(t, addr, query, "Authorization", "Bearer "+token, "X-Request-Id", requestID)
	var out struct {
		Errors     []any `json:"errors"`
		Extensions struct {
			QueryStats struct {
				SQLStatements int `json:"sqlStatements"`
			} `json:"queryStats"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(reply, &out); err != nil || resp.StatusCode != http.StatusOK || len(out.Errors) > 0 {
		t.Fatalf("POST /query %s: %d %s", query, resp.StatusCode, reply)
	}
	if got := resp.Header.Get("X-Request-Id"); got != requestID {
		t.Fatalf("X-Request-Id = %q, want %q", got, requestID)
	}
	return string(reply), out.Extensions.QueryStats.SQLStatements
}

// waitTaskDone waits until every step of the task is processed and the task complete.
func waitTaskDone(t *testing.T, db *gorm.DB, taskID string) {
	t.Helper()
	ok := wait.Eventually(30*time.Second, func() bool {
		var state string
		db.Raw(`SELECT to_state FROM tasker_task_transitions WHERE task_id = ? AND most_recent`, taskID).Scan(&state)
		return state == "complete"
	})
	if !ok {
		t.Fatalf("task %s did not complete within 30s", taskID)
	}
}

// checkStepSpans checks that each attempt of the task's steps exported claim → run → record,
// with the task id, step id and attempt on the run and the record.
func checkStepSpans(t *testing.T, spans []span, service, taskID string, attempts int) {
	t.Helper()
	byID := map[string]span{}
	for _, s := range spans {
		byID[s.id] = s
	}
	runs := 0
	for _, run := range spans {
		if run.name != "orchestration.run" || run.attrs["tasker.task_id"] != taskID {
			continue
		}
		runs++
		step := run.attrs["tasker.step_id"]
		if run.service != service || step == "" || run.attrs["tasker.attempt"] == "" || run.attrs["tasker.step_name"] == "" {
			t.Errorf("run span %+v lacks the service, step id, step name or attempt", run)
		}
		claim := byID[run.parentID]
		if claim.name != "orchestration.claim" || claim.traceID != run.traceID ||
			!strings.Contains(","+claim.attrs["tasker.step_ids"]+",", ","+step+",") {
			t.Errorf("run of step %s: parent %+v, want the claim span that took the step", step, claim)
		}
		var records int
		for _, rec := range spans {
			if rec.name == "orchestration.record" && rec.parentID == run.id && rec.attrs["tasker.step_id"] == step &&
				rec.attrs["tasker.attempt"] == run.attrs["tasker.attempt"] {
				records++
			}
		}
		if records != 1 {
			t.Errorf("run of step %s attempt %s: %d record spans, want 1", step, run.attrs["tasker.attempt"], records)
		}
	}
	if runs != attempts {
		t.Errorf("%d run spans of task %s, want %d", runs, taskID, attempts)
	}
}

// otlpSetup returns the tasker binary, a collector and a fresh database.
func otlpSetup(t *testing.T) (string, *collector, string, *gorm.DB) {
	t.Helper()
	url := dbtest.NewURL(t)
	return buildTasker(t), newCollector(t), url, dbtest.Open(t, url)
}

// tasker serve exports its spans with OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set and
// flushes them on shutdown: a GraphQL request makes an HTTP span, the operation's span as its
// child and SQL spans below, all with the request id; the workers' attempts make claim → run →
// record spans. With TASKER_TRACING=off the same endpoint receives nothing and the same request
// runs the same number of statements.
func TestServeExportsTracesWithOTLP(t *testing.T) {
	t.Parallel()
	bin, c, url, db := otlpSetup(t)
	token := createToken(t, url, auth.Operator)
	const read = `query Overview { namespaces { name } tasks(first: 5) { edges { node { id steps { name } } } } }`

	s := startProcess(t, bin, "serve", []string{"-database-url", url, "-data-dir", t.TempDir()},
		append(c.otlpEnv("tasker-e2e"), "TASKER_QUERY_STATS=1"))
	reply, _ := graphQL(t, s.addr, token, "e2e-create",
		`mutation Create { createTask(input: {namespace: "examples", name: "linear_workflow"}) { id } }`)
	var created struct {
		Data struct{ CreateTask struct{ ID string } } `json:"data"`
	}
	if err := json.Unmarshal([]byte(reply), &created); err != nil || created.Data.CreateTask.ID == "" {
		t.Fatalf("createTask: %s", reply)
	}
	taskID := created.Data.CreateTask.ID
	waitTaskDone(t, db, taskID)
	_, statementsOn := graphQL(t, s.addr, token, "e2e-read", read)
	if _, requests := c.received(); requests != 0 {
		t.Fatalf("%d exports before shutdown, want none: the test checks the flush on shutdown", requests)
	}
	s.stop(t, syscall.SIGTERM)
	if !strings.Contains(s.log.String(), `msg="serve: stopped" step=tracing`) {
		t.Errorf("no tracing stop step in the log:\n%s", s.log.String())
	}
	spans, requests := c.received()
	if requests == 0 {
		t.Fatal("no spans exported by shutdown")
	}

	// The request: HTTP → operation → SQL, every span of its trace with the request id.
	byID := map[string]span{}
	for _, sp := range spans {
		byID[sp.id] = sp
	}
	var httpSpan, op span
	for _, sp := range spans {
		if sp.attrs["tasker.request_id"] != "e2e-create" {
			continue
		}
		switch sp.name {
		case "POST /query":
			httpSpan = sp
		case "mutation Create":
			op = sp
		}
	}
	if httpSpan.id == "" || httpSpan.parentID != "" || httpSpan.service != "tasker-e2e" {
		t.Fatalf("HTTP span of e2e-create: %+v, want a root span of service tasker-e2e", httpSpan)
	}
	if op.id == "" || op.parentID != httpSpan.id {
		t.Fatalf("operation span %+v, want a child of the HTTP span %s", op, httpSpan.id)
	}
	descends := func(sp span, ancestor string) bool {
		for p, hops := sp.parentID, 0; p != "" && hops < 10; p, hops = byID[p].parentID, hops+1 {
			if p == ancestor {
				return true
			}
		}
		return false
	}
	var inTrace, sql, sqlOfOp int
	for _, sp := range spans {
		if sp.traceID != httpSpan.traceID {
			continue
		}
		inTrace++
		if sp.attrs["tasker.request_id"] != "e2e-create" {
			t.Errorf("span %q of the request's trace has request id %q", sp.name, sp.attrs["tasker.request_id"])
		}
		if !strings.HasPrefix(sp.name, "query ") {
			continue
		}
		// The token's check runs before the operation, the resolvers' statements within it.
		sql++
		if !descends(sp, httpSpan.id) || sp.attrs["db.query.text"] == "" {
			t.Errorf("SQL span %q (%q) does not descend from the HTTP span", sp.name, sp.attrs["db.query.text"])
		}
		// Task creation writes with INSERT and with a WITH … INSERT (steps and edges at once).
		if descends(sp, op.id) && (sp.name == "query INSERT" || sp.name == "query WITH") {
			sqlOfOp++
		}
	}
	if sqlOfOp < 2 || inTrace < sql+3 {
		t.Errorf("request trace: %d spans, %d SQL, %d writes under the operation: want HTTP, operation, field and SQL spans", inTrace, sql, sqlOfOp)
	}
	// The linear workflow: six steps, process_data failing once.
	checkStepSpans(t, spans, "tasker-e2e", taskID, 7)

	// Off: the endpoint is set, TASKER_TRACING=off wins; nothing arrives, statements unchanged.
	off := startProcess(t, bin, "serve", []string{"-database-url", url, "-data-dir", t.TempDir()},
		append(c.otlpEnv("tasker-off"), "TASKER_QUERY_STATS=1", "TASKER_TRACING=off"))
	_, statementsOff := graphQL(t, off.addr, token, "e2e-read-off", read)
	off.stop(t, syscall.SIGTERM)
	if _, after := c.received(); after != requests {
		t.Errorf("%d export requests while tracing was off", after-requests)
	}
	if strings.Contains(off.log.String(), "tracing: on") {
		t.Errorf("tracing reported on with TASKER_TRACING=off")
	}
	if statementsOn == 0 || statementsOn != statementsOff {
		t.Errorf("the same request ran %d statements with tracing on, %d off: want equal", statementsOn, statementsOff)
	}
}

// tasker worker exports the claim → run → record spans of the steps it runs, flushed when it
// stops.
func TestWorkerExportsTracesWithOTLP(t *testing.T) {
	t.Parallel()
	bin, c, url, db := otlpSetup(t)
	id, err := runTask(t, url, "-template", "examples/linear_workflow", "-templates-dir", "")
	if err != nil {
		t.Fatal(err)
	}
	taskID := strconv.FormatInt(id, 10)
	w := startProcess(t, bin, "worker", []string{"-metrics-listen", "127.0.0.1:0"},
		append(c.otlpEnv("tasker-worker-e2e"), "DATABASE_URL="+url))
	waitTaskDone(t, db, taskID)
	if _, requests := c.received(); requests != 0 {
		t.Fatalf("%d exports before shutdown, want none: the test checks the flush on shutdown", requests)
	}
	w.stop(t, syscall.SIGTERM)
	spans, _ := c.received()
	checkStepSpans(t, spans, "tasker-worker-e2e", taskID, 7)
}
