package dump

import (
	"bufio"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Entry is one line of an archive's table of contents, as `pg_restore -l
// -v` prints it: "<id>; <catalog oid> <oid> <desc> <namespace> <tag> <owner>",
// followed in verbose mode by ";	depends on: <id> <id> ..." when it has
// dependencies.
type Entry struct {
	ID   int
	Desc string // TABLE, TABLE DATA, INDEX, FK CONSTRAINT, ... ("" when not recognised)
	Rest string // namespace, tag and owner as printed (names are not quoted: spaces are ambiguous)
	Line string // the line as printed, for a -L list
	Deps []int
}

// Descriptions of TOC entries, longest first (several share a prefix).
var descs = []string{
	"MATERIALIZED VIEW DATA", "PUBLICATION TABLES IN SCHEMA", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
	"TEXT SEARCH TEMPLATE", "TEXT SEARCH PARSER", "FOREIGN DATA WRAPPER", "DATABASE PROPERTIES", "SEQUENCE OWNED BY",
	"MATERIALIZED VIEW", "PUBLICATION TABLE", "SUBSCRIPTION TABLE", "PROCEDURAL LANGUAGE", "STATISTICS DATA",
	"SECURITY LABEL", "CHECK CONSTRAINT", "OPERATOR CLASS", "OPERATOR FAMILY", "EVENT TRIGGER", "FOREIGN TABLE",
	"FK CONSTRAINT", "LARGE OBJECT", "BLOB METADATA", "ACCESS METHOD", "INDEX ATTACH", "TABLE ATTACH", "USER MAPPING",
	"ROW SECURITY", "SEQUENCE SET", "DEFAULT ACL", "SHELL TYPE", "DUMMY TYPE", "TABLE DATA", "CONSTRAINT",
	"SEARCHPATH", "STDSTRINGS", "PUBLICATION", "SUBSCRIPTION", "AGGREGATE", "COLLATION", "CONVERSION", "EXTENSION",
	"PROCEDURE", "STATISTICS", "TRANSFORM", "FUNCTION", "SEQUENCE", "ENCODING", "DATABASE", "OPERATOR", "TRIGGER",
	"COMMENT", "DEFAULT", "DOMAIN", "POLICY", "SCHEMA", "SERVER", "BLOBS", "INDEX", "TABLE", "BLOB", "CAST",
	"RULE", "TYPE", "VIEW", "ACL",
}

// ParseTOC reads `pg_restore -l -v` output.
func ParseTOC(text string) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if deps, ok := strings.CutPrefix(line, ";\tdepends on:"); ok {
			if len(out) == 0 {
				return nil, fmt.Errorf("dependency line before any entry: %q", line)
			}
			for _, f := range strings.Fields(deps) {
				n, err := strconv.Atoi(f)
				if err != nil {
					return nil, fmt.Errorf("bad dependency line %q", line)
				}
				out[len(out)-1].Deps = append(out[len(out)-1].Deps, n)
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		e, err := parseEntry(line)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

func parseEntry(line string) (Entry, error) {
	e := Entry{Line: line}
	idStr, rest, ok := strings.Cut(line, "; ")
	var err error
	if e.ID, err = strconv.Atoi(idStr); !ok || err != nil {
		return e, fmt.Errorf("unexpected table of contents line %q", line)
	}
	f := strings.SplitN(rest, " ", 3) // catalog oid, oid, the rest
	if len(f) != 3 {
		return e, fmt.Errorf("unexpected table of contents line %q", line)
	}
	for _, d := range descs {
		if r, ok := strings.CutPrefix(f[2], d+" "); ok {
			e.Desc, e.Rest = d, r
			return e, nil
		}
	}
	e.Rest = f[2]
	return e, nil
}

// IDs reads the entry IDs of a `pg_restore -l` output (for the entries that
// pg_restore's own -t / -n matching selected).
func IDs(text string) (map[int]bool, error) {
	es, err := ParseTOC(text)
	if err != nil {
		return nil, err
	}
	m := map[int]bool{}
	for _, e := range es {
		m[e.ID] = true
	}
	return m, nil
}

// attached are the kinds of entries that belong to the object they depend
// on: restoring a table brings them along (pg_restore -t alone does not).
var attached = map[string]bool{
	"TABLE DATA": true, "INDEX": true, "CONSTRAINT": true, "CHECK CONSTRAINT": true, "FK CONSTRAINT": true,
	"TRIGGER": true, "POLICY": true, "ROW SECURITY": true, "RULE": true, "DEFAULT": true, "COMMENT": true,
	"ACL": true, "SECURITY LABEL": true, "SEQUENCE": true, "SEQUENCE SET": true, "SEQUENCE OWNED BY": true,
	"INDEX ATTACH": true, "TABLE ATTACH": true, "STATISTICS": true, "STATISTICS DATA": true,
	"MATERIALIZED VIEW DATA": true,
}

// relation are the kinds of entries an FK constraint needs restored with it.
var relation = map[string]bool{
	"TABLE": true, "FOREIGN TABLE": true, "CONSTRAINT": true, "INDEX": true, "MATERIALIZED VIEW": true,
}

// carries says whether selecting dep brings e along: a schema or the
// database brings only its own comment, privileges and labels, not
// everything that lives in it.
func carries(dep *Entry, e *Entry) bool {
	if dep == nil {
		return false
	}
	switch dep.Desc {
	case "SCHEMA", "DATABASE":
		return e.Desc == "COMMENT" || e.Desc == "ACL" || e.Desc == "SECURITY LABEL"
	}
	return true
}

// Selection is what a selective restore brings back.
type Selection struct {
	Entries []Entry // in archive order: the -L list
	Skipped []Entry // FK constraints that reference objects not restored
}

// List renders the selection as a pg_restore -L file.
func (s *Selection) List() string {
	var b strings.Builder
	b.WriteString("; pgark selective restore\n")
	for _, e := range s.Entries {
		b.WriteString(e.Line)
		b.WriteByte('\n')
	}
	return b.String()
}

// SelectOptions tunes SelectEntries.
type SelectOptions struct {
	// NeedSchema says whether a SCHEMA entry must be restored (the target
	// lacks it); nil: never.
	NeedSchema func(Entry) bool
	// Database adds the database's own entries (for pg_restore --create).
	Database bool
	// TriggerFunctions adds the functions that selected triggers call (for
	// a new database: an existing one must have them).
	TriggerFunctions bool
	// InTarget says whether a relation entry names a relation the target
	// database already has (a restore into an existing database): an FK
	// constraint to it comes along, and the server checks the rows; nil:
	// none.
	InTarget func(Entry) bool
}

// SelectEntries builds the list of a selective restore: the seed entries
// (what pg_restore's -t / -n matched) and, repeatedly, every entry of an
// attached kind (data, indexes, constraints, triggers, policies, row
// security, rules, defaults, owned sequences, comments, privileges,
// statistics) that depends on something selected; then the schemas of it
// all that the target lacks. An FK constraint comes along only when every
// table it joins is restored or already in the target; otherwise it is
// reported as skipped.
func SelectEntries(toc []Entry, seeds map[int]bool, o SelectOptions) *Selection {
	byID := map[int]*Entry{}
	for i := range toc {
		byID[toc[i].ID] = &toc[i]
	}
	sel := map[int]bool{}
	for id := range seeds {
		if byID[id] != nil {
			sel[id] = true
		}
	}
	for _, e := range toc {
		switch {
		case e.Desc == "ENCODING", e.Desc == "STDSTRINGS", e.Desc == "SEARCHPATH":
			sel[e.ID] = true
		case o.Database && (e.Desc == "DATABASE" || e.Desc == "DATABASE PROPERTIES"):
			sel[e.ID] = true
		}
	}
	closure := func(kinds map[string]bool) {
		for changed := true; changed; {
			changed = false
			for i := range toc {
				e := &toc[i]
				if sel[e.ID] || !kinds[e.Desc] || e.Desc == "FK CONSTRAINT" {
					continue // FK constraints are decided below, once the rest is known
				}
				if slices.ContainsFunc(e.Deps, func(d int) bool { return sel[d] && carries(byID[d], e) }) {
					sel[e.ID] = true
					changed = true
				}
			}
		}
	}
	closure(attached)
	if o.TriggerFunctions {
		for _, e := range toc {
			if !sel[e.ID] || e.Desc != "TRIGGER" {
				continue
			}
			for _, d := range e.Deps {
				if de := byID[d]; de != nil && (de.Desc == "FUNCTION" || de.Desc == "PROCEDURE") {
					sel[d] = true
				}
			}
		}
		closure(attached)
	}
	out := &Selection{}
	for i := range toc {
		e := &toc[i]
		if e.Desc != "FK CONSTRAINT" || sel[e.ID] {
			continue
		}
		touches := slices.ContainsFunc(e.Deps, func(d int) bool { return sel[d] && relation[byID[d].Desc] })
		all := !slices.ContainsFunc(e.Deps, func(d int) bool {
			return !sel[d] && byID[d] != nil && relation[byID[d].Desc] && (o.InTarget == nil || !o.InTarget(*byID[d]))
		})
		switch {
		case touches && all:
			sel[e.ID] = true
		case touches:
			out.Skipped = append(out.Skipped, *e)
		}
	}
	// The schemas of what is selected, when the target lacks them.
	for _, e := range toc {
		if !sel[e.ID] {
			continue
		}
		for _, d := range e.Deps {
			if de := byID[d]; de != nil && de.Desc == "SCHEMA" && o.NeedSchema != nil && o.NeedSchema(*de) {
				sel[d] = true
			}
		}
	}
	closure(map[string]bool{"COMMENT": true, "ACL": true, "SECURITY LABEL": true})
	for _, e := range toc {
		if sel[e.ID] {
			out.Entries = append(out.Entries, e)
		}
	}
	return out
}

// SchemaEntries returns the SCHEMA entries whose name is one of names
// (the tag, followed by the owner, in Rest "- <name> <owner>").
func SchemaEntries(toc []Entry, names []string) map[int]bool {
	m := map[int]bool{}
	for _, e := range toc {
		if e.Desc != "SCHEMA" {
			continue
		}
		for _, n := range names {
			if strings.HasPrefix(e.Rest, "- "+n+" ") || e.Rest == "- "+n {
				m[e.ID] = true
			}
		}
	}
	return m
}

// SchemaName guesses a SCHEMA entry's name among known names (the target's
// schemas): the longest that fits, since names and owners are not quoted.
func SchemaName(e Entry, known []string) (string, bool) {
	best, ok := "", false
	for _, n := range known {
		if (strings.HasPrefix(e.Rest, "- "+n+" ") || e.Rest == "- "+n) && len(n) >= len(best) {
			best, ok = n, true
		}
	}
	return best, ok
}
