package integration

import (
	"testing"

	"github.com/pgark/pgark/internal/testenv"
)

// storesAzure is TestStores/azure: the scenario on Azurite, with the
// account key from the environment as a DBA would set it.
func storesAzure(t *testing.T) {
	az := testenv.AzureStart(t)
	az.CreateContainer(t, "stores")
	env := []string{"AZURE_STORAGE_ACCOUNT=" + az.Account, "AZURE_STORAGE_KEY=" + az.Key}
	storeScenario(t, 0, storeRepo{name: "azure", env: env, conf: map[string]string{
		"repo":           "azure://stores/cluster-a",
		"azure-endpoint": az.Endpoint,
	}})
}
