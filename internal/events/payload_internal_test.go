package events

import (
	"encoding/json"
	"reflect"
	"testing"
)

// decodePayload decodes every payload as json.Unmarshal does, the database's own through its
// scanner and the others through json.Unmarshal.
func TestDecodePayloadIsJSONUnmarshal(t *testing.T) {
	t.Parallel()
	scanned := []string{
		`{"rows" : [{"id" : 11, "task_id" : 2, "step_id" : 3, "from" : "pending", "to" : "in_progress"}, {"id" : 12, "task_id" : 2, "step_id" : 4, "from" : null, "to" : "complete"}]}`,
		`{"rows" : [{"id" : 5, "task_id" : 9, "from" : "in_progress", "to" : "complete"}]}`,
		`{"rows":[]}`,
		`{"rows":null,"id":4}`,
		`{"count": 1000}`,
		`{"id": 17}`,
		`{"id": -3, "task_id": 0}`,
		`{"id": 123456789012345678}`,
		`{}`,
		" \n{ \"to\" : \"x\" }\t",
	}
	others := []string{
		`{"rows" : [{"id" : 1, "to" : "caf\u00e9"}]}`,
		`{"rows" : [{"id" : 1, "to" : "café"}]}`,
		`{"ID": 5}`,
		`{"id": 1.0}`,
		`{"id": 1e3}`,
		`{"id": 01}`,
		`{"id": 99999999999999999999}`,
		`{"id": "7"}`,
		`{"other": {"nested": [1, 2]}, "id": 3}`,
		`{"rows": [{"id": 1}], "rows": [{"task_id": 2}]}`,
		`{"id": 1,}`,
		`{"id": 1`,
		`[1, 2]`,
		`not json`,
		``,
	}
	for i, data := range append(scanned, others...) {
		var got, want payload
		gotErr := decodePayload([]byte(data), &got)
		wantErr := json.Unmarshal([]byte(data), &want)
		if (gotErr == nil) != (wantErr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v (%v), want %+v (%v)", data, got, gotErr, want, wantErr)
		}
		var q payload
		sc := scanner{data: []byte(data)}
		if read := sc.object(&q.Event, &q.Rows, true) && sc.end(); read != (i < len(scanned)) {
			t.Errorf("%s: read by the scanner %v, want %v", data, read, i < len(scanned))
		}
	}
}
