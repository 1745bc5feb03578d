package web_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/web"
)

func serve(t *testing.T, mux *http.ServeMux, method, path string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	return rec
}

// TestRoutes checks what Go serves: index.html for the console's pages (the script routes in
// the browser), the assets with their content types, ETags answered with 304, the
// same-origin CSP everywhere, 404 for anything else.
func TestRoutes(t *testing.T) {
	mux := http.NewServeMux()
	web.Mount(mux)
	index := web.Files()["index.html"]

	for _, path := range []string{"/ui/", "/ui/tasks/42", "/ui/dashboard"} {
		rec := serve(t, mux, http.MethodGet, path)
		if rec.Code != http.StatusOK || rec.Body.String() != string(index.Body) {
			t.Errorf("%s: status %d, want index.html", path, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("%s: content type %q", path, ct)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("%s: Cache-Control %q, want no-cache (revalidate)", path, cc)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'self'; script-src 'self';") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
	}
	if rec := serve(t, mux, http.MethodGet, "/ui"); rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != "/ui/" {
		t.Errorf("/ui: status %d, Location %q", rec.Code, rec.Header().Get("Location"))
	}

	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	n := 0
	for name, f := range web.Files() {
		if !strings.HasPrefix(name, "assets/") {
			continue
		}
		n++
		rec := serve(t, mux, http.MethodGet, "/ui/"+name)
		if rec.Code != http.StatusOK || rec.Body.Len() != len(f.Body) {
			t.Errorf("%s: status %d, %d bytes", name, rec.Code, rec.Body.Len())
		}
		for ext, want := range types {
			if strings.HasSuffix(name, ext) && rec.Header().Get("Content-Type") != want {
				t.Errorf("%s: content type %q, want %q", name, rec.Header().Get("Content-Type"), want)
			}
		}
		etag := rec.Header().Get("ETag")
		if again := serve(t, mux, http.MethodGet, "/ui/"+name, "If-None-Match", etag); etag == "" || again.Code != http.StatusNotModified || again.Body.Len() != 0 {
			t.Errorf("%s: revalidation with ETag %q got %d", name, etag, again.Code)
		}
		// The SVG namespace is a name, not an address: nothing fetches it.
		body := strings.ReplaceAll(string(f.Body), "http://www.w3.org/2000/svg", "")
		if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
			t.Errorf("%s names another host", name)
		}
	}
	if n < 8 {
		t.Errorf("%d assets, want the console's scripts, style and icon", n)
	}
	for _, path := range []string{"/ui/assets/nothing.js", "/ui/tasks/", "/ui/other"} {
		if rec := serve(t, mux, http.MethodGet, path); rec.Code != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", path, rec.Code)
		}
	}
}
