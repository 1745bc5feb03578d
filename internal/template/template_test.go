package template_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
	"gorm.io/gorm"
)

// The five shapes of SEMANTICS §8, as edges "parent>child".
var shapes = map[string]struct {
	steps int
	edges []string
}{
	"linear_workflow": {6, []string{"initialize_data>validate_input", "validate_input>process_data",
		"process_data>transform_results", "transform_results>validate_output", "validate_output>finalize_workflow"}},
	"diamond_workflow": {7, []string{"start_workflow>branch_one_process", "start_workflow>branch_two_process",
		"branch_one_process>branch_one_validate", "branch_two_process>branch_two_validate",
		"branch_one_validate>merge_branches", "branch_two_validate>merge_branches", "merge_branches>end_workflow"}},
	"parallel_merge_workflow": {7, []string{"fetch_user_data>process_user_data", "fetch_order_data>process_order_data",
		"process_user_data>merge_all_data", "process_order_data>merge_all_data",
		"fetch_inventory_data>merge_all_data", "fetch_pricing_data>merge_all_data"}},
	"tree_workflow": {8, []string{"root_initialization>branch_a_setup", "root_initialization>branch_b_setup",
		"branch_a_setup>branch_a_task_one", "branch_a_setup>branch_a_task_two",
		"branch_b_setup>branch_b_task_one", "branch_b_setup>branch_b_task_two",
		"branch_a_task_one>aggregate_results", "branch_a_task_two>aggregate_results",
		"branch_b_task_one>aggregate_results", "branch_b_task_two>aggregate_results"}},
	"mixed_workflow": {9, []string{"init_auth>validate_permissions", "init_config>setup_environment",
		"validate_permissions>begin_processing", "setup_environment>begin_processing",
		"begin_processing>process_critical_data", "begin_processing>process_optional_data",
		"setup_environment>cleanup_temp_files", "process_critical_data>finalize_and_report",
		"cleanup_temp_files>finalize_and_report"}},
}

func edgeStrings(tpl *template.Template) []string {
	var out []string
	for _, e := range tpl.Edges() {
		out = append(out, e.From+">"+e.To)
	}
	slices.Sort(out)
	return out
}

func TestShippedTemplates(t *testing.T) {
	t.Parallel()
	reg := fixture.Templates(t)
	// The five shapes, the http example and payment_failures.
	if got := len(reg.Templates()); got != 7 {
		t.Fatalf("loaded %d templates, want 7", got)
	}
	for name, want := range shapes {
		tpl, err := reg.Lookup("examples", name, "")
		if err != nil {
			t.Fatalf("Lookup %s: %v", name, err)
		}
		if len(tpl.Steps) != want.steps {
			t.Errorf("%s: %d steps, want %d", name, len(tpl.Steps), want.steps)
		}
		wantEdges := slices.Clone(want.edges)
		slices.Sort(wantEdges)
		if got := edgeStrings(tpl); !slices.Equal(got, wantEdges) {
			t.Errorf("%s: edges\n got %v\nwant %v", name, got, wantEdges)
		}
		for _, s := range tpl.Steps {
			if s.BuiltHandler() == nil {
				t.Errorf("%s.%s: no handler built", name, s.Name)
			}
		}
	}
	// Injected failures: the fail steps fail on the attempts the shape says, then succeed.
	mixed, _ := reg.Lookup("examples", "mixed_workflow", "1.0.0")
	crit := mixed.Step("process_critical_data")
	for attempt, wantErr := range map[int]bool{1: true, 2: true, 3: false} {
		_, err := crit.BuiltHandler().Run(context.Background(), handler.Input{Attempt: attempt})
		if (err != nil) != wantErr {
			t.Errorf("process_critical_data attempt %d: err = %v, want error %v", attempt, err, wantErr)
		}
	}
	setup := mixed.Step("setup_environment")
	if setup.Timeout != 200*time.Millisecond || setup.RetryLimit != 3 || !setup.Retryable || setup.DependentSystem != "default" {
		t.Errorf("setup_environment defaults: %+v", setup)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setup.Timeout)
	defer cancel()
	if _, err := setup.BuiltHandler().Run(ctx, handler.Input{Attempt: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("setup_environment attempt 1: err = %v, want a timeout", err)
	}

	db := dbtest.New(t)
	if err := reg.RegisterAll(context.Background(), db); err != nil {
		t.Fatalf("RegisterAll: %v", err)
	}
	var n int64
	db.Raw(`SELECT count(*) FROM tasker_named_tasks nt JOIN tasker_task_namespaces ns USING (task_namespace_id)
		WHERE ns.name = 'examples'`).Scan(&n)
	if n != 7 {
		t.Fatalf("%d named tasks in namespace examples, want 7", n)
	}
	db.Raw(`SELECT count(*) FROM tasker_named_tasks_named_steps`).Scan(&n)
	if n != 6+7+7+8+9+2+4 {
		t.Fatalf("%d named_tasks_named_steps rows, want %d", n, 6+7+7+8+9+2+4)
	}
	var cfg struct {
		Hash  string
		Steps []struct {
			Name      string
			TimeoutMS int64 `json:"timeout_ms"`
			Handler   struct{ Kind string }
		}
		Edges []template.Edge
	}
	var raw string
	db.Raw(`SELECT configuration::text FROM tasker_named_tasks WHERE name = 'mixed_workflow'`).Scan(&raw)
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Hash != mixed.Hash || len(cfg.Steps) != 9 || len(cfg.Edges) != 9 || cfg.Steps[3].TimeoutMS != 200 ||
		cfg.Steps[3].Handler.Kind != "fail" {
		t.Fatalf("stored configuration = %s", raw)
	}
	var http struct {
		Description  string
		RetryLimit   int
		System       string
		Retryable    bool
		NamedStepCnt int
	}
	db.Raw(`SELECT nts.default_retry_limit AS retry_limit, nts.default_retryable AS retryable, ds.name AS system
		FROM tasker_named_tasks_named_steps nts
		JOIN tasker_named_tasks nt USING (named_task_id)
		JOIN tasker_named_steps s ON s.named_step_id = nts.named_step_id
		JOIN tasker_dependent_systems ds ON ds.dependent_system_id = s.dependent_system_id
		WHERE nt.name = 'http_fetch_and_post' AND s.name = 'post_summary'`).Scan(&http)
	if http.RetryLimit != 5 || !http.Retryable || http.System != "item_service" {
		t.Fatalf("post_summary defaults = %+v", http)
	}
}

func TestValidateContext(t *testing.T) {
	t.Parallel()
	tpl, err := fixture.Templates(t).Lookup("examples", "http_fetch_and_post", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := tpl.ValidateContext(json.RawMessage(`{"base_url": "http://x", "item_id": 3}`)); err != nil {
		t.Fatalf("valid context refused: %v", err)
	}
	err = tpl.ValidateContext(json.RawMessage(`{"base_url": "ftp://x", "item_id": 0}`))
	var ce *template.ContextError
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("err = %v, want a ContextError with 2 problems", err)
	}
	if !strings.Contains(err.Error(), "/base_url") || !strings.Contains(err.Error(), "/item_id") {
		t.Fatalf("err = %v, want both locations named", err)
	}
	for _, bad := range []string{`[]`, `"x"`, `{`, `{"item_id": 1}`} {
		if err := tpl.ValidateContext(json.RawMessage(bad)); err == nil {
			t.Errorf("context %s accepted", bad)
		}
	}
}

const base = `namespace: ns
name: t
version: 1.0.0
steps:
`

func TestRefusals(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yaml, step, want string
	}{
		{"malformed yaml", "namespace: [\n", "", "malformed"},
		{"unknown top field", base + "  - name: a\n    handler: {kind: noop}\ncolour: red\n", "", "colour"},
		{"unknown step field", base + "  - name: a\n    handler: {kind: noop}\n    retries: 3\n", "a", "retries"},
		{"unknown handler field", base + "  - name: a\n    handler: {kind: noop, conf: {}}\n", "a", "conf"},
		{"missing name", "namespace: ns\nversion: 1.0.0\nsteps:\n  - name: a\n    handler: {kind: noop}\n", "", "name is required"},
		{"missing namespace", "name: t\nversion: 1.0.0\nsteps:\n  - name: a\n    handler: {kind: noop}\n", "", "namespace is required"},
		{"bad semver", "namespace: ns\nname: t\nversion: v1.2\nsteps:\n  - name: a\n    handler: {kind: noop}\n", "", "semantic version"},
		{"duplicate step", base + "  - name: a\n    handler: {kind: noop}\n  - name: a\n    handler: {kind: noop}\n", "a", "duplicate step"},
		{"unknown dependency", base + "  - name: a\n    depends_on: ghost\n    handler: {kind: noop}\n", "a", `unknown step "ghost"`},
		{"cycle", base + "  - name: a\n    depends_on: c\n    handler: {kind: noop}\n  - name: b\n    depends_on: a\n    handler: {kind: noop}\n  - name: c\n    depends_on: [b]\n    handler: {kind: noop}\n  - name: d\n    handler: {kind: noop}\n", "", "cycle"},
		{"self cycle", base + "  - name: a\n    depends_on: a\n    handler: {kind: noop}\n", "a", "cycle"},
		{"unknown handler kind", base + "  - name: a\n    handler: {kind: teleport}\n", "a", `unknown handler kind "teleport"`},
		{"missing handler", base + "  - name: a\n", "a", "handler.kind is required"},
		{"bad handler config", base + "  - name: a\n    handler: {kind: sleep, config: {duration: forever}}\n", "a", "bad handler config"},
		{"bad http config", base + "  - name: a\n    handler: {kind: http, config: {url: 'http://x/{{.Context'}}\n", "a", "bad handler config"},
		{"invalid schema", base + "  - name: a\n    handler: {kind: noop}\ncontext_schema: {type: 12}\n", "", "context_schema"},
		{"negative retry_limit", base + "  - name: a\n    retry_limit: -1\n    handler: {kind: noop}\n", "a", "retry_limit"},
		{"bad timeout", base + "  - name: a\n    timeout: soonish\n    handler: {kind: noop}\n", "a", "bad timeout"},
		{"zero timeout", base + "  - name: a\n    timeout: 0s\n    handler: {kind: noop}\n", "a", "bad timeout"},
		{"no steps", "namespace: ns\nname: t\nversion: 1.0.0\n", "", "at least one step"},
		{"two documents", base + "  - name: a\n    handler: {kind: noop}\n---\nname: x\n", "", "more than one"},
		{"bad depends_on type", base + "  - name: a\n    depends_on: {x: 1}\n    handler: {kind: noop}\n", "a", "depends_on"},
	}
	hr := handler.NewBuiltinRegistry()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := "bad/" + strings.ReplaceAll(tc.name, " ", "_") + ".yaml"
			tpl, err := template.Parse(file, []byte(tc.yaml), hr)
			if err == nil {
				t.Fatalf("accepted: %+v", tpl)
			}
			if !errs.Is(err, errs.Invalid) {
				t.Errorf("errs.Is(err, errs.Invalid) is false: %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, file) {
				t.Errorf("error does not name the file %s: %v", file, msg)
			}
			if tc.step != "" && !strings.Contains(msg, fmt.Sprintf("step %q", tc.step)) {
				t.Errorf("error does not name step %q: %v", tc.step, msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error does not mention %q: %v", tc.want, msg)
			}
		})
	}
}

func TestCycleNamesItsSteps(t *testing.T) {
	t.Parallel()
	y := base + "  - name: a\n    depends_on: c\n    handler: {kind: noop}\n  - name: b\n    depends_on: a\n    handler: {kind: noop}\n  - name: c\n    depends_on: b\n    handler: {kind: noop}\n  - name: d\n    depends_on: a\n    handler: {kind: noop}\n"
	_, err := template.Parse("cyc.yaml", []byte(y), handler.NewBuiltinRegistry())
	if err == nil {
		t.Fatal("cycle accepted")
	}
	// Edges: c→a, a→b, b→c; d is not on the cycle.
	msg := err.Error()
	ok := strings.Contains(msg, "a → b → c → a") || strings.Contains(msg, "b → c → a → b") || strings.Contains(msg, "c → a → b → c")
	if !ok || strings.Contains(msg, "d →") {
		t.Fatalf("error = %v, want the cycle a → b → c in edge direction", msg)
	}
}

func TestLoadFSRefusesAllOrNothing(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"good.yaml":   {Data: []byte(base + "  - name: a\n    handler: {kind: noop}\n")},
		"bad.yml":     {Data: []byte(base + "  - name: a\n    handler: {kind: nope}\n")},
		"README.md":   {Data: []byte("not a template")},
		"other.yaml":  {Data: []byte(strings.Replace(base, "name: t", "name: u", 1) + "  - name: a\n    timeout: x\n    handler: {kind: noop}\n")},
		"nested/x.ya": {Data: []byte("ignored")},
	}
	reg := template.NewRegistry(handler.NewBuiltinRegistry())
	err := reg.LoadFS(fsys, ".")
	if err == nil || !strings.Contains(err.Error(), "bad.yml") || !strings.Contains(err.Error(), "other.yaml") {
		t.Fatalf("err = %v, want both bad files named", err)
	}
	if n := len(reg.Templates()); n != 0 {
		t.Fatalf("%d templates added despite the refusal", n)
	}
	dup := fstest.MapFS{
		"one.yaml": {Data: []byte(base + "  - name: a\n    handler: {kind: noop}\n")},
		"two.yaml": {Data: []byte(base + "  - name: b\n    handler: {kind: noop}\n")},
	}
	if err := reg.LoadFS(dup, "."); err == nil || !strings.Contains(err.Error(), "ns/t@1.0.0") {
		t.Fatalf("same version defined twice: err = %v", err)
	}
}

func TestLookupNewestBySemver(t *testing.T) {
	t.Parallel()
	reg := template.NewRegistry(handler.NewBuiltinRegistry())
	pre := template.NewRegistry(handler.NewBuiltinRegistry())
	for _, v := range []string{"3.0.0-alpha", "3.0.0-beta.2", "3.0.0-beta.10"} {
		tpl, err := template.Parse(v+".yaml", []byte(strings.Replace(base, "1.0.0", v, 1)+"  - name: a\n    handler: {kind: noop}\n"), pre.Handlers())
		if err != nil {
			t.Fatal(err)
		}
		if err := pre.Add(tpl); err != nil {
			t.Fatal(err)
		}
	}
	if tpl, err := pre.Lookup("ns", "t", ""); err != nil || tpl.Version != "3.0.0-beta.10" {
		t.Fatalf("newest of pre-releases only = %v, %v; want 3.0.0-beta.10", tpl, err)
	}
	for _, v := range []string{"1.9.0", "1.10.0", "2.0.0-rc.1", "0.3.0"} {
		tpl, err := template.Parse(v+".yaml", []byte(strings.Replace(base, "1.0.0", v, 1)+"  - name: a\n    handler: {kind: noop}\n"), reg.Handlers())
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.Add(tpl); err != nil {
			t.Fatal(err)
		}
	}
	tpl, err := reg.Lookup("ns", "t", "")
	if err != nil || tpl.Version != "1.10.0" {
		t.Fatalf("newest = %v, %v; want 1.10.0", tpl, err)
	}
	if tpl, err := reg.Lookup("ns", "t", "1.9.0"); err != nil || tpl.Version != "1.9.0" {
		t.Fatalf("exact = %v, %v", tpl, err)
	}
	for _, q := range [][3]string{{"ns", "t", "2.0.0"}, {"ns", "nope", ""}, {"other", "t", ""}} {
		if _, err := reg.Lookup(q[0], q[1], q[2]); !errs.Is(err, errs.NotFound) {
			t.Errorf("Lookup %v: err = %v, want errs.NotFound", q, err)
		}
	}
	for ref, want := range map[string][3]string{
		"ns/t@1.2.3": {"ns", "t", "1.2.3"}, "ns/t": {"ns", "t", ""}, "t": {"default", "t", ""}, "t@0.1.0": {"default", "t", "0.1.0"},
	} {
		ns, name, v, err := template.ParseRef(ref)
		if err != nil || [3]string{ns, name, v} != want {
			t.Errorf("ParseRef(%q) = %s %s %s %v", ref, ns, name, v, err)
		}
	}
	for _, bad := range []string{"", "ns/", "/t", "ns/t@", "a/b/c"} {
		if _, _, _, err := template.ParseRef(bad); err == nil {
			t.Errorf("ParseRef(%q) accepted", bad)
		}
	}
}

func countTemplateRows(t *testing.T, db *gorm.DB) string {
	t.Helper()
	var s string
	err := db.Raw(`SELECT concat_ws(',',
		(SELECT count(*) FROM tasker_task_namespaces), (SELECT count(*) FROM tasker_dependent_systems),
		(SELECT count(*) FROM tasker_named_steps), (SELECT count(*) FROM tasker_named_tasks),
		(SELECT count(*) FROM tasker_named_tasks_named_steps),
		(SELECT max(xmin::text::bigint) FROM tasker_named_tasks))`).Scan(&s).Error
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRegisterIdempotentAndRefusesChanges(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	ctx := context.Background()
	hr := handler.NewBuiltinRegistry()
	v1 := base + "  - name: a\n    dependent_system: sys\n    handler: {kind: noop}\n  - name: b\n    depends_on: a\n    retryable: false\n    retry_limit: 7\n    skippable: true\n    handler: {kind: noop}\n"
	tpl, err := template.Parse("v1.yaml", []byte(v1), hr)
	if err != nil {
		t.Fatal(err)
	}
	first, err := template.Register(ctx, db, tpl)
	if err != nil || !first.Created || len(first.NamedStepIDs) != 2 {
		t.Fatalf("first Register = %+v, %v", first, err)
	}
	before := countTemplateRows(t, db)
	again, err := template.Register(ctx, db, tpl)
	if err != nil || again.Created || again.NamedTaskID != first.NamedTaskID || again.NamedStepIDs["b"] != first.NamedStepIDs["b"] {
		t.Fatalf("second Register = %+v, %v; want the same ids, Created false", again, err)
	}
	if after := countTemplateRows(t, db); after != before {
		t.Fatalf("re-registering wrote rows: %s → %s", before, after)
	}
	var d struct {
		Retryable  bool `gorm:"column:default_retryable"`
		RetryLimit int  `gorm:"column:default_retry_limit"`
		Skippable  bool
	}
	db.Raw(`SELECT default_retryable, default_retry_limit, skippable FROM tasker_named_tasks_named_steps
		WHERE named_task_id = ? AND named_step_id = ?`, first.NamedTaskID, first.NamedStepIDs["b"]).Scan(&d)
	if d.Retryable || d.RetryLimit != 7 || !d.Skippable {
		t.Fatalf("defaults of b = %+v", d)
	}

	changed, err := template.Parse("v1-changed.yaml", []byte(strings.Replace(v1, "retry_limit: 7", "retry_limit: 8", 1)), hr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = template.Register(ctx, db, changed)
	if !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "ns/t@1.0.0") {
		t.Fatalf("changed definition: err = %v, want errs.Conflict naming ns/t@1.0.0", err)
	}
	if _, err := template.Ensure(ctx, db, changed); !errs.Is(err, errs.Conflict) {
		t.Fatalf("Ensure changed definition: err = %v", err)
	}
	if after := countTemplateRows(t, db); after != before {
		t.Fatalf("refused registration wrote rows: %s → %s", before, after)
	}
}

func TestConcurrentRegistration(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	dbs := []*gorm.DB{dbtest.Open(t, url), dbtest.Open(t, url)} // two pools, as two processes
	reg := fixture.Templates(t)
	start := make(chan struct{})
	errs := make(chan error, 2*len(dbs))
	var wg sync.WaitGroup
	for _, db := range dbs {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs <- reg.RegisterAll(context.Background(), db)
			}()
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent RegisterAll: %v", err)
		}
	}
	var n int64
	dbs[0].Raw(`SELECT count(*) FROM tasker_named_tasks`).Scan(&n)
	if n != 7 {
		t.Fatalf("%d named tasks, want 7", n)
	}
	dbs[0].Raw(`SELECT count(*) FROM tasker_task_namespaces WHERE name = 'examples'`).Scan(&n)
	if n != 1 {
		t.Fatalf("%d examples namespaces, want 1", n)
	}
}

// A lookup that finds nothing says what exists: the versions of the name, the templates, or
// the closest names when there are many.
func TestLookupNotFoundListsWhatExists(t *testing.T) {
	t.Parallel()
	reg := fixture.Templates(t)
	_, err := reg.Lookup("examples", "nope", "")
	if !errs.Is(err, errs.NotFound) || !strings.Contains(err.Error(),
		"the templates are examples/diamond_workflow, examples/http_fetch_and_post, examples/linear_workflow") {
		t.Fatalf("unknown name: %v, want errs.NotFound listing the templates", err)
	}
	if _, err := reg.Lookup("examples", "linear_workflow", "9.9.9"); !errs.Is(err, errs.NotFound) ||
		!strings.HasSuffix(err.Error(), "examples/linear_workflow@9.9.9; its versions are 1.0.0") {
		t.Fatalf("unknown version: %v, want the versions listed", err)
	}

	many := template.NewRegistry(handler.NewBuiltinRegistry())
	for i := range 30 {
		src := fmt.Sprintf("namespace: ns\nname: flow_%02d\nversion: 1.0.0\nsteps:\n  - name: a\n    handler: {kind: noop}\n", i)
		tpl, err := template.Parse("f.yaml", []byte(src), many.Handlers())
		if err != nil {
			t.Fatal(err)
		}
		if err := many.Add(tpl); err != nil {
			t.Fatal(err)
		}
	}
	_, err = many.Lookup("ns", "flow_7", "")
	msg := fmt.Sprint(err)
	if !strings.Contains(msg, "the closest of the 30 templates are ns/flow_07, ") || strings.Count(msg, "ns/flow_") != 11 /* the ref asked for, then 10 */ {
		t.Fatalf("unknown name among many: %v, want the 10 closest, flow_07 first", err)
	}
}
