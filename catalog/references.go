package catalog

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"
)

// MaxReferences bounds the references list a restore reads.
const MaxReferences = 64 << 20

// FormatReferences writes the paths (relative to PGDATA, as
// backup_manifest names them) of the files a file-level incremental backup
// takes from its parent, one per line, sorted.
func FormatReferences(paths []string) []byte {
	p := append([]string(nil), paths...)
	sort.Strings(p)
	var b strings.Builder
	for _, x := range p {
		b.WriteString(x)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// ParseReferences reads a references list, checking each path is relative,
// clean and listed once.
func ParseReferences(r io.Reader) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(io.LimitReader(r, MaxReferences+1))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		p := sc.Text()
		if p == "" || strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) || seen[p] {
			return nil, fmt.Errorf("references list: bad or repeated path %q", p)
		}
		for _, c := range strings.Split(p, "/") {
			if c == "" || c == "." || c == ".." {
				return nil, fmt.Errorf("references list: bad path %q", p)
			}
		}
		seen[p] = true
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("references list: %w", err)
	}
	return out, nil
}
