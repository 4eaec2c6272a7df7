#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft) for local runs and tests, from Maven Central jars.
#
#   kafka.sh fetch                      resolve the pinned broker jars into .tend/kafka/<version>/libs
#   kafka.sh start DIR PORT CTRL_PORT   format DIR once, start a broker there, wait for PORT
#   kafka.sh stop DIR                   stop the broker whose pid file is in DIR
#   kafka.sh tls DIR                    a test CA and a broker certificate it signs, made with
#                                       keytool: DIR/ca.pem, DIR/broker.p12 (password in DIR/pass)
#   kafka.sh start-secure DIR PORT CTRL_PORT
#                                       a broker whose one client listener is SASL_SSL on PORT
#                                       (SCRAM-SHA-512 and PLAIN, ACLs enforced), its certificate
#                                       from `tls DIR/tls`, its users from DIR/users ("name
#                                       password" lines; the first is the super user)
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

tls() {
  local dir=$1
  need_java
  mkdir -p "$dir"
  [[ -f $dir/broker.p12 ]] && return 0
  local pass san=SAN=ip:127.0.0.1,dns:localhost
  pass=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  printf '%s' "$pass" >"$dir/pass"
  # Seven short-lived JVMs: the flags below start each in about a second rather than three.
  keytool() { command keytool -J-XX:+UseSerialGC -J-XX:TieredStopAtLevel=1 -J-Xshare:auto "$@"; }
  {
    keytool -genkeypair -alias ca -dname CN=tend-test-ca -keyalg EC -groupname secp256r1 \
      -validity 7 -ext bc:c -keystore "$dir/ca.p12" -storetype PKCS12 -storepass "$pass"
    keytool -exportcert -rfc -alias ca -keystore "$dir/ca.p12" -storepass "$pass" \
      -file "$dir/ca.pem"
    keytool -genkeypair -alias broker -dname CN=localhost -keyalg EC -groupname secp256r1 \
      -validity 7 -ext "$san" -keystore "$dir/broker.p12" -storetype PKCS12 -storepass "$pass"
    keytool -certreq -alias broker -keystore "$dir/broker.p12" -storepass "$pass" \
      -file "$dir/broker.csr"
    keytool -gencert -alias ca -keystore "$dir/ca.p12" -storepass "$pass" -rfc -validity 7 \
      -ext "$san" -infile "$dir/broker.csr" -outfile "$dir/broker.pem"
    keytool -importcert -noprompt -alias ca -file "$dir/ca.pem" -keystore "$dir/broker.p12" \
      -storepass "$pass"
    keytool -importcert -alias broker -file "$dir/broker.pem" -keystore "$dir/broker.p12" \
      -storepass "$pass"
  } >"$dir/keytool.log" 2>&1 || die "keytool could not make the test certificates (see $dir/keytool.log)"
}

start_secure() {
  local dir=$1 port=$2 cport=$3
  [[ -f $dir/users ]] || die "no $dir/users: write one \"name password\" line per user, the super user first"
  port_open "$port" && die "port $port is taken by another process"
  port_open "$cport" && die "port $cport (Kafka controller) is taken"
  fetch
  tls "$dir/tls"
  mkdir -p "$dir/data"
  local admin admin_pass pass plain="" scram=() name secret
  pass=$(cat "$dir/tls/pass")
  read -r admin admin_pass <"$dir/users"
  while read -r name secret; do
    [[ -n $name ]] || continue
    plain+=" user_$name=\"$secret\""
    scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$secret]")
  done <"$dir/users"
  # The controller listener stays on loopback in plain text; its peers (this same process)
  # connect as ANONYMOUS, which therefore has to be a super user of the authorizer.
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=SASL_SSL://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=SASL_SSL://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$admin" password="$admin_pass";
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$admin" password="$admin_pass"$plain;
ssl.keystore.type=PKCS12
ssl.keystore.location=$dir/tls/broker.p12
ssl.keystore.password=$pass
ssl.key.password=$pass
ssl.truststore.type=PKCS12
ssl.truststore.location=$dir/tls/broker.p12
ssl.truststore.password=$pass
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:$admin;User:ANONYMOUS
allow.everyone.if.no.acl.found=false
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  chmod 600 "$dir/server.properties"
  if [[ ! -f $dir/data/meta.properties ]]; then
    # A cluster id as `StorageTool random-uuid` makes one (16 random bytes, base64url), without
    # another JVM.
    local cluster=-
    while [[ $cluster == -* ]]; do
      cluster=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$LIBS/*" kafka.tools.StorageTool format \
      --ignore-formatted -t "$cluster" \
      -c "$dir/server.properties" "${scram[@]}" >"$dir/format.log" 2>&1 \
      || die "could not format Kafka storage in $dir (see $dir/format.log)"
  fi
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  nohup java ${TEND_KAFKA_HEAP:--Xms128m -Xmx384m} -XX:+UseG1GC -XX:TieredStopAtLevel=1 \
    -Dlog4j.configuration="file:$ROOT/deploy/local/kafka/log4j.properties" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
  echo $! >"$dir/pid"
  wait_port "$port" 90 "$!" || die "Kafka did not start on port $port (see $dir/kafka.log)"
}

cmd=${1:-}; shift || true
case $cmd in
  fetch) fetch; echo "$LIBS" ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  tls) tls "$@" ;;
  start-secure) start_secure "$@" ;;
  *) die "usage: kafka.sh fetch | start DIR PORT CTRL_PORT | stop DIR | tls DIR | start-secure DIR PORT CTRL_PORT" ;;
esac
