package dump

import (
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/pgark/pgark/storage"
)

// Replaying `pg_dumpall --globals-only` output as it is would reset the
// roles that exist: its `ALTER ROLE ... WITH ... PASSWORD` lines run even
// when `CREATE ROLE` fails, the bootstrap superuser's included. PlanGlobals
// decides what to run instead.

// GlobalsOptions says how to replay the globals.
type GlobalsOptions struct {
	// Overwrite applies the dumped definitions of existing roles and
	// tablespaces too (their attributes, passwords, settings, comments).
	Overwrite bool
	// NoPasswords leaves the PASSWORD clauses out.
	NoPasswords bool
}

// Existing is what the target cluster has.
type Existing struct {
	Roles       map[string]bool
	Memberships map[[2]string]bool // {role, member}
	Tablespaces map[string]bool
}

// Step is one statement to run; Shown is the same with secrets redacted.
type Step struct {
	SQL   string
	Shown string
}

// GlobalsPlan is what replaying the globals runs, in order.
type GlobalsPlan struct {
	Setup       []Step   // SET statements
	Roles       []Step   // roles, their settings and comments, memberships, parameter grants: one transaction
	Tablespaces []Step   // CREATE TABLESPACE cannot run in a transaction block
	Report      []string // what is done and what is left alone, for the user
}

type globalKind int

const (
	gOther globalKind = iota
	gSetup
	gRoleCreate
	gRole // any other statement about one role
	gMembership
	gParamGrant
	gTablespaceCreate
	gTablespace
)

type globalStmt struct {
	s      stmt
	kind   globalKind
	name   string   // the role or tablespace
	member string   // for memberships
	to     []string // grantees of parameter grants
}

func classify(s stmt) globalStmt {
	g := globalStmt{s: s}
	on := s.find(0, "on")
	switch {
	case s.kw(0, "set"):
		g.kind = gSetup
	case s.kw(0, "create") && s.kw(1, "role"):
		g.kind, g.name = gRoleCreate, mustIdent(s, 2)
	case s.kw(0, "alter") && s.kw(1, "role"):
		g.kind, g.name = gRole, mustIdent(s, 2)
	case s.kw(0, "comment") && s.kw(1, "on") && s.kw(2, "role"):
		g.kind, g.name = gRole, mustIdent(s, 3)
	case s.kw(0, "security") && s.kw(1, "label") && on > 0 && s.kw(on+1, "role"):
		g.kind, g.name = gRole, mustIdent(s, on+2)
	case s.kw(0, "create") && s.kw(1, "tablespace"):
		g.kind, g.name = gTablespaceCreate, mustIdent(s, 2)
	case s.kw(0, "alter") && s.kw(1, "tablespace"):
		g.kind, g.name = gTablespace, mustIdent(s, 2)
	case s.kw(0, "comment") && s.kw(1, "on") && s.kw(2, "tablespace"):
		g.kind, g.name = gTablespace, mustIdent(s, 3)
	case (s.kw(0, "grant") || s.kw(0, "revoke") || s.kw(0, "security")) && on > 0 && s.kw(on+1, "tablespace"):
		g.kind, g.name = gTablespace, mustIdent(s, on+2)
	case s.kw(0, "grant") && on > 0 && s.kw(on+1, "parameter"):
		g.kind = gParamGrant
		if to := s.find(on, "to"); to > 0 {
			for i := to + 1; i < len(s.toks); i++ {
				if s.kw(i, "with") || s.kw(i, "granted") {
					break
				}
				if n, ok := s.ident(i); ok {
					g.to = append(g.to, n)
				}
			}
		}
	case s.kw(0, "grant") && on < 0:
		// GRANT role TO member [WITH ...] [GRANTED BY grantor]
		to := s.find(1, "to")
		if to == 2 {
			g.kind, g.name, g.member = gMembership, mustIdent(s, 1), mustIdent(s, 3)
		}
	}
	if (g.kind == gRole || g.kind == gRoleCreate || g.kind == gTablespace || g.kind == gTablespaceCreate) && g.name == "" ||
		g.kind == gMembership && (g.name == "" || g.member == "") {
		g.kind = gOther
	}
	return g
}

func mustIdent(s stmt, i int) string {
	n, _ := s.ident(i)
	return n
}

// withoutPassword drops "PASSWORD 'x'" (or NULL) from ALTER ROLE, or with
// redact replaces the secret by '<redacted>'.
func withoutPassword(s stmt, redact bool) string {
	text := s.text
	for i := len(s.toks) - 2; i >= 2; i-- {
		if !s.kw(i, "password") || !(s.toks[i+1].kind == tokString || s.kw(i+1, "null")) {
			continue
		}
		if redact {
			text = text[:s.toks[i+1].start] + "'<redacted>'" + text[s.toks[i+1].end:]
			continue
		}
		start, end := s.toks[i].start, s.toks[i+1].end
		for start > 0 && text[start-1] == ' ' {
			start--
		}
		text = text[:start] + text[end:]
	}
	return text
}

// PlanGlobals decides what replaying a globals script runs against a
// cluster that has ex. By default only missing roles (with their
// attributes, settings and comments), missing memberships and missing
// tablespaces are created; existing ones are reported and left alone.
func PlanGlobals(script string, ex Existing, o GlobalsOptions) (*GlobalsPlan, error) {
	sts, err := splitScript(script)
	if err != nil {
		return nil, fmt.Errorf("globals script: %w", err)
	}
	var gs []globalStmt
	for _, s := range sts {
		gs = append(gs, classify(s))
	}
	p := &GlobalsPlan{}
	created := map[string]bool{} // roles this replay creates
	tsCreated := map[string]bool{}
	for _, g := range gs {
		switch g.kind {
		case gRoleCreate:
			if !ex.Roles[g.name] {
				created[g.name] = true
			}
		case gTablespaceCreate:
			if !ex.Tablespaces[g.name] {
				tsCreated[g.name] = true
			}
		}
	}
	step := func(s stmt, role bool) Step {
		if role && (s.kw(0, "alter") || s.kw(0, "create")) {
			st := Step{SQL: s.text, Shown: withoutPassword(s, true)}
			if o.NoPasswords {
				st.SQL = withoutPassword(s, false)
				st.Shown = st.SQL
			}
			return st
		}
		return Step{SQL: s.text, Shown: s.text}
	}
	reported := map[string]bool{}
	report := func(key, line string) {
		if !reported[key] {
			reported[key] = true
			p.Report = append(p.Report, line)
		}
	}
	for _, g := range gs {
		switch g.kind {
		case gSetup:
			p.Setup = append(p.Setup, step(g.s, false))
		case gRoleCreate, gRole:
			switch {
			case created[g.name]:
				report("role "+g.name, fmt.Sprintf("role %s: created", QuoteIdent(g.name)))
				p.Roles = append(p.Roles, step(g.s, true))
			case o.Overwrite:
				report("role "+g.name, fmt.Sprintf("role %s: exists, its dumped definition is applied (--overwrite-roles)", QuoteIdent(g.name)))
				if g.kind == gRole {
					p.Roles = append(p.Roles, step(g.s, true))
				}
			default:
				report("role "+g.name, fmt.Sprintf("role %s: exists, left unchanged (--overwrite-roles applies the dumped definition)", QuoteIdent(g.name)))
			}
		case gMembership:
			desc := fmt.Sprintf("membership of %s in %s", QuoteIdent(g.member), QuoteIdent(g.name))
			if ex.Memberships[[2]string{g.name, g.member}] && !o.Overwrite {
				p.Report = append(p.Report, desc+": exists, left unchanged")
				continue
			}
			p.Report = append(p.Report, desc+": granted")
			p.Roles = append(p.Roles, step(g.s, false))
		case gParamGrant:
			if o.Overwrite || len(g.to) > 0 && !slices.ContainsFunc(g.to, func(n string) bool { return !created[n] }) {
				p.Roles = append(p.Roles, step(g.s, false))
			} else {
				p.Report = append(p.Report, "skipped (a grant to an existing role): "+oneLine(g.s.text))
			}
		case gTablespaceCreate, gTablespace:
			switch {
			case tsCreated[g.name]:
				report("ts "+g.name, fmt.Sprintf("tablespace %s: created", QuoteIdent(g.name)))
				p.Tablespaces = append(p.Tablespaces, step(g.s, false))
			case o.Overwrite:
				report("ts "+g.name, fmt.Sprintf("tablespace %s: exists, its dumped settings and privileges are applied (--overwrite-roles)", QuoteIdent(g.name)))
				if g.kind == gTablespace {
					p.Tablespaces = append(p.Tablespaces, step(g.s, false))
				}
			default:
				report("ts "+g.name, fmt.Sprintf("tablespace %s: exists, left unchanged", QuoteIdent(g.name)))
			}
		default:
			if o.Overwrite {
				p.Roles = append(p.Roles, step(g.s, false))
			} else {
				p.Report = append(p.Report, "skipped (not recognised; --overwrite-roles applies it): "+oneLine(g.s.text))
			}
		}
	}
	return p, nil
}

// oneLine is storage.OneLine cut to at most 120 bytes, at a character
// boundary, for report lines and errors that quote SQL statements.
func oneLine(s string) string {
	s = storage.OneLine(s)
	if len(s) > 120 {
		cut := 120
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}
