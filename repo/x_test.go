package repo

import (
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func BenchmarkXFrames(b *testing.B) {
	s := benchSegs(b)
	for _, fs := range []int{512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20} {
		for _, win := range []int{0, 1} {
			name := map[int]string{0: "w8M", 1: "wFrame"}[win]
			b.Run(name+"-"+itoa(fs>>10)+"K", func(b *testing.B) {
				opts := []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(true), zstd.WithEncoderConcurrency(2)}
				if win == 1 {
					opts = append(opts, zstd.WithWindowSize(fs))
				}
				b.SetBytes(16 << 20)
				var total int
				for i := 0; b.Loop(); i++ {
					zw, _ := zstd.NewWriter(nil, opts...)
					d := s[i%len(s)]
					n := (len(d) + fs - 1) / fs
					outs := make([][]byte, n)
					var wg sync.WaitGroup
					ch := make(chan int, n)
					for j := 0; j < n; j++ {
						ch <- j
					}
					close(ch)
					for w := 0; w < 2; w++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for j := range ch {
								outs[j] = zw.EncodeAll(d[j*fs:min(len(d), (j+1)*fs)], nil)
							}
						}()
					}
					wg.Wait()
					total = 0
					for _, o := range outs {
						total += len(o)
					}
				}
				b.ReportMetric(float64(total), "outbytes")
			})
		}
	}
}

func itoa(i int) string {
	s := ""
	for {
		s = string(rune('0'+i%10)) + s
		i /= 10
		if i == 0 {
			return s
		}
	}
}
