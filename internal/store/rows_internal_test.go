package store

import (
	"encoding/json"
	"reflect"
	"testing"
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
	if _, err := encodeTransitionRows([]TransitionRow{{Owner: 1, ToState: "x", Metadata: json.RawMessage(`{`)}}); err == nil {
		t.Error("invalid metadata was encoded")
	}
}
