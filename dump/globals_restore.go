package dump

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/repo"
)

// maxGlobals bounds the globals script read into memory.
const maxGlobals = 256 << 20

// GlobalsConfig is what replaying a dump's globals needs.
type GlobalsConfig struct {
	Repo       *repo.Repo
	Identities *crypto.Identities
	Meta       *Meta
	DSN        string
	Options    GlobalsOptions
	DryRun     bool      // print what would run, run nothing
	Out        io.Writer // the report (and, with DryRun, the statements)
	Log        *slog.Logger
}

// ReadGlobals reads a run's verified globals script.
func ReadGlobals(ctx context.Context, r *repo.Repo, ids *crypto.Identities, m *Meta) (string, error) {
	if m.Globals.Bytes > maxGlobals {
		return "", fmt.Errorf("globals of dump %s: %d bytes, more than the %d this pgark reads", m.ID, m.Globals.Bytes, maxGlobals)
	}
	rc, err := r.OpenVerified(ctx, m.Globals.Key, m.Globals.Bytes, m.Globals.SHA256, ids)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", m.Globals.Key, err)
	}
	return string(b), nil
}

// RestoreGlobals replays a dump's roles, memberships and tablespaces as
// PlanGlobals decides: the roles in one transaction, then the tablespaces
// (CREATE TABLESPACE cannot run in one).
func RestoreGlobals(ctx context.Context, c GlobalsConfig) (*GlobalsPlan, error) {
	script, err := ReadGlobals(ctx, c.Repo, c.Identities, c.Meta)
	if err != nil {
		return nil, err
	}
	cfg, err := pgconn.ParseConfig(c.DSN)
	if err != nil {
		return nil, fmt.Errorf("%w: dsn: %v", ErrSelection, err)
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	ex := Existing{Roles: map[string]bool{}, Memberships: map[[2]string]bool{}, Tablespaces: map[string]bool{}}
	rows, err := queryStrings(ctx, conn, "SELECT rolname FROM pg_roles")
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	for _, r := range rows {
		ex.Roles[r[0]] = true
	}
	rows, err = queryStrings(ctx, conn, "SELECT r.rolname, m.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member")
	if err != nil {
		return nil, fmt.Errorf("list role memberships: %w", err)
	}
	for _, r := range rows {
		ex.Memberships[[2]string{r[0], r[1]}] = true
	}
	rows, err = queryStrings(ctx, conn, "SELECT spcname FROM pg_tablespace")
	if err != nil {
		return nil, fmt.Errorf("list tablespaces: %w", err)
	}
	for _, r := range rows {
		ex.Tablespaces[r[0]] = true
	}
	p, err := PlanGlobals(script, ex, c.Options)
	if err != nil {
		return nil, err
	}
	for _, l := range p.Report {
		fmt.Fprintln(c.Out, l)
	}
	if c.DryRun {
		fmt.Fprintln(c.Out, "-- would run (passwords redacted):")
		for _, group := range [][]Step{p.Setup, p.Roles, p.Tablespaces} {
			for _, s := range group {
				fmt.Fprintf(c.Out, "%s;\n", s.Shown)
			}
		}
		return p, nil
	}
	var sqls []string
	for _, s := range p.Setup {
		if !unknownSetting(s.SQL, ServerMajor(conn)) {
			sqls = append(sqls, s.SQL)
		}
	}
	if len(p.Roles) > 0 {
		sqls = append(sqls, "BEGIN")
		for _, s := range p.Roles {
			sqls = append(sqls, s.SQL)
		}
		sqls = append(sqls, "COMMIT")
	}
	if err := execAllShown(ctx, conn, sqls, p); err != nil {
		return nil, fmt.Errorf("%w (no role was changed: they are applied in one transaction)", err)
	}
	for _, s := range p.Tablespaces {
		if err := execAllShown(ctx, conn, []string{s.SQL}, p); err != nil {
			return nil, fmt.Errorf("%w (the roles are restored)", err)
		}
	}
	return p, nil
}

// execAllShown runs statements, naming a failed one by its redacted form.
func execAllShown(ctx context.Context, conn *pgconn.PgConn, sqls []string, p *GlobalsPlan) error {
	shown := map[string]string{}
	for _, group := range [][]Step{p.Setup, p.Roles, p.Tablespaces} {
		for _, s := range group {
			shown[s.SQL] = s.Shown
		}
	}
	for _, s := range sqls {
		if _, err := conn.Exec(ctx, s).ReadAll(); err != nil {
			name := shown[s]
			if name == "" {
				name = s
			}
			conn.Exec(context.Background(), "ROLLBACK").ReadAll()
			return fmt.Errorf("%w: %s: %v", ErrTool, oneLine(name), err)
		}
	}
	return nil
}
