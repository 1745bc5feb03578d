package statemachine

import (
	"encoding/json"
	"testing"
)

// encodeMeta's direct encoding gives json.Marshal's bytes, and anything it does not handle
// goes through json.Marshal.
func TestEncodeMetaIsJSONMarshal(t *testing.T) {
	t.Parallel()
	for _, meta := range []map[string]any{
		nil,
		{},
		{"worker_id": "host:12:ab12cd", "attempt": 3, "duration_ms": int64(12)},
		{"reason": "retry", "worker_id": "w", "event": "overridden"},
		{"error": "boom", "permanent": false, "retry_after_seconds": 30, "attempt": 1, "nothing": nil},
		{"error": `quote " and \ backslash`},
		{"error": "<html> & co"},
		{"error": "tab\there, newline\n"},
		{"error": "ünïcode"},
		{"by": map[string]any{"nested": true}},
		{"ratio": 0.5, "ids": []int64{1, 2}},
		{"ключ": "value"},
	} {
		got, err := encodeMeta(meta, "transition_to_complete")
		if err != nil {
			t.Fatal(err)
		}
		copied := map[string]any{}
		for k, v := range meta {
			copied[k] = v
		}
		copied["event"] = "transition_to_complete"
		want, err := json.Marshal(copied)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("metadata %v: got %s, want %s", meta, got, want)
		}
	}
	if _, ok := appendPlainMeta(map[string]any{"attempt": 2, "worker_id": "w"}, "e"); !ok {
		t.Error("the engine's metadata was not encoded directly")
	}
}
