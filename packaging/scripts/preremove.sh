#!/bin/sh
# pgark preremove (deb prerm, rpm %preun). On removal (not on upgrade), stop
# the pgark timers and services that run, so that none starts a binary that
# is about to go. What the administrator enabled stays enabled.
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl stop 'pgark-*@*.timer' 'pgark-*@*.service' >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
