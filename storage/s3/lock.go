package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/asof"
)

// Values of ObjectLock.Mode.
const (
	LockGovernance = "GOVERNANCE"
	LockCompliance = "COMPLIANCE"
)

// ObjectLock is the S3 Object Lock retention that every write carries.
type ObjectLock struct {
	// Mode is LockGovernance or LockCompliance.
	Mode string
	// Period is how long an object stays locked from its write: each
	// PutObject and multipart upload carries RetainUntilDate = now + Period.
	Period time.Duration
	// ExemptPrefixes are key prefixes written without retention (the
	// repository lock, which is rewritten every few minutes).
	ExemptPrefixes []string
}

func (l *ObjectLock) validate() error {
	if l == nil {
		return nil
	}
	if l.Mode != LockGovernance && l.Mode != LockCompliance {
		return fmt.Errorf("object lock mode %q is not %s or %s", l.Mode, LockGovernance, LockCompliance)
	}
	if l.Period <= 0 {
		return fmt.Errorf("object lock period %s is not positive", l.Period)
	}
	return nil
}

// retention returns the lock headers for a write of key (zero values for
// none).
func (s *Store) retention(key string) (types.ObjectLockMode, *time.Time) {
	l := s.lock
	if l == nil {
		return "", nil
	}
	for _, p := range l.ExemptPrefixes {
		if strings.HasPrefix(key, p) {
			return "", nil
		}
	}
	until := time.Now().Add(l.Period).UTC().Truncate(time.Second)
	return types.ObjectLockMode(l.Mode), &until
}

// ObjectLockEnabled reports whether the bucket has S3 Object Lock enabled
// (GetObjectLockConfiguration). A bucket without it answers false, nil.
func (s *Store) ObjectLockEnabled(ctx context.Context) (bool, error) {
	out, err := s.client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: &s.bucket})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "ObjectLockConfigurationNotFoundError" {
			return false, nil
		}
		if httpStatus(err) == http.StatusNotFound && (!errors.As(err, &ae) || ae.ErrorCode() != "NoSuchBucket") {
			return false, nil
		}
		return false, s.mapErr("get object lock configuration of", opOther, "", err)
	}
	c := out.ObjectLockConfiguration
	return c != nil && c.ObjectLockEnabled == types.ObjectLockEnabledEnabled, nil
}

var _ asof.Versioned = (*Store)(nil)

// ListVersions calls fn for every version and delete marker of every key
// that starts with prefix (ListObjectVersions), in key order; the versions
// of one key may come in any order (asof sorts them by time).
func (s *Store) ListVersions(ctx context.Context, prefix string, fn func(asof.Version) error) error {
	in := &s3.ListObjectVersionsInput{Bucket: &s.bucket, Prefix: aws.String(s.prefix + prefix)}
	for {
		page, err := s.client.ListObjectVersions(ctx, in)
		if err != nil {
			return s.mapErr("list versions", opOther, prefix, err)
		}
		var vs []asof.Version
		for _, o := range page.Versions {
			vs = append(vs, asof.Version{Key: aws.ToString(o.Key), ID: aws.ToString(o.VersionId),
				Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified), Latest: aws.ToBool(o.IsLatest)})
		}
		for _, o := range page.DeleteMarkers {
			vs = append(vs, asof.Version{Key: aws.ToString(o.Key), ID: aws.ToString(o.VersionId),
				ModTime: aws.ToTime(o.LastModified), Latest: aws.ToBool(o.IsLatest), DeleteMarker: true})
		}
		slices.SortStableFunc(vs, func(a, b asof.Version) int { return strings.Compare(a.Key, b.Key) })
		for _, v := range vs {
			key, ok := strings.CutPrefix(v.Key, s.prefix)
			if !ok || storage.ValidKey(key) != nil {
				continue
			}
			v.Key = key
			if err := fn(v); err != nil {
				return err
			}
		}
		if !aws.ToBool(page.IsTruncated) {
			return nil
		}
		if page.NextKeyMarker == nil && page.NextVersionIdMarker == nil {
			return fmt.Errorf("list versions %s: the store gave a truncated listing without a marker", s.url(prefix))
		}
		in.KeyMarker, in.VersionIdMarker = page.NextKeyMarker, page.NextVersionIdMarker
	}
}

// GetVersion opens one version of an object.
func (s *Store) GetVersion(ctx context.Context, key, id string) (io.ReadCloser, storage.ObjectInfo, error) {
	return s.getVersion(ctx, key, id, nil)
}

// GetVersionRange opens length bytes of one version from offset (length <
// 0: to the end).
func (s *Store) GetVersionRange(ctx context.Context, key, id string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 {
		return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: negative offset %d", s.url(key), offset)}
	}
	if length == 0 {
		info, err := s.StatVersion(ctx, key, id)
		if err != nil {
			return nil, err
		}
		if offset > info.Size {
			return nil, &storage.PermanentError{Err: fmt.Errorf("get range %s: offset %d is beyond the object's size %d", s.url(key), offset, info.Size)}
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	var rng *string
	if offset > 0 || length > 0 {
		r := fmt.Sprintf("bytes=%d-", offset)
		if length > 0 {
			r = fmt.Sprintf("bytes=%d-%d", offset, offset+length-1)
		}
		rng = &r
	}
	rc, _, err := s.getVersion(ctx, key, id, rng)
	return rc, err
}

func (s *Store) getVersion(ctx context.Context, key, id string, rng *string) (io.ReadCloser, storage.ObjectInfo, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, storage.ObjectInfo{}, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: s.objectKey(key), VersionId: aws.String(id), Range: rng})
	if err != nil {
		return nil, storage.ObjectInfo{}, s.mapErr("get version "+id+" of", opRead, key, err)
	}
	if rng != nil && out.ContentRange == nil {
		out.Body.Close()
		return nil, storage.ObjectInfo{}, fmt.Errorf("get range %s: the server ignored the range request", s.url(key))
	}
	info := storage.ObjectInfo{
		Key:         key,
		Size:        aws.ToInt64(out.ContentLength),
		ModTime:     aws.ToTime(out.LastModified),
		Meta:        lowerKeys(out.Metadata),
		RetainUntil: aws.ToTime(out.ObjectLockRetainUntilDate),
	}
	return &bodyReader{rc: out.Body, what: "get " + s.url(key) + " version " + id}, info, nil
}

// StatVersion returns the size and metadata of one version (HeadObject).
func (s *Store) StatVersion(ctx context.Context, key, id string) (storage.ObjectInfo, error) {
	if err := storage.ValidKey(key); err != nil {
		return storage.ObjectInfo{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: s.objectKey(key), VersionId: aws.String(id)})
	if err != nil {
		return storage.ObjectInfo{}, s.mapErr("stat version "+id+" of", opRead, key, err)
	}
	return storage.ObjectInfo{
		Key:         key,
		Size:        aws.ToInt64(out.ContentLength),
		ModTime:     aws.ToTime(out.LastModified),
		Meta:        lowerKeys(out.Metadata),
		RetainUntil: aws.ToTime(out.ObjectLockRetainUntilDate),
	}, nil
}
