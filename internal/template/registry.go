package template

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/Masterminds/semver/v3"
	"github.com/agnivade/levenshtein"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/templates"
)

// Registry holds loaded templates, by (namespace, name, version). It is safe for concurrent use.
type Registry struct {
	handlers *handler.Registry

	mu    sync.RWMutex
	byKey map[string]*Template
}

// NewRegistry returns an empty registry whose templates are checked against handlers.
func NewRegistry(handlers *handler.Registry) *Registry {
	return &Registry{handlers: handlers, byKey: map[string]*Template{}}
}

// Handlers returns the handler registry templates are checked against.
func (r *Registry) Handlers() *handler.Registry { return r.handlers }

func key(namespace, name, version string) string { return namespace + "/" + name + "@" + version }

// Add puts a template in the registry. Adding the same version twice is refused unless both
// definitions are identical (same hash), in which case it is a no-op.
func (r *Registry) Add(t *Template) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := t.Key()
	if old, ok := r.byKey[k]; ok {
		if old.Hash == t.Hash {
			return nil
		}
		return &Error{File: t.File, Msg: fmt.Sprintf("%s is also defined, differently, in %s", k, old.File)}
	}
	r.byKey[k] = t
	return nil
}

// LoadDir loads every *.yaml and *.yml file of dir (not recursive). See LoadFS.
func (r *Registry) LoadDir(dir string) error {
	info, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("reading templates directory: %w", err)
	}
	if !info.IsDir() {
		return fmt.Errorf("reading templates directory: %s is not a directory", dir)
	}
	return r.loadFS(os.DirFS(dir), ".", dir)
}

// LoadFS loads every *.yaml and *.yml file of dir in fsys (not recursive). Every file is read
// and checked; when any is refused, the returned error joins all refusals and none of the
// files is added.
func (r *Registry) LoadFS(fsys fs.FS, dir string) error { return r.loadFS(fsys, dir, dir) }

func (r *Registry) loadFS(fsys fs.FS, dir, label string) error {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return fmt.Errorf("reading templates directory %s: %w", label, err)
	}
	var loaded []*Template
	var failures []error
	for _, e := range entries {
		ext := strings.ToLower(path.Ext(e.Name()))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		data, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		file := path.Join(label, e.Name())
		if err != nil {
			failures = append(failures, fmt.Errorf("reading template %s: %w", file, err))
			continue
		}
		t, err := Parse(file, data, r.handlers)
		if err != nil {
			failures = append(failures, err)
			continue
		}
		loaded = append(loaded, t)
	}
	if len(failures) > 0 {
		return errors.Join(failures...)
	}
	staged := NewRegistry(r.handlers)
	r.mu.RLock()
	for k, t := range r.byKey {
		staged.byKey[k] = t
	}
	r.mu.RUnlock()
	for _, t := range loaded {
		if err := staged.Add(t); err != nil {
			failures = append(failures, err)
		}
	}
	if len(failures) > 0 {
		return errors.Join(failures...)
	}
	for _, t := range loaded {
		if err := r.Add(t); err != nil {
			return err
		}
	}
	return nil
}

// Lookup returns the template namespace/name@version; an empty version means the newest
// release by semver precedence (a pre-release such as 2.0.0-rc.1 is chosen only when there is
// no release). A template the registry does not hold is an errs.NotFound error that
// says what exists: the versions of namespace/name when it has some, else the registered
// templates (the closest names to the one asked for, when there are many).
func (r *Registry) Lookup(namespace, name, version string) (*Template, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if version != "" {
		if t, ok := r.byKey[key(namespace, name, version)]; ok {
			return t, nil
		}
		return nil, errs.E(errs.NotFound, "task template not found: %s; %s", key(namespace, name, version), r.known(namespace, name))
	}
	var best *Template
	var bestV *semver.Version
	for _, t := range r.byKey {
		if t.Namespace != namespace || t.Name != name {
			continue
		}
		v := semver.MustParse(t.Version) // validated by Parse
		if best == nil || newer(v, bestV) {
			best, bestV = t, v
		}
	}
	if best == nil {
		return nil, errs.E(errs.NotFound, "task template not found: %s/%s (any version); %s", namespace, name, r.known(namespace, name))
	}
	return best, nil
}

// maxListed is how many template names a not-found error lists at most.
const maxListed = 10

// known says which templates exist, for the error of a lookup of namespace/name: its versions
// when there are some; else every template name, or the maxListed names closest to
// namespace/name (edit distance) when there are more. The caller holds r.mu.
func (r *Registry) known(namespace, name string) string {
	want := namespace + "/" + name
	var versions []string
	names := map[string]bool{}
	for _, t := range r.byKey {
		ref := t.Namespace + "/" + t.Name
		names[ref] = true
		if ref == want {
			versions = append(versions, t.Version)
		}
	}
	if len(versions) > 0 {
		sort.Slice(versions, func(i, j int) bool { return semver.MustParse(versions[i]).LessThan(semver.MustParse(versions[j])) })
		return "its versions are " + strings.Join(versions, ", ")
	}
	if len(names) == 0 {
		return "no templates are loaded"
	}
	refs := make([]string, 0, len(names))
	for ref := range names {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	if len(refs) <= maxListed {
		return "the templates are " + strings.Join(refs, ", ")
	}
	dist := make(map[string]int, len(refs))
	for _, ref := range refs {
		dist[ref] = levenshtein.ComputeDistance(want, ref)
	}
	sort.SliceStable(refs, func(i, j int) bool { return dist[refs[i]] < dist[refs[j]] })
	return fmt.Sprintf("the closest of the %d templates are %s", len(refs), strings.Join(refs[:maxListed], ", "))
}

// ParseRef splits "namespace/name[@version]" (or "name[@version]" in the default namespace).
func ParseRef(ref string) (namespace, name, version string, err error) {
	rest := ref
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest, version = rest[:i], rest[i+1:]
		if version == "" {
			return "", "", "", fmt.Errorf("template reference %q: empty version after @", ref)
		}
	}
	namespace, name = "default", rest
	if i := strings.Index(rest, "/"); i >= 0 {
		namespace, name = rest[:i], rest[i+1:]
	}
	if namespace == "" || name == "" || strings.Contains(name, "/") {
		return "", "", "", fmt.Errorf("template reference %q: want namespace/name[@version]", ref)
	}
	return namespace, name, version, nil
}

// Templates lists every template, ordered by namespace, name and version precedence.
func (r *Registry) Templates() []*Template {
	r.mu.RLock()
	out := make([]*Template, 0, len(r.byKey))
	for _, t := range r.byKey {
		out = append(out, t)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return semver.MustParse(a.Version).LessThan(semver.MustParse(b.Version))
	})
	return out
}

// newer orders versions for Lookup: any release beats any pre-release, then semver precedence.
func newer(a, b *semver.Version) bool {
	aPre, bPre := a.Prerelease() != "", b.Prerelease() != ""
	if aPre != bPre {
		return bPre
	}
	return a.GreaterThan(b)
}

// Shipped returns a registry of the example templates shipped in the binary (package
// templates), with handlers checked against the given handler kinds.
func Shipped(handlers *handler.Registry) (*Registry, error) {
	reg := NewRegistry(handlers)
	if err := reg.LoadFS(templates.FS, "."); err != nil {
		return nil, fmt.Errorf("loading the shipped templates: %w", err)
	}
	return reg, nil
}
