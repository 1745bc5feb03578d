// Package web serves the task console: a web page under /ui/ that lists tasks, draws a
// task's DAG live and charts the dashboards. It is embedded in the binary and loads nothing
// from another host, so it works offline.
//
// The console is a client of the public GraphQL API only (queries over POST, subscriptions
// over graphql-transport-ws): it doubles as an example of using the API from a browser. It is
// plain ES modules and SVG with no build step, so building the server needs no Node.js.
//
// Routes: /ui/, /ui/tasks/{id} and /ui/dashboard answer with index.html (the page's script
// routes in the browser); /ui/assets/{file} serves the scripts and styles; /ui redirects to
// /ui/. Every response revalidates with an ETag and carries the same-origin
// Content-Security-Policy of package webasset.
package web

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/taskerhq/tasker/internal/webasset"
)

//go:embed ui
var uiFiles embed.FS

// Prefix is the path under which the console is served.
const Prefix = "/ui/"

// Files returns the console's files, keyed by their path under ui/ (e.g. "assets/app.js").
func Files() map[string]*webasset.File {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // embedded data
	}
	files, err := webasset.Load(sub, webasset.Revalidate)
	if err != nil {
		panic(err) // embedded data
	}
	return files
}

// Mount registers the console's routes on mux.
func Mount(mux *http.ServeMux) {
	files := Files()
	index := files["index.html"]
	mux.Handle("GET /ui", http.RedirectHandler(Prefix, http.StatusMovedPermanently))
	for _, route := range []string{"GET /ui/{$}", "GET /ui/tasks/{id}", "GET /ui/dashboard"} {
		mux.Handle(route, index)
	}
	mux.Handle("GET /ui/assets/{file...}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := files["assets/"+r.PathValue("file")]
		if !ok {
			webasset.SetPageHeaders(w, r)
			http.NotFound(w, r)
			return
		}
		f.ServeHTTP(w, r)
	}))
}
