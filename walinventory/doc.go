// Package walinventory takes stock of a repository's WAL archive: which
// segments, partial segments, backup history files and timelines it holds,
// whether they are continuous along the newest timeline's history, and which
// points in time a restore can reach from the backups of the catalog. It also
// reads timeline history files (TimelineHistory) and finds the newest
// timeline (LatestTimeline) as recovery does.
//
// (It was called archive, a name that collided with tar archives and
// pg_dump archives.) It sits on wal (names, histories), catalog (backups),
// repo and storage; verify, retain, check, health and restore build on it.
package walinventory
