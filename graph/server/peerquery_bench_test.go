package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/taskerhq/tasker/graph/server"
)

// peerQueries are the three reads of internal/testkit/bench/cmd/peers (the comparison with
// PostGraphile), with the task id as variable where the query takes one.
var peerQueries = []struct{ name, query string }{
	{"detail", `query($id: ID!) { task(id: $id) { id
		transitions { id toState createdAt }
		steps { id name status
			readiness { readyForExecution blockingReason nextRetryAt }
			dag { parentStepIds childStepIds dependencyLevel }
			transitions { id toState createdAt } } } }`},
	{"page", `{ tasks(first: 100) { nodes { id
		executionContext { totalSteps readySteps executionStatus healthStatus completionPercentage }
		steps { id name status readiness { readyForExecution blockingReason } parents { id status } } } } }`},
	{"ready", `{ steps(first: 100, filter: {ready: true}) { nodes { id name status attempts
		task { id } readiness { readyForExecution nextRetryAt } } } }`},
}

// processCPU is the CPU time (user and system) this process has used so far, in nanoseconds.
func processCPU(b *testing.B) int64 {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		b.Fatal(err)
	}
	return u.Utime.Nano() + u.Stime.Nano()
}

// BenchmarkPeerQueries measures the Go side of the peer comparison's queries: each operation
// serves one request through the real handler (server.New with the production defaults, query
// stats off) on 100 tasks of 10 steps, without a network or a client decoding the answer, so
// that -cpuprofile and -benchmem show what the server spends per request.
//
//	go test ./graph/server -run '^$' -bench PeerQueries -benchmem -cpuprofile cpu.out
func BenchmarkPeerQueries(b *testing.B) {
	e := newEnv(b, func(c *server.Config) { c.QueryStats = false })
	seedWide(b, e.fx, 100)
	if err := e.db.Exec("ANALYZE").Error; err != nil {
		b.Fatal(err)
	}
	var taskID int64
	if err := e.db.Raw("SELECT min(task_id) FROM tasker_tasks").Scan(&taskID).Error; err != nil {
		b.Fatal(err)
	}
	h := e.api.Handler()
	for _, q := range peerQueries {
		body, err := json.Marshal(map[string]any{"query": q.query, "variables": map[string]any{"id": fmt.Sprint(taskID)}})
		if err != nil {
			b.Fatal(err)
		}
		serve := func() *httptest.ResponseRecorder {
			req := httptest.NewRequest(http.MethodPost, "/query", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec
		}
		if rec := serve(); rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), `"errors"`) {
			b.Fatalf("%s: status %d, body %.500s", q.name, rec.Code, rec.Body.String())
		}
		b.Run(q.name, func(b *testing.B) {
			b.ReportAllocs()
			before := processCPU(b)
			for b.Loop() {
				serve()
			}
			b.ReportMetric(float64(processCPU(b)-before)/float64(b.N), "cpu-ns/op")
		})
	}
}
