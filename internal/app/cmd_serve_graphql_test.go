package app

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// serve mounts the GraphQL API at /query and the playground at /.
func TestServeMountsGraphQL(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	url := dbtest.NewURL(t)
	token := createToken(t, url, auth.Reader)
	s := startServe(t, bin, "-database-url", url, "-data-dir", t.TempDir())
	s.waitHealthy(t)

	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/query", strings.NewReader(`{"query":"{ namespaces { name } }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), `{"data":{"namespaces":[{"name":"default"}`) {
		t.Fatalf("POST /query: %d %s", resp.StatusCode, body)
	}

	resp, err = http.Get("http://" + s.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "GraphiQL") {
		t.Fatalf("GET /: %d, page without GraphiQL", resp.StatusCode)
	}

	if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := s.wait(t); code != 0 {
		t.Fatalf("tasker serve exited %d after SIGINT, want 0", code)
	}
}
