// Command bench-river measures tasker's engine against River (a Go job queue on PostgreSQL)
// on the same PostgreSQL server, with the same unit counts and worker counts, and writes the
// section "Engine vs River" of BENCHMARKS.md.
//
// Each run gets a fresh database, created for it and dropped after it. Work is created before
// the clock starts: River's jobs with InsertMany, tasker's tasks with `tasker run-task -jsonl`
// (the createTasks service, in batches of 1,000); the creation rate of each is reported too.
// Then River's client, or one or two `tasker worker` processes, drain the work. A run's rate is
// its units divided by the span the database records, from the first unit started (River: the
// first attempted_at; tasker: the first step transition) to the last finished (River: the last
// finalized_at; tasker: the last task transition): neither process's start-up is counted. The
// wall time from start-up to the last unit seen finished is reported beside it.
//
// Every scenario runs -rounds times (3 by default): each round drains it with River and with
// each tasker setting, back to back, and the report shows the run of median rate of each, the
// ratio of the median rates and the range of the rounds' own ratios. The machine's speed drifts
// (other work shares it), and a single run's ratio moved by a third between runs.
//
// River runs with the fetch settings of its own benchmark (cmd/river bench): a 2 ms fetch
// cooldown and a 20 ms fetch poll interval; its MaxWorkers is the run's worker count, and each
// tasker worker process runs that many workers (-workers).
//
// For one-step work, each round also drains the same tasks with the write floor
// (floor.sql): a procedure that writes exactly the rows and notifications of the engine's
// drain, with no client at all. Its rate is what the data model's writes allow on this
// machine; the report sets it beside River's and beside the engine's.
//
// This is a module of its own so that the product's go.mod does not depend on River.
package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// scenario is one comparison: units of work of a shape, drained by a number of workers.
type scenario struct {
	name     string
	template string // tasker template, namespace/name
	steps    int    // steps per task = River jobs per task
	workers  int
	sleep    time.Duration // how long each step's handler and each River job run (0: they return at once)
}

// result is one drain.
type result struct {
	units      int           // steps or jobs
	span       time.Duration // first unit started to last finished, as the database records
	wall       time.Duration // process start to last unit seen finished
	createRate float64       // units created per second, before the drain
	busy       float64       // share of the machine's CPU time busy during the drain (wall)
	// dbCPU and clientCPU are the CPU time the database server's processes (when the server
	// runs on this machine; 0 otherwise) and the client's (River's: this process; tasker's:
	// its worker processes) spent during the drain.
	dbCPU, clientCPU time.Duration
}

func (r result) rate() float64 { return float64(r.units) / r.span.Seconds() }

func main() {
	serverURL := flag.String("server-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"PostgreSQL server (any database): each run creates and drops its own database there")
	tasker := flag.String("tasker", "bin/tasker", "the tasker binary")
	templates := flag.String("templates-dir", "bench/river/templates", "templates of the benchmark's tasks")
	tasks := flag.Int("tasks", 10000, "tasks per run (River: jobs per run = tasks x steps per task)")
	out := flag.String("out", "BENCHMARKS.md", "file whose section \"Engine vs River\" is replaced (created when missing); - prints it")
	command := flag.String("command", "make bench-river", "the command named in the report")
	rounds := flag.Int("rounds", 3, "rounds of every scenario: River and each tasker setting once a round, interleaved; the median round is reported")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log, *serverURL, *tasker, *templates, *tasks, *rounds, *out, *command); err != nil {
		log.Error("bench-river", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, serverURL, tasker, templates string, tasks, rounds int, out, command string) error {
	if tasks < 1 {
		return fmt.Errorf("-tasks %d: want at least 1", tasks)
	}
	if rounds < 1 {
		return fmt.Errorf("-rounds %d: want at least 1", rounds)
	}
	scenarios := []scenario{
		{"one-step tasks vs jobs", "bench/noop_one", 1, 32, 0},
		{"one-step tasks vs jobs", "bench/noop_one", 1, 100, 0},
		{"five-step diamond tasks vs jobs", "bench/noop_five", 5, 32, 0},
		// Handlers that take time: each step and each job sleeps 10 ms, so 32 workers could run
		// 3,200 a second; what a drain loses to that is time workers spend waiting for work.
		{"one-step tasks vs jobs, each sleeping 10 ms", "bench/sleep_one", 1, 32, 10 * time.Millisecond},
	}
	// tasker: one process, two processes, one process of two engines, and one process that
	// prefetches nothing (TASKER_PREFETCH=0: it claims only for idle workers, as River fetches).
	settings := []taskerSetting{{processes: 1}, {processes: 2}, {processes: 1, engines: 2}, {processes: 1, noPrefetch: true}}
	// The write floor (one-step work only): one backend, and two at once, in batches of the
	// workers' count and of the engine's default claim batch (floorBatches).
	floorBackends := []int{1, 2}
	begin := time.Now()
	load := loadAverage()
	var rows, floorRows []string
	for _, sc := range scenarios {
		units := tasks * sc.steps
		// Every round drains the scenario once with River and once with each tasker setting,
		// back to back, so that a slower or faster spell of the machine weighs on all of them.
		rv := make([]result, rounds)
		tk := make([][]result, len(settings))
		batches := floorBatches(sc)
		// fl[b][i] are the floor's runs in batches of batches[b] from floorBackends[i] backends.
		fl := make([][][]result, len(batches))
		for b := range fl {
			fl[b] = make([][]result, len(floorBackends))
		}
		for round := range rounds {
			var err error
			rv[round], err = fresh(ctx, serverURL, func(dbURL string) (result, error) {
				return runRiver(ctx, dbURL, units, sc.workers, sc.sleep)
			})
			if err != nil {
				return fmt.Errorf("River, %s, %d workers: %w", sc.name, sc.workers, err)
			}
			log.Info("River", "scenario", sc.name, "workers", sc.workers, "round", round+1, "jobs", units,
				"jobs/s", int(rv[round].rate()), "wall", rv[round].wall)
			for i, st := range settings {
				r, err := fresh(ctx, serverURL, func(dbURL string) (result, error) {
					return runTasker(ctx, dbURL, tasker, templates, sc, tasks, st)
				})
				if err != nil {
					return fmt.Errorf("tasker, %s, %d workers, %d processes: %w", sc.name, sc.workers, st.processes, err)
				}
				tk[i] = append(tk[i], r)
				log.Info("tasker", "scenario", sc.name, "workers", sc.workers, "round", round+1, "processes", st.processes,
					"engines", st.engines, "no_prefetch", st.noPrefetch, "steps", units, "steps/s", int(r.rate()),
					"wall", r.wall)
			}
			for b, batch := range batches {
				for i, backends := range floorBackends {
					r, err := fresh(ctx, serverURL, func(dbURL string) (result, error) {
						return runFloor(ctx, dbURL, tasker, templates, sc, tasks, batch, backends)
					})
					if err != nil {
						return fmt.Errorf("write floor, %s, batches of %d, %d backends: %w", sc.name, batch, backends, err)
					}
					fl[b][i] = append(fl[b][i], r)
					log.Info("write floor", "scenario", sc.name, "batch", batch, "round", round+1, "backends", backends,
						"steps", units, "steps/s", int(r.rate()), "wall", r.wall)
				}
			}
		}
		river := median(rv)
		// Both tables' rows of the scenario begin with the work, the workers and River.
		head := []string{fmt.Sprintf("%s (%s steps)", sc.name, thousands(units)), strconv.Itoa(sc.workers), rateCell(river, "jobs/s")}
		cells := slices.Clone(head)
		for i := range settings {
			cells = append(cells, rateCell(median(tk[i]), "steps/s"), ratioCell(rv, tk[i]))
		}
		// How much a second process adds: two processes' median rate over one's, with the
		// range of the rounds' own (settings 1 and 0 of a round ran back to back).
		cells = append(cells, ratioCellOf(tk[0], tk[1], "x"))
		cells = append(cells, thousands(int(river.createRate)), thousands(int(median(tk[0]).createRate)))
		rows = append(rows, "| "+strings.Join(cells, " | ")+" |")
		for b, batch := range batches {
			// The floor beside River, then how close the engine comes to it: one process
			// against one backend, two processes against two.
			cells := []string{head[0], strconv.Itoa(batch), head[2]}
			for i := range floorBackends {
				cells = append(cells, rateCell(median(fl[b][i]), "steps/s"), ratioCell(rv, fl[b][i]))
			}
			cells = append(cells, ratioCellOf(fl[b][0], tk[0], ""), ratioCellOf(fl[b][1], tk[1], ""))
			floorRows = append(floorRows, "| "+strings.Join(cells, " | ")+" |")
		}
	}
	section := report(rows, floorRows, tasks, rounds, command, time.Since(begin), load)
	if out == "-" {
		fmt.Print(section)
		return nil
	}
	return replaceSection(out, section)
}

// median is the run of median rate among runs (of an even number, the slower of the middle
// two).
func median(runs []result) result {
	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b result) int { return cmp.Compare(a.rate(), b.rate()) })
	return sorted[(len(sorted)-1)/2]
}

// ratioCell is the ratio of tasker's median rate to River's, with, over several rounds, the
// range of the rounds' own ratios (each tasker run against the River run of its round).
func ratioCell(river, tasker []result) string { return ratioCellOf(river, tasker, "") }

// ratioCellOf is ratioCell with unit after each ratio.
func ratioCellOf(base, other []result, unit string) string {
	cell := fmt.Sprintf("%.2f%s", median(other).rate()/median(base).rate(), unit)
	if len(base) < 2 {
		return cell
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i := range base {
		r := other[i].rate() / base[i].rate()
		lo, hi = min(lo, r), max(hi, r)
	}
	return fmt.Sprintf("%s (%.2f-%.2f%s)", cell, lo, hi, unit)
}

// rateCell shows a run's rate, its span and wall time, the share of the machine's CPU busy
// during the wall time, and that busy CPU time per unit (every process's: the database's,
// the workers', and whatever else ran).
func rateCell(r result, unit string) string {
	perUnit := 0.0
	if r.units > 0 {
		perUnit = r.busy * float64(runtime.NumCPU()) * r.wall.Seconds() * 1e6 / float64(r.units)
	}
	split := ""
	if r.units > 0 && r.dbCPU > 0 {
		split = fmt.Sprintf(": database %.0f, client %.0f", float64(r.dbCPU.Microseconds())/float64(r.units),
			float64(r.clientCPU.Microseconds())/float64(r.units))
	}
	return fmt.Sprintf("%s %s (%.1f s; wall %.1f s; CPU %.0f%%, %.0f µs a unit%s)", thousands(int(r.rate())), unit, r.span.Seconds(),
		r.wall.Seconds(), 100*r.busy, perUnit, split)
}

// clockTicks is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const clockTicks = 100

// processCPU is the CPU time (user and system) the process pid has spent, from
// /proc/<pid>/stat; 0 when it cannot be read.
func processCPU(pid string) time.Duration {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: the fields that follow it are split.
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0
	}
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 13 {
		return 0
	}
	user, _ := strconv.ParseUint(f[11], 10, 64)
	system, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(user+system) * time.Second / clockTicks
}

// serverCPU is the CPU time spent so far by this machine's live PostgreSQL processes (command
// names starting with "postgres"): the server's, when it runs here. A backend that exits
// takes its time with it, so it is read while the drain's connections are still open.
func serverCPU() time.Duration {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + d.Name() + "/comm")
		if err != nil || !strings.HasPrefix(string(comm), "postgres") {
			continue
		}
		total += processCPU(d.Name())
	}
	return total
}

// cpuSample is the machine's CPU time (all cores, in clock ticks) at one moment, from
// /proc/stat: busy and in total.
type cpuSample struct{ busy, total uint64 }

func readCPU() cpuSample {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var s cpuSample
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		s.total += v
		if i != 3 && i != 4 { // idle and iowait
			s.busy += v
		}
	}
	return s
}

// busySince is the share of the machine's CPU time that was busy since s (0 when unknown).
func (s cpuSample) busySince() float64 {
	now := readCPU()
	if now.total <= s.total {
		return 0
	}
	return float64(now.busy-s.busy) / float64(now.total-s.total)
}

// fresh runs f on a database created for it, dropped afterwards.
func fresh(ctx context.Context, serverURL string, f func(dbURL string) (result, error)) (result, error) {
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return result{}, err
	}
	defer admin.Close(ctx)
	name := fmt.Sprintf("bench_river_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return result{}, err
	}
	defer admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") //nolint:errcheck
	u, err := url.Parse(serverURL)
	if err != nil {
		return result{}, err
	}
	u.Path = "/" + name
	return f(u.String())
}

// hasFloor says whether the write floor drains the scenario too: one-step work whose handlers
// return at once (the floor runs no handler).
func (sc scenario) hasFloor() bool { return sc.steps == 1 && sc.sleep == 0 }

// enginePrefetchPerWorker is tasker's default prefetch, steps a worker (TASKER_PREFETCH unset):
// an engine's claims and recordings carry up to workers × (1 + enginePrefetchPerWorker) steps.
const enginePrefetchPerWorker = 4

// floorBatches are the batches the write floor drains sc in (none when it has no floor): the
// workers' count, and the engine's own claim batch by default, workers and prefetch together,
// so that the engine is compared with a floor that batches as much as it does.
func floorBatches(sc scenario) []int {
	if !sc.hasFloor() {
		return nil
	}
	return []int{sc.workers, sc.workers * (1 + enginePrefetchPerWorker)}
}

// benchArgs is River's job: it does nothing, like tasker's noop handler, or sleeps SleepMS
// milliseconds, like tasker's sleep handler.
type benchArgs struct {
	N       int `json:"n"`
	SleepMS int `json:"sleep_ms,omitempty"`
}

func (benchArgs) Kind() string { return "bench_noop" }

type benchWorker struct {
	river.WorkerDefaults[benchArgs]
}

func (benchWorker) Work(ctx context.Context, job *river.Job[benchArgs]) error {
	if job.Args.SleepMS > 0 {
		select {
		case <-time.After(time.Duration(job.Args.SleepMS) * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func runRiver(ctx context.Context, dbURL string, jobs, workers int, sleep time.Duration) (result, error) {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return result{}, err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return result{}, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return result{}, fmt.Errorf("migrating: %w", err)
	}
	ws := river.NewWorkers()
	river.AddWorker(ws, &benchWorker{})
	client, err := river.NewClient(driver, &river.Config{
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		Logger:            slog.New(slog.DiscardHandler),
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
		Workers:           ws,
	})
	if err != nil {
		return result{}, err
	}
	var res result
	start := time.Now()
	const batch = 1000
	params := make([]river.InsertManyParams, 0, batch)
	for n := 0; n < jobs; n += batch {
		params = params[:0]
		for i := n; i < min(n+batch, jobs); i++ {
			params = append(params, river.InsertManyParams{Args: benchArgs{N: i, SleepMS: int(sleep / time.Millisecond)}})
		}
		if _, err := client.InsertMany(ctx, params); err != nil {
			return res, fmt.Errorf("inserting jobs: %w", err)
		}
	}
	res.createRate = float64(jobs) / time.Since(start).Seconds()
	res.units = jobs

	start = time.Now()
	cpu := readCPU()
	db0, self0 := serverCPU(), processCPU("self")
	if err := client.Start(ctx); err != nil {
		return res, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = client.Stop(stopCtx)
	}()
	if err := waitFor(ctx, pool, jobs, `SELECT count(*) FROM river_job WHERE state = 'completed'`); err != nil {
		return res, err
	}
	res.wall = time.Since(start)
	res.busy = cpu.busySince()
	res.dbCPU, res.clientCPU = serverCPU()-db0, processCPU("self")-self0
	res.span, err = span(ctx, pool, `SELECT extract(epoch FROM max(finalized_at) - min(attempted_at)) FROM river_job`)
	return res, err
}

// taskerSetting is how tasker drains a scenario: processes `tasker worker` processes;
// engines, when not 0, is their TASKER_ENGINES; noPrefetch sets TASKER_PREFETCH=0.
type taskerSetting struct {
	processes, engines int
	noPrefetch         bool
}

// env is the environment of a worker process of the setting.
func (st taskerSetting) env() []string {
	env := os.Environ()
	if st.engines > 0 {
		env = append(env, "TASKER_ENGINES="+strconv.Itoa(st.engines))
	}
	if st.noPrefetch {
		env = append(env, "TASKER_PREFETCH=0")
	}
	return env
}

// runTasker drains tasks of sc's template as st says, with sc.workers workers a process.
func runTasker(ctx context.Context, dbURL, tasker, templates string, sc scenario, tasks int, st taskerSetting) (result, error) {
	res, pool, err := createTasks(ctx, dbURL, tasker, templates, sc, tasks)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	logDir, err := os.MkdirTemp("", "bench-river-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(logDir)
	start := time.Now()
	cpu := readCPU()
	db0 := serverCPU()
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	}()
	for i := range st.processes {
		logFile, err := os.Create(filepath.Join(logDir, "worker-"+strconv.Itoa(i)+".log"))
		if err != nil {
			return res, err
		}
		defer logFile.Close()
		p := exec.Command(tasker, "worker", "-database-url", dbURL, "-workers", strconv.Itoa(sc.workers))
		p.Env = st.env()
		p.Stdout, p.Stderr = logFile, logFile
		if err := p.Start(); err != nil {
			return res, err
		}
		procs = append(procs, p)
	}
	// The tasks' complete flag, set with their move to complete in the same statement (a
	// trigger): its count costs the server a quarter of the count of current transitions,
	// polled every 250 ms while the engine runs.
	if err := waitFor(ctx, pool, tasks, `SELECT count(*) FROM tasker_tasks WHERE complete`); err != nil {
		return res, err
	}
	res.wall = time.Since(start)
	res.busy = cpu.busySince()
	res.dbCPU = serverCPU() - db0
	for _, p := range procs {
		res.clientCPU += processCPU(strconv.Itoa(p.Process.Pid))
	}
	res.span, err = span(ctx, pool, taskerSpanSQL)
	return res, err
}

// taskerSpanSQL is a tasker drain's span: from its first step transition to its last task
// transition.
const taskerSpanSQL = `SELECT extract(epoch FROM
	(SELECT max(created_at) FROM tasker_task_transitions) - (SELECT min(created_at) FROM tasker_workflow_step_transitions))`

// createTasks migrates a fresh database and creates tasks tasks of sc's template in it with
// `tasker run-task -jsonl`; the result holds their units and creation rate, and the pool,
// on the database, is the caller's to close.
func createTasks(ctx context.Context, dbURL, tasker, templates string, sc scenario, tasks int) (result, *pgxpool.Pool, error) {
	var res result
	if err := command(ctx, nil, nil, tasker, "migrate", "-database-url", dbURL); err != nil {
		return res, nil, err
	}
	var lines bytes.Buffer
	for range tasks {
		fmt.Fprintf(&lines, "{\"template\": %q, \"context\": {}}\n", sc.template)
	}
	var ids bytes.Buffer
	start := time.Now()
	if err := command(ctx, &lines, &ids, tasker, "run-task", "-jsonl", "-", "-templates-dir", templates, "-database-url", dbURL); err != nil {
		return res, nil, err
	}
	res.createRate = float64(tasks*sc.steps) / time.Since(start).Seconds()
	if got := len(strings.Fields(ids.String())); got != tasks {
		return res, nil, fmt.Errorf("run-task printed %d ids for %d tasks", got, tasks)
	}
	res.units = tasks * sc.steps
	pool, err := pgxpool.New(ctx, dbURL)
	return res, pool, err
}

// command runs the tasker binary; its standard error is returned in the error when it fails.
func command(ctx context.Context, stdin io.Reader, stdout io.Writer, name string, args ...string) error {
	c := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	c.Stdin, c.Stdout, c.Stderr = stdin, stdout, &stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, args[0], err, stderr.String())
	}
	return nil
}

// waitFor polls query (a count) every 250 ms until it reaches n, for at most 20 minutes. The
// counts scan their tables (no vacuum runs during a drain): near the end of a drain of 10,000
// one-step tasks, tasker's took 10-16 ms a call, which every 50 ms took a fifth to a third of
// a core from the system being measured. The rates come from the database's timestamps, so
// the poll's period does not bias them; only the wall time reported beside them is up to one
// period late.
func waitFor(ctx context.Context, pool *pgxpool.Pool, n int, query string) error {
	deadline := time.Now().Add(20 * time.Minute)
	for {
		var done int
		if err := pool.QueryRow(ctx, query).Scan(&done); err != nil {
			return err
		}
		if done >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d finished after 20 minutes", done, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func span(ctx context.Context, pool *pgxpool.Pool, query string) (time.Duration, error) {
	var secs float64
	if err := pool.QueryRow(ctx, query).Scan(&secs); err != nil {
		return 0, err
	}
	if secs <= 0 {
		return 0, errors.New("no span recorded")
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// loadAverage is the 1, 5 and 15 minute load averages of the machine.
func loadAverage() string {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil && len(strings.Fields(string(b))) >= 3 {
		return strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return "unknown"
}

func thousands(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

const (
	sectionStart = "<!-- engine-vs-river:start -->"
	sectionEnd   = "<!-- engine-vs-river:end -->"
)

func report(rows, floorRows []string, tasks, rounds int, command string, took time.Duration, load string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n## Engine vs River\n\n", sectionStart)
	fmt.Fprintf(&b, "Written by `%s` (bench/river, a module of its own) on %s, in %s, %d tasks per run, %d %s; "+
		"load average at the start %s on %d cores (the machine is shared: other work ran at the same time, "+
		"so compare the rows of one run, not runs).\n\n", command, time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		took.Round(time.Second), tasks, rounds, plural(rounds, "round", "rounds"), load, runtime.NumCPU())
	b.WriteString("Each run drains its work in a fresh database on the same PostgreSQL: River v0.51.2 (fetch " +
		"cooldown 2 ms, fetch poll interval 20 ms, as in River's own benchmark; MaxWorkers = workers) against " +
		"tasker `worker` processes (`-workers` each, shared among the process's engines: one by default; " +
		"two processes run twice the workers; the third tasker column runs one process of two engines, " +
		"`TASKER_ENGINES=2`, and the fourth one process that prefetches nothing, `TASKER_PREFETCH=0`: it claims " +
		"only for idle workers, as River fetches, where by default an engine also holds up to four claimed steps a " +
		"worker waiting for a worker while its handlers are short; either way at most `-workers` handlers run at " +
		"once). The steps and jobs of the last scenario each sleep 10 ms (tasker's `sleep` handler, a River " +
		"worker that sleeps as long), so that 32 workers could run 3,200 a second: what a drain falls short of that is time " +
		"its workers spent waiting for work. The rate is units over " +
		"the span the database records from the first unit started to the last finished (process start-up not " +
		"counted; the wall time from start-up is in brackets, with the share of the machine's CPU time that was busy " +
		"during it: near 100 %, the cores are the bound, whoever runs on them; and that busy CPU time per unit of work, all processes together, then split into the database server's processes and the client's: River's process, or tasker's worker processes). Work is created before the clock starts: River's " +
		"jobs with `InsertMany` (batches of 1,000), tasker's tasks with `tasker run-task -jsonl` (the `createTasks` " +
		"service, batches of 1,000); the last two columns are those creation rates, in jobs or steps per second.\n\n")
	if rounds > 1 {
		b.WriteString("Every round drains each scenario once with River and once with each tasker setting, back to back. " +
			"Each cell shows the run of median rate; a ratio is that of the median rates, and in brackets the range " +
			"of the rounds' own ratios (each tasker run against the River run of its round; for \"2 processes / 1\", " +
			"the two tasker runs of the round).\n\n")
	}
	writeTable(&b, "| work | workers | River | tasker, 1 process | ratio | tasker, 2 processes | ratio | tasker, 1 process of 2 engines | ratio | tasker, 1 process, no prefetch | ratio | tasker, 2 processes / 1 | River insert/s | tasker create steps/s |",
		"|---|---:|---|---|---:|---|---:|---|---:|---|---:|---:|---:|---:|", rows)
	if len(floorRows) > 0 {
		b.WriteString("\n**The write floor.** What the rows of a drain cost the database alone: in the same rounds, the same " +
			"one-step tasks are drained by `bench_write_floor` (bench/river/floor.sql), a procedure that writes for each step " +
			"exactly the rows the engine writes (the claim, the step's and the task's transitions with the `most_recent` rows " +
			"they clear, the recorded attempt; the triggers complete the task) and sends the same notifications, in transactions " +
			"that each record one batch and claim the next, as the engine's do where other engines claim too (alone on " +
			"its database, an engine claims beside the recording, in a second transaction at the same time), without foreign-key checks and " +
			"notifying as the writer, with no client, no round trip and none of the engine's reads; a test drains the same tasks " +
			"with both and finds the same rows, views and notifications. Each scenario's floor runs in two batch sizes: " +
			"the workers' count, and five times it, the engine's own claim batch by default (workers and their prefetch " +
			"together, four steps a worker: its claims and recordings carry up to that many steps); two backends drain " +
			"at once as two processes would. The last two columns are the engine's rate over the floor's (1 process over " +
			"1 backend, 2 processes over 2 backends): how much of the floor the engine reaches; against the larger batch, " +
			"like for like.\n\n")
		writeTable(&b, "| work | batch | River | write floor, 1 backend | ratio | write floor, 2 backends | ratio | tasker 1 process / floor | tasker 2 processes / floor |",
			"|---|---:|---|---|---:|---|---:|---:|---:|", floorRows)
	}
	fmt.Fprintf(&b, "\nReproduce: `%s`. `make bench-river` runs 10,000 tasks per run, three rounds (about seven minutes), "+
		"`make bench-river-quick` 2,000 in one round; `make bench-peers` runs `make bench-river`. tasker's creation rate includes "+
		"the start of the `run-task` process.\n%s\n", command, sectionEnd)
	return b.String()
}

// writeTable writes a Markdown table: its header, its alignment row and its rows.
func writeTable(b *strings.Builder, header, align string, rows []string) {
	for _, line := range append([]string{header, align}, rows...) {
		b.WriteString(line + "\n")
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// replaceSection puts section in place of the previous one in path, or at its end.
func replaceSection(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	text := string(old)
	i, j := strings.Index(text, sectionStart), strings.Index(text, sectionEnd)
	if i >= 0 && j > i {
		text = text[:i] + strings.TrimSuffix(section, "\n") + text[j+len(sectionEnd):]
	} else {
		if text != "" && !strings.HasSuffix(text, "\n\n") {
			text = strings.TrimRight(text, "\n") + "\n\n"
		}
		text += section
	}
	return os.WriteFile(path, []byte(text), 0o644)
}
