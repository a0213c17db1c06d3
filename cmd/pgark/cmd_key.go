package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
)

// parseKeyArgs turns age1... recipients and age-x25519: fingerprints into
// fingerprints, with the recipient (or "" for a fingerprint) beside each.
func parseKeyArgs(args []string) (fps, recips []string, err error) {
	for _, a := range args {
		if strings.HasPrefix(a, "age-x25519:") {
			fps = append(fps, a)
			recips = append(recips, "")
			continue
		}
		rs, err := crypto.ParseRecipients(a, "")
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", errKey, err)
		}
		fps = append(fps, rs.Fingerprints()...)
		recips = append(recips, rs.Strings()...)
	}
	return fps, recips, nil
}

func runKeyAdd(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) == 0 {
		return usageErrorf("key add takes one or more age recipients (age1...)")
	}
	for _, a := range args {
		if strings.HasPrefix(a, "age-x25519:") {
			return usageErrorf("key add needs the public recipient (age1...), not a fingerprint")
		}
	}
	fps, recips, err := parseKeyArgs(args)
	if err != nil {
		return err
	}
	r, err := openRepo(ctx, env)
	if err != nil {
		return err
	}
	var added []string
	_, err = repo.UpdateConfig(ctx, r.Store, func(c *repo.Config) error {
		added = added[:0]
		if !c.Encrypted() {
			return usageErrorf("repository %s is not encrypted: recipients apply only to repositories created with age recipients", r.Store)
		}
		now := time.Now().UTC().Truncate(time.Second)
		for i, fp := range fps {
			if slices.Contains(c.Recipients, fp) {
				continue
			}
			c.Recipients = append(c.Recipients, fp)
			c.RecipientChanges = append(c.RecipientChanges, repo.RecipientChange{Action: "add", Fingerprint: fp, Recipient: recips[i], At: now, Pgark: version})
			added = append(added, fp)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, fp := range fps {
		if slices.Contains(added, fp) {
			fmt.Fprintf(env.stdout, "added %s\n", fp)
		} else {
			fmt.Fprintf(env.stdout, "already registered: %s\n", fp)
		}
	}
	return nil
}

func runKeyRemove(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) == 0 {
		return usageErrorf("key remove takes one or more recipients (age1...) or fingerprints (age-x25519:...)")
	}
	fps, _, err := parseKeyArgs(args)
	if err != nil {
		return err
	}
	r, err := openRepo(ctx, env)
	if err != nil {
		return err
	}
	_, err = repo.UpdateConfig(ctx, r.Store, func(c *repo.Config) error {
		if !c.Encrypted() {
			return usageErrorf("repository %s is not encrypted: it has no recipients", r.Store)
		}
		now := time.Now().UTC().Truncate(time.Second)
		for _, fp := range fps {
			i := slices.Index(c.Recipients, fp)
			if i < 0 {
				return usageErrorf("%s is not registered in %s (registered: %s)", fp, r.Store, strings.Join(c.Recipients, ", "))
			}
			if len(c.Recipients) == 1 {
				return usageErrorf("%s is the repository's last recipient: add the new one first (pgark key add)", fp)
			}
			c.Recipients = slices.Delete(c.Recipients, i, i+1)
			c.RecipientChanges = append(c.RecipientChanges, repo.RecipientChange{Action: "remove", Fingerprint: fp, At: now, Pgark: version})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, fp := range fps {
		fmt.Fprintf(env.stdout, "removed %s (objects already encrypted to it still need its identity; pgark verify lists them)\n", fp)
	}
	return nil
}

type keyListJSON struct {
	Repository string                 `json:"repository"`
	Encrypted  bool                   `json:"encrypted"`
	Recipients []keyJSON              `json:"recipients"`
	Changes    []repo.RecipientChange `json:"changes"`
}

type keyJSON struct {
	Fingerprint string `json:"fingerprint"`
	Recipient   string `json:"recipient,omitempty"`
	// Identity is true when the loaded age-identity-file holds its key
	// (absent without an identity file).
	Identity *bool `json:"identity,omitempty"`
}

func runKeyList(ctx context.Context, env *cmdEnv, args []string) error {
	if len(args) != 0 {
		return usageErrorf("key list takes no arguments")
	}
	asJSON, err := env.s.boolean("json")
	if err != nil {
		return err
	}
	r, ids, err := openRepoToRead(ctx, env)
	if err != nil {
		return err
	}
	out := keyListJSON{Repository: r.Store.String(), Encrypted: r.Config.Encrypted(), Recipients: []keyJSON{},
		Changes: nonNil(r.Config.RecipientChanges)}
	for _, fp := range r.Config.Recipients {
		k := keyJSON{Fingerprint: fp}
		for _, ch := range r.Config.RecipientChanges {
			if ch.Fingerprint == fp && ch.Recipient != "" {
				k.Recipient = ch.Recipient
			}
		}
		if ids != nil {
			has := slices.Contains(ids.Fingerprints(), fp)
			k.Identity = &has
		}
		out.Recipients = append(out.Recipients, k)
	}
	if asJSON {
		return printJSON(env.stdout, out)
	}
	if !out.Encrypted {
		fmt.Fprintf(env.stdout, "repository %s is not encrypted\n", out.Repository)
		return nil
	}
	fmt.Fprintf(env.stdout, "repository %s: %d registered recipients\n", out.Repository, len(out.Recipients))
	for _, k := range out.Recipients {
		line := "  " + k.Fingerprint
		if k.Recipient != "" {
			line += "  " + k.Recipient
		}
		if k.Identity != nil && *k.Identity {
			line += "  (identity loaded)"
		}
		fmt.Fprintln(env.stdout, line)
	}
	if len(out.Changes) > 0 {
		fmt.Fprintln(env.stdout, "history:")
		for _, ch := range out.Changes {
			fmt.Fprintf(env.stdout, "  %s  %-6s %s\n", ch.At.UTC().Format(time.RFC3339), ch.Action, ch.Fingerprint)
		}
	}
	return nil
}
