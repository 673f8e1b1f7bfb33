#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker+controller in one JVM) without Docker.
#
#   scripts/kafka.sh fetch     resolve the pinned broker jars from Maven Central into the cache (once)
#   scripts/kafka.sh start     start the broker (or reuse one already answering) and wait until it serves metadata
#   scripts/kafka.sh stop      SIGTERM, wait, then SIGKILL; fine if it is not running
#   scripts/kafka.sh status    print "running ..." (exit 0) or "not running" (exit 3, as LSB init scripts do)
#   scripts/kafka.sh restart   stop then start
#
# Environment (all optional):
#   KAFKA_VERSION          pinned broker version (default below; docker-compose.yml uses the same image tag)
#   KAFKA_CACHE_DIR        jar cache root; jars go to $KAFKA_CACHE_DIR/$KAFKA_VERSION/libs (default $ROOT/.cache/kafka)
#   KAFKA_DATA_DIR         config, pid file, log and data (default $ROOT/.data/kafka)
#   KAFKA_PORT             client listener on 127.0.0.1 (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener on 127.0.0.1 (default 9093)
#   KAFKA_HEAP             JVM heap flags (default -Xmx768m)
#   KAFKA_START_TIMEOUT    seconds to wait for readiness (default 120: a restart on a busy machine can take 90)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL (default 30)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Kafka 4.x brokers need Java 17+, which is what this machine (and CI) has. Keep in step with docker-compose.yml.
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
KAFKA_CACHE_DIR="${KAFKA_CACHE_DIR:-$ROOT/.cache/kafka}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$ROOT/.data/kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${KAFKA_HEAP:--Xmx768m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
JAVA="${JAVA:-java}"

LIBS_DIR="$KAFKA_CACHE_DIR/$KAFKA_VERSION/libs"
LIBS_MARKER="$LIBS_DIR/.complete"
POM="$ROOT/scripts/kafka-pom.xml"
PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
LOG_FILE="$KAFKA_DATA_DIR/kafka.log"
CONFIG_FILE="$KAFKA_DATA_DIR/server.properties"
LOG4J_FILE="$KAFKA_DATA_DIR/log4j2.xml"
CLUSTER_ID_FILE="$KAFKA_DATA_DIR/cluster.id"
LOG_DIRS="$KAFKA_DATA_DIR/logs"
VENV_PYTHON="$ROOT/.venv/bin/python"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------------------------------------------- fetch

# A fresh machine may lack the build tools; as root, install Debian's package rather than fail.
ensure_tool() {
    local tool="$1" package="$2"
    command -v "$tool" >/dev/null && return 0
    [[ "$(id -u)" == 0 ]] || die "$tool not found on PATH (apt-get install -y $package)"
    log "$tool not found; installing Debian's $package"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq "$package" >/dev/null
    command -v "$tool" >/dev/null || die "$tool still missing after installing $package"
}

cmd_fetch() {
    if [[ -f "$LIBS_MARKER" ]]; then
        log "broker $KAFKA_VERSION already in $LIBS_DIR"
        return 0
    fi
    ensure_tool mvn maven
    ensure_tool "$JAVA" openjdk-17-jre-headless
    mkdir -p "$(dirname "$LIBS_DIR")"
    # Copy into a scratch folder and rename at the end, so an interrupted fetch never looks complete.
    local staging
    staging="$(mktemp -d "$(dirname "$LIBS_DIR")/libs.partial.XXXXXX")"
    local started=$SECONDS
    log "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies with Maven"
    if ! mvn -B -q -f "$POM" \
        -Dkafka.version="$KAFKA_VERSION" \
        -DincludeScope=runtime \
        -DoutputDirectory="$staging" \
        dependency:copy-dependencies >"$staging/.mvn.log" 2>&1; then
        tail -n 40 "$staging/.mvn.log" >&2 || true
        rm -rf "$staging"
        die "maven could not resolve the broker jars"
    fi
    rm -f "$staging/.mvn.log"
    [[ -f "$staging/kafka_2.13-$KAFKA_VERSION.jar" ]] || { rm -rf "$staging"; die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch"; }
    ls "$staging"/log4j-core-*.jar >/dev/null 2>&1 || { rm -rf "$staging"; die "no log4j2 backend after fetch"; }
    rm -rf "$LIBS_DIR"
    mv "$staging" "$LIBS_DIR"
    find "$LIBS_DIR" -maxdepth 1 -name '*.jar' -printf '%f\n' | sort >"$LIBS_MARKER"
    log "fetched $(wc -l <"$LIBS_MARKER") jars for Kafka $KAFKA_VERSION in $((SECONDS - started)) s"
}

# ---------------------------------------------------------------------------------------------------- probes

# True when the pid file names a live broker JVM (guards against a recycled pid).
pid_alive() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

port_open() {
    # A bare connect in a subshell so the descriptor closes with it; timeout bounds a black-holed port.
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT" 2>/dev/null
}

# A metadata round-trip that also requires a registered (unfenced) broker, so "ready" means producible.
python_ready() {
    timeout 15 "$VENV_PYTHON" - "127.0.0.1:$KAFKA_PORT" <<'PY' >/dev/null 2>&1
import asyncio
import sys

from aiokafka import AIOKafkaClient


async def main() -> int:
    client = AIOKafkaClient(bootstrap_servers=sys.argv[1], request_timeout_ms=5000)
    try:
        await asyncio.wait_for(client.bootstrap(), 8)
        return 0 if client.cluster.brokers() else 1
    finally:
        await asyncio.wait_for(client.close(), 3)


sys.exit(asyncio.run(main()))
PY
}

# Without the venv: send an ApiVersions v0 request by hand and check the broker echoes our correlation id.
bash_ready() {
    # shellcheck disable=SC2016  # the inner script expands its own $1
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        # length=14, api_key=18 (ApiVersions), api_version=0, correlation_id=0x48414e44 ("HAND"), client_id="hoff"
        printf "\x00\x00\x00\x0e\x00\x12\x00\x00HAND\x00\x04hoff" >&3
        reply="$(head -c 10 <&3 | od -An -tx1 | tr -d " \n")"
        # 4-byte size, then correlation id 48414e44, then error_code 0000
        [[ "${reply:8:12}" == "48414e440000" ]]
    ' _ "$KAFKA_PORT" 2>/dev/null
}

READY_PROBE=""
broker_ready() {
    port_open || return 1
    if [[ -z "$READY_PROBE" ]]; then
        # Decided once: importing aiokafka on every poll would double the cost of each probe.
        READY_PROBE=bash_ready
        if [[ -x "$VENV_PYTHON" ]] && "$VENV_PYTHON" -c 'import aiokafka' >/dev/null 2>&1; then
            READY_PROBE=python_ready
        fi
    fi
    "$READY_PROBE"
}

# ---------------------------------------------------------------------------------------------------- config

write_config() {
    mkdir -p "$KAFKA_DATA_DIR" "$LOG_DIRS"
    # Rewritten on every start so port or path overrides take effect; the data itself lives in $LOG_DIRS.
    cat >"$CONFIG_FILE" <<EOF
# Generated by scripts/kafka.sh on every start: edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$LOG_DIRS

# Topics are created on purpose by the services' bootstrap code; a typo must fail, not create a topic.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# One broker: internal topics cannot have more than one replica. Fewer partitions make first use faster.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Tests start consumers and expect them to be assigned at once, not after the default 3 s delay.
group.initial.rebalance.delay.ms=0

# Sized for a 2-core laptop or CI box.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=168
log.segment.bytes=268435456
EOF

    # Console output goes to $LOG_FILE through nohup; the broker's INFO is a flood, so keep lifecycle lines only.
    cat >"$LOG4J_FILE" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/kafka.sh on every start. -->
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c{1})%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stdout"/></Root>
    <Logger name="kafka.Kafka$" level="INFO"/>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Logger name="kafka.server.BrokerServer" level="INFO"/>
    <Logger name="kafka.server.ControllerServer" level="INFO"/>
    <Logger name="kafka.server.SharedServer" level="INFO"/>
    <Logger name="org.apache.kafka.controller.QuorumController" level="INFO"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients.NetworkClient" level="ERROR"/>
  </Loggers>
</Configuration>
EOF
}

format_storage() {
    # Formatting writes meta.properties; doing it twice would need the same cluster id, so do it once only.
    [[ -f "$LOG_DIRS/meta.properties" ]] && return 0
    if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
        "$JAVA" -cp "$LIBS_DIR/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$CLUSTER_ID_FILE"
        [[ -s "$CLUSTER_ID_FILE" ]] || die "could not generate a cluster id"
    fi
    log "formatting storage in $LOG_DIRS (cluster id $(cat "$CLUSTER_ID_FILE"))"
    if ! "$JAVA" -Dlog4j2.configurationFile="$LOG4J_FILE" -cp "$LIBS_DIR/*" kafka.tools.StorageTool format \
        -t "$(cat "$CLUSTER_ID_FILE")" -c "$CONFIG_FILE" >>"$LOG_FILE" 2>&1; then
        tail -n 30 "$LOG_FILE" >&2 || true
        die "storage format failed"
    fi
}

# ---------------------------------------------------------------------------------------------------- commands

wait_ready() {
    local pid="$1" deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "broker exited during startup; last lines of $LOG_FILE:"
            tail -n 40 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            return 1
        fi
        broker_ready && return 0
        sleep 0.5
    done
    log "broker did not answer on 127.0.0.1:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s; last lines of $LOG_FILE:"
    tail -n 40 "$LOG_FILE" >&2 || true
    return 1
}

cmd_start() {
    mkdir -p "$KAFKA_DATA_DIR"
    # Serialise concurrent starts (parallel make targets, test fixtures) so only one JVM is launched.
    exec 9>"$KAFKA_DATA_DIR/.lock"
    flock -w "$((KAFKA_START_TIMEOUT + 10))" 9 || die "another kafka.sh holds $KAFKA_DATA_DIR/.lock"

    local pid started=$SECONDS
    if pid="$(pid_alive)"; then
        log "broker pid $pid already running; waiting until it answers"
        wait_ready "$pid" || exit 1
        echo "kafka running on 127.0.0.1:$KAFKA_PORT (pid $pid)"
        return 0
    fi
    if broker_ready; then
        echo "kafka already answering on 127.0.0.1:$KAFKA_PORT (not started by this script); reusing it"
        return 0
    fi
    if port_open; then
        die "127.0.0.1:$KAFKA_PORT is taken by something that does not answer as a Kafka broker"
    fi
    rm -f "$PID_FILE"

    cmd_fetch
    write_config
    format_storage

    {
        echo
        echo "===== $(date -u +%FT%TZ) kafka.sh start (Kafka $KAFKA_VERSION, 127.0.0.1:$KAFKA_PORT) ====="
    } >>"$LOG_FILE"
    # shellcheck disable=SC2086  # KAFKA_HEAP holds several JVM flags on purpose
    nohup "$JAVA" $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J_FILE" -Dkafka.logs.dir="$KAFKA_DATA_DIR" \
        -cp "$LIBS_DIR/*" kafka.Kafka "$CONFIG_FILE" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    log "started broker pid $pid; waiting up to ${KAFKA_START_TIMEOUT}s for 127.0.0.1:$KAFKA_PORT"
    wait_ready "$pid" || exit 1
    echo "kafka running on 127.0.0.1:$KAFKA_PORT (pid $pid, ready in $((SECONDS - started)) s)"
}

cmd_stop() {
    local pid
    if ! pid="$(pid_alive)"; then
        rm -f "$PID_FILE"
        if port_open; then
            echo "kafka on 127.0.0.1:$KAFKA_PORT was not started from $KAFKA_DATA_DIR; leaving it alone"
        else
            echo "kafka not running"
        fi
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "broker pid $pid ignored SIGTERM for ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$PID_FILE"
    echo "kafka stopped (pid $pid)"
}

cmd_status() {
    local pid
    if pid="$(pid_alive)"; then
        if broker_ready; then
            echo "running (pid $pid, 127.0.0.1:$KAFKA_PORT)"
        else
            echo "running (pid $pid, not answering on 127.0.0.1:$KAFKA_PORT yet)"
        fi
        return 0
    fi
    if broker_ready; then
        echo "running (127.0.0.1:$KAFKA_PORT, not started by this script)"
        return 0
    fi
    echo "not running"
    return 3
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop && cmd_start ;;
    *)
        echo "usage: $0 {fetch|start|stop|status|restart}" >&2
        exit 2
        ;;
esac
