package testenv

import (
	"os"
	"strings"
	"testing"
)

// TestGCSVersionPinned: the fake-gcs-server release that deps.sh installs is
// the one GCSVersion names.
func TestGCSVersionPinned(t *testing.T) {
	b, err := os.ReadFile("../../.ci/deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	want := `FAKE_GCS_SERVER_VERSION="` + GCSVersion + `"`
	if !strings.Contains(string(b), want) {
		t.Errorf(".ci/deps.sh does not pin %s", want)
	}
}
