#!/bin/busybox sh
# Guest /init for the QEMU end-to-end tests: mounts, heartbeat on ttyS0, command agent on ttyS1.
#
# Protocol on ttyS1 (raw, no echo): the host sends one line `<id> <shell command>`; the guest
# runs it and sends its output, then a line `@@e2e-done <id> <exit status>` after a newline.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t bpf bpf /sys/fs/bpf
for module in /lib/modules/*.ko; do
    [ -e "$module" ] && insmod "$module"
done
mkdir -p /run/e2e
# What udev would do: /dev/virtio-ports/<name> for each named virtio-serial port.
mkdir -p /dev/virtio-ports
for port in /sys/class/virtio-ports/*; do
    [ -e "$port/name" ] && ln -sf "/dev/${port##*/}" "/dev/virtio-ports/$(cat "$port/name")"
done

# One line per 100 ms, so the host can time the first line after a restore.
(
    n=0
    while :; do
        read -r up _ </proc/uptime
        echo "@@hb $n $up"
        n=$((n + 1))
        sleep 0.1
    done
) >/dev/console 2>&1 &

stty -F /dev/ttyS1 raw -echo
exec 3<>/dev/ttyS1
echo "@@e2e-ready $(cat /proc/uptime)" >/dev/console
while IFS= read -r line <&3; do
    id=${line%% *}
    cmd=${line#* }
    sh -c "$cmd" </dev/null >/run/e2e/cmd.out 2>&1
    rc=$?
    { cat /run/e2e/cmd.out; printf '\n@@e2e-done %s %s\n' "$id" "$rc"; } >&3
done
echo "@@e2e-agent-ended" >/dev/console
poweroff -f
