// Package mirror writes every object to several repositories' stores, and
// keeps a durable queue of what one of them has not received yet.
//
// Put stores the object in every store at once, each within Config.Timeout.
// It succeeds when at least one store took the object and, for each store
// that did not, the object as it was to be stored (its stored bytes, still
// encrypted, with its metadata and the SHA-256 of those bytes) is written
// and fsynced to that store's queue directory. Later Puts catch the queue
// up, oldest first, within Config.CatchUpBudget, before they return: a store
// that comes back receives everything it missed without anyone acting. A
// store that failed is not tried again for Config.Backoff (its objects go
// straight to its queue), so that a dead store costs one timeout now and
// then, not one per object. When no store takes the object, Put fails and
// nothing is queued.
//
// When a store already holds the key (storage.ErrExists), Put returns
// ErrExists and the caller compares contents as usual (Stat reads the first
// store that answers); a store that failed at the same time is queued a copy
// job: the object is copied as stored from a store that holds it. When a
// store held other content under the key while another took the object
// (two servers archiving into the same repositories), an error is logged:
// the stores now differ under that key.
//
// Reads (Get, Stat, List, ReadSmall) go to the stores in order, as package
// fallback does for writers (fallback.NewForWriter): "not found" when one
// store said so and none holds the object, so that a push that must bind
// the cluster (cluster.json missing) goes on while one store is down. Delete deletes from every store; Swap is refused.
package mirror
