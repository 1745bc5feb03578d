package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestPlaygroundPage checks the page: the embedded files by their checksummed URLs, no
// other host anywhere, the examples as tabs, and the same-origin Content-Security-Policy.
func TestPlaygroundPage(t *testing.T) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Host = "127.0.0.1:8080"
	Playground("/query").ServeHTTP(rec, req)
	page := rec.Body.String()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("content type %q", ct)
	}
	csp := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") || strings.Contains(page, "//cdn") {
		t.Errorf("the page names another host:\n%s", page)
	}
	vendored, err := Vendored()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vendored {
		if want := PlaygroundPrefix + v.Name + "?v=" + v.SHA256[:16]; !strings.Contains(page, want) {
			t.Errorf("the page does not load %s", want)
		}
	}
	const open = `<script id="playground-data" type="application/json">`
	start := strings.Index(page, open)
	if start < 0 {
		t.Fatal("no playground-data script element")
	}
	end := strings.Index(page[start+len(open):], "</script>")
	var data struct {
		Endpoint string
		Tabs     []struct{ Query, Variables string }
	}
	if err := json.Unmarshal([]byte(page[start+len(open):start+len(open)+end]), &data); err != nil {
		t.Fatalf("playground data is not JSON: %v", err)
	}
	if data.Endpoint != "/query" || len(data.Tabs) != len(Examples) || data.Tabs[1].Query != Examples[1].Query || data.Tabs[1].Variables == "" {
		t.Errorf("playground data = %+v", data)
	}
}

// TestPlaygroundFilesMatchVersions checks every vendored file against the checksum that
// playground/VERSIONS records, serves it with its content type and a year of caching, and
// answers a revalidation with 304.
func TestPlaygroundFilesMatchVersions(t *testing.T) {
	vendored, err := Vendored()
	if err != nil {
		t.Fatal(err)
	}
	if len(vendored) != 4 {
		t.Fatalf("VERSIONS lists %d files, want graphiql js and css, react and react-dom", len(vendored))
	}
	h := Playground("/query")
	for _, v := range vendored {
		if !strings.Contains(v.Package, "@") {
			t.Errorf("%s: package %q has no pinned version", v.Name, v.Package)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, PlaygroundPrefix+v.Name+"?v="+v.SHA256[:16], nil))
		sum := sha256.Sum256(rec.Body.Bytes())
		if rec.Code != http.StatusOK || hex.EncodeToString(sum[:]) != v.SHA256 {
			t.Errorf("%s: status %d, sha256 %x, VERSIONS says %s", v.Name, rec.Code, sum, v.SHA256)
		}
		wantType := "text/javascript; charset=utf-8"
		if strings.HasSuffix(v.Name, ".css") {
			wantType = "text/css; charset=utf-8"
		}
		if got := rec.Header().Get("Content-Type"); got != wantType {
			t.Errorf("%s: content type %q, want %q", v.Name, got, wantType)
		}
		if got := rec.Header().Get("Cache-Control"); !strings.Contains(got, "immutable") {
			t.Errorf("%s: Cache-Control %q", v.Name, got)
		}
		again := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, PlaygroundPrefix+v.Name, nil)
		req.Header.Set("If-None-Match", rec.Header().Get("ETag"))
		h.ServeHTTP(again, req)
		if again.Code != http.StatusNotModified || again.Body.Len() != 0 {
			t.Errorf("%s: revalidation got %d with %d bytes, want 304 and none", v.Name, again.Code, again.Body.Len())
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, PlaygroundPrefix+"nothing.js", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("unknown file: status %d, want 404", rec.Code)
	}
}
