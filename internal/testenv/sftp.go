package testenv

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SFTPServer is a running OpenSSH sshd that serves SFTP (internal-sftp) on
// 127.0.0.1 with its own configuration, generated host key and client key,
// all in a temporary directory. When the tests run as root, sshd runs as
// the postgres user and User is postgres, so that archive_command (run by
// PostgreSQL as postgres) can read IdentityFile and KnownHosts and logs in
// as the owner of the repository files.
type SFTPServer struct {
	Host         string // 127.0.0.1
	Port         int
	User         string // the login user (the user sshd runs as)
	Dir          string // a directory on the "server" for repositories (absolute)
	IdentityFile string // the client's private key (OpenSSH format)
	KnownHosts   string // a known_hosts file listing the server's host key
	HostKey      ssh.PublicKey

	base string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// SFTPBinPath returns the path of the sshd binary: $PGARK_SSHD, else
// /usr/sbin/sshd (Debian's openssh-server, installed by .ci/deps.sh).
func SFTPBinPath() string {
	if v := os.Getenv("PGARK_SSHD"); v != "" {
		return v
	}
	return "/usr/sbin/sshd"
}

// SFTPStart starts sshd on 127.0.0.1 and a free port, waits until it
// answers, and stops it at t.Cleanup. It is an end-to-end helper: skipped
// with -short; a missing sshd skips the test (fails it with
// $PGARK_TEST_REQUIRE=1). Its log is shown when the test fails.
func SFTPStart(t testing.TB) *SFTPServer {
	t.Helper()
	return SFTPStartWith(t, SFTPOptions{})
}

// SFTPOptions configures SFTPStartWith.
type SFTPOptions struct {
	// InternalSFTPArgs are arguments of sshd's internal-sftp, e.g.
	// "-P remove,rmdir" to refuse requests as a restricted login would.
	InternalSFTPArgs string
}

// SFTPStartWith is SFTPStart with options.
func SFTPStartWith(t testing.TB, o SFTPOptions) *SFTPServer {
	t.Helper()
	EndToEnd(t)
	bin := SFTPBinPath()
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		Missing(t, fmt.Errorf("testenv: SFTP test server %s not found (apt package openssh-server)", bin))
	}
	base := SharedDir(t)
	s := &SFTPServer{
		Host:         "127.0.0.1",
		Dir:          filepath.Join(base, "data"),
		IdentityFile: filepath.Join(base, "id_ed25519"),
		KnownHosts:   filepath.Join(base, "known_hosts"),
		base:         base,
		log:          filepath.Join(base, "sshd.log"),
	}
	if pgAsRoot() {
		pu, err := pgPostgresUser()
		if err != nil {
			t.Fatal(err)
		}
		s.User = pu.name
	} else {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		s.User = u.Username
	}
	if err := os.Mkdir(s.Dir, 0o750); err != nil {
		t.Fatal(err)
	}
	hostPub := writeKey(t, filepath.Join(base, "host_ed25519"))
	s.HostKey = hostPub
	clientPub := writeKey(t, s.IdentityFile)
	if err := os.WriteFile(filepath.Join(base, "authorized_keys"), ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for range 3 {
		port := FreePort(t)
		lastErr = s.start(t, bin, port, o)
		if lastErr == nil {
			t.Cleanup(func() {
				s.stop()
				if t.Failed() {
					t.Logf("sshd log:\n%s", s.Log())
				}
			})
			return s
		}
	}
	t.Fatalf("starting the SFTP test server: %v", lastErr)
	return nil
}

// writeKey writes a new ed25519 private key (OpenSSH format, mode 0600) and
// returns its public key.
func writeKey(t testing.TB, file string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
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
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func (s *SFTPServer) start(t testing.TB, bin string, port int, o SFTPOptions) error {
	s.Port = port
	conf := filepath.Join(s.base, "sshd_config")
	cfg := strings.Join([]string{
		"Port " + strconv.Itoa(port),
		"ListenAddress 127.0.0.1",
		"HostKey " + filepath.Join(s.base, "host_ed25519"),
		"PidFile none",
		"AuthorizedKeysFile " + filepath.Join(s.base, "authorized_keys"),
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"AllowTcpForwarding no",
		"X11Forwarding no",
		"PermitTTY no",
		"MaxStartups 100",
		"MaxSessions 100",
		"Subsystem sftp internal-sftp",
		strings.TrimSpace("ForceCommand internal-sftp " + o.InternalSFTPArgs),
		"LogLevel VERBOSE",
		"",
	}, "\n")
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		return err
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(net.JoinHostPort(s.Host, strconv.Itoa(port)))}, s.HostKey)
	if err := os.WriteFile(s.KnownHosts, []byte(line+"\n"), 0o644); err != nil {
		return err
	}
	// Everything belongs to the user sshd runs as (host key 0600 included).
	ChownToPostgres(t, s.base)
	logf, err := os.Create(s.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	// sshd needs its absolute path to re-execute itself.
	cmd := exec.Command(bin, "-D", "-e", "-f", conf)
	cmd.Dir = s.base
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	RunAsPostgres(cmd)
	if err := startFromSpawner(cmd); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("sshd exited at start (%v):\n%s", cmd.ProcessState, s.Log())
		default:
		}
		if s.answers() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return fmt.Errorf("sshd did not answer on port %d within 30s:\n%s", port, s.Log())
}

// answers reports whether sshd sends its SSH banner.
func (s *SFTPServer) answers() bool {
	c, err := net.DialTimeout("tcp", s.Addr(), 2*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

// stop stops sshd: the whole group, as sshd forks a process per connection.
func (s *SFTPServer) stop() { stopGroup(s.cmd, s.done) }

// Addr is HOST:PORT of the server.
func (s *SFTPServer) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Log returns sshd's output so far.
func (s *SFTPServer) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// NewDir creates a new empty directory below Dir, owned by the login user,
// and returns its absolute path.
func (s *SFTPServer) NewDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp(s.Dir, "r")
	if err != nil {
		t.Fatal(err)
	}
	ChownToPostgres(t, d)
	return d
}

// URL returns sftp://USER@127.0.0.1:PORT/DIR for a directory on the server.
func (s *SFTPServer) URL(dir string) string {
	return "sftp://" + s.User + "@" + s.Addr() + dir
}

// Env returns the environment for a pgark child process that uses this
// server: its identity file and known_hosts file.
func (s *SFTPServer) Env() []string {
	return []string{
		"PGARK_SFTP_IDENTITY_FILE=" + s.IdentityFile,
		"PGARK_SFTP_KNOWN_HOSTS=" + s.KnownHosts,
	}
}
