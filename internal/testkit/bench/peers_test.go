package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSplicePeersReplacesOnlyTheBlock(t *testing.T) {
	first, err := SplicePeers("# Benchmarks\n\nrows\n", "## Peers\n\nold")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first, "# Benchmarks\n\nrows\n\n"+PeersBegin+"\n## Peers\n\nold\n"+PeersEnd+"\n") {
		t.Fatalf("appended block:\n%s", first)
	}
	second, err := SplicePeers(first+"tail\n", "## Peers\n\nnew")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Benchmarks\n\nrows\n\n" + PeersBlock("## Peers\n\nnew") + "tail\n"
	if second != want {
		t.Fatalf("replaced block:\n%q\nwant\n%q", second, want)
	}
	if _, err := SplicePeers(PeersBegin+"\nunclosed", "x"); err == nil {
		t.Fatal("an unclosed block was accepted")
	}
}

func TestReplacePeersCreatesAndRewritesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	for _, s := range []string{"one", "two"} {
		if err := ReplacePeers(path, s); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != PeersBlock("two") {
		t.Fatalf("file holds %q", raw)
	}
}
