package server

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// postTransport writes a response exactly as encoding/json marshals graphql.Response (what
// transport.POST writes): the same bytes, members and omissions, for every member a response
// can carry. Data holding characters encoding/json escapes for HTML (<, >, &) is written as
// the executor wrote it, which decodes to the same value.
func TestWriteResponseIsJSONMarshal(t *testing.T) {
	yes := true
	withCode := gqlerror.Errorf("refused")
	withCode.Extensions = map[string]any{"code": "VALIDATION"}
	withCode.Path = ast.Path{ast.PathName("task"), ast.PathIndex(2)}
	for name, resp := range map[string]*graphql.Response{
		"data":               {Data: json.RawMessage(`{"task":{"id":"1","steps":[{"id":"2"}]}}`)},
		"no data":            {},
		"errors":             {Errors: gqlerror.List{withCode, gqlerror.Errorf("second")}},
		"errors and data":    {Errors: gqlerror.List{withCode}, Data: json.RawMessage(`{"task":null}`)},
		"extensions":         {Data: json.RawMessage(`{"a":1}`), Extensions: map[string]any{"queryStats": map[string]any{"sqlStatements": 1, "dbTimeMs": 0.25}}},
		"empty extensions":   {Data: json.RawMessage(`{}`), Extensions: map[string]any{}},
		"incremental fields": {Data: json.RawMessage(`{"b":2}`), Label: "later", Path: ast.Path{ast.PathName("task")}, HasNext: &yes},
		"empty errors":       {Errors: gqlerror.List{}, Data: json.RawMessage(`[]`)},
	} {
		want, err := json.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		writeResponse(&got, resp)
		if got.String() != string(want) {
			t.Errorf("%s: wrote\n%s\nencoding/json writes\n%s", name, got.String(), want)
		}
	}

	var got bytes.Buffer
	writeResponse(&got, nil)
	if got.String() != "null" {
		t.Errorf("nil response: wrote %s, want null", got.String())
	}

	resp := &graphql.Response{Data: json.RawMessage(`{"reason":"a < b && c > d"}`)}
	want, _ := json.Marshal(resp)
	got.Reset()
	writeResponse(&got, resp)
	var a, b any
	if err := json.Unmarshal(got.Bytes(), &a); err != nil {
		t.Fatalf("%s: %v", got.String(), err)
	}
	if err := json.Unmarshal(want, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("HTML characters: wrote %s, encoding/json writes %s", got.String(), want)
	}
}
