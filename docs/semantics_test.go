// Package docs holds the project's own documents; its test keeps the contract's citations
// true.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// citation matches a reference to a section of SEMANTICS.md: §3, §3.4, or a range §3-6.
var citation = regexp.MustCompile(`§\s*(\d+)(?:\.(\d+))?(?:\s*[-–]\s*(\d+))?`)

// anchors returns the sections ("3") and numbered rules ("3.4") of SEMANTICS.md.
func anchors(t *testing.T) map[string]bool {
	t.Helper()
	body, err := os.ReadFile("SEMANTICS.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	section := regexp.MustCompile(`^## (\d+)\. `)
	rule := regexp.MustCompile(`^(\d+)\.(\d+) `)
	for _, line := range strings.Split(string(body), "\n") {
		if m := section.FindStringSubmatch(line); m != nil {
			out[m[1]] = true
		}
		if m := rule.FindStringSubmatch(line); m != nil {
			out[m[1]+"."+m[2]] = true
		}
	}
	return out
}

// TestCitationsOfSemanticsExist checks that every section of docs/SEMANTICS.md that the code,
// the schema, the SQL or the templates cite (§N, §N.M, §N-M) exists.
func TestCitationsOfSemanticsExist(t *testing.T) {
	have := anchors(t)
	if len(have) < 8 {
		t.Fatalf("SEMANTICS.md has %d sections and rules, want at least its 8 sections", len(have))
	}
	cited := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "generated", "playground", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".graphqls", ".sql", ".yaml", ".yml", ".md", ".js", ".html":
		default:
			return nil
		}
		if filepath.Base(path) == "SEMANTICS.md" {
			return nil
		}
		body, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(body), "\n") {
			for _, m := range citation.FindAllStringSubmatch(line, -1) {
				cited++
				var want []string
				switch {
				case m[2] != "":
					want = []string{m[1] + "." + m[2]}
				case m[3] != "":
					from, _ := strconv.Atoi(m[1])
					to, _ := strconv.Atoi(m[3])
					for n := from; n <= to; n++ {
						want = append(want, strconv.Itoa(n))
					}
				default:
					want = []string{m[1]}
				}
				for _, w := range want {
					if !have[w] {
						t.Errorf("%s:%d cites §%s, which SEMANTICS.md does not have", path, i+1, w)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cited == 0 {
		t.Fatal("found no citation of SEMANTICS.md")
	}
	t.Logf("%d citations checked", cited)
}
