package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// statements records the text of every statement a pool runs.
type statements struct {
	mu  sync.Mutex
	sql []string
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sql = append(s.sql, strings.ToLower(strings.TrimSpace(data.SQL)))
	return ctx
}

func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (s *statements) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sql
	s.sql = nil
	return out
}

// open returns a store over a fresh database with one connection, so that a setting that
// outlived its transaction would be seen by the next statement, and the statements it runs.
func open(t *testing.T) (*Store, *statements) {
	t.Helper()
	trace := &statements{}
	db, err := database.Open(context.Background(), dbtest.NewURL(t), database.Options{MaxOpenConns: 1, Tracer: trace})
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

// TestEngineTxSettingsLastOneTransaction: the engine's settings hold inside its transaction,
// synchronous_commit follows asyncCommit, and nothing outlives the transaction.
func TestEngineTxSettingsLastOneTransaction(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := context.Background()
	before := st.settings(t, ctx)
	for async, want := range map[bool]string{false: "off,off,off,on,auto", true: "off,off,off,off,auto"} {
		if err := st.EngineTx(ctx, async, func(tx *Store) error {
			if got := tx.settings(t, ctx); got != want {
				t.Errorf("async commit %v: settings %s in the transaction, want %s", async, got, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if after := st.settings(t, ctx); after != before {
			t.Errorf("async commit %v: settings %s after the transaction, want %s as before", async, after, before)
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
	if got := trace.take(); len(got) != 3 || got[0] != "begin" || got[2] != "commit" {
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
	got := trace.take()
	for _, q := range got {
		if strings.Contains(q, "savepoint") {
			t.Errorf("Atomic in a transaction ran %q", q)
		}
	}
	if len(got) != 3 || got[0] != "begin" || got[2] != "rollback" {
		t.Errorf("in a transaction, Atomic ran %q; want begin, the statement, rollback", got)
	}
}
