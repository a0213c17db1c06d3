package backup

import (
	"math/rand"
	"os"
	"testing"
	"time"
)

func TestZZHunt(t *testing.T) {
	seeds := [][]byte{tarscanSample(t), make([]byte, 1024)}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200000; i++ {
		b := append([]byte(nil), seeds[rng.Intn(len(seeds))]...)
		for k := rng.Intn(8); k >= 0; k-- {
			switch rng.Intn(4) {
			case 0:
				if len(b) > 0 { b[rng.Intn(len(b))] = byte(rng.Intn(256)) }
			case 1:
				if len(b) > 10 { b = b[:rng.Intn(len(b))] }
			case 2:
				p := rng.Intn(len(b) + 1)
				b = append(b[:p], append([]byte{byte(rng.Intn(256))}, b[p:]...)...)
			case 3:
				if len(b) > 0 { b[rng.Intn(len(b))] ^= 0x80 }
			}
		}
		chunk, limit := uint16(rng.Intn(5000)), uint32(rng.Intn(100000))
		done := make(chan struct{})
		go func() {
			defer close(done)
			tt := &testing.T{}
			_ = tt
			n := int(chunk)%4096 + 1
			tarscanScan(t, b, "CRC32C", n)
			tarscanSplit(t, b, int64(limit)+1, n)
		}()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			os.WriteFile("/tmp/hang.bin", b, 0o644)
			t.Fatalf("hang at iteration %d chunk %d limit %d len %d", i, chunk, limit, len(b))
		}
	}
}
