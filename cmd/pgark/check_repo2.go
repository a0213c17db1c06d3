package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// checkPrepare points a repository's prometheus-file, when one is set, to a
// file of its own beside it (hidden, not *.prom, so that node_exporter never
// reads it); checkOutputMerged merges them into the prometheus-file.
func checkPrepare(e *cmdEnv, idx int) {
	if f := e.s.str("prometheus-file"); f != "" {
		e.s.vals["prometheus-file"] = repoPromFile(f, idx)
	}
}

func repoPromFile(f string, idx int) string {
	return filepath.Join(filepath.Dir(f), fmt.Sprintf(".%s.repo%d", filepath.Base(f), idx))
}

// checkOutputMerged writes the prometheus-file from the repositories' own
// files, and with --prometheus prints the merged metrics instead of the
// per-repository sections.
func checkOutputMerged(env *cmdEnv, idxs []int, outs []string) (bool, error) {
	if f := env.s.str("prometheus-file"); f != "" {
		parts := make([]string, len(idxs))
		for i, idx := range idxs {
			b, err := os.ReadFile(repoPromFile(f, idx))
			if err == nil {
				parts[i] = string(b)
			}
			os.Remove(repoPromFile(f, idx))
		}
		if err := writePromFile(f, func(w io.Writer) error {
			_, err := io.WriteString(w, mergePrometheus(idxs, parts))
			return err
		}); err != nil {
			return false, err
		}
	}
	if prom, _ := env.s.boolean("prometheus"); prom {
		_, err := io.WriteString(env.stdout, mergePrometheus(idxs, outs))
		return true, err
	}
	return false, nil
}

// mergePrometheus merges the metrics (text format) of each repository into
// one exposition: each family once, with every repository's samples
// labelled repo_index.
func mergePrometheus(idxs []int, outs []string) string {
	type family struct {
		meta    []string
		samples []string
	}
	var order []string
	fams := map[string]*family{}
	get := func(name string) *family {
		f, ok := fams[name]
		if !ok {
			f = &family{}
			fams[name] = f
			order = append(order, name)
		}
		return f
	}
	for i, out := range outs {
		label := fmt.Sprintf(`repo_index="%d"`, idxs[i])
		seen := map[string]bool{}
		for line := range strings.SplitSeq(out, "\n") {
			switch {
			case line == "":
			case strings.HasPrefix(line, "# "):
				f := strings.Fields(line)
				if len(f) < 3 {
					continue
				}
				fam := get(f[2])
				if len(fam.samples) == 0 && !seen[f[2]+f[1]] && len(fam.meta) < 2 {
					fam.meta = append(fam.meta, line)
				}
				seen[f[2]+f[1]] = true
			default:
				name, rest, ok := strings.Cut(line, " ")
				if !ok {
					continue
				}
				base, labels, hasLabels := strings.Cut(name, "{")
				if hasLabels {
					name = base + "{" + label + "," + labels
				} else {
					name = base + "{" + label + "}"
				}
				fam := get(base)
				fam.samples = append(fam.samples, name+" "+rest)
			}
		}
	}
	var b strings.Builder
	for _, name := range order {
		f := fams[name]
		if len(f.samples) == 0 {
			continue
		}
		for _, m := range f.meta {
			b.WriteString(m + "\n")
		}
		for _, s := range f.samples {
			b.WriteString(s + "\n")
		}
	}
	return b.String()
}
