package database_test

import (
	"context"
	"testing"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

type stateLabel string

func TestArrayRoundTripsThroughPostgreSQL(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	ctx := context.Background()

	texts := []string{"plain", `quo"te`, `back\slash`, "comma,brace{}", "", "NULL", "ünï"}
	var gotTexts []string
	if err := db.WithContext(ctx).Raw(`SELECT unnest(?::text[])`, database.Array[string](texts)).Scan(&gotTexts).Error; err != nil {
		t.Fatal(err)
	}
	if len(gotTexts) != len(texts) {
		t.Fatalf("got %q, want %q", gotTexts, texts)
	}
	for i := range texts {
		if gotTexts[i] != texts[i] {
			t.Errorf("element %d: got %q, want %q", i, gotTexts[i], texts[i])
		}
	}

	ids := []int64{3, -1, 9007199254740993}
	var gotIDs []int64
	if err := db.WithContext(ctx).Raw(`SELECT unnest(?::bigint[])`, database.Array[int64](ids)).Scan(&gotIDs).Error; err != nil {
		t.Fatal(err)
	}
	if len(gotIDs) != 3 || gotIDs[0] != 3 || gotIDs[1] != -1 || gotIDs[2] != 9007199254740993 {
		t.Errorf("got %v, want %v", gotIDs, ids)
	}

	var n int
	if err := db.WithContext(ctx).Raw(`SELECT cardinality(?::text[])`, database.Array[stateLabel]{"pending", "complete"}).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("a named string type: cardinality %d, want 2", n)
	}
	var empty int
	if err := db.WithContext(ctx).Raw(`SELECT cardinality(?::bigint[])`, database.Array[int64](nil)).Scan(&empty).Error; err != nil {
		t.Fatal(err)
	}
	if empty != 0 {
		t.Errorf("an empty array: cardinality %d, want 0", empty)
	}
}
