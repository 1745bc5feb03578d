// Package shape describes the DAG of a task template: its steps and the edges between them. It
// holds the standard shapes of the domain contract (docs/SEMANTICS.md §8) and generators for
// wide and deep shapes of any size. It has no dependencies beyond the standard library, so
// tests, benchmarks, the data generator and the binary share the same definitions.
package shape

import "fmt"

// Step is one step of a Shape: its name and the names of its parents (the steps it depends
// on). Parents must be declared earlier in the Shape, so every Shape is acyclic and its step
// ids ascend in declaration order.
type Step struct {
	Name    string
	Parents []string
}

// Shape is a task template: the named task's name and its steps with their edges.
type Shape struct {
	Name  string
	Steps []Step
}

// Last returns the name of the shape's last declared step ("" for a shape without steps).
func (s Shape) Last() string {
	if len(s.Steps) == 0 {
		return ""
	}
	return s.Steps[len(s.Steps)-1].Name
}

// The shapes of docs/SEMANTICS.md §8, with names and edges exactly as its table gives them.
var (
	// FourStep: one and two are roots; three depends on two; four depends on three.
	FourStep = Shape{Name: "four_step", Steps: []Step{
		{Name: "one"},
		{Name: "two"},
		{Name: "three", Parents: []string{"two"}},
		{Name: "four", Parents: []string{"three"}},
	}}

	// Linear: six steps in a chain.
	Linear = Shape{Name: "linear_workflow", Steps: []Step{
		{Name: "initialize_data"},
		{Name: "validate_input", Parents: []string{"initialize_data"}},
		{Name: "process_data", Parents: []string{"validate_input"}},
		{Name: "transform_results", Parents: []string{"process_data"}},
		{Name: "validate_output", Parents: []string{"transform_results"}},
		{Name: "finalize_workflow", Parents: []string{"validate_output"}},
	}}

	// Diamond: one root, two process → validate branches, merged and ended.
	Diamond = Shape{Name: "diamond_workflow", Steps: []Step{
		{Name: "start_workflow"},
		{Name: "branch_one_process", Parents: []string{"start_workflow"}},
		{Name: "branch_two_process", Parents: []string{"start_workflow"}},
		{Name: "branch_one_validate", Parents: []string{"branch_one_process"}},
		{Name: "branch_two_validate", Parents: []string{"branch_two_process"}},
		{Name: "merge_branches", Parents: []string{"branch_one_validate", "branch_two_validate"}},
		{Name: "end_workflow", Parents: []string{"merge_branches"}},
	}}

	// ParallelMerge: four fetch roots, two processed, all merged. merge_all_data lists its
	// parents out of id order on purpose.
	ParallelMerge = Shape{Name: "parallel_merge_workflow", Steps: []Step{
		{Name: "fetch_user_data"},
		{Name: "fetch_order_data"},
		{Name: "fetch_inventory_data"},
		{Name: "fetch_pricing_data"},
		{Name: "process_user_data", Parents: []string{"fetch_user_data"}},
		{Name: "process_order_data", Parents: []string{"fetch_order_data"}},
		{Name: "merge_all_data", Parents: []string{
			"process_user_data", "process_order_data", "fetch_inventory_data", "fetch_pricing_data"}},
	}}

	// Tree: a root, two setups with two tasks each, all four tasks aggregated.
	Tree = Shape{Name: "tree_workflow", Steps: []Step{
		{Name: "root_initialization"},
		{Name: "branch_a_setup", Parents: []string{"root_initialization"}},
		{Name: "branch_b_setup", Parents: []string{"root_initialization"}},
		{Name: "branch_a_task_one", Parents: []string{"branch_a_setup"}},
		{Name: "branch_a_task_two", Parents: []string{"branch_a_setup"}},
		{Name: "branch_b_task_one", Parents: []string{"branch_b_setup"}},
		{Name: "branch_b_task_two", Parents: []string{"branch_b_setup"}},
		{Name: "aggregate_results", Parents: []string{
			"branch_a_task_one", "branch_a_task_two", "branch_b_task_one", "branch_b_task_two"}},
	}}

	// Mixed: two roots whose paths to the last step differ in length (3 and 4 edges).
	Mixed = Shape{Name: "mixed_workflow", Steps: []Step{
		{Name: "init_auth"},
		{Name: "init_config"},
		{Name: "validate_permissions", Parents: []string{"init_auth"}},
		{Name: "setup_environment", Parents: []string{"init_config"}},
		{Name: "begin_processing", Parents: []string{"validate_permissions", "setup_environment"}},
		{Name: "process_critical_data", Parents: []string{"begin_processing"}},
		{Name: "process_optional_data", Parents: []string{"begin_processing"}},
		{Name: "cleanup_temp_files", Parents: []string{"setup_environment"}},
		{Name: "finalize_and_report", Parents: []string{"process_critical_data", "cleanup_temp_files"}},
	}}

	// Standard lists the five standard shapes of docs/SEMANTICS.md §8 (FourStep is not one of them).
	Standard = []Shape{Linear, Diamond, ParallelMerge, Tree, Mixed}
)

// Wide returns a shape of n steps: one root, n-2 parallel steps that depend on it and a sink
// that depends on all of them. n must be at least 3. Its name is "wide_<n>".
func Wide(n int) (Shape, error) {
	if n < 3 {
		return Shape{}, fmt.Errorf("wide shape needs at least 3 steps (a root, one parallel step, a sink), got %d", n)
	}
	steps := make([]Step, 0, n)
	steps = append(steps, Step{Name: "root"})
	middle := make([]string, 0, n-2)
	for i := 1; i <= n-2; i++ {
		name := fmt.Sprintf("parallel_%05d", i)
		steps = append(steps, Step{Name: name, Parents: []string{"root"}})
		middle = append(middle, name)
	}
	steps = append(steps, Step{Name: "sink", Parents: middle})
	return Shape{Name: fmt.Sprintf("wide_%d", n), Steps: steps}, nil
}

// Deep returns a shape of n steps in one chain, each depending on the previous one. n must be
// at least 1. Its name is "deep_<n>".
func Deep(n int) (Shape, error) {
	if n < 1 {
		return Shape{}, fmt.Errorf("deep shape needs at least 1 step, got %d", n)
	}
	steps := make([]Step, n)
	for i := range steps {
		steps[i].Name = fmt.Sprintf("link_%05d", i+1)
		if i > 0 {
			steps[i].Parents = []string{steps[i-1].Name}
		}
	}
	return Shape{Name: fmt.Sprintf("deep_%d", n), Steps: steps}, nil
}

// Edges returns the shape's edges as pairs of step indexes (parent, child), in declaration
// order of the children, or an error naming a step that is unnamed, declared twice, or has a
// parent not declared before it.
func (s Shape) Edges() ([][2]int, error) {
	if s.Name == "" {
		return nil, fmt.Errorf("shape has no name")
	}
	index := make(map[string]int, len(s.Steps))
	var edges [][2]int
	for i, st := range s.Steps {
		if st.Name == "" {
			return nil, fmt.Errorf("shape %q: step %d has no name", s.Name, i)
		}
		if _, dup := index[st.Name]; dup {
			return nil, fmt.Errorf("shape %q: step %q is declared twice", s.Name, st.Name)
		}
		for _, p := range st.Parents {
			pi, ok := index[p]
			if !ok {
				return nil, fmt.Errorf("shape %q: parent %q of step %q is not declared before it", s.Name, p, st.Name)
			}
			edges = append(edges, [2]int{pi, i})
		}
		index[st.Name] = i
	}
	return edges, nil
}

// Validate reports whether the shape is well formed (see Edges).
func (s Shape) Validate() error {
	_, err := s.Edges()
	return err
}
