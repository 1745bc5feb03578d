package orchestration

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/plantest"
)

// analyseEmpty gives the planner the statistics of an empty database and keeps them: it turns
// autovacuum off for the growing tables of the test's database and analyses them as they are.
func analyseEmpty(t testing.TB, db *gorm.DB) {
	t.Helper()
	for _, tbl := range plantest.GrowingTables {
		if err := db.Exec(`ALTER TABLE ` + tbl + ` SET (autovacuum_enabled = false)`).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Exec(`ANALYZE ` + tbl).Error; err != nil {
			t.Fatal(err)
		}
	}
}

// AnalyseEmpty is analyseEmpty for the package's external tests and benchmarks.
var AnalyseEmpty = analyseEmpty

// captured is one statement as the service ran it: its text, its arguments, and the settings
// it ran under: its connection's runtime parameters (the engine's pool sets the engine's at
// connect time) and the settings statements (set_config, SET LOCAL) its transaction ran
// before it, each as a statement that sets it for a transaction.
type captured struct {
	sql      string
	args     []any
	settings []captured
}

// statementLog is a pgx tracer that keeps the first run of every distinct statement.
type statementLog struct {
	mu       sync.Mutex
	seen     map[string]bool
	order    []captured
	settings map[*pgx.Conn][]captured // per connection, since its transaction began
}

func (l *statementLog) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := strings.TrimSpace(data.SQL)
	lower := strings.ToLower(q)
	switch {
	case lower == "begin" || strings.HasPrefix(lower, "begin ") || lower == "commit" || lower == "rollback":
		delete(l.settings, conn)
	case strings.Contains(lower, "set_config(") || strings.HasPrefix(lower, "set local"):
		l.settings[conn] = append(l.settings[conn], captured{sql: q, args: data.Args})
	case !l.seen[q]:
		l.seen[q] = true
		l.order = append(l.order, captured{sql: q, args: statementArgs(data.Args),
			settings: append(connectionSettings(conn), l.settings[conn]...)})
	}
	return ctx
}

// connectionSettings are the runtime parameters conn was opened with, by name, as settings
// statements.
func connectionSettings(conn *pgx.Conn) []captured {
	params := conn.Config().RuntimeParams
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([]captured, 0, len(names))
	for _, k := range names {
		out = append(out, captured{sql: "SELECT set_config($1, $2, true)", args: []any{k, params[k]}})
	}
	return out
}

// statementArgs drops the options database/sql passes to pgx among a statement's arguments
// (result formats, execution mode): they are not parameters.
func statementArgs(args []any) []any {
	out := make([]any, 0, len(args))
	for _, a := range args {
		if t := reflect.TypeOf(a); t != nil && t.PkgPath() == "github.com/jackc/pgx/v5" {
			continue
		}
		out = append(out, a)
	}
	return out
}

func (l *statementLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// reset forgets the statements seen so far.
func (l *statementLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen, l.order = map[string]bool{}, nil
}

func (l *statementLog) statements() []captured {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]captured(nil), l.order...)
}

// prober plans the captured statements on one connection of a pool opened like the
// service's (database.Open, with its connection settings): each statement is prepared there
// once, as the service's statement cache does, so that a plan the connection caches while the
// tables are small is the one checked once they are large.
type prober struct {
	t    *testing.T
	conn *sql.Conn
	n    int
	name map[string]string // statement text -> prepared statement name
}

// newProber opens a prober on a connection of its own to the database at url.
func newProber(t *testing.T, url string) *prober {
	t.Helper()
	probeDB, err := database.Open(context.Background(), url, database.Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(probeDB) })
	sqlDB, err := probeDB.DB()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := sqlDB.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &prober{t: t, conn: conn, name: map[string]string{}}
}

// inTx runs fn in a transaction on the prober's connection, rolled back afterwards, after
// replaying the settings the statement's own transaction ran.
func (p *prober) inTx(c captured, fn func(tx *sql.Tx)) {
	ctx := context.Background()
	tx, err := p.conn.BeginTx(ctx, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, s := range c.settings {
		if _, err := tx.ExecContext(ctx, s.sql, s.args...); err != nil {
			p.t.Fatalf("replaying %s: %v", s.sql, err)
		}
	}
	fn(tx)
}

// execute returns EXPLAIN EXECUTE of c's prepared statement (preparing it the first time):
// the plan the connection's plan cache gives for it now, a cached generic plan included.
func (p *prober) execute(c captured) plantest.Node {
	var plan plantest.Node
	q := p.executeStatement(c, "EXPLAIN (FORMAT JSON) ")
	p.inTx(c, func(tx *sql.Tx) { plan = p.plan(tx, c, q) })
	return plan
}

// cachedRowsRead is rowsRead for the plan the connection's plan cache gives c (see execute).
func (p *prober) cachedRowsRead(c captured) (read float64, ok bool) {
	return p.readBy(c, p.executeStatement(c, "EXPLAIN (ANALYZE, FORMAT JSON) "))
}

// executeStatement returns explain followed by the EXECUTE of c's prepared statement with
// c's arguments, preparing the statement the first time.
func (p *prober) executeStatement(c captured, explain string) string {
	ctx := context.Background()
	name, ok := p.name[c.sql]
	if !ok {
		p.n++
		name = fmt.Sprintf("plan_probe_%d", p.n)
		if _, err := p.conn.ExecContext(ctx, "PREPARE "+name+" AS "+c.sql); err != nil {
			p.t.Fatalf("preparing %s: %v", c.sql, err)
		}
		p.name[c.sql] = name
	}
	// EXECUTE takes no bound parameters inside EXPLAIN: the arguments go in as literals.
	lits := make([]string, len(c.args))
	for i, a := range c.args {
		lit, err := plantest.Literal(a)
		if err != nil {
			p.t.Fatal(err)
		}
		lits[i] = lit
	}
	q := explain + "EXECUTE " + name
	if len(lits) > 0 {
		q += "(" + strings.Join(lits, ", ") + ")"
	}
	return q
}

// rowsRead runs c (rolled back) under EXPLAIN ANALYZE with its real arguments and returns how
// many rows its plan read from the growing tables (returned or filtered out, over all loops);
// ok is false when the statement cannot run again as captured (an insert of a transition
// that now exists).
func (p *prober) rowsRead(c captured) (read float64, ok bool) {
	return p.readBy(c, "EXPLAIN (ANALYZE, FORMAT JSON) "+c.sql, c.args...)
}

// readBy runs explain, an EXPLAIN ANALYZE of c, in c's settings (rolled back) and returns the
// rows its plan read from the growing tables; ok is false when it could not run.
func (p *prober) readBy(c captured, explain string, args ...any) (read float64, ok bool) {
	p.inTx(c, func(tx *sql.Tx) {
		plan, err := plantest.Explain(context.Background(), tx, explain, args...)
		if err != nil {
			return
		}
		for _, n := range plan.RowsRead() {
			read += n
		}
		ok = true
	})
	return read, ok
}

// fresh returns EXPLAIN of c planned now with its real arguments (a custom plan).
func (p *prober) fresh(c captured) plantest.Node {
	var plan plantest.Node
	p.inTx(c, func(tx *sql.Tx) { plan = p.plan(tx, c, "EXPLAIN (FORMAT JSON) "+c.sql, c.args...) })
	return plan
}

func (p *prober) plan(tx *sql.Tx, c captured, query string, args ...any) plantest.Node {
	plan, err := plantest.Explain(context.Background(), tx, query, args...)
	if err != nil {
		p.t.Fatalf("%s: %v", c.sql, err)
	}
	return plan
}

// functionBodies returns, for every captured call of a tasker_* SQL or PL/pgSQL function (the
// streams' re-reads, the batch reads of the views), the statement inside the function as a
// statement of its own: its parameters become the call's arguments (placeholders bound to
// the call's values, or literals), and the function's SET clauses its settings. An
// EXPLAIN of the call shows only a Function Scan; this shows what the function runs.
func functionBodies(t *testing.T, db *gorm.DB, stmts []captured) []captured {
	t.Helper()
	var out []captured
	for _, c := range stmts {
		m := regexp.MustCompile(`FROM (tasker_\w+)\(([^()]*)\)`).FindStringSubmatch(c.sql)
		if m == nil {
			continue
		}
		var fn struct {
			Body            string
			Names, Settings []string
		}
		var names, settings []byte
		if err := db.Raw(`SELECT prosrc, to_jsonb(proargnames), to_jsonb(coalesce(proconfig, '{}'))
			FROM pg_proc WHERE proname = ? AND prokind = 'f'`, m[1]).Row().Scan(&fn.Body, &names, &settings); err != nil {
			t.Fatalf("reading function %s: %v", m[1], err)
		}
		if err := json.Unmarshal(names, &fn.Names); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(settings, &fn.Settings); err != nil {
			t.Fatal(err)
		}
		body := fn.Body
		// A PL/pgSQL function's statement is the query it returns: from RETURN QUERY to the
		// statement's end.
		if _, q, ok := strings.Cut(body, "RETURN QUERY"); ok {
			body, _, _ = strings.Cut(q, ";")
		}
		// Each parameter becomes the call's argument: a placeholder of the call, or a literal.
		callArgs := strings.Split(m[2], ",")
		for i, name := range fn.Names {
			if i >= len(callArgs) {
				break // the output columns of RETURNS TABLE
			}
			body = regexp.MustCompile(`\b`+name+`\b`).ReplaceAllLiteralString(body, strings.TrimSpace(callArgs[i]))
		}
		inner := captured{sql: strings.TrimSpace(body), args: c.args}
		for _, kv := range fn.Settings {
			k, v, _ := strings.Cut(kv, "=")
			inner.settings = append(inner.settings, captured{sql: "SELECT set_config($1, $2, true)", args: []any{k, v}})
		}
		out = append(out, inner)
	}
	if len(out) < 2 {
		t.Fatalf("found %d function calls among the hot statements, want the two streams' re-reads", len(out))
	}
	return out
}

// noopHandlers runs every step with a handler that succeeds at once.
type noopHandlers struct{}

func (noopHandlers) StepHandler(context.Context, *store.Store, int64, string) (handler.Handler, time.Duration, error) {
	return handler.HandlerFunc(func(context.Context, handler.Input) (handler.Output, error) {
		return handler.Output{Results: json.RawMessage(`{"ok": true}`)}, nil
	}), time.Second, nil
}

// runHotStatements runs, once each, the statements the service repeats for every step and
// every subscription wake-up, on db and, for the engine's transactions, on pool (both traced,
// as the service opens them), with an observer (metrics): a claim of 8 steps with their
// inputs and ready times, the recording of their attempts (one failed, the others complete),
// the claim of 2 more steps beside it, the next retry time, a recovery round, the readiness of steps and tasks, the execution contexts, and the
// transition streams' re-reads.
func runHotStatements(t *testing.T, db *gorm.DB, pool *database.EnginePool) {
	t.Helper()
	ctx := context.Background()
	// With an observer, as a process serving metrics runs it: its claims read each step's
	// ready time too.
	e, err := New(NewService(db, nil), nil, noopHandlers{}, Config{WorkerID: "plans", Pool: pool, Observer: discardObserver{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.handlerCtx, e.cancelHandlers = context.WithCancel(ctx)
	defer e.cancelHandlers()
	steps, batch := claimedResults(t, e, 8)
	batch[0].runErr = handler.Retryable(fmt.Errorf("failing once"), 0)
	if _, _, err := e.recordBatch(ctx, batch, 0, true); err != nil {
		t.Fatal(err)
	}
	next, err := e.claim(ctx, 2) // the claim beside the recording
	if err != nil {
		t.Fatal(err)
	}
	closeRuns(next)
	if _, _, err := e.nextRetryIn(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RecoverExpired(ctx, nil); err != nil {
		t.Fatal(err)
	}
	taskIDs := []int64{steps[0].s.TaskID, steps[len(steps)-1].s.TaskID}
	stepIDs := []int64{steps[0].s.StepID, steps[1].s.StepID}
	if _, err := models.ReadinessByTaskIDs(ctx, db, taskIDs[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := models.ReadinessByStepIDs(ctx, db, stepIDs); err != nil {
		t.Fatal(err)
	}
	if _, err := models.ExecutionContextsByTaskIDs(ctx, db, taskIDs); err != nil {
		t.Fatal(err)
	}
	last, err := models.MaxStepTransitionID(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := models.StepTransitionsAfter(ctx, db, last-256, []int64{last - 1, last}, 0, 500); err != nil {
		t.Fatal(err)
	}
	if _, err := models.StepTransitionsAfter(ctx, db, last-256, nil, steps[0].s.TaskID, 500); err != nil {
		t.Fatal(err)
	}
	lastTask, err := models.MaxTaskTransitionID(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := models.TaskTransitionsAfter(ctx, db, lastTask-256, nil, "", 500); err != nil {
		t.Fatal(err)
	}
	if _, err := models.TaskTransitionsAfter(ctx, db, lastTask-256, nil, "default", 500); err != nil {
		t.Fatal(err)
	}
}

// maxRowsRead bounds the rows of growing tables one hot statement may read in
// TestHotStatementsKeepIndexPlansWhateverTheStatistics: a claim of 8 steps walks a few dozen
// candidates, a stream's re-read a few hundred transitions; a statement that reads all the
// claimable steps (12,500) or a whole table (50,000 steps) is over it.
const maxRowsRead = 1500

// discardObserver is an Observer that keeps nothing.
type discardObserver struct{}

func (discardObserver) StepClaimed(string, time.Duration)          {}
func (discardObserver) StepStarted(string, time.Duration)          {}
func (discardObserver) StepFinished(string, string, time.Duration) {}
func (discardObserver) StepsRecovered(int)                         {}
func (discardObserver) EngineCall(string, int, int, time.Duration) {}

// TestHotStatementsKeepIndexPlansWhateverTheStatistics runs the service's hot statements with
// their real arguments and checks the plans they get for sequential scans of the growing
// tables, as a long-running process would see them:
//   - the tables are analysed while empty (a fresh database, or autovacuum at the wrong
//     moment) and autovacuum is off for them, so those statistics stay;
//   - a few tasks are created and the statements run (and are planned, 6 times each, on a
//     connection of a pool opened like the service's, so that its plan cache may settle on a
//     generic plan made for nearly empty tables);
//   - 10,000 tasks of five steps are loaded (50,000 steps, 7,500 tasks complete) WITHOUT
//     re-analysing: the same connection's plans, and fresh plans with the real arguments,
//     must not scan a growing table, and the statements, run (and rolled back) with either
//     plan, must not read more than maxRowsRead rows of them (a cached plan that joins every
//     row of a table it believed small reads them all, through an index or not);
//   - after ANALYZE, likewise.
func TestHotStatementsKeepIndexPlansWhateverTheStatistics(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	trace := &statementLog{seen: map[string]bool{}, settings: map[*pgx.Conn][]captured{}}
	db, err := database.Open(context.Background(), url, database.Options{MaxOpenConns: 4, Tracer: trace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	pool, err := database.OpenEngine(context.Background(), url, database.Options{MaxOpenConns: PoolConns, Tracer: trace}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })
	admin := dbtest.Open(t, url)
	analyseEmpty(t, admin)
	seedChainRows(t, admin, 20, 10)
	runHotStatements(t, db, pool)
	stmts := trace.statements()
	// The statements inside the engine's calls (tasker_engine_record, tasker_engine_start),
	// which EXPLAIN does not reach, are checked by the store's
	// TestEngineCallsReadOnlyTheRowsOfTheirBatch.
	if len(stmts) < 12 {
		t.Fatalf("captured only %d distinct statements", len(stmts))
	}

	p := newProber(t, url)
	for _, c := range stmts {
		for range 6 { // after five custom plans, the plan cache may keep a generic one
			p.execute(c)
		}
	}

	// A new pool loads the data: the test's own connections cached plans for small tables too
	// (foreign key checks among them).
	seedChainRows(t, dbtest.Open(t, url), 10000, 2500)
	// The statements run again on the large tables, for arguments that fit them (the
	// streams' positions, the steps claimed); their plans stay those the connection made.
	trace.reset()
	runHotStatements(t, db, pool)
	args := map[string][]any{}
	for _, c := range trace.statements() {
		args[c.sql] = c.args
	}
	for i, c := range stmts {
		if a, ok := args[c.sql]; ok {
			stmts[i].args = a
		}
	}
	stmts = append(stmts, functionBodies(t, admin, stmts)...)
	failures := 0
	for _, phase := range []string{"stale statistics", "analysed"} {
		if phase == "analysed" {
			if err := admin.Exec(`ANALYZE`).Error; err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range stmts {
			for kind, plan := range map[string]plantest.Node{"the connection's plan": p.execute(c), "a fresh plan": p.fresh(c)} {
				if scans := plan.SeqScans(); len(scans) > 0 {
					failures++
					t.Errorf("%s, %s: sequential scan of %v in\n%s\n(transaction settings %d)",
						phase, kind, scans, c.sql, len(c.settings))
				}
			}
			for kind, rowsRead := range map[string]func(captured) (float64, bool){
				"the connection's plan": p.cachedRowsRead, "a fresh plan": p.rowsRead} {
				read, ok := rowsRead(c)
				if ok && read > maxRowsRead {
					failures++
					t.Errorf("%s, %s: %.0f rows of growing tables read (at most %d expected) by\n%s",
						phase, kind, read, maxRowsRead, c.sql)
				}
			}
		}
	}
	t.Logf("%d distinct hot statements checked, %d plans with sequential scans of growing tables", len(stmts), failures)
}

// TestRecordingReadsOnlyTheStepsItWasGiven records a batch of 8 attempts at the end of an
// analysed table of 10,000 one-step tasks, where the planner, left to itself, costs a merge
// join along the steps' primary key, read from its first entry, below a lookup per recorded
// step. Every statement of the claim and of the recording, planned as the engine plans it,
// must read a few rows per step, not the steps older than the batch.
func TestRecordingReadsOnlyTheStepsItWasGiven(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	ctx := context.Background()
	admin := dbtest.Open(t, url)
	// The steps are written once, as task creation writes them; all but the last 8 are
	// processed, so that the claim takes those 8.
	for _, q := range []string{
		`INSERT INTO tasker_dependent_systems (name) VALUES ('plan')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'plan_one')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name)
		 SELECT dependent_system_id, 'only' FROM tasker_dependent_systems WHERE name = 'plan'`,
		`INSERT INTO tasker_tasks (named_task_id)
		 SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 10000) WHERE name = 'plan_one'`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id, processed)
		 SELECT t.task_id, ns.named_step_id, t.task_id <= 9992
		 FROM tasker_tasks t, tasker_named_steps ns WHERE ns.name = 'only' ORDER BY t.task_id`,
		`ANALYZE`,
	} {
		if err := admin.Exec(q).Error; err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	trace := &statementLog{seen: map[string]bool{}, settings: map[*pgx.Conn][]captured{}}
	pool, err := database.OpenEngine(ctx, url, database.Options{MaxOpenConns: PoolConns, Tracer: trace}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })
	e, err := New(NewService(admin, nil), nil, noopHandlers{}, Config{WorkerID: "reads", Pool: pool}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.handlerCtx, e.cancelHandlers = context.WithCancel(ctx)
	defer e.cancelHandlers()
	runs, batch := claimedResults(t, e, 8)
	if first := runs[0].s.StepID; first < 9000 {
		t.Fatalf("the batch starts at step %d: the test needs steps at the end of the table", first)
	}
	if _, _, err := e.recordBatch(ctx, batch, 0, true); err != nil {
		t.Fatal(err)
	}
	p := newProber(t, url)
	checked := 0
	for _, c := range trace.statements() {
		read, ok := p.rowsRead(c)
		if !ok {
			continue
		}
		checked++
		// A claim of 8 walks a few dozen candidates and their tasks; a recording reads each
		// step, its transitions and its task a few times.
		if read > 400 {
			t.Errorf("%.0f rows of growing tables read for a batch of 8 steps by\n%s", read, c.sql)
		}
	}
	// The recording itself is one call, whose statements EXPLAIN does not reach: the store's
	// TestEngineCallsReadOnlyTheRowsOfTheirBatch checks what they read.
	if checked < 3 {
		t.Fatalf("only %d statements could be run again", checked)
	}
}
