package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage/azure"
)

// azureConfig builds the Azure store's config from the settings and the
// environment. Credentials, first found wins: azure-account-key-file,
// azure-sas-token-file, AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY,
// AZURE_STORAGE_SAS_TOKEN; with none, the default Azure credential chain.
func azureConfig(env *cmdEnv, loc location) (azure.Config, error) {
	s := env.s
	cfg := azure.Config{
		Container: loc.azureContainer,
		Prefix:    loc.prefix,
		Endpoint:  s.str("azure-endpoint"),
		Account:   s.str("azure-account"),
	}
	if cfg.Account == "" {
		cfg.Account = env.getenv("AZURE_STORAGE_ACCOUNT")
	}
	var err error
	if cfg.BlockSize, err = s.size("azure-block-size"); err != nil {
		return cfg, err
	}
	if cfg.BlockSize < azure.MinBlockSize || cfg.BlockSize > azure.MaxBlockSize {
		return cfg, usageErrorf("azure-block-size: %d bytes is outside 1MiB to 4000MiB", cfg.BlockSize)
	}
	if cfg.ReadTimeout, err = s.duration("azure-read-timeout"); err != nil {
		return cfg, err
	}
	if cfg.ReadTimeout < time.Second {
		return cfg, usageErrorf("azure-read-timeout: at least 1s")
	}
	switch {
	case s.str("azure-account-key-file") != "":
		cfg.AccountKey, err = readSecretFile("azure-account-key-file", s.str("azure-account-key-file"))
	case s.str("azure-sas-token-file") != "":
		cfg.SASToken, err = readSecretFile("azure-sas-token-file", s.str("azure-sas-token-file"))
	case env.getenv("AZURE_STORAGE_CONNECTION_STRING") != "":
		cfg.ConnectionString = env.getenv("AZURE_STORAGE_CONNECTION_STRING")
	case env.getenv("AZURE_STORAGE_KEY") != "":
		cfg.AccountKey = env.getenv("AZURE_STORAGE_KEY")
	case env.getenv("AZURE_STORAGE_SAS_TOKEN") != "":
		cfg.SASToken = env.getenv("AZURE_STORAGE_SAS_TOKEN")
	}
	if err != nil {
		return cfg, err
	}
	if cfg.AccountKey != "" && cfg.Account == "" {
		return cfg, usageErrorf("an Azure account key needs the account name: set azure-account or AZURE_STORAGE_ACCOUNT")
	}
	if cfg.ConnectionString == "" && cfg.Endpoint == "" && cfg.Account == "" {
		return cfg, usageErrorf("no Azure storage account: set azure-account (or AZURE_STORAGE_ACCOUNT), azure-endpoint, or AZURE_STORAGE_CONNECTION_STRING")
	}
	return cfg, nil
}

// readSecretFile reads a one-line secret (surrounding white space trimmed).
func readSecretFile(option, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usageErrorf("%s: %v", option, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", usageErrorf("%s: %s is empty", option, path)
	}
	return v, nil
}

func openAzure(env *cmdEnv, loc location) (*azure.Store, error) {
	cfg, err := azureConfig(env, loc)
	if err != nil {
		return nil, err
	}
	st, err := azure.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("open Azure repository: %w", err)
	}
	return st, nil
}

// probeAzure checks that the service refuses to replace a blob on a
// conditional write. There is no weaker fallback: Azure Blob Storage (and
// Azurite) honour the conditions, so a store that does not is refused.
func probeAzure(ctx context.Context, env *cmdEnv, loc location) (string, error) {
	st, err := openAzure(env, loc)
	if err != nil {
		return "", err
	}
	if err := st.ProbeConditionalWrites(ctx); err != nil {
		return "", fmt.Errorf("the Azure store cannot give create-only writes: %w", err)
	}
	return repo.WriteIfNoneMatch, nil
}
