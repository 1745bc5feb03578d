package server_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

const taskFields = `
	id complete context tags initiator sourceSystem reason requestedAt createdAt status
	namedTask { id name version description configuration namespace { id name } }
	namespace { id name description }
	executionContext {
		taskId namedTaskId status totalSteps pendingSteps inProgressSteps completedSteps
		failedSteps readySteps permanentlyBlockedSteps executionStatus recommendedAction
		completionPercentage healthStatus
	}
	workflowSummary {
		taskId namedTaskId status totalSteps pendingSteps inProgressSteps completedSteps
		failedSteps readySteps permanentlyBlockedSteps executionStatus recommendedAction
		completionPercentage healthStatus rootStepIds rootStepCount readyStepIds
		blockedStepIds blockingReasons blockedSteps { stepId blockingReason }
		maxDependencyLevel parallelismPotential
	}
	transitions { id taskId fromState toState metadata sortKey mostRecent createdAt task { id } }
	steps { ` + stepFields + ` }`

const stepFields = `
	id name status attempts retryLimit retryable processed processedAt inProcess results inputs
	lastAttemptedAt backoffRequestSeconds task { id }
	readiness {
		stepId taskId namedStepId name currentState dependenciesSatisfied retryEligible
		readyForExecution lastFailureAt nextRetryAt totalParents completedParents attempts
		retryLimit backoffRequestSeconds lastAttemptedAt blockingReason
	}
	dag {
		stepId taskId namedStepId parentStepIds childStepIds parentCount childCount
		isRootStep isLeafStep minDepthFromRoot dependencyLevel
	}
	parents { id name status }
	children { id name status }
	transitions { id stepId taskId fromState toState metadata sortKey mostRecent createdAt step { id } }`

type stepJSON struct {
	ID                    string          `json:"id"`
	Name                  string          `json:"name"`
	Status                string          `json:"status"`
	Attempts              int             `json:"attempts"`
	RetryLimit            int             `json:"retryLimit"`
	Retryable             bool            `json:"retryable"`
	Processed             bool            `json:"processed"`
	ProcessedAt           *time.Time      `json:"processedAt"`
	InProcess             bool            `json:"inProcess"`
	Results               json.RawMessage `json:"results"`
	LastAttemptedAt       *time.Time      `json:"lastAttemptedAt"`
	BackoffRequestSeconds *int            `json:"backoffRequestSeconds"`
	Task                  struct{ ID string }
	Readiness             struct {
		StepID                string     `json:"stepId"`
		TaskID                string     `json:"taskId"`
		Name                  string     `json:"name"`
		CurrentState          string     `json:"currentState"`
		DependenciesSatisfied bool       `json:"dependenciesSatisfied"`
		RetryEligible         bool       `json:"retryEligible"`
		ReadyForExecution     bool       `json:"readyForExecution"`
		LastFailureAt         *time.Time `json:"lastFailureAt"`
		NextRetryAt           *time.Time `json:"nextRetryAt"`
		TotalParents          int        `json:"totalParents"`
		CompletedParents      int        `json:"completedParents"`
		Attempts              int        `json:"attempts"`
		RetryLimit            int        `json:"retryLimit"`
		BlockingReason        *string    `json:"blockingReason"`
	} `json:"readiness"`
	Dag struct {
		StepID           string   `json:"stepId"`
		ParentStepIDs    []string `json:"parentStepIds"`
		ChildStepIDs     []string `json:"childStepIds"`
		ParentCount      int      `json:"parentCount"`
		ChildCount       int      `json:"childCount"`
		IsRootStep       bool     `json:"isRootStep"`
		IsLeafStep       bool     `json:"isLeafStep"`
		MinDepthFromRoot int      `json:"minDepthFromRoot"`
		DependencyLevel  int      `json:"dependencyLevel"`
	} `json:"dag"`
	Parents     []struct{ ID, Name, Status string } `json:"parents"`
	Children    []struct{ ID, Name, Status string } `json:"children"`
	Transitions []struct {
		ID        string  `json:"id"`
		StepID    string  `json:"stepId"`
		TaskID    string  `json:"taskId"`
		FromState *string `json:"fromState"`
		ToState   string  `json:"toState"`
		SortKey   int     `json:"sortKey"`
		Step      struct{ ID string }
	} `json:"transitions"`
}

type summaryJSON struct {
	TaskID                  string   `json:"taskId"`
	Status                  string   `json:"status"`
	TotalSteps              int      `json:"totalSteps"`
	PendingSteps            int      `json:"pendingSteps"`
	InProgressSteps         int      `json:"inProgressSteps"`
	CompletedSteps          int      `json:"completedSteps"`
	FailedSteps             int      `json:"failedSteps"`
	ReadySteps              int      `json:"readySteps"`
	PermanentlyBlockedSteps int      `json:"permanentlyBlockedSteps"`
	ExecutionStatus         string   `json:"executionStatus"`
	RecommendedAction       string   `json:"recommendedAction"`
	CompletionPercentage    float64  `json:"completionPercentage"`
	HealthStatus            string   `json:"healthStatus"`
	RootStepIDs             []string `json:"rootStepIds"`
	RootStepCount           int      `json:"rootStepCount"`
	ReadyStepIDs            []string `json:"readyStepIds"`
	BlockedStepIDs          []string `json:"blockedStepIds"`
	BlockingReasons         []string `json:"blockingReasons"`
	BlockedSteps            []struct {
		StepID         string `json:"stepId"`
		BlockingReason string `json:"blockingReason"`
	} `json:"blockedSteps"`
	MaxDependencyLevel   int    `json:"maxDependencyLevel"`
	ParallelismPotential string `json:"parallelismPotential"`
}

type taskJSON struct {
	ID          string          `json:"id"`
	Complete    bool            `json:"complete"`
	Context     json.RawMessage `json:"context"`
	Tags        json.RawMessage `json:"tags"`
	Initiator   *string         `json:"initiator"`
	Status      string          `json:"status"`
	RequestedAt time.Time       `json:"requestedAt"`
	NamedTask   struct {
		ID, Name, Version string
		Namespace         struct{ ID, Name string }
	} `json:"namedTask"`
	Namespace        struct{ ID, Name string } `json:"namespace"`
	ExecutionContext summaryJSON               `json:"executionContext"`
	WorkflowSummary  summaryJSON               `json:"workflowSummary"`
	Transitions      []struct {
		ID        string  `json:"id"`
		TaskID    string  `json:"taskId"`
		FromState *string `json:"fromState"`
		ToState   string  `json:"toState"`
		SortKey   int     `json:"sortKey"`
		Task      struct{ ID string }
	} `json:"transitions"`
	Steps []stepJSON `json:"steps"`
}

func (tk taskJSON) step(t *testing.T, name string) stepJSON {
	t.Helper()
	for _, s := range tk.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("task %s has no step %q", tk.ID, name)
	return stepJSON{}
}

func ids(ns ...int64) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = id(n)
	}
	return out
}

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// The four-step task of SEMANTICS §8, fresh: ready = {one, two}, has_ready_steps, healthy, 0%;
// roots at depth 0, three at 1, four at 2.
func TestTaskFourStepFresh(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.FourStep)

	var out struct{ Task taskJSON }
	r := e.data(`query($id: ID!) { task(id: $id) { `+taskFields+` } }`, map[string]any{"id": id(tk.ID)}, &out)
	got := out.Task
	equal(t, "id", got.ID, id(tk.ID))
	equal(t, "status", got.Status, "PENDING")
	equal(t, "namedTask.name", got.NamedTask.Name, "four_step")
	equal(t, "namedTask.version", got.NamedTask.Version, "0.1.0")
	equal(t, "namespace.name", got.Namespace.Name, fixture.Namespace)
	equal(t, "namedTask.namespace", got.NamedTask.Namespace, got.Namespace)
	equal(t, "context", string(got.Context), "{}")
	equal(t, "transitions", len(got.Transitions), 0)
	equal(t, "step count", len(got.Steps), 4)

	ec := got.ExecutionContext
	equal(t, "executionStatus", ec.ExecutionStatus, "HAS_READY_STEPS")
	equal(t, "recommendedAction", ec.RecommendedAction, "EXECUTE_READY_STEPS")
	equal(t, "healthStatus", ec.HealthStatus, "HEALTHY")
	equal(t, "completionPercentage", ec.CompletionPercentage, 0.0)
	equal(t, "totalSteps", ec.TotalSteps, 4)
	equal(t, "readySteps", ec.ReadySteps, 2)
	equal(t, "pendingSteps", ec.PendingSteps, 4)

	ws := got.WorkflowSummary
	equal(t, "readyStepIds", ws.ReadyStepIDs, ids(tk.StepIDs("one", "two")...))
	equal(t, "rootStepIds", ws.RootStepIDs, ids(tk.StepIDs("one", "two")...))
	equal(t, "rootStepCount", ws.RootStepCount, 2)
	equal(t, "blockedStepIds", ws.BlockedStepIDs, ids(tk.StepIDs("three", "four")...))
	equal(t, "blockingReasons", ws.BlockingReasons, []string{"DEPENDENCIES_NOT_SATISFIED", "DEPENDENCIES_NOT_SATISFIED"})
	equal(t, "blockedSteps[1].stepId", ws.BlockedSteps[1].StepID, id(tk.Step("four")))
	equal(t, "maxDependencyLevel", ws.MaxDependencyLevel, 2)
	equal(t, "parallelismPotential", ws.ParallelismPotential, "MODERATE_PARALLELISM")

	for name, depth := range map[string]int{"one": 0, "two": 0, "three": 1, "four": 2} {
		s := got.step(t, name)
		equal(t, name+" depth", s.Dag.MinDepthFromRoot, depth)
		equal(t, name+" level", s.Dag.DependencyLevel, depth)
		equal(t, name+" ready", s.Readiness.ReadyForExecution, depth == 0)
		equal(t, name+" status", s.Status, "PENDING")
		equal(t, name+" attempts", s.Attempts, 0)
		equal(t, name+" retryLimit", s.RetryLimit, 3)
		equal(t, name+" task", s.Task.ID, id(tk.ID))
	}
	three := got.step(t, "three")
	equal(t, "three parents", three.Dag.ParentStepIDs, ids(tk.Step("two")))
	equal(t, "three children", three.Dag.ChildStepIDs, ids(tk.Step("four")))
	equal(t, "three parent steps", len(three.Parents), 1)
	equal(t, "three parent name", three.Parents[0].Name, "two")
	equal(t, "three child name", three.Children[0].Name, "four")
	equal(t, "three blocking", *three.Readiness.BlockingReason, "DEPENDENCIES_NOT_SATISFIED")
	equal(t, "one blocking", got.step(t, "one").Readiness.BlockingReason, (*string)(nil))
	equal(t, "one isRoot", got.step(t, "one").Dag.IsRootStep, true)
	equal(t, "four isLeaf", got.step(t, "four").Dag.IsLeafStep, true)
	if r.Extensions.QueryStats == nil || r.Extensions.QueryStats.SQLStatements == 0 {
		t.Errorf("queryStats missing or zero: %+v", r.Extensions.QueryStats)
	}
}

// A diamond in the middle of a run: start complete, branch one failed 1s ago (waiting out
// its 2s backoff), branch two ready; the step and task fields show why.
func TestTaskDiamondInProgress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.Diamond)
	tk.TaskTransition(time.Minute, models.StateInProgress)
	tk.Complete("start_workflow")
	failedAt := tk.Fail("branch_one_process", time.Second)

	var out struct{ Task taskJSON }
	e.data(`query($id: ID!) { task(id: $id) { `+taskFields+` } }`, map[string]any{"id": id(tk.ID)}, &out)
	got := out.Task
	equal(t, "status", got.Status, "IN_PROGRESS")
	equal(t, "task transitions", len(got.Transitions), 1)
	equal(t, "task transition to", got.Transitions[0].ToState, "IN_PROGRESS")
	equal(t, "task transition from", got.Transitions[0].FromState, (*string)(nil))
	equal(t, "task transition task", got.Transitions[0].Task.ID, id(tk.ID))

	b1 := got.step(t, "branch_one_process")
	equal(t, "b1 status", b1.Status, "ERROR")
	equal(t, "b1 attempts", b1.Attempts, 1)
	equal(t, "b1 blocking", *b1.Readiness.BlockingReason, "BACKOFF")
	equal(t, "b1 retryEligible", b1.Readiness.RetryEligible, true)
	if b1.Readiness.LastFailureAt == nil || !b1.Readiness.LastFailureAt.Equal(failedAt) {
		t.Errorf("b1 lastFailureAt = %v, want %v", b1.Readiness.LastFailureAt, failedAt)
	}
	if b1.Readiness.NextRetryAt == nil || !b1.Readiness.NextRetryAt.Equal(failedAt.Add(2*time.Second)) {
		t.Errorf("b1 nextRetryAt = %v, want %v", b1.Readiness.NextRetryAt, failedAt.Add(2*time.Second))
	}
	var states []string
	for _, tr := range b1.Transitions {
		from := "nil"
		if tr.FromState != nil {
			from = *tr.FromState
		}
		states = append(states, from+">"+tr.ToState)
		equal(t, "b1 transition step", tr.Step.ID, b1.ID)
		equal(t, "b1 transition task", tr.TaskID, id(tk.ID))
	}
	equal(t, "b1 transitions", states, []string{"nil>IN_PROGRESS", "IN_PROGRESS>ERROR"})

	start := got.step(t, "start_workflow")
	equal(t, "start status", start.Status, "COMPLETE")
	equal(t, "start processed", start.Processed, true)
	equal(t, "start blocking", *start.Readiness.BlockingReason, "ALREADY_PROCESSED")
	equal(t, "start children", len(start.Children), 2)

	b2 := got.step(t, "branch_two_process")
	equal(t, "b2 ready", b2.Readiness.ReadyForExecution, true)
	equal(t, "b2 parents", b2.Parents[0].Status, "COMPLETE")
	equal(t, "b2 completedParents", b2.Readiness.CompletedParents, 1)

	merge := got.step(t, "merge_branches")
	equal(t, "merge parents", len(merge.Parents), 2)
	equal(t, "merge depth", merge.Dag.MinDepthFromRoot, 3)

	ec := got.ExecutionContext
	equal(t, "completed", ec.CompletedSteps, 1)
	equal(t, "failed", ec.FailedSteps, 1)
	equal(t, "ready", ec.ReadySteps, 1)
	equal(t, "pending", ec.PendingSteps, 5)
	equal(t, "executionStatus", ec.ExecutionStatus, "HAS_READY_STEPS")
	equal(t, "health", ec.HealthStatus, "RECOVERING")
	equal(t, "completion", ec.CompletionPercentage, 14.29)
	ws := got.WorkflowSummary
	equal(t, "parallelism", ws.ParallelismPotential, "SEQUENTIAL_ONLY")
	equal(t, "maxDependencyLevel", ws.MaxDependencyLevel, 4)
	equal(t, "blocked", ws.BlockedStepIDs, ids(tk.StepIDs("branch_one_process", "branch_one_validate",
		"branch_two_validate", "merge_branches", "end_workflow")...))
	equal(t, "first blocking reason", ws.BlockingReasons[0], "BACKOFF")
}

func TestStepByID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.Linear)
	tk.Fail("initialize_data", time.Hour)
	tk.Set("initialize_data", fixture.Attempts(3), fixture.RetryLimit(3))

	var out struct{ Step stepJSON }
	e.data(`query($id: ID!) { step(id: $id) { `+stepFields+` } }`,
		map[string]any{"id": id(tk.Step("initialize_data"))}, &out)
	equal(t, "name", out.Step.Name, "initialize_data")
	equal(t, "status", out.Step.Status, "ERROR")
	equal(t, "attempts", out.Step.Attempts, 3)
	equal(t, "blocking", *out.Step.Readiness.BlockingReason, "RETRIES_EXHAUSTED")
	equal(t, "ready", out.Step.Readiness.ReadyForExecution, false)
	equal(t, "children", len(out.Step.Children), 1)
	equal(t, "child name", out.Step.Children[0].Name, "validate_input")
	equal(t, "parents", len(out.Step.Parents), 0)
}

func TestTasksPaginationAndFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var all []*fixture.Task
	for range 3 {
		all = append(all, e.fx.Task(fixture.FourStep), e.fx.Task(fixture.Linear))
	}
	all[0].TaskTransition(time.Minute, models.StateInProgress)
	all[1].TaskTransition(time.Minute, models.StateError)

	type page struct {
		Tasks struct {
			Edges []struct {
				Cursor string
				Node   struct{ ID, Status string }
			}
			Nodes    []struct{ ID string }
			PageInfo struct {
				HasNextPage bool
				EndCursor   *string
			}
		}
	}
	q := `query($first: Int, $after: String, $filter: TaskFilter) {
		tasks(first: $first, after: $after, filter: $filter) {
			edges { cursor node { id status } } nodes { id } pageInfo { hasNextPage endCursor }
		} }`
	// Newest first, 4 then 2.
	var p1, p2 page
	e.data(q, map[string]any{"first": 4}, &p1)
	equal(t, "page 1 size", len(p1.Tasks.Nodes), 4)
	equal(t, "page 1 more", p1.Tasks.PageInfo.HasNextPage, true)
	equal(t, "page 1 first", p1.Tasks.Nodes[0].ID, id(all[5].ID))
	equal(t, "edge node = node", p1.Tasks.Edges[3].Node.ID, p1.Tasks.Nodes[3].ID)
	e.data(q, map[string]any{"first": 4, "after": *p1.Tasks.PageInfo.EndCursor}, &p2)
	equal(t, "page 2", []string{p2.Tasks.Nodes[0].ID, p2.Tasks.Nodes[1].ID}, ids(all[1].ID, all[0].ID))
	equal(t, "page 2 more", p2.Tasks.PageInfo.HasNextPage, false)

	var byName, byStatus, byNamespace, byTime page
	e.data(q, map[string]any{"filter": map[string]any{"namedTask": "linear_workflow"}}, &byName)
	equal(t, "linear tasks", len(byName.Tasks.Nodes), 3)
	e.data(q, map[string]any{"filter": map[string]any{"status": []string{"IN_PROGRESS", "ERROR"}}}, &byStatus)
	equal(t, "by status", []string{byStatus.Tasks.Nodes[0].ID, byStatus.Tasks.Nodes[1].ID}, ids(all[1].ID, all[0].ID))
	equal(t, "by status node", byStatus.Tasks.Edges[0].Node.Status, "ERROR")
	e.data(q, map[string]any{"filter": map[string]any{"namespace": "default"}}, &byNamespace)
	equal(t, "other namespace", len(byNamespace.Tasks.Nodes), 0)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	e.data(q, map[string]any{"filter": map[string]any{"createdAfter": "2000-01-01T00:00:00Z", "createdBefore": future}}, &byTime)
	equal(t, "created range", len(byTime.Tasks.Nodes), 6)
	e.data(q, map[string]any{"filter": map[string]any{"createdAfter": future}}, &byTime)
	equal(t, "created after the future", len(byTime.Tasks.Nodes), 0)

	e.oneError(q, map[string]any{"first": 0}, "VALIDATION")
	e.oneError(q, map[string]any{"first": 501}, "VALIDATION")
	bad := e.oneError(q, map[string]any{"after": "nonsense"}, "VALIDATION")
	if !strings.Contains(bad.Message, `"nonsense"`) {
		t.Errorf("bad cursor message %q does not name the cursor", bad.Message)
	}
	e.oneError(q, map[string]any{"filter": map[string]any{"createdAfter": "yesterday"}}, "VALIDATION")
}

func TestNamespacesAndNamedTasks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fx.Task(fixture.FourStep)
	e.fx.Task(fixture.Diamond)
	var out struct {
		Namespaces []struct{ Name string }
		All        []struct {
			Name      string
			Namespace struct{ Name string }
		}
		Fixture []struct{ Name string }
		Default []struct{ Name string }
	}
	e.data(`{ namespaces { name }
		all: namedTasks { name namespace { name } }
		fixture: namedTasks(namespace: "fixture") { name }
		default: namedTasks(namespace: "default") { name } }`, nil, &out)
	equal(t, "namespaces", out.Namespaces, []struct{ Name string }{{"default"}, {"fixture"}})
	equal(t, "named tasks", len(out.All), 2)
	equal(t, "first named task", out.All[0].Name, "diamond_workflow")
	equal(t, "its namespace", out.All[0].Namespace.Name, "fixture")
	equal(t, "fixture named tasks", len(out.Fixture), 2)
	equal(t, "default named tasks", len(out.Default), 0)
}

func TestUnknownAndInvalidIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	err := e.oneError(`{ task(id: "999999") { id } }`, nil, "NOT_FOUND")
	equal(t, "message", err.Message, "task 999999 not found")
	equal(t, "path", err.Path, []any{"task"})
	e.oneError(`{ step(id: "999999") { id } }`, nil, "NOT_FOUND")
	bad := e.oneError(`query($id: ID!) { step(id: $id) { id } }`, map[string]any{"id": "abc"}, "VALIDATION")
	if !strings.Contains(bad.Message, `"abc"`) {
		t.Errorf("message %q does not name the bad id", bad.Message)
	}
}

func TestGETAndPersistedQueries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.FourStep)

	get := func(params url.Values) response {
		t.Helper()
		resp, err := http.Get(e.srv.URL + "/query?" + params.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return decode(t, resp)
	}
	r := get(url.Values{"query": {`{ task(id: "` + id(tk.ID) + `") { status } }`}})
	equal(t, "GET data", string(r.Data), `{"task":{"status":"PENDING"}}`)

	// Automatic persisted queries: unknown hash, then register, then by hash alone.
	query := `{ namespaces { name } }`
	const hash = "1a2c2e0ac2f4a9a9b7d0d3bb1a9a7b1e6c2b1c4f0b7cbd5b1b2f1b2c3d4e5f60"
	ext := map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": sha256Hex(query)}}
	miss := e.post(map[string]any{"extensions": ext})
	if len(miss.Errors) != 1 || miss.Errors[0].Message != "PersistedQueryNotFound" {
		t.Fatalf("unknown hash: %+v", miss.Errors)
	}
	reg := e.post(map[string]any{"query": query, "extensions": ext})
	equal(t, "register", string(reg.Data), `{"namespaces":[{"name":"default"},{"name":"fixture"}]}`)
	hit := e.post(map[string]any{"extensions": ext})
	equal(t, "by hash", string(hit.Data), `{"namespaces":[{"name":"default"},{"name":"fixture"}]}`)
	wrong := e.post(map[string]any{"query": query, "extensions": map[string]any{
		"persistedQuery": map[string]any{"version": 1, "sha256Hash": hash}}})
	if len(wrong.Errors) != 1 {
		t.Fatalf("mismatched hash accepted: %s", wrong.Data)
	}
}
