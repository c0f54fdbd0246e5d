package cbpf

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type pkt harness testdata/harness.c -- -I../../bpf/include
