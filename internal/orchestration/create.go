package orchestration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/template"
)

// Invalid returns the errs.Invalid error for a request field ("context", "tags", ...) and
// what is wrong with it: "invalid field: problem; problem".
func Invalid(field string, problems ...string) *errs.Error {
	return &errs.Error{Kind: errs.Invalid, Field: field,
		Message: fmt.Sprintf("invalid %s: %s", field, strings.Join(problems, "; "))}
}

// CreateTaskRequest asks for one task of a template.
type CreateTaskRequest struct {
	// Namespace (default "default"), Name and Version (empty: the newest) select the template.
	Namespace string
	Name      string
	Version   string
	// Context is the task input, a JSON object checked against the template's context schema
	// (empty: {}).
	Context json.RawMessage
	// Initiator, SourceSystem (at most 128 characters) and Reason (255) describe who asked and why.
	Initiator    string
	SourceSystem string
	Reason       string
	// Tags is a JSON object or array stored with the task (empty: {}).
	Tags json.RawMessage
	// IdempotencyKey, when set, de-duplicates creation: a second request with the same key
	// returns the task created by the first.
	IdempotencyKey string
}

// IdentityHash is the identity_hash of a task created with idempotency key key: a fixed-length
// digest, so any key fits the column.
func IdentityHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "key:" + hex.EncodeToString(sum[:])
}

func randomIdentity() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating identity: %w", err)
	}
	return "rnd:" + hex.EncodeToString(b[:]), nil
}

// CreateTask creates a task of a registered template with all its steps and edges, in one
// transaction, or writes nothing. Steps take the template's retry defaults and are created,
// like the task, without a transition row (state pending), with their DAG depth computed from
// the template. It is CreateTasks with a batch of one: the number of statements does not
// depend on the template's size. The template is registered in the template tables first when
// it is not yet.
//
// With an IdempotencyKey whose task already exists, CreateTask returns that task and
// created=false; concurrent requests with one key create one task. An unknown template is an
// errs.NotFound; a bad request (context refused by the schema, malformed tags) is an
// errs.Invalid that lists what was wrong (see Invalid), and a key already used for another
// template an errs.Conflict.
func (s *Service) CreateTask(ctx context.Context, req CreateTaskRequest) (task models.Task, created bool, err error) {
	res, err := s.CreateTasks(ctx, []CreateTaskRequest{req})
	if err != nil {
		return task, false, err
	}
	if len(res.Errors) > 0 {
		if err := res.Errors[0].Err; errs.Is(err, errs.NotFound) {
			return task, false, errs.E(errs.NotFound, "creating task: %w", err)
		}
		return task, false, res.Errors[0].Err
	}
	if task, err = s.store.Task(ctx, res.Tasks[0].TaskID); err != nil {
		return models.Task{}, false, fmt.Errorf("reading task %d: %w", res.Tasks[0].TaskID, err)
	}
	return task, res.Tasks[0].Created, nil
}

// checkRequest validates the request against the template and returns the context and tags as
// compact JSON.
func checkRequest(tpl *template.Template, req CreateTaskRequest) (taskContext, tags json.RawMessage, err error) {
	taskContext = req.Context
	if len(bytes.TrimSpace(taskContext)) == 0 {
		taskContext = json.RawMessage(`{}`)
	}
	if err := tpl.ValidateContext(taskContext); err != nil {
		var ce *template.ContextError
		if errors.As(err, &ce) {
			return nil, nil, Invalid("context", ce.Problems...)
		}
		return nil, nil, Invalid("context", err.Error())
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, taskContext); err != nil {
		return nil, nil, Invalid("context", err.Error())
	}
	taskContext = buf.Bytes()

	tags = req.Tags
	if len(bytes.TrimSpace(tags)) == 0 {
		tags = json.RawMessage(`{}`)
	}
	var tagValue any
	if err := json.Unmarshal(tags, &tagValue); err != nil {
		return nil, nil, Invalid("tags", "not valid JSON: "+err.Error())
	}
	switch tagValue.(type) {
	case map[string]any, []any:
	default:
		return nil, nil, Invalid("tags", "must be a JSON object or array")
	}
	var problems []string
	field := ""
	for _, f := range []struct {
		name, value string
		max         int
	}{{"initiator", req.Initiator, 128}, {"source_system", req.SourceSystem, 128}, {"reason", req.Reason, 255}} {
		if n := len([]rune(f.value)); n > f.max {
			problems = append(problems, fmt.Sprintf("%s is %d characters long, at most %d allowed", f.name, n, f.max))
			if field == "" {
				field = f.name
			}
		}
	}
	if len(problems) > 0 {
		// The error names the first field at fault and lists every problem.
		return nil, nil, Invalid(field, problems...)
	}
	return taskContext, tags, nil
}

// keyReused is the error of a key that already created a task of another template.
func keyReused(key string, taskID int64, tpl *template.Template) error {
	return keyConflict("key %q already created task %d, of another template than %s", key, taskID, tpl.Key())
}

// keyConflict is an errs.Conflict on field idempotency_key: a key used for two templates.
func keyConflict(format string, args ...any) error {
	e := Invalid("idempotency_key", fmt.Sprintf(format, args...))
	e.Kind = errs.Conflict
	return e
}
