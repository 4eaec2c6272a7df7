#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft) for local runs and tests, from Maven Central jars.
#
#   kafka.sh fetch                      resolve the pinned broker jars into .tend/kafka/<version>/libs
#   kafka.sh start DIR PORT CTRL_PORT   format DIR once, start a broker there, wait for PORT
#   kafka.sh stop DIR                   stop the broker whose pid file is in DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/deploy/local/kafka/pom.xml")
LIBS="$STATE/kafka/$KAFKA_VERSION/libs"

need_java() {
  if ! command -v java >/dev/null; then
    apt_install openjdk-17-jre-headless
  fi
  local major
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  [[ ${major:-0} -ge 17 ]] || die "Kafka needs Java 17 or newer (found ${major:-none}): apt-get install openjdk-17-jre-headless"
}

fetch() {
  if [[ -f $LIBS/.complete ]]; then return 0; fi
  need_java
  command -v mvn >/dev/null || apt_install maven
  say "tend: fetching Apache Kafka $KAFKA_VERSION jars from Maven Central (once) ..."
  rm -rf "$LIBS"
  mkdir -p "$LIBS"
  mvn -q -B -f "$ROOT/deploy/local/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIBS" >"$STATE/kafka/fetch.log" 2>&1 \
    || die "could not fetch Kafka jars from Maven Central (see $STATE/kafka/fetch.log)"
  touch "$LIBS/.complete"
}

start() {
  local dir=$1 port=$2 cport=$3
  mkdir -p "$dir/data"
  if [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    wait_port "$port" 90 "$(cat "$dir/pid")" && return 0
  fi
  port_open "$port" && die "port $port is taken by another process: stop it, or point KAFKA_BOOTSTRAP_SERVERS at a running broker"
  port_open "$cport" && die "port $cport (Kafka controller) is taken: stop that process or set TEND_KAFKA_CONTROLLER_PORT"
  fetch
  need_java
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=12
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
  if [[ ! -f $dir/data/meta.properties ]]; then
    java -cp "$LIBS/*" kafka.tools.StorageTool format --ignore-formatted \
      -t "$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
      -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
      || die "could not format Kafka storage in $dir (see $dir/format.log)"
  fi
  # Every partition keeps files open; the default limit is low for a broker.
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  nohup java ${TEND_KAFKA_HEAP:--Xms256m -Xmx768m} -XX:+UseG1GC \
    -Dlog4j.configuration="file:$ROOT/deploy/local/kafka/log4j.properties" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
  echo $! >"$dir/pid"
  wait_port "$port" 90 "$!" || die "Kafka did not start on port $port (see $dir/kafka.log)"
}

stop() {
  local dir=$1
  [[ -f $dir/pid ]] || return 0
  local pid
  pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
}

cmd=${1:-}; shift || true
case $cmd in
  fetch) fetch; echo "$LIBS" ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  *) die "usage: kafka.sh fetch | start DIR PORT CTRL_PORT | stop DIR" ;;
esac
