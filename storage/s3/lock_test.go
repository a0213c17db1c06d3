package s3

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/storage/storagetest"
)

func newLockedBucket(t *testing.T, srv *testenv.S3Server) string {
	t.Helper()
	name := fmt.Sprintf("pgark-locked-%d", bucketSeq.Add(1))
	srv.CreateLockedBucket(t, name)
	return name
}

// The store keeps its whole contract on a bucket with Object Lock when
// every write carries a retention (but the exempt lock prefix): create-only
// writes, compare-and-swap (a new version each time), deletes (delete
// markers) and writes over delete markers.
func TestConformanceObjectLock(t *testing.T) {
	srv := testenv.MinIOStart(t)
	storagetest.Run(t, func(t *testing.T) storage.Store {
		cfg := testConfig(srv, newLockedBucket(t, srv), "repo/main")
		cfg.ObjectLock = &ObjectLock{Mode: LockGovernance, Period: time.Hour, ExemptPrefixes: []string{"locks/"}}
		return mustNew(t, cfg)
	})
}

// Compare-and-swap keeps working on a locked, versioned bucket: each
// replace is a new version, and the locked old versions stay.
func TestObjectLockSwap(t *testing.T) {
	srv := testenv.MinIOStart(t)
	cfg := testConfig(srv, newLockedBucket(t, srv), "r")
	cfg.ObjectLock = &ObjectLock{Mode: LockGovernance, Period: time.Hour, ExemptPrefixes: []string{"locks/"}}
	s := mustNew(t, cfg)
	ctx := t.Context()
	for _, key := range []string{"pgark.json", "locks/repository.json"} {
		v, err := s.Swap(ctx, key, []byte("one"), "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Swap(ctx, key, []byte("two"), ""); !storage.IsExists(err) {
			t.Fatalf("%s: a second create: %v, want ErrExists", key, err)
		}
		v2, err := s.Swap(ctx, key, []byte("two"), v)
		if err != nil {
			t.Fatalf("%s: replace at the current version: %v", key, err)
		}
		if _, err := s.Swap(ctx, key, []byte("three"), v); !errors.Is(err, storage.ErrChanged) {
			t.Fatalf("%s: replace at an old version: %v, want ErrChanged", key, err)
		}
		if data, cur, err := s.ReadSmall(ctx, key, 10); err != nil || string(data) != "two" || cur != v2 {
			t.Fatalf("%s: ReadSmall = %q, %q, %v; want two at %q", key, data, cur, err, v2)
		}
	}
}

func TestObjectLockRetention(t *testing.T) {
	srv := testenv.MinIOStart(t)
	bucket := newLockedBucket(t, srv)
	cfg := testConfig(srv, bucket, "r")
	cfg.ObjectLock = &ObjectLock{Mode: LockCompliance, Period: 48 * time.Hour, ExemptPrefixes: []string{"locks/"}}
	cfg.PartSize = MinPartSize
	// Writes with Object Lock carry an integrity header even when the SDK
	// adds none (S3 requires one).
	cfg.RequestChecksum = ChecksumWhenRequired
	s := mustNew(t, cfg)
	ctx := t.Context()

	on, err := s.ObjectLockEnabled(ctx)
	if err != nil || !on {
		t.Fatalf("ObjectLockEnabled on a locked bucket = %v, %v; want true", on, err)
	}
	plain := newBucket(t, srv)
	if on, err := mustNew(t, testConfig(srv, plain, "")).ObjectLockEnabled(ctx); err != nil || on {
		t.Fatalf("ObjectLockEnabled on a plain bucket = %v, %v; want false, nil", on, err)
	}

	before := time.Now()
	big := bytes.Repeat([]byte("x"), MinPartSize+100) // a multipart upload
	for key, data := range map[string][]byte{"small": []byte("data"), "big": big} {
		if err := s.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Swap(ctx, "pgark.json", []byte("{}"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Swap(ctx, "locks/repository.json", []byte("{}"), ""); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"small", "big", "pgark.json"} {
		info, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if min := before.Add(48*time.Hour - 2*time.Second); info.RetainUntil.Before(min) {
			t.Errorf("%s: retained until %v, want at least %v", key, info.RetainUntil, min)
		}
	}
	if info, err := s.Stat(ctx, "locks/repository.json"); err != nil || !info.RetainUntil.IsZero() {
		t.Errorf("the lock object: retained until %v (%v), want no retention", info.RetainUntil, err)
	}

	// A locked version cannot be deleted, even with the credentials that
	// wrote it; a plain delete only hides it behind a delete marker.
	c := srv.S3Client()
	head, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("r/small")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("r/small"), VersionId: head.VersionId})
	if err == nil {
		t.Fatal("deleting a locked version succeeded")
	}
	if err := s.Delete(ctx, "small"); err != nil {
		t.Fatalf("a plain delete on a locked bucket: %v", err)
	}
	if _, err := s.Stat(ctx, "small"); !storage.IsNotFound(err) {
		t.Fatalf("stat after delete: %v, want not found", err)
	}
	rc, info, err := s.GetVersion(ctx, "small", aws.ToString(head.VersionId))
	if err != nil {
		t.Fatalf("the locked version after the delete: %v", err)
	}
	rc.Close()
	if info.Size != 4 {
		t.Fatalf("the locked version has %d bytes, want 4", info.Size)
	}
}
