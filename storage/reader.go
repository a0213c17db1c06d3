package storage

import (
	"context"
	"io"
)

// ContextReader returns a reader of r whose reads fail with ctx's error
// once ctx is done: a backend's Put reads its data through it, so that a
// cancelled Put stops between reads even when r itself does not watch ctx.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx: ctx, r: r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
