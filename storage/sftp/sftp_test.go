package sftp

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/local"
	"github.com/pgark/pgark/storage/retry"
	"github.com/pgark/pgark/storage/storagetest"
)

func TestParseURL(t *testing.T) {
	c, err := ParseURL("sftp://backup@db.example.com:2222/srv/pgark/main")
	if err != nil {
		t.Fatal(err)
	}
	if c.User != "backup" || c.Host != "db.example.com" || c.Port != 2222 || c.Path != "/srv/pgark/main" {
		t.Fatalf("ParseURL = %+v", c)
	}
	if got := c.URL(); got != "sftp://backup@db.example.com:2222/srv/pgark/main" {
		t.Errorf("URL() = %q", got)
	}
	c, err = ParseURL("sftp://u@[::1]/r")
	if err != nil || c.Host != "::1" || c.Port != 0 || c.addr() != "[::1]:22" || c.URL() != "sftp://u@::1/r" && c.URL() != "sftp://u@[::1]/r" {
		t.Fatalf("ParseURL(IPv6) = %+v, %v (URL %q)", c, err, c.URL())
	}
	for _, bad := range []string{
		"sftp://host/path",          // no user
		"sftp://u:pw@host/path",     // password
		"sftp://u@host",             // no path
		"sftp://u@host/",            // root
		"sftp://u@host:99999/p",     // port
		"sftp://u@/p",               // no host
		"s3://u@host/p",             // scheme
		"sftp://u@host/p?x=1",       // query
		"sftp://u@host:abc/p",       // port
		"sftp://u@host/p#fragment",  // fragment
		"sftp://u@host/%zz",         // escape
		"sftp://u@host:0/p",         // port 0
		"sftp://u@host/../../../..", // cleans to /
	} {
		if _, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) succeeded", bad)
		}
	}
}

func newStore(t *testing.T, srv *testenv.SFTPServer) *Store {
	t.Helper()
	cfg, err := ParseURL(srv.URL(srv.NewDir(t)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.IdentityFile, cfg.KnownHostsFile = srv.IdentityFile, srv.KnownHosts
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	srv := testenv.SFTPStart(t)
	storagetest.Run(t, func(t *testing.T) storage.Store { return newStore(t, srv) })
}

func TestProbe(t *testing.T) {
	srv := testenv.SFTPStart(t)
	s := newStore(t, srv)
	if err := s.Probe(t.Context()); err != nil {
		t.Fatalf("Probe against OpenSSH: %v", err)
	}
	if !s.dirSync {
		t.Errorf("OpenSSH's sftp-server lets directories be fsynced, but the store did not find out")
	}
	// The probe leaves nothing behind.
	ents, err := os.ReadDir(s.root)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("the probe left %d entries, e.g. %s", len(ents), ents[0].Name())
	}
}

// TestLocalCompatible: an SFTP repository's files are local-store objects.
func TestLocalCompatible(t *testing.T) {
	srv := testenv.SFTPStart(t)
	s := newStore(t, srv)
	ctx := t.Context()
	meta := map[string]string{storage.MetaSHA256: "abc", "k": "v"}
	if err := s.Put(ctx, "a/b/obj", strings.NewReader("payload"), storage.PutOptions{Size: 7, Meta: meta}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Swap(ctx, "config.json", []byte(`{"x":1}`), ""); err != nil {
		t.Fatal(err)
	}
	_, sv, err := s.ReadSmall(ctx, "config.json", 100)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := local.New(s.root) // the server's directory, on this machine
	if err != nil {
		t.Fatal(err)
	}
	rc, info, err := ls.Get(ctx, "a/b/obj")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "payload" || info.Meta["k"] != "v" || info.Meta[storage.MetaSHA256] != "abc" {
		t.Fatalf("local store reads %q %v", b, info.Meta)
	}
	_, lv, err := ls.ReadSmall(ctx, "config.json", 100)
	if err != nil || lv != sv {
		t.Fatalf("local version %q, sftp version %q (%v)", lv, sv, err)
	}
}

func TestHostKeyChecks(t *testing.T) {
	srv := testenv.SFTPStart(t)
	ctx := t.Context()
	dir := t.TempDir()
	cfg, err := ParseURL(srv.URL(srv.NewDir(t)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.IdentityFile = srv.IdentityFile

	// Unknown host: an empty known_hosts file.
	cfg.KnownHostsFile = filepath.Join(dir, "empty")
	if err := os.WriteFile(cfg.KnownHostsFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Stat(ctx, "x")
	if err == nil || !storage.IsPermanent(err) || storage.IsNotFound(err) || !strings.Contains(err.Error(), "127.0.0.1") || !strings.Contains(err.Error(), "not in") {
		t.Errorf("unknown host: %v", err)
	}

	// Mismatch: another key listed for the host.
	other, _, err := ed25519Pub()
	if err != nil {
		t.Fatal(err)
	}
	cfg.KnownHostsFile = filepath.Join(dir, "wrong")
	line := knownhosts.Line([]string{knownhosts.Normalize(srv.Addr())}, other)
	if err := os.WriteFile(cfg.KnownHostsFile, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	_, err = s.Stat(ctx, "x")
	if err == nil || !storage.IsPermanent(err) || !strings.Contains(err.Error(), "does not match") || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("mismatching host key: %v", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}

	// Missing files are errors at New.
	cfg.KnownHostsFile = filepath.Join(dir, "missing")
	if _, err := New(cfg); err == nil {
		t.Error("New with a missing known_hosts file succeeded")
	}
	cfg.KnownHostsFile, cfg.IdentityFile = srv.KnownHosts, ""
	if _, err := New(cfg); err == nil {
		t.Error("New without an identity file succeeded")
	}

	// A key the server does not accept.
	cfg.IdentityFile = filepath.Join(dir, "id_other")
	writeTestKey(t, cfg.IdentityFile)
	if s, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	_, err = s.Stat(ctx, "x")
	if err == nil || !storage.IsPermanent(err) || storage.IsNotFound(err) {
		t.Errorf("refused key: %v", err)
	}
}

func TestPermissionDenied(t *testing.T) {
	srv := testenv.SFTPStart(t)
	s := newStore(t, srv)
	ctx := t.Context()
	if err := s.Put(ctx, "p/obj", strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	// sshd runs as an unprivileged user (postgres when the tests run as
	// root): a directory it cannot enter gives permission errors.
	p := filepath.Join(s.root, "p")
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(p, 0o750)
	_, err := s.Stat(ctx, "p/obj")
	if err == nil || storage.IsNotFound(err) || !storage.IsPermanent(err) {
		t.Fatalf("Stat in an unreadable directory: %v", err)
	}
	err = s.Put(ctx, "p/obj2", strings.NewReader("x"), storage.PutOptions{Size: 1})
	if err == nil || !storage.IsPermanent(err) || storage.IsExists(err) {
		t.Fatalf("Put in an unwritable directory: %v", err)
	}
}

// TestStaleGuard: a guard left by a dead writer is broken once stale, and
// a fresh one makes Swap wait.
func TestStaleGuard(t *testing.T) {
	srv := testenv.SFTPStart(t)
	s := newStore(t, srv)
	ctx := t.Context()
	v, err := s.Swap(ctx, "lock", []byte("one"), "")
	if err != nil {
		t.Fatal(err)
	}
	g := filepath.Join(s.root, storage.TempPrefix+guardInfix+"lock")
	if err := os.WriteFile(g, []byte("deadwriter"), 0o640); err != nil {
		t.Fatal(err)
	}
	testenv.ChownToPostgres(t, g)
	// Fresh: Swap waits until the context ends.
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = s.Swap(short, "lock", []byte("two"), v)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Swap under a fresh guard: %v, want it to wait", err)
	}
	// Stale: broken, and the swap goes through.
	old := time.Now().Add(-GuardStale - time.Minute)
	if err := os.Chtimes(g, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Swap(ctx, "lock", []byte("two"), v); err != nil {
		t.Fatalf("Swap under a stale guard: %v", err)
	}
	b, _, err := s.ReadSmall(ctx, "lock", 10)
	if err != nil || string(b) != "two" {
		t.Fatalf("after the swap: %q, %v", b, err)
	}
	ents, _ := os.ReadDir(s.root)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), storage.TempPrefix) {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// TestConnectionCutMidUpload cuts the TCP connection in the middle of an
// upload: no object appears, and the retry decorator completes the Put
// over a new connection.
func TestConnectionCutMidUpload(t *testing.T) {
	srv := testenv.SFTPStart(t)
	proxy := newCutProxy(t, srv.Addr())
	cfg, err := ParseURL(srv.URL(srv.NewDir(t)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.IdentityFile, cfg.KnownHostsFile = srv.IdentityFile, srv.KnownHosts
	cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", proxy.addr())
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	data := make([]byte, 8<<20)
	rand.Read(data)

	// Without retries: the cut fails the Put and leaves no object.
	proxy.cutAfter(2 << 20)
	err = s.Put(ctx, "wal/seg1", bytes.NewReader(data), storage.PutOptions{Size: int64(len(data))})
	if err == nil {
		t.Fatal("Put through a cut connection succeeded")
	}
	if storage.IsPermanent(err) {
		t.Fatalf("a cut connection is a permanent error: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.root, "wal", "seg1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an object appeared after a failed Put: %v", err)
	}
	if proxy.cuts.Load() != 1 {
		t.Fatalf("the proxy cut %d connections, want 1", proxy.cuts.Load())
	}

	// With the retry decorator: the next attempt reconnects and succeeds.
	proxy.cutAfter(2 << 20)
	rs := retry.New(s, retry.Config{MaxElapsed: time.Minute, Initial: 10 * time.Millisecond}, nil)
	if err := rs.Put(ctx, "wal/seg2", bytes.NewReader(data), storage.PutOptions{Size: int64(len(data))}); err != nil {
		t.Fatalf("Put with retries: %v", err)
	}
	if proxy.cuts.Load() != 2 {
		t.Fatalf("the proxy cut %d connections, want 2", proxy.cuts.Load())
	}
	rc, _, err := rs.Get(ctx, "wal/seg2")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want the %d put", len(got), err, len(data))
	}
	// No temporary file of the cut attempt is listed.
	var keys []string
	if err := s.List(ctx, "", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "wal/seg2" {
		t.Fatalf("List = %q", keys)
	}
}

// cutProxy forwards TCP connections to a target and, when armed, cuts the
// next connection after it has carried n bytes from the client.
type cutProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	armed  int64 // bytes after which to cut; 0: not armed
	cuts   atomic.Int32
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target}
	t.Cleanup(func() { l.Close() })
	go p.serve()
	return p
}

func (p *cutProxy) addr() string { return p.l.Addr().String() }

func (p *cutProxy) cutAfter(n int64) {
	p.mu.Lock()
	p.armed = n
	p.mu.Unlock()
}

func (p *cutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *cutProxy) handle(c net.Conn) {
	defer c.Close()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer u.Close()
	go func() {
		io.Copy(c, u)
		c.Close()
	}()
	buf := make([]byte, 32<<10)
	var seen int64
	for {
		n, err := c.Read(buf)
		if n > 0 {
			seen += int64(n)
			p.mu.Lock()
			cut := p.armed > 0 && seen > p.armed
			if cut {
				p.armed = 0
			}
			p.mu.Unlock()
			if cut {
				p.cuts.Add(1)
				return // both ends closed by the defers
			}
			if _, err := u.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func ed25519Pub() (ssh.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sp, err := ssh.NewPublicKey(pub)
	return sp, priv, err
}

func writeTestKey(t *testing.T, file string) {
	t.Helper()
	_, priv, err := ed25519Pub()
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRestrictedPushLogin: under a login whose sftp-server refuses removes,
// renames and mode changes (docs/sftp.md's push host), writes and reads
// work, and deletes are permission errors that remove nothing.
func TestRestrictedPushLogin(t *testing.T) {
	srv := testenv.SFTPStartWith(t, testenv.SFTPOptions{InternalSFTPArgs: "-P remove,rmdir,rename,posix-rename,setstat,fsetstat,lsetstat"})
	s := newStore(t, srv)
	ctx := t.Context()
	if err := s.Put(ctx, "wal/a/seg", strings.NewReader("payload"), storage.PutOptions{Size: 7}); err != nil {
		t.Fatalf("Put under a restricted login: %v", err)
	}
	err := s.Put(ctx, "wal/a/seg", strings.NewReader("other"), storage.PutOptions{Size: 5})
	if !storage.IsExists(err) {
		t.Fatalf("second Put: %v, want ErrExists", err)
	}
	rc, _, err := s.Get(ctx, "wal/a/seg")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "payload" {
		t.Fatalf("Get = %q", b)
	}
	err = s.Delete(ctx, "wal/a/seg")
	if err == nil || !storage.IsPermanent(err) || storage.IsNotFound(err) {
		t.Fatalf("Delete under a restricted login: %v, want a permission error", err)
	}
	if _, err := s.Stat(ctx, "wal/a/seg"); err != nil {
		t.Fatalf("the object is gone after a refused Delete: %v", err)
	}
	var keys []string
	if err := s.List(ctx, "", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil || len(keys) != 1 {
		t.Fatalf("List = %q, %v", keys, err)
	}
}

// BenchmarkPutGetSegment pushes and fetches 16 MiB WAL-segment-sized
// objects over loopback (informational: no network latency).
func BenchmarkPutGetSegment(b *testing.B) {
	srv := testenv.SFTPStart(b)
	cfg, err := ParseURL(srv.URL(srv.NewDir(b)))
	if err != nil {
		b.Fatal(err)
	}
	cfg.IdentityFile, cfg.KnownHostsFile = srv.IdentityFile, srv.KnownHosts
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	data := make([]byte, 16<<20)
	rand.Read(data)
	b.Run("put", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; b.Loop(); i++ {
			if err := s.Put(ctx, fmt.Sprintf("wal/p%08d", i), bytes.NewReader(data), storage.PutOptions{Size: int64(len(data))}); err != nil {
				b.Fatal(err)
			}
		}
	})
	if err := s.Put(ctx, "wal/seg", bytes.NewReader(data), storage.PutOptions{Size: int64(len(data))}); err != nil {
		b.Fatal(err)
	}
	// What each archive_command call pays first: connect, authenticate,
	// start the SFTP session, and one Stat.
	b.Run("connect-stat", func(b *testing.B) {
		for b.Loop() {
			s2, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s2.Stat(ctx, "wal/seg"); err != nil {
				b.Fatal(err)
			}
			s2.Close()
		}
	})
	b.Run("get", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			rc, _, err := s.Get(ctx, "wal/seg")
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil || n != int64(len(data)) {
				b.Fatalf("read %d bytes: %v", n, err)
			}
		}
	})
}

// TestServerDown: a server that does not answer is a retryable error, not
// "not found".
func TestServerDown(t *testing.T) {
	srv := testenv.SFTPStart(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	cfg, err := ParseURL(srv.URL("/x"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.IdentityFile, cfg.KnownHostsFile = srv.IdentityFile, srv.KnownHosts
	cfg.Dial = func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Stat(t.Context(), "k")
	if err == nil || storage.IsPermanent(err) || storage.IsNotFound(err) {
		t.Fatalf("Stat with the server down: %v, want a retryable error", err)
	}
}
