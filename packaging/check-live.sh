#!/usr/bin/env bash
# The packages under a running systemd: boots systemd as PID 1 of private namespaces (PID,
# mount, network, UTS, IPC, cgroup) on a throwaway overlay of this machine's root, installs the
# .deb packages there with dpkg, and checks that both services run inside their sandbox and do
# their job: the collector starts at once, the agent only once enrolled (a one-time code from
# the admin API with the generated admin token, then `posmon-agent enroll`); the agent reports
# to the collector (by datagram), writes status.json for the POS app, reads the process table,
# device nodes and /sys and runs check commands; its ICMP echo works as the unit runs it
# (CAP_NET_RAW, with the fresh network namespace's ping_group_range "1 0", as on Debian 12); a
# purge stops both and leaves nothing. Nothing leaves the private network namespace (a veth pair
# to a namespace of its own stands for the shop's router), and nothing is written to this
# machine's files (the overlay's upper layer, /dev, /run and /tmp are memory that ends with the
# mount namespace).
#
# Needs root on a machine NOT booted with systemd (a container, as under CI): on a systemd host
# the nested systemd would share the host's cgroup tree, so it refuses; check there with
# systemd-nspawn instead. Usage: packaging/check-live.sh DIR (the directory holding the two
# .deb files, as packaging/check.sh builds them).
set -euo pipefail

fail() {
    echo "packaging/check-live.sh: FAILED: $*" >&2
    exit 1
}
step() {
    echo "-- live: $*"
}

debs="$(cd "${1:?usage: packaging/check-live.sh DIR_WITH_THE_DEBS}" && pwd)"
ls "$debs"/posmon-agent_*.deb "$debs"/posmon-collector_*.deb >/dev/null || fail "no posmon .deb files in $debs"
[[ "$(id -u)" == 0 ]] || fail "must run as root"
[[ ! -d /run/systemd/system ]] ||
    fail "this machine runs systemd: a nested one would share its cgroups; use systemd-nspawn here"
for tool in unshare nsenter findmnt ip; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done

work="$(mktemp -d "${TMPDIR:-/tmp}/posmon-live.XXXXXX")"
group="posmon-live-$$"
# The cgroup hierarchies the nested systemd sees, as "mount point|path of this shell": the
# unified one (cgroup2) and, on a hybrid machine, the named systemd one. The nested systemd is
# confined to a child group of each, removed at the end.
hierarchies=()
if [[ "$(stat -fc %T /sys/fs/cgroup)" == cgroup2fs ]]; then
    hierarchies+=("/sys/fs/cgroup|$(awk -F: '$1 == 0 { print $3 }' /proc/self/cgroup)")
else
    unified="$(findmnt -rn -t cgroup2 -o TARGET | head -1)"
    [[ -n "$unified" ]] && hierarchies+=("$unified|$(awk -F: '$1 == 0 { print $3 }' /proc/self/cgroup)")
    named="$(findmnt -rn -t cgroup -o TARGET,OPTIONS | awk '$2 ~ /name=systemd/ { print $1; exit }')"
    [[ -n "$named" ]] || fail "no name=systemd cgroup hierarchy to boot systemd in"
    hierarchies+=("$named|$(awk -F: '$2 == "name=systemd" { print $3 }' /proc/self/cgroup)")
fi
systemd_pid=""
launcher_pid=""
cleanup() {
    if [[ -n "$systemd_pid" ]]; then
        kill -KILL "$systemd_pid" 2>/dev/null || true
    fi
    if [[ -n "$launcher_pid" ]]; then
        wait "$launcher_pid" 2>/dev/null || true
    fi
    local entry
    for entry in "${hierarchies[@]}"; do
        local dir="${entry%%|*}${entry#*|}/$group"
        dir="${dir//\/\///}"
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            [[ -d "$dir" ]] || break
            find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || sleep 0.5
        done
        [[ ! -d "$dir" ]] || echo "packaging/check-live.sh: warning: could not remove the cgroup $dir" >&2
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "packaging/check-live.sh: FAILED: line $LINENO: $BASH_COMMAND" >&2' ERR

# What PID 1 of the namespaces runs: the root (an overlay of / whose upper layer is memory),
# fresh /proc, /sys (read-only), /dev, /run and /tmp, the cgroup hierarchies rooted at the child
# group, this machine's enabled services left out, then systemd.
cat >"$work/boot.sh" <<'EOF'
set -e
base="$1"
shift
mount -t tmpfs tmpfs "$base"
mkdir -p "$base/upper" "$base/work" "$base/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
root="$base/root"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
# A /dev of its own: the usual pseudo devices, and a card reader's node (ttyPOS0, a null device
# in disguise) that a unit with PrivateDevices= would not see.
mount -t tmpfs -o mode=755 tmpfs "$root/dev"
mknod -m 666 "$root/dev/null" c 1 3
mknod -m 666 "$root/dev/zero" c 1 5
mknod -m 666 "$root/dev/full" c 1 7
mknod -m 666 "$root/dev/random" c 1 8
mknod -m 666 "$root/dev/urandom" c 1 9
mknod -m 666 "$root/dev/tty" c 5 0
mknod -m 660 "$root/dev/ttyPOS0" c 1 3
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
mkdir -p "$root/debs"
mount --bind "$DEBS" "$root/debs"
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
else
    mount -t tmpfs -o mode=755 tmpfs "$root/sys/fs/cgroup"
    mkdir -p "$root/sys/fs/cgroup/unified" "$root/sys/fs/cgroup/systemd"
    mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup/unified" || rmdir "$root/sys/fs/cgroup/unified"
    mount -t cgroup -o none,name=systemd cgroup "$root/sys/fs/cgroup/systemd"
fi
for wants in multi-user.target.wants timers.target.wants sysinit.target.wants getty.target.wants \
    default.target.wants; do
    rm -rf "$root/etc/systemd/system/$wants"
done
hostname posmon-live
export container=posmon-live
exec chroot "$root" /lib/systemd/systemd --system --unit=multi-user.target --log-target=null
EOF

step "boot systemd in private namespaces"
mkdir -p "$work/mnt"
(
    for entry in "${hierarchies[@]}"; do
        dir="${entry%%|*}${entry#*|}/$group"
        dir="${dir//\/\///}"
        mkdir -p "$dir"
        echo "$BASHPID" >"$dir/cgroup.procs"
    done
    DEBS="$debs" exec unshare --mount --pid --fork --net --uts --ipc --cgroup --propagation private \
        sh "$work/boot.sh" "$work/mnt"
) >"$work/boot.log" 2>&1 &
launcher_pid=$!
for _ in $(seq 100); do
    # unshare's child: the shell that mounts, then (exec) systemd.
    systemd_pid="$(pgrep -P "$launcher_pid" | head -1)" || true
    [[ -n "$systemd_pid" && "$(cat "/proc/$systemd_pid/comm" 2>/dev/null)" == systemd ]] && break
    systemd_pid=""
    kill -0 "$launcher_pid" 2>/dev/null || fail "the namespaces did not start: $(cat "$work/boot.log")"
    sleep 0.1
done
[[ -n "$systemd_pid" ]] || fail "systemd did not start: $(cat "$work/boot.log")"
inside() {
    nsenter -t "$systemd_pid" -a -r -w "$@"
}
state=""
for _ in $(seq 120); do
    state="$(inside systemctl is-system-running 2>/dev/null)" || true
    [[ "$state" == running || "$state" == degraded ]] && break
    sleep 0.25
done
[[ "$state" == running || "$state" == degraded ]] || fail "the nested systemd is '$state': $(cat "$work/boot.log")"

step "a network of its own: loopback, and a veth link to a router namespace (10.99.0.2)"
inside sh -ec '
    ip link set lo up
    ip netns add router
    ip link add shop type veth peer name uplink
    ip link set uplink netns router
    ip -n router link set lo up
    ip -n router addr add 10.99.0.2/24 dev uplink
    ip -n router link set uplink up
    ip addr add 10.99.0.1/24 dev shop
    ip link set shop up
    ip route add default via 10.99.0.2 dev shop
'

step "install with dpkg: the collector runs, the agent waits for its token"
inside sh -c 'dpkg -i /debs/posmon-agent_*.deb /debs/posmon-collector_*.deb' >"$work/dpkg.log" 2>&1 ||
    fail "dpkg -i under systemd: $(cat "$work/dpkg.log")"
for _ in $(seq 40); do
    inside systemctl is-active --quiet posmon-collector && break
    sleep 0.25
done
inside systemctl is-active --quiet posmon-collector ||
    fail "posmon-collector is not running: $(inside journalctl -u posmon-collector --no-pager -n 20)"
[[ "$(inside systemctl show -P ConditionResult posmon-agent)" == no ]] ||
    fail "posmon-agent started without a token: $(inside systemctl status posmon-agent --no-pager)"
[[ "$(inside systemctl is-enabled posmon-agent)" == enabled ]] || fail "posmon-agent is not enabled"

step "enroll with a one-time code and start the agent: it reports, by datagram, and writes status.json"
# The payment host is the collector's own /healthz on the shop's address: the ladder climbs the
# link (shop), the router (10.99.0.2, by ARP and ICMP) and TCP and HTTP to it.
# shellcheck disable=SC2016 # ${Version} is dpkg-query's, in the config's TOML.
inside sh -ec '
    sed -i "s|^listen = .*|listen = \"0.0.0.0:8080\"|" /etc/posmon/collector.toml
    systemctl restart posmon-collector
    sed -i "s|^terminal_id = .*|terminal_id = \"T-LIVE-1\"|; s|^collector_url = .*|collector_url = \"http://127.0.0.1:8080\"|" /etc/posmon/agent.toml
    sed -i "s|^state_dir = .*|&\nprocesses = [\"systemd\", \"posmon-collecto\"]|" /etc/posmon/agent.toml
    cat >>/etc/posmon/agent.toml <<TOML

[[targets]]
name = "payment-host"
address = "http://10.99.0.1:8080/healthz"

[[components]]
name = "pos_app"
command = ["/usr/bin/dpkg-query", "-W", "-f", "\${Version}", "posmon-agent"]

[[peripherals]]
name = "card_reader"
device = "/dev/ttyPOS0"

[[peripherals]]
name = "pin_pad"
command = ["/bin/sh", "-c", "test -r /sys/class/net/shop/operstate"]
TOML
'
for _ in $(seq 40); do
    inside systemctl is-active --quiet posmon-collector && break
    sleep 0.25
done
# The code, from the admin API with the generated admin token (README "Enrollment").
request() { # method path token-file [body]: the collector's answer, headers and body
    # shellcheck disable=SC2016 # expanded by the inner bash, from its arguments.
    inside bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 &&
        printf "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s" \
            "$1" "$2" "$(cat "$3")" "${#4}" "$4" >&3 && timeout 5 cat <&3' request "$@"
}
code=""
for _ in $(seq 20); do
    answer="$(request POST /api/v1/enrollments /etc/posmon/collector-admin-token '{"terminal_id": "T-LIVE-1"}' 2>/dev/null)" || true
    code="$(sed -n 's/.*"code":"\([^"]*\)".*/\1/p' <<<"$answer")"
    [[ -n "$code" ]] && break
    sleep 0.25
done
[[ -n "$code" ]] || fail "no enrollment code from POST /api/v1/enrollments with the generated admin token: $answer"
# The code on standard input: never on a command line, which ps shows.
inside posmon-agent enroll --config /etc/posmon/agent.toml <<<"$code" >"$work/enroll.log" 2>&1 ||
    fail "posmon-agent enroll: $(cat "$work/enroll.log")"
[[ "$(inside stat -c '%U:%G %a' /etc/posmon/agent-token)" == "root:posmon-agent 640" ]] ||
    fail "enroll wrote /etc/posmon/agent-token as $(inside stat -c '%U:%G %a' /etc/posmon/agent-token), not root:posmon-agent 640"
inside posmon-agent check-config /etc/posmon/agent.toml >/dev/null || fail "check-config refuses the enrolled config"
inside systemctl start posmon-agent
terminal=""
for _ in $(seq 60); do
    terminal="$(request GET /api/v1/terminals/T-LIVE-1 /etc/posmon/collector-viewer-token 2>/dev/null)" || true
    [[ "$terminal" == *'"readiness":"can_pay"'* ]] && break
    sleep 0.5
done
[[ "$terminal" == *'"readiness":"can_pay"'* ]] ||
    fail "the collector does not show T-LIVE-1 able to pay: ${terminal:0:2000}; agent: $(inside journalctl -u posmon-agent --no-pager -n 20)"
inside systemctl is-active --quiet posmon-agent || fail "posmon-agent stopped"
# The first report of a new agent goes by HTTPS; the next (the change confirmed 3 s later) by
# datagram.
datagrams=""
for _ in $(seq 60); do
    datagrams="$(inside bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 && printf "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" >&3 && timeout 5 cat <&3' |
        sed -n 's/^posmon_ingest_datagrams_acknowledged_total //p')" || true
    [[ "${datagrams:-0}" != 0 ]] && break
    sleep 0.5
done
[[ "${datagrams:-0}" != 0 ]] || fail "no report came by datagram"
[[ "$(inside stat -c '%U %a' /var/lib/posmon-agent/status.json)" == "posmon-agent 644" ]] ||
    fail "status.json is not posmon-agent's, 0644"
inside grep -q '"can_pay"' /var/lib/posmon-agent/status.json || fail "status.json does not say can_pay"

step "the running services' credentials: their users, capabilities, no new privileges, seccomp"
# Capability masks: CAP_NET_RAW is bit 13.
for expected in "posmon-agent 0000000000002000" "posmon-collector 0000000000000000"; do
    unit="${expected% *}"
    mask="${expected#* }"
    pid="$(inside systemctl show -P MainPID "$unit")"
    [[ "$pid" != 0 ]] || fail "$unit has no main process"
    status="$(inside cat "/proc/$pid/status")"
    uid="$(inside id -u "$unit")"
    grep -Eq "^Uid:[[:space:]]+${uid}[[:space:]]+${uid}[[:space:]]+${uid}[[:space:]]+${uid}\$" <<<"$status" ||
        fail "$unit does not run as $unit: $(grep '^Uid:' <<<"$status")"
    for field in CapEff CapPrm CapBnd CapAmb; do
        [[ "$unit" == posmon-collector && "$field" == CapAmb ]] && continue
        grep -Eq "^$field:[[:space:]]+$mask\$" <<<"$status" ||
            fail "$unit's $field is not $mask: $(grep "^$field:" <<<"$status")"
    done
    grep -Eq '^NoNewPrivs:[[:space:]]+1$' <<<"$status" || fail "$unit may gain privileges"
    grep -Eq '^Seccomp:[[:space:]]+2$' <<<"$status" || fail "$unit has no system call filter"
done

step "one probe as the unit runs the agent: ICMP (raw socket, CAP_NET_RAW), processes, devices, commands"
inside sh -ec '
    mkdir -p /run/systemd/system/posmon-agent.service.d
    printf "[Service]\nExecStart=\nExecStart=/usr/bin/posmon-agent probe --once --json --config /etc/posmon/agent.toml\nRestart=no\nStandardOutput=file:/run/probe.json\n" \
        >/run/systemd/system/posmon-agent.service.d/probe.conf
    systemctl daemon-reload
    systemctl restart posmon-agent
'
for _ in $(seq 60); do
    [[ "$(inside systemctl is-active posmon-agent)" != active ]] && break
    sleep 0.25
done
probe="$(inside cat /run/probe.json)"
[[ "$(inside cat /proc/sys/net/ipv4/ping_group_range)" == $'1\t0' ]] ||
    fail "ping_group_range admits some group: the raw socket is not what is tested"
grep -A2 '"stage": "icmp"' <<<"$probe" | grep -q '"status": "ok"' ||
    fail "the ICMP rung failed under the unit: $(grep -A3 '"stage": "icmp"' <<<"$probe")"
for expected in '"name": "systemd",' '"name": "posmon-collecto",' '"running": true' \
    '"detail": "device node /dev/ttyPOS0 present"' '"detail": "/bin/sh exited 0"'; do
    grep -qF "$expected" <<<"$probe" || fail "the probe under the unit lacks $expected: $probe"
done
! grep -q '"running": false' <<<"$probe" || fail "a process check failed under the unit: $probe"
! grep -q '"present": false' <<<"$probe" || fail "a peripheral check failed under the unit: $probe"
grep -A1 '"pos_app"' <<<"$probe" | grep -q '"version": "' || fail "the component command failed under the unit: $probe"
inside sh -ec 'rm -r /run/systemd/system/posmon-agent.service.d; systemctl daemon-reload; systemctl restart posmon-agent'

step "purge under systemd: both stopped, nothing left"
inside dpkg --purge posmon-agent posmon-collector >"$work/dpkg.log" 2>&1 || fail "dpkg --purge: $(cat "$work/dpkg.log")"
for unit in posmon-agent posmon-collector; do
    ! inside systemctl is-active --quiet "$unit" || fail "$unit still runs after the purge"
    ! inside getent passwd "$unit" >/dev/null || fail "the user $unit is still there"
done
! inside test -e /etc/posmon || fail "/etc/posmon is still there"
[[ -z "$(inside systemctl list-units --failed --plain --no-legend 'posmon-*')" ]] ||
    fail "failed posmon units: $(inside systemctl list-units --failed --no-pager)"

echo "packaging/check-live.sh: ok"
