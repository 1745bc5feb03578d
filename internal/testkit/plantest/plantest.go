// Package plantest reads PostgreSQL query plans for the tests that hold the design's rule that
// a per-task read or a hot statement touches only the rows of its tasks: it runs an EXPLAIN
// (FORMAT JSON), parses the plan into a tree and answers what those tests ask of it (which
// growing tables are scanned sequentially, how many of their rows were read).
package plantest

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// GrowingTables are the tables that grow with the workload: a per-task read or a hot
// statement must never scan one.
var GrowingTables = []string{
	"tasker_tasks",
	"tasker_workflow_steps",
	"tasker_workflow_step_edges",
	"tasker_task_transitions",
	"tasker_workflow_step_transitions",
}

// isGrowing reports whether table is one of GrowingTables.
func isGrowing(table string) bool { return slices.Contains(GrowingTables, table) }

// Node is the part of an EXPLAIN (FORMAT JSON) plan node the tests look at. The Actual and
// Removed counts are set by EXPLAIN ANALYZE only.
type Node struct {
	NodeType             string  `json:"Node Type"`
	RelationName         string  `json:"Relation Name"`
	IndexName            string  `json:"Index Name"`
	PlanRows             float64 `json:"Plan Rows"`
	ActualRows           float64 `json:"Actual Rows"`
	ActualLoops          float64 `json:"Actual Loops"`
	RowsRemovedByFilter  float64 `json:"Rows Removed by Filter"`
	RowsRemovedByRecheck float64 `json:"Rows Removed by Index Recheck"`
	// RowsRemovedByJoinFilter counts, per loop, the pairs a join compared and refused.
	RowsRemovedByJoinFilter float64 `json:"Rows Removed by Join Filter"`
	Plans                   []Node  `json:"Plans"`
}

// Walk calls visit on n and then on every node below it, depth first.
func (n Node) Walk(visit func(Node)) {
	visit(n)
	for _, c := range n.Plans {
		c.Walk(visit)
	}
}

// SeqScans lists the growing tables the plan scans sequentially, once per scan node.
func (n Node) SeqScans() []string {
	var out []string
	n.Walk(func(n Node) {
		if n.NodeType == "Seq Scan" && isGrowing(n.RelationName) {
			out = append(out, n.RelationName)
		}
	})
	return out
}

// RowsRead returns, for each growing table the plan reads, the rows its nodes read from it
// over all their loops: returned, removed by a filter or removed by an index recheck.
func (n Node) RowsRead() map[string]float64 {
	out := map[string]float64{}
	n.Walk(func(n Node) {
		if isGrowing(n.RelationName) {
			out[n.RelationName] += (n.ActualRows + n.RowsRemovedByFilter + n.RowsRemovedByRecheck) * n.ActualLoops
		}
	})
	return out
}

// JoinFilterRemoved returns how many pairs of rows the plan's joins compared and refused, over
// all their loops: a join that finds its matches by key refuses none, one that compares every
// row of a side with every row of the other refuses nearly all.
func (n Node) JoinFilterRemoved() float64 {
	var out float64
	n.Walk(func(n Node) { out += n.RowsRemovedByJoinFilter * n.ActualLoops })
	return out
}

// Querier runs the EXPLAIN: a *sql.DB, *sql.Conn or *sql.Tx.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Explain runs query, an EXPLAIN (..., FORMAT JSON) statement, with args and returns the root
// of its plan.
func Explain(ctx context.Context, q Querier, query string, args ...any) (Node, error) {
	var raw string
	if err := q.QueryRowContext(ctx, query, args...).Scan(&raw); err != nil {
		return Node{}, fmt.Errorf("explaining: %w", err)
	}
	return Parse(raw)
}

// Parse returns the root of an EXPLAIN (FORMAT JSON) plan's text.
func Parse(raw string) (Node, error) {
	var out []struct {
		Plan Node `json:"Plan"`
	}
	if err := json.Unmarshal([]byte(raw), &out); err != nil || len(out) != 1 {
		return Node{}, fmt.Errorf("parsing plan (%v):\n%s", err, raw)
	}
	return out[0].Plan, nil
}

// Literal writes a statement argument as an SQL literal, for EXPLAIN EXECUTE of a prepared
// statement (EXECUTE inside EXPLAIN takes no bound parameters). A driver.Valuer is written as
// its value.
func Literal(a any) (string, error) {
	if v, ok := a.(driver.Valuer); ok {
		var err error
		if a, err = v.Value(); err != nil {
			return "", err
		}
	}
	switch v := a.(type) {
	case nil:
		return "NULL", nil
	case string:
		return "'" + strings.ReplaceAll(v, "'", "''") + "'", nil
	case []byte:
		return "'" + strings.ReplaceAll(string(v), "'", "''") + "'", nil
	case time.Time:
		return "'" + v.Format(time.RFC3339Nano) + "'", nil
	case bool, int, int32, int64, float64:
		return fmt.Sprint(v), nil
	}
	return "", fmt.Errorf("no literal for argument %v (%T)", a, a)
}
