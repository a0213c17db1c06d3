package testenv

import (
	"testing"
	"time"
)

// NextSecond waits until the clock is in a later whole second than after
// (S3 servers time object versions to the second), and returns the new
// time. It fails the test if the clock does not advance within 10 s.
func NextSecond(t testing.TB, after time.Time) time.Time {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := time.Now()
		if now.Truncate(time.Second).After(after) {
			return now
		}
		if now.After(deadline) {
			t.Fatal("the clock did not advance")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
