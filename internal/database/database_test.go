package database_test

import (
	"context"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/dbtest"
)

func TestOpenTurnsJITOffUnlessTheURLSetsIt(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	for _, tc := range []struct{ url, want string }{
		{url, "off"},
		{url + "&jit=on", "on"},
	} {
		gdb, err := database.Open(context.Background(), tc.url, database.Options{MaxOpenConns: 1})
		if err != nil {
			t.Fatal(err)
		}
		var jit string
		if err := gdb.Raw("SHOW jit").Scan(&jit).Error; err != nil {
			t.Fatal(err)
		}
		if err := database.Close(gdb); err != nil {
			t.Fatal(err)
		}
		if jit != tc.want {
			t.Errorf("%s: jit = %s, want %s", tc.url[strings.Index(tc.url, "?"):], jit, tc.want)
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
