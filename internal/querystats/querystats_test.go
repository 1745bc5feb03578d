package querystats_test

import (
	"context"
	"testing"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

func TestTracerCountsStatementsOfTheCountersContextOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := database.Open(ctx, dbtest.NewURL(t), database.Options{Tracer: querystats.Tracer{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })

	counted, c := querystats.WithCounter(ctx)
	var n int
	for range 3 {
		if err := db.WithContext(counted).Raw("SELECT 1").Row().Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	// Not counted: no counter in the context.
	if err := db.WithContext(ctx).Raw("SELECT 1").Row().Scan(&n); err != nil {
		t.Fatal(err)
	}
	if got := c.Statements(); got != 3 {
		t.Fatalf("statements = %d, want 3", got)
	}
	if c.Duration() <= 0 {
		t.Fatalf("duration = %v, want > 0", c.Duration())
	}
	if querystats.FromContext(ctx) != nil {
		t.Fatal("FromContext of a plain context is not nil")
	}
}
