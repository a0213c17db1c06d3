package testenv

import (
	"net/url"
	"strconv"
	"testing"
)

// Stop stops the S3 server, keeping its data directory, for tests of an
// outage; Restart brings it back.
func (s *S3Server) Stop() { s.stop() }

// Restart starts the stopped server again, on the same port and data
// directory, and waits until it answers.
func (s *S3Server) Restart(t testing.TB) {
	t.Helper()
	u, err := url.Parse(s.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.start(S3BinPath(), port); err != nil {
		t.Fatalf("restarting the S3 test server: %v", err)
	}
}
