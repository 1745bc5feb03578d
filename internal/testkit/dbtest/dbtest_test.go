package dbtest_test

import (
	"testing"

	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

func TestNewGivesIsolatedMigratedDatabases(t *testing.T) {
	t.Parallel()
	a := dbtest.New(t)
	b := dbtest.New(t)
	var nameA, nameB string
	if err := a.Raw("SELECT current_database()").Scan(&nameA).Error; err != nil {
		t.Fatal(err)
	}
	if err := b.Raw("SELECT current_database()").Scan(&nameB).Error; err != nil {
		t.Fatal(err)
	}
	if nameA == nameB {
		t.Fatalf("two tests share database %q", nameA)
	}
	if err := a.Exec("INSERT INTO tasker_dependent_systems (name) VALUES ('only_in_a')").Error; err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := b.Raw("SELECT count(*) FROM tasker_dependent_systems WHERE name = 'only_in_a'").Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("a row written in one test database is visible in another")
	}
	var ns string
	if err := a.Raw("SELECT name FROM tasker_task_namespaces WHERE name = 'default'").Scan(&ns).Error; err != nil || ns != "default" {
		t.Fatalf("migrated database lacks the default namespace: %q %v", ns, err)
	}
}
