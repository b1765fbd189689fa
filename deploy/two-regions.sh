#!/usr/bin/env bash
# Two regions on one machine: three cells sharing the two-datacenter Cassandra test cluster, a
# remote worker in each region, and a link emulator that puts the region `us` at a distance.
#
#   deploy/two-regions.sh up        start what is not running yet, wait until every cell answers
#   deploy/two-regions.sh down      stop the workers, the cells, the relay, then the Cassandra
#                                   cluster (only if `up` started it)
#   deploy/two-regions.sh status    which processes live, the relay's links, `weft cells list`
#
# What runs (addresses are fixed; the UI of each cell is on 127.0.0.1):
#   region eu: cell-a  QUIC 127.0.0.1:7071  UI http://127.0.0.1:8081  store via dc1 (127.0.0.1:9042)
#              cell-b  QUIC 127.0.0.3:7071  UI http://127.0.0.1:8082  store via dc1
#              worker w-eu, connected to cell-a
#   region us: cell-c  QUIC 127.0.0.4:7071  UI http://127.0.0.1:8083  store via dc2 (127.0.0.2:9042)
#              worker w-us, connected to cell-c
#   weft-linkemu, control on 127.0.0.1:17070, with three links in front of cell-c:
#     us-cells  udp 127.0.0.4:17071 -> 127.0.0.4:7071   the address cell-c advertises to cells
#     us-dc1    tcp 127.0.0.4:19041 -> 127.0.0.1:9042   cell-c to the store's dc1 node
#     us-dc2    tcp 127.0.0.4:19042 -> 127.0.0.2:9042   cell-c to the store's dc2 node (no delay)
#
# Environment:
#   WEFT_DEPLOY_DIR        pids, logs, homes, certificates and the cells' shared secret.key
#                          (default ${TMPDIR:-/tmp}/weft-two-regions)
#   WEFT_REGION_DELAY_MS   one-way delay between the regions, in ms (default 40: 80 ms round trip)
#   WEFT_DEPLOY_TIMEOUT_S  how long `up` waits for each process to come up (default 120)
#   WEFT_BIN, WEFT_LINKEMU_BIN   the binaries (default: target/debug/ of the repo, else
#                          $CARGO_TARGET_DIR/debug/, else /var/tmp/weft-target/debug/)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
STATE_DIR="${WEFT_DEPLOY_DIR:-${TMPDIR:-/tmp}/weft-two-regions}"
DELAY_MS="${WEFT_REGION_DELAY_MS:-40}"
START_TIMEOUT_S="${WEFT_DEPLOY_TIMEOUT_S:-120}"
# A cell hands its shards over on SIGTERM, a worker lets its running attempts finish.
STOP_TIMEOUT_S=30
KEYSPACE=weft_demo
DAGS_FOLDER="$REPO_DIR/examples/dags"
CERTS_DIR="$STATE_DIR/certs"
CLUSTER_SCRIPT="$SCRIPT_DIR/cql-test-cluster.sh"
# The Cassandra nodes that `up` started (so that `down` stops those and no others).
CLUSTER_RECORD="$STATE_DIR/cassandra-started"

CELLS=(cell-a cell-b cell-c)
WORKERS=(w-eu w-us)
declare -A REGION=([cell-a]=eu [cell-b]=eu [cell-c]=us)
declare -A LISTEN=([cell-a]=127.0.0.1:7071 [cell-b]=127.0.0.3:7071 [cell-c]=127.0.0.4:7071)
declare -A UI=([cell-a]=127.0.0.1:8081 [cell-b]=127.0.0.1:8082 [cell-c]=127.0.0.1:8083)
declare -A CONNECT=([w-eu]=127.0.0.1:7071 [w-us]=127.0.0.4:7071)

RELAY_CONTROL_HOST=127.0.0.1
RELAY_CONTROL_PORT=17070
RELAY_CELLS=127.0.0.4:17071
RELAY_DC1=127.0.0.4:19041
RELAY_DC2=127.0.0.4:19042

STORE_OPTIONS="replication=dc1:1,dc2:1"
STORE_EU="cql://127.0.0.1:9042/$KEYSPACE?dc=dc1&$STORE_OPTIONS"
# cell-c reaches both store nodes through the relay: the driver is told, for each node address
# the cluster announces, which relay address reaches it.
STORE_US="cql://$RELAY_DC2/$KEYSPACE?dc=dc2&$STORE_OPTIONS&via=127.0.0.1>$RELAY_DC1,127.0.0.2>$RELAY_DC2"

log() { echo "two-regions: $*" >&2; }
die() { log "error: $*"; exit 1; }

# A binary: the variable's value, else the repo's target/debug/, else $CARGO_TARGET_DIR's, else
# the shared build folder of this machine.
find_binary() {
    local name=$1 given=$2 dir
    if [[ -n $given ]]; then
        echo "$given"
        return
    fi
    for dir in "$REPO_DIR/target/debug" "${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/debug}" /var/tmp/weft-target/debug; do
        if [[ -n $dir && -x $dir/$name ]]; then
            echo "$dir/$name"
            return
        fi
    done
    echo "$REPO_DIR/target/debug/$name"
}

WEFT="$(find_binary weft "${WEFT_BIN:-}")"
LINKEMU="$(find_binary weft-linkemu "${WEFT_LINKEMU_BIN:-}")"

check_binaries() {
    local binary
    for binary in "$WEFT" "$LINKEMU"; do
        [[ -x $binary ]] || die "no binary at $binary: build it with \`cargo build -p weft -p weft-linkemu\` (or set WEFT_BIN / WEFT_LINKEMU_BIN)"
    done
    [[ -d $DAGS_FOLDER ]] || die "no DAG folder at $DAGS_FOLDER"
    [[ $DELAY_MS =~ ^[0-9]+$ ]] || die "WEFT_REGION_DELAY_MS must be a whole number of milliseconds, not \`$DELAY_MS\`"
    command -v curl >/dev/null || die "curl is needed to ask the cells for /health"
}

pid_file() { echo "$STATE_DIR/$1.pid"; }
log_file() { echo "$STATE_DIR/$1.log"; }
home_dir() { echo "$STATE_DIR/home/$1"; }

# Whether the process recorded under NAME lives and is still the program started (the pid of a
# process that exited may be reused by another).
running() {
    local name=$1 pid_path pid program
    pid_path=$(pid_file "$name")
    [[ -f $pid_path ]] || return 1
    pid=$(cat "$pid_path")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    program=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -1 || true)
    if [[ $name == relay ]]; then
        [[ ${program##*/} == weft-linkemu ]]
    else
        [[ ${program##*/} == weft ]]
    fi
}

# Start NAME in the background, in a session of its own, so that it outlives this script and
# `down` can find whatever it leaves behind by its process group. The arguments after NAME are
# VAR=VALUE settings of its environment, then the command.
launch() {
    local name=$1
    shift
    (
        while [[ $1 == *=* ]]; do
            export "${1?}"
            shift
        done
        setsid "$@" >"$(log_file "$name")" 2>&1 </dev/null &
        echo $! >"$(pid_file "$name")"
    )
}

# Whether something listens on the local PROTO (tcp or udp) address ADDR; false when `ss` is
# missing, since then nothing can be told.
address_taken() {
    local proto=$1 address=$2
    command -v ss >/dev/null || return 1
    ss -Hln --"$proto" 2>/dev/null | awk '{print $4}' | grep -qxF "$address"
}

# Fail when another program holds an address a process of ours is about to take.
check_free() {
    local name=$1 proto=$2 address=$3
    if address_taken "$proto" "$address"; then
        die "$name cannot start: $proto $address is taken by another process (see \`ss -lnp --$proto\`)"
    fi
}

# Print the last lines of NAME's log and fail.
fail_with_log() {
    local name=$1 reason=$2
    log "last lines of $(log_file "$name"):"
    tail -25 "$(log_file "$name")" >&2 || true
    die "$name $reason"
}

# Stop NAME: SIGTERM, up to STOP_TIMEOUT_S for it to end, then SIGKILL; then whatever is left in
# its process group (task processes it started).
stop_process() {
    local name=$1 pid_path pid
    pid_path=$(pid_file "$name")
    if ! running "$name"; then
        rm -f "$pid_path"
        return
    fi
    pid=$(cat "$pid_path")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < STOP_TIMEOUT_S * 10)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name did not stop within ${STOP_TIMEOUT_S}s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # The group's id is the pid `launch` recorded, as setsid made it a session leader.
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pid_path"
}

# One command to the link emulator's control socket; prints the reply (`show` replies with a
# count line, then one line per link).
relay_command() {
    local command=$1 reply count
    { exec 3<>"/dev/tcp/$RELAY_CONTROL_HOST/$RELAY_CONTROL_PORT"; } 2>/dev/null || return 1
    printf '%s\n' "$command" >&3
    IFS= read -r -t 5 reply <&3 || { exec 3<&-; return 1; }
    echo "$reply"
    if [[ $reply =~ ^ok\ ([0-9]+)\ links$ ]]; then
        for ((count = BASH_REMATCH[1]; count > 0; count--)); do
            IFS= read -r -t 5 reply <&3 || break
            echo "$reply"
        done
    fi
    exec 3<&-
    [[ $reply != error:* ]]
}

# Which Cassandra nodes answer `status` as running, e.g. "1 2".
cluster_running_nodes() {
    bash "$CLUSTER_SCRIPT" status 2>/dev/null | sed -n 's/^node \([0-9]\): running.*/\1/p' | tr '\n' ' '
}

# The two-datacenter cluster, through its own script. The nodes it is about to start are
# written down first, so that `down` stops those, and only those, even if `up` fails half-way.
start_cluster() {
    local before recorded="" node ours=()
    before=" $(cluster_running_nodes)"
    if [[ -f $CLUSTER_RECORD ]]; then
        recorded=" $(cat "$CLUSTER_RECORD") "
    fi
    for node in 1 2; do
        # Ours: not running yet, or started by an earlier `up` and still running.
        if [[ $before != *" $node "* || $recorded == *" $node "* ]]; then
            ours+=("$node")
        fi
    done
    echo "${ours[*]}" >"$CLUSTER_RECORD"
    if [[ $before == *" 1 "* && $before == *" 2 "* ]]; then
        log "the Cassandra cluster is already running"
    fi
    bash "$CLUSTER_SCRIPT" up 2 >/dev/null
}

# Stop the Cassandra nodes this script started, and leave running those that were up before.
stop_cluster() {
    local recorded=""
    if [[ ! -f $CLUSTER_RECORD ]]; then
        # No `up` since the last `down`: nothing of the cluster is ours.
        return
    fi
    recorded=" $(cat "$CLUSTER_RECORD") "
    if [[ $recorded == *" 1 "* && $recorded == *" 2 "* ]]; then
        bash "$CLUSTER_SCRIPT" down
    elif [[ $recorded == *" 2 "* ]]; then
        bash "$CLUSTER_SCRIPT" stop-node 2
        log "Cassandra node 1 left running: it was up before \`up\`"
    elif [[ $recorded == *" 1 "* ]]; then
        bash "$CLUSTER_SCRIPT" stop-node 1
        log "Cassandra node 2 left running: it was up before \`up\`"
    else
        log "the Cassandra cluster is left running: it was up before \`up\`"
    fi
    rm -f "$CLUSTER_RECORD"
}

# The deployment's CA, a certificate per cell naming the addresses it is dialed at, and one per
# worker; made once and kept.
make_certs() {
    local cell worker host
    mkdir -p "$CERTS_DIR" "$(home_dir cli)"
    if [[ ! -f $CERTS_DIR/ca.pem ]]; then
        WEFT_HOME="$(home_dir cli)" "$WEFT" certs init --dir "$CERTS_DIR" >/dev/null
    fi
    for cell in "${CELLS[@]}"; do
        if [[ ! -f $CERTS_DIR/node-$cell.pem ]]; then
            # The relay listens on cell-c's own address, so its certificate covers the relay too.
            host=${LISTEN[$cell]%:*}
            WEFT_HOME="$(home_dir cli)" "$WEFT" certs issue --dir "$CERTS_DIR" --node "$cell" --san "$host" >/dev/null
        fi
    done
    for worker in "${WORKERS[@]}"; do
        if [[ ! -f $CERTS_DIR/worker-$worker.pem ]]; then
            WEFT_HOME="$(home_dir cli)" "$WEFT" certs issue --dir "$CERTS_DIR" --worker "$worker" >/dev/null
        fi
    done
}

# The link emulator in front of cell-c: the delay between the regions, and a switch to cut
# region us from the cells of eu and from the store.
start_relay() {
    if running relay; then
        log "relay already running (pid $(cat "$(pid_file relay)"))"
        return
    fi
    check_free relay tcp "$RELAY_CONTROL_HOST:$RELAY_CONTROL_PORT"
    check_free relay udp "$RELAY_CELLS"
    check_free relay tcp "$RELAY_DC1"
    check_free relay tcp "$RELAY_DC2"
    log "starting the relay in front of region us (control on $RELAY_CONTROL_HOST:$RELAY_CONTROL_PORT)"
    launch relay "$LINKEMU" --control "$RELAY_CONTROL_HOST:$RELAY_CONTROL_PORT" \
        --link "us-cells=udp:$RELAY_CELLS->${LISTEN[cell-c]}" \
        --link "us-dc1=tcp:$RELAY_DC1->127.0.0.1:9042" \
        --link "us-dc2=tcp:$RELAY_DC2->127.0.0.2:9042"
    local started=$SECONDS
    until grep -qx ready "$(log_file relay)" 2>/dev/null; do
        sleep 0.2
        running relay || fail_with_log relay "exited during start-up"
        ((SECONDS - started <= START_TIMEOUT_S)) || fail_with_log relay "did not say ready within ${START_TIMEOUT_S}s"
    done
    # Links start open and without delay. The store node of region us (dc2) is local to cell-c;
    # the dc1 node and the cells of eu are one region away.
    relay_command "set us-cells delay=${DELAY_MS}ms" >/dev/null || fail_with_log relay "refused the delay"
    relay_command "set us-dc1 delay=${DELAY_MS}ms" >/dev/null || fail_with_log relay "refused the delay"
}

# One cell. cell-c advertises the relay's address, so that the cells of eu reach it through the
# relay: of two links between a pair of cells the one the cell with the smaller name dialed is
# kept, and that cell dials the advertised address even when the other dialed first. The cells
# of eu also have that address as a peer, so they dial it before they read cell-c's row.
start_cell() {
    local cell=$1 store args
    if running "$cell"; then
        log "$cell already running (pid $(cat "$(pid_file "$cell")"))"
        return
    fi
    check_free "$cell" tcp "${UI[$cell]}"
    check_free "$cell" udp "${LISTEN[$cell]}"
    args=(cell --name "$cell" --region "${REGION[$cell]}" --listen "${LISTEN[$cell]}" --bind "${UI[$cell]}")
    if [[ ${REGION[$cell]} == us ]]; then
        store=$STORE_US
        args+=(--advertise "$RELAY_CELLS")
    else
        store=$STORE_EU
        args+=(--peer "$RELAY_CELLS")
    fi
    mkdir -p "$(home_dir "$cell")"
    log "starting $cell (region ${REGION[$cell]}, QUIC ${LISTEN[$cell]}, UI http://${UI[$cell]})"
    # One key file for every cell: the variables and connections one cell seals in the shared
    # store, the others must open. cell-a, started alone first, creates it.
    launch "$cell" WEFT_HOME="$(home_dir "$cell")" WEFT_DAGS_FOLDER="$DAGS_FOLDER" \
        WEFT_WORKERS__CERTS_DIR="$CERTS_DIR" WEFT_SECRETS__KEY_FILE="$STATE_DIR/secret.key" \
        "$WEFT" --store "$store" "${args[@]}"
}

# Until the cell answers GET /health with 200, or fail with the end of its log.
wait_for_cell() {
    local cell=$1 started=$SECONDS
    until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://${UI[$cell]}/health" || true) == 200 ]]; do
        sleep 0.5
        running "$cell" || fail_with_log "$cell" "exited during start-up"
        ((SECONDS - started <= START_TIMEOUT_S)) || fail_with_log "$cell" "did not answer http://${UI[$cell]}/health within ${START_TIMEOUT_S}s"
    done
    log "$cell answers on http://${UI[$cell]} after $((SECONDS - started)) s"
}

start_worker() {
    local worker=$1
    if running "$worker"; then
        log "$worker already running (pid $(cat "$(pid_file "$worker")"))"
        return
    fi
    mkdir -p "$(home_dir "$worker")"
    log "starting worker $worker (connects to ${CONNECT[$worker]})"
    launch "$worker" WEFT_HOME="$(home_dir "$worker")" WEFT_DAGS_FOLDER="$DAGS_FOLDER" \
        WEFT_WORKER__CERTS_DIR="$CERTS_DIR" "$WEFT" worker --connect "${CONNECT[$worker]}" --name "$worker"
}

# A worker that cannot load its certificate or is refused exits at once; give it a moment.
check_worker() {
    local worker=$1
    running "$worker" || fail_with_log "$worker" "exited during start-up"
}

everything_running() {
    local name
    for name in relay "${CELLS[@]}" "${WORKERS[@]}"; do
        running "$name" || return 1
    done
}

# `weft cells list`, asked through cell-a's home when it runs, so that it also shows cell-a's
# links' round-trip times and workers.
cells_list() {
    WEFT_HOME="$(home_dir cell-a)" "$WEFT" --store "$STORE_EU" cells list
}

# The admin's password: printed by the cell that created the admin (the first to start on an
# empty keyspace), and kept in that cell's home.
admin_password() {
    local cell line file
    for cell in "${CELLS[@]}"; do
        line=$(grep -h 'with password `' "$(log_file "$cell")" 2>/dev/null | tail -1 || true)
        if [[ -n $line ]]; then
            cut -d'`' -f4 <<<"$line"
            return
        fi
    done
    for cell in "${CELLS[@]}"; do
        file="$(home_dir "$cell")/standalone_admin_password.txt"
        if [[ -f $file ]]; then
            cat "$file"
            return
        fi
    done
}

summary() {
    local cell password
    echo
    echo "Two regions are up (state, logs and pids in $STATE_DIR):"
    for cell in "${CELLS[@]}"; do
        printf '  %-7s region %-3s UI http://%-16s QUIC %s\n' "$cell" "${REGION[$cell]}" "${UI[$cell]}" "${LISTEN[$cell]}"
    done
    echo "  cell-c is reached by the other cells through the relay at $RELAY_CELLS (${DELAY_MS} ms each way)"
    echo "  workers: w-eu on cell-a (${CONNECT[w-eu]}), w-us on cell-c (${CONNECT[w-us]})"
    password=$(admin_password)
    if [[ -n $password ]]; then
        echo "Sign in as \`admin\` with password \`$password\`."
    else
        echo "The admin already existed in keyspace $KEYSPACE; its password was printed by the cell that created it."
    fi
    echo
    echo "weft --store '$STORE_EU' cells list"
    cells_list || log "weft cells list failed"
    echo
    echo "Cut region us (from the cells of eu and from the store), then heal it:"
    echo "  bash -c 'exec 3<>/dev/tcp/$RELAY_CONTROL_HOST/$RELAY_CONTROL_PORT; echo \"set * blackhole=on\" >&3; head -1 <&3'"
    echo "  bash -c 'exec 3<>/dev/tcp/$RELAY_CONTROL_HOST/$RELAY_CONTROL_PORT; echo \"set * blackhole=off\" >&3; head -1 <&3'"
    echo "Stop: bash deploy/two-regions.sh down"
}

up() {
    check_binaries
    mkdir -p "$STATE_DIR/home"
    if everything_running; then
        log "already up"
        summary
        return
    fi
    local started=$SECONDS cell worker
    start_cluster
    make_certs
    start_relay
    # cell-a first: the first cell to start on an empty keyspace creates the admin (two cells
    # starting at once would each create one), and the key file the cells share.
    start_cell cell-a
    wait_for_cell cell-a
    for cell in cell-b cell-c; do
        start_cell "$cell"
    done
    for cell in cell-b cell-c; do
        wait_for_cell "$cell"
    done
    for worker in "${WORKERS[@]}"; do
        start_worker "$worker"
    done
    sleep 2
    for worker in "${WORKERS[@]}"; do
        check_worker "$worker"
    done
    log "up in $((SECONDS - started)) s"
    summary
}

down() {
    local name
    # Workers first, so that no attempt is lost with its cell; then the cells, which hand their
    # shards over to each other as they go; then the relay, and the store last.
    for name in "${WORKERS[@]}"; do
        stop_process "$name"
    done
    for name in "${CELLS[@]}"; do
        stop_process "$name"
    done
    stop_process relay
    stop_cluster
    log "down (state, logs and certificates kept in $STATE_DIR)"
}

status() {
    local name
    for name in relay "${CELLS[@]}" "${WORKERS[@]}"; do
        if running "$name"; then
            echo "$name: running (pid $(cat "$(pid_file "$name")"), log $(log_file "$name"))"
        else
            echo "$name: stopped"
        fi
    done
    bash "$CLUSTER_SCRIPT" status | sed 's/^/cassandra /'
    if running relay; then
        echo
        echo "relay links:"
        relay_command show | tail -n +2 | sed 's/^/  /' || echo "  (the control socket does not answer)"
    fi
    if [[ -n $(cluster_running_nodes) && -x $WEFT ]]; then
        echo
        cells_list || true
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: $0 up | down | status" ;;
esac
