package webasset

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCSP(t *testing.T) {
	got := CSP("127.0.0.1:8080")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;", "frame-ancestors 'none'"} {
		if !strings.Contains(got, want) {
			t.Errorf("CSP %q lacks %q", got, want)
		}
	}
	// A Host header cannot add sources or directives.
	for _, host := range []string{"a.example; script-src *", "a.example *", "x',y"} {
		if got := CSP(host); !strings.Contains(got, "connect-src 'self';") || strings.Contains(got, "a.example") {
			t.Errorf("host %q: CSP %q", host, got)
		}
	}
}

func TestFileServing(t *testing.T) {
	f := NewFile("app.js", []byte("export const x = 1;\n"), Revalidate)
	cases := []struct {
		method, ifNoneMatch string
		code, bytes         int
	}{
		{http.MethodGet, "", http.StatusOK, len(f.Body)},
		{http.MethodHead, "", http.StatusOK, 0},
		{http.MethodGet, f.ETag, http.StatusNotModified, 0},
		{http.MethodGet, `"other", W/` + f.ETag, http.StatusNotModified, 0},
		{http.MethodGet, `"other"`, http.StatusOK, len(f.Body)},
	}
	for _, c := range cases {
		req := httptest.NewRequest(c.method, "/app.js", nil)
		if c.ifNoneMatch != "" {
			req.Header.Set("If-None-Match", c.ifNoneMatch)
		}
		rec := httptest.NewRecorder()
		f.ServeHTTP(rec, req)
		if rec.Code != c.code || rec.Body.Len() != c.bytes {
			t.Errorf("%s If-None-Match %q: %d with %d bytes, want %d with %d", c.method, c.ifNoneMatch, rec.Code, rec.Body.Len(), c.code, c.bytes)
		}
		if rec.Header().Get("Content-Type") != "text/javascript; charset=utf-8" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("headers %v", rec.Header())
		}
	}
	if got := NewFile("x.js", nil, Immutable); got.Caching != Immutable {
		t.Fatal("caching not kept")
	}
	rec := httptest.NewRecorder()
	NewFile("x.css", []byte("a{}"), Immutable).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x.css", nil))
	if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
		t.Errorf("immutable file: Cache-Control %q", cc)
	}
}
