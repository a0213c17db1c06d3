#!/bin/sh
# pgark postremove (deb postrm, rpm %postun). dpkg itself keeps
# /etc/pgark/pgark.conf on remove and deletes it on purge; files the
# administrator made in /etc/pgark and the repositories are never touched.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
