// Package packaging holds what the .deb and .rpm packages install besides
// the binary: the nfpm configuration (nfpm.yaml, used by `make dist`), the
// systemd units (systemd/), the same schedule for cron (cron/pgark), the
// example /etc/pgark/pgark.conf and the package scripts (scripts/).
//
// Its Go code reads the units and the cron file, so that tests can check
// that they agree with each other and run each unit's command line as
// systemd would.
package packaging
