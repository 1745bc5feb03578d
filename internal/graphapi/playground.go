package graphapi

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
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

// GraphiQL 4 and React 18 from jsDelivr, pinned with subresource integrity.
const (
	graphiqlJS     = "https://cdn.jsdelivr.net/npm/graphiql@4.1.2/graphiql.min.js"
	graphiqlJSSRI  = "sha256-hnImuor1znlJkD/FOTL3jayfS/xsyNoP04abi8bFJWs="
	graphiqlCSS    = "https://cdn.jsdelivr.net/npm/graphiql@4.1.2/graphiql.min.css"
	graphiqlCSSSRI = "sha256-MEh+B2NdMSpj9kexQNN3QKc8UzMrCXW/Sx/phcpuyIU="
	reactJS        = "https://cdn.jsdelivr.net/npm/react@18.2.0/umd/react.production.min.js"
	reactJSSRI     = "sha256-S0lp+k7zWUMk2ixteM6HZvu8L9Eh//OVrt+ZfbCpmgY="
	reactDOMJS     = "https://cdn.jsdelivr.net/npm/react-dom@18.2.0/umd/react-dom.production.min.js"
	reactDOMJSSRI  = "sha256-IXWO0ITNDjfnNXIu5POVfqlgYoop36bDzhodR6LW5Pc="
)

var playgroundPage = template.Must(template.New("graphiql").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Tasker GraphQL</title>
  <style>body { margin: 0; } #graphiql { height: 100vh; }</style>
  <script src="{{.ReactJS}}" integrity="{{.ReactJSSRI}}" crossorigin="anonymous"></script>
  <script src="{{.ReactDOMJS}}" integrity="{{.ReactDOMJSSRI}}" crossorigin="anonymous"></script>
  <link rel="stylesheet" href="{{.CSS}}" integrity="{{.CSSSRI}}" crossorigin="anonymous">
</head>
<body>
  <div id="graphiql">Loading…</div>
  <script src="{{.JS}}" integrity="{{.JSSRI}}" crossorigin="anonymous"></script>
  <script id="default-tabs" type="application/json">{{.Tabs}}</script>
  <script>
    const endpoint = {{.Endpoint}};
    const url = location.protocol + '//' + location.host + endpoint;
    const subscriptionUrl = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + endpoint;
    const defaultTabs = JSON.parse(document.getElementById('default-tabs').textContent);
    ReactDOM.render(
      React.createElement(GraphiQL, {
        fetcher: GraphiQL.createFetcher({ url, subscriptionUrl }),
        defaultTabs: defaultTabs,
        defaultQuery: defaultTabs[0].query,
        isHeadersEditorEnabled: true,
      }),
      document.getElementById('graphiql'),
    );
  </script>
</body>
</html>
`))

// Playground serves GraphiQL talking to endpoint (a path on the same host, e.g. /query),
// with Examples open as tabs.
func Playground(endpoint string) http.Handler {
	type tab struct {
		Query     string `json:"query"`
		Variables string `json:"variables,omitempty"`
	}
	tabs := make([]tab, len(Examples))
	for i, e := range Examples {
		tabs[i] = tab{Query: e.Query, Variables: e.Variables}
	}
	tabsJSON, err := json.Marshal(tabs)
	if err != nil {
		panic(err) // static data
	}
	var buf bytes.Buffer
	err = playgroundPage.Execute(&buf, map[string]any{
		"Endpoint": endpoint,
		// Marshalled JSON escapes <, > and & so it cannot close the script element.
		"Tabs": template.JS(tabsJSON),
		"JS":   template.URL(graphiqlJS), "JSSRI": graphiqlJSSRI,
		"CSS": template.URL(graphiqlCSS), "CSSSRI": graphiqlCSSSRI,
		"ReactJS": template.URL(reactJS), "ReactJSSRI": reactJSSRI,
		"ReactDOMJS": template.URL(reactDOMJS), "ReactDOMJSSRI": reactDOMJSSRI,
	})
	if err != nil {
		panic(err) // static template and data
	}
	page := buf.Bytes()
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
}
