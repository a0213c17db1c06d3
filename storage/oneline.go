package storage

import "strings"

// OneLine collapses every run of white space in s, line breaks included,
// into one space and trims both ends: for messages that must stay on one
// line (log records, monitoring output, report lines) but quote text that
// may not, such as a server's error or a store's XML error body.
//
// It lives here because it has no package of its own: storage is the
// lowest package that the packages using it (health, dump, cmd/pgark)
// already import, and it imports nothing of pgark's, so no import cycle can
// arise.
func OneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
