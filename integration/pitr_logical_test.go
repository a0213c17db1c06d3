package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgark/pgark/internal/testenv"
)

// TestPointInTimeTableRestore is the "someone dropped a table at 15:47"
// story, on PostgreSQL 16 and 18: orders come in one transaction each,
// stamped with their commit time; at T the orders table is dropped and
// other tables keep changing. dump-restore --target-time T-1s brings back
// into the live database exactly the orders committed by T-1s, with their
// indexes and constraints, and leaves every later write elsewhere alone. A
// second run refuses to overwrite the table it brought back. The
// whole-database variant (--create --target-db) gives a copy of the
// database as of T-1s. No scratch server or directory is left behind.
func TestPointInTimeTableRestore(t *testing.T) {
	for _, major := range pickMajors(16, 18) {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			testenv.NeedPG(t, major)
			pitrTable(t, major)
		})
	}
}

// shopConn connects to a database of the cluster.
func shopConn(t *testing.T, c *testenv.Cluster, db string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, strings.Replace(c.DSN(), "/postgres?", "/"+db+"?", 1))
	if err != nil {
		t.Fatalf("connect to %s: %v", db, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// orderRows is every order as "id customer amount created", ordered by id,
// with the commit time of each row when withCommit.
func orderRows(t *testing.T, conn *pgx.Conn, withCommit bool) (rows []string, commits []time.Time) {
	t.Helper()
	q := "SELECT id::text||' '||customer_id||' '||amount||' '||to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), "
	if withCommit {
		q += "pg_xact_commit_timestamp(xmin)"
	} else {
		q += "now()"
	}
	r, err := conn.Query(context.Background(), q+" FROM orders ORDER BY id")
	if err != nil {
		t.Fatalf("read orders: %v", err)
	}
	defer r.Close()
	for r.Next() {
		var s string
		var ts time.Time
		if err := r.Scan(&s, &ts); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, s)
		commits = append(commits, ts)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return rows, commits
}

func pitrTable(t *testing.T, major int) {
	_, bin := dumpClient(t) // the newest pg_dump and pg_restore: they read every older server
	serverBin, err := testenv.PGBinDir(major)
	if err != nil {
		t.Fatal(err)
	}
	s := setupIncremental(t, major, nil)
	c := s.c
	ctx := context.Background()
	execDB(t, c, bin, "postgres", "CREATE DATABASE shop")
	execDB(t, c, bin, "shop", `CREATE TABLE customers(id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders(id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
  amount numeric(10,2) NOT NULL CHECK (amount > 0), created timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX orders_created ON orders(created);
CREATE TABLE audit(id bigserial PRIMARY KEY, note text NOT NULL);
INSERT INTO customers SELECT g, 'customer '||g FROM generate_series(1, 50) g;
INSERT INTO orders(customer_id, amount) SELECT 1 + g % 50, g FROM generate_series(1, 500) g;`)
	s.backup(t, "full")
	c.Pgbench(t, "-i", "-s", "1", "-q", "shop")

	// Orders come in, one transaction each, for two and a half seconds,
	// with pgbench transactions between them.
	shop := shopConn(t, c, "shop")
	for start, i := time.Now(), 0; time.Since(start) < 2500*time.Millisecond; i++ {
		if _, err := shop.Exec(ctx, "INSERT INTO orders(customer_id, amount) VALUES ($1, $2)", 1+i%50, 1+i%997); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			c.Pgbench(t, "-t", "5", "-c", "1", "shop")
		}
	}
	all, commits := orderRows(t, shop, true)

	// 15:47: the table is dropped. T is the dropping transaction's start.
	var dropAt time.Time
	tx, err := shop.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, "SELECT now()").Scan(&dropAt); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "DROP TABLE orders"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	target := dropAt.Add(-time.Second)
	var want []string
	for i, r := range all {
		if !commits[i].After(target) {
			want = append(want, r)
		}
	}
	if len(want) <= 500 || len(want) == len(all) {
		t.Fatalf("%d of %d orders committed by T-1s: the load did not straddle the target", len(want), len(all))
	}
	// Life goes on elsewhere.
	execDB(t, c, bin, "shop", "INSERT INTO audit(note) SELECT 'after the drop '||g FROM generate_series(1, 100) g; UPDATE customers SET name = name||' (moved)' WHERE id <= 10")
	c.Pgbench(t, "-t", "50", "-c", "2", "shop")
	after := func(db string) string {
		return queryDB(t, c, bin, db, "SELECT (SELECT count(*) FROM audit)||' '||(SELECT count(*) FROM customers WHERE name LIKE '%(moved)')||' '||(SELECT sum(abalance) FROM pgbench_accounts)||' '||(SELECT count(*) FROM pgbench_history)")
	}
	later := after("shop")
	c.WaitArchived(t, c.SwitchWAL(t), 3*time.Minute)

	scratchRoot := filepath.Join(s.shared, "scratch")
	env := append(slices.Clone(s.readEnv), "PGARK_SPOOL_DIR="+s.spoolDir,
		"PATH="+serverBin+string(os.PathListSeparator)+os.Getenv("PATH"), // the PostgreSQL server of the backup's major
		"PGARK_SCRATCH="+scratchRoot)
	stamp := target.UTC().Format("2006-01-02 15:04:05.000000Z07:00")
	restoreArgs := func(extra ...string) []string {
		return append([]string{"dump-restore", "--config", s.conf, "--owner", "postgres", "--dsn", c.DSN(),
			"--pg-bin", bin, "--target-time", stamp, "--db", "shop"}, extra...)
	}

	// The table, back into the live database.
	r := mustOK(t, pgark(t, env, restoreArgs("--table", "public.orders")...))
	if !strings.Contains(r.stdout, "orders") {
		t.Errorf("dump-restore does not say what it restored: %s", r.stdout)
	}
	got, _ := orderRows(t, shop, false)
	if !slices.Equal(got, want) {
		t.Fatalf("orders restored as of T-1s: %d rows, want the %d committed by then (of %d)\nfirst difference: %s", len(got), len(want), len(all), firstDiff(got, want))
	}
	if v := queryDB(t, c, bin, "shop", "SELECT (SELECT count(*) FROM pg_indexes WHERE tablename = 'orders')||' '||(SELECT string_agg(contype::text, '' ORDER BY contype) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype <> 'n')"); v != "2 cfp" {
		// PostgreSQL 18 also records NOT NULL constraints ("n"): not counted.
		t.Errorf("orders' indexes and constraints after the restore: %q, want 2 indexes and check, foreign key and primary key", v)
	}
	if v := queryDB(t, c, bin, "shop", "SELECT (SELECT last_value FROM orders_id_seq) >= (SELECT max(id) FROM orders)"); v != "t" {
		t.Errorf("orders_id_seq behind the restored rows")
	}
	if v := after("shop"); v != later {
		t.Errorf("the writes made after T elsewhere changed: %q, want %q", v, later)
	}
	// Again: the table is there now, and is never overwritten.
	wantCode(t, pgark(t, env, restoreArgs("--table", "public.orders")...), 3, "--target-db")

	// The whole database as of T-1s, next to the live one.
	mustOK(t, pgark(t, env, restoreArgs("--create", "--target-db", "shop_at_t")...))
	copyConn := shopConn(t, c, "shop_at_t")
	if got, _ := orderRows(t, copyConn, false); !slices.Equal(got, want) {
		t.Errorf("shop_at_t.orders: %d rows, want %d\nfirst difference: %s", len(got), len(want), firstDiff(got, want))
	}
	if v := queryDB(t, c, bin, "shop_at_t", "SELECT (SELECT count(*) FROM audit)||' '||(SELECT count(*) FROM customers WHERE name LIKE '%(moved)')"); v != "0 0" {
		t.Errorf("shop_at_t has writes made after T: %q", v)
	}

	// --to-file keeps the archive as of T-1s for later.
	file := filepath.Join(s.shared, "shop-at-t.dump")
	mustOK(t, pgark(t, env, restoreArgs("--to-file", file)...))
	list, err := exec.Command(filepath.Join(bin, "pg_restore"), "--list", file).Output()
	if err != nil || !strings.Contains(string(list), "TABLE DATA public orders") {
		t.Errorf("pg_restore --list of the --to-file archive: %v\n%s", err, list)
	}

	// Nothing left: no scratch directory, no marker, no server.
	if exists(scratchRoot) {
		t.Errorf("scratch directory %s not removed", scratchRoot)
	}
	if markers, _ := filepath.Glob(filepath.Join(s.spoolDir, "drill", "markers", "*")); len(markers) != 0 {
		t.Errorf("markers left: %v", markers)
	}
	if out, err := exec.Command("pgrep", "-f", scratchRoot).Output(); err == nil {
		t.Errorf("a process still runs from the scratch directory: %s", out)
	}
}

func firstDiff(a, b []string) string {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return fmt.Sprintf("row %d: got %q, want %q", i, a[i], b[i])
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("lengths %d and %d", len(a), len(b))
	}
	return "none"
}
