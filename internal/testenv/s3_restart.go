package testenv

import "testing"

// Stop stops the S3 server, keeping its data directory, for tests of an
// outage; Restart brings it back.
func (s *S3Server) Stop() { s.stop() }

// Restart starts the stopped server again (the same program: versitygw or
// MinIO), on the same port and data directory, and waits until it answers.
func (s *S3Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.restart(); err != nil {
		t.Fatalf("restarting the S3 test server: %v", err)
	}
}
