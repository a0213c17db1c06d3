package sftp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/objfile"
)

const (
	fileMode = 0o640
	dirMode  = 0o750
	// readBuffer is the read-ahead of Get: pkg/sftp splits a large read
	// into concurrent requests, so a large buffer hides the latency.
	readBuffer = 1 << 20
)

// Extensions that the store needs from the server (OpenSSH's).
const (
	extHardlink    = "hardlink@openssh.com"
	extFsync       = "fsync@openssh.com"
	extPosixRename = "posix-rename@openssh.com"
)

// Store is a repository in a directory of an SFTP server.
type Store struct {
	cfg    Config
	sshCfg *ssh.ClientConfig
	root   string

	mu      sync.Mutex
	conn    *conn
	dirSync bool // the server lets us open and fsync directories
	probed  bool
}

var _ storage.Store = (*Store)(nil)

// New returns a Store for cfg. It reads the identity and known_hosts files
// but does not connect: the first call does.
func New(cfg Config) (*Store, error) {
	if cfg.Host == "" || cfg.User == "" {
		return nil, errors.New("sftp store: no user or host")
	}
	if !path.IsAbs(cfg.Path) || path.Clean(cfg.Path) == "/" {
		return nil, fmt.Errorf("sftp store: %q is not an absolute directory path below /", cfg.Path)
	}
	sc, err := sshConfig(cfg)
	if err != nil {
		return nil, &storage.PermanentError{Err: fmt.Errorf("sftp store %s: %w", cfg.URL(), err)}
	}
	return &Store{cfg: cfg, sshCfg: sc, root: path.Clean(cfg.Path)}, nil
}

// String returns the repository's URL.
func (s *Store) String() string { return s.cfg.URL() }

func (s *Store) path(key string) string { return path.Join(s.root, key) }

func (s *Store) corrupt(key, what string) error {
	return &storage.PermanentError{Err: fmt.Errorf("sftp store: object %s is corrupt or not a pgark object: %s", s.describe(key), what)}
}

// Probe checks that the server offers what create-only writes and the
// compare-and-swap need (hardlink@openssh.com, fsync@openssh.com,
// posix-rename@openssh.com), and that a link onto an existing name is
// refused. It creates the repository directory if it is missing.
func (s *Store) Probe(ctx context.Context) error {
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	var missing []string
	for _, ext := range []string{extHardlink, extFsync, extPosixRename} {
		if v, ok := c.sftp.HasExtension(ext); !ok || v != "1" {
			missing = append(missing, ext)
		}
	}
	if len(missing) > 0 {
		return &storage.PermanentError{Err: fmt.Errorf("the SFTP server of %s lacks %s: it cannot give create-only writes that never replace an object (OpenSSH's sftp-server has them)", s, strings.Join(missing, ", "))}
	}
	if err := s.mkdirAll(c, s.root); err != nil {
		return s.check(c, s.wrapErr("create the repository directory", "", err, false))
	}
	if err := s.syncDir(c, s.root); err != nil {
		return s.check(c, s.wrapErr("probe: fsync the repository directory", "", err, false))
	}
	name := path.Join(s.root, storage.TempPrefix+"probe-"+randHex())
	f, err := c.sftp.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return s.check(c, s.wrapErr("probe: create", path.Base(name), err, false))
	}
	defer c.sftp.Remove(name)
	if _, err := f.Write([]byte("probe")); err != nil {
		f.Close()
		return s.check(c, s.wrapErr("probe: write", path.Base(name), err, false))
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return s.check(c, s.wrapErr("probe: fsync", path.Base(name), err, false))
	}
	f.Close()
	if _, err := c.sftp.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL); err == nil {
		return &storage.PermanentError{Err: fmt.Errorf("the SFTP server of %s does not refuse an exclusive create of an existing file", s)}
	}
	link := name + "-link"
	if err := c.sftp.Link(name, link); err != nil {
		return s.check(c, s.wrapErr("probe: hardlink", path.Base(name), err, false))
	}
	defer c.sftp.Remove(link)
	if err := c.sftp.Link(name, link); err == nil {
		return &storage.PermanentError{Err: fmt.Errorf("the SFTP server of %s lets a hard link replace an existing name: create-only writes are impossible", s)}
	} else if !isStatus(err) {
		return s.check(c, err)
	}
	return nil
}

// syncDir fsyncs a directory when the server lets us open one (OpenSSH's
// sftp-server opens it read-only and fsync@openssh.com then fsyncs it).
// Servers that refuse are remembered and not asked again.
func (s *Store) syncDir(c *conn, dir string) error {
	s.mu.Lock()
	probed, ok := s.probed, s.dirSync
	s.mu.Unlock()
	if probed && !ok {
		return nil
	}
	d, err := c.sftp.OpenFile(dir, os.O_RDONLY)
	if err != nil {
		if !isStatus(err) {
			return err
		}
		s.mu.Lock()
		s.probed, s.dirSync = true, false
		s.mu.Unlock()
		return nil
	}
	defer d.Close()
	err = d.Sync()
	if err != nil && isStatus(err) && !probed {
		// The server opens directories but cannot fsync them.
		s.mu.Lock()
		s.probed, s.dirSync = true, false
		s.mu.Unlock()
		return nil
	}
	if err == nil && !probed {
		s.mu.Lock()
		s.probed, s.dirSync = true, true
		s.mu.Unlock()
	}
	return err
}

// mkdirAll creates dir and its missing parents.
func (s *Store) mkdirAll(c *conn, dir string) error {
	fi, err := c.sftp.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return &storage.PermanentError{Err: fmt.Errorf("%s is not a directory", dir)}
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if parent := path.Dir(dir); parent != dir {
		if err := s.mkdirAll(c, parent); err != nil {
			return err
		}
	}
	if err := c.sftp.Mkdir(dir); err != nil {
		if !isStatus(err) {
			return err
		}
		// A concurrent writer may have created it.
		if fi, serr := c.sftp.Stat(dir); serr == nil && fi.IsDir() {
			return nil
		}
		return err
	}
	c.sftp.Chmod(dir, dirMode)
	return s.syncDir(c, path.Dir(dir))
}

func randHex() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// open opens key and reads its header through a buffered reader of size
// buf. The reader is positioned at the payload.
func (s *Store) open(ctx context.Context, op, key string, buf int) (*conn, *sftp.File, *bufio.Reader, storage.ObjectInfo, int64, error) {
	fail := func(err error) (*conn, *sftp.File, *bufio.Reader, storage.ObjectInfo, int64, error) {
		return nil, nil, nil, storage.ObjectInfo{}, 0, err
	}
	if err := storage.ValidKey(key); err != nil {
		return fail(err)
	}
	c, err := s.client(ctx)
	if err != nil {
		return fail(err)
	}
	f, err := c.sftp.Open(s.path(key))
	if err != nil {
		return fail(s.check(c, s.wrapErr(op, key, err, true)))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fail(s.check(c, s.wrapErr(op, key, err, false)))
	}
	if fi.IsDir() {
		// Only other keys live below this name: the key does not exist.
		f.Close()
		return fail(fmt.Errorf("%s %s: %w", op, s.describe(key), storage.ErrNotFound))
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return fail(s.corrupt(key, "not a regular file"))
	}
	br := bufio.NewReaderSize(f, buf)
	meta, hlen, err := objfile.ReadHeader(br)
	if err != nil {
		f.Close()
		var ce *objfile.CorruptError
		if errors.As(err, &ce) {
			return fail(s.corrupt(key, ce.What))
		}
		return fail(s.check(c, s.wrapErr(op, key, err, false)))
	}
	if fi.Size() < hlen {
		f.Close()
		return fail(s.corrupt(key, "file shorter than the header"))
	}
	return c, f, br, storage.ObjectInfo{Key: key, Size: fi.Size() - hlen, ModTime: fi.ModTime(), Meta: meta}, hlen, nil
}

// Stat returns the object's size and metadata.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	_, f, _, info, _, err := s.open(ctx, "stat", key, 4096)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	f.Close()
	return info, nil
}

// Get opens the object's payload.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	c, f, br, info, _, err := s.open(ctx, "get", key, readBuffer)
	if err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	return &objectReader{r: br, f: f, c: c, s: s, key: key}, info, nil
}

// GetRange opens length bytes of the payload from offset (length < 0: to
// the end), with the local store's rules for offsets at or past the end.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 {
		return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: negative offset %d", s.describe(key), offset)}
	}
	c, f, _, info, hlen, err := s.open(ctx, "get", key, 4096)
	if err != nil {
		return nil, err
	}
	switch {
	case length == 0 && offset <= info.Size:
		f.Close()
		return io.NopCloser(bytes.NewReader(nil)), nil
	case offset == 0 && length < 0:
	case offset >= info.Size:
		f.Close()
		return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: offset %d is beyond the object's size %d", s.describe(key), offset, info.Size)}
	}
	if length < 0 || offset+length > info.Size {
		length = info.Size - offset
	}
	if _, err := f.Seek(hlen+offset, io.SeekStart); err != nil {
		f.Close()
		return nil, s.check(c, s.wrapErr("get", key, err, false))
	}
	r := io.LimitReader(bufio.NewReaderSize(f, int(min(int64(readBuffer), max(length, 16)))), length)
	return &objectReader{r: r, f: f, c: c, s: s, key: key}, nil
}

// objectReader reads a payload and marks read errors as storage.ReadError.
type objectReader struct {
	r   io.Reader
	f   *sftp.File
	c   *conn
	s   *Store
	key string
}

func (o *objectReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	if err != nil && err != io.EOF {
		err = &storage.ReadError{Err: o.s.check(o.c, o.s.wrapErr("read", o.key, err, false))}
	}
	return n, err
}

func (o *objectReader) Close() error { return o.f.Close() }

// Put stores r under key, create-only. See the package documentation.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	if err := storage.ValidMeta(opts.Meta); err != nil {
		return err
	}
	header, err := objfile.EncodeHeader(opts.Meta)
	if err != nil {
		return err
	}
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	final := s.path(key)
	dir := path.Dir(final)
	// Fail early, without reading r, if the key exists; the link decides
	// races.
	if fi, err := c.sftp.Lstat(final); err == nil {
		if fi.IsDir() {
			return &storage.PermanentError{Err: fmt.Errorf("put %s: the store holds other keys below this key, so it cannot hold it too", s.describe(key))}
		}
		return fmt.Errorf("put %s: %w", s.describe(key), storage.ErrExists)
	} else if !errors.Is(err, os.ErrNotExist) {
		return s.check(c, s.wrapErr("put", key, err, false))
	}
	if err := s.mkdirAll(c, dir); err != nil {
		return s.check(c, s.wrapErr("put", key, err, false))
	}
	tmp, n, err := s.writeTemp(ctx, c, key, dir, header, r)
	if err != nil {
		return err
	}
	defer c.sftp.Remove(tmp)
	if opts.Size >= 0 && n != opts.Size {
		return fmt.Errorf("put %s: the reader yielded %d bytes, expected %d", s.describe(key), n, opts.Size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.sftp.Link(tmp, final); err != nil {
		if !isStatus(err) {
			// The link may or may not have happened; a retry finds out
			// (storage/retry compares contents on ErrExists).
			return s.check(c, fmt.Errorf("put %s: link: %w", s.describe(key), err))
		}
		if fi, serr := c.sftp.Lstat(final); serr == nil && !fi.IsDir() {
			return fmt.Errorf("put %s: %w", s.describe(key), storage.ErrExists)
		}
		return s.check(c, s.wrapErr("put", key, err, false))
	}
	c.sftp.Remove(tmp)
	if err := s.syncDir(c, dir); err != nil {
		// Not durable: take the object back (best effort; our link).
		c.sftp.Remove(final)
		return s.check(c, s.wrapErr("put: fsync directory of", key, err, false))
	}
	return nil
}

// writeTemp writes header and r to a new temporary file in dir, fsyncs and
// closes it. It returns its path and the number of bytes read from r; on
// error it removes the file (best effort).
func (s *Store) writeTemp(ctx context.Context, c *conn, key, dir string, header []byte, r io.Reader) (_ string, _ int64, err error) {
	tmp := path.Join(dir, storage.TempPrefix+randHex())
	f, err := c.sftp.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return "", 0, s.check(c, s.wrapErr("put", key, err, false))
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			c.sftp.Remove(tmp)
		}
	}()
	// Best effort: a login whose sftp-server refuses setstat (a
	// restricted push host) keeps the server's umask.
	if err := f.Chmod(fileMode); err != nil && !isStatus(err) {
		return "", 0, s.check(c, s.wrapErr("put", key, err, false))
	}
	if _, err := f.Write(header); err != nil {
		return "", 0, s.check(c, s.wrapErr("put", key, err, false))
	}
	src := &readTracker{r: storage.ContextReader(ctx, r)}
	n, err := f.ReadFrom(src)
	if err != nil {
		if src.err != nil && errors.Is(err, src.err) {
			return "", 0, fmt.Errorf("put %s: reading the data: %w", s.describe(key), err)
		}
		return "", 0, s.check(c, s.wrapErr("put", key, err, false))
	}
	if err := f.Sync(); err != nil {
		return "", 0, s.check(c, s.wrapErr("put: fsync", key, err, false))
	}
	err = f.Close()
	f = nil
	if err != nil {
		return "", 0, s.check(c, s.wrapErr("put", key, err, false))
	}
	return tmp, n, nil
}

// readTracker remembers the error of the source, to tell it from a write
// error.
type readTracker struct {
	r   io.Reader
	err error
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// ReadSmall reads a small object whole, with its version (a hash of its
// file, as in the local store).
func (s *Store) ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, "", err
	}
	c, err := s.client(ctx)
	if err != nil {
		return nil, "", err
	}
	file, err := s.readFile(c, "read", key, limit)
	if err != nil {
		return nil, "", err
	}
	_, hlen, err := objfile.ReadHeader(bytes.NewReader(file))
	if err != nil {
		return nil, "", s.corrupt(key, err.Error())
	}
	if int64(len(file))-hlen > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s: %d bytes, more than the %d expected: %w", s.describe(key), int64(len(file))-hlen, limit, storage.ErrTooLarge)}
	}
	return file[hlen:], objfile.Version(file), nil
}

// readFile reads the whole file of key, header included, if it is at most
// limit bytes longer than the largest header.
func (s *Store) readFile(c *conn, op, key string, limit int64) ([]byte, error) {
	f, err := c.sftp.Open(s.path(key))
	if err != nil {
		return nil, s.check(c, s.wrapErr(op, key, err, true))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, s.check(c, s.wrapErr(op, key, err, false))
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s %s: %w", op, s.describe(key), storage.ErrNotFound)
	}
	if fi.Size() > limit+int64(objfile.FixedHeaderLen+objfile.MaxMetaLen) {
		return nil, &storage.PermanentError{Err: fmt.Errorf("%s %s: %d bytes, more than the %d expected: %w", op, s.describe(key), fi.Size(), limit, storage.ErrTooLarge)}
	}
	// One read of the whole file (pkg/sftp splits it into concurrent
	// requests); one byte more tells a file that grew.
	buf := make([]byte, fi.Size()+1)
	n, err := io.ReadFull(f, buf)
	if err != io.ErrUnexpectedEOF && err != io.EOF {
		if err == nil {
			return nil, fmt.Errorf("%s %s: changed while read", op, s.describe(key))
		}
		return nil, s.check(c, s.wrapErr(op, key, err, false))
	}
	return buf[:n], nil
}

// Delete removes the object; a missing object is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	p := s.path(key)
	fi, err := c.sftp.Lstat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return s.check(c, s.wrapErr("delete", key, err, false))
	}
	if fi.IsDir() {
		return nil // no object under this key, only keys below it
	}
	if err := c.sftp.Remove(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return s.check(c, s.wrapErr("delete", key, err, false))
	}
	if err := s.syncDir(c, path.Dir(p)); err != nil {
		return s.check(c, s.wrapErr("delete: fsync directory of", key, err, false))
	}
	return nil
}

// List calls fn for every object whose key starts with prefix, in lexical
// key order.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if strings.IndexByte(prefix, 0) >= 0 {
		return &storage.PermanentError{Err: fmt.Errorf("list %q: prefix contains a NUL byte", prefix)}
	}
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	start := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i+1]
	}
	return s.walk(ctx, c, start, prefix, fn)
}

type dirEntry struct {
	name  string
	isDir bool
	sort  string // name, plus "/" for directories: sorts like full keys
}

// listWorkers is how many headers List reads at once (over one connection:
// SFTP requests are pipelined).
const listWorkers = 16

func (s *Store) walk(ctx context.Context, c *conn, dirKey, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dirPath := s.root
	if dirKey != "" {
		dirPath = path.Join(s.root, strings.TrimSuffix(dirKey, "/"))
	}
	ents, err := c.sftp.ReadDirContext(ctx, dirPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		var se *sftp.StatusError
		if errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxFailure {
			// ENOTDIR on some servers: the "directory" is an object.
			if fi, serr := c.sftp.Stat(dirPath); serr == nil && !fi.IsDir() {
				return nil
			}
		}
		return s.check(c, s.wrapErr("list", dirKey, err, false))
	}
	list := make([]dirEntry, 0, len(ents))
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, storage.TempPrefix) {
			continue
		}
		switch {
		case e.IsDir():
			list = append(list, dirEntry{name: name, isDir: true, sort: name + "/"})
		case e.Mode().IsRegular():
			list = append(list, dirEntry{name: name, sort: name})
		}
	}
	slices.SortFunc(list, func(a, b dirEntry) int { return strings.Compare(a.sort, b.sort) })
	// Objects of this directory in batches: their header lengths are read
	// concurrently, then delivered in order.
	var batch []storage.ObjectInfo
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := s.fillSizes(ctx, c, batch); err != nil {
			return err
		}
		for _, info := range batch {
			if info.Size < 0 {
				continue // deleted while we listed
			}
			if err := fn(info); err != nil {
				return err
			}
		}
		batch = batch[:0]
		return nil
	}
	for _, e := range list {
		key := dirKey + e.sort
		if e.isDir {
			if strings.HasPrefix(key, prefix) || strings.HasPrefix(prefix, key) {
				if err := flush(); err != nil {
					return err
				}
				if err := s.walk(ctx, c, key, prefix, fn); err != nil {
					return err
				}
			}
			continue
		}
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		batch = append(batch, storage.ObjectInfo{Key: key})
		if len(batch) >= 256 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// fillSizes sets the payload size and modification time of each object
// (Size -1: it vanished).
func (s *Store) fillSizes(ctx context.Context, c *conn, infos []storage.ObjectInfo) error {
	errs := make([]error, len(infos))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(listWorkers, len(infos)) {
		wg.Go(func() {
			for i := range next {
				errs[i] = s.listInfo(ctx, c, &infos[i])
			}
		})
	}
	for i := range infos {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

func (s *Store) listInfo(ctx context.Context, c *conn, info *storage.ObjectInfo) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := c.sftp.Open(s.path(info.Key))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			info.Size = -1
			return nil
		}
		return s.check(c, s.wrapErr("list", info.Key, err, false))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return s.check(c, s.wrapErr("list", info.Key, err, false))
	}
	_, hlen, err := objfile.ReadFixed(f)
	if err != nil {
		var ce *objfile.CorruptError
		if errors.As(err, &ce) {
			return s.corrupt(info.Key, ce.What)
		}
		return s.check(c, s.wrapErr("list", info.Key, err, false))
	}
	if fi.Size() < hlen {
		return s.corrupt(info.Key, "bad metadata length")
	}
	info.Size, info.ModTime = fi.Size()-hlen, fi.ModTime()
	return nil
}
