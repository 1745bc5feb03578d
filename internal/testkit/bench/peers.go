package bench

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// The Peers section of BENCHMARKS.md (tasker measured against PostGraphile by `make
// bench-peers`) stands between these markers. It comes from another run than the rest of the
// file, so cmd/peers replaces only what is between them, and cmd/benchreport writes the last
// Peers section (internal/testkit/bench/peers.md) back between them when it rewrites the file.
const (
	PeersBegin = "<!-- peers: written by make bench-peers; make bench keeps it -->"
	PeersEnd   = "<!-- /peers -->"
)

// PeersBlock returns section between the Peers markers.
func PeersBlock(section string) string {
	return PeersBegin + "\n" + strings.TrimSpace(section) + "\n" + PeersEnd + "\n"
}

// SplicePeers returns doc with its Peers block replaced by section, or with the block
// appended when doc has none. Text outside the block is kept as it is.
func SplicePeers(doc, section string) (string, error) {
	block := PeersBlock(section)
	i := strings.Index(doc, PeersBegin)
	if i < 0 {
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		if doc != "" {
			doc += "\n"
		}
		return doc + block, nil
	}
	j := strings.Index(doc[i:], PeersEnd)
	if j < 0 {
		return "", fmt.Errorf("the Peers block opened by %q is not closed by %q", PeersBegin, PeersEnd)
	}
	end := i + j + len(PeersEnd)
	if end < len(doc) && doc[end] == '\n' {
		end++
	}
	return doc[:i] + block + doc[end:], nil
}

// ReplacePeers writes section as the Peers block of the file at path (created when missing).
func ReplacePeers(path, section string) error {
	raw, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	doc, err := SplicePeers(string(raw), section)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
