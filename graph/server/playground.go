package server

import (
	"bufio"
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"

	"github.com/taskerhq/tasker/internal/webasset"
)

// Example is a query the playground opens as a tab.
type Example struct {
	Title     string
	Query     string
	Variables string
}

// Examples answer the questions users ask most; the playground opens each in a tab.
var Examples = []Example{
	{
		Title: "What is ready",
		Query: `# Steps that can run now, per task, with the task's status.
query WhatIsReady {
  tasks(first: 20, filter: { status: [PENDING, IN_PROGRESS] }) {
    nodes {
      id
      namedTask { name version }
      status
      workflowSummary {
        readySteps
        readyStepIds
        parallelismPotential
      }
    }
  }
}`,
	},
	{
		Title: "Why is this step blocked",
		Query: `# Why a step is not running: its readiness, its parents and their states.
query WhyIsThisStepBlocked($id: ID!) {
  step(id: $id) {
    name
    status
    attempts
    retryLimit
    readiness {
      readyForExecution
      blockingReason
      dependenciesSatisfied
      completedParents
      totalParents
      retryEligible
      nextRetryAt
    }
    parents { id name status }
    transitions { fromState toState createdAt metadata }
  }
}`,
		Variables: `{ "id": "1" }`,
	},
	{
		Title: "Ready and blocked steps",
		Query: `# Steps across every task, newest first: what can run now, and what is blocked and why.
query ReadyAndBlockedSteps($after: String) {
  ready: steps(first: 50, filter: { ready: true }) {
    nodes {
      id
      name
      status
      task { id namedTask { name } }
      readiness { attempts retryLimit nextRetryAt }
    }
  }
  blocked: steps(first: 50, after: $after,
                 filter: { blockingReason: [RETRIES_EXHAUSTED, NOT_RETRYABLE, BACKOFF] }) {
    nodes {
      id
      name
      status
      task { id }
      readiness { blockingReason attempts retryLimit lastFailureAt nextRetryAt }
    }
    pageInfo { hasNextPage endCursor }
  }
}`,
	},
	{
		Title: "Task dashboard",
		Query: `# Newest tasks with progress and health.
query TaskDashboard($after: String) {
  tasks(first: 25, after: $after) {
    edges {
      cursor
      node {
        id
        namespace { name }
        namedTask { name version }
        status
        requestedAt
        executionContext {
          executionStatus
          recommendedAction
          healthStatus
          completionPercentage
          totalSteps
          completedSteps
          failedSteps
          readySteps
          permanentlyBlockedSteps
        }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}`,
	},
	{
		Title: "Operations dashboard",
		Query: `# Aggregates over every task, from the materialized read models: a fixed number of
# statements however much data there is. refreshedAt and stale say how fresh each part is.
query OperationsDashboard($namespace: String) {
  dashboard {
    taskStatusSummaries(namespace: $namespace) {
      refreshedAt
      stale
      rows {
        namespace
        taskName
        version
        pending
        inProgress
        complete
        error
        total
        oldestPendingAgeSeconds
        oldestInProgressAgeSeconds
      }
    }
    stepPerformance(namespace: $namespace, limit: 10) {
      refreshedAt
      stale
      rows {
        namespace
        stepName
        executions
        failures
        retries
        errorRate
        p50DurationMs
        p95DurationMs
      }
    }
    throughput(hours: 24) {
      refreshedAt
      rows { hour tasksCreated tasksCompleted tasksFailed stepsCompleted stepsFailed }
    }
  }
  readModels { name lastRefreshedAt dataAsOf lastDurationMs rowCount stale lastError }
}`,
	},
	{
		Title: "Watch step transitions",
		Query: `# Live step transitions; pass the last id you saw as afterTransitionId to resume.
subscription WatchSteps {
  stepTransitions {
    id
    taskId
    step { name }
    fromState
    toState
    createdAt
  }
}`,
	},
}

// playgroundFiles are GraphiQL, React and React DOM, pinned and checksummed in
// playground/VERSIONS; `make playground-assets` refreshes them from the npm registry.
//
//go:embed playground
var playgroundFiles embed.FS

// PlaygroundPrefix is the path under which the playground's scripts and styles are served.
const PlaygroundPrefix = "/playground/"

// VendoredFile is one third-party file of the playground, as listed in playground/VERSIONS.
type VendoredFile struct {
	Name    string // served as PlaygroundPrefix + Name
	Package string // npm package@version it comes from
	SHA256  string // hex checksum of the embedded file
}

// Vendored lists the playground's third-party files from playground/VERSIONS.
func Vendored() ([]VendoredFile, error) {
	b, err := playgroundFiles.ReadFile("playground/VERSIONS")
	if err != nil {
		return nil, err
	}
	var out []VendoredFile
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("playground/VERSIONS: malformed line %q", line)
		}
		out = append(out, VendoredFile{Name: f[0], Package: f[1], SHA256: f[2]})
	}
	return out, sc.Err()
}

// playgroundJS starts GraphiQL once the vendored scripts have run. It says on the page why
// when they did not, rather than leaving "Loading…". A token the console keeps for the
// browser session is sent as the Authorization header and in the websocket's connection_init.
const playgroundJS = `"use strict";
(function () {
  const root = document.getElementById('graphiql');
  const data = JSON.parse(document.getElementById('playground-data').textContent);
  if (typeof window.GraphiQL === 'undefined' || typeof window.React === 'undefined' || typeof window.ReactDOM === 'undefined') {
    root.textContent = 'The playground could not start: its scripts (' + data.prefix +
      '*.js) did not load. Reload the page; if it persists, check the server log.';
    return;
  }
  const url = location.origin + data.endpoint;
  const subscriptionUrl = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + data.endpoint;
  let token = null;
  try { token = sessionStorage.getItem('tasker.token'); } catch (e) { /* storage disabled */ }
  const auth = token ? { Authorization: 'Bearer ' + token } : {};
  ReactDOM.createRoot(root).render(React.createElement(GraphiQL, {
    fetcher: GraphiQL.createFetcher({ url, subscriptionUrl, headers: auth, wsConnectionParams: auth }),
    defaultTabs: data.tabs,
    defaultQuery: data.tabs[0].query,
    defaultHeaders: token ? JSON.stringify(auth, null, 2) : undefined,
    isHeadersEditorEnabled: true,
  }));
})();
`

var playgroundPage = template.Must(template.New("graphiql").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Tasker GraphQL</title>
  <link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="{{.CSS}}">
  <link rel="stylesheet" href="{{.PageCSS}}">
  <script defer src="{{.React}}"></script>
  <script defer src="{{.ReactDOM}}"></script>
  <script defer src="{{.GraphiQL}}"></script>
  <script defer src="{{.PageJS}}"></script>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script id="playground-data" type="application/json">{{.Data}}</script>
</body>
</html>
`))

// Playground serves GraphiQL talking to endpoint (a path on the same host, e.g. /query), with
// Examples open as tabs: the page at any path outside PlaygroundPrefix, and its scripts and
// styles under PlaygroundPrefix. Everything comes from the binary: the page loads nothing
// from another host, and its Content-Security-Policy forbids it to.
func Playground(endpoint string) http.Handler {
	files := map[string]*webasset.File{}
	url := map[string]string{}
	vendored, err := Vendored()
	if err != nil {
		panic(err) // embedded data
	}
	for _, v := range vendored {
		body, err := fs.ReadFile(playgroundFiles, "playground/"+v.Name)
		if err != nil {
			panic(err) // embedded data
		}
		files[v.Name] = webasset.NewFile(v.Name, body, webasset.Immutable)
		// The checksum in the URL changes with the content, so the file may be cached for good.
		url[v.Name] = PlaygroundPrefix + v.Name + "?v=" + v.SHA256[:16]
	}
	files["playground.js"] = webasset.NewFile("playground.js", []byte(playgroundJS), webasset.Revalidate)
	files["playground.css"] = webasset.NewFile("playground.css",
		[]byte("body { margin: 0; } #graphiql { height: 100vh; }\n"), webasset.Revalidate)

	type tab struct {
		Query     string `json:"query"`
		Variables string `json:"variables,omitempty"`
	}
	tabs := make([]tab, len(Examples))
	for i, e := range Examples {
		tabs[i] = tab{Query: e.Query, Variables: e.Variables}
	}
	data, err := json.Marshal(map[string]any{"endpoint": endpoint, "prefix": PlaygroundPrefix, "tabs": tabs})
	if err != nil {
		panic(err) // static data
	}
	var buf bytes.Buffer
	err = playgroundPage.Execute(&buf, map[string]any{
		// Marshalled JSON escapes <, > and & so it cannot close the script element.
		"Data":     template.JS(data),
		"CSS":      url["graphiql.min.css"],
		"React":    url["react.production.min.js"],
		"ReactDOM": url["react-dom.production.min.js"],
		"GraphiQL": url["graphiql.min.js"],
		"PageJS":   PlaygroundPrefix + "playground.js",
		"PageCSS":  PlaygroundPrefix + "playground.css",
	})
	if err != nil {
		panic(err) // static template and data
	}
	page := webasset.NewFile("index.html", buf.Bytes(), webasset.Revalidate)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, isAsset := strings.CutPrefix(r.URL.Path, PlaygroundPrefix)
		if !isAsset {
			page.ServeHTTP(w, r)
			return
		}
		f, ok := files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		f.ServeHTTP(w, r)
	})
}
