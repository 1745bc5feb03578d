package models_test

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gorm.io/gorm/schema"

	"github.com/taskerhq/tasker/db"
	"github.com/taskerhq/tasker/internal/refresh"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// source parses the package's (non-test) Go files.
func source(t *testing.T) (*token.FileSet, []*ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return fset, files
}

// tableNames maps every model type of this package that has a TableName method to the name
// it returns, read from the package's source: TableName must return a string literal or a
// constant of package db.
func tableNames(t *testing.T) map[string]string {
	t.Helper()
	fset, files := source(t)
	out := map[string]string{}
	for _, f := range files {
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Name.Name != "TableName" || fn.Recv == nil || len(fn.Body.List) != 1 {
				continue
			}
			recv, _ := fn.Recv.List[0].Type.(*ast.Ident)
			ret, _ := fn.Body.List[0].(*ast.ReturnStmt)
			if recv == nil || ret == nil || len(ret.Results) != 1 {
				t.Fatalf("%s: TableName is not `return <name>`", fset.Position(fn.Pos()))
			}
			switch e := ret.Results[0].(type) {
			case *ast.BasicLit:
				out[recv.Name], _ = strconv.Unquote(e.Value)
			case *ast.SelectorExpr:
				p, ok := e.X.(*ast.Ident)
				if !ok || p.Name != "db" {
					t.Fatalf("%s: TableName returns %v, want a literal or a db constant", fset.Position(fn.Pos()), e)
				}
				proj, ok := db.Find(constant(t, e.Sel.Name))
				if !ok {
					t.Fatalf("%s: db.%s names no projection", fset.Position(fn.Pos()), e.Sel.Name)
				}
				out[recv.Name] = proj.Name
			default:
				t.Fatalf("%s: TableName returns %T, want a literal or a db constant", fset.Position(fn.Pos()), e)
			}
		}
	}
	return out
}

// primaryKeys maps every struct type of this package to the columns of its fields tagged
// primaryKey, those of embedded structs included, read from the package's source.
func primaryKeys(t *testing.T) map[string][]string {
	t.Helper()
	_, files := source(t)
	structs := map[string]*ast.StructType{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			if ts, ok := n.(*ast.TypeSpec); ok {
				if st, ok := ts.Type.(*ast.StructType); ok {
					structs[ts.Name.Name] = st
				}
			}
			return true
		})
	}
	naming := schema.NamingStrategy{}
	var keys func(name string) []string
	keys = func(name string) []string {
		var out []string
		for _, f := range structs[name].Fields.List {
			tag := ""
			if f.Tag != nil {
				tag = f.Tag.Value
			}
			switch {
			case len(f.Names) == 0 && strings.Contains(tag, "embedded"):
				if id, ok := f.Type.(*ast.Ident); ok {
					out = append(out, keys(id.Name)...)
				}
			case len(f.Names) == 1 && strings.Contains(tag, "primaryKey"):
				out = append(out, naming.ColumnName("", f.Names[0].Name))
			}
		}
		return out
	}
	out := map[string][]string{}
	for name := range structs {
		out[name] = keys(name)
	}
	return out
}

// constant returns the value of the projection name constant db.<name>.
func constant(t *testing.T, name string) string {
	t.Helper()
	consts := map[string]string{
		"StepReadinessStatuses": db.StepReadinessStatuses,
		"StepDagRelationships":  db.StepDagRelationships,
		"TaskExecutionContexts": db.TaskExecutionContexts,
		"TaskWorkflowSummaries": db.TaskWorkflowSummaries,
		"TaskStatusSummaries":   db.TaskStatusSummaries,
		"StepPerformance":       db.StepPerformance,
		"HourlyThroughput":      db.HourlyThroughput,
	}
	v, ok := consts[name]
	if !ok {
		t.Fatalf("db.%s is not a projection name", name)
	}
	return v
}

// TestCatalogueMatchesModelsAndSchema checks the catalogue of projections (db.Projections)
// against what it drives: every projection has its read model here and every model of a view
// is catalogued; every catalogued file is embedded; the migrated schema has exactly the
// catalogued views (plus the <name>_exact view of each materialized one); the refresher keeps
// exactly the materialized ones.
func TestCatalogueMatchesModelsAndSchema(t *testing.T) {
	t.Parallel()
	tables, keys := tableNames(t), primaryKeys(t)
	var views []string
	for _, p := range db.Projections {
		if got, ok := tables[p.Model]; !ok || got != p.Name {
			t.Errorf("projection %s: model %s has TableName %q (found: %v)", p.Name, p.Model, got, ok)
		}
		if got := keys[p.Model]; !slices.Equal(got, p.Key) {
			t.Errorf("projection %s has key %v, its model %s the primary key %v", p.Name, p.Key, p.Model, got)
		}
		if len(p.Versions) == 0 {
			t.Errorf("projection %s has no version", p.Name)
		}
		for i, v := range p.Versions {
			if _, err := db.ReadFile(v.File); err != nil {
				t.Errorf("projection %s: %v", p.Name, err)
			}
			if want := p.Name + "_v" + pad(i+1) + ".sql"; !strings.HasSuffix(v.File, "/"+want) {
				t.Errorf("projection %s: version %d is %s, want .../%s", p.Name, i+1, v.File, want)
			}
		}
		for _, r := range p.Reads {
			if _, ok := db.Find(r); !ok {
				t.Errorf("projection %s reads %s, which is not catalogued", p.Name, r)
			}
		}
		views = append(views, p.Name)
		switch p.Kind {
		case db.LiveView:
			if p.Refresh != nil {
				t.Errorf("live projection %s has refresh facts", p.Name)
			}
		case db.MaterializedView:
			if p.Refresh == nil || p.Refresh.EnvKey == "" || len(p.Refresh.Tables) == 0 {
				t.Errorf("materialized projection %s lacks refresh facts: %+v", p.Name, p.Refresh)
				continue
			}
			if _, err := db.ReadFile(p.Refresh.Definition); err != nil {
				t.Errorf("projection %s: %v", p.Name, err)
			}
			views = append(views, p.Name+"_exact")
		default:
			t.Errorf("projection %s has kind %v", p.Name, p.Kind)
		}
	}
	if got, want := refresh.ViewNames(), db.Names(db.MaterializedView); !slices.Equal(got, want) {
		t.Errorf("the refresher keeps %v, the catalogue's materialized projections are %v", got, want)
	}

	// The views of the migrated schema, and the relation kind of every model's table.
	gdb := dbtest.New(t)
	var inSchema []string
	if err := gdb.WithContext(context.Background()).Raw(`SELECT c.relname FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm') ORDER BY 1`).Scan(&inSchema).Error; err != nil {
		t.Fatal(err)
	}
	slices.Sort(views)
	if !slices.Equal(inSchema, views) {
		t.Errorf("the migrated schema has views %v, the catalogue gives %v", inSchema, views)
	}
	for _, p := range db.Projections {
		var columns []string
		if err := gdb.Raw(`SELECT column_name FROM information_schema.columns
			WHERE table_schema = 'public' AND table_name = ?`, p.Name).Scan(&columns).Error; err != nil {
			t.Fatal(err)
		}
		for _, k := range p.Key {
			if !slices.Contains(columns, k) {
				t.Errorf("projection %s: key column %s is not a column of the view (%v)", p.Name, k, columns)
			}
		}
	}
	for model, table := range tables {
		if slices.Contains(inSchema, table) {
			if p, ok := db.Find(table); !ok || p.Model != model {
				t.Errorf("model %s reads the view %s, which the catalogue does not give it", model, table)
			}
		}
	}
}

func pad(n int) string {
	s := strconv.Itoa(n)
	if len(s) < 2 {
		s = "0" + s
	}
	return s
}
