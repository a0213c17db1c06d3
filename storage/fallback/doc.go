// Package fallback reads from several repositories' stores as one: the
// first store answers, and the next one is asked when the first fails or
// does not hold the object.
//
// "Not found" (storage.ErrNotFound) is returned only when every store
// answered "does not exist" to a request made in this call; when one store
// failed (a timeout, a 403) and the others said "not found", the failure is
// returned, so that wal-fetch never ends recovery on a store that could not
// answer. List merges the stores' listings (each key once, in lexical order,
// from the first store that lists it); a store that cannot list is skipped
// with a warning as long as another one lists.
//
// NewForWriter relaxes the "not found" rule for writers, whose create-only
// writes make a wrong "not found" harmless (see there).
//
// A fallback store is for reading: Put, Swap and Delete are refused.
package fallback
