// Package s3 implements storage.Store on Amazon S3 and S3-compatible object
// stores.
//
// Keys of the Store live below Config.Prefix in the bucket. Put is
// create-only: a single PutObject, or a multipart upload for objects larger
// than one part, whose completion carries "If-None-Match: *" so that the
// store refuses to replace an existing object (412 → storage.ErrExists, a
// concurrent conditional write 409 → storage.ErrConflict). Stores without
// conditional writes can use the racy head-then-put mode instead.
//
// Only a 404 is "not found": a 403 (for example on a missing key when the
// credentials lack s3:ListBucket) is a storage.PermanentError. One caveat
// that S3 itself imposes: a HEAD (Stat) of any key in a bucket that does not
// exist also answers 404 without a body, so Stat cannot tell a missing bucket
// from a missing key; Get, Put and List can, and report a missing bucket as
// a PermanentError.
package s3

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/pgark/pgark/storage"
)

// Values of Config.RequestChecksum.
const (
	ChecksumWhenSupported = "when_supported"
	ChecksumWhenRequired  = "when_required"
)

// Values of Config.Conditional.
const (
	ConditionalIfNoneMatch = "if-none-match"
	ConditionalHeadThenPut = "head-then-put"
)

const (
	// DefaultPartSize is the multipart part size when Config.PartSize is 0.
	DefaultPartSize = 8 << 20
	// MinPartSize and MaxPartSize are the limits S3 puts on parts.
	MinPartSize = 5 << 20
	MaxPartSize = 5 << 30
	// maxParts is the S3 limit on the number of parts of an upload.
	maxParts = 10000
	// partsPerStep: with an unknown object size the part size doubles
	// after every partsPerStep parts, so that 10000 parts reach far.
	partsPerStep = 1000

	// DefaultReadTimeout is the default of Config.ReadTimeout.
	DefaultReadTimeout = 2 * time.Minute
	connectTimeout     = 10 * time.Second
)

// Config describes an S3 repository.
type Config struct {
	// Bucket and Prefix locate the repository (from s3://bucket/prefix, see
	// ParseURL). The Store's keys live below Prefix.
	Bucket, Prefix string
	// Endpoint is a custom endpoint URL for S3-compatible servers, such as
	// "http://127.0.0.1:9000". Empty: AWS (or AWS_ENDPOINT_URL[_S3]).
	Endpoint string
	// Region defaults to the standard AWS chain (AWS_REGION, profile), else
	// "us-east-1".
	Region string
	// ForcePathStyle addresses the bucket as http://host/bucket/key instead
	// of http://bucket.host/key (needed by most S3-compatible servers).
	ForcePathStyle bool
	// RequestChecksum is "when_supported" (the default: CRC32 checksums on
	// uploads, and responses validated when they carry a checksum) or
	// "when_required" (no checksums unless an operation requires them, for
	// servers that reject checksum headers or trailers).
	RequestChecksum string
	// PartSize is the multipart part size, default 8 MiB (at least 5 MiB).
	// An object that fits in one part is uploaded with a single PutObject.
	// Memory use of a Put is at most about three parts.
	PartSize int64
	// Conditional is "if-none-match" (the default: create-only writes with
	// If-None-Match: *) or "head-then-put" (for stores without conditional
	// writes: a HEAD, then a plain PUT; two concurrent writers can both
	// succeed, the last one replacing the first).
	Conditional string
	// AccessKey, SecretKey and SessionToken are optional static
	// credentials. When AccessKey is empty (the default), credentials come
	// from the standard AWS chain: environment, shared config and
	// credentials files, AWS_PROFILE, web identity, SSO, ECS, EC2 IMDS.
	AccessKey, SecretKey, SessionToken string
	// Profile names a profile of the AWS shared config and credentials
	// files to take credentials (and the region) from; it wins over
	// AWS_ACCESS_KEY_ID in the environment, so two repositories can use
	// two accounts. Empty: the default chain (AWS_PROFILE included).
	Profile string
	// ReadTimeout fails a request when its connection delivers no data for
	// this long: a stalled server, or a server that takes longer than this
	// to answer once the request body is sent (so an upload of one part
	// must also finish within it). Default DefaultReadTimeout.
	ReadTimeout time.Duration
	// ObjectLock, when set, is the S3 Object Lock retention that every
	// write (Put, Swap) carries, but for its exempt keys (see lock.go).
	ObjectLock *ObjectLock
}

// Store is a repository in an S3 bucket.
type Store struct {
	client      *s3.Client
	bucket      string
	prefix      string // "" or ending in '/'
	partSize    int64
	checksums   bool
	headThenPut bool
	lock        *ObjectLock
}

var _ storage.Store = (*Store)(nil)

// ParseURL splits "s3://bucket/some/prefix" into the bucket and the prefix
// ("some/prefix", without leading or trailing '/'; empty for
// "s3://bucket").
func ParseURL(u string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(u, "s3://")
	if !ok {
		return "", "", fmt.Errorf("invalid S3 URL %q: it must start with s3://", u)
	}
	if strings.ContainsAny(rest, "?#") {
		return "", "", fmt.Errorf("invalid S3 URL %q: query strings and fragments are not supported", u)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if err := validBucket(bucket); err != nil {
		return "", "", fmt.Errorf("invalid S3 URL %q: %w", u, err)
	}
	prefix, err = cleanPrefix(prefix)
	if err != nil {
		return "", "", fmt.Errorf("invalid S3 URL %q: %w", u, err)
	}
	return bucket, prefix, nil
}

func validBucket(b string) error {
	if b == "" {
		return errors.New("no bucket name")
	}
	if len(b) < 3 || len(b) > 255 {
		return fmt.Errorf("bucket name %q must have 3 to 63 characters (255 for legacy buckets)", b)
	}
	for _, c := range []byte(b) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("bucket name %q may contain only lower-case letters, digits, '.' and '-'", b)
		}
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
// ProbeConditionalWrites for that).
func New(ctx context.Context, cfg Config) (*Store, error) {
	if err := validBucket(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("s3 store: %w", err)
	}
	prefix, err := cleanPrefix(cfg.Prefix)
	if err != nil {
		return nil, fmt.Errorf("s3 store: %w", err)
	}
	if prefix != "" {
		prefix += "/"
	}
	if err := cfg.ObjectLock.validate(); err != nil {
		return nil, fmt.Errorf("s3 store: %w", err)
	}
	s := &Store{bucket: cfg.Bucket, prefix: prefix, partSize: cfg.PartSize, lock: cfg.ObjectLock}
	if s.partSize == 0 {
		s.partSize = DefaultPartSize
	}
	if s.partSize < MinPartSize || s.partSize > MaxPartSize {
		return nil, fmt.Errorf("s3 store: part size %d is outside the S3 limits (5 MiB to 5 GiB)", s.partSize)
	}
	var loadOpts []func(*config.LoadOptions) error
	switch cfg.RequestChecksum {
	case "", ChecksumWhenSupported:
		s.checksums = true
		loadOpts = append(loadOpts,
			config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenSupported),
			config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenSupported))
	case ChecksumWhenRequired:
		loadOpts = append(loadOpts,
			config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
			config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired))
	default:
		return nil, fmt.Errorf("s3 store: invalid request checksum mode %q (want %q or %q)",
			cfg.RequestChecksum, ChecksumWhenSupported, ChecksumWhenRequired)
	}
	switch cfg.Conditional {
	case "", ConditionalIfNoneMatch:
	case ConditionalHeadThenPut:
		s.headThenPut = true
	default:
		return nil, fmt.Errorf("s3 store: invalid conditional write mode %q (want %q or %q)",
			cfg.Conditional, ConditionalIfNoneMatch, ConditionalHeadThenPut)
	}
	readTimeout := cfg.ReadTimeout
	if readTimeout <= 0 {
		readTimeout = DefaultReadTimeout
	}
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) {
			d.Timeout = connectTimeout
			d.KeepAlive = 30 * time.Second
		}).
		WithTransportOptions(func(tr *http.Transport) {
			tr.TLSHandshakeTimeout = connectTimeout
			tr.ExpectContinueTimeout = 2 * time.Second
			tr.IdleConnTimeout = 60 * time.Second
			tr.MaxIdleConnsPerHost = 32
		}).
		// Fails a request whose connection stays silent this long (the
		// SDK exempts S3 from its default read timeout).
		WithReadTimeout(readTimeout)
	loadOpts = append(loadOpts, config.WithHTTPClient(httpClient))
	if cfg.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(cfg.Region))
	}
	if cfg.Profile != "" {
		loadOpts = append(loadOpts, config.WithSharedConfigProfile(cfg.Profile))
	}
	if cfg.AccessKey != "" {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3 store: loading the AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	s.client = s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.ForcePathStyle
		// Multipart objects carry composite checksums that cannot be
		// validated; do not print a warning for each of them.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return s, nil
}

// String returns "s3://bucket/prefix" ("s3://bucket" without a prefix).
func (s *Store) String() string {
	if s.prefix == "" {
		return "s3://" + s.bucket
	}
	return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/")
}

func (s *Store) url(key string) string {
	return "s3://" + s.bucket + "/" + s.prefix + key
}

func (s *Store) objectKey(key string) *string { return aws.String(s.prefix + key) }

// Error codes that retrying cannot fix.
var permanentCodes = map[string]bool{
	"AccessDenied":                       true,
	"AllAccessDisabled":                  true,
	"InvalidAccessKeyId":                 true,
	"XAdminUserNotFound":                 true, // versitygw: unknown access key (answered with a 404)
	"SignatureDoesNotMatch":              true,
	"InvalidBucketName":                  true,
	"InvalidArgument":                    true,
	"InvalidRequest":                     true,
	"InvalidRange":                       true,
	"InvalidStorageClass":                true,
	"MethodNotAllowed":                   true,
	"NotImplemented":                     true,
	"AccountProblem":                     true,
	"InvalidObjectState":                 true,
	"EntityTooLarge":                     true,
	"EntityTooSmall":                     true,
	"KeyTooLongError":                    true,
	"MetadataTooLarge":                   true,
	"MissingSecurityHeader":              true,
	"AuthorizationHeaderMalformed":       true,
	"PermanentRedirect":                  true,
	"IllegalLocationConstraintException": true,
}

// opKind tells mapErr how to read a 404 and a 412.
type opKind int

const (
	opRead  opKind = iota // Get, GetRange, Stat: 404 is "not found"
	opWrite               // Put: 412 is "exists"
	opOther               // List, Delete, multipart housekeeping
)

// httpStatus returns the HTTP status of an SDK error, or 0.
func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	var sre *smithyhttp.ResponseError
	if errors.As(err, &sre) {
		return sre.HTTPStatusCode()
	}
	return 0
}

// mapErr turns an SDK error into a store error.
func (s *Store) mapErr(op string, kind opKind, key string, err error) error {
	if err == nil {
		return nil
	}
	what := op + " " + s.url(key)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	status := httpStatus(err)
	var code string
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	switch {
	case code == "NoSuchBucket":
		return &storage.PermanentError{Err: fmt.Errorf("%s: bucket %q does not exist (check the repository URL, the endpoint and the region): %w", what, s.bucket, err)}
	case status == http.StatusNotFound && kind == opRead && (code == "NoSuchKey" || code == "NotFound" || code == ""):
		return fmt.Errorf("%s: %w: %w", what, storage.ErrNotFound, err)
	case status == http.StatusPreconditionFailed && kind == opWrite:
		return fmt.Errorf("%s: %w", what, storage.ErrExists)
	case status == http.StatusConflict && code == "ConditionalRequestConflict":
		return fmt.Errorf("%s: %w: %w", what, storage.ErrConflict, err)
	case status == http.StatusRequestedRangeNotSatisfiable:
		return &storage.PermanentError{Err: fmt.Errorf("%s: the range is beyond the end of the object: %w", what, err)}
	case code == "PermanentRedirect" || status == http.StatusMovedPermanently:
		return &storage.PermanentError{Err: fmt.Errorf("%s: the bucket is in another region than the configured one: %w", what, err)}
	case status == http.StatusForbidden || status == http.StatusUnauthorized ||
		status == http.StatusMethodNotAllowed || status == http.StatusNotImplemented ||
		permanentCodes[code]:
		return &storage.PermanentError{Err: fmt.Errorf("%s: %w", what, err)}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Stat returns the object's size and metadata (HeadObject).
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := storage.ValidKey(key); err != nil {
		return storage.ObjectInfo{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: s.objectKey(key)})
	if err != nil {
		return storage.ObjectInfo{}, s.mapErr("stat", opRead, key, err)
	}
	return storage.ObjectInfo{
		Key:     key,
		Size:    aws.ToInt64(out.ContentLength),
		ModTime: aws.ToTime(out.LastModified),
		Meta:    lowerKeys(out.Metadata),

		RetainUntil: aws.ToTime(out.ObjectLockRetainUntilDate),
	}, nil
}

func lowerKeys(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

// Get opens the object.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: s.objectKey(key)})
	if err != nil {
		return nil, storage.ObjectInfo{}, s.mapErr("get", opRead, key, err)
	}
	info := storage.ObjectInfo{
		Key:     key,
		Size:    aws.ToInt64(out.ContentLength),
		ModTime: aws.ToTime(out.LastModified),
		Meta:    lowerKeys(out.Metadata),

		RetainUntil: aws.ToTime(out.ObjectLockRetainUntilDate),
	}
	return &bodyReader{rc: out.Body, what: "get " + s.url(key)}, info, nil
}

// bodyReader names the object in read errors.
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
// end). An offset at or beyond the end is an error (S3 answers 416), except
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
	rng := fmt.Sprintf("bytes=%d-", offset)
	if length > 0 {
		rng = fmt.Sprintf("bytes=%d-%d", offset, offset+length-1)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: s.objectKey(key), Range: &rng})
	if err != nil {
		return nil, s.mapErr("get range", opRead, key, err)
	}
	if out.ContentRange == nil {
		// The server ignored the Range header and sent the whole object.
		out.Body.Close()
		return nil, fmt.Errorf("get range %s: the server ignored the range request", s.url(key))
	}
	return &bodyReader{rc: out.Body, what: "get range " + s.url(key)}, nil
}

// List calls fn for every object whose key starts with prefix, in lexical
// order (ListObjectsV2). Keys are relative to the Store's prefix.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: &s.bucket,
		Prefix: aws.String(s.prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.mapErr("list", opOther, prefix, err)
		}
		for _, o := range page.Contents {
			key, ok := strings.CutPrefix(aws.ToString(o.Key), s.prefix)
			if !ok || storage.ValidKey(key) != nil {
				// "Directory" markers and other keys that no backend
				// accepts (storage.ValidKey): not the repository's.
				continue
			}
			err := fn(storage.ObjectInfo{Key: key, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)})
			if err != nil {
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
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: s.objectKey(key)})
	if err = s.mapErr("delete", opRead, key, err); storage.IsNotFound(err) {
		return nil // S3 answers 204 for a missing key; some servers 404
	}
	return err
}

// crc32Base64 is the value of an x-amz-checksum-crc32 header.
func crc32Base64(b []byte) *string {
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.ChecksumIEEE(b))
	return aws.String(base64.StdEncoding.EncodeToString(sum[:]))
}

// fill reads into buf until it is full or r ends (eof).
func fill(r io.Reader, buf []byte) (n int, eof bool, err error) {
	n, err = io.ReadFull(r, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return n, true, nil
	}
	return n, false, err
}

// partSizeFor returns the size of part number num (from 1).
func (s *Store) partSizeFor(size int64, num int) int64 {
	if size >= 0 {
		// Known size: one part size that fits the object in maxParts
		// parts, rounded up to a MiB.
		ps := max(s.partSize, (size+maxParts-1)/maxParts)
		ps = (ps + 1<<20 - 1) &^ (1<<20 - 1)
		return min(ps, MaxPartSize)
	}
	// Unknown size: double the part size every partsPerStep parts
	// (8 MiB parts: 8 GiB in the first 1000 parts, ~8 TiB in 10000).
	ps := s.partSize
	for step := (num - 1) / partsPerStep; step > 0 && ps < MaxPartSize; step-- {
		ps *= 2
	}
	return min(ps, MaxPartSize)
}

// Put stores r under key, create-only. Objects that fit in one part go up
// with one PutObject, larger ones with a multipart upload (at most two
// parts in flight, about three parts of memory).
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
	if s.headThenPut {
		_, err := s.Stat(ctx, key)
		if err == nil {
			return fmt.Errorf("put %s: %w", s.url(key), storage.ErrExists)
		}
		if !storage.IsNotFound(err) {
			return err
		}
	}
	r = storage.ContextReader(ctx, r)
	readErr := func(err error) error {
		return fmt.Errorf("put %s: reading the data: %w", s.url(key), err)
	}
	sizeErr := func(got int64) error {
		return fmt.Errorf("put %s: the reader yielded %d bytes, expected %d", s.url(key), got, opts.Size)
	}

	firstSize := s.partSizeFor(opts.Size, 1)
	if opts.Size >= 0 && opts.Size < firstSize {
		// One more byte than announced, to notice a longer reader.
		firstSize = opts.Size + 1
	}
	first := make([]byte, firstSize)
	n, eof, err := fill(r, first)
	if err != nil {
		return readErr(err)
	}
	first = first[:n]
	if opts.Size >= 0 && int64(n) > opts.Size {
		return sizeErr(int64(n))
	}
	if !eof && opts.Size >= 0 && int64(n) == opts.Size {
		// Everything announced is here; the reader must end now.
		var probe [1]byte
		m, probeEOF, err := fill(r, probe[:])
		if err != nil {
			return readErr(err)
		}
		if !probeEOF || m > 0 {
			return fmt.Errorf("put %s: the reader yielded more than the expected %d bytes", s.url(key), opts.Size)
		}
		eof = true
	}
	var second []byte
	if !eof {
		second = make([]byte, s.partSizeFor(opts.Size, 2))
		n, eof, err = fill(r, second)
		if err != nil {
			return readErr(err)
		}
		second = second[:n]
	}
	if len(second) == 0 {
		if opts.Size >= 0 && int64(len(first)) != opts.Size {
			return sizeErr(int64(len(first)))
		}
		return s.putSingle(ctx, key, first, opts.Meta)
	}
	if opts.Size >= 0 && int64(len(first)+len(second)) > opts.Size {
		return sizeErr(int64(len(first) + len(second)))
	}
	return s.putMultipart(ctx, key, r, opts, first, second, eof)
}

func (s *Store) putSingle(ctx context.Context, key string, data []byte, meta map[string]string) error {
	in := &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           s.objectKey(key),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String("application/octet-stream"),
		Metadata:      meta,
	}
	in.ObjectLockMode, in.ObjectLockRetainUntilDate = s.retention(key)
	if !s.headThenPut {
		in.IfNoneMatch = aws.String("*")
	}
	if s.checksums || in.ObjectLockMode != "" {
		// S3 requires an integrity header on writes with Object Lock.
		// As a header, computed here: no aws-chunked trailer needed.
		in.ChecksumCRC32 = crc32Base64(data)
	}
	_, err := s.client.PutObject(ctx, in)
	return s.mapErr("put", opWrite, key, err)
}

// putMultipart uploads an object of more than one part: first and second
// (already read from r; eof says whether r ended with second), then the
// rest of r. The upload is aborted unless it completes.
func (s *Store) putMultipart(ctx context.Context, key string, r io.Reader, opts storage.PutOptions, first, second []byte, eof bool) error {
	uploadID, err := s.createMultipart(ctx, key, opts.Meta)
	if err != nil {
		return err
	}
	completed := false
	defer func() {
		if !completed {
			s.abortMultipart(ctx, key, uploadID)
		}
	}()

	m := s.newPartUploader(ctx, key, uploadID)
	defer m.cancel()
	num, total, readErr := m.uploadParts(r, opts.Size, first, second, eof)
	if readErr != nil {
		m.fail(readErr) // first error wins over the cancellations it causes
	}
	parts, err := m.wait()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", s.url(key), err)
	}
	if opts.Size >= 0 && total != opts.Size {
		return fmt.Errorf("put %s: the reader yielded %d bytes, expected %d", s.url(key), total, opts.Size)
	}
	if len(parts) != int(num) {
		return fmt.Errorf("put %s: internal error: %d parts uploaded, %d expected", s.url(key), len(parts), num)
	}
	if err := s.completeMultipart(ctx, key, uploadID, parts); err != nil {
		return err
	}
	completed = true
	return nil
}

// createMultipart starts a multipart upload and returns its ID.
func (s *Store) createMultipart(ctx context.Context, key string, meta map[string]string) (*string, error) {
	create := &s3.CreateMultipartUploadInput{
		Bucket:      &s.bucket,
		Key:         s.objectKey(key),
		ContentType: aws.String("application/octet-stream"),
		Metadata:    meta,
	}
	create.ObjectLockMode, create.ObjectLockRetainUntilDate = s.retention(key)
	if s.checksums || s.lock != nil {
		create.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32
	}
	out, err := s.client.CreateMultipartUpload(ctx, create)
	if err != nil {
		return nil, s.mapErr("put (create multipart upload)", opWrite, key, err)
	}
	return out.UploadId, nil
}

// abortMultipart aborts an upload (best effort), even when ctx is
// cancelled, but not forever.
func (s *Store) abortMultipart(ctx context.Context, key string, uploadID *string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
		Bucket: &s.bucket, Key: s.objectKey(key), UploadId: uploadID,
	})
}

// completeMultipart completes an upload from its parts (in any order),
// create-only unless in head-then-put mode.
func (s *Store) completeMultipart(ctx context.Context, key string, uploadID *string, parts []types.CompletedPart) error {
	slices.SortFunc(parts, func(a, b types.CompletedPart) int {
		return cmp.Compare(aws.ToInt32(a.PartNumber), aws.ToInt32(b.PartNumber))
	})
	complete := &s3.CompleteMultipartUploadInput{
		Bucket:          &s.bucket,
		Key:             s.objectKey(key),
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}
	if !s.headThenPut {
		complete.IfNoneMatch = aws.String("*")
	}
	if _, err := s.client.CompleteMultipartUpload(ctx, complete); err != nil {
		return s.mapErr("put (complete multipart upload)", opWrite, key, err)
	}
	return nil
}

// partUploader uploads the parts of one multipart upload: at most two at
// once, from at most three part buffers (the two in flight and the one
// being filled). The first failure cancels the others.
type partUploader struct {
	s        *Store
	key      string
	uploadID *string
	ctx      context.Context // cancelled by the first failure
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	inFlight chan struct{} // a token per part being uploaded
	free     chan []byte   // spare buffers; at most 3 exist

	mu    sync.Mutex
	err   error // the first failure
	parts []types.CompletedPart
}

func (s *Store) newPartUploader(ctx context.Context, key string, uploadID *string) *partUploader {
	m := &partUploader{
		s: s, key: key, uploadID: uploadID,
		inFlight: make(chan struct{}, 2),
		free:     make(chan []byte, 3),
	}
	m.ctx, m.cancel = context.WithCancel(ctx)
	m.free <- nil
	return m
}

// fail records err, unless an earlier failure was, and cancels the
// uploads.
func (m *partUploader) fail(err error) {
	m.mu.Lock()
	if m.err == nil {
		m.err = err
	}
	m.mu.Unlock()
	m.cancel()
}

// failed returns the first failure.
func (m *partUploader) failed() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// wait waits for the uploads and returns the completed parts, or the first
// failure.
func (m *partUploader) wait() ([]types.CompletedPart, error) {
	m.wg.Wait()
	if err := m.failed(); err != nil {
		return nil, err
	}
	return m.parts, nil
}

// uploadParts uploads first and second as parts 1 and 2, then the rest of
// r part by part. It returns the number of the last part handed to an
// upload, the bytes read in all, and the error that stopped the reading
// (nil at the end of r, and when an upload failed: wait reports that).
func (m *partUploader) uploadParts(r io.Reader, size int64, first, second []byte, eof bool) (num int32, total int64, err error) {
	total = int64(len(first) + len(second))
	m.upload(1, first)
	num = 2
	data := second
	for {
		m.upload(num, data)
		if eof || m.failed() != nil {
			return num, total, nil
		}
		if num >= maxParts {
			return num, total, &storage.PermanentError{Err: fmt.Errorf("put %s: the object is too large (more than %d parts)", m.s.url(m.key), maxParts)}
		}
		var buf []byte
		select {
		case buf = <-m.free:
		case <-m.ctx.Done():
		}
		if m.ctx.Err() != nil {
			return num, total, nil
		}
		partSize := m.s.partSizeFor(size, int(num)+1)
		if int64(cap(buf)) < partSize {
			buf = make([]byte, partSize)
		}
		var n int
		n, eof, err = fill(r, buf[:partSize])
		if err != nil {
			return num, total, fmt.Errorf("put %s: reading the data: %w", m.s.url(m.key), err)
		}
		if n == 0 {
			return num, total, nil
		}
		total += int64(n)
		if size >= 0 && total > size {
			return num, total, fmt.Errorf("put %s: the reader yielded more than the expected %d bytes", m.s.url(m.key), size)
		}
		num++
		data = buf[:n]
	}
}

// upload starts the upload of part num once fewer than two are in flight;
// data goes back to the free buffers when it is done. After a failure it
// uploads nothing.
func (m *partUploader) upload(num int32, data []byte) {
	select {
	case m.inFlight <- struct{}{}:
	case <-m.ctx.Done():
		m.free <- data
		return
	}
	m.wg.Go(func() {
		defer func() {
			<-m.inFlight
			m.free <- data
		}()
		part, err := m.s.uploadPart(m.ctx, m.key, m.uploadID, num, data)
		if err != nil {
			m.fail(err)
			return
		}
		m.mu.Lock()
		m.parts = append(m.parts, part)
		m.mu.Unlock()
	})
}

// uploadPart uploads one part and returns what its completion names.
func (s *Store) uploadPart(ctx context.Context, key string, uploadID *string, num int32, data []byte) (types.CompletedPart, error) {
	in := &s3.UploadPartInput{
		Bucket:        &s.bucket,
		Key:           s.objectKey(key),
		UploadId:      uploadID,
		PartNumber:    aws.Int32(num),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
	}
	if s.checksums || s.lock != nil { // Object Lock needs an integrity header
		in.ChecksumCRC32 = crc32Base64(data)
	}
	out, err := s.client.UploadPart(ctx, in)
	if err != nil {
		return types.CompletedPart{}, s.mapErr(fmt.Sprintf("put (upload part %d)", num), opOther, key, err)
	}
	return types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num), ChecksumCRC32: in.ChecksumCRC32}, nil
}

// ProbeConditionalWrites checks that the store refuses to replace an
// existing object on a conditional write (If-None-Match: *), for a
// PutObject and for the completion of a multipart upload. It writes a
// probe object below the prefix and deletes it afterwards (best effort).
// It returns nil only if both second writes were refused with 412.
func (s *Store) ProbeConditionalWrites(ctx context.Context) error {
	var rnd [8]byte
	rand.Read(rnd[:])
	key := ".pgark-probe-" + hex.EncodeToString(rnd[:])
	objKey := s.objectKey(key)
	url := s.url(key)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		s.client.DeleteObject(dctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: objKey})
	}()
	put := func() error {
		data := []byte("pgark conditional write probe\n")
		in := &s3.PutObjectInput{
			Bucket: &s.bucket, Key: objKey, Body: bytes.NewReader(data),
			ContentLength: aws.Int64(int64(len(data))), IfNoneMatch: aws.String("*"),
		}
		if s.checksums {
			in.ChecksumCRC32 = crc32Base64(data)
		}
		_, err := s.client.PutObject(ctx, in)
		return err
	}
	unsupported := func(what string) error {
		return fmt.Errorf("probe of %s: %s; the store does not support conditional writes (If-None-Match: *), "+
			"so concurrent writers could replace each other's objects; use a store that does (AWS S3, recent MinIO, "+
			"versitygw, ...) or, at your own risk, the head-then-put mode", url, what)
	}
	if err := put(); err != nil {
		if st := httpStatus(err); st == http.StatusNotImplemented || st == http.StatusBadRequest {
			return unsupported(fmt.Sprintf("a conditional PutObject failed: %v", err))
		}
		return s.mapErr("probe: put", opWrite, key, err)
	}
	switch err := put(); {
	case err == nil:
		return unsupported("a second conditional PutObject to the same key succeeded")
	case httpStatus(err) != http.StatusPreconditionFailed:
		return unsupported(fmt.Sprintf("a second conditional PutObject to the same key failed with an unexpected error: %v", err))
	}
	// The repository lock replaces its object with If-Match: <ETag>.
	data := []byte("pgark conditional replace probe\n")
	in := &s3.PutObjectInput{
		Bucket: &s.bucket, Key: objKey, Body: bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))), IfMatch: aws.String(`"00000000000000000000000000000000"`),
	}
	if s.checksums {
		in.ChecksumCRC32 = crc32Base64(data)
	}
	switch _, err := s.client.PutObject(ctx, in); {
	case err == nil:
		return unsupported("a PutObject with If-Match on a wrong ETag replaced the object (the repository lock needs If-Match)")
	case httpStatus(err) != http.StatusPreconditionFailed:
		return unsupported(fmt.Sprintf("a PutObject with If-Match on a wrong ETag failed with an unexpected error: %v", err))
	}

	// The same for the completion of a multipart upload (objects larger
	// than one part).
	create := &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: objKey}
	if s.checksums {
		create.ChecksumAlgorithm = types.ChecksumAlgorithmCrc32
	}
	out, err := s.client.CreateMultipartUpload(ctx, create)
	if err != nil {
		return s.mapErr("probe: create multipart upload", opOther, key, err)
	}
	completed := false
	defer func() {
		if !completed {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: objKey, UploadId: out.UploadId})
		}
	}()
	data = []byte("pgark conditional multipart probe\n")
	part := &s3.UploadPartInput{
		Bucket: &s.bucket, Key: objKey, UploadId: out.UploadId, PartNumber: aws.Int32(1),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
	}
	if s.checksums {
		part.ChecksumCRC32 = crc32Base64(data)
	}
	pout, err := s.client.UploadPart(ctx, part)
	if err != nil {
		return s.mapErr("probe: upload part", opOther, key, err)
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: objKey, UploadId: out.UploadId, IfNoneMatch: aws.String("*"),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{
			ETag: pout.ETag, PartNumber: aws.Int32(1), ChecksumCRC32: part.ChecksumCRC32,
		}}},
	})
	switch {
	case err == nil:
		completed = true
		return unsupported("a conditional completion of a multipart upload replaced an existing object")
	case httpStatus(err) != http.StatusPreconditionFailed:
		return unsupported(fmt.Sprintf("a conditional completion of a multipart upload onto an existing object failed with an unexpected error: %v", err))
	}
	return nil
}

// ReadSmall reads a small object whole, with its ETag as the version.
func (s *Store) ReadSmall(ctx context.Context, key string, limit int64) ([]byte, string, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, "", err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: s.objectKey(key)})
	if err != nil {
		return nil, "", s.mapErr("read", opRead, key, err)
	}
	defer out.Body.Close()
	if aws.ToInt64(out.ContentLength) > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s: %d bytes, more than the %d expected: %w", s.url(key), aws.ToInt64(out.ContentLength), limit, storage.ErrTooLarge)}
	}
	data, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("read %s: %w", s.url(key), err)
	}
	if int64(len(data)) > limit {
		return nil, "", &storage.PermanentError{Err: fmt.Errorf("read %s: more than the %d bytes expected: %w", s.url(key), limit, storage.ErrTooLarge)}
	}
	// No ETag ("" version) is fine for plain reads (ReadJSON); a
	// compare-and-swap caller refuses it (storage.ErrNoVersion).
	return data, aws.ToString(out.ETag), nil
}

// Swap creates key with If-None-Match: * (ifVersion "") or replaces it
// with If-Match: <ETag>. A store that evaluates neither (head-then-put mode)
// gets a read-compare-write that is not atomic; the README says so.
func (s *Store) Swap(ctx context.Context, key string, data []byte, ifVersion string) (string, error) {
	if err := storage.ValidKey(key); err != nil {
		return "", err
	}
	in := &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           s.objectKey(key),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String("application/json"),
	}
	in.ObjectLockMode, in.ObjectLockRetainUntilDate = s.retention(key)
	if s.checksums || in.ObjectLockMode != "" {
		in.ChecksumCRC32 = crc32Base64(data)
	}
	switch {
	case s.headThenPut && ifVersion == "":
		if _, err := s.Stat(ctx, key); err == nil {
			return "", fmt.Errorf("swap %s: %w", s.url(key), storage.ErrExists)
		} else if !storage.IsNotFound(err) {
			return "", err
		}
	case s.headThenPut:
		_, cur, err := s.ReadSmall(ctx, key, int64(len(data))+maxSwapSlack)
		if storage.IsNotFound(err) || (err == nil && cur != ifVersion) {
			return "", fmt.Errorf("swap %s: %w", s.url(key), storage.ErrChanged)
		}
		if err != nil {
			return "", err
		}
	case ifVersion == "":
		in.IfNoneMatch = aws.String("*")
	default:
		in.IfMatch = aws.String(ifVersion)
	}
	out, err := s.client.PutObject(ctx, in)
	if err != nil {
		status := httpStatus(err)
		if ifVersion != "" && (status == http.StatusPreconditionFailed || status == http.StatusNotFound) {
			// 412: another version; 404: the object is gone.
			return "", fmt.Errorf("swap %s: %w", s.url(key), storage.ErrChanged)
		}
		return "", s.mapErr("swap", opWrite, key, err)
	}
	etag := aws.ToString(out.ETag)
	if etag == "" {
		return "", &storage.PermanentError{Err: fmt.Errorf("swap %s: the store returned no ETag, which locks need", s.url(key))}
	}
	return etag, nil
}

// maxSwapSlack bounds how much larger than the new data a swapped object
// may be when head-then-put mode reads it back.
const maxSwapSlack = 1 << 20
