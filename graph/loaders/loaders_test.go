package loaders

import (
	"context"
	"testing"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// A primed key is answered from the primed value without a statement, the first value primed
// stays, keys that were not primed share one statement, and Forget drops primed values so
// that they are read again.
func TestPrimedKeysAreAnsweredWithoutStatements(t *testing.T) {
	t.Parallel()
	db, err := database.Open(context.Background(), dbtest.NewURL(t), database.Options{Tracer: querystats.Tracer{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	tk := fixture.New(t, db).Task(fixture.FourStep)
	ids := []int64{tk.Steps["one"], tk.Steps["two"], tk.Steps["three"]}

	ctx, counter := querystats.WithCounter(context.Background())
	ctx = With(ctx, New(db, Options{}))
	l := For(ctx)
	primed := models.StepRecord{Name: "primed"}
	primed.WorkflowStepID = ids[1]
	l.steps.Prime(ctx, ids[1], &primed)
	later := models.StepRecord{Name: "primed later"}
	l.steps.Prime(ctx, ids[1], &later)

	s, err := Step(ctx, ids[1])
	if err != nil || s.Name != "primed" {
		t.Fatalf("primed step = %+v, %v; want the first value primed", s, err)
	}
	if n := counter.Statements(); n != 0 {
		t.Fatalf("a primed key ran %d statements", n)
	}

	steps, err := StepsByIDs(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 3 || steps[0].WorkflowStepID != ids[0] || steps[1].Name != "primed" || steps[2].WorkflowStepID != ids[2] {
		t.Fatalf("steps = %+v; want the ids' steps in order, the primed one as primed", steps)
	}
	if n := counter.Statements(); n != 1 {
		t.Fatalf("two keys that were not primed ran %d statements, want 1", n)
	}

	Forget(ctx)
	s, err = Step(ctx, ids[1])
	if err != nil || s.Name != "two" {
		t.Fatalf("after Forget, step = %+v, %v; want the stored step", s, err)
	}
	if n := counter.Statements(); n != 2 {
		t.Fatalf("after Forget, %d statements in all, want 2", n)
	}

	if _, err := StepsByIDs(ctx, []int64{ids[0], 999999}); !errs.Is(err, errs.NotFound) {
		t.Fatalf("a missing step among primed ones: %v, want NotFound", err)
	}
}
