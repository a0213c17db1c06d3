#!/bin/sh
# pgark postinstall (deb postinst, rpm %post). Creates no user, group or
# directory and enables nothing: the example config becomes readable by the
# postgres group if that group exists and the file is still root's.
set -e
conf=/etc/pgark/pgark.conf
if [ -f "$conf" ] && getent group postgres >/dev/null 2>&1 && [ "$(stat -c %G "$conf")" = root ]; then
	chgrp postgres "$conf"
fi
# New or changed unit files: let a running systemd see them.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
