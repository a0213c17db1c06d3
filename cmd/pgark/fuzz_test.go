package main

import (
	"fmt"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Fuzzers for the config file and --repo parsers. Run one with
//
//	go test -run '^$' -fuzz '^FuzzParseConfig$' -fuzztime 3m ./cmd/pgark/
//
// or all of them with `make fuzz`. Crashers are kept under testdata/fuzz.

// formatConfig writes settings as a config file, every value quoted.
func formatConfig(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# written back\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, strconv.Quote(m[k]))
	}
	return b.String()
}

func FuzzParseConfig(f *testing.F) {
	f.Add("repo = /x\n# c\ns3-region = \"eu\"\n")
	f.Add("repo\n=\n\"")
	f.Add("repo = \"/a b\"\nage-recipients = age1x,age1y\n\n  # indented comment\n")
	f.Add("repo = \"\\u00e9\\x00\"\n")
	f.Add("repo = /x\nrepo = /y\n")
	f.Add("config = /etc/other.conf\n")
	f.Add("repo = \"unterminated\n")
	f.Add("\ufeffrepo = /x\n")
	f.Add("repo = /x\r\nlog-level = debug\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseConfig(strings.NewReader(s))
		if err != nil {
			if m != nil {
				t.Fatal("settings and an error")
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		known := map[string]bool{}
		for _, o := range options {
			known[o.name] = true
		}
		for k := range m {
			if !known[k] || k == "config" {
				t.Fatalf("accepted key %q", k)
			}
			if !strings.Contains(s, k) {
				t.Fatalf("key %q not in input", k)
			}
		}
		// Round trip: written back with quoted values, the same settings.
		m2, err := parseConfig(strings.NewReader(formatConfig(m)))
		if err != nil {
			t.Fatalf("written back, the config is refused: %v\n%s", err, formatConfig(m))
		}
		if len(m2) != len(m) {
			t.Fatalf("round trip: %q -> %q", m, m2)
		}
		for k, v := range m {
			if m2[k] != v {
				t.Fatalf("round trip of %s: %q -> %q", k, v, m2[k])
			}
		}
	})
}

func FuzzParseLocation(f *testing.F) {
	for _, s := range []string{
		"/var/lib/pgark/repo", "/var/lib/../pgark//repo/", "relative/repo", "", "s3://bucket/prefix",
		"s3://bucket", "s3://my.bucket/a/b/", "s3://bucket/a/../b", "s3:///x", "s3://b/p?x=1",
		"gs://bucket/x", "gs://b", "gs://my-bucket/a//b/", "gs://Bucket/x", "gs://bucket/../x", "file:///tmp/x", "/", "s3://bucket//a", "S3://bucket/x", "s3://bu\x00cket/x",
		"azure://container/a/b", "azure://container", "azure://Container/x", "azure://c/x",
		"sftp://backup@host/srv/pgark", "sftp://u@[::1]:2222/p", "sftp://host/p", "sftp://u@h:0/p", "sftp://u@h/../p",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		loc, err := parseLocation(s)
		if err != nil {
			if !isUsage(err) {
				t.Fatalf("%q: not a usage error: %v", s, err)
			}
			return
		}
		if loc.sftp != nil {
			// SFTP: a host, a port and an absolute, clean path; parsing
			// is deterministic.
			c := loc.sftp
			if loc.local != "" || loc.bucket != "" || loc.azureContainer != "" || loc.gcs || !strings.HasPrefix(s, "sftp://") ||
				c.Host == "" || c.Port < 0 || c.Port > 65535 || !strings.HasPrefix(c.Path, "/") || path.Clean(c.Path) != c.Path {
				t.Fatalf("%q: %+v %+v", s, loc, *c)
			}
			if loc2, err := parseLocation(s); err != nil || loc2.sftp.User != c.User || loc2.sftp.Host != c.Host || loc2.sftp.Port != c.Port || loc2.sftp.Path != c.Path {
				t.Fatalf("%q: parsed twice: %+v, %v", s, loc2, err)
			}
			return
		}
		if loc.azureContainer != "" {
			// Azure: the container alone, and the URL written back means
			// the same location.
			if loc.local != "" || loc.bucket != "" || loc.gcs || loc.sftp != nil || !strings.HasPrefix(s, "azure://") {
				t.Fatalf("%q: %+v", s, loc)
			}
			u := "azure://" + loc.azureContainer + "/" + loc.prefix
			if loc2, err := parseLocation(u); err != nil || loc2 != loc {
				t.Fatalf("%q: round trip via %q: %+v -> %+v, %v", s, u, loc, loc2, err)
			}
			return
		}
		if (loc.local == "") == (loc.bucket == "") {
			t.Fatalf("%q: local %q and bucket %q", s, loc.local, loc.bucket)
		}
		if loc.local != "" {
			// An absolute, clean directory path; never a URL.
			if !filepath.IsAbs(loc.local) || filepath.Clean(loc.local) != loc.local || strings.Contains(s, "://") {
				t.Fatalf("%q: local path %q", s, loc.local)
			}
			if loc2, err := parseLocation(loc.local); err != nil || loc2 != loc {
				t.Fatalf("%q: round trip %+v -> %+v, %v", s, loc, loc2, err)
			}
			return
		}
		// S3 and GCS: a bucket name without separators; a prefix without
		// empty, "." or ".." segments or a leading or trailing slash; and the
		// URL written back means the same location.
		scheme := "s3://"
		if loc.gcs {
			scheme = "gs://"
		}
		if !strings.HasPrefix(s, scheme) || strings.ContainsAny(loc.bucket, "/?#\x00") {
			t.Fatalf("%q: bucket %q", s, loc.bucket)
		}
		if loc.prefix != "" {
			if strings.HasPrefix(loc.prefix, "/") || strings.HasSuffix(loc.prefix, "/") || strings.ContainsRune(loc.prefix, 0) {
				t.Fatalf("%q: prefix %q", s, loc.prefix)
			}
			for _, seg := range strings.Split(loc.prefix, "/") {
				if seg == "" || seg == "." || seg == ".." {
					t.Fatalf("%q: prefix %q has segment %q", s, loc.prefix, seg)
				}
			}
		}
		u := scheme + loc.bucket + "/" + loc.prefix
		if loc2, err := parseLocation(u); err != nil || loc2 != loc {
			t.Fatalf("%q: round trip via %q: %+v -> %+v, %v", s, u, loc, loc2, err)
		}
	})
}
