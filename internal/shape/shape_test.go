package shape_test

import (
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/shape"
)

func TestStandardShapesAreWellFormed(t *testing.T) {
	t.Parallel()
	want := map[string]int{"linear_workflow": 5, "diamond_workflow": 7, "parallel_merge_workflow": 6,
		"tree_workflow": 10, "mixed_workflow": 9}
	for _, s := range shape.Standard {
		edges, err := s.Edges()
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		if len(edges) != want[s.Name] {
			t.Errorf("%s has %d edges, want %d", s.Name, len(edges), want[s.Name])
		}
	}
	if err := shape.FourStep.Validate(); err != nil || shape.FourStep.Last() != "four" {
		t.Errorf("four step: %v, last %q", err, shape.FourStep.Last())
	}
}

func TestWideAndDeep(t *testing.T) {
	t.Parallel()
	w, err := shape.Wide(10)
	if err != nil {
		t.Fatal(err)
	}
	edges, err := w.Edges()
	if err != nil {
		t.Fatal(err)
	}
	// 8 edges from the root, 8 into the sink.
	if len(w.Steps) != 10 || len(edges) != 16 || w.Name != "wide_10" || w.Last() != "sink" {
		t.Errorf("wide(10): %d steps, %d edges, name %q, last %q", len(w.Steps), len(edges), w.Name, w.Last())
	}
	d, err := shape.Deep(1000)
	if err != nil {
		t.Fatal(err)
	}
	edges, err = d.Edges()
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Steps) != 1000 || len(edges) != 999 || edges[998] != [2]int{998, 999} {
		t.Errorf("deep(1000): %d steps, %d edges, last edge %v", len(d.Steps), len(edges), edges[len(edges)-1])
	}
	if _, err := shape.Wide(2); err == nil || !strings.Contains(err.Error(), "at least 3") {
		t.Errorf("wide(2) error = %v", err)
	}
	if _, err := shape.Deep(0); err == nil || !strings.Contains(err.Error(), "at least 1") {
		t.Errorf("deep(0) error = %v", err)
	}
}

func TestEdgesRefusesMalformedShapes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s    shape.Shape
		want string
	}{
		{shape.Shape{}, "no name"},
		{shape.Shape{Name: "x", Steps: []shape.Step{{Name: ""}}}, "step 0 has no name"},
		{shape.Shape{Name: "x", Steps: []shape.Step{{Name: "a"}, {Name: "a"}}}, `"a" is declared twice`},
		{shape.Shape{Name: "x", Steps: []shape.Step{{Name: "a", Parents: []string{"b"}}, {Name: "b"}}},
			`parent "b" of step "a" is not declared before it`},
	} {
		if err := tc.s.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error = %v, want %q", tc.s, err, tc.want)
		}
	}
}
