package gcs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pgark/pgark/storage"
)

const (
	// DefaultChunkSize is the resumable upload chunk size when
	// Config.ChunkSize is 0. A Put holds about one chunk in memory.
	DefaultChunkSize = 8 << 20
	// ChunkAlign: chunk sizes are multiples of 256 KiB (a GCS rule).
	ChunkAlign = 256 << 10
	// MaxChunkSize bounds Config.ChunkSize (memory per Put).
	MaxChunkSize = 1 << 30
	// maxAttempts bounds the client's own tries of one request; the retry
	// decorator retries what is left.
	maxAttempts = 3
)

// Config describes a GCS repository.
type Config struct {
	// Bucket and Prefix locate the repository (from gs://bucket/prefix, see
	// ParseURL). The Store's keys live below Prefix.
	Bucket, Prefix string
	// CredentialsFile is a service-account JSON key file. Empty: application
	// default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's
	// application-default login, the metadata server of GCE, GKE workload
	// identity, Cloud Run...). With STORAGE_EMULATOR_HOST set, the client
	// talks to that emulator without credentials.
	CredentialsFile string
	// Endpoint is a custom JSON API endpoint such as
	// "http://127.0.0.1:4443/storage/v1/" (tests, private endpoints);
	// uploads go to "/upload" followed by its path. Empty: Google's, or
	// STORAGE_EMULATOR_HOST's.
	Endpoint string
	// Anonymous sends no credentials (an emulator at Endpoint).
	Anonymous bool
	// ChunkSize is the resumable upload chunk size, a multiple of 256 KiB,
	// default DefaultChunkSize. An object smaller than one chunk is
	// uploaded in a single request.
	ChunkSize int
	// ReadTimeout fails a request whose connection makes no progress for
	// this long, reading or writing: a stalled server or network path.
	// Default DefaultReadTimeout.
	ReadTimeout time.Duration
}

// Store is a repository in a GCS bucket.
type Store struct {
	cl        *client
	transport *http.Transport // under the credentials
	name      string          // bucket name
	prefix    string          // "" or ending in '/'
	chunkSize int
}

var _ storage.Store = (*Store)(nil)

// ParseURL splits "gs://bucket/some/prefix" into the bucket and the prefix
// ("some/prefix", without leading or trailing '/'; empty for "gs://bucket").
func ParseURL(u string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(u, "gs://")
	if !ok {
		return "", "", fmt.Errorf("invalid GCS URL %q: it must start with gs://", u)
	}
	if strings.ContainsAny(rest, "?#") {
		return "", "", fmt.Errorf("invalid GCS URL %q: query strings and fragments are not supported", u)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if err := validBucket(bucket); err != nil {
		return "", "", fmt.Errorf("invalid GCS URL %q: %w", u, err)
	}
	if prefix, err = cleanPrefix(prefix); err != nil {
		return "", "", fmt.Errorf("invalid GCS URL %q: %w", u, err)
	}
	return bucket, prefix, nil
}

// validBucket applies GCS's bucket naming rules (3 to 63 characters, or up
// to 222 with dots; lower-case letters, digits, '-', '_' and '.'; starting
// and ending with a letter or digit).
func validBucket(b string) error {
	if b == "" {
		return errors.New("no bucket name")
	}
	if len(b) < 3 || len(b) > 222 || (len(b) > 63 && !strings.Contains(b, ".")) {
		return fmt.Errorf("bucket name %q must have 3 to 63 characters (222 with dots)", b)
	}
	for _, c := range []byte(b) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("bucket name %q may contain only lower-case letters, digits, '-', '_' and '.'", b)
		}
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	if !alnum(b[0]) || !alnum(b[len(b)-1]) {
		return fmt.Errorf("bucket name %q must start and end with a letter or digit", b)
	}
	return nil
}

// cleanPrefix trims '/' at both ends and checks the segments.
func cleanPrefix(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", errors.New("prefix contains a NUL byte")
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("prefix %q has an empty, '.' or '..' path segment", p)
		}
	}
	return p, nil
}

// New returns a Store for cfg. It does not contact the store (use
// ProbeConditionalWrites for that); credentials are looked up here.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if err := validBucket(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("gcs store: %w", err)
	}
	prefix, err := cleanPrefix(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("gcs store: %w", err)
	}
	if prefix != "" {
		prefix += "/"
	}
	chunk := cfg.ChunkSize
	if chunk == 0 {
		chunk = DefaultChunkSize
	}
	if chunk < ChunkAlign || chunk > MaxChunkSize || chunk%ChunkAlign != 0 {
		return nil, fmt.Errorf("gcs store: chunk size %d is not a multiple of 256 KiB between 256 KiB and 1 GiB", chunk)
	}
	timeout := cfg.ReadTimeout
	if timeout <= 0 {
		timeout = DefaultReadTimeout
	}
	api, upload, anonymous, err := endpoints(cfg)
	if err != nil {
		return nil, fmt.Errorf("gcs store: %w", err)
	}
	hc, tr, err := httpClient(ctx, cfg, anonymous, timeout)
	if err != nil {
		return nil, fmt.Errorf("gcs store: %w", err)
	}
	return &Store{
		cl:        &client{hc: hc, api: api, upload: upload, bucket: cfg.Bucket},
		transport: tr,
		name:      cfg.Bucket,
		prefix:    prefix,
		chunkSize: chunk,
	}, nil
}

// Close releases the idle connections.
func (s *Store) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// String returns "gs://bucket/prefix" ("gs://bucket" without a prefix).
func (s *Store) String() string {
	if s.prefix == "" {
		return "gs://" + s.name
	}
	return "gs://" + s.name + "/" + strings.TrimSuffix(s.prefix, "/")
}

func (s *Store) url(key string) string { return "gs://" + s.name + "/" + s.prefix + key }

// opKind tells mapErr how to read a 404 and a 412.
type opKind int

const (
	opRead  opKind = iota // Get, GetRange, Stat, ReadSmall, Delete: 404 is "not found"
	opWrite               // Put, Swap create: 412 is "exists"
	opOther               // List: a 404 is the bucket's
)

// bucketMissing reports whether a 404 is about the bucket: GCS answers an
// object request in a missing bucket with 404 "The specified bucket does not
// exist.", a missing object with "No such object: ...".
func bucketMissing(err error) bool {
	var ae *apiError
	if !errors.As(err, &ae) {
		return false
	}
	return strings.Contains(strings.ToLower(ae.Message), "bucket does not exist")
}

// mapErr turns a client error into a store error.
func (s *Store) mapErr(op string, kind opKind, key string, err error) error {
	if err == nil {
		return nil
	}
	what := op + " " + s.url(key)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	status := apiStatus(err)
	notFound := status == http.StatusNotFound
	switch {
	case notFound && (kind != opRead || bucketMissing(err)):
		// Uploads and listings name the bucket only: their 404 is the
		// bucket's.
		return &storage.PermanentError{Err: fmt.Errorf("%s: bucket %q does not exist or is not visible with these credentials: %w", what, s.name, err)}
	case notFound:
		return fmt.Errorf("%s: %w: %w", what, storage.ErrNotFound, err)
	case status == http.StatusPreconditionFailed && kind == opWrite:
		return fmt.Errorf("%s: %w", what, storage.ErrExists)
	case status == http.StatusConflict:
		return fmt.Errorf("%s: %w: %w", what, storage.ErrConflict, err)
	case status == http.StatusRequestedRangeNotSatisfiable:
		return &storage.PermanentError{Err: fmt.Errorf("%s: the range is beyond the end of the object: %w", what, err)}
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		return &storage.PermanentError{Err: fmt.Errorf("%s: access denied (check the credentials and their IAM roles): %w", what, err)}
	case status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
		return &storage.PermanentError{Err: fmt.Errorf("%s: %w", what, err)}
	case tokenRefused(err):
		return &storage.PermanentError{Err: fmt.Errorf("%s: the credentials were refused: %w", what, err)}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Stat returns the object's size and metadata.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := storage.ValidKey(key); err != nil {
		return storage.ObjectInfo{}, err
	}
	o, err := s.cl.stat(ctx, s.prefix+key)
	if err != nil {
		return storage.ObjectInfo{}, s.mapErr("stat", opRead, key, err)
	}
	return s.info(key, o), nil
}

func (s *Store) info(key string, o *object) storage.ObjectInfo {
	meta := make(map[string]string, len(o.Metadata))
	maps.Copy(meta, o.Metadata)
	return storage.ObjectInfo{Key: key, Size: o.Size, ModTime: o.Updated, Meta: meta}
}

// Get opens the object: its metadata, then a read of that generation, so
// that data and metadata belong together.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	o, err := s.cl.stat(ctx, s.prefix+key)
	if err != nil {
		return nil, storage.ObjectInfo{}, s.mapErr("get", opRead, key, err)
	}
	resp, err := s.cl.media(ctx, s.prefix+key, o.Generation, 0, -1)
	if err != nil {
		return nil, storage.ObjectInfo{}, s.mapErr("get", opRead, key, err)
	}
	return newBodyReader(resp, "get "+s.url(key), true), s.info(key, o), nil
}

// bodyReader names the object in read errors and marks them as such. On a
// whole object, it checks the CRC-32C that GCS gives (X-Goog-Hash) at the
// end.
type bodyReader struct {
	rc   io.ReadCloser
	what string
	want string // expected CRC-32C, base64; "" not checked
	crc  uint32
}

func newBodyReader(resp *http.Response, what string, whole bool) *bodyReader {
	b := &bodyReader{rc: resp.Body, what: what}
	if whole && resp.StatusCode == http.StatusOK && !resp.Uncompressed && resp.Header.Get("Content-Encoding") == "" {
		for _, v := range resp.Header.Values("X-Goog-Hash") {
			for h := range strings.SplitSeq(v, ",") {
				if c, ok := strings.CutPrefix(strings.TrimSpace(h), "crc32c="); ok {
					b.want = c
				}
			}
		}
	}
	return b
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if b.want != "" {
		b.crc = crc32.Update(b.crc, castagnoli, p[:n])
	}
	switch {
	case err == io.EOF && b.want != "" && crcString(b.crc) != b.want:
		err = &storage.ReadError{Err: fmt.Errorf("%s: reading: the data's CRC-32C %s differs from the object's %s", b.what, crcString(b.crc), b.want)}
	case err != nil && err != io.EOF:
		err = &storage.ReadError{Err: fmt.Errorf("%s: reading: %w", b.what, err)}
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.rc.Close() }

// GetRange opens length bytes of the object from offset (length < 0: to the
// end), with the conformance suite's rules for offsets at or past the end.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: negative offset %d", s.url(key), offset)}
	}
	if offset == 0 && length < 0 {
		rc, _, err := s.Get(ctx, key)
		return rc, err
	}
	if length == 0 || offset > 0 {
		// A range at the end reads as empty; the contract wants an error
		// there, so the size decides first.
		info, err := s.Stat(ctx, key)
		if err != nil {
			return nil, err
		}
		if length == 0 {
			if offset > info.Size {
				return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: offset %d is beyond the object's size %d", s.url(key), offset, info.Size)}
			}
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
		if offset >= info.Size {
			return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: offset %d is at or beyond the object's size %d", s.url(key), offset, info.Size)}
		}
	}
	resp, err := s.cl.media(ctx, s.prefix+key, 0, offset, length)
	if err != nil {
		return nil, s.mapErr("get range", opRead, key, err)
	}
	b := newBodyReader(resp, "get range "+s.url(key), false)
	if resp.StatusCode == http.StatusOK {
		// The whole object, the Range header ignored: cut the range out.
		if _, err := io.CopyN(io.Discard, b, offset); err != nil {
			b.Close()
			return nil, err
		}
		if length > 0 {
			return struct {
				io.Reader
				io.Closer
			}{io.LimitReader(b, length), b}, nil
		}
	}
	return b, nil
}

// List calls fn for every object whose key starts with prefix, in lexical
// order (GCS lists by name). Keys are relative to the Store's prefix.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	var fnErr error
	err := s.cl.list(ctx, s.prefix+prefix, func(o *object) error {
		key, ok := strings.CutPrefix(o.Name, s.prefix)
		if !ok || storage.ValidKey(key) != nil {
			// "Folder" placeholders and other names that no backend
			// accepts: not the repository's.
			return nil
		}
		fnErr = fn(storage.ObjectInfo{Key: key, Size: o.Size, ModTime: o.Updated})
		return fnErr
	})
	if err != nil && fnErr == nil {
		return s.mapErr("list", opOther, prefix, err)
	}
	return err
}

// Delete removes the object; a missing object is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	err := s.mapErr("delete", opRead, key, s.cl.remove(ctx, s.prefix+key))
	if storage.IsNotFound(err) {
		return nil
	}
	return err
}

// countingReader counts the bytes read and keeps the reader's own error,
// so that Put tells a failing source from a failing upload.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// Put stores r under key, create-only (ifGenerationMatch=0): one request
// for an object that fits in a chunk, else a resumable upload chunk by
// chunk. A failure before the last chunk leaves the upload unfinished, so
// nothing appears under key.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	if err := storage.ValidMeta(opts.Meta); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", s.url(key), err)
	}
	src := &countingReader{r: storage.ContextReader(ctx, r)}
	var in io.Reader = src
	bufSize := s.chunkSize
	if opts.Size >= 0 {
		// One byte more than announced, to notice a longer reader.
		in = io.LimitReader(src, opts.Size+1)
		if opts.Size+1 < int64(bufSize) {
			bufSize = int(opts.Size) + 1
		}
	}
	check := func() error {
		switch {
		case src.err != nil:
			return fmt.Errorf("put %s: reading the data: %w", s.url(key), src.err)
		case ctx.Err() != nil:
			return fmt.Errorf("put %s: %w", s.url(key), ctx.Err())
		case opts.Size >= 0 && src.n != opts.Size:
			return fmt.Errorf("put %s: the reader yielded %d bytes or more, expected %d", s.url(key), src.n, opts.Size)
		}
		return nil
	}
	o := newObject{Name: s.prefix + key, ContentType: "application/octet-stream", Metadata: maps.Clone(opts.Meta)}
	_, err := s.upload(ctx, o, in, bufSize, 0, check)
	if err != nil {
		var le *localError
		if errors.As(err, &le) {
			return le.err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("put %s: %w", s.url(key), ctx.Err())
		}
		return s.mapErr("put", opWrite, key, err)
	}
	return nil
}

// localError is an error of the data's source, or of its check: not the
// store's.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// upload writes in to o with ifGenerationMatch=ifGen. It reads bufSize bytes
// (a chunk, or less for a smaller object of known size); if the data ends
// there, it goes up in one request, else in a resumable upload of
// s.chunkSize chunks. check is called once the data has been read whole,
// before the upload is finalised: its error aborts the upload.
func (s *Store) upload(ctx context.Context, o newObject, in io.Reader, bufSize int, ifGen int64, check func() error) (*object, error) {
	buf := make([]byte, bufSize)
	n, eof, err := fill(in, buf)
	if err != nil {
		return nil, &localError{firstErr(check(), err)}
	}
	var peek [1]byte
	if !eof {
		// A full buffer: one byte more tells whether there is more.
		m, e, err := fill(in, peek[:])
		if err != nil {
			return nil, &localError{firstErr(check(), err)}
		}
		eof = m == 0 && e
	}
	if eof {
		if err := check(); err != nil {
			return nil, &localError{err}
		}
		return s.cl.insert(ctx, o, buf[:n], ifGen)
	}
	if bufSize != s.chunkSize {
		// More data than announced.
		return nil, &localError{firstErr(check(), errors.New("more data than announced"))}
	}
	session, err := s.cl.startResumable(ctx, o, ifGen)
	if err != nil {
		return nil, err
	}
	var offset int64
	var crc uint32
	for {
		// buf[:n] is a full chunk, and peek holds the next byte.
		crc = crc32.Update(crc, castagnoli, buf[:n])
		if _, err := s.cl.putChunk(ctx, session, buf[:n], offset, -1, ""); err != nil {
			return nil, err
		}
		offset += int64(n)
		buf[0] = peek[0]
		m, eof, err := fill(in, buf[1:])
		if err != nil {
			return nil, &localError{firstErr(check(), err)}
		}
		n = 1 + m
		if !eof {
			m, e, err := fill(in, peek[:])
			if err != nil {
				return nil, &localError{firstErr(check(), err)}
			}
			eof = m == 0 && e
		}
		if eof {
			if err := check(); err != nil {
				return nil, &localError{err}
			}
			crc = crc32.Update(crc, castagnoli, buf[:n])
			total := offset + int64(n)
			return s.cl.putChunk(ctx, session, buf[:n], offset, total, crcString(crc))
		}
	}
}

// fill reads into buf until it is full or the data ends (eof).
func fill(r io.Reader, buf []byte) (n int, eof bool, err error) {
	n, err = io.ReadFull(r, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return n, true, nil
	}
	return n, false, err
}

func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// ReadSmall reads a small object whole, with its generation as the version.
func (s *Store) ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, "", err
	}
	resp, err := s.cl.media(ctx, s.prefix+key, 0, 0, -1)
	if err != nil {
		return nil, "", s.mapErr("read", opRead, key, err)
	}
	body := newBodyReader(resp, "read "+s.url(key), true)
	defer body.Close()
	size := resp.ContentLength
	if v, err := strconv.ParseInt(resp.Header.Get("X-Goog-Stored-Content-Length"), 10, 64); err == nil {
		size = v
	}
	if size > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s: %d bytes, more than the %d expected: %w", s.url(key), size, limit, storage.ErrTooLarge)}
	}
	data, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, "", &storage.ReadError{Err: fmt.Errorf("read %s: %w", s.url(key), err)}
	}
	if int64(len(data)) > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s: more than the %d bytes expected: %w", s.url(key), limit, storage.ErrTooLarge)}
	}
	gen, err := strconv.ParseInt(resp.Header.Get("X-Goog-Generation"), 10, 64)
	if err != nil || gen <= 0 {
		return data, "", nil // a compare-and-swap caller refuses it (storage.ErrNoVersion)
	}
	return data, strconv.FormatInt(gen, 10), nil
}

// Swap creates key with ifGenerationMatch=0 (ifVersion "") or replaces it
// with ifGenerationMatch=<ifVersion>, in one request.
func (s *Store) Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	if err := storage.ValidKey(key); err != nil {
		return "", err
	}
	var gen int64
	if ifVersion != "" {
		var err error
		gen, err = strconv.ParseInt(ifVersion, 10, 64)
		if err != nil || gen <= 0 {
			// Not a version this store handed out: it cannot be current.
			return "", fmt.Errorf("swap %s: version %q is not a GCS generation: %w", s.url(key), ifVersion, storage.ErrChanged)
		}
	}
	o, err := s.cl.insert(ctx, newObject{Name: s.prefix + key, ContentType: "application/json"}, data, gen)
	if err != nil {
		if ifVersion != "" && apiStatus(err) == http.StatusPreconditionFailed {
			return "", fmt.Errorf("swap %s: %w", s.url(key), storage.ErrChanged)
		}
		return "", s.mapErr("swap", opWrite, key, err)
	}
	if o.Generation == 0 {
		return "", &storage.PermanentError{Err: fmt.Errorf("swap %s: the store returned no generation, which locks need", s.url(key))}
	}
	return strconv.FormatInt(o.Generation, 10), nil
}

// ProbeConditionalWrites checks, on a probe object below the prefix, that
// the store keeps the generation preconditions that pgark relies on: a
// second create (ifGenerationMatch=0) is refused with 412, for a one-request
// upload and for a resumable one, and a replace at a wrong generation is
// refused while one at the right generation succeeds. The probe object is
// deleted afterwards (best effort).
func (s *Store) ProbeConditionalWrites(ctx context.Context) error {
	var rnd [8]byte
	rand.Read(rnd[:])
	key := ".pgark-probe-" + hex.EncodeToString(rnd[:])
	name := s.prefix + key
	url := s.url(key)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		s.cl.remove(dctx, name)
	}()
	unsupported := func(what string) error {
		return fmt.Errorf("probe of %s: %s; the store does not keep generation preconditions, "+
			"so concurrent writers could replace each other's objects", url, what)
	}
	o := newObject{Name: name, ContentType: "text/plain"}
	created, err := s.cl.insert(ctx, o, []byte("pgark conditional write probe\n"), 0)
	if err != nil {
		return s.mapErr("probe: put", opWrite, key, err)
	}
	_, err = s.cl.insert(ctx, o, []byte("pgark second write\n"), 0)
	switch {
	case err == nil:
		return unsupported("a second upload with ifGenerationMatch=0 replaced the object")
	case apiStatus(err) != http.StatusPreconditionFailed:
		return unsupported(fmt.Sprintf("a second upload with ifGenerationMatch=0 failed with an unexpected error: %v", err))
	}

	// A resumable upload (more than one chunk) onto the existing object.
	small := &Store{cl: s.cl, name: s.name, prefix: s.prefix, chunkSize: ChunkAlign}
	_, err = small.upload(ctx, o, bytes.NewReader(make([]byte, 2*ChunkAlign+1)), ChunkAlign, 0, func() error { return nil })
	switch {
	case err == nil:
		return unsupported("a resumable upload with ifGenerationMatch=0 replaced the object")
	case apiStatus(err) != http.StatusPreconditionFailed:
		return unsupported(fmt.Sprintf("a resumable upload with ifGenerationMatch=0 failed with an unexpected error: %v", err))
	}

	// Compare-and-swap, for the lock and the config.
	_, err = s.cl.insert(ctx, o, []byte("pgark wrong generation\n"), created.Generation+1)
	switch {
	case err == nil:
		return unsupported("an upload with ifGenerationMatch at a wrong generation replaced the object")
	case apiStatus(err) != http.StatusPreconditionFailed:
		return unsupported(fmt.Sprintf("an upload with ifGenerationMatch at a wrong generation failed with an unexpected error: %v", err))
	}
	after, err := s.cl.stat(ctx, name)
	if err != nil {
		return s.mapErr("probe: stat", opRead, key, err)
	}
	if after.Generation != created.Generation || after.Size != int64(len("pgark conditional write probe\n")) {
		return unsupported("a refused conditional upload changed the object")
	}
	swapped, err := s.cl.insert(ctx, o, []byte("pgark swap probe\n"), created.Generation)
	if err != nil {
		return unsupported(fmt.Sprintf("an upload with ifGenerationMatch at the current generation failed: %v", err))
	}
	if swapped.Generation == created.Generation {
		return unsupported("a replaced object kept its generation")
	}
	return nil
}
