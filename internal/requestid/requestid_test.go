package requestid

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestEnsureKeepsAValidIDAndReplacesOthers(t *testing.T) {
	for _, tc := range []struct {
		sent string
		keep bool
	}{
		{"abc-123_x.y", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"has space", false},
		{"semi;colon", false},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if tc.sent != "" {
			r.Header.Set(Header, tc.sent)
		}
		w := httptest.NewRecorder()
		id := Ensure(w, r)
		if tc.keep && id != tc.sent {
			t.Errorf("sent %q: got %q, want it kept", tc.sent, id)
		}
		if !tc.keep && (id == tc.sent || !Valid(id) || len(id) != 16) {
			t.Errorf("sent %q: got %q, want a new 16-character id", tc.sent, id)
		}
		if got := r.Header.Get(Header); got != id {
			t.Errorf("sent %q: request header %q, want %q for handlers further in", tc.sent, got, id)
		}
		if got := w.Header().Get(Header); got != id {
			t.Errorf("sent %q: response header %q, want %q", tc.sent, got, id)
		}
	}
}
