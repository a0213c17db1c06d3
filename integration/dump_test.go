package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

// dumpClient picks the server major for the dump tests and the directory
// of its client tools (pg_dump, pg_dumpall, pg_restore, psql): the newest
// tested major whose own client tools are installed (make deps installs
// them for 15, 17 and 18: see testenv.ClientToolsDir).
func dumpClient(t *testing.T) (major int, bin string) {
	t.Helper()
	majors := testenv.Majors()
	slices.Sort(majors)
	for i := len(majors) - 1; i >= 0; i-- {
		m := majors[i]
		if d, ok := testenv.ClientToolsDir(m); ok && exists(filepath.Join(d, "pg_dump")) && exists(filepath.Join(d, "pg_restore")) && exists(filepath.Join(d, "pg_dumpall")) {
			return m, d
		}
	}
	t.Fatalf("no PostgreSQL client tools (pg_dump, pg_restore) for any of the tested majors %v; run make deps", majors)
	return 0, ""
}

// dumpRepo makes a local repository, encrypted to a new key, and returns
// the environment that points pgark at it.
func dumpRepo(t *testing.T, dir string) (env []string, key string) {
	t.Helper()
	key = filepath.Join(dir, "key.txt")
	r := mustOK(t, pgark(t, nil, "key", "generate", key))
	repoDir := filepath.Join(dir, "repo")
	env = []string{"PGARK_REPO=" + repoDir, "PGARK_AGE_RECIPIENTS=" + strings.TrimSpace(r.stdout), "PGARK_AGE_IDENTITY_FILE=" + key}
	mustOK(t, pgark(t, env, "init"))
	return env, key
}

// schemaOf is the schema of a database as pg_dump prints it, without the
// lines that differ between runs (versions, \restrict keys).
func schemaOf(t *testing.T, c *testenv.Cluster, bin, db string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "pg_dump"), "--schema-only", "--dbname="+db)
	cmd.Env = append(os.Environ(), c.PGEnv()...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dump --schema-only %s: %v", db, err)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, `\restrict`) || strings.HasPrefix(l, `\unrestrict`) || strings.HasPrefix(l, "-- Dumped") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

func queryDB(t *testing.T, c *testenv.Cluster, bin, db, sql string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "--dbname="+db, "-c", sql)
	cmd.Env = append(os.Environ(), c.PGEnv()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql %s: %s: %v\n%s", db, sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

func execDB(t *testing.T, c *testenv.Cluster, bin, db, sql string) {
	t.Helper()
	queryDB(t, c, bin, db, sql)
}

// dbFacts is what must survive a dump and restore of a database.
func dbFacts(t *testing.T, c *testenv.Cluster, bin, db string) string {
	t.Helper()
	loc := "daticulocale"
	if c.Major >= 17 {
		loc = "datlocale"
	}
	var b strings.Builder
	fmt.Fprintln(&b, queryDB(t, c, bin, "postgres", fmt.Sprintf(
		"SELECT pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, coalesce(%s, ''), pg_get_userbyid(datdba), coalesce(shobj_description(oid, 'pg_database'), ''), (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(datacl) a) FROM pg_database WHERE datname = '%s'", loc, db)))
	fmt.Fprintln(&b, queryDB(t, c, bin, "postgres", fmt.Sprintf(
		"SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '%s'", db)))
	for _, tbl := range strings.Split(queryDB(t, c, bin, db, "SELECT string_agg(format('%I.%I', schemaname, tablename), ' ' ORDER BY schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"), " ") {
		fmt.Fprintf(&b, "%s: %s rows\n", tbl, queryDB(t, c, bin, db, "SELECT count(*) FROM "+tbl))
	}
	for _, seq := range strings.Split(queryDB(t, c, bin, db, "SELECT string_agg(format('%I.%I', schemaname, sequencename), ' ' ORDER BY schemaname, sequencename) FROM pg_sequences"), " ") {
		fmt.Fprintf(&b, "%s: %s\n", seq, queryDB(t, c, bin, db, "SELECT last_value || ' ' || is_called FROM "+seq))
	}
	return b.String()
}

type dumpList struct {
	Dumps []struct {
		ID            string `json:"id"`
		ServerVersion string `json:"server_version"`
		PgDumpVersion string `json:"pg_dump_version"`
		StartTime     time.Time
		Globals       struct{ Bytes int64 } `json:"globals"`
		Databases     []struct {
			Name           string `json:"name"`
			Key            string `json:"key"`
			Encoding       string `json:"encoding"`
			Collate        string `json:"collate"`
			LocaleProvider string `json:"locale_provider"`
			Locale         string `json:"locale"`
			Bytes          int64  `json:"bytes"`
			StoredBytes    int64  `json:"stored_bytes"`
			SHA256         string `json:"sha256"`
		} `json:"databases"`
	} `json:"dumps"`
	Failed []struct {
		ID    string `json:"id"`
		Error string `json:"error"`
	} `json:"failed"`
	Incomplete []string `json:"incomplete"`
}

func listDumps(t *testing.T, env []string) dumpList {
	t.Helper()
	var l dumpList
	r := mustOK(t, pgark(t, env, "list", "--dumps", "--json"))
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		t.Fatalf("list --dumps --json: %v\n%s", err, r.stdout)
	}
	return l
}

// TestDumpRoundTrip: two databases (LATIN1 with the C locale, and one with
// an ICU collation) with tables, sequences, a view, indexes, a foreign key,
// database properties and roles; dumped with --jobs 2, dropped with their
// roles, then restored (roles, then each database with --create, one with
// --jobs 2): schemas, row counts, sequence values, encodings and locales,
// and roles match. Then one table into a new database, with its indexes
// and constraints; --list; --to-file; a restore into a non-empty database
// refused.
func TestDumpRoundTrip(t *testing.T) {
	major, bin := dumpClient(t)
	dir := testenv.SharedDir(t)
	env, _ := dumpRepo(t, dir)
	c := testenv.StartPG(t, testenv.PGOptions{Major: major})
	env = append(env, "PGARK_DSN="+c.DSN(), "PGARK_PG_BIN="+bin)

	execDB(t, c, bin, "postgres", `CREATE ROLE app_owner LOGIN PASSWORD 'app-secret'; CREATE ROLE readers; GRANT readers TO app_owner;
		COMMENT ON ROLE app_owner IS 'owns the apps'`)
	execDB(t, c, bin, "postgres", "CREATE DATABASE latin ENCODING 'LATIN1' LOCALE 'C' TEMPLATE template0 OWNER app_owner")
	icu := "CREATE DATABASE icu LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C' TEMPLATE template0"
	execDB(t, c, bin, "postgres", icu)
	execDB(t, c, bin, "postgres", `COMMENT ON DATABASE latin IS 'caf`+"\u00e9"+`'; ALTER DATABASE latin SET work_mem = '7MB';
		GRANT CONNECT ON DATABASE icu TO readers; REVOKE CONNECT ON DATABASE icu FROM PUBLIC`)
	schema := `
		CREATE SCHEMA shop;
		CREATE TABLE shop.customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, CHECK (name <> ''));
		CREATE INDEX customers_name ON shop.customers (name);
		CREATE TABLE shop.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			customer int NOT NULL REFERENCES shop.customers (id), total numeric(10,2), placed timestamptz DEFAULT now());
		CREATE INDEX orders_customer ON shop.orders (customer);
		CREATE SEQUENCE shop.invoice_no START 1000;
		CREATE VIEW shop.big_orders AS SELECT * FROM shop.orders WHERE total > 100;
		COMMENT ON TABLE shop.orders IS 'orders';
		GRANT SELECT ON shop.orders TO readers;
		INSERT INTO shop.customers (name, email) SELECT 'n' || g || ' caf` + "\u00e9" + `', 'e' || g FROM generate_series(1, 300) g;
		INSERT INTO shop.orders (customer, total) SELECT 1 + g % 300, g FROM generate_series(1, 2000) g;
		SELECT nextval('shop.invoice_no') FROM generate_series(1, 7);`
	execDB(t, c, bin, "latin", schema+"ALTER SCHEMA shop OWNER TO app_owner; ALTER TABLE shop.orders OWNER TO app_owner")
	execDB(t, c, bin, "icu", schema+`CREATE COLLATION shop.de (provider = icu, locale = 'de-DE');
		CREATE TABLE shop.words (w text COLLATE shop.de PRIMARY KEY); INSERT INTO shop.words VALUES ('a'), ('`+"\u00e4"+`'), ('b')`)
	// Something the globals must not reset: the bootstrap superuser's state after the dump.
	before := map[string]string{}
	for _, db := range []string{"latin", "icu"} {
		before[db+" schema"] = schemaOf(t, c, bin, db)
		before[db+" facts"] = dbFacts(t, c, bin, db)
	}
	rolesSQL := "SELECT string_agg(rolname || ' ' || rolcanlogin || ' ' || (rolpassword IS NOT NULL) || ' ' || coalesce(shobj_description(oid, 'pg_authid'), ''), ', ' ORDER BY rolname) FROM pg_authid WHERE rolname IN ('app_owner', 'readers')"
	rolesBefore := queryDB(t, c, bin, "postgres", rolesSQL)
	memberSQL := "SELECT count(*) FROM pg_auth_members WHERE roleid = 'readers'::regrole AND member = 'app_owner'::regrole"

	r := mustOK(t, pgark(t, env, "dump", "--jobs", "2", "--json"))
	var m struct {
		ID        string
		Databases []struct{ Name string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || m.ID == "" {
		t.Fatalf("dump --json: %v\n%s", err, r)
	}
	var names []string
	for _, d := range m.Databases {
		names = append(names, d.Name)
	}
	if !slices.Equal(names, []string{"icu", "latin", "postgres", "template1"}) {
		t.Fatalf("dumped %v; want every database but template0", names)
	}
	l := listDumps(t, env)
	if len(l.Dumps) != 1 || l.Dumps[0].ID != m.ID || l.Dumps[0].Globals.Bytes == 0 {
		t.Fatalf("list --dumps: %+v", l)
	}
	for _, d := range l.Dumps[0].Databases {
		if d.Bytes == 0 || d.StoredBytes == 0 || len(d.SHA256) != 64 || !strings.HasPrefix(d.Key, "dumps/"+m.ID+"/") {
			t.Errorf("database %s: %+v", d.Name, d)
		}
		switch d.Name {
		case "latin":
			if d.Encoding != "LATIN1" || d.Collate != "C" || d.LocaleProvider != "libc" {
				t.Errorf("latin recorded as %+v", d)
			}
		case "icu":
			if d.LocaleProvider != "icu" || d.Locale != "de-DE" {
				t.Errorf("icu recorded as %+v", d)
			}
		}
	}
	human := mustOK(t, pgark(t, env, "list", "--dumps")).stdout
	if !strings.Contains(human, m.ID) || !strings.Contains(human, "LATIN1") || !strings.Contains(human, "icu de-DE") {
		t.Errorf("list --dumps:\n%s", human)
	}
	// No plaintext in the repository: the objects are encrypted.
	raw := readFile(t, filepath.Join(dir, "repo", "dumps", m.ID, "latin.dump.pgark"))
	if strings.Contains(string(raw), "customers") {
		t.Error("the latin dump object holds plaintext")
	}

	// Disaster: both databases and the roles are gone.
	execDB(t, c, bin, "postgres", "DROP DATABASE latin")
	execDB(t, c, bin, "postgres", "DROP DATABASE icu")
	execDB(t, c, bin, "postgres", "DROP ROLE app_owner; DROP ROLE readers; COMMENT ON ROLE postgres IS 'changed after the dump'")

	// Roles first. The dry run changes nothing; the real run creates only
	// the missing roles and leaves the bootstrap superuser alone.
	r = mustOK(t, pgark(t, env, "dump-restore", "latest", "--globals", "--dry-run"))
	if !strings.Contains(r.stdout, `role "app_owner": created`) || !strings.Contains(r.stdout, `role "postgres": exists, left unchanged`) ||
		!strings.Contains(r.stdout, "PASSWORD '<redacted>'") || strings.Contains(r.stdout, "SCRAM") {
		t.Fatalf("--globals --dry-run:\n%s", r)
	}
	if n := queryDB(t, c, bin, "postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'app_owner'"); n != "0" {
		t.Fatal("--dry-run created a role")
	}
	mustOK(t, pgark(t, env, "dump-restore", "latest", "--globals"))
	if got := queryDB(t, c, bin, "postgres", rolesSQL); got != rolesBefore {
		t.Errorf("roles after --globals: %q, want %q", got, rolesBefore)
	}
	if n := queryDB(t, c, bin, "postgres", memberSQL); n != "1" {
		t.Errorf("membership of app_owner in readers: %s", n)
	}
	if got := queryDB(t, c, bin, "postgres", "SELECT shobj_description('postgres'::regrole, 'pg_authid')"); got != "changed after the dump" {
		t.Errorf("the bootstrap superuser was reset by --globals: comment %q", got)
	}
	r = mustOK(t, pgark(t, env, "dump-restore", "latest", "--globals"))
	if !strings.Contains(r.stdout, `role "app_owner": exists, left unchanged`) {
		t.Errorf("second --globals:\n%s", r)
	}

	// Databases: --create recreates each with its encoding, locale and properties.
	wantCode(t, pgark(t, env, "dump-restore", "latest", "--create"), 2, "pick one with --db")
	mustOK(t, pgark(t, env, "dump-restore", "latest", "--db", "latin", "--create", "--jobs", "2"))
	mustOK(t, pgark(t, env, "dump-restore", m.ID, "--db", "icu", "--create"))
	for _, db := range []string{"latin", "icu"} {
		if got := schemaOf(t, c, bin, db); got != before[db+" schema"] {
			t.Errorf("%s: schema differs after the restore:\n%s\n---- want\n%s", db, got, before[db+" schema"])
		}
		if got := dbFacts(t, c, bin, db); got != before[db+" facts"] {
			t.Errorf("%s: facts differ after the restore:\n%s\n---- want\n%s", db, got, before[db+" facts"])
		}
	}
	if got := queryDB(t, c, bin, "icu", "SELECT string_agg(w, '' ORDER BY w) FROM shop.words"); got != "a\u00e4b" {
		t.Errorf("ICU collation order: %q", got)
	}
	// Again without --clean: refused, the database stays.
	wantCode(t, pgark(t, env, "dump-restore", "latest", "--db", "latin", "--create"), 3, "exists")
	wantCode(t, pgark(t, env, "dump-restore", "latest", "--db", "latin"), 3, "not empty")

	// Under a new name: the original's encoding, locale and properties.
	mustOK(t, pgark(t, env, "dump-restore", "latest", "--db", "latin", "--create", "--target-db", "latin copy"))
	if got, want := dbFacts(t, c, bin, "latin copy"), before["latin facts"]; got != want {
		t.Errorf("latin copy:\n%s\n---- want\n%s", got, want)
	}

	// One table into a new database, with its indexes and constraints.
	mustOK(t, pgark(t, env, "dump-restore", "latest", "--db", "latin", "--table", "shop.customers", "--create", "--target-db", "onetable"))
	got := queryDB(t, c, bin, "onetable", `SELECT string_agg(c.relname || ':' || c.relkind::text, ' ' ORDER BY c.relname) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'shop'`)
	if got != "customers:r customers_email_key:i customers_id_seq:S customers_name:i customers_pkey:i" {
		t.Errorf("onetable holds %q; want the table, its sequence and its three indexes", got)
	}
	if got := queryDB(t, c, bin, "onetable", "SELECT string_agg(contype::text, '' ORDER BY contype) FROM pg_constraint WHERE conrelid = 'shop.customers'::regclass AND contype <> 'n'"); got != "cpu" {
		t.Errorf("onetable constraints %q; want check, primary key, unique (NOT NULL constraints of 18 aside)", got)
	}
	if got := queryDB(t, c, bin, "onetable", "SELECT count(*) || ' ' || (SELECT last_value FROM shop.customers_id_seq) FROM shop.customers"); got != "300 300" {
		t.Errorf("onetable rows and sequence: %q", got)
	}
	if got := queryDB(t, c, bin, "onetable", "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"); got != "LATIN1" {
		t.Errorf("onetable encoding %s", got)
	}
	// Into an existing database: both tables, so the foreign key comes too.
	execDB(t, c, bin, "postgres", "CREATE DATABASE two ENCODING 'LATIN1' LOCALE 'C' TEMPLATE template0")
	mustOK(t, pgark(t, env, "dump-restore", "latest", "--db", "latin", "--table", "shop.orders", "--table", "shop.customers", "--target-db", "two"))
	if got := queryDB(t, c, bin, "two", "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'shop.orders'::regclass"); got != "1" {
		t.Errorf("two: %s foreign keys on orders", got)
	}
	if got := queryDB(t, c, bin, "two", "SELECT count(*) FROM shop.orders"); got != "2000" {
		t.Errorf("two: %s orders", got)
	}
	// Again: the tables are there now, and a live table is never
	// overwritten without --clean; with it, the table is replaced.
	execDB(t, c, bin, "two", "DELETE FROM shop.orders WHERE id % 2 = 0")
	wantCode(t, pgark(t, env, "dump-restore", "latest", "--db", "latin", "--table", "shop.orders", "--target-db", "two"), 3, "table shop.orders exists in database")
	if got := queryDB(t, c, bin, "two", "SELECT count(*) FROM shop.orders"); got != "1000" {
		t.Errorf("two after a refused restore: %s orders, want the 1000 left untouched", got)
	}
	mustOK(t, pgark(t, env, "dump-restore", "latest", "--db", "latin", "--table", "shop.orders", "--target-db", "two", "--clean"))
	if got := queryDB(t, c, bin, "two", "SELECT count(*) FROM shop.orders"); got != "2000" {
		t.Errorf("two after --clean: %s orders, want 2000", got)
	}
	// customers is in the target: the foreign key to it comes back too.
	if got := queryDB(t, c, bin, "two", "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'shop.orders'::regclass"); got != "1" {
		t.Errorf("two after --clean: %s foreign keys on orders, want 1", got)
	}

	// --list, and --to-file (never replacing a file).
	r = mustOK(t, pgark(t, env, "dump-restore", "latest", "--db", "icu", "--list"))
	if !strings.Contains(r.stdout, "TABLE DATA shop words") {
		t.Errorf("--list:\n%s", r.stdout)
	}
	out := filepath.Join(dir, "icu.dump")
	mustOK(t, pgark(t, env, "dump-restore", "latest", "--db", "icu", "--to-file", out))
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("--to-file: %v %v", st, err)
	}
	lst, err := exec.Command(filepath.Join(bin, "pg_restore"), "--list", out).Output()
	if err != nil || !strings.Contains(string(lst), "TABLE DATA shop words") {
		t.Errorf("pg_restore --list of the --to-file output: %v\n%s", err, lst)
	}
	wantCode(t, pgark(t, env, "dump-restore", "latest", "--db", "icu", "--to-file", out), 3, "exists")
	if ents, _ := os.ReadDir(dir); slices.ContainsFunc(ents, func(e os.DirEntry) bool { return strings.HasPrefix(e.Name(), ".pgark-tmp") }) {
		t.Error("a temporary file was left next to --to-file")
	}
}

// pgDumpProcess finds the pid of the pg_dump child of pgark that dumps db.
func pgDumpProcess(parent int, db string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(parent) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmdline), "pg_dump\x00") && strings.Contains(string(cmdline), "/"+db+"?") {
			return pid
		}
	}
	return 0
}

// TestDumpFailures: a pg_dump that cannot get its lock within
// --lock-wait-timeout, and a pg_dump killed midway, fail the run (exit 7,
// pg_dump's stderr passed through): the run is marked failed, its objects
// are deleted, and latest never picks it. A client older than the server
// is refused. Retention keeps the newest complete dump and removes the
// failed runs older than it.
func TestDumpFailures(t *testing.T) {
	major, bin := dumpClient(t)
	dir := testenv.SharedDir(t)
	env, _ := dumpRepo(t, dir)
	c := testenv.StartPG(t, testenv.PGOptions{Major: major})
	env = append(env, "PGARK_DSN="+c.DSN(), "PGARK_PG_BIN="+bin)
	execDB(t, c, bin, "postgres", "CREATE DATABASE a")
	execDB(t, c, bin, "postgres", "CREATE DATABASE b")
	execDB(t, c, bin, "a", "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
	execDB(t, c, bin, "b", "CREATE TABLE locked AS SELECT g FROM generate_series(1, 1000) g")

	good := mustOK(t, pgark(t, env, "dump", "--db", "a", "--db", "b", "--json"))
	var first struct{ ID string }
	json.Unmarshal([]byte(good.stdout), &first)
	time.Sleep(1100 * time.Millisecond) // the next run gets a later id

	// Hold a lock in database b that pg_dump must wait for.
	lockCmd := exec.Command(filepath.Join(bin, "psql"), "-X", "--dbname=b", "-c", "BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);")
	lockCmd.Env = append(os.Environ(), c.PGEnv()...)
	if err := lockCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lockCmd.Process.Kill(); lockCmd.Wait() })
	c.WaitFor(t, 30*time.Second, func() bool {
		return queryDB(t, c, bin, "postgres", "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation IS NOT NULL AND granted") != "0"
	})

	r := pgark(t, env, "dump", "--db", "a", "--db", "b", "--lock-wait-timeout", "1s")
	wantCode(t, r, 8, "pg_dump of database")
	if !strings.Contains(r.stderr, "[pg_dump, database \"b\"] pg_dump: error:") || !strings.Contains(r.stderr, "LOCK TABLE public.locked") {
		t.Errorf("pg_dump's stderr not passed through:\n%s", r.stderr)
	}
	time.Sleep(1100 * time.Millisecond)

	// Killed midway: pg_dump of b waits for the lock; a was already stored.
	cmd := exec.Command(pgarkBin, "dump", "--db", "a", "--db", "b")
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir()}, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var victim int
	deadline := time.Now().Add(60 * time.Second)
	for victim == 0 && time.Now().Before(deadline) {
		victim = pgDumpProcess(cmd.Process.Pid, "b")
		time.Sleep(50 * time.Millisecond)
	}
	if victim == 0 {
		cmd.Process.Kill()
		t.Fatalf("pg_dump of b never started:\n%s", stderr.String())
	}
	time.Sleep(300 * time.Millisecond)
	syscall.Kill(victim, syscall.SIGKILL)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Signal(syscall.SIGQUIT) // a goroutine dump, to see where it hangs
		<-done
		t.Fatalf("pgark did not exit after pg_dump was killed:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 8 {
		t.Fatalf("pgark dump with pg_dump killed: %v, want exit 8\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "signal: killed") {
		t.Errorf("stderr does not say pg_dump was killed:\n%s", stderr.String())
	}

	l := listDumps(t, env)
	if len(l.Dumps) != 1 || l.Dumps[0].ID != first.ID || len(l.Failed) != 2 || len(l.Incomplete) != 0 {
		t.Fatalf("list --dumps after two failures: %+v", l)
	}
	for _, f := range l.Failed {
		ents, err := os.ReadDir(filepath.Join(dir, "repo", "dumps", f.ID))
		if err != nil || len(ents) != 1 || ents[0].Name() != "failed.json" {
			t.Errorf("failed run %s left %v (%v); want only failed.json", f.ID, ents, err)
		}
	}
	human := mustOK(t, pgark(t, env, "list", "--dumps")).stdout
	if !strings.Contains(human, "failed (never used): "+l.Failed[1].ID) {
		t.Errorf("list --dumps does not show the failed run:\n%s", human)
	}
	// latest is the complete dump, never the failed ones.
	r = mustOK(t, pgark(t, env, "dump-restore", "latest", "--db", "a", "--create", "--target-db", "a_back"))
	if !strings.Contains(r.stdout, "of dump "+first.ID) {
		t.Errorf("latest picked another dump:\n%s", r)
	}
	wantCode(t, pgark(t, env, "dump-restore", l.Failed[0].ID, "--db", "a", "--list"), 3, "no such complete dump")

	// A client older than the server is refused, naming both versions:
	// the oldest installed client tools against the newest server.
	old, oldBin := 0, ""
	for _, m := range testenv.ClientToolMajors {
		if d, ok := testenv.ClientToolsDir(m); ok && (old == 0 || m < old) {
			old, oldBin = m, d
		}
	}
	newer := 0
	for _, m := range testenv.Majors() {
		if _, err := testenv.PGBinDir(m); err == nil && m > old && m > newer {
			newer = m
		}
	}
	if newer == 0 {
		t.Logf("no server major newer than the client %d to test the refusal", old)
	} else {
		major := old
		n := testenv.StartPG(t, testenv.PGOptions{Major: newer})
		r := pgark(t, append(env, "PGARK_DSN="+n.DSN(), "PGARK_PG_BIN="+oldBin), "dump")
		wantCode(t, r, 3, "older than the server")
		if !strings.Contains(r.stderr, fmt.Sprintf("pg_dump %d.", major)) || !strings.Contains(r.stderr, fmt.Sprintf("PostgreSQL %d.", newer)) {
			t.Errorf("the refusal does not name both versions:\n%s", r.stderr)
		}
	}

	// Retention: a second complete dump; keep-dumps 1 keeps it and removes
	// the first and the failed runs (older than it).
	lockCmd.Process.Kill()
	lockCmd.Wait()
	time.Sleep(1100 * time.Millisecond)
	mustOK(t, pgark(t, env, "dump", "--db", "a"))
	r = mustOK(t, pgark(t, env, "retain", "--keep-dumps", "1", "--dry-run"))
	if !strings.Contains(r.stdout, first.ID) || !strings.Contains(r.stdout, "would delete") {
		t.Errorf("retain --dry-run:\n%s", r.stdout)
	}
	if got := listDumps(t, env); len(got.Dumps) != 2 || len(got.Failed) != 2 {
		t.Fatalf("--dry-run deleted something: %+v", got)
	}
	mustOK(t, pgark(t, env, "retain", "--keep-dumps", "1"))
	after := listDumps(t, env)
	if len(after.Dumps) != 1 || after.Dumps[0].ID == first.ID || len(after.Failed) != 0 {
		t.Errorf("after retain --keep-dumps 1: %+v", after)
	}
	var left []string
	filepath.WalkDir(filepath.Join(dir, "repo", "dumps"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	if len(left) != 3 { // dump.json, globals and database a of the kept run
		t.Errorf("after retention the dumps hold %v", left)
	}
}

// TestDumpS3Encrypted: a dump into an encrypted S3 repository, restored;
// a restore with the wrong identity fails clearly (exit 6).
func TestDumpS3Encrypted(t *testing.T) {
	major, bin := dumpClient(t)
	dir := testenv.SharedDir(t)
	s3 := testenv.S3Start(t)
	s3.CreateBucket(t, "dumps")
	key := filepath.Join(dir, "key.txt")
	recip := strings.TrimSpace(mustOK(t, pgark(t, nil, "key", "generate", key)).stdout)
	other := filepath.Join(dir, "other.txt")
	mustOK(t, pgark(t, nil, "key", "generate", other))
	c := testenv.StartPG(t, testenv.PGOptions{Major: major})
	env := append(s3.Env(), "PGARK_REPO=s3://dumps/prod", "PGARK_AGE_RECIPIENTS="+recip, "PGARK_DSN="+c.DSN(), "PGARK_PG_BIN="+bin)
	mustOK(t, pgark(t, env, "init"))
	execDB(t, c, bin, "postgres", "CREATE DATABASE shop")
	execDB(t, c, bin, "shop", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
	mustOK(t, pgark(t, env, "dump", "--db", "shop"))

	wantCode(t, pgark(t, append(env, "PGARK_AGE_IDENTITY_FILE="+other), "dump-restore", "latest", "--create", "--target-db", "shop2"), 6, "none of the identities")
	wantCode(t, pgark(t, env, "dump-restore", "latest", "--create", "--target-db", "shop2"), 6, "no age identity file")
	if n := queryDB(t, c, bin, "postgres", "SELECT count(*) FROM pg_database WHERE datname = 'shop2'"); n != "0" {
		t.Error("a failed restore left database shop2 behind")
	}
	mustOK(t, pgark(t, append(env, "PGARK_AGE_IDENTITY_FILE="+key), "dump-restore", "latest", "--create", "--target-db", "shop2", "--jobs", "2"))
	if got := queryDB(t, c, bin, "shop2", "SELECT count(*) || ' ' || md5(string_agg(name, '' ORDER BY id)) FROM items"); got != queryDB(t, c, bin, "shop", "SELECT count(*) || ' ' || md5(string_agg(name, '' ORDER BY id)) FROM items") {
		t.Errorf("shop2 differs from shop: %s", got)
	}
}
