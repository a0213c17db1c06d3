package wal

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/internal/walgen"
	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage/local"
)

// Benchmarks of wal-push and wal-fetch on a local repository (age, zstd
// level 1, wal-push's default, or PGARK_BENCH_LEVEL), 16 MiB segments. Real WAL is best: set PGARK_BENCH_WAL_DIR to a
// directory of segments (for instance the segs/ of a work dir kept by
// `KEEP=1 SEGMENTS=4 bash bench/wal.sh`); without it, synthetic
// pgbench-like segments are used. They print figures and never fail on a
// time. bench/wal.sh measures what counts: one process per segment.
//
//	PGARK_BENCH_WAL_DIR=/tmp/segs go test ./wal -run X -bench . -benchtime 20x

// benchSegmentFiles returns up to 4 segment files.
func benchSegmentFiles(b *testing.B) []string {
	b.Helper()
	var files []string
	if dir := os.Getenv("PGARK_BENCH_WAL_DIR"); dir != "" {
		all, _ := filepath.Glob(filepath.Join(dir, "*"))
		sort.Strings(all)
		for _, f := range all {
			n, err := ParseName(filepath.Base(f))
			if fi, serr := os.Stat(f); err != nil || serr != nil || n.Kind != KindSegment || fi.Size() != 16<<20 {
				continue
			}
			if files = append(files, f); len(files) == 4 {
				break
			}
		}
		if len(files) == 0 {
			b.Logf("no 16 MiB segments in PGARK_BENCH_WAL_DIR=%s: using synthetic segments", dir)
		}
	}
	if len(files) > 0 {
		return files
	}
	dir := b.TempDir()
	for i := range 2 {
		name := SegmentFileName(1, uint64(3+i), 16<<20)
		n, _ := ParseName(name)
		start, _ := n.StartLSN(16 << 20)
		seg := walgen.PgbenchLike(16<<20, uint64(i+1))
		copy(seg, header(42, 1, uint64(start), 16<<20, 8192, 2))
		// every page's address, as PostgreSQL writes them
		for off := 8192; off < len(seg); off += 8192 {
			binary.LittleEndian.PutUint64(seg[off+8:], uint64(start)+uint64(off))
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, seg, 0o600); err != nil {
			b.Fatal(err)
		}
		files = append(files, p)
	}
	return files
}

// BenchmarkPush: one segment pushed into a fresh key (read, hash, compress,
// encrypt, create-only write with fsync).
func BenchmarkPush(b *testing.B) {
	ctx := context.Background()
	files := benchSegmentFiles(b)
	r, c, _ := newBenchRepo(b)
	b.SetBytes(16 << 20)
	var stored int64
	for i := 0; b.Loop(); i++ {
		p := files[i%len(files)]
		n, _ := ParseName(filepath.Base(p))
		b.StopTimer()
		r.Store.Delete(ctx, ObjectKey(n))
		b.StartTimer()
		if _, err := Push(ctx, r, p, PushOptions{Codec: c, RetryFor: time.Second}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		info, _ := r.Store.Stat(ctx, ObjectKey(n))
		stored += info.Size
		syscall.Sync() // as bench/wal.sh does: no write-back left for the next one
		b.StartTimer()
	}
	b.ReportMetric(float64(stored)/float64(b.N), "stored-bytes/op")
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "procs")
}

// BenchmarkFetch: one segment fetched (read, decrypt, decompress, check,
// write a temporary file, rename), with a decoder of its own as wal-fetch
// does (fresh), or with one reused from fetch to fetch as the prefetch
// helper does (reused).
func BenchmarkFetch(b *testing.B) {
	ctx := context.Background()
	files := benchSegmentFiles(b)
	r, c, ids := newBenchRepo(b)
	var names []string
	for _, p := range files {
		if _, err := Push(ctx, r, p, PushOptions{Codec: c, RetryFor: time.Second}); err != nil {
			b.Fatal(err)
		}
		names = append(names, filepath.Base(p))
	}
	dest := filepath.Join(b.TempDir(), "RECOVERYXLOG")
	for _, reuse := range []bool{false, true} {
		name := "fresh"
		o := FetchOptions{Identities: ids, RetryFor: time.Second}
		if reuse {
			name = "reused"
			o.Decoder = repo.NewDecoder(decodeWorkers())
			defer o.Decoder.Close()
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(16 << 20)
			var cpu time.Duration
			for i := 0; b.Loop(); i++ {
				c0 := cpuTime()
				if err := Fetch(ctx, r, names[i%len(names)], dest, o); err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - c0
				b.StopTimer()
				os.Remove(dest)
				syscall.Sync()
				b.StartTimer()
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkFetchCheck: the plaintext check of one segment, SHA-256 (signed
// repositories, and objects pushed before the CRC-32C was recorded) against
// CRC-32C (the others). See recorded.check.
func BenchmarkFetchCheck(b *testing.B) {
	seg, err := os.ReadFile(benchSegmentFiles(b)[0])
	if err != nil {
		b.Fatal(err)
	}
	for _, signed := range []bool{true, false} {
		rec := recorded{size: int64(len(seg)), sha256: "x", crc32c: "x"}
		_, name, _ := rec.check(signed)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(seg)))
			for b.Loop() {
				h, _, _ := rec.check(signed)
				h.Write(seg)
				h.Sum(nil)
			}
		})
	}
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func newBenchRepo(b *testing.B) (*repo.Repo, repo.Codec, *crypto.Identities) {
	b.Helper()
	st, err := local.New(filepath.Join(b.TempDir(), "repo"))
	if err != nil {
		b.Fatal(err)
	}
	kf := filepath.Join(b.TempDir(), "key")
	recip, err := crypto.GenerateIdentity(kf)
	if err != nil {
		b.Fatal(err)
	}
	c := repo.Codec{Compression: "zstd", Level: benchLevel()}
	if c.Recipients, err = crypto.ParseRecipients(recip, ""); err != nil {
		b.Fatal(err)
	}
	ids, err := crypto.LoadIdentities(kf)
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := repo.Init(context.Background(), st, repo.InitOptions{Compression: "zstd", Level: 3, Recipients: c.Recipients, WriteMode: repo.WriteLink})
	if err != nil {
		b.Fatal(err)
	}
	return &repo.Repo{Store: st, Config: *cfg}, c, ids
}

// benchLevel is the zstd level of the benchmarks: PGARK_BENCH_LEVEL, else 1
// (wal-push's default).
func benchLevel() int {
	if v, err := strconv.Atoi(os.Getenv("PGARK_BENCH_LEVEL")); err == nil {
		return v
	}
	return 1
}
