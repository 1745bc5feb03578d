// Package webasset serves the files of the server's own web pages (the GraphQL playground and
// the task console) from an embedded file system, and sets the headers every such page gets:
//
//   - Content-Type from the file's extension (JavaScript modules as text/javascript, which
//     browsers require of module scripts), with X-Content-Type-Options: nosniff;
//   - a strong ETag (a SHA-256 of the content), so a revalidation costs a 304 and no body;
//   - Cache-Control: "no-cache" (always revalidate) by default, or a year and immutable for
//     files whose names carry their version;
//   - a Content-Security-Policy that lets a page load and connect to its own origin only
//     (plus that origin's websocket, for subscriptions): no page can fetch from another host.
package webasset

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
)

// CSP is the Content-Security-Policy of every page, for a request to host (the Host header
// the browser sent): resources from the page's origin only; data: URIs for images and fonts
// (GraphiQL inlines its fonts); websocket connections to the same host only; inline styles
// (GraphiQL and CodeMirror set them) but no inline or remote scripts.
func CSP(host string) string {
	connect := "'self'"
	if host != "" && !strings.ContainsAny(host, " ;,'") {
		connect += " ws://" + host + " wss://" + host
	}
	return "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
		"img-src 'self' data:; font-src 'self' data:; connect-src " + connect + "; " +
		"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// SetPageHeaders sets the security headers every page and asset gets.
func SetPageHeaders(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP(r.Host))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// Caching says how long a browser may keep a file without asking again.
type Caching int

const (
	// Revalidate: the browser keeps the file but asks each time; an unchanged file costs a 304.
	Revalidate Caching = iota
	// Immutable: the file's URL changes whenever its content does; keep it a year.
	Immutable
)

// File is one file ready to serve.
type File struct {
	Name        string
	ContentType string
	ETag        string
	Body        []byte
	Caching     Caching
}

// NewFile prepares body to be served as name (its extension sets the content type).
func NewFile(name string, body []byte, c Caching) *File {
	sum := sha256.Sum256(body)
	return &File{Name: name, ContentType: ContentType(name), ETag: `"` + hex.EncodeToString(sum[:16]) + `"`,
		Body: body, Caching: c}
}

// ContentType returns the media type served for a file name.
func ContentType(name string) string {
	switch path.Ext(name) {
	case ".js", ".mjs":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".html":
		return "text/html; charset=utf-8"
	case ".json":
		return "application/json"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	}
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// ServeHTTP writes the file (a 304 when the request's If-None-Match names its ETag) with its
// content type, caching and security headers. HEAD gets the headers only.
func (f *File) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	SetPageHeaders(w, r)
	h := w.Header()
	h.Set("Content-Type", f.ContentType)
	h.Set("ETag", f.ETag)
	if f.Caching == Immutable {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, f.ETag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(f.Body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(f.Body)
}

func etagMatches(header, etag string) bool {
	for _, part := range strings.Split(header, ",") {
		part = strings.TrimPrefix(strings.TrimSpace(part), "W/")
		if part == etag || part == "*" {
			return true
		}
	}
	return false
}

// Load reads every regular file of fsys into Files keyed by their slash-separated path.
func Load(fsys fs.FS, c Caching) (map[string]*File, error) {
	files := map[string]*File{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		files[p] = NewFile(p, body, c)
		return nil
	})
	return files, err
}
