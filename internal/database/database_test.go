package database_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/replica"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// TestOpenSetsPlannerSettingsUnlessTheURLSetsThem: the service's connections run without JIT
// and plan every execution afresh (no generic plan cached for tables that were small), unless
// the URL says otherwise.
func TestOpenSetsPlannerSettingsUnlessTheURLSetsThem(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	for _, tc := range []struct{ url, setting, want string }{
		{url, "jit", "off"},
		{url + "&jit=on", "jit", "on"},
		{url, "plan_cache_mode", "force_custom_plan"},
		{url + "&plan_cache_mode=auto", "plan_cache_mode", "auto"},
	} {
		gdb, err := database.Open(context.Background(), tc.url, database.Options{MaxOpenConns: 1})
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if err := gdb.Raw("SHOW " + tc.setting).Scan(&got).Error; err != nil {
			t.Fatal(err)
		}
		if err := database.Close(gdb); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: %s = %s, want %s", tc.url[strings.Index(tc.url, "?"):], tc.setting, got, tc.want)
		}
	}
}

func TestOpenNamesWhatIsWrong(t *testing.T) {
	t.Parallel()
	if _, err := database.Open(context.Background(), "postgres://%zz", database.Options{}); err == nil ||
		!strings.Contains(err.Error(), "database url") {
		t.Fatalf("malformed URL: %v", err)
	}
	if _, err := database.Open(context.Background(), "postgres://postgres@127.0.0.1:1/none?connect_timeout=2", database.Options{}); err == nil ||
		!strings.Contains(err.Error(), "connecting to database") {
		t.Fatalf("unreachable server: %v", err)
	}
}

func TestReplicaURLsSplitsOnCommas(t *testing.T) {
	t.Parallel()
	got := database.ReplicaURLs(" postgres://a/x , ,postgres://b/x,")
	if len(got) != 2 || got[0] != "postgres://a/x" || got[1] != "postgres://b/x" {
		t.Fatalf("ReplicaURLs = %q", got)
	}
	if got := database.ReplicaURLs(""); got != nil {
		t.Fatalf("ReplicaURLs(\"\") = %q, want none", got)
	}
}

// A "replica" that is a primary is refused; one that does not answer is left out and the
// handle reads from the primary.
func TestOpenWithReplicasChecksTheReplicas(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	ctx := context.Background()
	if _, err := database.OpenWithReplicas(ctx, url, []string{url}, database.Options{MaxOpenConns: 1}, replica.Options{}); err == nil ||
		!strings.Contains(err.Error(), "is not a standby") {
		t.Fatalf("a primary as replica: %v", err)
	}
	if _, err := database.OpenWithReplicas(ctx, url, []string{"postgres://%zz"}, database.Options{MaxOpenConns: 1}, replica.Options{}); err == nil ||
		!strings.Contains(err.Error(), "replica: parsing database url") {
		t.Fatalf("a malformed replica URL: %v", err)
	}
	gdb, err := database.OpenWithReplicas(ctx, url, []string{"postgres://postgres@127.0.0.1:1/none?connect_timeout=2"},
		database.Options{MaxOpenConns: 1}, replica.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer database.Close(gdb)
	r := database.Router(gdb)
	if r == nil || r.Replicas()[0].Up() {
		t.Fatal("an unreachable replica is in service")
	}
	rctx, _ := replica.WithRoute(ctx, true, 0)
	var one int
	if err := gdb.WithContext(rctx).Raw("SELECT 1").Scan(&one).Error; err != nil || one != 1 {
		t.Fatalf("a read with the only replica out: %v", err)
	}
	if r.PrimaryStatements() != 1 {
		t.Fatalf("primary statements = %d, want 1", r.PrimaryStatements())
	}
}

// TestOpenEngineConnectionsCarryTheEngineSettings: every connection of the engine's pool has
// the engine's settings from connect time, synchronous_commit follows asyncCommit, the URL
// cannot override them, and the main pool's settings are untouched.
func TestOpenEngineConnectionsCarryTheEngineSettings(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	ctx := context.Background()
	const read = `SELECT concat_ws(',', current_setting('jit'), current_setting('enable_seqscan'),
		current_setting('enable_bitmapscan'), current_setting('enable_mergejoin'), current_setting('enable_hashjoin'),
		current_setting('synchronous_commit'), current_setting('plan_cache_mode'), current_setting('session_replication_role'))`
	// The test databases' owner may not turn off foreign-key checks; the server's
	// administrator (a superuser) may, and the engine's connections then do (migration 00051).
	for _, tc := range []struct {
		url   string
		async bool
		want  string
	}{
		{url, false, "off,off,off,off,off,on,force_generic_plan,origin"},
		{url, true, "off,off,off,off,off,off,force_generic_plan,origin"},
		{url + "&jit=on&plan_cache_mode=force_custom_plan&synchronous_commit=off", false, "off,off,off,off,off,on,force_generic_plan,origin"},
		{dbtest.AsServerAdmin(t, url), false, "off,off,off,off,off,on,force_generic_plan,replica"},
	} {
		p, err := database.OpenEngine(ctx, tc.url, database.Options{MaxOpenConns: 2}, tc.async)
		if err != nil {
			t.Fatal(err)
		}
		if p.AsyncCommit != tc.async {
			t.Errorf("AsyncCommit %v, want %v", p.AsyncCommit, tc.async)
		}
		// Both connections, held at once, outside any transaction.
		sqlDB := database.SQL(p.DB)
		var conns []*sql.Conn
		for range 2 {
			c, err := sqlDB.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		for i, c := range conns {
			var got string
			if err := c.QueryRowContext(ctx, read).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("%s, async %v, connection %d: %s, want %s", tc.url[strings.Index(tc.url, "?"):], tc.async, i, got, tc.want)
			}
			_ = c.Close()
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
	main, err := database.Open(ctx, url, database.Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer database.Close(main)
	var got string
	if err := main.Raw(read).Scan(&got).Error; err != nil {
		t.Fatal(err)
	}
	if got != "off,on,on,on,on,on,force_custom_plan,origin" {
		t.Errorf("the main pool: %s, want off,on,on,on,on,on,force_custom_plan,origin", got)
	}
	if _, err := database.OpenEngine(ctx, "postgres://%zz", database.Options{}, false); err == nil ||
		!strings.Contains(err.Error(), "engine pool: parsing database url") {
		t.Errorf("malformed URL: %v", err)
	}
}
