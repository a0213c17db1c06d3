// Package local implements storage.Store on a local (or network-mounted)
// directory.
//
// A key "a/b/c" is the file root/a/b/c. Each object file starts with a small
// header that holds the object's metadata (storage/objfile's format, shared
// with the SFTP store), followed by the payload:
//
//	magic   8 bytes  "PGARKOB\x01"
//	length  4 bytes  big-endian length of the JSON that follows (<= 64 KiB)
//	meta    length bytes of JSON: {"key":"value",...}
//	payload
//
// so that an object and its metadata are written by one atomic link(2). Get,
// GetRange and Stat hide the header: sizes and offsets are those of the
// payload.
//
// Put is create-only and atomic: the bytes go to a temporary file named
// ".tmp-*" in the final directory, which is fsynced and then linked to its
// final name (link fails with EEXIST if the key exists, where a rename would
// silently replace it); the directory is fsynced afterwards. Leftover
// temporary files of a crashed writer are never listed and can be removed
// safely once no writer is running.
//
// Differences from S3 that callers may notice: a key cannot be both an
// object and a "directory" of other keys ("a/b" and "a/b/c"); Put of the
// second one fails with an error that is not ErrExists. Delete leaves empty
// directories in place (removing them would race with concurrent Puts).
//
// Errors: "not found" is ENOENT (or ENOTDIR: a parent of the key is an
// object) only. EACCES, EPERM, EROFS, invalid keys and corrupt object files
// are storage.PermanentErrors; other errors (ENOSPC, EIO, ...) are plain
// errors that a retry may fix.
package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/objfile"
)

const (
	// The object file format is storage/objfile's (shared with the SFTP
	// store).
	magic          = objfile.Magic
	fixedHeaderLen = objfile.FixedHeaderLen
	// tmpPrefix starts the names of temporary files (never listed); no
	// key may have a segment that starts with it (storage.ValidKey).
	tmpPrefix = storage.TempPrefix

	fileMode = 0o640
	dirMode  = 0o750
)

// Store is a repository in a local directory.
type Store struct {
	root string // absolute, cleaned
}

var _ storage.Store = (*Store)(nil)

// New returns a Store rooted at root. The directory need not exist yet (Put
// creates it and any missing parents); if it exists it must be a directory.
func New(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("local store: empty path")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("local store %s: %w", root, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case err == nil && !fi.IsDir():
		return nil, fmt.Errorf("local store %s: not a directory", abs)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("local store %s: %w", abs, err)
	}
	return &Store{root: abs}, nil
}

// Root returns the absolute path of the store's directory.
func (s *Store) Root() string { return s.root }

// String returns the store's directory.
func (s *Store) String() string { return s.root }

func (s *Store) path(key string) string {
	return filepath.Join(s.root, filepath.FromSlash(key))
}

// wrapErr turns an OS error into a store error: ENOENT and ENOTDIR (a
// parent of the key is a file) mean "not found" when notFound is set;
// errors that retrying cannot fix are PermanentErrors.
func (s *Store) wrapErr(op, key string, err error, notFound bool) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrExists) {
		return err
	}
	var perm *storage.PermanentError
	if errors.As(err, &perm) {
		return err
	}
	if notFound && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR)) {
		return fmt.Errorf("%s %s: %w", op, s.describe(key), storage.ErrNotFound)
	}
	e := fmt.Errorf("%s %s: %w", op, s.describe(key), err)
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) ||
		errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ENAMETOOLONG) ||
		errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ELOOP) {
		return &storage.PermanentError{Err: e}
	}
	return e
}

func (s *Store) describe(key string) string {
	return fmt.Sprintf("%q in %s", key, s.root)
}

// corrupt reports a damaged object file; retrying cannot help.
func (s *Store) corrupt(key, what string) error {
	return &storage.PermanentError{Err: fmt.Errorf("local store: object %s is corrupt or not a pgark object: %s", s.describe(key), what)}
}

// encodeHeader returns the header for meta.
func encodeHeader(meta map[string]string) ([]byte, error) { return objfile.EncodeHeader(meta) }

// readHeader reads the header from the start of f, leaving f positioned at
// the payload. It returns the metadata and the header length.
func (s *Store) readHeader(key string, f *os.File) (map[string]string, int64, error) {
	meta, hlen, err := objfile.ReadHeader(f)
	if err != nil {
		var ce *objfile.CorruptError
		if errors.As(err, &ce) {
			return nil, 0, s.corrupt(key, ce.What)
		}
		return nil, 0, s.wrapErr("read", key, err, false)
	}
	return meta, hlen, nil
}

// open opens key and reads its header. The file is positioned at the
// payload.
func (s *Store) open(op, key string) (*os.File, storage.ObjectInfo, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return nil, storage.ObjectInfo{}, s.wrapErr(op, key, err, true)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, storage.ObjectInfo{}, s.wrapErr(op, key, err, false)
	}
	if fi.IsDir() {
		// Only other keys live below this name; as in S3, the key itself
		// does not exist.
		f.Close()
		return nil, storage.ObjectInfo{}, fmt.Errorf("%s %s: %w", op, s.describe(key), storage.ErrNotFound)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, storage.ObjectInfo{}, s.corrupt(key, "not a regular file")
	}
	meta, hlen, err := s.readHeader(key, f)
	if err != nil {
		f.Close()
		return nil, storage.ObjectInfo{}, err
	}
	if fi.Size() < hlen {
		f.Close()
		return nil, storage.ObjectInfo{}, s.corrupt(key, "file shorter than the header")
	}
	return f, storage.ObjectInfo{Key: key, Size: fi.Size() - hlen, ModTime: fi.ModTime(), Meta: meta}, nil
}

// Stat returns the object's size and metadata.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, err
	}
	f, info, err := s.open("stat", key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	f.Close()
	return info, nil
}

// Get opens the object's payload.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	f, info, err := s.open("get", key)
	if err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	return &objectReader{r: f, f: f, s: s, key: key}, info, nil
}

// GetRange opens length bytes of the payload from offset (length < 0: to
// the end). As with S3, the offset must lie inside the object: an offset at
// or beyond the end is an error (a PermanentError, not ErrNotFound), except
// GetRange(key, 0, -1), which is the same as Get, and length 0, which
// returns an empty reader for any offset up to the size. A length reaching
// past the end is cut at the end.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: negative offset %d", s.describe(key), offset)}
	}
	f, info, err := s.open("get", key)
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
	hlen, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		f.Close()
		return nil, s.wrapErr("get", key, err, false)
	}
	if length < 0 || offset+length > info.Size {
		length = info.Size - offset
	}
	return &objectReader{r: io.NewSectionReader(f, hlen+offset, length), f: f, s: s, key: key}, nil
}

// objectReader reads a payload and wraps read errors.
type objectReader struct {
	r   io.Reader
	f   *os.File
	s   *Store
	key string
}

func (o *objectReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	if err != nil && err != io.EOF {
		err = o.s.wrapErr("read", o.key, err, false)
	}
	return n, err
}

func (o *objectReader) Close() error { return o.f.Close() }

// Put stores r under key, create-only and atomically. See the package
// documentation.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	if err := storage.ValidMeta(opts.Meta); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	header, err := encodeHeader(opts.Meta)
	if err != nil {
		return err
	}
	final := s.path(key)
	dir := filepath.Dir(final)

	// Fail early, without reading r, if the key exists. The link below
	// decides races.
	if fi, err := os.Lstat(final); err == nil {
		if fi.IsDir() {
			return &storage.PermanentError{Err: fmt.Errorf("put %s: the local store holds other keys below this key, so it cannot hold it too", s.describe(key))}
		}
		return fmt.Errorf("put %s: %w", s.describe(key), storage.ErrExists)
	}
	uid, gid, chown := s.owner()
	if err := mkdirAll(dir, uid, gid, chown); err != nil {
		return s.wrapErr("put", key, err, false)
	}

	tmpName, n, err := s.writeTemp(ctx, key, dir, header, r)
	if err != nil {
		return err
	}
	defer os.Remove(tmpName)
	if opts.Size >= 0 && n != opts.Size {
		return fmt.Errorf("put %s: the reader yielded %d bytes, expected %d", s.describe(key), n, opts.Size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Link(tmpName, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("put %s: %w", s.describe(key), storage.ErrExists)
		}
		return s.wrapErr("put", key, err, false)
	}
	// The object is in place. A temporary file that cannot be removed is
	// harmless (never listed), so the deferred removal ignores errors.
	os.Remove(tmpName)
	if err := syncDir(dir); err != nil {
		// Not durable: take the object back so that no object appears
		// under key on error (best effort; we created this link).
		os.Remove(final)
		return s.wrapErr("put: fsync directory of", key, err, false)
	}
	return nil
}

// writeTemp writes header and the bytes of r to a new temporary file in dir,
// with the store's mode and owner, and fsyncs and closes it. It returns the
// file's name and the number of bytes read from r; on error no temporary
// file is left.
func (s *Store) writeTemp(ctx context.Context, key, dir string, header []byte, r io.Reader) (_ string, _ int64, err error) {
	uid, gid, chown := s.owner()
	tmp, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return "", 0, s.wrapErr("put", key, err, false)
	}
	tmpName := tmp.Name()
	defer func() {
		if tmp != nil {
			tmp.Close()
		}
		if err != nil {
			os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(fileMode); err != nil {
		return "", 0, s.wrapErr("put", key, err, false)
	}
	if chown {
		if err := tmp.Chown(uid, gid); err != nil {
			return "", 0, s.wrapErr("put", key, err, false)
		}
	}
	if _, err := tmp.Write(header); err != nil {
		return "", 0, s.wrapErr("put", key, err, false)
	}
	n, err := io.Copy(tmp, storage.ContextReader(ctx, r))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == tmpName {
			return "", 0, s.wrapErr("put", key, err, false)
		}
		return "", 0, fmt.Errorf("put %s: reading the data: %w", s.describe(key), err)
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, s.wrapErr("put", key, err, false)
	}
	err = tmp.Close()
	tmp = nil
	if err != nil {
		return "", 0, s.wrapErr("put", key, err, false)
	}
	return tmpName, n, nil
}

// version names one stored version of an object: a hash of its file.
func version(file []byte) string { return objfile.Version(file) }

// ReadSmall reads a small object whole, with its version.
func (s *Store) ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	f, info, err := s.open("read", key)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	if info.Size > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s: %d bytes, more than the %d expected: %w", s.describe(key), info.Size, limit, storage.ErrTooLarge)}
	}
	// The open file is one version, even if a Swap renames another in.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, "", s.wrapErr("read", key, err, false)
	}
	file, err := io.ReadAll(f)
	if err != nil {
		return nil, "", s.wrapErr("read", key, err, false)
	}
	hlen := int64(len(file)) - info.Size
	if hlen < int64(fixedHeaderLen) {
		return nil, "", s.corrupt(key, "changed while read")
	}
	return file[hlen:], version(file), nil
}

// Swap creates key (ifVersion "") or replaces it if it is at ifVersion.
// Replacements of one key are serialized by a lock file next to it (never
// listed); the new version goes in by rename(2), so readers see either the
// old or the new object, whole.
func (s *Store) Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	header, err := encodeHeader(nil)
	if err != nil {
		return "", err
	}
	newVersion := version(append(header[:len(header):len(header)], data...))
	if ifVersion == "" {
		if err := s.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{Size: int64(len(data))}); err != nil {
			return "", err
		}
		return newVersion, nil
	}
	if err := storage.ValidKey(key); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	final := s.path(key)
	dir := filepath.Dir(final)
	lf, err := os.OpenFile(filepath.Join(dir, tmpPrefix+"swap-"+filepath.Base(final)), os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return "", fmt.Errorf("swap %s: %w", s.describe(key), storage.ErrChanged)
		}
		return "", s.wrapErr("swap", key, err, false)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return "", s.wrapErr("swap", key, err, false)
	}
	cur, err := os.ReadFile(final)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return "", fmt.Errorf("swap %s: %w", s.describe(key), storage.ErrChanged)
		}
		return "", s.wrapErr("swap", key, err, false)
	}
	if version(cur) != ifVersion {
		return "", fmt.Errorf("swap %s: %w", s.describe(key), storage.ErrChanged)
	}
	tmpName, _, err := s.writeTemp(ctx, key, dir, header, bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmpName, final); err != nil {
		os.Remove(tmpName)
		return "", s.wrapErr("swap", key, err, false)
	}
	if err := syncDir(dir); err != nil {
		return "", s.wrapErr("swap: fsync directory of", key, err, false)
	}
	return newVersion, nil
}

// owner says whom new files and directories must belong to: when pgark runs
// as root (a backup or an init started by hand, say), what it creates takes
// the owner of the repository's root directory, so that archive_command,
// running as the database's user, can still read and write the repository.
func (s *Store) owner() (uid, gid int, chown bool) {
	if os.Geteuid() != 0 {
		return 0, 0, false
	}
	fi, err := os.Stat(s.root)
	if err != nil {
		return 0, 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

// mkdirAll creates dir and its missing parents, fsyncing the parent of
// every directory it creates, and giving it to uid:gid when chown is set.
func mkdirAll(dir string, uid, gid int, chown bool) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAll(parent, uid, gid, chown); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, dirMode); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// A concurrent writer created it; it is fsynced by that
			// writer, but make sure of it before we rely on it.
			return syncDir(parent)
		}
		return err
	}
	if chown {
		if err := os.Chown(dir, uid, gid); err != nil {
			return err
		}
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		// EINVAL: the file system does not support fsync on directories.
		return err
	}
	return nil
}

// Delete removes the object; a missing object is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := s.path(key)
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return s.wrapErr("delete", key, err, false)
	}
	if fi.IsDir() {
		return nil // no object under this key, only keys below it
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil
		}
		return s.wrapErr("delete", key, err, false)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return s.wrapErr("delete: fsync directory of", key, err, false)
	}
	return nil
}

// List calls fn for every object whose key starts with prefix, in lexical
// key order. The prefix may end in the middle of a path segment.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if strings.IndexByte(prefix, 0) >= 0 {
		return &storage.PermanentError{Err: fmt.Errorf("list %q: prefix contains a NUL byte", prefix)}
	}
	// Start at the deepest directory that the prefix names completely.
	start := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i+1]
	}
	return s.walk(ctx, start, prefix, fn)
}

type dirEntry struct {
	name  string
	isDir bool
	sort  string // name, plus "/" for directories: sorts like full keys
}

// walk lists directory dirKey ("" or ending in '/') in key order.
func (s *Store) walk(ctx context.Context, dirKey, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dirPath := s.root
	if dirKey != "" {
		dirPath = filepath.Join(s.root, filepath.FromSlash(strings.TrimSuffix(dirKey, "/")))
	}
	ents, err := os.ReadDir(dirPath)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return s.wrapErr("list", dirKey, err, false)
	}
	list := make([]dirEntry, 0, len(ents))
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			continue
		}
		switch {
		case e.IsDir():
			list = append(list, dirEntry{name: name, isDir: true, sort: name + "/"})
		case e.Type().IsRegular():
			list = append(list, dirEntry{name: name, sort: name})
		}
	}
	// A file "a.b" sorts before the keys "a/..." of a directory "a",
	// because '.' < '/'; sorting directories as "a/" gives key order.
	slices.SortFunc(list, func(a, b dirEntry) int { return strings.Compare(a.sort, b.sort) })
	for _, e := range list {
		key := dirKey + e.sort
		if e.isDir {
			if strings.HasPrefix(key, prefix) || strings.HasPrefix(prefix, key) {
				if err := s.walk(ctx, key, prefix, fn); err != nil {
					return err
				}
			}
			continue
		}
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		info, err := s.listInfo(key)
		if err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				continue // deleted while we listed
			}
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// listInfo returns the size and modification time of an object (not its
// metadata, but the header must be read to know the payload size).
func (s *Store) listInfo(key string) (storage.ObjectInfo, error) {
	f, err := os.Open(s.path(key))
	if err != nil {
		return storage.ObjectInfo{}, s.wrapErr("list", key, err, true)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return storage.ObjectInfo{}, s.wrapErr("list", key, err, false)
	}
	_, hlen, err := objfile.ReadFixed(f)
	if err != nil {
		var ce *objfile.CorruptError
		if errors.As(err, &ce) {
			return storage.ObjectInfo{}, s.corrupt(key, ce.What)
		}
		return storage.ObjectInfo{}, s.wrapErr("list", key, err, false)
	}
	if fi.Size() < hlen {
		return storage.ObjectInfo{}, s.corrupt(key, "bad metadata length")
	}
	return storage.ObjectInfo{Key: key, Size: fi.Size() - hlen, ModTime: fi.ModTime()}, nil
}
