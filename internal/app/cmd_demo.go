package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/template"
)

// runDemo is `tasker serve` that, once serving, creates one task of every example template
// shipped in the binary, so the playground shows tasks that succeed, retry and fail on a fresh
// machine. The tasks carry fixed idempotency keys: running the demo again on the same database
// creates nothing new. The http example calls a small item service the demo serves on its
// own HTTP server under /demo/ (demoService), so it needs no network.
func runDemo(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger) error {
	svc := &demoService{}
	return serve(ctx, cfg, args, out, log, serveExtras{
		command: "demo",
		about: "Like serve, and once serving create one task of every example template (idempotent): " +
			"tasks that succeed through injected failures and retries, and one that ends blocked by failures.",
		mount: svc.mount,
		afterStart: func(ctx context.Context, db *gorm.DB, reg *template.Registry, httpURL string) error {
			return createDemoTasks(ctx, db, reg, httpURL+demoServicePath, log)
		},
	})
}

// demoTasks are the templates the demo starts, one task each, with their context: six that
// run to complete through their injected failures (the http example through a 503 with
// Retry-After from the demo item service) and one that ends blocked by failures. A test
// checks that every shipped example template is listed.
var demoTasks = []struct {
	namespace, name string
	context         func(itemServiceURL string) json.RawMessage
}{
	{"examples", "linear_workflow", nil},
	{"examples", "diamond_workflow", nil},
	{"examples", "parallel_merge_workflow", nil},
	{"examples", "tree_workflow", nil},
	{"examples", "mixed_workflow", nil},
	{"examples", "http_fetch_and_post", func(itemServiceURL string) json.RawMessage {
		b, _ := json.Marshal(map[string]any{"base_url": itemServiceURL, "item_id": 42})
		return b
	}},
	{"examples", "payment_failures", nil},
}

// createDemoTasks creates the demo tasks; itemServiceURL is the base URL of the demo item
// service (http://host:port/demo).
func createDemoTasks(ctx context.Context, db *gorm.DB, reg *template.Registry, itemServiceURL string, log *slog.Logger) error {
	svc := orchestration.NewService(db, reg)
	for _, d := range demoTasks {
		var taskContext json.RawMessage
		if d.context != nil {
			taskContext = d.context(itemServiceURL)
		}
		task, created, err := svc.CreateTask(ctx, orchestration.CreateTaskRequest{
			Namespace:      d.namespace,
			Name:           d.name,
			Context:        taskContext,
			Initiator:      "demo",
			SourceSystem:   "tasker demo",
			Reason:         "show a real workflow in the playground",
			IdempotencyKey: "demo:" + d.namespace + "/" + d.name,
		})
		if err != nil {
			return fmt.Errorf("creating demo task %s/%s: %w", d.namespace, d.name, err)
		}
		log.Info("demo: task", "template", d.namespace+"/"+d.name, "task_id", task.TaskID, "created", created)
	}
	return nil
}

// demoServicePath is where the demo item service is mounted.
const demoServicePath = "/demo"

// demoService is the item service the http_fetch_and_post example calls in the demo:
// GET /demo/items/{id} returns an item; POST /demo/summaries answers the first summary of each
// item with 503 and Retry-After: 1, then accepts it (201), so the demo shows a retry the
// remote server asked for.
type demoService struct {
	mu     sync.Mutex
	posted map[string]int
}

func (s *demoService) mount(mux *http.ServeMux) {
	mux.HandleFunc("GET "+demoServicePath+"/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil || id < 1 {
			http.Error(w, `{"error": "item id must be a positive integer"}`, http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "name": fmt.Sprintf("item %d", id), "price_cents": 1250 * id})
	})
	mux.HandleFunc("POST "+demoServicePath+"/summaries", func(w http.ResponseWriter, r *http.Request) {
		item := r.Header.Get("X-Item-Id")
		s.mu.Lock()
		if s.posted == nil {
			s.posted = map[string]int{}
		}
		s.posted[item]++
		n := s.posted[item]
		s.mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "summaries are busy, retry in a second"})
			return
		}
		writeJSON(w, http.StatusCreated, map[string]any{"item_id": item, "accepted": true, "attempt": n})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
