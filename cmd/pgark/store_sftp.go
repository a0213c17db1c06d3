package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage/sftp"
)

// sftpConfig completes the address parsed from the repository URL with the
// key and known_hosts files, defaulting to ssh's files in the user's home.
func sftpConfig(env *cmdEnv, loc location) (sftp.Config, error) {
	cfg := *loc.sftp
	cfg.IdentityFile = env.s.str("sftp-identity-file")
	cfg.KnownHostsFile = env.s.str("sftp-known-hosts")
	if cfg.IdentityFile != "" && cfg.KnownHostsFile != "" {
		return cfg, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return cfg, usageErrorf("sftp: set sftp-identity-file and sftp-known-hosts (no home directory to find ~/.ssh in: %v)", err)
	}
	if cfg.KnownHostsFile == "" {
		cfg.KnownHostsFile = filepath.Join(home, ".ssh", "known_hosts")
	}
	if cfg.IdentityFile == "" {
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			if p := filepath.Join(home, ".ssh", name); fileExists(p) {
				cfg.IdentityFile = p
				break
			}
		}
		if cfg.IdentityFile == "" {
			return cfg, usageErrorf("sftp: no sftp-identity-file set and no ~/.ssh/id_ed25519, id_ecdsa or id_rsa in %s", home)
		}
	}
	return cfg, nil
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func openSFTP(env *cmdEnv, loc location) (*sftp.Store, error) {
	cfg, err := sftpConfig(env, loc)
	if err != nil {
		return nil, err
	}
	ss, err := sftp.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("open SFTP repository: %w", err)
	}
	return ss, nil
}

// probeSFTP checks that the server gives create-only writes (see
// sftp.Store.Probe); a server that cannot is refused.
func probeSFTP(ctx context.Context, env *cmdEnv, loc location) (string, error) {
	ss, err := openSFTP(env, loc)
	if err != nil {
		return "", err
	}
	defer ss.Close()
	if err := ss.Probe(ctx); err != nil {
		return "", fmt.Errorf("refusing this SFTP server: %w", err)
	}
	return repo.WriteLink, nil
}
