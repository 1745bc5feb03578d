package store

import (
	"encoding/json"
	"reflect"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
)

// The transitions payload encoded directly reads as json.Marshal's, and rows it does not
// handle go through json.Marshal.
func TestEncodeTransitionRowsIsJSONMarshal(t *testing.T) {
	t.Parallel()
	pending, quoted := "pending", `we"ird`
	for _, rows := range [][]TransitionRow{ // WriteTransitions encodes no empty list
		{{Owner: 7, ToState: "in_progress", FromState: &pending, Metadata: json.RawMessage(`{"attempt":1,"event":"start"}`), SortKey: 2, MostRecent: true}},
		{{Owner: 1, ToState: "complete", Metadata: json.RawMessage(` { "a" : [1, "<b>"] } `), SortKey: 1},
			{Owner: 2, ToState: "error", FromState: &pending, Metadata: json.RawMessage(`null`), SortKey: 3}},
		{{Owner: 3, ToState: quoted, Metadata: json.RawMessage(`{}`)}},
		{{Owner: 4, ToState: "pending"}}, // no metadata
	} {
		got, err := encodeTransitionRows(rows)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(rows)
		if err != nil {
			t.Fatal(err)
		}
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}

// The statements numbered here are the ones GORM builds (Raw), parameters and values alike,
// and a statement GORM would build otherwise is left to GORM.
func TestNumberedStatementsAreGORMs(t *testing.T) {
	t.Parallel()
	gdb, err := gorm.Open(postgres.New(postgres.Config{DSN: "host=nowhere.invalid"}),
		&gorm.Config{DryRun: true, DisableAutomaticPing: true})
	if err != nil {
		t.Fatal(err)
	}
	claim := claimParams(32, "host:1:ab", 300000)
	built := gdb.Raw(claimSQL, claim).Statement
	stmt, args, ok := numberedNamed(claimSQL, claim)
	if !ok || stmt != built.SQL.String() || !reflect.DeepEqual(args, built.Vars) {
		t.Errorf("the claim: %v\n%s %v\nGORM builds\n%s %v", ok, stmt, args, built.SQL.String(), built.Vars)
	}
	if again, _, _ := numberedNamed(claimSQL, claim); again != stmt {
		t.Error("a statement numbered again differs")
	}
	ids, tokens := database.Array[int64]{1, 2}, database.Array[string]{"a", "b"}
	lockHeld := gdb.Raw(`SELECT 1 FROM t WHERE a = ANY(?::bigint[]) AND b IN (SELECT unnest(?::uuid[])) -- (?)`, ids, tokens, ids).Statement
	if got := numbered(`SELECT 1 FROM t WHERE a = ANY(?::bigint[]) AND b IN (SELECT unnest(?::uuid[])) -- (?)`); got != lockHeld.SQL.String() {
		t.Errorf("numbered %s, GORM builds %s", got, lockHeld.SQL.String())
	}
	for _, c := range []struct {
		query string
		named map[string]any
	}{
		{`SELECT @a, @b`, map[string]any{"a": 1}},                    // a missing name stays as it is
		{`SELECT @a, ?`, map[string]any{"a": 1}},                     // a ? takes a positional value
		{`SELECT x IN (@ids)`, map[string]any{"ids": []int64{1, 2}}}, // a slice is a list
	} {
		if _, _, ok := numberedNamed(c.query, c.named); ok {
			t.Errorf("%s numbered here, not by GORM", c.query)
		}
	}
}
