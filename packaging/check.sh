#!/usr/bin/env bash
# Builds the posmon-agent and posmon-collector .deb packages with cargo-deb, installs them into a
# fresh, empty root with dpkg (no container, no chroot for dpkg: `--force-script-chrootless`, so
# the maintainer scripts run with this machine's tools on that root through $DPKG_ROOT), and
# checks what they install: files, owners and modes, the system users, the units enabled and
# accepted by `systemd-analyze verify`, the installed default configs accepted by the programs
# running as the service users (the agent reporting to the collector), an upgrade and a remove
# and reinstall that keep the secrets, and a purge that removes everything; then
# packaging/check-live.sh installs them under a running systemd. Any problem ends it with a message naming it and exit status 1.
#
# Needs root (dpkg, chown, chroot), cargo-deb (`cargo install cargo-deb --locked`), dpkg,
# passwd (useradd/groupadd with --prefix), systemd (systemctl, systemd-analyze) and coreutils.
# Usage: packaging/check.sh [--keep]   (--keep leaves the root and the packages for a look)
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[[ "${1:-}" == "--keep" ]] && keep=true

fail() {
    echo "packaging/check.sh: FAILED: $*" >&2
    exit 1
}
step() {
    echo "-- $*"
}

[[ "$(id -u)" == 0 ]] || fail "must run as root (dpkg --root, chown to the service users, chroot)"
for tool in cargo dpkg dpkg-deb useradd groupadd userdel groupdel systemctl systemd-analyze chroot ldd; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
cargo deb --version >/dev/null 2>&1 || fail "cargo-deb is not installed: cargo install cargo-deb --locked"

work="$(mktemp -d "${TMPDIR:-/tmp}/posmon-packaging.XXXXXX")"
root="$work/root"
out="$work/debs"
# The programs started from the root, stopped on the way out whatever happens.
collector_pid=""
agent_pid=""
stop_programs() {
    for pid in $agent_pid $collector_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    agent_pid=""
    collector_pid=""
}
cleanup() {
    stop_programs
    if $keep; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
# A command failing where no check expected it ends the run too, loudly.
trap 'echo "packaging/check.sh: FAILED: line $LINENO: $BASH_COMMAND" >&2' ERR

step "build the binaries (one release build: both crates' features unified) and the packages"
cargo build --release --locked -p posmon-agent -p posmon-collector
cargo deb --no-build --locked -p posmon-agent --output "$out/" >/dev/null
cargo deb --no-build --locked -p posmon-collector --output "$out/" >/dev/null
agent_deb="$(ls "$out"/posmon-agent_*.deb)"
collector_deb="$(ls "$out"/posmon-collector_*.deb)"
for deb in "$agent_deb" "$collector_deb"; do
    dpkg-deb --info "$deb" >/dev/null || fail "$deb is not a valid package"
done

step "a fresh root: an empty dpkg database and the accounts base-passwd would hold"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers" \
    "$root/var/log" "$root/etc"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo 'root:*:20000:0:99999:7:::' >"$root/etc/shadow"
echo 'root:*::' >"$root/etc/gshadow"
chmod 0640 "$root/etc/shadow" "$root/etc/gshadow"
# And the units of this machine's systemd (the systemd package of a real system): the targets
# the packages' units hang on, which `systemctl enable` and `systemd-analyze verify` look up.
mkdir -p "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"

# --force-script-chrootless: the root has no shell or tools to chroot into; the scripts honour
# $DPKG_ROOT instead. --force-depends: the empty root has no libc6 or passwd package to satisfy
# the packages' dependencies (the scripts use this machine's passwd tools; the binaries get this
# machine's C library below, to be run in the root).
dpkg_root() {
    dpkg --root="$root" --force-script-chrootless --force-depends "$@"
}

step "install: the agent, then the collector"
dpkg_root --install "$agent_deb" || fail "dpkg could not install $agent_deb"
dpkg_root --install "$collector_deb" || fail "dpkg could not install $collector_deb"
for package in posmon-agent posmon-collector; do
    dpkg_root --status "$package" | grep -qx 'Status: install ok installed' ||
        fail "$package is not 'install ok installed' in the root's dpkg database"
done

# The owner, group (names from the root's files) and octal mode of a path in the root.
account_name() { # file id
    awk -F: -v id="$2" '$3 == id { print $1; exit }' "$root/etc/$1"
}
expect() { # path user group mode
    local path="$root$1" uid gid mode user group
    [[ -e "$path" ]] || fail "$1 is missing"
    read -r uid gid mode < <(stat -c '%u %g %a' "$path")
    user="$(account_name passwd "$uid")"
    group="$(account_name group "$gid")"
    [[ "$user:$group $mode" == "$2:$3 $4" ]] ||
        fail "$1 is ${user:-uid $uid}:${group:-gid $gid} $mode, expected $2:$3 $4"
}
absent() { # path
    [[ ! -e "$root$1" && ! -L "$root$1" ]] || fail "$1 is still there"
}

step "the system users"
for user in posmon-agent posmon-collector; do
    entry="$(grep "^$user:" "$root/etc/passwd")" || fail "user $user is not in the root's /etc/passwd"
    grep -q "^$user:" "$root/etc/group" || fail "group $user is not in the root's /etc/group"
    IFS=: read -r _ _ uid _ _ home shell <<<"$entry"
    ((uid < 1000)) || fail "user $user has uid $uid: not a system user"
    [[ "$home" == "/var/lib/$user" && "$shell" == /usr/sbin/nologin ]] ||
        fail "user $user has home $home and shell $shell"
done

step "files, owners and modes"
expect /usr/bin/posmon-agent root root 755
expect /usr/bin/posmon-collector root root 755
expect /lib/systemd/system/posmon-agent.service root root 644
expect /lib/systemd/system/posmon-collector.service root root 644
expect /etc/posmon root posmon-agent 755
expect /etc/posmon/agent.toml root root 644
expect /etc/posmon/collector.toml root posmon-collector 640
for secret in collector-fleet-secret collector-admin-token collector-viewer-token; do
    expect "/etc/posmon/$secret" root posmon-collector 640
    grep -qxE '[0-9a-f]{64}' "$root/etc/posmon/$secret" || fail "/etc/posmon/$secret is not 64 hex digits"
done
expect /var/lib/posmon-agent posmon-agent posmon-agent 755
expect /var/lib/posmon-collector posmon-collector posmon-collector 750
[[ "$(cat "$root/etc/posmon/collector-fleet-secret")" != "$(cat "$root/etc/posmon/collector-admin-token")" ]] ||
    fail "the fleet secret and the admin token are the same"
dpkg_root --status posmon-agent | grep -q '^ /etc/posmon/agent.toml ' || fail "agent.toml is not a conffile"
dpkg_root --status posmon-collector | grep -q '^ /etc/posmon/collector.toml ' ||
    fail "collector.toml is not a conffile"

step "the units: enabled, their paths those of the configs, systemd-analyze verify"
for unit in posmon-agent posmon-collector; do
    link="$root/etc/systemd/system/multi-user.target.wants/$unit.service"
    [[ "$(readlink "$link")" == "/lib/systemd/system/$unit.service" ]] || fail "$unit.service is not enabled"
    file="$root/lib/systemd/system/$unit.service"
    exec_start="$(sed -n 's/^ExecStart=//p' "$file")"
    [[ "$exec_start" == "/usr/bin/$unit "*"--config /etc/posmon/${unit#posmon-}.toml" ]] ||
        fail "$unit.service runs '$exec_start'"
    grep -qx "User=$unit" "$file" || fail "$unit.service does not run as $unit"
    grep -qx "StateDirectory=$unit" "$file" || fail "$unit.service has no StateDirectory=$unit"
done
grep -qx 'state_dir = "/var/lib/posmon-agent"' "$root/etc/posmon/agent.toml" ||
    fail "agent.toml's state_dir is not the unit's StateDirectory"
grep -qx 'token_file = "/etc/posmon/agent-token"' "$root/etc/posmon/agent.toml" ||
    fail "agent.toml's token_file is not the unit's ConditionPathExists"
grep -qx 'ConditionPathExists=/etc/posmon/agent-token' "$root/lib/systemd/system/posmon-agent.service" ||
    fail "posmon-agent.service does not wait for the token"
grep -qx 'data_dir = "/var/lib/posmon-collector"' "$root/etc/posmon/collector.toml" ||
    fail "collector.toml's data_dir is not the unit's StateDirectory"
grep -q 'AmbientCapabilities=CAP_NET_RAW' "$root/lib/systemd/system/posmon-agent.service" ||
    fail "posmon-agent.service lacks CAP_NET_RAW for the ICMP fallback"
grep -qx 'CapabilityBoundingSet=' "$root/lib/systemd/system/posmon-collector.service" ||
    fail "posmon-collector.service may hold capabilities"
# verify loads the units from the root and checks every setting, the ExecStart= binaries (present
# and executable in the root) and the dependencies; any warning fails.
for unit in posmon-agent posmon-collector; do
    verified="$(systemd-analyze verify --root="$root" "/lib/systemd/system/$unit.service" 2>&1)" ||
        fail "systemd-analyze verify $unit.service: $verified"
    [[ -z "$verified" ]] || fail "systemd-analyze verify $unit.service warns: $verified"
done
# The sandbox kept: systemd's exposure score (0 to 10, lower is tighter; threshold in tenths) at
# most what it is now (agent 2.6, collector 1.6): dropping or loosening a setting that counts
# in the score fails here.
for unit_threshold in posmon-agent:26 posmon-collector:16; do
    unit="${unit_threshold%:*}"
    systemd-analyze security --offline=true --root="$root" --threshold="${unit_threshold#*:}" \
        "/lib/systemd/system/$unit.service" >"$work/security.txt" 2>&1 ||
        fail "$unit.service's sandbox got looser: $(tail -1 "$work/security.txt")"
done

step "the installed configs, read by the programs as the service users (in a chroot of the root)"
# The programs need this machine's C library in the root (the forced libc6 dependency).
for library in $(for binary in posmon-agent posmon-collector; do
    ldd "$root/usr/bin/$binary" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'
done | sort -u); do
    mkdir -p "$root$(dirname "$library")"
    cp -L "$library" "$root$library"
done
uid_of() { awk -F: -v name="$1" '$1 == name { print $3 }' "$root/etc/passwd"; }
gid_of() { awk -F: -v name="$1" '$1 == name { print $3 }' "$root/etc/group"; }
as_user() { # user command...
    local user="$1"
    shift
    chroot --userspec="$(uid_of "$user"):$(gid_of "$user")" "$root" "$@"
}
# What `posmon-agent enroll` does: the token of the terminal, 0640 in the group of /etc/posmon.
token="$(chroot "$root" /usr/bin/posmon-collector token --config /etc/posmon/collector.toml CHANGE-ME 2>/dev/null)" ||
    fail "posmon-collector token does not work with the installed config and the generated secret"
(umask 027 && echo "$token" >"$root/etc/posmon/agent-token")
chown "0:$(gid_of posmon-agent)" "$root/etc/posmon/agent-token"
as_user posmon-agent /usr/bin/posmon-agent check-config /etc/posmon/agent.toml ||
    fail "posmon-agent check-config, as posmon-agent, refuses the installed config and token"
as_user posmon-collector /usr/bin/posmon-collector token --config /etc/posmon/collector.toml CHANGE-ME \
    >/dev/null 2>&1 || fail "posmon-collector cannot read its config and fleet secret as posmon-collector"
if refused="$(as_user posmon-collector /usr/bin/posmon-agent check-config /etc/posmon/agent.toml 2>&1)"; then
    fail "posmon-collector can read the agent's token"
fi
[[ "$refused" == *agent-token* ]] || fail "check-config as posmon-collector failed, but not on the token: $refused"

step "the installed programs as their users: the agent reports to the collector"
# The collector on a port the kernel picks (loopback), the agent with a copy of its installed
# config pointing there; the agent's report must show in the collector's API (read with the
# generated viewer token), and each must have written its state directory as its own user.
: >"$work/collector.log"
chroot --userspec="$(uid_of posmon-collector):$(gid_of posmon-collector)" "$root" \
    /usr/bin/posmon-collector serve --config /etc/posmon/collector.toml --listen 127.0.0.1:0 \
    >"$work/collector.log" 2>&1 &
collector_pid=$!
port=""
for _ in $(seq 100); do
    port="$(sed -n 's|^posmon-collector listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$work/collector.log")"
    [[ -n "$port" ]] && break
    kill -0 "$collector_pid" 2>/dev/null || break
    sleep 0.1
done
[[ -n "$port" ]] || fail "the collector did not start as posmon-collector: $(cat "$work/collector.log")"
mkdir -p "$root/run/posmon-check"
sed "s|^collector_url = .*|collector_url = \"http://127.0.0.1:$port\"|" "$root/etc/posmon/agent.toml" \
    >"$root/run/posmon-check/agent.toml"
chroot --userspec="$(uid_of posmon-agent):$(gid_of posmon-agent)" "$root" \
    /usr/bin/posmon-agent run --config /run/posmon-check/agent.toml >"$work/agent.log" 2>&1 &
agent_pid=$!
viewer_token="$(cat "$root/etc/posmon/collector-viewer-token")"
terminals=""
for _ in $(seq 60); do
    terminals="$(exec 3<>"/dev/tcp/127.0.0.1/$port" &&
        printf 'GET /api/v1/terminals HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n' \
            "$viewer_token" >&3 && timeout 5 cat <&3)" || true
    [[ "$terminals" == *'"CHANGE-ME"'* ]] && break
    kill -0 "$agent_pid" 2>/dev/null || break
    sleep 0.5
done
[[ "$terminals" == *'"CHANGE-ME"'* ]] ||
    fail "the collector's API does not show the agent's terminal: ${terminals:0:300}; agent: $(cat "$work/agent.log"); collector: $(cat "$work/collector.log")"
# The status the POS application reads (docs/pos-app-status.md): world-readable in a
# world-readable directory, written by the agent as its own user.
for _ in $(seq 20); do
    [[ -e "$root/var/lib/posmon-agent/status.json" ]] && break
    sleep 0.5
done
expect /var/lib/posmon-agent/status.json posmon-agent posmon-agent 644
grep -q '"CHANGE-ME"' "$root/var/lib/posmon-agent/status.json" || fail "status.json does not name the terminal"
stop_programs
rm -r "$root/run/posmon-check"
for user in posmon-agent posmon-collector; do
    [[ -n "$(find "$root/var/lib/$user" -mindepth 1 -user "$(uid_of "$user")" -print -quit)" ]] ||
        fail "$user wrote nothing in /var/lib/$user"
done

step "upgrade (the same packages again): secrets, tokens and config edits kept"
secret_before="$(cat "$root/etc/posmon/collector-fleet-secret")"
echo '# edited' >>"$root/etc/posmon/agent.toml"
dpkg_root --force-confold --install "$agent_deb" "$collector_deb" || fail "dpkg could not reinstall the packages"
[[ "$(cat "$root/etc/posmon/collector-fleet-secret")" == "$secret_before" ]] || fail "the upgrade replaced the fleet secret"
[[ "$(cat "$root/etc/posmon/agent-token")" == "$token" ]] || fail "the upgrade touched the agent's token"
grep -qx '# edited' "$root/etc/posmon/agent.toml" || fail "the upgrade dropped an edit of agent.toml"
expect /etc/posmon root posmon-agent 755
expect /etc/posmon/agent-token root posmon-agent 640
expect /etc/posmon/collector.toml root posmon-collector 640

step "remove, then install again: configs, secrets, token, state, users and enablement kept"
dpkg_root --remove posmon-agent posmon-collector || fail "dpkg could not remove the packages"
absent /usr/bin/posmon-agent
absent /usr/bin/posmon-collector
for path in /etc/posmon/agent.toml /etc/posmon/agent-token /etc/posmon/collector.toml \
    /etc/posmon/collector-fleet-secret /var/lib/posmon-agent /var/lib/posmon-collector; do
    [[ -e "$root$path" ]] || fail "removing (not purging) the packages deleted $path"
done
dpkg_root --install "$agent_deb" "$collector_deb" || fail "dpkg could not install the removed packages again"
[[ "$(cat "$root/etc/posmon/collector-fleet-secret")" == "$secret_before" ]] || fail "the reinstall replaced the fleet secret"
for unit in posmon-agent posmon-collector; do
    [[ "$(readlink "$root/etc/systemd/system/multi-user.target.wants/$unit.service")" == "/lib/systemd/system/$unit.service" ]] ||
        fail "$unit.service is no longer enabled after remove and reinstall"
done
grep -q "^posmon-agent:" "$root/etc/passwd" || fail "the user posmon-agent is gone after remove and reinstall"

step "purge: nothing of either package is left"
dpkg_root --purge posmon-agent posmon-collector || fail "dpkg could not purge the packages"
for path in /usr/bin/posmon-agent /usr/bin/posmon-collector /lib/systemd/system/posmon-agent.service \
    /lib/systemd/system/posmon-collector.service /etc/posmon /var/lib/posmon-agent /var/lib/posmon-collector \
    /etc/systemd/system/multi-user.target.wants/posmon-agent.service \
    /etc/systemd/system/multi-user.target.wants/posmon-collector.service; do
    absent "$path"
done
for user in posmon-agent posmon-collector; do
    ! grep -q "^$user:" "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow" "$root/etc/gshadow" ||
        fail "the purge left the user or group $user"
done
for package in posmon-agent posmon-collector; do
    if dpkg_root --status "$package" >/dev/null 2>&1; then
        fail "the root's dpkg database still knows $package"
    fi
done

step "the packages under a running systemd: packaging/check-live.sh"
if [[ -d /run/systemd/system ]]; then
    skipped="not run: this machine runs systemd, and check-live.sh boots its own in namespaces, which needs a machine without (a container, as under CI)"
    [[ "${POSMON_REQUIRE_ALL_TESTS:-}" != 1 ]] || fail "packaging/check-live.sh $skipped"
    echo "-- $skipped"
else
    packaging/check-live.sh "$out"
fi

echo "packaging/check.sh: ok ($(basename "$agent_deb"), $(basename "$collector_deb"))"
