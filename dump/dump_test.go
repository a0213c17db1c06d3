package dump

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestEscapeName(t *testing.T) {
	for in, want := range map[string]string{
		"app":          "app",
		"My-DB_2":      "My-DB_2",
		"a/b":          "a%2Fb",
		"..":           "%2E%2E",
		"x y%":         "x%20y%25",
		"globals":      "globals",
		"dé":           "d%C3%A9",
		"a.dump.pgark": "a%2Edump%2Epgark",
	} {
		got := EscapeName(in)
		if got != want {
			t.Errorf("EscapeName(%q) = %q, want %q", in, got, want)
		}
		back, err := UnescapeName(got)
		if err != nil || back != in {
			t.Errorf("UnescapeName(%q) = %q, %v", got, back, err)
		}
		if strings.ContainsAny(got, "/. ") {
			t.Errorf("EscapeName(%q) = %q keeps a separator", in, got)
		}
	}
	if DatabaseKey("20260101T000000Z", "globals") == GlobalsKey("20260101T000000Z") {
		t.Error("a database named globals collides with the globals object")
	}
	if _, err := UnescapeName("a%2"); err == nil {
		t.Error("UnescapeName accepted a cut escape")
	}
}

func TestToolVersion(t *testing.T) {
	for in, want := range map[string]struct {
		v string
		m int
	}{
		"pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n": {"15.18", 15},
		"pg_dump (PostgreSQL) 18.1\n":                           {"18.1", 18},
		"pg_restore (PostgreSQL) 17beta2\n":                     {"17", 17},
	} {
		v, m, err := ParseToolVersion(in)
		if err != nil || v != want.v || m != want.m {
			t.Errorf("ParseToolVersion(%q) = %q, %d, %v", in, v, m, err)
		}
	}
	if _, _, err := ParseToolVersion("something else"); err == nil {
		t.Error("accepted garbage")
	}
	old := Tool{Name: "pg_dump", Path: "/usr/bin/pg_dump", Version: "15.18", Major: 15}
	err := CheckClient(old, 180001, "18.1")
	if err == nil || !strings.Contains(err.Error(), "15.18") || !strings.Contains(err.Error(), "18.1") {
		t.Errorf("CheckClient(15 vs 18) = %v; want a refusal naming both versions", err)
	}
	if err := CheckClient(old, 150018, "15.18"); err != nil {
		t.Error(err)
	}
	if err := CheckClient(old, 130020, "13.20"); err != nil {
		t.Error(err)
	}
}

func TestConnString(t *testing.T) {
	for _, c := range []struct{ dsn, db, want string }{
		{"", "app", "dbname='app'"},
		{"host=h user=u dbname=other", "o'ne", `host=h user=u dbname=other dbname='o\'ne'`},
		{"postgres://u:p@h:5/other?sslmode=disable", "a b", "postgres://u:p@h:5/a%20b?sslmode=disable"},
		{"postgresql://h1:5,h2:6", "x", "postgresql://h1:5,h2:6/x"},
		{"postgresql:///?host=/tmp&dbname=y&port=5", "x/y", "postgresql:///x%2Fy?host=/tmp&port=5"},
	} {
		got, err := ConnString(c.dsn, c.db)
		if err != nil || got != c.want {
			t.Errorf("ConnString(%q, %q) = %q, %v; want %q", c.dsn, c.db, got, err, c.want)
		}
	}
}

func TestSplitQualified(t *testing.T) {
	for in, want := range map[string][2]string{
		"t":              {"", "t"},
		"s.t":            {"s", "t"},
		`"a.b"."c""d"`:   {"a.b", `c"d`},
		`s."Mixed.Case"`: {"s", "Mixed.Case"},
	} {
		s, n := SplitQualified(in)
		if s != want[0] || n != want[1] {
			t.Errorf("SplitQualified(%q) = %q, %q", in, s, n)
		}
	}
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The archive of testdata/toc_pg15.txt (pg_restore -l -v of a PostgreSQL
// 15 dump): schema s with table s.p (serial id), table public.c (identity
// id, FK to s.p, an index, a trigger calling f(), row security, a policy,
// a comment, a grant), and a view vw on c.
func tocTestdata(t *testing.T) []Entry {
	toc, err := ParseTOC(readTestdata(t, "toc_pg15.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return toc
}

func ids(es []Entry) []int {
	var out []int
	for _, e := range es {
		out = append(out, e.ID)
	}
	slices.Sort(out)
	return out
}

func TestParseTOC(t *testing.T) {
	toc := tocTestdata(t)
	if len(toc) != 29 {
		t.Fatalf("%d entries, want 29", len(toc))
	}
	byID := map[int]Entry{}
	for _, e := range toc {
		byID[e.ID] = e
	}
	for id, want := range map[int]string{3214: "FK CONSTRAINT", 3376: "SEQUENCE OWNED BY", 3373: "DATABASE PROPERTIES",
		3364: "TABLE DATA", 218: "TABLE", 3359: "ROW SECURITY", 3371: "COMMENT", 6: "SCHEMA"} {
		if byID[id].Desc != want {
			t.Errorf("entry %d: desc %q, want %q", id, byID[id].Desc, want)
		}
	}
	if !slices.Equal(byID[3214].Deps, []int{3210, 218, 216}) {
		t.Errorf("FK deps %v", byID[3214].Deps)
	}
	if byID[6].Rest != "- s postgres" {
		t.Errorf("schema rest %q", byID[6].Rest)
	}
	if _, err := ParseTOC(";\tdepends on: 1\n"); err == nil {
		t.Error("a dependency line before any entry was accepted")
	}
}

func TestSelectTable(t *testing.T) {
	toc := tocTestdata(t)
	// pg_restore -l -t c selects: TABLE c, its COMMENT and ACL, TABLE DATA c.
	seeds := map[int]bool{218: true, 3374: true, 3375: true, 3364: true}
	sel := SelectEntries(toc, seeds, SelectOptions{NeedSchema: func(Entry) bool { return true }})
	want := []int{217, 218, 3212, 3213, 3215, 3359, 3360, 3364, 3367, 3368, 3369, 3374, 3375, 3377}
	if got := ids(sel.Entries); !slices.Equal(got, want) {
		t.Errorf("table c selects %v, want %v (table, data, identity sequence and its value, pkey, index, trigger, row security, policy, comment, grant)", got, want)
	}
	if len(sel.Skipped) != 1 || sel.Skipped[0].ID != 3214 {
		t.Errorf("skipped %v, want the FK to s.p", sel.Skipped)
	}
	// Into a database that has s.p already: the FK to it comes along.
	sel = SelectEntries(toc, seeds, SelectOptions{InTarget: func(e Entry) bool { return e.ID == 216 || e.ID == 3210 }}) // table s.p and its key
	if len(sel.Skipped) != 0 || !slices.Contains(ids(sel.Entries), 3214) {
		t.Errorf("s.p in the target: FK 3214 not selected (skipped %v)", sel.Skipped)
	}
	// Archive order is kept (the -L list restores in it).
	var pos []int
	for _, e := range sel.Entries {
		pos = append(pos, slices.IndexFunc(toc, func(x Entry) bool { return x.ID == e.ID }))
	}
	if !slices.IsSorted(pos) {
		t.Errorf("entries out of archive order: %v", pos)
	}
	if l := sel.List(); !strings.Contains(l, "3213; 1259 16413 INDEX public c_v_idx postgres\n") {
		t.Errorf("list lacks the index line:\n%s", l)
	}

	// With s.p too: the FK comes along, and schema s when the target lacks it.
	seeds[216], seeds[3362] = true, true
	sel = SelectEntries(toc, seeds, SelectOptions{NeedSchema: func(e Entry) bool { return e.ID == 6 }, TriggerFunctions: true})
	got := ids(sel.Entries)
	for _, id := range []int{3214, 6, 215, 3376, 3208, 3378, 3210, 220} {
		if !slices.Contains(got, id) {
			t.Errorf("tables c and s.p: entry %d missing from %v", id, got)
		}
	}
	if slices.Contains(got, 219) || slices.Contains(got, 3370) {
		t.Errorf("tables c and s.p: the view or the database came along: %v", got)
	}
	if len(sel.Skipped) != 0 {
		t.Errorf("skipped %v", sel.Skipped)
	}
	// An existing schema is not created again; no trigger function unless asked.
	sel = SelectEntries(toc, seeds, SelectOptions{NeedSchema: func(Entry) bool { return false }})
	if got := ids(sel.Entries); slices.Contains(got, 6) || slices.Contains(got, 220) {
		t.Errorf("schema s or function f selected: %v", got)
	}
	// --create: the database's own entries.
	sel = SelectEntries(toc, seeds, SelectOptions{Database: true})
	got = ids(sel.Entries)
	for _, id := range []int{3370, 3371, 3372, 3373} {
		if !slices.Contains(got, id) {
			t.Errorf("--create: database entry %d missing", id)
		}
	}
}

func TestSelectSchemaBringsNotEverythingInIt(t *testing.T) {
	toc := tocTestdata(t)
	// Only table c, but schema s is needed by nothing selected: s and its
	// sequence stay out.
	sel := SelectEntries(toc, map[int]bool{218: true}, SelectOptions{NeedSchema: func(Entry) bool { return true }})
	if got := ids(sel.Entries); slices.Contains(got, 6) || slices.Contains(got, 215) {
		t.Errorf("selected %v", got)
	}
	if m := SchemaEntries(toc, []string{"s"}); !m[6] || len(m) != 1 {
		t.Errorf("SchemaEntries(s) = %v", m)
	}
	if n, ok := SchemaName(toc[slices.IndexFunc(toc, func(e Entry) bool { return e.ID == 6 })], []string{"public", "s"}); !ok || n != "s" {
		t.Errorf("SchemaName = %q, %v", n, ok)
	}
}

func TestSplitScript(t *testing.T) {
	src := "\\restrict abc\nSET x = 'a;b';\n-- comment; here\nCOMMENT ON ROLE \"we;ird\" IS E'it\\'s;\n2';\n/* c; */ SELECT $f$;$f$, $$x;y$$;\n\\connect db\nGRANT a TO b;\n\\unrestrict abc\n"
	sts, err := splitScript(src)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range sts {
		got = append(got, s.text)
	}
	want := []string{"SET x = 'a;b'", "COMMENT ON ROLE \"we;ird\" IS E'it\\'s;\n2'", "SELECT $f$;$f$, $$x;y$$", "GRANT a TO b"}
	if !slices.Equal(got, want) {
		t.Errorf("splitScript = %q\nwant %q", got, want)
	}
	for _, bad := range []string{"SELECT 'x", "SELECT \"x", "SELECT 1", "SELECT $a$ x"} {
		if _, err := splitScript(bad); err == nil {
			t.Errorf("splitScript(%q) accepted", bad)
		}
	}
}

func stepSQL(steps []Step) []string {
	var out []string
	for _, s := range steps {
		out = append(out, s.SQL)
	}
	return out
}

func TestPlanGlobalsDefault(t *testing.T) {
	script := readTestdata(t, "globals_pg15.sql")
	ex := Existing{
		Roles:       map[string]bool{"postgres": true, "readers": true},
		Memberships: map[[2]string]bool{},
		Tablespaces: map[string]bool{},
	}
	p, err := PlanGlobals(script, ex, GlobalsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(stepSQL(p.Roles), ";\n")
	for _, want := range []string{`CREATE ROLE "Weird ""name"`, "CREATE ROLE alice", "PASSWORD 'SCRAM-SHA-256$", "COMMENT ON ROLE alice",
		"GRANT readers TO alice GRANTED BY postgres", `GRANT readers TO "Weird ""name" WITH ADMIN OPTION`} {
		if !strings.Contains(all, want) {
			t.Errorf("plan lacks %q:\n%s", want, all)
		}
	}
	// The existing roles, the bootstrap superuser first, are never touched.
	for _, bad := range []string{"ROLE postgres", "ROLE readers"} {
		if strings.Contains(all, bad) {
			t.Errorf("plan touches an existing role (%q):\n%s", bad, all)
		}
	}
	rep := strings.Join(p.Report, "\n")
	if !strings.Contains(rep, `role "postgres": exists, left unchanged`) || !strings.Contains(rep, `role "alice": created`) {
		t.Errorf("report:\n%s", rep)
	}
	if len(p.Setup) != 3 || len(p.Tablespaces) != 0 {
		t.Errorf("setup %v, tablespaces %v", p.Setup, p.Tablespaces)
	}
	for _, s := range p.Roles {
		if strings.Contains(s.Shown, "SCRAM") {
			t.Errorf("shown statement holds the password: %s", s.Shown)
		}
	}

	// An existing membership is not granted again.
	ex.Roles["alice"] = true
	ex.Memberships[[2]string{"readers", "alice"}] = true
	p, _ = PlanGlobals(script, ex, GlobalsOptions{})
	if all := strings.Join(stepSQL(p.Roles), "\n"); strings.Contains(all, "alice") || !strings.Contains(all, `"Weird ""name"`) {
		t.Errorf("plan with alice existing:\n%s", all)
	}
}

func TestPlanGlobalsOverwriteAndNoPasswords(t *testing.T) {
	script := readTestdata(t, "globals_pg15.sql")
	ex := Existing{Roles: map[string]bool{"postgres": true, "alice": true}, Memberships: map[[2]string]bool{}, Tablespaces: map[string]bool{}}
	p, err := PlanGlobals(script, ex, GlobalsOptions{Overwrite: true, NoPasswords: true})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(stepSQL(p.Roles), "\n")
	if strings.Contains(all, "CREATE ROLE alice") || strings.Contains(all, "CREATE ROLE postgres") {
		t.Errorf("overwrite creates an existing role:\n%s", all)
	}
	if !strings.Contains(all, "ALTER ROLE alice WITH NOSUPERUSER") || !strings.Contains(all, "ALTER ROLE postgres WITH SUPERUSER") {
		t.Errorf("overwrite does not apply the definitions:\n%s", all)
	}
	if strings.Contains(all, "PASSWORD") || strings.Contains(all, "SCRAM") {
		t.Errorf("no-role-passwords left a password:\n%s", all)
	}
	if !strings.Contains(all, "ALTER ROLE alice WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS\n") {
		t.Errorf("password clause not cut cleanly:\n%s", all)
	}
}

func TestPlanGlobalsTablespacesAndUnknown(t *testing.T) {
	script := `SET client_encoding = 'UTF8';
CREATE ROLE app;
ALTER ROLE app WITH LOGIN PASSWORD 'md5abc' VALID UNTIL 'infinity';
ALTER ROLE app SET search_path TO 'a';
CREATE TABLESPACE fast OWNER app LOCATION '/ssd';
GRANT ALL ON TABLESPACE fast TO app;
CREATE TABLESPACE slow OWNER postgres LOCATION '/hdd';
COMMENT ON TABLESPACE slow IS 'x';
GRANT SET ON PARAMETER work_mem TO app;
GRANT SET ON PARAMETER work_mem TO postgres;
ALTER SYSTEM SET foo = 1;
`
	ex := Existing{Roles: map[string]bool{"postgres": true}, Memberships: map[[2]string]bool{}, Tablespaces: map[string]bool{"slow": true}}
	p, err := PlanGlobals(script, ex, GlobalsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roles, ts := strings.Join(stepSQL(p.Roles), "\n"), strings.Join(stepSQL(p.Tablespaces), "\n")
	if !strings.Contains(roles, "ALTER ROLE app SET search_path") || !strings.Contains(roles, "GRANT SET ON PARAMETER work_mem TO app") ||
		strings.Contains(roles, "TO postgres") || strings.Contains(roles, "ALTER SYSTEM") {
		t.Errorf("roles:\n%s", roles)
	}
	if !strings.Contains(ts, "CREATE TABLESPACE fast") || !strings.Contains(ts, "GRANT ALL ON TABLESPACE fast") || strings.Contains(ts, "slow") {
		t.Errorf("tablespaces:\n%s", ts)
	}
	if !strings.Contains(strings.Join(p.Report, "\n"), "skipped (not recognised; --overwrite-roles applies it): ALTER SYSTEM") {
		t.Errorf("report: %v", p.Report)
	}
	for _, s := range p.Roles {
		if strings.Contains(s.Shown, "md5abc") {
			t.Errorf("password shown: %s", s.Shown)
		}
	}
}

func TestDatabaseScriptRename(t *testing.T) {
	ds, err := ParseDatabaseScript(readTestdata(t, "database_pg15.sql"), "d2", "new \"db\"")
	if err != nil {
		t.Fatal(err)
	}
	const q = `"new ""db"""`
	if ds.Create != "CREATE DATABASE "+q+" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = icu LOCALE = 'C' ICU_LOCALE = 'de-DE'" {
		t.Errorf("create: %s", ds.Create)
	}
	props := strings.Join(ds.Props, "\n")
	for _, want := range []string{"ALTER DATABASE " + q + " OWNER TO postgres", "COMMENT ON DATABASE " + q + " IS 'multi\nline'",
		"ALTER DATABASE " + q + " SET work_mem TO '8MB'", "GRANT CONNECT ON DATABASE " + q + " TO alice"} {
		if !strings.Contains(props, want) {
			t.Errorf("props lack %q:\n%s", want, props)
		}
	}
	if strings.Contains(props, " d2 ") || strings.Contains(props, "connect") {
		t.Errorf("props keep the old name or a meta-command:\n%s", props)
	}
	if len(ds.Setup) == 0 {
		t.Error("no SET statements")
	}
	// A literal that mentions the database is left alone.
	s, _ := splitScript("COMMENT ON DATABASE d2 IS 'DATABASE d2';")
	if got := renameDatabase(s[0], "d2", "x"); got != `COMMENT ON DATABASE "x" IS 'DATABASE d2'` {
		t.Errorf("renameDatabase = %s", got)
	}
	s, _ = splitScript(`ALTER DATABASE "Mixed" SET a = 1;`)
	if got := renameDatabase(s[0], "Mixed", "m"); got != `ALTER DATABASE "m" SET a = 1` {
		t.Errorf("renameDatabase = %s", got)
	}
}
