//go:build linux

// Command walsim plays PostgreSQL's archiver or startup process against a
// fake data directory, for the WAL benchmark (bench/wal.sh), and reports the
// wall time of the loop and the CPU time of everything it started.
//
//	walsim drain   -pgdata DIR -out FILE [-log FILE] -- 'ARCHIVE_COMMAND'
//	walsim recover -pgdata DIR -segs FILE -keep DIR -out FILE [-log FILE] -- 'RESTORE_COMMAND'
//
// drain: for each pg_wal/archive_status/X.ready, in name order, it runs the
// archive command through /bin/sh -c with the working directory DIR, %p
// replaced by pg_wal/X and %f by X (as PostgreSQL's archiver does), and
// renames X.ready to X.done when the command exits 0.
//
// recover: it creates DIR/recovery.signal, then for each name in FILE (one a
// line, in order) runs the restore command with %f replaced by the name and
// %p by pg_wal/RECOVERYXLOG, and moves the file the command wrote to
// KEEP/NAME (a rename, for the caller to compare). After the last one it
// removes recovery.signal, as the end of recovery does.
//
// A command that exits non-zero, or a restore that writes no file, ends the
// run with status 1. The timed loop ends when the last command returns;
// walsim then waits (up to -settle) for every process its commands left
// running (it is a child subreaper, so detached helpers are reparented to
// it), kills by pid those still there after that, and writes one line of
// key=value pairs to -out:
//
//	wall_s    the loop, first command started to last command returned
//	cpu_s     user+sys CPU of every process started, helpers included
//	settle_s  from the loop's end until the last helper had exited
//	killed    helpers still running after -settle (then killed), a count
//	peak_spool_bytes  largest total size of the regular files under the
//	          -spool directories, sampled every -sample (0 without -spool)
//
// The commands' stdout and stderr go to -log (default: walsim's stderr); with
// -times, each call's WAL name and wall time (ms) go to that file, one a line.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "drain" && os.Args[1] != "recover") {
		fail("usage: walsim drain|recover -pgdata DIR -out FILE [options] -- COMMAND")
	}
	mode := os.Args[1]
	fl := flag.NewFlagSet("walsim "+mode, flag.ExitOnError)
	pgdata := fl.String("pgdata", "", "the fake data directory (the commands' working directory)")
	out := fl.String("out", "", "file for the result line")
	logPath := fl.String("log", "", "file for the commands' output (appended; default stderr)")
	segsFile := fl.String("segs", "", "recover: file of the WAL names to restore, in order")
	keep := fl.String("keep", "", "recover: directory the restored files are moved to")
	settle := fl.Duration("settle", 90*time.Second, "how long to wait for left-over processes after the loop")
	sample := fl.Duration("sample", 100*time.Millisecond, "spool sampling interval")
	timesPath := fl.String("times", "", "file for each call's WAL name and wall time in ms (optional)")
	var spools multiFlag
	fl.Var(&spools, "spool", "directory whose size is sampled (repeatable)")
	fl.Parse(os.Args[2:])
	if fl.NArg() != 1 || *pgdata == "" || *out == "" {
		fail("usage: walsim %s -pgdata DIR -out FILE [options] -- COMMAND (one argument)", mode)
	}
	command := fl.Arg(0)
	if mode == "recover" && (*segsFile == "" || *keep == "") {
		fail("recover needs -segs and -keep")
	}
	logf := os.Stderr
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fail("%v", err)
		}
		defer f.Close()
		logf = f
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		fail("%v", err)
	}

	// PR_SET_CHILD_SUBREAPER: orphaned descendants (detached helpers) become
	// our children, so that we can wait for them and count their CPU.
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, 36, 1, 0); e != 0 {
		fail("prctl(PR_SET_CHILD_SUBREAPER): %v", e)
	}

	sampler := startSampler(spools, *sample)

	var times strings.Builder
	run := func(p, f string) error {
		c := exec.Command("/bin/sh", "-c", expand(command, p, f))
		c.Dir = *pgdata
		c.Stdin, c.Stdout, c.Stderr = devnull, logf, logf // *os.File: nothing to copy, Wait returns at exit
		start := time.Now()
		err := c.Run()
		fmt.Fprintf(&times, "%s %.1f\n", f, float64(time.Since(start).Microseconds())/1000)
		if err != nil {
			return fmt.Errorf("%s: %v", expand(command, p, f), err)
		}
		return nil
	}

	var loopErr error
	var t0, t1 time.Time
	switch mode {
	case "drain":
		status := filepath.Join(*pgdata, "pg_wal", "archive_status")
		ents, err := os.ReadDir(status)
		if err != nil {
			fail("%v", err)
		}
		var ready []string
		for _, e := range ents {
			if n, ok := strings.CutSuffix(e.Name(), ".ready"); ok {
				ready = append(ready, n)
			}
		}
		sort.Strings(ready)
		if len(ready) == 0 {
			fail("no .ready files in %s", status)
		}
		t0 = time.Now()
		for _, n := range ready {
			if loopErr = run("pg_wal/"+n, n); loopErr != nil {
				break
			}
			if loopErr = os.Rename(filepath.Join(status, n+".ready"), filepath.Join(status, n+".done")); loopErr != nil {
				break
			}
		}
		t1 = time.Now()
	case "recover":
		names, err := readLines(*segsFile)
		if err != nil {
			fail("%v", err)
		}
		signal := filepath.Join(*pgdata, "recovery.signal")
		if err := os.WriteFile(signal, nil, 0o600); err != nil {
			fail("%v", err)
		}
		xlog := filepath.Join(*pgdata, "pg_wal", "RECOVERYXLOG")
		t0 = time.Now()
		for _, n := range names {
			if loopErr = run("pg_wal/RECOVERYXLOG", n); loopErr != nil {
				break
			}
			if loopErr = os.Rename(xlog, filepath.Join(*keep, n)); loopErr != nil {
				loopErr = fmt.Errorf("restoring %s: the command exited 0 but: %v", n, loopErr)
				break
			}
		}
		t1 = time.Now()
		if err := os.Remove(signal); err != nil && loopErr == nil {
			loopErr = err
		}
	}

	killed := reapAll(*settle)
	t2 := time.Now()
	peak := sampler.stop()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		fail("getrusage: %v", err)
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, k := range killed {
		fmt.Fprintf(os.Stderr, "walsim: still running %s after the loop, killed: %s\n", *settle, k)
	}
	if *timesPath != "" {
		if err := os.WriteFile(*timesPath, []byte(times.String()), 0o644); err != nil {
			fail("%v", err)
		}
	}
	if loopErr != nil {
		fail("%v", loopErr)
	}
	line := fmt.Sprintf("wall_s=%.3f cpu_s=%.3f settle_s=%.3f killed=%d peak_spool_bytes=%d\n",
		t1.Sub(t0).Seconds(), cpu.Seconds(), t2.Sub(t1).Seconds(), len(killed), peak)
	if err := os.WriteFile(*out, []byte(line), 0o644); err != nil {
		fail("%v", err)
	}
}

// expand replaces %p, %f and %% as PostgreSQL does in archive_command and
// restore_command.
func expand(cmd, p, f string) string {
	var b strings.Builder
	for i := 0; i < len(cmd); i++ {
		if cmd[i] == '%' && i+1 < len(cmd) {
			switch cmd[i+1] {
			case 'p':
				b.WriteString(p)
				i++
				continue
			case 'f':
				b.WriteString(f)
				i++
				continue
			case '%':
				b.WriteByte('%')
				i++
				continue
			}
		}
		b.WriteByte(cmd[i])
	}
	return b.String()
}

// reapAll waits until no child is left (the commands' detached helpers,
// reparented to us). Those still there after timeout are killed by pid; it
// returns their descriptions.
func reapAll(timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	var killed []string
	seen := map[int]bool{}
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		switch {
		case errors.Is(err, syscall.ECHILD):
			return killed
		case errors.Is(err, syscall.EINTR), pid > 0:
			continue
		case err != nil:
			fail("wait4: %v", err)
		}
		if time.Now().After(deadline) {
			for _, c := range children() {
				if !seen[c.pid] {
					seen[c.pid] = true
					killed = append(killed, fmt.Sprintf("pid %d: %s", c.pid, c.cmdline))
				}
				syscall.Kill(c.pid, syscall.SIGKILL)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type proc struct {
	pid     int
	cmdline string
}

// children lists the processes whose parent is this one.
func children() []proc {
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(st)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state ppid ...
		if len(f) < 2 || f[1] != strconv.Itoa(self) {
			continue
		}
		cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out = append(out, proc{pid, strings.TrimSpace(strings.ReplaceAll(string(cl), "\x00", " "))})
	}
	return out
}

type sampler struct {
	done chan struct{}
	wg   sync.WaitGroup
	peak int64
}

func startSampler(dirs []string, every time.Duration) *sampler {
	s := &sampler{done: make(chan struct{})}
	if len(dirs) == 0 {
		return s
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			var n int64
			for _, d := range dirs {
				filepath.WalkDir(d, func(_ string, e fs.DirEntry, err error) error {
					if err != nil || !e.Type().IsRegular() {
						return nil // files come and go
					}
					if fi, err := e.Info(); err == nil {
						n += fi.Size()
					}
					return nil
				})
			}
			s.peak = max(s.peak, n)
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() int64 {
	close(s.done)
	s.wg.Wait()
	return s.peak
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	if len(out) == 0 && sc.Err() == nil {
		return nil, fmt.Errorf("%s: no names", path)
	}
	return out, sc.Err()
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "walsim: "+format+"\n", args...)
	os.Exit(1)
}
