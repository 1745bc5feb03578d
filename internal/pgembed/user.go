package pgembed

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// runAs is the operating-system user that runs initdb and postgres. A nil *runAs means the
// current user.
type runAs struct {
	name string
	uid  uint32
	gid  uint32
	// groups are the supplementary groups.
	groups []uint32
}

func (u *runAs) credential() *syscall.Credential {
	if u == nil {
		return nil
	}
	return &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}
}

func (u *runAs) String() string {
	if u == nil {
		return "the current user"
	}
	return fmt.Sprintf("user %s (uid %d)", u.name, u.uid)
}

// chooseUser decides who runs the cluster in dataDir. A non-root process runs it itself.
// Root runs it as the owner of an existing data directory when that owner is not root, else as
// "postgres", else as "nobody".
func chooseUser(dataDir string) (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if st, err := os.Stat(dataDir); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
			name := strconv.FormatUint(uint64(sys.Uid), 10)
			if u, err := user.LookupId(name); err == nil {
				name = u.Username
			}
			return &runAs{name: name, uid: sys.Uid, gid: sys.Gid}, nil
		}
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		return userFrom(u)
	}
	return nil, errors.New("running as root, and neither a postgres nor a nobody user exists to run " +
		"PostgreSQL (which refuses to run as root): create a postgres user, run as a normal user, " +
		"or set DATABASE_URL")
}

func userFrom(u *user.User) (*runAs, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("reading uid of user %s: %w", u.Username, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("reading gid of user %s: %w", u.Username, err)
	}
	r := &runAs{name: u.Username, uid: uint32(uid), gid: uint32(gid), groups: []uint32{}}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				r.groups = append(r.groups, uint32(g))
			}
		}
	}
	return r, nil
}

// unreachableParent returns the first existing parent directory of dir that u cannot traverse
// (judged by permission bits), or "" when every existing parent is traversable. Parents that do
// not exist yet are created traversable by mkdirParents.
func unreachableParent(dir string, u *runAs) string {
	if u == nil || u.uid == 0 {
		return ""
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil && !canTraverse(st, u) {
			return p
		}
		if p == filepath.Dir(p) {
			return ""
		}
	}
}

func canTraverse(st fs.FileInfo, u *runAs) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := st.Mode().Perm()
	switch {
	case sys.Uid == u.uid:
		return perm&0o100 != 0
	case sys.Gid == u.gid || containsGID(u.groups, sys.Gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

func containsGID(groups []uint32, gid uint32) bool {
	for _, g := range groups {
		if g == gid {
			return true
		}
	}
	return false
}

// mkdirParents creates the missing parents of dir with mode 0755, whatever the umask, so that
// the user running PostgreSQL can traverse them.
func mkdirParents(dir string) error {
	var missing []string
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		missing = append(missing, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating %s: %w", missing[i], err)
		}
		if err := os.Chmod(missing[i], 0o755); err != nil {
			return fmt.Errorf("making %s traversable: %w", missing[i], err)
		}
	}
	return nil
}

// chownTree gives dir and everything in it to u when dir is not already owned by u.
func chownTree(dir string, u *runAs) error {
	if u == nil {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("reading owner of %s: %w", dir, err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid == u.uid && sys.Gid == u.gid {
		return nil
	}
	err = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(u.uid), int(u.gid))
	})
	if err != nil {
		return fmt.Errorf("giving %s to %s: %w", dir, u, err)
	}
	return nil
}

// FallbackDataDir is the cluster directory to use when the server runs as root and the user
// that runs PostgreSQL cannot reach the configured one: /var/lib/tasker/postgres when /var/lib
// is writable, else <temp dir>/tasker-<uid>/postgres.
func FallbackDataDir() string {
	if st, err := os.Stat("/var/lib"); err == nil && st.IsDir() && syscall.Access("/var/lib", 0x2 /* W_OK */) == nil {
		return "/var/lib/tasker/postgres"
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("tasker-%d", os.Geteuid()), "postgres")
}
