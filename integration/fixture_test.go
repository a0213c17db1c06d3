package integration

import (
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/wal"
)

// segFixture holds real WAL files of one PostgreSQL 15 cluster, made once per
// test binary: a handful of segments and a .backup file.
type segFixture struct {
	dir      string
	segments []string // paths of complete segments, ascending
	backup   string   // path of a .backup file
	sysid    uint64
}

var (
	fixtureOnce sync.Once
	fixture     *segFixture
	fixtureErr  string
)

// realWAL returns real WAL files (copies; safe to modify or delete).
func realWAL(t *testing.T) *segFixture {
	t.Helper()
	fixtureOnce.Do(func() {
		t.Log("making the real-WAL fixture (PostgreSQL 15)")
		c := testenv.StartPG(t, testenv.PGOptions{Major: 15, Conf: map[string]string{
			"wal_keep_size": "1GB", "archive_mode": "on", "archive_command": "/bin/true",
		}})
		c.Exec(t, "CREATE TABLE f(i int, t text)")
		for i := 0; i < 5; i++ {
			c.Exec(t, "INSERT INTO f SELECT g, md5(g::text) FROM generate_series(1,20000) g")
			c.Exec(t, "SELECT pg_switch_wal()")
		}
		// One simple-protocol round trip: a non-exclusive backup must start
		// and stop in the same session.
		c.Exec(t, "SELECT pg_backup_start('fixture', true); SELECT pg_backup_stop();")
		c.Exec(t, "SELECT pg_switch_wal()")
		c.Exec(t, "CHECKPOINT")
		cur := c.QueryRow(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
		sysid := c.QueryRow(t, "SELECT system_identifier::text FROM pg_control_system()")
		c.Stop(t)
		dir, err := os.MkdirTemp("", "pgark-fixture-")
		if err != nil {
			fixtureErr = err.Error()
			return
		}
		f := &segFixture{dir: dir}
		ents, _ := os.ReadDir(filepath.Join(c.DataDir, "pg_wal"))
		for _, e := range ents {
			n, err := wal.ParseName(e.Name())
			if err != nil || (n.Kind == wal.KindSegment && e.Name() >= cur) {
				continue
			}
			dst := filepath.Join(dir, e.Name())
			if err := os.WriteFile(dst, readFile(t, filepath.Join(c.DataDir, "pg_wal", e.Name())), 0o644); err != nil {
				fixtureErr = err.Error()
				return
			}
			switch n.Kind {
			case wal.KindSegment:
				f.segments = append(f.segments, dst)
			case wal.KindBackup:
				f.backup = dst
			}
		}
		sort.Strings(f.segments)
		for _, ch := range sysid {
			f.sysid = f.sysid*10 + uint64(ch-'0')
		}
		if len(f.segments) < 4 || f.backup == "" {
			fixtureErr = "fixture: too few WAL files: " + strings.Join(f.segments, ",")
			return
		}
		fixture = f
	})
	if fixture == nil {
		t.Fatalf("real WAL fixture unavailable: %s", fixtureErr)
	}
	return fixture
}

// copyTo copies a fixture file into dir (optionally under another name).
func copyTo(t *testing.T, src, dir, name string) string {
	t.Helper()
	if name == "" {
		name = filepath.Base(src)
	}
	dst := filepath.Join(dir, name)
	if err := os.WriteFile(dst, readFile(t, src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// foreignSegment returns a copy of seg whose header claims another cluster.
func foreignSegment(t *testing.T, seg, dir string) string {
	b := readFile(t, seg)
	var id [8]byte
	rand.Read(id[:])
	copy(b[24:32], id[:])
	if binary.LittleEndian.Uint64(b[24:32]) == 0 {
		b[24] = 1
	}
	dst := filepath.Join(dir, filepath.Base(seg))
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}
