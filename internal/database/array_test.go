package database_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

type stateLabel string

// pgx sends an Array as a binary array of its elements rather than parsing Value's literal.
var _ pgtype.ArrayGetter = database.Array[int64]{}

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

// Arrays of uuids (claim tokens) and of named string types go through pgx's binary encoding
// of their elements; an empty Array is the empty array, not NULL.
func TestArrayElementTypes(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	ctx := context.Background()
	tokens := []string{"8f0e4bd8-4c7e-4d4b-9a43-1b2a8f5c2e11", "00000000-0000-0000-0000-000000000001"}
	var got []string
	if err := db.WithContext(ctx).Raw(`SELECT unnest(?::uuid[])::text`, database.Array[string](tokens)).Scan(&got).Error; err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != tokens[0] || got[1] != tokens[1] {
		t.Errorf("uuids: got %q, want %q", got, tokens)
	}
	if err := db.WithContext(ctx).Raw(`SELECT unnest(?::uuid[])::text`, database.Array[string]{"not-a-uuid"}).Scan(&got).Error; err == nil {
		t.Error("a text that is not a uuid was sent as one")
	}
	var labels []string
	if err := db.WithContext(ctx).Raw(`SELECT unnest(?::text[])`, database.Array[stateLabel]{"pending", `qu"o`}).Scan(&labels).Error; err != nil {
		t.Fatal(err)
	}
	if len(labels) != 2 || labels[0] != "pending" || labels[1] != `qu"o` {
		t.Errorf("named strings: got %q", labels)
	}
	var isNull, isEmpty bool
	if err := db.WithContext(ctx).Raw(`SELECT ?::bigint[] IS NULL, ?::bigint[] = '{}'`, database.Array[int64]{}, database.Array[int64](nil)).
		Row().Scan(&isNull, &isEmpty); err != nil {
		t.Fatal(err)
	}
	if isNull || !isEmpty {
		t.Errorf("an empty Array: NULL %v, empty %v; want the empty array", isNull, isEmpty)
	}
}
