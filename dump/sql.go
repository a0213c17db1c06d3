package dump

import (
	"fmt"
	"strings"
)

// A small SQL lexer for the scripts pg_dumpall and pg_restore write:
// enough to split them into statements and to find the names in them,
// never to run SQL that was not in the script.

type tokKind int

const (
	tokWord   tokKind = iota // keyword or unquoted identifier
	tokQIdent                // "quoted identifier"
	tokString                // 'literal', E'literal', $$literal$$
	tokOther                 // numbers, operators, punctuation
	tokSemi                  // ;
	tokMeta                  // a psql meta-command line (\connect, \restrict)
)

type token struct {
	kind       tokKind
	start, end int // byte offsets in the source
}

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isIdentChar(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' || c == '$' }

// lex cuts src into tokens; comments and white space are dropped. A
// backslash at the start of a statement begins a psql meta-command, which
// runs to the end of the line.
func lex(src string) ([]token, error) {
	var out []token
	atStart := true
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			i++
			continue
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			for i < len(src) && src[i] != '\n' {
				i++
			}
			continue
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			j := strings.Index(src[i+2:], "*/")
			if j < 0 {
				return nil, fmt.Errorf("unterminated comment at byte %d", i)
			}
			i += j + 4
			continue
		}
		start := i
		kind := tokOther
		switch {
		case c == '\\' && atStart:
			kind = tokMeta
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == ';':
			kind = tokSemi
			i++
		case c == '\'' || (c == 'E' || c == 'e') && i+1 < len(src) && src[i+1] == '\'':
			kind = tokString
			escapes := c != '\''
			if escapes {
				i++
			}
			i++
			for {
				if i >= len(src) {
					return nil, fmt.Errorf("unterminated string at byte %d", start)
				}
				if escapes && src[i] == '\\' {
					i += 2
					continue
				}
				if src[i] == '\'' {
					if i+1 < len(src) && src[i+1] == '\'' {
						i += 2
						continue
					}
					i++
					break
				}
				i++
			}
		case c == '"':
			kind = tokQIdent
			i++
			for {
				if i >= len(src) {
					return nil, fmt.Errorf("unterminated quoted identifier at byte %d", start)
				}
				if src[i] == '"' {
					if i+1 < len(src) && src[i+1] == '"' {
						i += 2
						continue
					}
					i++
					break
				}
				i++
			}
		case c == '$':
			j := i + 1
			for j < len(src) && src[j] != '$' && isIdentChar(src[j]) {
				j++
			}
			if j < len(src) && src[j] == '$' {
				tag := src[i : j+1]
				k := strings.Index(src[j+1:], tag)
				if k < 0 {
					return nil, fmt.Errorf("unterminated dollar-quoted string at byte %d", start)
				}
				kind = tokString
				i = j + 1 + k + len(tag)
			} else {
				i++
			}
		case isIdentStart(c):
			kind = tokWord
			for i < len(src) && isIdentChar(src[i]) {
				i++
			}
		default:
			i++
		}
		out = append(out, token{kind: kind, start: start, end: i})
		atStart = kind == tokSemi || kind == tokMeta
	}
	return out, nil
}

// stmt is one statement of a script, without its semicolon.
type stmt struct {
	text string
	toks []token // offsets relative to text
}

// splitScript cuts a script into statements, dropping comments and psql
// meta-commands.
func splitScript(src string) ([]stmt, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	var out []stmt
	var cur []token
	flush := func() {
		if len(cur) == 0 {
			return
		}
		base := cur[0].start
		s := stmt{text: src[base:cur[len(cur)-1].end]}
		for _, t := range cur {
			s.toks = append(s.toks, token{t.kind, t.start - base, t.end - base})
		}
		out = append(out, s)
		cur = nil
	}
	for _, t := range toks {
		switch t.kind {
		case tokMeta:
			flush()
		case tokSemi:
			flush()
		default:
			cur = append(cur, t)
		}
	}
	if len(cur) > 0 {
		return nil, fmt.Errorf("script ends inside a statement: %.60q", src[cur[0].start:])
	}
	return out, nil
}

func (s stmt) tok(i int) string {
	if i < 0 || i >= len(s.toks) {
		return ""
	}
	return s.text[s.toks[i].start:s.toks[i].end]
}

// kw reports whether token i is the keyword k (case-insensitive).
func (s stmt) kw(i int, k string) bool {
	return i < len(s.toks) && s.toks[i].kind == tokWord && strings.EqualFold(s.tok(i), k)
}

// ident returns token i as an identifier (folded to lower case when
// unquoted, as PostgreSQL does), or false.
func (s stmt) ident(i int) (string, bool) {
	if i >= len(s.toks) {
		return "", false
	}
	switch s.toks[i].kind {
	case tokWord:
		return strings.ToLower(s.tok(i)), true
	case tokQIdent:
		t := s.tok(i)
		return strings.ReplaceAll(t[1:len(t)-1], `""`, `"`), true
	}
	return "", false
}

// find returns the index of the first keyword k at or after i, or -1.
func (s stmt) find(i int, k string) int {
	for ; i < len(s.toks); i++ {
		if s.kw(i, k) {
			return i
		}
	}
	return -1
}

// QuoteIdent quotes a name as an SQL identifier.
func QuoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// QuoteLiteral quotes a string as an SQL literal (standard_conforming_strings).
func QuoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }

// renameDatabase replaces the identifier after every DATABASE keyword that
// names from with the quoted to. String literals (comments) never match.
func renameDatabase(s stmt, from, to string) string {
	text := s.text
	for i := len(s.toks) - 2; i >= 0; i-- {
		if !s.kw(i, "database") {
			continue
		}
		if n, ok := s.ident(i + 1); ok && n == from {
			t := s.toks[i+1]
			text = text[:t.start] + QuoteIdent(to) + text[t.end:]
		}
	}
	return text
}

// DatabaseScript is the SQL that pg_restore --create writes for a
// database's own entries (DATABASE, DATABASE PROPERTIES, its comment,
// privileges and security labels), renamed for another database.
type DatabaseScript struct {
	Setup  []string // SET ... and set_config: run first on each connection
	Create string   // CREATE DATABASE with the original encoding and locale
	Props  []string // owner, ALTER DATABASE ... SET, comment, GRANTs, labels
}

// ParseDatabaseScript splits the script and renames database from to to.
func ParseDatabaseScript(script, from, to string) (*DatabaseScript, error) {
	sts, err := splitScript(script)
	if err != nil {
		return nil, err
	}
	ds := &DatabaseScript{}
	for _, s := range sts {
		switch {
		case s.kw(0, "set"), s.kw(0, "select") && strings.Contains(s.text, "set_config"):
			ds.Setup = append(ds.Setup, s.text)
		case s.kw(0, "create") && s.kw(1, "database"):
			if ds.Create != "" {
				return nil, fmt.Errorf("two CREATE DATABASE statements")
			}
			ds.Create = renameDatabase(s, from, to)
		default:
			ds.Props = append(ds.Props, renameDatabase(s, from, to))
		}
	}
	if ds.Create == "" {
		return nil, fmt.Errorf("no CREATE DATABASE statement in the archive's database entry")
	}
	return ds, nil
}
