package azure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/pgark/pgark/storage"
)

const (
	// DefaultBlockSize is the block size when Config.BlockSize is 0.
	DefaultBlockSize = 8 << 20
	// MinBlockSize and MaxBlockSize bound Config.BlockSize (the service
	// takes blocks of up to 4000 MiB).
	MinBlockSize = 1 << 20
	MaxBlockSize = 4000 << 20
	// maxBlocks is the service's limit on the blocks of one blob.
	maxBlocks = 50000
	// concurrency is the number of blocks of one Put in flight; a Put
	// holds at most one more block in memory (the one being read).
	concurrency = 2
	// blocksPerStep: with an unknown object size the block size doubles
	// after every blocksPerStep blocks, so that 50,000 blocks reach far.
	blocksPerStep = 1000

	// DefaultReadTimeout is the default of Config.ReadTimeout.
	DefaultReadTimeout = 2 * time.Minute
	connectTimeout     = 10 * time.Second
)

// Config describes an Azure Blob Storage repository. Credentials are tried
// in this order: ConnectionString, AccountKey, SASToken, and else the
// default Azure credential chain (environment, workload identity, managed
// identity, Azure CLI).
type Config struct {
	// Container and Prefix locate the repository (from
	// azure://container/prefix, see ParseURL).
	Container, Prefix string
	// Endpoint is the blob service URL, such as
	// "https://myaccount.blob.core.windows.net" (the default, from
	// Account) or "http://127.0.0.1:10000/devstoreaccount1" (Azurite).
	// Ignored with a connection string, which names its own endpoint.
	Endpoint string
	// Account is the storage account name.
	Account string
	// ConnectionString is an Azure Storage connection string
	// (AZURE_STORAGE_CONNECTION_STRING).
	ConnectionString string
	// AccountKey is the account's shared key (with Account).
	AccountKey string
	// SASToken is a shared access signature (the query string, with or
	// without the leading '?').
	SASToken string
	// BlockSize is the size of the blocks of a staged upload, default 8
	// MiB. An object that fits in one block goes up with one Put Blob;
	// a Put holds at most three blocks in memory. With an unknown object
	// size it doubles after every 1000 blocks.
	BlockSize int64
	// ReadTimeout fails a request whose connection delivers no data for
	// this long. Default DefaultReadTimeout.
	ReadTimeout time.Duration
	// Retries is the number of retries of a failed request inside the SDK
	// (throttling, 5xx, connection errors), before the error reaches the
	// retry decorator; 0: 3, negative: none.
	Retries int
}

// Store is a repository in an Azure Blob Storage container.
type Store struct {
	cc        *container.Client
	account   string
	container string
	prefix    string // "" or ending in '/'
	blockSize int64
	listPage  int32 // List Blobs page size; 0: the service's (5000)
}

var _ storage.Store = (*Store)(nil)

// ParseURL splits "azure://container/some/prefix" into the container and
// the prefix ("some/prefix", without leading or trailing '/').
func ParseURL(u string) (containerName, prefix string, err error) {
	rest, ok := strings.CutPrefix(u, "azure://")
	if !ok {
		return "", "", fmt.Errorf("invalid Azure URL %q: it must start with azure://", u)
	}
	if strings.ContainsAny(rest, "?#") {
		return "", "", fmt.Errorf("invalid Azure URL %q: query strings and fragments are not supported (give a SAS token with azure-sas-token-file)", u)
	}
	containerName, prefix, _ = strings.Cut(rest, "/")
	if err := validContainer(containerName); err != nil {
		return "", "", fmt.Errorf("invalid Azure URL %q: %w", u, err)
	}
	if prefix, err = cleanPrefix(prefix); err != nil {
		return "", "", fmt.Errorf("invalid Azure URL %q: %w", u, err)
	}
	return containerName, prefix, nil
}

// validContainer checks the service's rules for container names: 3 to 63
// lower-case letters, digits and '-', starting and ending with a letter or
// digit, no "--".
func validContainer(c string) error {
	if c == "" {
		return errors.New("no container name")
	}
	if len(c) < 3 || len(c) > 63 {
		return fmt.Errorf("container name %q must have 3 to 63 characters", c)
	}
	for _, ch := range []byte(c) {
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
			return fmt.Errorf("container name %q may contain only lower-case letters, digits and '-'", c)
		}
	}
	if c[0] == '-' || c[len(c)-1] == '-' || strings.Contains(c, "--") {
		return fmt.Errorf("container name %q must start and end with a letter or digit and have no \"--\"", c)
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

// New returns a Store for cfg. It does not contact the service (use
// ProbeConditionalWrites for that).
func New(cfg Config) (*Store, error) {
	if err := validContainer(cfg.Container); err != nil {
		return nil, fmt.Errorf("azure store: %w", err)
	}
	prefix, err := cleanPrefix(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("azure store: %w", err)
	}
	if prefix != "" {
		prefix += "/"
	}
	s := &Store{account: cfg.Account, container: cfg.Container, prefix: prefix, blockSize: cfg.BlockSize}
	if s.blockSize == 0 {
		s.blockSize = DefaultBlockSize
	}
	if s.blockSize < MinBlockSize || s.blockSize > MaxBlockSize {
		return nil, fmt.Errorf("azure store: block size %d is outside 1 MiB to 4000 MiB", s.blockSize)
	}
	readTimeout := cfg.ReadTimeout
	if readTimeout <= 0 {
		readTimeout = DefaultReadTimeout
	}
	retries := int32(cfg.Retries)
	if retries == 0 {
		retries = 3
	}
	opts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: newHTTPClient(readTimeout),
		Retry: policy.RetryOptions{
			MaxRetries:    retries,
			RetryDelay:    200 * time.Millisecond,
			MaxRetryDelay: 5 * time.Second,
		},
	}}

	endpoint := strings.TrimSuffix(cfg.Endpoint, "/")
	if endpoint == "" && cfg.ConnectionString == "" {
		if cfg.Account == "" {
			return nil, errors.New("azure store: no storage account: set azure-account (or AZURE_STORAGE_ACCOUNT), azure-endpoint, or AZURE_STORAGE_CONNECTION_STRING")
		}
		endpoint = "https://" + cfg.Account + ".blob.core.windows.net"
	}
	containerURL := endpoint + "/" + cfg.Container
	switch {
	case cfg.ConnectionString != "":
		s.cc, err = container.NewClientFromConnectionString(cfg.ConnectionString, cfg.Container, opts)
	case cfg.AccountKey != "":
		if cfg.Account == "" {
			return nil, errors.New("azure store: an account key needs the account name (azure-account)")
		}
		var cred *container.SharedKeyCredential
		if cred, err = container.NewSharedKeyCredential(cfg.Account, cfg.AccountKey); err == nil {
			s.cc, err = container.NewClientWithSharedKeyCredential(containerURL, cred, opts)
		}
	case cfg.SASToken != "":
		s.cc, err = container.NewClientWithNoCredential(containerURL+"?"+strings.TrimPrefix(cfg.SASToken, "?"), opts)
	default:
		var cred *azidentity.DefaultAzureCredential
		if cred, err = azidentity.NewDefaultAzureCredential(nil); err == nil {
			s.cc, err = container.NewClient(containerURL, cred, opts)
		}
	}
	if err != nil {
		// The SDK's messages do not repeat the key or the token.
		return nil, fmt.Errorf("azure store: %w", err)
	}
	return s, nil
}

// newHTTPClient returns the client of the SDK's requests: connections time
// out after connectTimeout and fail a request once they stay silent for
// readTimeout (while the server answers, and while the body is read).
func newHTTPClient(readTimeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &idleConn{Conn: c, timeout: readTimeout}, nil
	}
	tr.TLSHandshakeTimeout = connectTimeout
	tr.ResponseHeaderTimeout = readTimeout
	tr.IdleConnTimeout = 60 * time.Second
	tr.MaxIdleConnsPerHost = 32
	return &http.Client{Transport: tr}
}

// idleConn fails a read that waits more than timeout for data.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// String returns "azure://container/prefix" ("azure://container" without
// a prefix).
func (s *Store) String() string {
	if s.prefix == "" {
		return "azure://" + s.container
	}
	return "azure://" + s.container + "/" + strings.TrimSuffix(s.prefix, "/")
}

func (s *Store) url(key string) string {
	return "azure://" + s.container + "/" + s.prefix + key
}

func (s *Store) blob(key string) *blockblob.Client {
	return s.cc.NewBlockBlobClient(s.prefix + key)
}

// opKind tells mapErr how to read a 404 and a 412.
type opKind int

const (
	opRead  opKind = iota // Stat, Get, GetRange, ReadSmall: BlobNotFound is "not found"
	opWrite               // Put: 412 and BlobAlreadyExists are "exists"
	opOther               // List, Delete
)

// respErr returns the service's answer in err, or nil.
func respErr(err error) *azcore.ResponseError {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re
	}
	return nil
}

// errorCode returns the x-ms-error-code of an answer ("" for nil or none;
// a HEAD answer has no body, but the service sets the header).
func errorCode(re *azcore.ResponseError) string {
	if re == nil {
		return ""
	}
	if re.ErrorCode != "" {
		return re.ErrorCode
	}
	if re.RawResponse != nil {
		return re.RawResponse.Header.Get("x-ms-error-code")
	}
	return ""
}

// mapErr turns an SDK error into a store error.
func (s *Store) mapErr(op string, kind opKind, key string, err error) error {
	if err == nil {
		return nil
	}
	what := op + " " + s.url(key)
	err = redactURL(err)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	re := respErr(err)
	if re == nil {
		// No answer: a connection error, retried.
		return fmt.Errorf("%s: %w", what, err)
	}
	status, code := re.StatusCode, errorCode(re)
	switch {
	case code == "ContainerNotFound":
		return &storage.PermanentError{Err: fmt.Errorf("%s: container %q does not exist (check the repository URL and the endpoint): %w", what, s.container, err)}
	case status == http.StatusNotFound && kind == opRead && code == "BlobNotFound":
		return fmt.Errorf("%s: %w: %w", what, storage.ErrNotFound, err)
	case kind == opWrite && (status == http.StatusPreconditionFailed || code == "BlobAlreadyExists"):
		return fmt.Errorf("%s: %w", what, storage.ErrExists)
	case kind == opWrite && code == "InvalidBlockList":
		// A concurrent writer committed the blob first, which discarded
		// this writer's uncommitted blocks.
		return fmt.Errorf("%s: %w: %w", what, storage.ErrConflict, err)
	case status == http.StatusRequestedRangeNotSatisfiable:
		return &storage.PermanentError{Err: fmt.Errorf("%s: the range is beyond the end of the object: %w", what, err)}
	case status == http.StatusNotFound:
		// Not BlobNotFound (a wrong endpoint, account or a missing
		// resource that is not the blob): not "not found".
		return &storage.PermanentError{Err: fmt.Errorf("%s: %w", what, err)}
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
		return fmt.Errorf("%s: %w", what, err) // transient: retried
	case status >= 400:
		// Authentication (403), a bad request (400), a conflict with
		// the container's state (409): retrying cannot fix them.
		return &storage.PermanentError{Err: fmt.Errorf("%s: %w", what, err)}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// redactURL drops the query string from the URL that a transport error
// (*url.Error) names: with a SAS token it holds the signature. The SDK's
// own answers (azcore.ResponseError) name the URL without its query.
func redactURL(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil {
		return &url.Error{Op: ue.Op, URL: "(URL not shown)", Err: ue.Err}
	}
	u.RawQuery, u.Fragment = "", ""
	return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
}

// Stat returns the object's size and metadata (Get Blob Properties).
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := storage.ValidKey(key); err != nil {
		return storage.ObjectInfo{}, err
	}
	p, err := s.blob(key).GetProperties(ctx, nil)
	if err != nil {
		return storage.ObjectInfo{}, s.mapErr("stat", opRead, key, err)
	}
	return storage.ObjectInfo{
		Key:     key,
		Size:    deref(p.ContentLength),
		ModTime: deref(p.LastModified),
		Meta:    decodeMeta(p.Metadata),
	}, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// Get opens the object.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	resp, err := s.blob(key).DownloadStream(ctx, nil)
	if err != nil {
		return nil, storage.ObjectInfo{}, s.mapErr("get", opRead, key, err)
	}
	info := storage.ObjectInfo{
		Key:     key,
		Size:    deref(resp.ContentLength),
		ModTime: deref(resp.LastModified),
		Meta:    decodeMeta(resp.Metadata),
	}
	return &bodyReader{rc: resp.Body, what: "get " + s.url(key)}, info, nil
}

// bodyReader names the object in read errors and marks them as
// storage.ReadError.
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
// end). An offset at or beyond the end is an error (416), except
// GetRange(key, 0, -1), which is Get, and length 0, which gives an empty
// reader for any offset up to the size. A length past the end is cut.
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
	if length == 0 {
		info, err := s.Stat(ctx, key)
		if err != nil {
			return nil, err
		}
		if offset > info.Size {
			return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: offset %d is beyond the object's size %d", s.url(key), offset, info.Size)}
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	rng := blob.HTTPRange{Offset: offset}
	if length > 0 {
		rng.Count = length
	}
	resp, err := s.blob(key).DownloadStream(ctx, &blob.DownloadStreamOptions{Range: rng})
	if err != nil {
		return nil, s.mapErr("get range", opRead, key, err)
	}
	if resp.ContentRange == nil {
		resp.Body.Close()
		return nil, fmt.Errorf("get range %s: the server ignored the range request", s.url(key))
	}
	// Azure answers 416 for a range that starts at or beyond the end;
	// Azurite sends an empty body with the total size instead.
	var first, last, total int64
	if _, err := fmt.Sscanf(*resp.ContentRange, "bytes %d-%d/%d", &first, &last, &total); err != nil || first != offset || offset >= total {
		resp.Body.Close()
		if err == nil && offset >= total {
			return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: offset %d is beyond the object's size %d", s.url(key), offset, total)}
		}
		return nil, fmt.Errorf("get range %s: unexpected Content-Range %q for offset %d", s.url(key), *resp.ContentRange, offset)
	}
	return &bodyReader{rc: resp.Body, what: "get range " + s.url(key)}, nil
}

// List calls fn for every object whose key starts with prefix, in lexical
// order (List Blobs, flat). Keys are relative to the Store's prefix.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	full := s.prefix + prefix
	lo := &container.ListBlobsFlatOptions{Prefix: &full}
	if s.listPage > 0 {
		lo.MaxResults = &s.listPage
	}
	p := s.cc.NewListBlobsFlatPager(lo)
	for p.More() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.mapErr("list", opOther, prefix, err)
		}
		for _, b := range page.Segment.BlobItems {
			key, ok := strings.CutPrefix(deref(b.Name), s.prefix)
			if !ok || storage.ValidKey(key) != nil {
				// Keys that no backend accepts: not the repository's.
				continue
			}
			info := storage.ObjectInfo{Key: key}
			if b.Properties != nil {
				info.Size = deref(b.Properties.ContentLength)
				info.ModTime = deref(b.Properties.LastModified)
			}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete removes the object; a missing object is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	_, err := s.blob(key).Delete(ctx, nil)
	if err = s.mapErr("delete", opRead, key, err); storage.IsNotFound(err) {
		return nil
	}
	return err
}

func ptr[T any](v T) *T { return &v }

func ifNoneMatch() *blob.AccessConditions {
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: ptr(azcore.ETagAny)}}
}

func ifMatch(etag string) *blob.AccessConditions {
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: ptr(azcore.ETag(etag))}}
}

// ReadSmall reads a small object whole, with its ETag as the version.
func (s *Store) ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, "", err
	}
	resp, err := s.blob(key).DownloadStream(ctx, nil)
	if err != nil {
		return nil, "", s.mapErr("read", opRead, key, err)
	}
	defer resp.Body.Close()
	if n := deref(resp.ContentLength); n > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s: %d bytes, more than the %d expected: %w", s.url(key), n, limit, storage.ErrTooLarge)}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, "", &storage.ReadError{Err: fmt.Errorf("read %s: %w", s.url(key), err)}
	}
	if int64(len(data)) > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s: more than the %d bytes expected: %w", s.url(key), limit, storage.ErrTooLarge)}
	}
	return data, string(deref(resp.ETag)), nil
}

// Swap creates key with If-None-Match: * (ifVersion "") or replaces it with
// If-Match: <ETag>, in one Put Blob.
func (s *Store) Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	if err := storage.ValidKey(key); err != nil {
		return "", err
	}
	cond := ifNoneMatch()
	if ifVersion != "" {
		cond = ifMatch(ifVersion)
	}
	resp, err := s.blob(key).Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{
		HTTPHeaders:      &blob.HTTPHeaders{BlobContentType: ptr("application/json")},
		AccessConditions: cond,
	})
	if err != nil {
		if re := respErr(err); ifVersion != "" && re != nil &&
			(re.StatusCode == http.StatusPreconditionFailed || errorCode(re) == "BlobNotFound") {
			// 412: another version; 404: the object is gone.
			return "", fmt.Errorf("swap %s: %w", s.url(key), storage.ErrChanged)
		}
		return "", s.mapErr("swap", opWrite, key, err)
	}
	etag := string(deref(resp.ETag))
	if etag == "" {
		return "", &storage.PermanentError{Err: fmt.Errorf("swap %s: the service returned no ETag, which locks need", s.url(key))}
	}
	return etag, nil
}
