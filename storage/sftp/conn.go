package sftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pgark/pgark/storage"
)

// Config is how to reach the repository.
type Config struct {
	User string
	Host string
	Port int    // 22 when zero
	Path string // absolute directory of the repository on the server

	// IdentityFile is the private key (OpenSSH or PEM format, not
	// passphrase-protected) that authenticates User.
	IdentityFile string
	// KnownHostsFile lists the server's host keys (OpenSSH known_hosts
	// format). Required: unknown hosts are refused.
	KnownHostsFile string
	// DialTimeout bounds connecting and the SSH handshake (default 30s).
	DialTimeout time.Duration
	// KeepAlive is the interval of SSH keepalive requests; a connection
	// that does not answer one within it is closed, so that calls stuck on
	// a dead connection fail (and are retried) instead of hanging
	// (default 15s).
	KeepAlive time.Duration
	// Dial, when set, replaces the TCP dial (tests route the connection
	// through a fault proxy with it).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// ParseURL parses sftp://USER@HOST[:PORT]/PATH into the address fields of
// a Config. PATH is an absolute path on the server.
func ParseURL(s string) (Config, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Config{}, fmt.Errorf("invalid SFTP URL %q: %v", s, err)
	}
	if u.Scheme != "sftp" {
		return Config{}, fmt.Errorf("invalid SFTP URL %q: the scheme must be sftp://", s)
	}
	if u.User == nil || u.User.Username() == "" {
		return Config{}, fmt.Errorf("invalid SFTP URL %q: no user (sftp://USER@HOST/PATH)", s)
	}
	if _, ok := u.User.Password(); ok {
		return Config{}, fmt.Errorf("invalid SFTP URL %q: passwords are not supported; use sftp-identity-file", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Config{}, fmt.Errorf("invalid SFTP URL %q: no query or fragment allowed", s)
	}
	cfg := Config{User: u.User.Username(), Host: u.Hostname()}
	if cfg.Host == "" {
		return Config{}, fmt.Errorf("invalid SFTP URL %q: no host", s)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Config{}, fmt.Errorf("invalid SFTP URL %q: bad port %q", s, p)
		}
		cfg.Port = n
	}
	cfg.Path = path.Clean("/" + strings.TrimPrefix(u.Path, "/"))
	if u.Path == "" || cfg.Path == "/" {
		return Config{}, fmt.Errorf("invalid SFTP URL %q: no directory path (sftp://USER@HOST/PATH)", s)
	}
	return cfg, nil
}

func (c Config) addr() string {
	port := c.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(port))
}

// URL returns the repository's URL (no secrets in it).
func (c Config) URL() string {
	u := url.URL{Scheme: "sftp", User: url.User(c.User), Host: c.Host, Path: c.Path}
	if c.Port != 0 && c.Port != 22 {
		u.Host = c.addr()
	}
	return u.String()
}

// conn is one SSH connection with its SFTP session.
type conn struct {
	ssh  *ssh.Client
	sftp *sftp.Client
	done chan struct{}
}

func (c *conn) close() {
	c.sftp.Close()
	c.ssh.Close()
}

// sshConfig builds the client configuration: the key, and host key checks
// against the known_hosts file, restricted to the key types listed there
// for this host (so that the server is asked for a key we can check).
func sshConfig(cfg Config) (*ssh.ClientConfig, error) {
	if cfg.IdentityFile == "" {
		return nil, errors.New("no identity file: set sftp-identity-file to the private key that logs in")
	}
	keyPEM, err := os.ReadFile(cfg.IdentityFile)
	if err != nil {
		return nil, fmt.Errorf("sftp identity file: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		var pp *ssh.PassphraseMissingError
		if errors.As(err, &pp) {
			return nil, fmt.Errorf("sftp identity file %s: passphrase-protected keys are not supported; use a key without a passphrase readable only by the backup user", cfg.IdentityFile)
		}
		return nil, fmt.Errorf("sftp identity file %s: %w", cfg.IdentityFile, err)
	}
	if cfg.KnownHostsFile == "" {
		return nil, errors.New("no known_hosts file: set sftp-known-hosts")
	}
	check, err := knownhosts.New(cfg.KnownHostsFile)
	if err != nil {
		return nil, fmt.Errorf("sftp known_hosts file: %w", err)
	}
	addr := cfg.addr()
	hostKeyCallback := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := check(hostname, remote, key)
		var ke *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ke) && len(ke.Want) == 0:
			return hostKeyError{fmt.Errorf("host %s is not in %s (its %s key is %s): add it after checking the fingerprint, e.g. with ssh-keyscan; unknown hosts are never trusted", knownhosts.Normalize(hostname), cfg.KnownHostsFile, key.Type(), ssh.FingerprintSHA256(key))}
		case errors.As(err, &ke):
			return hostKeyError{fmt.Errorf("host key of %s does not match %s (got %s %s): the server changed its key or someone is in the middle", knownhosts.Normalize(hostname), cfg.KnownHostsFile, key.Type(), ssh.FingerprintSHA256(key))}
		}
		return hostKeyError{fmt.Errorf("host key of %s: %w", knownhosts.Normalize(hostname), err)}
	}
	return &ssh.ClientConfig{
		User:              cfg.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   hostKeyCallback,
		HostKeyAlgorithms: knownAlgorithms(check, addr),
		Timeout:           cfg.DialTimeout,
	}, nil
}

// hostKeyError is a refused host key: retrying cannot help.
type hostKeyError struct{ error }

func (e hostKeyError) Unwrap() error { return e.error }

// knownAlgorithms returns the host key algorithms that match the keys
// listed for addr (nil, the default list, when none is).
func knownAlgorithms(check ssh.HostKeyCallback, addr string) []string {
	// Asking about a key that cannot be listed returns the listed ones.
	probe := fakeKey{}
	err := check(addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}, probe)
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	add := func(a ...string) {
		for _, x := range a {
			if !seen[x] {
				seen[x] = true
				algos = append(algos, x)
			}
		}
	}
	for _, k := range ke.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	return algos
}

// fakeKey is a public key no known_hosts file lists.
type fakeKey struct{}

func (fakeKey) Type() string                        { return "pgark-probe" }
func (fakeKey) Marshal() []byte                     { return []byte("pgark-probe") }
func (fakeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key") }

// dial connects, authenticates and starts the SFTP session.
func (s *Store) dial(ctx context.Context) (*conn, error) {
	timeout := s.cfg.DialTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := s.cfg.addr()
	var (
		nc  net.Conn
		err error
	)
	if s.cfg.Dial != nil {
		nc, err = s.cfg.Dial(dctx, addr)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	deadline, _ := dctx.Deadline()
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(dctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	// The deadline (and ctx) bound the handshake and the start of the
	// SFTP session; then keepalives watch the connection.
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, s.sshCfg)
	if err != nil {
		stop()
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		e := fmt.Errorf("ssh to %s@%s: %w", s.cfg.User, addr, err)
		msg := err.Error()
		var hk hostKeyError
		if errors.As(err, &hk) || strings.Contains(msg, "unable to authenticate") || strings.Contains(msg, "host key") ||
			strings.Contains(msg, "known_hosts") || strings.Contains(msg, "no common algorithm") {
			return nil, &storage.PermanentError{Err: e}
		}
		return nil, e
	}
	client := ssh.NewClient(sc, chans, reqs)
	sc2, err := sftp.NewClient(client, sftp.UseConcurrentWrites(true), sftp.UseFstat(true))
	stop()
	if err != nil {
		client.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("start the sftp subsystem on %s: %w", addr, err)
	}
	nc.SetDeadline(time.Time{})
	c := &conn{ssh: client, sftp: sc2, done: make(chan struct{})}
	go s.keepAlive(c)
	return c, nil
}

// keepAlive closes c when a keepalive request goes unanswered.
func (s *Store) keepAlive(c *conn) {
	every := s.cfg.KeepAlive
	if every <= 0 {
		every = 15 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		answered := make(chan error, 1)
		go func() {
			_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
			answered <- err
		}()
		select {
		case <-c.done:
			return
		case err := <-answered:
			if err != nil {
				s.drop(c)
				return
			}
		case <-time.After(every):
			s.drop(c)
			return
		}
	}
}

// client returns the current connection, connecting if there is none.
func (s *Store) client(ctx context.Context) (*conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		return s.conn, nil
	}
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	s.conn = c
	return c, nil
}

// drop closes c and forgets it, so that the next call reconnects.
func (s *Store) drop(c *conn) {
	s.mu.Lock()
	if s.conn == c {
		s.conn = nil
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	s.closeOnce(c)
}

func (s *Store) closeOnce(c *conn) {
	s.mu.Lock()
	select {
	case <-c.done:
		s.mu.Unlock()
		return
	default:
		close(c.done)
	}
	s.mu.Unlock()
	c.close()
}

// Close closes the connection (the Store reconnects if used again).
func (s *Store) Close() error {
	s.mu.Lock()
	c := s.conn
	s.conn = nil
	s.mu.Unlock()
	if c != nil {
		s.closeOnce(c)
	}
	return nil
}

// isStatus reports whether err is an answer of the SFTP server (as opposed
// to a failure of the connection).
func isStatus(err error) bool {
	if errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, sftp.ErrSSHFxNoConnection) {
		return false
	}
	var se *sftp.StatusError
	return errors.As(err, &se) || errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) ||
		err == io.EOF || errors.Is(err, sftp.ErrSSHFxFailure) || errors.Is(err, sftp.ErrSSHFxOpUnsupported) ||
		errors.Is(err, sftp.ErrSSHFxBadMessage) || errors.Is(err, sftp.ErrSSHFxPermissionDenied) ||
		errors.Is(err, sftp.ErrSSHFxNoSuchFile)
}

// check drops c when err is a connection failure, and returns err.
func (s *Store) check(c *conn, err error) error {
	if err != nil && !isStatus(err) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		s.drop(c)
	}
	return err
}

// wrapErr turns an SFTP error into a store error: SSH_FX_NO_SUCH_FILE means
// "not found" when notFound is set; errors that retrying cannot fix are
// PermanentErrors.
func (s *Store) wrapErr(op, key string, err error, notFound bool) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrExists) || errors.Is(err, storage.ErrChanged) {
		return err
	}
	var perm *storage.PermanentError
	if errors.As(err, &perm) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if notFound && errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s %s: %w", op, s.describe(key), storage.ErrNotFound)
	}
	e := fmt.Errorf("%s %s: %w", op, s.describe(key), err)
	var se *sftp.StatusError
	if errors.Is(err, os.ErrPermission) || errors.Is(err, sftp.ErrSSHFxOpUnsupported) ||
		errors.Is(err, sftp.ErrSSHFxBadMessage) ||
		(errors.As(err, &se) && (se.FxCode() == sftp.ErrSSHFxOpUnsupported || se.FxCode() == sftp.ErrSSHFxBadMessage || se.FxCode() == sftp.ErrSSHFxPermissionDenied)) {
		return &storage.PermanentError{Err: e}
	}
	return e
}

func (s *Store) describe(key string) string {
	return fmt.Sprintf("%q in %s", key, s)
}
