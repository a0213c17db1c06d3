package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/pgark/pgark/internal/testenv"
)

// TestImmutable runs a repository on a bucket with S3 Object Lock (MinIO):
// init records the retention and refuses a bucket without Object Lock;
// every object carries the retention and its locked versions cannot be
// deleted; retain keeps and reports what is still locked; verify flags an
// object written without retention. Then the attack: with the repository's
// own credentials, half the objects are deleted and backup.json is forged;
// restore refuses the damaged repository, and restore --repo-target-time
// (before the attack) restores every committed row.
func TestImmutable(t *testing.T) {
	srv := testenv.MinIOStart(t)
	srv.CreateLockedBucket(t, "locked")
	srv.CreateBucket(t, "plain")
	shared := testenv.SharedDir(t)
	env := srv.Env()
	s3c := srv.S3Client()
	ctx := context.Background()

	r := asPostgres(t, env, "init", "--object-lock-days", "7", "s3://plain/cluster")
	wantCode(t, r, 2, "does not have S3 Object Lock enabled")

	confPath := writeConfig(t, shared, map[string]string{"repo": "s3://locked/cluster", "s3-force-path-style": "true"})
	if r := asPostgres(t, env, "init", "--config", confPath, "--object-lock-days", "7", "--object-lock-mode", "governance"); r.code != 0 ||
		!strings.Contains(r.stdout, "object lock governance 7 days") {
		t.Fatalf("init with object lock: %s", r)
	}

	c := testenv.StartPG(t, testenv.PGOptions{
		Env: env,
		Conf: map[string]string{
			"archive_mode":    "on",
			"archive_command": fmt.Sprintf("%s wal-push --config %s %%p", pgarkBin, confPath),
			"archive_timeout": "0",
		},
	})
	a := &archiveSetup{c: c}
	penv := append([]string{"PGARK_DSN=" + c.DSN()}, env...)
	run := func(args ...string) result {
		t.Helper()
		return pgark(t, penv, append([]string{args[0], "--config", confPath}, args[1:]...)...)
	}
	backup := func() string {
		t.Helper()
		var b struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(mustOK(t, run("backup", "--json")).stdout), &b); err != nil || b.ID == "" {
			t.Fatalf("backup --json: %v", err)
		}
		return b.ID
	}

	c.Exec(t, "CREATE TABLE rows(id int PRIMARY KEY, note text)")
	c.Exec(t, "INSERT INTO rows SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
	first := backup()
	c.Exec(t, "INSERT INTO rows SELECT g, md5(g::text) FROM generate_series(1001, 2000) g")
	second := backup()
	c.Exec(t, "INSERT INTO rows SELECT g, md5(g::text) FROM generate_series(2001, 3000) g")
	a.switchAndWait(t)

	// Every object but the repository lock carries the retention, and a
	// locked version cannot be deleted with the repository's credentials.
	objects := listKeys(t, s3c, "locked", "cluster/")
	retained := 0
	for _, k := range objects {
		h, err := s3c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("locked"), Key: aws.String(k)})
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(k, "cluster/locks/") {
			continue
		}
		if h.ObjectLockMode != types.ObjectLockModeGovernance || h.ObjectLockRetainUntilDate == nil ||
			h.ObjectLockRetainUntilDate.Before(time.Now().Add(6*24*time.Hour)) {
			t.Fatalf("%s: lock mode %q until %v, want governance for 7 days", k, h.ObjectLockMode, h.ObjectLockRetainUntilDate)
		}
		retained++
	}
	if retained < 10 {
		t.Fatalf("only %d objects checked: %v", retained, objects)
	}
	meta := "cluster/backups/" + first + "/backup.json"
	h, err := s3c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("locked"), Key: aws.String(meta)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s3c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String("locked"), Key: aws.String(meta), VersionId: h.VersionId})
	if err == nil {
		t.Fatalf("deleting the locked version of %s succeeded", meta)
	}

	// retain: the policy wants the first backup gone, but it is locked:
	// kept, reported, exit 0.
	var ret struct {
		Backups []struct {
			ID   string `json:"id"`
			Keep bool   `json:"keep"`
			Why  string `json:"why"`
		} `json:"backups"`
		ObjectLock *struct {
			KeptBackups int `json:"kept_backups"`
		} `json:"object_lock"`
	}
	r = mustOK(t, run("retain", "--keep-last", "1", "--json"))
	if err := json.Unmarshal([]byte(r.stdout), &ret); err != nil || ret.ObjectLock == nil || ret.ObjectLock.KeptBackups != 1 ||
		len(ret.Backups) != 2 || !ret.Backups[0].Keep || !strings.Contains(ret.Backups[0].Why, "Object Lock") {
		t.Fatalf("retain --keep-last 1 on locked backups: %v %s", err, r)
	}
	if r := mustOK(t, run("retain", "--keep-last", "1")); !strings.Contains(r.stdout, "kept 1 backups") {
		t.Fatalf("retain's report does not say what the lock kept: %s", r)
	} else {
		t.Logf("retain:\n%s", r.stdout)
	}
	if r := mustOK(t, run("list")); !strings.Contains(r.stdout, first) || !strings.Contains(r.stdout, second) {
		t.Fatalf("list after retain: %s", r)
	}

	// verify flags an object written without retention.
	mustOK(t, run("verify"))
	srv.S3PutObject(t, "locked", "cluster/stray.json", []byte("{}"))
	r = run("verify", "--json")
	var v struct {
		OK         bool `json:"ok"`
		ObjectLock struct {
			Problems []struct {
				Key string `json:"key"`
			} `json:"problems"`
		} `json:"object_lock"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.code != 1 || v.OK || len(v.ObjectLock.Problems) != 1 ||
		v.ObjectLock.Problems[0].Key != "stray.json" {
		t.Fatalf("verify with an unretained object: %v %s", err, r)
	}
	if _, err := s3c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String("locked"), Key: aws.String("cluster/stray.json")}); err != nil {
		t.Fatal(err)
	}
	// ... and one whose governance retention was shortened (by someone
	// allowed to bypass it).
	short := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	if _, err := s3c.PutObjectRetention(ctx, &awss3.PutObjectRetentionInput{Bucket: aws.String("locked"), Key: aws.String(meta),
		BypassGovernanceRetention: aws.Bool(true),
		Retention:                 &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeGovernance, RetainUntilDate: &short}}); err != nil {
		t.Fatalf("shorten the retention of %s: %v", meta, err)
	}
	r = run("verify", "--json")
	v.ObjectLock.Problems = nil
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.code != 1 || len(v.ObjectLock.Problems) != 1 ||
		v.ObjectLock.Problems[0].Key != strings.TrimPrefix(meta, "cluster/") {
		t.Fatalf("verify with a shortened retention: %v %s", err, r)
	}
	long := time.Now().Add(7 * 24 * time.Hour).UTC()
	if _, err := s3c.PutObjectRetention(ctx, &awss3.PutObjectRetentionInput{Bucket: aws.String("locked"), Key: aws.String(meta),
		Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeGovernance, RetainUntilDate: &long}}); err != nil {
		t.Fatalf("extend the retention of %s: %v", meta, err)
	}
	mustOK(t, run("verify"))

	// Before the attack: the rows, and a time T in a later whole second
	// than every write (S3 times versions to the second).
	want := c.QueryRow(t, "SELECT count(*)::text FROM rows")
	c.Stop(t)
	target := testenv.NextSecond(t, time.Now())
	testenv.NextSecond(t, target)

	// The attack, with the credentials the hosts hold: delete half of the
	// objects (delete markers: the locked versions stay) and forge the
	// newest backup's backup.json.
	for i, k := range listKeys(t, s3c, "locked", "cluster/") {
		newestData := strings.HasPrefix(k, "cluster/backups/"+second+"/base.tar.")
		if !newestData && (k == "cluster/pgark.json" || k == "cluster/cluster.json" || strings.HasSuffix(k, "/backup.json") || i%2 == 0) {
			continue
		}
		if _, err := s3c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String("locked"), Key: aws.String(k)}); err != nil {
			t.Fatalf("attack: delete %s: %v", k, err)
		}
	}
	forgeKey := "cluster/backups/" + second + "/backup.json"
	out, err := s3c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("locked"), Key: aws.String(forgeKey)})
	if err != nil {
		t.Fatal(err)
	}
	var bj map[string]any
	if err := json.NewDecoder(out.Body).Decode(&bj); err != nil {
		t.Fatal(err)
	}
	out.Body.Close()
	bj["label"] = "forged"
	forged, _ := json.Marshal(bj)
	if _, err := s3c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("locked"), Key: aws.String(forgeKey), Body: bytes.NewReader(forged)}); err != nil {
		t.Fatalf("attack: overwrite %s: %v", forgeKey, err)
	}

	// Without --repo-target-time: the damage is reported, nothing restored.
	if r := run("verify"); r.code != 1 {
		t.Fatalf("verify of the attacked repository: %s", r)
	}
	damaged := filepath.Join(shared, "damaged")
	if r := run("restore", "--owner", "postgres", "latest", damaged); r.code == 0 {
		t.Fatalf("restore of the attacked repository succeeded: %s", r)
	} else {
		t.Logf("restore of the attacked repository: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	}
	if exists(filepath.Join(damaged, "global", "pg_control")) {
		t.Fatal("the failed restore left a pg_control: a startable data directory")
	}

	// As of T: verify is clean, the listing shows the real backup, and the
	// restore (and its restore_command) recovers every committed row.
	at := "--repo-target-time=" + target.UTC().Format(time.RFC3339Nano)
	mustOK(t, run("verify", at))
	if r := mustOK(t, run("list", at, "--json")); strings.Contains(r.stdout, "forged") || !strings.Contains(r.stdout, second) {
		t.Fatalf("list as of T: %s", r)
	}
	if r := run("backup", at); r.code == 0 {
		t.Fatalf("backup accepted --repo-target-time: %s", r)
	}
	dir := filepath.Join(shared, "restored")
	mustOK(t, run("restore", at, "--owner", "postgres", "latest", dir))
	if conf := string(readFile(t, filepath.Join(dir, "postgresql.auto.conf"))); !strings.Contains(conf, "--repo-target-time=") {
		t.Fatalf("restore_command does not read as of T:\n%s", conf)
	}
	rs := testenv.StartPG(t, testenv.PGOptions{DataDir: dir, Env: env})
	rs.WaitFor(t, 3*time.Minute, func() bool {
		return rs.QueryRow(t, "SELECT (NOT pg_is_in_recovery())::text") == "true"
	})
	if got := rs.QueryRow(t, "SELECT count(*)::text FROM rows"); got != want {
		t.Fatalf("rows after the restore as of T: %s, want %s", got, want)
	}
	t.Logf("restored as of %s: %s rows, as in the source", target.UTC().Format(time.RFC3339Nano), want)
	rs.Stop(t)
}

// listKeys lists the keys below prefix, in order.
func listKeys(t *testing.T, c *awss3.Client, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	p := awss3.NewListObjectsV2Paginator(c, &awss3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}
