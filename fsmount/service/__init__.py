"""Running fsmount as a service: systemd notify, /etc/fsmount confs, fstab options, metrics."""
