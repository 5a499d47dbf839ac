#!/usr/bin/env bash
# Policy at scale: 1,000 policies over 10,000 pods compiled, evaluated and one
# change applied to one node's endpoints in a real kernel policy map, beside
# the size of the maps written and the cost of writing them from empty.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p node-agent --example policy_bench
target/release/examples/policy_bench "${PODS:-10000}" "${POLICIES:-1000}" "${NAMESPACES:-100}" "${PODS_PER_NODE:-110}"
