package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/sqllog"
)

// open returns a store over a fresh database with one connection, so that a setting that
// outlived its transaction would be seen by the next statement, and the statements it runs.
func open(t testing.TB) (*Store, *sqllog.Log) {
	t.Helper()
	return openAt(t, dbtest.NewURL(t))
}

// openAt is open over the database of url, for a test that also connects to it otherwise.
func openAt(t testing.TB, url string) (*Store, *sqllog.Log) {
	t.Helper()
	trace := &sqllog.Log{}
	db, err := database.Open(context.Background(), url, database.Options{MaxOpenConns: 1, Tracer: trace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	return New(db), trace
}

func (s *Store) settings(t *testing.T, ctx context.Context) string {
	t.Helper()
	var got string
	if err := s.conn(ctx).Raw(`SELECT concat_ws(',', current_setting('jit'), current_setting('enable_seqscan'),
		current_setting('enable_bitmapscan'), current_setting('synchronous_commit'), current_setting('plan_cache_mode'))`).
		Row().Scan(&got); err != nil {
		t.Fatal(err)
	}
	return got
}

// engineTxSettings returns the engine's settings as an engine transaction sees them.
func (s *Store) engineTxSettings(t *testing.T, ctx context.Context, asyncCommit bool) (got string) {
	t.Helper()
	if err := s.EngineTx(ctx, asyncCommit, func(tx *Store) error {
		got = tx.settings(t, ctx)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestEngineTxSettingsLastOneTransaction: the engine's settings hold inside its transaction,
// synchronous_commit follows asyncCommit, and nothing outlives the transaction.
func TestEngineTxSettingsLastOneTransaction(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := context.Background()
	before := st.settings(t, ctx)
	for async, want := range map[bool]string{false: "off,off,off,on,force_generic_plan", true: "off,off,off,off,force_generic_plan"} {
		if got := st.engineTxSettings(t, ctx, async); got != want {
			t.Errorf("async commit %v: settings %s in the transaction, want %s", async, got, want)
		}
		if after := st.settings(t, ctx); after != before {
			t.Errorf("async commit %v: settings %s after the transaction, want %s as before", async, after, before)
		}
	}
}

// TestEngineTxOnTheEnginePoolSendsNoSettings: with the engine's own pool, an engine
// transaction runs there, with the engine's settings, and sends nothing but BEGIN, fn's
// statements and COMMIT; the Store's own handle sees none of it; an asyncCommit that is not
// the pool's is refused before anything runs.
func TestEngineTxOnTheEnginePoolSendsNoSettings(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	ctx := context.Background()
	mainTrace, engineTrace := &sqllog.Log{}, &sqllog.Log{}
	db, err := database.Open(ctx, url, database.Options{MaxOpenConns: 1, Tracer: mainTrace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	for async, want := range map[bool]string{false: "off,off,off,on,force_generic_plan", true: "off,off,off,off,force_generic_plan"} {
		p, err := database.OpenEngine(ctx, url, database.Options{MaxOpenConns: 1, Tracer: engineTrace}, async)
		if err != nil {
			t.Fatal(err)
		}
		st := New(db).WithEngine(p)
		mainTrace.Take()
		engineTrace.Take()
		if got := st.engineTxSettings(t, ctx, async); got != want {
			t.Errorf("async commit %v: settings %s in the transaction, want %s", async, got, want)
		}
		if got := mainTrace.Take(); len(got) != 0 {
			t.Errorf("async commit %v: the main pool ran %q", async, got)
		}
		got := engineTrace.Take()
		if len(got) != 3 || !strings.HasPrefix(got[0], "begin") || !strings.Contains(got[1], "current_setting") || got[2] != "commit" {
			t.Errorf("async commit %v: the engine pool ran %q, want BEGIN, the read, COMMIT", async, got)
		}
		err = st.EngineTx(ctx, !async, func(*Store) error {
			t.Error("ran with the wrong commit mode")
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), "engine pool was opened with") {
			t.Errorf("async commit %v on a pool opened with %v: %v", !async, async, err)
		}
		if got := engineTrace.Take(); len(got) != 0 {
			t.Errorf("a refused transaction ran %q", got)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAtomicJoinsTheCallersTransactionWithoutASavepoint: Atomic begins a transaction of its own
// when there is none, runs in the caller's otherwise, and a failure in it fails the caller's.
func TestAtomicJoinsTheCallersTransactionWithoutASavepoint(t *testing.T) {
	t.Parallel()
	st, trace := open(t)
	ctx := context.Background()
	noop := func(tx *Store) error { return tx.conn(ctx).Exec(`SELECT 1`).Error }
	if err := st.Atomic(ctx, noop); err != nil {
		t.Fatal(err)
	}
	if got := trace.Take(); len(got) != 3 || got[0] != "begin" || got[2] != "commit" {
		t.Errorf("alone, Atomic ran %q; want begin, the statement, commit", got)
	}
	refused := errors.New("refused")
	err := st.Tx(ctx, func(tx *Store) error {
		if err := tx.Atomic(ctx, noop); err != nil {
			return err
		}
		return tx.Atomic(ctx, func(*Store) error { return refused })
	})
	if !errors.Is(err, refused) {
		t.Fatalf("Tx returned %v, want the refusal", err)
	}
	got := trace.Take()
	for _, q := range got {
		if strings.Contains(q, "savepoint") {
			t.Errorf("Atomic in a transaction ran %q", q)
		}
	}
	if len(got) != 3 || got[0] != "begin" || got[2] != "rollback" {
		t.Errorf("in a transaction, Atomic ran %q; want begin, the statement, rollback", got)
	}
}
