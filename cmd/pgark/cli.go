package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgark/pgark/storage"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// cli is one run of pgark: its context, streams and environment, and the
// exit status that the command it runs sets.
type cli struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	code   int
}

// run runs the command line args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{ctx: ctx, stdout: stdout, stderr: stderr, getenv: getenv}
	args = longDashes(args)
	root := c.newRoot(args)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return c.code
	}
	name := pgarkName(cmd)
	var fe *flagError
	if errors.As(err, &fe) {
		fmt.Fprintf(stderr, "pgark %s: %s (run `pgark %s --help`)\n", name, storage.OneLine(fe.Error()), name)
	} else {
		fmt.Fprintf(stderr, "%s: %s\n", strings.TrimSpace("pgark "+name), storage.OneLine(err.Error()))
	}
	return setupFailure(name)
}

// newRoot builds the command tree for the command line args. Every call of
// archive_command and restore_command builds it, so it is kept cheap: no
// I/O, and the options become flags only on the command that args run (on
// every command only for shell completion requests).
func (c *cli) newRoot(args []string) *cobra.Command {
	root := &cobra.Command{
		Use:   "pgark",
		Short: "PostgreSQL WAL archiving and backups (zstd, age, local or S3)",
		Args:  cobra.ArbitraryArgs,
		// Our one-line messages, not cobra's usage dumps.
		SilenceErrors: true,
		SilenceUsage:  true,
		// An unknown command is reported as such, whatever options follow.
		FParseErrWhitelist: cobra.FParseErrWhitelist{UnknownFlags: true},
		RunE:               c.runGroup,
		// "Did you mean": within two edits, or a prefix.
		SuggestionsMinimumDistance: 2,
	}
	// --version is ours, not cobra's: cobra prints its version through
	// text/template, whose reflection keeps the linker from dropping dead
	// code (a 50% larger binary).
	root.Flags().Bool("version", false, "print pgark's version")
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &flagError{goFlagMessage(err)} })
	defaultHelp := root.HelpFunc()
	root.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		switch d := commandFor(cmd); {
		case d != nil:
			printCommandHelp(c.stdout, d)
		case cmd == root:
			printUsage(c.stdout)
		case cmd.Name() == "key" && cmd.Parent() == root:
			printGroupUsage(c.stdout, cmd)
		default:
			defaultHelp(cmd, args)
		}
	})
	key := &cobra.Command{
		Use:                        "key",
		Short:                      "manage keys: write new ones, register and unregister recipients, list them",
		Args:                       cobra.ArbitraryArgs,
		FParseErrWhitelist:         cobra.FParseErrWhitelist{UnknownFlags: true},
		RunE:                       c.runGroup,
		SuggestionsMinimumDistance: 2,
	}
	root.AddCommand(key)
	for _, d := range commandList() {
		parent, name := root, d.name
		if sub, ok := strings.CutPrefix(d.name, "key "); ok {
			parent, name = key, sub
		}
		cc := &cobra.Command{
			Use:                   strings.TrimSpace(name + " [options] " + d.args),
			Short:                 d.summary,
			Hidden:                d.hidden,
			Args:                  cobra.ArbitraryArgs, // each command checks its own, with its own exit code
			DisableFlagsInUseLine: true,
			Annotations:           map[string]string{pgarkAnnotation: d.name},
		}
		cc.RunE = func(cmd *cobra.Command, args []string) error {
			c.code = c.runCommand(d, cmd.Flags(), args)
			return nil
		}
		parent.AddCommand(cc)
	}
	root.AddCommand(c.versionCommand(), &cobra.Command{
		Use:    "gen-docs DIR",
		Short:  "write the Markdown reference (make docs) into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE:   func(_ *cobra.Command, args []string) error { return c.generate(args[0], markdownReference) },
	}, &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "write the man pages (make man) into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE:   func(_ *cobra.Command, args []string) error { return c.generate(args[0], manPages) },
	})
	// Find routes as Execute will: leaf commands have no subcommands, so
	// their flags play no part in finding them. Help is made from the
	// option table; only shell completion (__complete) needs every flag.
	cmd, _, err := root.Find(args)
	switch {
	case err == nil && commandFor(cmd) != nil:
		addOptions(cmd.Flags(), commandFor(cmd).name)
	case len(args) > 0 && strings.HasPrefix(args[0], cobra.ShellCompRequestCmd):
		addAllOptions(root)
	}
	if err == nil && cmd != root && cmd.Name() != "key" {
		// Running a command: cobra need not build its completion commands.
		root.CompletionOptions.DisableDefaultCmd = true
	}
	return root
}

// addAllOptions makes the options flags on every command of the tree.
func addAllOptions(cmd *cobra.Command) {
	if d := commandFor(cmd); d != nil {
		addOptions(cmd.Flags(), d.name)
	}
	for _, sub := range cmd.Commands() {
		addAllOptions(sub)
	}
}

// pgarkAnnotation is the cobra annotation that names a command's definition.
const pgarkAnnotation = "pgark-command"

// commandFor is the definition of a cobra command made from one, else nil.
func commandFor(cmd *cobra.Command) *command {
	name, ok := cmd.Annotations[pgarkAnnotation]
	if !ok {
		return nil
	}
	for _, d := range commandList() {
		if d.name == name {
			return d
		}
	}
	return nil
}

// pgarkName is cmd's name below pgark ("key add"), "" for pgark itself.
func pgarkName(cmd *cobra.Command) string {
	if cmd == nil {
		return ""
	}
	return strings.TrimSpace(strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()))
}

// runGroup runs pgark or pgark key without a known command: usage (exit 2)
// without one, an unknown command with suggestions (exit 2) otherwise.
func (c *cli) runGroup(cmd *cobra.Command, args []string) error {
	if v, _ := cmd.Flags().GetBool("version"); v && !cmd.HasParent() {
		fmt.Fprintf(c.stdout, "pgark %s\n", version)
		c.code = exitOK
		return nil
	}
	c.code = exitUsage
	path := cmd.CommandPath()
	if len(args) == 0 {
		if cmd.HasParent() {
			fmt.Fprintf(c.stderr, "%s: a subcommand is needed (run `%s --help`)\n", path, path)
		} else {
			printUsage(c.stdout)
		}
		return nil
	}
	msg := fmt.Sprintf("unknown command %q", args[0])
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		for i := range s {
			s[i] = strconv.Quote(s[i])
		}
		msg += fmt.Sprintf(", did you mean %s?", orList(s))
	}
	help := "pgark help"
	if cmd.HasParent() {
		help = path + " --help"
	}
	fmt.Fprintf(c.stderr, "%s: %s (run `%s`)\n", path, msg, help)
	return nil
}

// runCommand resolves the command's settings, runs it and maps its error
// to its exit status.
func (c *cli) runCommand(d *command, fs *pflag.FlagSet, args []string) int {
	env := &cmdEnv{stdout: c.stdout, stderr: c.stderr, getenv: c.getenv, exitCodeFor: exitCode}
	if d.exitFor != nil {
		env.exitCodeFor = d.exitFor(env)
	}
	s, err := resolve(fs, d.name, c.getenv)
	if s != nil {
		env.s = s
		log, lerr := newLogger(c.stderr, s)
		if lerr != nil && err == nil {
			err = lerr
		}
		env.log = log
	}
	if err != nil && env.log == nil {
		fmt.Fprintf(c.stderr, "pgark %s: %s\n", d.name, storage.OneLine(err.Error()))
		return setupFailure(d.name)
	}
	if err == nil {
		start := time.Now()
		err = d.run(c.ctx, env, args)
		if f := c.getenv("PGARK_RUSAGE_LOG"); f != "" {
			logRusage(f, d.name, start, err)
		}
		if err == nil {
			return exitOK
		}
	} else if d.setupFailed != nil {
		// A setting of the wrong kind: reported, and mapped to an exit code
		// below, as the command maps its own usage errors (wal-fetch on a
		// standby: 5, so that the standby keeps running).
		d.setupFailed(c.stdout, s, err)
	}
	code := env.exitCodeFor(err)
	if code != exitNotFound {
		env.log.Error(storage.OneLine(err.Error()), "command", d.name, "exit", code)
	}
	return code
}

// setupFailure is the status for a command line or configuration that cannot
// be used. For wal-fetch it must not read as "not found" (which would end
// archive recovery early), so it stops recovery instead; for check it is
// UNKNOWN, since 2 would read as CRITICAL.
func setupFailure(name string) int {
	switch name {
	case "wal-fetch":
		return exitRecoveryStop
	case "check":
		return exitCheckUnknown
	}
	return exitUsage
}

// flagError is a command line that does not parse.
type flagError struct{ msg string }

func (e *flagError) Error() string { return e.msg }

// goFlagMessage words pflag's errors as pgark always has (Go's flag
// package), since scripts and tests look for them.
func goFlagMessage(err error) string {
	var ne *pflag.NotExistError
	if errors.As(err, &ne) {
		if s := ne.GetSpecifiedShortnames(); s != "" {
			return "flag provided but not defined: -" + s
		}
		return "flag provided but not defined: --" + ne.GetSpecifiedName()
	}
	return err.Error()
}

// longDashes turns -name into --name for the options (and -help), up to
// "--": Go's flag package, which pgark used before, accepts both, and
// archive_command lines written then must keep working.
func longDashes(args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if name == "help" || isOption(name) {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}

func isOption(name string) bool {
	for _, o := range options {
		if o.name == name {
			return true
		}
	}
	return false
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "pgark %s: PostgreSQL WAL archiving and backups (zstd, age, local or S3)\n\nUsage: pgark COMMAND [options] [args]\n\nCommands:\n", version)
	for _, c := range commandList() {
		if !c.hidden {
			fmt.Fprintf(w, "  %-20s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintf(w, "  %-20s %s\n", "completion SHELL", "print a completion script for bash, zsh or fish")
	fmt.Fprintf(w, "  %-20s %s\n", "version", "print pgark's version, commit and build date")
	fmt.Fprintf(w, "\nOptions may come before or after the arguments; -- ends them.\nRun `pgark COMMAND --help` for a command's options and exit codes.\n")
}

func printGroupUsage(w io.Writer, group *cobra.Command) {
	fmt.Fprintf(w, "Usage: pgark %s SUBCOMMAND [options] [args]\n\n%s\n\nSubcommands:\n", group.Name(), group.Short)
	for _, c := range commandList() {
		if sub, ok := strings.CutPrefix(c.name, group.Name()+" "); ok {
			fmt.Fprintf(w, "  %-18s %s\n", sub, c.summary)
		}
	}
	fmt.Fprintf(w, "\nRun `pgark %s SUBCOMMAND --help` for its options.\n", group.Name())
}

// printCommandHelp is a command's --help: usage, summary, help text, exit
// codes and options.
func printCommandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\n%s\n\n", usageLine(c), c.summary, strings.TrimSpace(c.help))
	printExitCodes(w, c)
	fmt.Fprintf(w, "\nOptions (each also an environment variable and a config file key):\n")
	for _, o := range commandOptions(c.name) {
		fmt.Fprintf(w, "  --%s%s\n    \t%s [%s]", o.name, valueName(o), o.help, envName(o.name))
		if d := o.defaultFor(c.name); d != "" && d != "0" && d != "false" {
			fmt.Fprintf(w, " (default %s)", d)
		}
		fmt.Fprintln(w)
	}
}

// usageLine is how a command is typed.
func usageLine(c *command) string {
	return strings.TrimSpace("pgark " + c.name + " [options] " + c.args)
}

// commandOptions is the options of a command, by name.
func commandOptions(cmd string) []option {
	var out []option
	for _, o := range options {
		if o.forCommand(cmd) {
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// valueName is what follows an option's flag in help: nothing for a bool.
func valueName(o option) string {
	switch o.kind {
	case optBool:
		return ""
	case optEnum:
		return " " + strings.Join(o.enum, "|")
	case optList:
		return " value (repeatable)"
	}
	return " " + o.kind.String()
}
