package integration

import (
	"testing"

	"github.com/pgark/pgark/internal/testenv"
)

// storesGCS is TestStores/gcs: the store scenario on fake-gcs-server, reached
// through STORAGE_EMULATOR_HOST (the client then sends no credentials).
func storesGCS(t *testing.T) {
	srv := testenv.GCSStart(t)
	srv.CreateBucket(t, "stores")
	storeScenario(t, 0, storeRepo{name: "gcs", env: srv.Env(), conf: map[string]string{
		"repo": "gs://stores/cluster-a",
	}})
}
