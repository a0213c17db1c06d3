package gcs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/auth"
	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

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
	// maxAttempts bounds the client's own retries of one request; the
	// retry decorator retries what is left.
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
	// "http://127.0.0.1:4443/storage/v1/" (tests, private endpoints).
	// Empty: Google's, or STORAGE_EMULATOR_HOST's.
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
	client    *gcs.Client
	bucket    *gcs.BucketHandle
	name      string // bucket name
	prefix    string // "" or ending in '/'
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
	hc, err := httpClient(ctx, cfg, timeout)
	if err != nil {
		return nil, fmt.Errorf("gcs store: %w", err)
	}
	// The HTTP client carries the credentials (see httpClient).
	opts := []option.ClientOption{option.WithHTTPClient(hc), option.WithTelemetryDisabled(), gcs.WithJSONReads()}
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(cfg.Endpoint))
	}
	client, err := gcs.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("gcs store: creating the client: %w", err)
	}
	client.SetRetry(gcs.WithMaxAttempts(maxAttempts))
	return &Store{
		client:    client,
		bucket:    client.Bucket(cfg.Bucket),
		name:      cfg.Bucket,
		prefix:    prefix,
		chunkSize: chunk,
	}, nil
}

// Close releases the client's resources.
func (s *Store) Close() error { return s.client.Close() }

// String returns "gs://bucket/prefix" ("gs://bucket" without a prefix).
func (s *Store) String() string {
	if s.prefix == "" {
		return "gs://" + s.name
	}
	return "gs://" + s.name + "/" + strings.TrimSuffix(s.prefix, "/")
}

func (s *Store) url(key string) string { return "gs://" + s.name + "/" + s.prefix + key }

func (s *Store) obj(key string) *gcs.ObjectHandle { return s.bucket.Object(s.prefix + key) }

// opKind tells mapErr how to read a 404 and a 412.
type opKind int

const (
	opRead  opKind = iota // Get, GetRange, Stat, ReadSmall, Delete: 404 is "not found"
	opWrite               // Put, Swap create: 412 is "exists"
	opOther               // List: a 404 is the bucket's
)

// apiStatus returns the HTTP status of a JSON API error, or 0.
func apiStatus(err error) int {
	var ae *googleapi.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}

// bucketMissing reports whether a 404 is about the bucket: GCS answers an
// object request in a missing bucket with 404 "The specified bucket does not
// exist.", a missing object with "No such object: ...".
func bucketMissing(err error) bool {
	if errors.Is(err, gcs.ErrBucketNotExist) {
		return true
	}
	var ae *googleapi.Error
	if !errors.As(err, &ae) {
		return false
	}
	msg := strings.ToLower(ae.Message + " " + ae.Body)
	for _, e := range ae.Errors {
		msg += " " + strings.ToLower(e.Message)
	}
	return strings.Contains(msg, "bucket does not exist")
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
	notFound := errors.Is(err, gcs.ErrObjectNotExist) || status == http.StatusNotFound
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

// tokenRefused reports whether the token endpoint refused the credentials
// (a 4xx other than 408 and 429: a revoked or malformed key), which no
// retry fixes. Other token failures, such as an unreachable metadata
// server, are retried.
func tokenRefused(err error) bool {
	var ae *auth.Error
	if !errors.As(err, &ae) || ae.Response == nil {
		return false
	}
	sc := ae.Response.StatusCode
	return sc >= 400 && sc < 500 && !ae.Temporary()
}

// Stat returns the object's size and metadata.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := storage.ValidKey(key); err != nil {
		return storage.ObjectInfo{}, err
	}
	attrs, err := s.obj(key).Attrs(ctx)
	if err != nil {
		return storage.ObjectInfo{}, s.mapErr("stat", opRead, key, err)
	}
	return s.info(key, attrs), nil
}

func (s *Store) info(key string, a *gcs.ObjectAttrs) storage.ObjectInfo {
	meta := make(map[string]string, len(a.Metadata))
	maps.Copy(meta, a.Metadata)
	return storage.ObjectInfo{Key: key, Size: a.Size, ModTime: a.Updated, Meta: meta}
}

// Get opens the object: its attributes (with the metadata), then a read of
// that generation, so that data and metadata belong together.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	attrs, err := s.obj(key).Attrs(ctx)
	if err != nil {
		return nil, storage.ObjectInfo{}, s.mapErr("get", opRead, key, err)
	}
	r, err := s.obj(key).Generation(attrs.Generation).NewReader(ctx)
	if err != nil {
		return nil, storage.ObjectInfo{}, s.mapErr("get", opRead, key, err)
	}
	return &bodyReader{rc: r, what: "get " + s.url(key)}, s.info(key, attrs), nil
}

// bodyReader names the object in read errors and marks them as such.
type bodyReader struct {
	rc   io.ReadCloser
	what string
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
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
		// The client reads a range at the end as empty; the contract
		// wants an error there, so the size decides first.
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
	r, err := s.obj(key).NewRangeReader(ctx, offset, length)
	if err != nil {
		return nil, s.mapErr("get range", opRead, key, err)
	}
	return &bodyReader{rc: r, what: "get range " + s.url(key)}, nil
}

// List calls fn for every object whose key starts with prefix, in lexical
// order (GCS lists by name). Keys are relative to the Store's prefix.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	q := &gcs.Query{Prefix: s.prefix + prefix}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Updated"}); err != nil {
		return fmt.Errorf("list %s: %w", s.url(prefix), err)
	}
	it := s.bucket.Objects(ctx, q)
	for {
		a, err := it.Next()
		if err == iterator.Done {
			return nil
		}
		if err != nil {
			return s.mapErr("list", opOther, prefix, err)
		}
		key, ok := strings.CutPrefix(a.Name, s.prefix)
		if !ok || storage.ValidKey(key) != nil {
			// "Folder" placeholders and other names that no backend
			// accepts: not the repository's.
			continue
		}
		if err := fn(storage.ObjectInfo{Key: key, Size: a.Size, ModTime: a.Updated}); err != nil {
			return err
		}
	}
}

// Delete removes the object; a missing object is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	err := s.mapErr("delete", opRead, key, s.obj(key).Delete(ctx))
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

// Put stores r under key, create-only (ifGenerationMatch=0). The data
// streams through the client's writer: one request for an object smaller
// than a chunk, else a resumable upload chunk by chunk. Any failure cancels
// the upload before it is finalised.
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
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := s.obj(key).If(gcs.Conditions{DoesNotExist: true}).NewWriter(wctx)
	w.ChunkSize = s.chunkSize
	w.ContentType = "application/octet-stream"
	if len(opts.Meta) > 0 {
		w.Metadata = maps.Clone(opts.Meta)
	}
	src := &countingReader{r: storage.ContextReader(ctx, r)}
	var in io.Reader = src
	if opts.Size >= 0 {
		// One byte more than announced, to notice a longer reader.
		in = io.LimitReader(src, opts.Size+1)
	}
	// io.Copy's buffer, not r's WriteTo: Put must not use r after it
	// returns, and the writer copies what it is given.
	_, err := io.CopyBuffer(w, onlyReader{in}, make([]byte, 64<<10))
	abort := func(e error) error {
		cancel() // before Close: the upload is never finalised
		w.Close()
		return e
	}
	switch {
	case src.err != nil:
		return abort(fmt.Errorf("put %s: reading the data: %w", s.url(key), src.err))
	case err != nil:
		if ctx.Err() != nil {
			return abort(fmt.Errorf("put %s: %w", s.url(key), ctx.Err()))
		}
		return abort(s.mapErr("put", opWrite, key, err))
	case opts.Size >= 0 && src.n != opts.Size:
		return abort(fmt.Errorf("put %s: the reader yielded %d bytes or more, expected %d", s.url(key), src.n, opts.Size))
	}
	if err := w.Close(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("put %s: %w", s.url(key), ctx.Err())
		}
		return s.mapErr("put", opWrite, key, err)
	}
	return nil
}

// onlyReader hides every method but Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// ReadSmall reads a small object whole, with its generation as the version.
func (s *Store) ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, "", err
	}
	r, err := s.obj(key).NewReader(ctx)
	if err != nil {
		return nil, "", s.mapErr("read", opRead, key, err)
	}
	defer r.Close()
	if r.Attrs.Size > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s: %d bytes, more than the %d expected: %w", s.url(key), r.Attrs.Size, limit, storage.ErrTooLarge)}
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, "", &storage.ReadError{Err: fmt.Errorf("read %s: %w", s.url(key), err)}
	}
	if int64(len(data)) > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s: more than the %d bytes expected: %w", s.url(key), limit, storage.ErrTooLarge)}
	}
	if r.Attrs.Generation == 0 {
		return data, "", nil // a compare-and-swap caller refuses it (storage.ErrNoVersion)
	}
	return data, strconv.FormatInt(r.Attrs.Generation, 10), nil
}

// Swap creates key with ifGenerationMatch=0 (ifVersion "") or replaces it
// with ifGenerationMatch=<ifVersion>, in one request.
func (s *Store) Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	if err := storage.ValidKey(key); err != nil {
		return "", err
	}
	cond := gcs.Conditions{DoesNotExist: true}
	if ifVersion != "" {
		gen, err := strconv.ParseInt(ifVersion, 10, 64)
		if err != nil || gen <= 0 {
			// Not a version this store handed out: it cannot be current.
			return "", fmt.Errorf("swap %s: version %q is not a GCS generation: %w", s.url(key), ifVersion, storage.ErrChanged)
		}
		cond = gcs.Conditions{GenerationMatch: gen}
	}
	attrs, err := s.write(ctx, s.obj(key).If(cond), data, "application/json")
	if err != nil {
		if ifVersion != "" && apiStatus(err) == http.StatusPreconditionFailed {
			return "", fmt.Errorf("swap %s: %w", s.url(key), storage.ErrChanged)
		}
		return "", s.mapErr("swap", opWrite, key, err)
	}
	if attrs == nil || attrs.Generation == 0 {
		return "", &storage.PermanentError{Err: fmt.Errorf("swap %s: the store returned no generation, which locks need", s.url(key))}
	}
	return strconv.FormatInt(attrs.Generation, 10), nil
}

// write uploads small data in one request and returns the new object's
// attributes.
func (s *Store) write(ctx context.Context, o *gcs.ObjectHandle, data []byte, contentType string) (*gcs.ObjectAttrs, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := o.NewWriter(wctx)
	w.ChunkSize = 0 // one request: the data is in memory
	w.ContentType = contentType
	if _, err := w.Write(data); err != nil {
		cancel()
		w.Close()
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return w.Attrs(), nil
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
	o := s.obj(key)
	url := s.url(key)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		o.Delete(dctx)
	}()
	unsupported := func(what string) error {
		return fmt.Errorf("probe of %s: %s; the store does not keep generation preconditions, "+
			"so concurrent writers could replace each other's objects", url, what)
	}
	created, err := s.write(ctx, o.If(gcs.Conditions{DoesNotExist: true}), []byte("pgark conditional write probe\n"), "text/plain")
	if err != nil {
		return s.mapErr("probe: put", opWrite, key, err)
	}
	_, err = s.write(ctx, o.If(gcs.Conditions{DoesNotExist: true}), []byte("pgark second write\n"), "text/plain")
	switch {
	case err == nil:
		return unsupported("a second upload with ifGenerationMatch=0 replaced the object")
	case apiStatus(err) != http.StatusPreconditionFailed:
		return unsupported(fmt.Sprintf("a second upload with ifGenerationMatch=0 failed with an unexpected error: %v", err))
	}

	// A resumable upload (more than one chunk) onto the existing object.
	w := o.If(gcs.Conditions{DoesNotExist: true}).NewWriter(ctx)
	w.ChunkSize = ChunkAlign
	_, werr := w.Write(make([]byte, 2*ChunkAlign+1))
	cerr := w.Close()
	switch err := errors.Join(werr, cerr); {
	case err == nil:
		return unsupported("a resumable upload with ifGenerationMatch=0 replaced the object")
	case apiStatus(err) != http.StatusPreconditionFailed:
		return unsupported(fmt.Sprintf("a resumable upload with ifGenerationMatch=0 failed with an unexpected error: %v", err))
	}

	// Compare-and-swap, for the lock and the config.
	_, err = s.write(ctx, o.If(gcs.Conditions{GenerationMatch: created.Generation + 1}), []byte("pgark wrong generation\n"), "text/plain")
	switch {
	case err == nil:
		return unsupported("an upload with ifGenerationMatch at a wrong generation replaced the object")
	case apiStatus(err) != http.StatusPreconditionFailed:
		return unsupported(fmt.Sprintf("an upload with ifGenerationMatch at a wrong generation failed with an unexpected error: %v", err))
	}
	after, err := o.Attrs(ctx)
	if err != nil {
		return s.mapErr("probe: stat", opRead, key, err)
	}
	if after.Generation != created.Generation || after.Size != int64(len("pgark conditional write probe\n")) {
		return unsupported("a refused conditional upload changed the object")
	}
	swapped, err := s.write(ctx, o.If(gcs.Conditions{GenerationMatch: created.Generation}), []byte("pgark swap probe\n"), "text/plain")
	if err != nil {
		return unsupported(fmt.Sprintf("an upload with ifGenerationMatch at the current generation failed: %v", err))
	}
	if swapped.Generation == created.Generation {
		return unsupported("a replaced object kept its generation")
	}
	return nil
}
