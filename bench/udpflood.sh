#!/bin/bash
# Highest UDP-to-closed-port drop rate one core generates, with and without
# pktfate trace attached: sender rate ratio, captured vs the kernel's own
# NoPorts counter, and the counted losses. Run as root from the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
go build -o bin/pktfate ./cmd/pktfate
go build -o bin/udpflood ./bench/udpflood
exec bin/udpflood -pktfate bin/pktfate "$@"
