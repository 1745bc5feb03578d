package bench_test

import (
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/testkit/bench"
)

const sample = `goos: linux
pkg: github.com/taskerhq/tasker/internal/testkit/bench
BenchmarkReadySteps/steps=10/views-2 	      20	    500000 ns/op	         4.000 rows	         1.000 stmts/op
BenchmarkReadySteps/steps=10/baseline-2         	      20	   5000000 ns/op	         4.000 rows	        37.00 stmts/op
BenchmarkReadinessByDatabaseSize/steps=10000/views-2 	 20	 2000000 ns/op	 1.000 stmts/op
BenchmarkReadinessByDatabaseSize/steps=1000000/views-2 	 20	 2200000 ns/op	 1.000 stmts/op	 50.5 seed-s
pkg: github.com/taskerhq/tasker/internal/refresh
BenchmarkReadModels/steps=10000/dashboard/materialized-2 	 1	 6000000 ns/op
BenchmarkReadModels/steps=10000/dashboard/live-2 	 1	 84000000 ns/op
BenchmarkReadModels/steps=1000000/dashboard/materialized-2 	 1	 6600000 ns/op
BenchmarkReadModels/steps=1000000/dashboard/live-2 	 1	 8400000000 ns/op
pkg: github.com/taskerhq/tasker/graph/server
BenchmarkSubscriptionLatency-2 	 100	 7000000 ns/op	 3.5 p50-ms	 6.75 p95-ms
pkg: github.com/taskerhq/tasker/internal/other
BenchmarkSomething-2 	 3	 1000 ns/op
FAIL	github.com/taskerhq/tasker/internal/orchestration [build failed]
`

func TestReportPlacesRowsAndComparesWithTheReference(t *testing.T) {
	t.Parallel()
	run, err := bench.Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Results) != 10 || run.Results[0].Name != "BenchmarkReadySteps/steps=10/views" ||
		run.Results[0].Metrics["stmts/op"] != 1 || run.Results[3].Metrics["seed-s"] != 50.5 {
		t.Fatalf("parsed %+v", run.Results)
	}
	var b strings.Builder
	if err := bench.Write(&b, bench.Machine{Cores: 2}, run, bench.Sections, "## Findings\n"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| `ReadySteps/steps=10/views` | internal/testkit/bench | 20 | 500.0 µs | 1 | 4 rows | 10.0x faster, 1/37.0 statements (97.30% fewer) |",
		"| `ReadinessByDatabaseSize/steps=1000000/views` | internal/testkit/bench | 20 | 2.20 ms | 1 | 50.50 seed-s | 1.10x slower, same statements |",
		"| `ReadModels/steps=10000/dashboard/materialized` | internal/refresh | 1 | 6.00 ms | — |  | 14.0x faster |",
		"| `ReadModels/steps=1000000/dashboard/materialized` | internal/refresh | 1 | 6.60 ms | — |  | 1273x faster; 1.10x slower than `ReadModels/steps=10000/dashboard/materialized` |",
		"| `ReadModels/steps=1000000/dashboard/live` | internal/refresh | 1 | 8.40 s | — |  | reference; 100x slower than `ReadModels/steps=10000/dashboard/live` |",
		"| `SubscriptionLatency` | graph/server | 100 | 7.00 ms | — | 3.50 p50-ms, 6.75 p95-ms |  |",
		"**not yet measured**: orchestration throughput",
		"**not yet measured**: GraphQL query at 10 tasks",
		"## Other benchmarks",
		"| `Something` | internal/other | 3 | 1.0 µs |",
		"`FAIL\tgithub.com/taskerhq/tasker/internal/orchestration [build failed]`",
		"## Findings",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if o, l := strings.Index(out, "## Orchestration"), strings.Index(out, "`SubscriptionLatency`"); o < 0 || l < o ||
		strings.Contains(out, "not yet measured**: subscription latency") {
		t.Errorf("subscription latency is not in the orchestration section:\n%s", out)
	}
}

func TestKeptSectionsSurviveRegeneration(t *testing.T) {
	previous := "# Benchmarks\n\nold rows\n\n<!-- engine-vs-river:start -->\n## Engine vs River\n| a | b |\n<!-- engine-vs-river:end -->\n" +
		"tail\n<!-- broken:start -->\nno end\n<!-- x:start -->y<!-- z:end -->\n"
	got := bench.KeptSections(previous)
	want := "<!-- engine-vs-river:start -->\n## Engine vs River\n| a | b |\n<!-- engine-vs-river:end -->\n\n"
	if got != want {
		t.Fatalf("KeptSections = %q, want %q", got, want)
	}
	if bench.KeptSections("# Benchmarks\n") != "" {
		t.Fatal("a report without marked sections keeps nothing")
	}
}
