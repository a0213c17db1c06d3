package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// MinIOVersion is the MinIO server that `make deps` builds from the Go
// module proxy (= MINIO_VERSION in .ci/deps.sh). The Object Lock and
// --repo-target-time tests use it: versitygw v1.8.0's posix backend keeps
// versions, but gives a noncurrent version the time it was replaced as its
// LastModified, and refuses a create-only write over a delete marker.
const MinIOVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

// MinIOBinPath returns the path of the MinIO binary: $PGARK_MINIO, else
// $PGARK_CACHE/bin/minio (default /opt/pgark-cache/bin/minio).
func MinIOBinPath() string { return serverBin("PGARK_MINIO", "bin", "minio") }

// MinIOStart starts a single-drive MinIO server on 127.0.0.1 (its data in
// a temporary directory; bucket versioning and Object Lock available),
// waits until it is ready, and stops it at t.Cleanup; its log is printed if
// the test failed. An end-to-end helper: skipped with -short; a missing
// binary skips the test (fails it with $PGARK_TEST_REQUIRE=1). The
// S3Server's Dir is MinIO's drive, whose layout is MinIO's own.
func MinIOStart(t testing.TB) *S3Server {
	t.Helper()
	bin := serverBinFor(t, MinIOBinPath(), "MinIO test server")
	s := newS3Server(t, "drive", "MinIO", "minio.log")
	s.serve(t, func(port int) error {
		consolePort, err := freePort()
		if err != nil {
			return err
		}
		return s.startMinIO(bin, port, consolePort)
	})
	return s
}

func (s *S3Server) startMinIO(bin string, port, consolePort int) error {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr,
		"--console-address", "127.0.0.1:"+strconv.Itoa(consolePort), s.Dir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_REGION="+s.Region,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"HOME="+filepath.Dir(s.Dir), // its certs directory
	)
	if err := s.launch(cmd); err != nil {
		return err
	}
	s.Endpoint = "http://" + addr
	return s.waitHTTP(s.Endpoint+"/minio/health/ready", 60*time.Second, statusOK)
}

// CreateLockedBucket creates a bucket with S3 Object Lock enabled (which
// enables versioning), as an operator does for an immutable repository.
func (s *S3Server) CreateLockedBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.S3Client().CreateBucket(ctx, &s3.CreateBucketInput{
		Bucket:                     aws.String(name),
		ObjectLockEnabledForBucket: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("creating bucket %q with Object Lock on the S3 test server: %v", name, err)
	}
}

// CreateVersionedBucket creates a bucket with versioning enabled and no
// Object Lock.
func (s *S3Server) CreateVersionedBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.S3Client()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("creating bucket %q on the S3 test server: %v", name, err)
	}
	_, err := c.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{
		Bucket:                  aws.String(name),
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
	})
	if err != nil {
		t.Fatalf("enabling versioning on bucket %q: %v", name, err)
	}
}
