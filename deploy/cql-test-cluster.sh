#!/usr/bin/env bash
# A local Apache Cassandra 5.0 cluster for the CQL store's tests: one node (dc1 on 127.0.0.1) or
# two (dc2 on 127.0.0.2), run from Maven Central jars on OpenJDK 17. Cassandra stands in for
# ScyllaDB, which cannot be installed on these machines; both speak CQL.
#
#   deploy/cql-test-cluster.sh up 1|2     fetch (once), configure, start, wait until ready
#   deploy/cql-test-cluster.sh down       stop every node this script started
#   deploy/cql-test-cluster.sh status     show which nodes answer
#   deploy/cql-test-cluster.sh stop-node N / start-node N   (used by the two-datacenter test)
#
# Everything lives under $WEFT_CASSANDRA_HOME (default /var/tmp/weft-cassandra), outside the repo.
set -euo pipefail

CASSANDRA_VERSION="${WEFT_CASSANDRA_VERSION:-5.0.8}"
HOME_DIR="${WEFT_CASSANDRA_HOME:-/var/tmp/weft-cassandra}"
JAVA_HOME="${WEFT_CASSANDRA_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
HEAP="${WEFT_CASSANDRA_HEAP:-1G}"
# Start-up takes 20-40 s per node on 2 cores; give a slow machine four times that.
NODE_START_TIMEOUT_S="${WEFT_CASSANDRA_START_TIMEOUT_S:-180}"
NODES_MAX=2
LIB_DIR="$HOME_DIR/lib-$CASSANDRA_VERSION"
SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"

log() { echo "cql-test-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

node_address() { echo "127.0.0.$1"; }
node_dir() { echo "$HOME_DIR/node$1"; }
pid_file() { echo "$(node_dir "$1")/cassandra.pid"; }

ensure_java() {
    if [[ ! -x "$JAVA_HOME/bin/java" ]]; then
        log "installing openjdk-17-jre-headless (no $JAVA_HOME)"
        apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
    fi
    [[ -x "$JAVA_HOME/bin/java" ]] || die "no java at $JAVA_HOME: install openjdk-17-jre-headless"
}

ensure_maven() {
    if ! command -v mvn >/dev/null; then
        log "installing maven"
        apt-get update -qq && apt-get install -y -qq maven >/dev/null
    fi
}

# The runtime classpath of cassandra-all, copied once into $LIB_DIR.
fetch_jars() {
    if [[ -f "$LIB_DIR/.complete" ]]; then
        return
    fi
    ensure_maven
    local build="$HOME_DIR/fetch-$CASSANDRA_VERSION"
    mkdir -p "$build" "$LIB_DIR"
    sed "s/@CASSANDRA_VERSION@/$CASSANDRA_VERSION/" "$SCRIPT_DIR/cassandra/pom.xml.in" >"$build/pom.xml"
    log "fetching cassandra-all $CASSANDRA_VERSION and its runtime dependencies (once)"
    JAVA_HOME="$JAVA_HOME" mvn -q -B -f "$build/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIB_DIR" >"$build/mvn.log" 2>&1 \
        || { tail -30 "$build/mvn.log" >&2; die "maven could not fetch cassandra-all $CASSANDRA_VERSION"; }
    touch "$LIB_DIR/.complete"
}

write_config() {
    local node=$1 dir address
    dir=$(node_dir "$node")
    address=$(node_address "$node")
    mkdir -p "$dir"/{data,commitlog,hints,saved_caches,cdc_raw,logs}
    # One token per node, spread over the Murmur3 range, so each datacenter owns a share.
    local token
    if [[ $node == 1 ]]; then token=-9223372036854775808; else token=0; fi
    sed -e "s|@NODE_DIR@|$dir|g" -e "s|@ADDRESS@|$address|g" -e "s|@TOKEN@|$token|g" \
        "$SCRIPT_DIR/cassandra/cassandra.yaml.in" >"$dir/cassandra.yaml"
    printf 'dc=dc%s\nrack=rack1\n' "$node" >"$dir/cassandra-rackdc.properties"
    cp "$SCRIPT_DIR/cassandra/logback.xml" "$dir/logback.xml"
}

jvm_flags() {
    local node=$1 dir
    dir=$(node_dir "$node")
    # From Cassandra's conf/jvm-server.options and conf/jvm17-server.options (5.0).
    cat "$SCRIPT_DIR/cassandra/jvm17.options" | grep -E '^-' || true
    echo "-Xms$HEAP"
    echo "-Xmx$HEAP"
    echo "-javaagent:$(ls "$LIB_DIR"/jamm-*.jar | head -1)"
    echo "-Dcassandra-foreground=yes"
    echo "-Dcassandra.config=file://$dir/cassandra.yaml"
    echo "-Dcassandra-rackdc.properties=file://$dir/cassandra-rackdc.properties"
    echo "-Dcassandra.storagedir=$dir/data"
    echo "-Dcassandra.logdir=$dir/logs"
    echo "-Dlogback.configurationFile=file://$dir/logback.xml"
    echo "-Dcassandra.jmx.local.port=$((7198 + node))"
    echo "-Dcassandra.skip_wait_for_gossip_to_settle=0"
    echo "-Dcassandra.ring_delay_ms=1000"
}

node_running() {
    local pid_path
    pid_path=$(pid_file "$1")
    [[ -f $pid_path ]] && kill -0 "$(cat "$pid_path")" 2>/dev/null
}

native_port_answers() {
    (exec 3<>"/dev/tcp/$(node_address "$1")/9042") 2>/dev/null
}

start_node() {
    local node=$1 dir
    dir=$(node_dir "$node")
    if node_running "$node"; then
        log "node $node already running (pid $(cat "$(pid_file "$node")"))"
        return
    fi
    write_config "$node"
    local flags=()
    mapfile -t flags < <(jvm_flags "$node")
    log "starting node $node (dc$node on $(node_address "$node"))"
    # setsid: the node outlives this script and `down` can stop its whole process group.
    setsid "$JAVA_HOME/bin/java" "${flags[@]}" -cp "$LIB_DIR/*" \
        org.apache.cassandra.service.CassandraDaemon >"$dir/logs/stdout.log" 2>&1 </dev/null &
    echo $! >"$(pid_file "$node")"
}

wait_for_node() {
    local node=$1 started=$SECONDS
    until native_port_answers "$node"; do
        if ! node_running "$node"; then
            tail -40 "$(node_dir "$node")/logs/stdout.log" >&2 || true
            die "node $node exited during start-up; log: $(node_dir "$node")/logs/stdout.log"
        fi
        if (( SECONDS - started > NODE_START_TIMEOUT_S )); then
            die "node $node did not open 127.0.0.$node:9042 within ${NODE_START_TIMEOUT_S}s; log: $(node_dir "$node")/logs/stdout.log"
        fi
        sleep 1
    done
    log "node $node answers on $(node_address "$node"):9042 after $((SECONDS - started)) s"
}

# Both nodes list each other as up and normal in gossip (seen in each node's log).
wait_for_peers() {
    local started=$SECONDS node
    for node in 1 2; do
        local other=$((3 - node))
        until grep -q "Node /127.0.0.$other:7000 state jump to NORMAL\|InetAddress /127.0.0.$other:7000 is now UP" \
            "$(node_dir "$node")/logs/system.log" 2>/dev/null; do
            if (( SECONDS - started > NODE_START_TIMEOUT_S )); then
                die "nodes 1 and 2 do not see each other after ${NODE_START_TIMEOUT_S}s; logs under $HOME_DIR"
            fi
            sleep 1
        done
    done
    log "nodes 1 and 2 see each other"
}

stop_node() {
    local node=$1 pid_path
    pid_path=$(pid_file "$node")
    if ! node_running "$node"; then
        rm -f "$pid_path"
        return
    fi
    local pid
    pid=$(cat "$pid_path")
    log "stopping node $node (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pid_path"
}

up() {
    local count=${1:-1}
    [[ $count =~ ^[12]$ ]] || die "up takes 1 or 2 nodes, not \`$count\`"
    local started=$SECONDS
    ensure_java
    fetch_jars
    local node
    # A test cluster starts empty: a node that remembers peers from an earlier, larger cluster
    # counts them in its Paxos electorate and refuses SERIAL operations while they are away.
    local any_running=false
    for node in $(seq 1 "$NODES_MAX"); do
        if node_running "$node"; then any_running=true; fi
    done
    if [[ $any_running == false ]]; then
        for node in $(seq 1 "$NODES_MAX"); do
            rm -rf "$(node_dir "$node")"
        done
    fi
    # Nodes start one after another: two bootstrapping at once on 2 cores is slower, and node 2
    # needs its seed (node 1) to answer.
    for node in $(seq 1 "$count"); do
        start_node "$node"
        wait_for_node "$node"
    done
    if [[ $count == 2 ]]; then
        wait_for_peers
    fi
    log "cluster of $count node(s) ready in $((SECONDS - started)) s"
    echo "WEFT_TEST_CQL=127.0.0.1:9042"
    if [[ $count == 2 ]]; then
        echo "WEFT_TEST_CQL_DC2=127.0.0.2:9042"
    fi
}

down() {
    local node
    for node in $(seq "$NODES_MAX" -1 1); do
        stop_node "$node"
    done
}

status() {
    local node
    for node in $(seq 1 "$NODES_MAX"); do
        if node_running "$node"; then
            if native_port_answers "$node"; then
                echo "node $node: running, $(node_address "$node"):9042 answers"
            else
                echo "node $node: running, not answering yet"
            fi
        else
            echo "node $node: stopped"
        fi
    done
}

case "${1:-}" in
    up) up "${2:-1}" ;;
    down) down ;;
    status) status ;;
    stop-node) stop_node "${2:?node number}" ;;
    start-node) ensure_java; fetch_jars; start_node "${2:?node number}"; wait_for_node "$2" ;;
    fetch) ensure_java; fetch_jars ;;
    *) die "usage: $0 up 1|2 | down | status | stop-node N | start-node N | fetch" ;;
esac
