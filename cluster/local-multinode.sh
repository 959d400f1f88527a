#!/usr/bin/env bash
# A two-node Ray cluster on one machine (head + one worker), for trying cluster mode
# locally:   bash cluster/local-multinode.sh start   ...   bash cluster/local-multinode.sh stop
# then:      oodstudy run search_spaces/quickstart.yaml --address auto
set -euo pipefail
export RAY_AUTH_MODE=token
case "${1:-start}" in
  start)
    ray start --head --port=6380 --num-cpus=1 --dashboard-host=127.0.0.1 --disable-usage-stats
    ray start --address=127.0.0.1:6380 --num-cpus=1 --disable-usage-stats
    echo "dashboard: http://127.0.0.1:8265   (RAY_ADDRESS=127.0.0.1:6380)"
    ;;
  stop)
    ray stop --force
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
