package tracing_test

import (
	"context"
	"encoding/json"
	"testing"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/tracing"
)

// benchQuery reads a page of 20 tasks with their steps, the steps' readiness, parents and
// transitions, and each task's execution context: a request with some twenty SQL statements.
const benchQuery = `{"query":"{ tasks(first: 20) { nodes { id status steps { id name status readiness { readyForExecution blockingReason } parents { id } transitions { toState } } executionContext { totalSteps readySteps executionStatus } } } }"}`

// BenchmarkGraphQLRequest sends the same GraphQL request (benchQuery over 20 tasks of six steps)
// through the real HTTP server, first with tracing off, then on (every span exported, to an
// in-memory exporter). It reports statements and spans per request.
//
//	go test ./internal/tracing -run '^$' -bench GraphQLRequest -benchtime 200x
func BenchmarkGraphQLRequest(b *testing.B) {
	if tracing.Enabled() {
		b.Fatal("tracing is already on: run the benchmark without the tests (-run '^$')")
	}
	for _, mode := range []string{"off", "on"} {
		if mode == "on" {
			enable(b)
		}
		addr, gdb := serveAPI(b)
		seedTasks(b, gdb, 20)
		b.Run("request/"+mode, func(b *testing.B) {
			var stmts int
			exporter.Reset()
			for b.Loop() {
				body, _ := postQuery(b, addr, "", benchQuery)
				var reply struct {
					Extensions struct {
						QueryStats struct{ SQLStatements int } `json:"queryStats"`
					} `json:"extensions"`
				}
				if err := json.Unmarshal(body, &reply); err != nil {
					b.Fatal(err)
				}
				stmts = reply.Extensions.QueryStats.SQLStatements
			}
			b.ReportMetric(float64(stmts), "stmts/op")
			b.ReportMetric(float64(len(exporter.GetSpans()))/float64(b.N), "spans/op")
			exporter.Reset()
		})
	}
}

// seedTasks creates n tasks of the linear workflow (not run).
func seedTasks(b *testing.B, gdb *gorm.DB, n int) {
	b.Helper()
	ctx := context.Background()
	reg, err := template.Shipped(handler.NewBuiltinRegistry())
	if err != nil {
		b.Fatal(err)
	}
	if err := reg.RegisterAll(ctx, gdb); err != nil {
		b.Fatal(err)
	}
	for range n {
		if _, _, err := orchestration.NewService(gdb, reg).CreateTask(ctx, orchestration.CreateTaskRequest{
			Namespace: "examples", Name: "linear_workflow", Initiator: "bench", Reason: "tracing",
		}); err != nil {
			b.Fatal(err)
		}
	}
}
