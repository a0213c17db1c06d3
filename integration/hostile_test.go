package integration

// Hostile and malformed input through the binary: crafted backups whose tar
// streams try to leave PGDATA, damaged metadata objects, and the modes of the
// files pgark creates. None of these tests needs PostgreSQL: the backups are
// written into a real repository with the repo and backup packages, the
// normal way (zstd, age), and restored by the binary.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/local"
)

// crafter writes objects into an encrypted local repository as pgark does.
type crafter struct {
	t        *testing.T
	dir      string // the repository
	env      []string
	identity string
	store    storage.Store
	codec    repo.Codec
}

// newCrafter creates an encrypted local repository with the binary and
// opens it for writing from the test.
func newCrafter(t *testing.T) *crafter {
	t.Helper()
	identity, recipient := newKey(t)
	dir := filepath.Join(t.TempDir(), "repo")
	env := []string{"PGARK_REPO=" + dir, "PGARK_AGE_RECIPIENTS=" + recipient, "PGARK_AGE_IDENTITY_FILE=" + identity, ownerEnv()}
	mustOK(t, pgark(t, env, "init"))
	st, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := crypto.ParseRecipients(recipient, "")
	if err != nil {
		t.Fatal(err)
	}
	return &crafter{t: t, dir: dir, env: env, identity: identity, store: st, codec: repo.Codec{Compression: "zstd", Level: 3, Recipients: rs}}
}

// ownerEnv gives restore the running user as the owner (needed as root).
func ownerEnv() string { return fmt.Sprintf("PGARK_OWNER=%d:%d", os.Geteuid(), os.Getegid()) }

// put stores plain as an object (zstd, age) and returns its reference.
func (c *crafter) put(key string, plain []byte) catalog.ObjectRef {
	c.t.Helper()
	var buf bytes.Buffer
	w, err := repo.NewObjectWriter(&buf, c.codec)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		c.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		c.t.Fatal(err)
	}
	stored := int64(buf.Len())
	if err := c.store.Put(context.Background(), key, &buf, storage.PutOptions{Size: stored}); err != nil {
		c.t.Fatal(err)
	}
	sum := sha256.Sum256(plain)
	return catalog.ObjectRef{Key: key, Bytes: int64(len(plain)), SHA256: hex.EncodeToString(sum[:]), StoredBytes: stored}
}

// get reads an object's raw content.
func (c *crafter) get(key string) []byte {
	c.t.Helper()
	rc, _, err := c.store.Get(context.Background(), key)
	if err != nil {
		c.t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// replaceRaw replaces an object's content with raw bytes (plaintext, as
// backup.json is stored).
func (c *crafter) replaceRaw(key string, raw []byte) {
	c.t.Helper()
	ctx := context.Background()
	if err := c.store.Delete(ctx, key); err != nil {
		c.t.Fatal(err)
	}
	if err := c.store.Put(ctx, key, bytes.NewReader(raw), storage.PutOptions{Size: int64(len(raw))}); err != nil {
		c.t.Fatal(err)
	}
}

// craftedManifest is enough of a backup_manifest for restore (which checks
// only its shape; the members are checked at backup time).
const craftedManifest = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [],\n\"WAL-Ranges\": [],\n\"Manifest-Checksum\": \"0000000000000000000000000000000000000000000000000000000000000000\"}\n"

// backup writes a complete-looking backup whose base.tar is tarBytes (one
// part) and returns its metadata.
func (c *crafter) backup(id string, tarBytes []byte) *catalog.Meta {
	c.t.Helper()
	part := c.put(catalog.PartKey(id, "base.tar", 0), tarBytes)
	stop, _ := time.Parse("20060102T150405Z", id)
	m := &catalog.Meta{
		Format: catalog.MetaFormat, ID: id, Label: "crafted", Pgark: "test",
		StartTime: stop, EndTime: stop, StopTime: stop,
		StartLSN: "0/2000028", StartTimeline: 1, EndLSN: "0/2000138", EndTimeline: 1,
		SystemID: "7360000000000000001", PGVersionNum: 150010, PGMajor: 15, WalSegmentBytes: 16 << 20,
		Archives:          []catalog.Archive{{Name: "base.tar", Parts: []catalog.ObjectRef{part}, Bytes: part.Bytes}},
		Manifest:          c.put(catalog.ManifestKey(id), []byte(craftedManifest)),
		ManifestChecksums: "CRC32C",
		RawBytes:          part.Bytes, StoredBytes: part.StoredBytes,
		WALFirst: "000000010000000000000002", WALLast: "000000010000000000000002",
	}
	if err := repo.PutJSON(context.Background(), c.store, catalog.MetaKey(id), m); err != nil {
		c.t.Fatal(err)
	}
	return m
}

// member is one crafted tar member.
type member struct {
	name, link, body string
	typ              byte
	mode             int64
	claim            int64 // declared size when larger than body: the stream is cut after body
	format           tar.Format
}

func file(name, body string) member {
	return member{name: name, body: body, typ: tar.TypeReg, mode: 0o600}
}
func dir(name string) member { return member{name: name, typ: tar.TypeDir, mode: 0o700} }

// tarOf writes members (and the end-of-archive marker, unless a member is cut).
func tarOf(t *testing.T, members ...member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := &tar.Header{Name: m.name, Linkname: m.link, Typeflag: m.typ, Mode: m.mode, Size: int64(len(m.body)),
			ModTime: time.Unix(1700000000, 0), Format: m.format}
		if m.claim > h.Size {
			h.Size = m.claim
		}
		if m.typ != tar.TypeReg {
			h.Size = 0
		}
		if m.typ == tar.TypeChar || m.typ == tar.TypeBlock {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, m.body); err != nil {
			t.Fatal(err)
		}
		if m.claim > int64(len(m.body)) {
			tw.Flush() // ErrWriteTooLong aside, the header and body are out
			return buf.Bytes()
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// benign is a small data directory that restores cleanly.
func benign() []member {
	return []member{
		file("backup_label", "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: crafted\n"),
		file("PG_VERSION", "15\n"),
		dir("global"),
		file("global/1262", strings.Repeat("g", 8192)),
		dir("base"), dir("base/1"),
		file("base/1/1259", strings.Repeat("r", 20000)),
		file("postgresql.conf", "# crafted\n"),
		file("global/pg_control", strings.Repeat("C", 8192)),
	}
}

// snapshot lists every path below dir with its mode, size and content hash.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d", p, st.Mode(), st.Size())
		if st.Mode().IsRegular() {
			c, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %x", sha256.Sum256(c))
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestRestoreRefusesHostileBackups(t *testing.T) {
	c := newCrafter(t)
	sandbox := t.TempDir()
	// The sentinel: a directory outside every target, which hostile members aim at.
	sentinel := filepath.Join(sandbox, "sentinel")
	if err := os.MkdirAll(filepath.Join(sentinel, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sentinel, "file"), []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, sentinel)
	long := strings.Repeat("a", 120)
	cases := []struct {
		name    string
		members []member
		want    string
	}{
		{"dotdot", []member{file("../../sentinel/evil", "evil")}, "has a .. component"},
		{"inner dotdot", []member{dir("base/2"), file("base/2/../../../sentinel/evil", "evil")}, "has a .. component"},
		{"absolute path", []member{file(sentinel+"/evil", "evil")}, "has an absolute path"},
		{"long name with dotdot (PAX)", []member{{name: "../../sentinel/" + long, body: "evil", typ: tar.TypeReg, mode: 0o600, format: tar.FormatPAX}}, "has a .. component"},
		{"long name with dotdot (GNU)", []member{{name: "../../sentinel/" + long, body: "evil", typ: tar.TypeReg, mode: 0o600, format: tar.FormatGNU}}, "has a .. component"},
		{"symlink out, then a file through it", []member{
			{name: "pg_stat", link: sentinel, typ: tar.TypeSymlink, mode: 0o777}, file("pg_stat/evil", "evil")}, "is a symlink"},
		{"relative symlink out", []member{{name: "base/up", link: "../../../sentinel", typ: tar.TypeSymlink, mode: 0o777}}, "is a symlink"},
		{"tablespace link of no tablespace", []member{
			{name: "pg_tblspc/16385", link: sentinel, typ: tar.TypeSymlink, mode: 0o777}, file("pg_tblspc/16385/evil", "evil")}, "pg_tblspc may hold only"},
		{"hard link out", []member{{name: "hl", link: filepath.Join(sentinel, "file"), typ: tar.TypeLink, mode: 0o600}}, "is a hard link"},
		{"hard link up", []member{{name: "hl", link: "../sentinel/file", typ: tar.TypeLink, mode: 0o600}}, "is a hard link"},
		{"character device", []member{{name: "null", typ: tar.TypeChar, mode: 0o600}}, "device node"},
		{"block device", []member{{name: "sda", typ: tar.TypeBlock, mode: 0o600}}, "device node"},
		{"FIFO", []member{{name: "fifo", typ: tar.TypeFifo, mode: 0o600}}, "is a FIFO"},
		{"huge declared size", []member{{name: "base/1/big", body: "0123456789", typ: tar.TypeReg, mode: 0o600, claim: 1 << 40}}, "claims 1099511627776 bytes"},
		{"setuid file", []member{{name: "suid", body: "x", typ: tar.TypeReg, mode: 0o4755}}, "looser than"},
		{"reserved name", []member{file(".pgark-restore-in-progress", "x")}, "reserved by pgark"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("20261124T1545%02dZ", i)
			ms := benign()
			// The hostile members come between valid ones.
			ms = append(append(append([]member{}, ms[:4]...), tc.members...), ms[4:]...)
			c.backup(id, tarOf(t, ms...))
			target := filepath.Join(sandbox, "restore-"+id)
			r := pgark(t, c.env, "restore", id, target)
			wantCode(t, r, 3, tc.want)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			t.Logf("refused: %s", lines[len(lines)-1])
			if !strings.Contains(r.stderr, "pgark restore --force") {
				t.Errorf("the message does not say how to clean up: %s", r.stderr)
			}
			if after := snapshot(t, sentinel); after != before {
				t.Fatalf("the sentinel changed:\n%s\nwas:\n%s", after, before)
			}
			ents, err := os.ReadDir(sandbox)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if e.Name() != "sentinel" && !strings.HasPrefix(e.Name(), "restore-") {
					t.Fatalf("restore wrote %s outside its target", e.Name())
				}
			}
			if exists(filepath.Join(target, "global", "pg_control")) {
				t.Fatal("the refused restore left a startable directory")
			}
			for _, bad := range []string{"pg_stat", "base/up", "hl", "null", "sda", "fifo", "base/1/big", "suid"} {
				if st, err := os.Lstat(filepath.Join(target, bad)); err == nil && !st.Mode().IsRegular() && !st.IsDir() {
					t.Fatalf("%s was created as a %v", bad, st.Mode().Type())
				}
			}
		})
	}
	// The same repository restores a benign backup: the refusals are about
	// the members, not the set-up.
	c.backup("20261124T160000Z", tarOf(t, benign()...))
	mustOK(t, pgark(t, c.env, "restore", "20261124T160000Z", filepath.Join(sandbox, "restore-ok")))
	if !exists(filepath.Join(sandbox, "restore-ok", "global", "pg_control")) {
		t.Fatal("the benign backup was not restored")
	}
}

func TestDamagedMetadata(t *testing.T) {
	c := newCrafter(t)
	const id = "20261124T154500Z"
	m := c.backup(id, tarOf(t, benign()...))
	good := c.get(catalog.MetaKey(id))
	mustOK(t, pgark(t, c.env, "list"))
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		raw  func() []byte
		want string
	}{
		{"truncated", func() []byte { return js[:len(js)/2] }, "is damaged: unexpected end of JSON input"},
		{"empty", func() []byte { return nil }, "is damaged"},
		{"wrongly typed", func() []byte { return bytes.Replace(js, []byte(`"format":1`), []byte(`"format":"1"`), 1) }, "cannot unmarshal string"},
		{"an array", func() []byte { return []byte(`[{"format":1}]`) }, "cannot unmarshal array"},
		{"binary", func() []byte { return []byte("\x28\xb5\x2f\xfd\x00\x00") }, "is damaged"},
		{"oversized (70 MiB)", func() []byte { return append(bytes.TrimSpace(js), bytes.Repeat([]byte(" "), 70<<20)...) }, "larger than 1048576 bytes"},
		{"part key outside the backup", func() []byte {
			return bytes.Replace(js, []byte(`"key":"backups/`+id+`/base.tar.000.pgark"`), []byte(`"key":"backups/`+id+`/../../pgark.json"`), 1)
		}, "bad part"},
		{"another backup's id", func() []byte { return bytes.Replace(js, []byte(`"id":"`+id+`"`), []byte(`"id":"20261124T154501Z"`), 1) }, "names backup"},
		{"huge manifest", func() []byte {
			return bytes.Replace(js, []byte(fmt.Sprintf(`"bytes":%d,"sha256":"%s"`, m.Manifest.Bytes, m.Manifest.SHA256)), []byte(fmt.Sprintf(`"bytes":%d,"sha256":"%s"`, int64(1)<<40, m.Manifest.SHA256)), 1)
		}, "bad manifest object"},
	}
	target := filepath.Join(t.TempDir(), "pgdata")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw()
			if bytes.Equal(raw, js) {
				t.Fatal("the case does not change backup.json")
			}
			c.replaceRaw(catalog.MetaKey(id), raw)
			for _, args := range [][]string{{"list"}, {"list", "--json"}, {"restore", id, target}, {"restore", "latest", target}} {
				r := pgark(t, c.env, args...)
				wantCode(t, r, 3, tc.want)
				if !strings.Contains(r.stderr, "backup.json") {
					t.Errorf("%v: the message does not name backup.json: %s", args, r.stderr)
				}
				if exists(target) {
					t.Fatalf("%v: restore created %s from damaged metadata", args, target)
				}
			}
		})
	}
	// Put the good one back: all is well again.
	c.replaceRaw(catalog.MetaKey(id), good)
	mustOK(t, pgark(t, c.env, "list"))

	// A damaged pgark.json stops every command with a clear error.
	cfg := c.get(repo.ConfigKey)
	for _, raw := range [][]byte{cfg[:len(cfg)/3], bytes.Replace(cfg, []byte(`"format": 1`), []byte(`"format": "one"`), 1), bytes.Repeat([]byte("{"), 2<<20)} {
		c.replaceRaw(repo.ConfigKey, raw)
		wantCode(t, pgark(t, c.env, "list"), 3, "pgark.json in")
		wantCode(t, pgark(t, c.env, "restore", id, target), 3, "pgark.json in")
	}
}

// umask0 runs the binary with umask 0, so that every mode checked below is
// the one pgark asks for, not one the umask narrowed.
func umask0(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", `umask 0 && exec "$0" "$@"`, pgarkBin}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir()}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	checkOutput(t, r)
	return r
}

func TestFileModes(t *testing.T) {
	wantMode := func(t *testing.T, p string, want fs.FileMode) {
		t.Helper()
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", p, got, want)
		}
	}
	base := t.TempDir()

	// key generate: the identity is 0600 whatever the umask.
	id := filepath.Join(base, "keys", "identity.txt")
	os.MkdirAll(filepath.Dir(id), 0o755)
	r := mustOK(t, umask0(t, nil, "key", "generate", id))
	wantMode(t, id, 0o600)
	recipient := strings.TrimSpace(r.stdout)

	// A repository: objects 0640, directories 0750.
	repoDir := filepath.Join(base, "repo")
	env := []string{"PGARK_REPO=" + repoDir, "PGARK_AGE_RECIPIENTS=" + recipient, "PGARK_AGE_IDENTITY_FILE=" + id, ownerEnv()}
	mustOK(t, umask0(t, env, "init"))
	wantMode(t, repoDir, 0o750)
	wantMode(t, filepath.Join(repoDir, "pgark.json"), 0o640)

	// wal-push with push-ahead: the spool (and the parents it creates) 0700,
	// its records and lock 0600. Two synthetic segments, the second ready.
	pgdata := filepath.Join(base, "pgdata")
	walDir := filepath.Join(pgdata, "pg_wal")
	os.MkdirAll(filepath.Join(walDir, "archive_status"), 0o700)
	segs := []string{"000000010000000000000002", "000000010000000000000003"}
	for i, name := range segs {
		writeSegment(t, filepath.Join(walDir, name), uint64(2+i)*16<<20)
		os.WriteFile(filepath.Join(walDir, "archive_status", name+".ready"), nil, 0o600)
	}
	spool := filepath.Join(base, "cache", "pgark")
	pushEnv := append(env, "PGARK_SPOOL_DIR="+spool, "PGARK_PGDATA="+pgdata)
	mustOK(t, umask0(t, pushEnv, "wal-push", filepath.Join(walDir, segs[0])))
	wantMode(t, filepath.Join(base, "cache"), 0o700)
	records := 0
	err := filepath.WalkDir(spool, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			wantMode(t, p, 0o700)
			return nil
		}
		wantMode(t, p, 0o600)
		if strings.HasPrefix(d.Name(), segs[1]) {
			records++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if records == 0 {
		t.Errorf("no push-ahead record for %s in the spool: %s", segs[1], snapshot(t, spool))
	}
	filepath.WalkDir(filepath.Join(repoDir, "wal"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			wantMode(t, p, 0o750)
		} else if err == nil {
			wantMode(t, p, 0o640)
		}
		return nil
	})

	// wal-fetch: the segment written into pg_wal is 0600 (through a 0600
	// temporary file), and no temporary file is left.
	dest := filepath.Join(base, "restored-wal")
	os.MkdirAll(dest, 0o700)
	mustOK(t, umask0(t, append(env, "PGARK_FETCH_AHEAD=0"), "wal-fetch", segs[0], filepath.Join(dest, "RECOVERYXLOG")))
	wantMode(t, filepath.Join(dest, "RECOVERYXLOG"), 0o600)
	if ents, _ := os.ReadDir(dest); len(ents) != 1 {
		t.Errorf("wal-fetch left %d files in the destination directory", len(ents))
	}

	// restore: PGDATA 0700 (and what pgark creates in it), files as recorded
	// (0600 here), the recovery settings 0600.
	c := &crafter{t: t, dir: repoDir, env: env, identity: id}
	st, err := local.New(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := crypto.ParseRecipients(recipient, "")
	if err != nil {
		t.Fatal(err)
	}
	c.store, c.codec = st, repo.Codec{Compression: "zstd", Level: 3, Recipients: rs}
	c.backup("20261124T154500Z", tarOf(t, benign()...))
	target := filepath.Join(base, "new", "pgdata")
	mustOK(t, umask0(t, env, "restore", "20261124T154500Z", target))
	err = filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			wantMode(t, p, 0o700)
		} else {
			wantMode(t, p, 0o600)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"pg_wal", "pg_tblspc", "postgresql.auto.conf", "recovery.signal"} {
		if !exists(filepath.Join(target, p)) {
			t.Errorf("the restore did not create %s", p)
		}
	}
}

// writeSegment writes a 16 MiB file with a segment's long page header (all
// that wal-push checks) for the cluster 7360000000000000001.
func writeSegment(t *testing.T, path string, pageAddr uint64) {
	t.Helper()
	b := make([]byte, 16<<20)
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0xD116) // xlp_magic (PostgreSQL 16; never whitelisted)
	le.PutUint16(b[2:], 0x0002) // XLP_LONG_HEADER
	le.PutUint32(b[4:], 1)
	le.PutUint64(b[8:], pageAddr)
	le.PutUint64(b[24:], 7360000000000000001)
	le.PutUint32(b[32:], 16<<20)
	le.PutUint32(b[36:], 8192)
	for i := 40; i < len(b); i++ {
		b[i] = byte(i * 31)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
