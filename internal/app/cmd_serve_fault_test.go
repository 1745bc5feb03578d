package app

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// napsYAML runs three 3-second steps at once, then one more after them.
const napsYAML = `
namespace: faults
name: naps
version: 1.0.0
steps:
  - name: nap_one
    handler: {kind: sleep, config: {duration: 3s}}
  - name: nap_two
    handler: {kind: sleep, config: {duration: 3s}}
  - name: nap_three
    handler: {kind: sleep, config: {duration: 3s}}
  - name: after
    depends_on: [nap_one, nap_two, nap_three]
    handler: {kind: sleep, config: {duration: 3s}}
`

// TestServeDrainsRunningStepsOnSIGTERM sends SIGTERM to `tasker serve` while steps run: the
// running steps must finish and be recorded complete (not cut short and released), and the
// process must exit 0 within its shutdown deadline.
func TestServeDrainsRunningStepsOnSIGTERM(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	url := dbtest.NewURL(t)
	tplDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(tplDir, "naps.yaml"), []byte(napsYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServeWithEnv(t, bin, "DATABASE_URL="+url, "TASKER_AUTH=off", "TASKER_TEMPLATES_DIR="+tplDir,
		"TASKER_SHUTDOWN_TIMEOUT=20s", "TASKER_WORKERS=4")
	s.waitHealthy(t)

	body, _ := json.Marshal(map[string]any{
		"query": `mutation { createTask(input: {namespace: "faults", name: "naps"}) { id } }`,
	})
	resp, err := http.Post("http://"+s.addr+"/query", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var created struct {
		Data struct {
			CreateTask struct{ ID string } `json:"createTask"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &created); err != nil || created.Data.CreateTask.ID == "" {
		t.Fatalf("createTask answered %s (%v)", raw, err)
	}
	taskID := created.Data.CreateTask.ID

	db := dbtest.Open(t, url)
	states := func() map[string]string {
		var rows []struct{ Name, State string }
		if err := db.Raw(`SELECT ns.name, coalesce(tr.to_state, 'pending') AS state
			FROM tasker_workflow_steps s JOIN tasker_named_steps ns USING (named_step_id)
			LEFT JOIN tasker_workflow_step_transitions tr ON tr.workflow_step_id = s.workflow_step_id AND tr.most_recent
			WHERE s.task_id = ?`, taskID).Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, r := range rows {
			out[r.Name] = r.State
		}
		return out
	}
	naps := []string{"nap_one", "nap_two", "nap_three"}
	if !wait.Eventually(20*time.Second, func() bool {
		st := states()
		for _, n := range naps {
			if st[n] != "in_progress" {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the three naps did not all run at once within 20s: %v", states())
	}

	s.stop(t, syscall.SIGTERM)
	st := states()
	for _, n := range naps {
		if st[n] != "complete" {
			t.Errorf("step %s running at SIGTERM ended %s, want complete", n, st[n])
		}
	}
	if st["after"] != "pending" && st["after"] != "complete" {
		t.Errorf("step after ended %s: a step started before the shutdown must be drained", st["after"])
	}
	var attempts []int
	if err := db.Raw(`SELECT coalesce(attempts, 0) FROM tasker_workflow_steps WHERE task_id = ?`, taskID).
		Scan(&attempts).Error; err != nil {
		t.Fatal(err)
	}
	for _, a := range attempts {
		if a > 1 {
			t.Errorf("a step needed %d attempts; the shutdown must not cut one short (attempts %v)", a, attempts)
		}
	}
	logs := s.log.String()
	if !drainedRE.MatchString(logs) {
		t.Errorf("the engine did not report a full drain:\n%s", logs)
	}
	if !strings.Contains(logs, `msg="serve: shutdown complete"`) || !strings.Contains(logs, "failures=0") {
		t.Errorf("the shutdown did not complete without failures:\n%s", logs)
	}
}

var drainedRE = regexp.MustCompile(`msg="orchestration: engine stopped" .*\bdrained=true`)
