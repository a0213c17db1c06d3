package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReferenceUpToDate: docs/reference is what `make docs` makes from the
// command list, the option table and the exit code table.
func TestReferenceUpToDate(t *testing.T) {
	dir := filepath.Join("..", "..", "docs", "reference")
	for name, want := range markdownReference() {
		path := filepath.Join(dir, name)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("docs/reference/%s: %v (run make docs)", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("docs/reference/%s differs from the definitions in cmd/pgark: run make docs", name)
		}
	}
}

// TestReferenceContent: the reference names every command, option and exit
// code, and carries no date.
func TestReferenceContent(t *testing.T) {
	ref := markdownReference()
	cmds, conf, exits := string(ref["commands.md"]), string(ref["configuration.md"]), string(ref["exit-codes.md"])
	for _, c := range commandList() {
		if !strings.Contains(cmds, "## pgark "+c.name+"\n") {
			t.Errorf("commands.md lacks %s", c.name)
		}
	}
	for _, o := range options {
		if !strings.Contains(conf, "| `--"+o.name+"` | `"+envName(o.name)+"` |") {
			t.Errorf("configuration.md lacks %s", o.name)
		}
	}
	for _, e := range exitCodes {
		if !strings.Contains(exits, e.text) {
			t.Errorf("exit-codes.md lacks %d: %s", e.code, e.text)
		}
	}
	if !bytes.Equal(markdownReference()["commands.md"], ref["commands.md"]) {
		t.Error("the reference is not deterministic")
	}
	for name, b := range ref {
		if bytes.Contains(b, []byte("Auto generated")) || bytes.Contains(b, []byte(version)) && version != "dev" {
			t.Errorf("%s carries a generation stamp", name)
		}
	}
	pages := manPages()
	for _, c := range commandList() {
		p := "pgark-" + strings.ReplaceAll(c.name, " ", "-") + ".1"
		if !bytes.Contains(pages[p], []byte(".SH EXIT STATUS")) {
			t.Errorf("man page %s missing or without exit status", p)
		}
	}
}
