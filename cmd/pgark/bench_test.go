package main

import (
	"context"
	"io"
	"testing"
)

func BenchmarkRunVersion(b *testing.B) {
	for b.Loop() {
		run(context.Background(), []string{"version"}, io.Discard, io.Discard, func(string) string { return "" })
	}
}

func BenchmarkRunWalFetchNoRepo(b *testing.B) {
	for b.Loop() {
		run(context.Background(), []string{"wal-fetch", "--repo", "/nonexistent/repo", "--fetch-ahead", "0", "000000010000000000000042", "/tmp/x"}, io.Discard, io.Discard, func(string) string { return "" })
	}
}
