package server_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// createTasksCount is the createTasks mutation with the least of a reply: whether the batch
// was written, and how many tasks it created.
const createTasksCount = `mutation($in: [CreateTaskInput!]!) { createTasks(inputs: $in) { ok createdCount } }`

// BenchmarkCreateTasksMutation creates tasks through the createTasks mutation of the real HTTP
// handler, one request of orchestration.MaxBatch (1,000) inputs at a time, half of them with an
// idempotency key: five-step noop diamonds (bench/noop_five) and one-step noop tasks
// (bench/noop_one), as the test databases' owner (who must run the foreign-key checks) and
// as the server's administrator (who may skip them, migration 00051). It reports steps/s and
// tasks/s created, the client's encoding, the HTTP round trip and the server's decoding and
// reply included, and checks that every request created all its tasks.
//
//	go test ./graph/server -run '^$' -bench CreateTasksMutation -benchtime 5x
func BenchmarkCreateTasksMutation(b *testing.B) {
	templates := []struct {
		name, yaml string
		steps      int
	}{{"noop_five", fixture.NoopDiamondYAML, 5}, {"noop_one", fixture.NoopOneYAML, 1}}
	for _, trusted := range []bool{false, true} {
		for _, tc := range templates {
			role := map[bool]string{false: "checked", true: "trusted"}[trusted]
			b.Run(role+"/"+tc.name, func(b *testing.B) {
				url := dbtest.NewURL(b)
				if trusted {
					url = dbtest.AsServerAdmin(b, url)
				}
				e := newEnvAt(b, url)
				tpl, err := template.Parse(tc.name+".yaml", []byte(tc.yaml), handler.NewBuiltinRegistry())
				if err != nil {
					b.Fatal(err)
				}
				if err := e.templates.Add(tpl); err != nil {
					b.Fatal(err)
				}
				inputs := make([]map[string]any, orchestration.MaxBatch)
				b.ResetTimer()
				begin := time.Now()
				for i := range b.N {
					for j := range inputs {
						inputs[j] = map[string]any{"namespace": "bench", "name": tc.name, "context": map[string]any{"n": 1}}
						if j%2 == 0 {
							inputs[j]["idempotencyKey"] = fmt.Sprintf("bench-%d-%d", i, j)
						}
					}
					var out struct {
						CreateTasks struct {
							Ok           bool
							CreatedCount int
						}
					}
					e.data(createTasksCount, map[string]any{"in": inputs}, &out)
					if !out.CreateTasks.Ok || out.CreateTasks.CreatedCount != len(inputs) {
						b.Fatalf("request %d: createTasks = %+v, want %d created", i, out.CreateTasks, len(inputs))
					}
				}
				secs := time.Since(begin).Seconds()
				tasks := float64(b.N * len(inputs))
				b.ReportMetric(tasks*float64(tc.steps)/secs, "steps/s")
				b.ReportMetric(tasks/secs, "tasks/s")
				var created int64
				if err := e.db.Raw(`SELECT count(*) FROM tasker_workflow_steps`).Row().Scan(&created); err != nil {
					b.Fatal(err)
				}
				if want := int64(tasks) * int64(tc.steps); created != want {
					b.Fatalf("%d steps in the database, want %d", created, want)
				}
			})
		}
	}
}
